//! How an HTTP/1.1 response body ends (RFC 9112 §6.3) and how to take it
//! out of the bytes read so far: by Content-Length, chunked coding (§7.1,
//! extensions and trailer fields dropped) or the connection's end.
//!
//! Owns: the framing rules for the two clients that read HTTP/1.1 responses
//! straight from a socket, the proxy's client to cache nodes and the load
//! generator. Each parses the head itself (one builds a `HeaderMap`, the
//! other only counts), feeds the fields to [`FramingFields`], and reads the
//! body with [`Framing::step`].

use bytes::{Buf, Bytes, BytesMut};

/// Largest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4 * 1024;

/// A response whose framing cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// What a response head says about its body's framing, gathered field by
/// field.
#[derive(Debug, Default, Clone, Copy)]
pub struct FramingFields {
    length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: Option<bool>,
    keep_alive: bool,
}

impl FramingFields {
    /// Takes note of one header field; other fields are ignored.
    pub fn see(&mut self, name: &str, value: &[u8]) -> Result<(), Malformed> {
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .map(|v| v.trim_matches([' ', '\t']))
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Malformed("invalid Content-Length"))?;
            if self.length.is_some_and(|l| l != n) {
                return Err(Malformed("conflicting Content-Length"));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = true;
            // Only the last coding says how the body ends.
            self.chunked = std::str::from_utf8(value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
        } else if name.eq_ignore_ascii_case("connection") {
            for token in std::str::from_utf8(value).unwrap_or("").split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    self.close = Some(true);
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    self.keep_alive = true;
                }
            }
        }
        Ok(())
    }
}

/// How the body ends, and what is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// As the inner framing, but the connection is not reused after it.
    Closing(Inner),
}

/// The framing of a body whose connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    Length(u64),
    Chunked(Chunked),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data remain.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// In the trailer section, up to its empty line.
    Trailer,
    Done,
}

/// One step of reading a body out of the bytes already received.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// The buffer holds no more of the body.
    More,
    Done,
}

impl Framing {
    /// The framing of the final (not 1xx) response to a request, HEAD when
    /// `head_only`, with status `status` in HTTP/1.0 when `http10`.
    ///
    /// HEAD, 204 and 304 have no body whatever the fields say;
    /// Transfer-Encoding overrides Content-Length (and the connection cannot
    /// be trusted after both); a final coding other than chunked, or no
    /// framing at all, runs to the connection's end.
    pub fn of(status: u16, head_only: bool, http10: bool, fields: &FramingFields) -> Framing {
        let mut close = fields.close.unwrap_or(false) || (http10 && !fields.keep_alive);
        let framing = if head_only || status == 204 || status == 304 {
            Framing::Length(0)
        } else if fields.transfer_encoding {
            close |= fields.length.is_some() || !fields.chunked;
            if fields.chunked {
                Framing::Chunked(Chunked::Size)
            } else {
                Framing::UntilClose
            }
        } else if let Some(n) = fields.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        if close {
            framing.closing()
        } else {
            framing
        }
    }

    fn closing(self) -> Framing {
        match self {
            Framing::Length(n) => Framing::Closing(Inner::Length(n)),
            Framing::Chunked(c) => Framing::Closing(Inner::Chunked(c)),
            other => other,
        }
    }

    /// Whether the connection may carry another request once the body has
    /// ended (and nothing beyond it was received).
    pub fn reusable(&self) -> bool {
        matches!(self, Framing::Length(_) | Framing::Chunked(_))
    }

    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Framing::Length(0)
                | Framing::Chunked(Chunked::Done)
                | Framing::Closing(Inner::Length(0) | Inner::Chunked(Chunked::Done))
        )
    }

    /// Bytes of body left, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Framing::Length(n) | Framing::Closing(Inner::Length(n)) => Some(*n),
            _ => None,
        }
    }

    /// Takes the next piece of body from `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        match self {
            Framing::Length(left) | Framing::Closing(Inner::Length(left)) => {
                Ok(take_length(left, buf))
            }
            Framing::Chunked(c) | Framing::Closing(Inner::Chunked(c)) => c.step(buf),
            Framing::UntilClose if buf.is_empty() => Ok(Step::More),
            Framing::UntilClose => Ok(Step::Data(buf.split().freeze())),
        }
    }
}

