//! HTTP/2 frames on the wire (RFC 9113 §4 and §6): the 9-octet frame
//! header, the frame types and flags this server speaks, error codes and
//! settings, and the writers for the frames it sends.

use bytes::{BufMut, BytesMut};

/// What a client sends first, before its SETTINGS (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADER_LEN: usize = 9;

/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may set, and the default.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    CompressionError = 0x9,
    EnhanceYourCalm = 0xb,
}

/// Settings identifiers (§6.5.2).
pub mod setting {
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads the header at the front of `buf`, which holds at least
    /// [`HEADER_LEN`] octets. The stream identifier's reserved bit is
    /// ignored, as §4.1 requires.
    pub fn parse(buf: &[u8]) -> Head {
        Head {
            len: u32::from_be_bytes([0, buf[0], buf[1], buf[2]]),
            kind: buf[3],
            flags: buf[4],
            stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
        }
    }

    pub fn write(kind: u8, flags: u8, stream: u32, len: usize, out: &mut BytesMut) {
        let len = len as u32;
        out.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.put_u32(stream);
    }
}

pub fn settings(values: &[(u16, u32)], out: &mut BytesMut) {
    Head::write(kind::SETTINGS, 0, 0, values.len() * 6, out);
    for (id, value) in values {
        out.put_u16(*id);
        out.put_u32(*value);
    }
}

pub fn settings_ack(out: &mut BytesMut) {
    Head::write(kind::SETTINGS, flag::ACK, 0, 0, out);
}

pub fn ping_ack(payload: &[u8], out: &mut BytesMut) {
    Head::write(kind::PING, flag::ACK, 0, 8, out);
    out.put_slice(payload);
}

pub fn window_update(stream: u32, increment: u32, out: &mut BytesMut) {
    Head::write(kind::WINDOW_UPDATE, 0, stream, 4, out);
    out.put_u32(increment & 0x7fff_ffff);
}

pub fn rst_stream(stream: u32, reason: Reason, out: &mut BytesMut) {
    Head::write(kind::RST_STREAM, 0, stream, 4, out);
    out.put_u32(reason as u32);
}

pub fn goaway(last_stream: u32, reason: Reason, out: &mut BytesMut) {
    Head::write(kind::GOAWAY, 0, 0, 8, out);
    out.put_u32(last_stream);
    out.put_u32(reason as u32);
}

/// The payload of a HEADERS frame without its padding and priority
/// fields, or `None` if they do not fit (a PROTOCOL_ERROR, §6.2).
pub fn headers_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    let mut p = unpadded(flags, payload)?;
    if flags & flag::PRIORITY != 0 {
        p = p.get(5..)?;
    }
    Some(p)
}

/// A DATA or HEADERS payload without its padding (§6.1), or `None` if the
/// padding is longer than the payload.
pub fn unpadded(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & flag::PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len().checked_sub(pad as usize).map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_the_reserved_bit_is_ignored() {
        let mut out = BytesMut::new();
        Head::write(kind::DATA, flag::END_STREAM, 7, 70_000, &mut out);
        assert_eq!(
            Head::parse(&out),
            Head {
                len: 70_000,
                kind: kind::DATA,
                flags: flag::END_STREAM,
                stream: 7
            }
        );
        out[5] |= 0x80;
        assert_eq!(Head::parse(&out).stream, 7);
    }

    #[test]
    fn padding_and_priority_are_stripped_and_bad_padding_refused() {
        assert_eq!(unpadded(0, b"abc"), Some(&b"abc"[..]));
        assert_eq!(unpadded(flag::PADDED, b"\x02abcXY"), Some(&b"abc"[..]));
        assert_eq!(unpadded(flag::PADDED, b"\x09abc"), None);
        assert_eq!(unpadded(flag::PADDED, b""), None);
        let p = b"\x01\x00\x00\x00\x03\x10hpack";
        assert_eq!(
            headers_fragment(flag::PADDED | flag::PRIORITY, p),
            Some(&b"hpack"[..4])
        );
        assert_eq!(headers_fragment(flag::PRIORITY, b"\x00\x00"), None);
    }
}