fn take_length(left: &mut u64, buf: &mut BytesMut) -> Step {
    if *left == 0 {
        return Step::Done;
    }
    if buf.is_empty() {
        return Step::More;
    }
    let n = (buf.len() as u64).min(*left);
    *left -= n;
    Step::Data(buf.split_to(n as usize).freeze())
}

impl Chunked {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::More);
                    };
                    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
                    let digits = trim_whitespace(digits);
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(Malformed("invalid chunk size"));
                    }
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or(Malformed("invalid chunk size"))?;
                    *self = if size == 0 {
                        Chunked::Trailer
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(ref mut left) => {
                    let step = take_length(left, buf);
                    if *left == 0 {
                        *self = Chunked::DataEnd;
                    }
                    if step != Step::Done {
                        return Ok(step);
                    }
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailer => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::More);
                    };
                    if line.is_empty() {
                        *self = Chunked::Done;
                    }
                }
                Chunked::Done => return Ok(Step::Done),
            }
        }
    }
}

/// The next CRLF-terminated line, without its CRLF.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, Malformed> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(Malformed("chunk line over 4 KiB")),
        None => Ok(None),
    }
}

fn trim_whitespace(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces; `None` if it ended early.
    fn chunked(input: &[&[u8]]) -> Result<Option<Vec<u8>>, Malformed> {
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match framing.step(&mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::More => break,
                    Step::Done => return Ok(Some(out)),
                }
            }
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_are_split() {
        let whole: &[u8] = b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        let want = Some(b"abc0123456789".to_vec());
        assert_eq!(chunked(&[whole]).unwrap(), want);
        for cut in 1..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(chunked(&[a, b]).unwrap(), want, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(chunked(&bytes).unwrap(), want);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        assert!(chunked(&[b"zz\r\n"]).is_err());
        assert!(chunked(&[b"2\r\nabc\r\n"]).is_err());
        assert!(chunked(&[b"1000000000000000\r\n"]).is_err());
        assert!(chunked(&[&[b'1'; 5000][..]]).is_err());
        assert_eq!(chunked(&[b"5\r\nab"]), Ok(None), "short, not malformed");
    }

    fn framing(
        status: u16,
        head_only: bool,
        http10: bool,
        fields: &[(&str, &str)],
    ) -> Result<Framing, Malformed> {
        let mut f = FramingFields::default();
        for (name, value) in fields {
            f.see(name, value.as_bytes())?;
        }
        Ok(Framing::of(status, head_only, http10, &f))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cl = ("Content-Length", "5");
        let te = ("Transfer-Encoding", "gzip, chunked");
        assert_eq!(framing(200, false, false, &[cl]), Ok(Framing::Length(5)));
        assert_eq!(
            framing(200, false, false, &[cl, cl]),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(200, false, false, &[cl, ("content-length", "6")]),
            Err(Malformed("conflicting Content-Length"))
        );
        assert!(framing(200, false, false, &[("Content-Length", "+5")]).is_err());
        assert_eq!(
            framing(200, false, false, &[te]),
            Ok(Framing::Chunked(Chunked::Size))
        );
        assert_eq!(
            framing(200, false, false, &[te, cl]),
            Ok(Framing::Closing(Inner::Chunked(Chunked::Size))),
            "both: chunked wins, and the connection is not reused"
        );
        assert_eq!(
            framing(200, false, false, &[("Transfer-Encoding", "chunked, gzip")]),
            Ok(Framing::UntilClose)
        );
        assert_eq!(framing(200, false, false, &[]), Ok(Framing::UntilClose));
        for (status, head_only) in [(204, false), (304, false), (200, true)] {
            assert_eq!(
                framing(status, head_only, false, &[cl]),
                Ok(Framing::Length(0))
            );
        }
        assert_eq!(
            framing(200, false, false, &[cl, ("Connection", "Close")]),
            Ok(Framing::Closing(Inner::Length(5)))
        );
        assert_eq!(
            framing(200, false, true, &[cl]),
            Ok(Framing::Closing(Inner::Length(5)))
        );
        assert_eq!(
            framing(200, false, true, &[cl, ("Connection", "keep-alive")]),
            Ok(Framing::Length(5))
        );
    }
}
