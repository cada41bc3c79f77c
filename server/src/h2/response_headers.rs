//! HPACK encoding of response headers (RFC 7541), the simplest way that
//! is valid: every field is a literal "without indexing", its name taken
//! from the static table where it is there, and strings are sent raw
//! rather than Huffman-coded.
//!
//! Why not a full encoder with a dynamic table: this encoder keeps no
//! state, so it never has to follow the peer's SETTINGS_HEADER_TABLE_SIZE,
//! and it costs a match on the name and a copy of the value per field. A
//! cache hit's dozen fields grow by about 150 octets against an indexing
//! encoder, a few percent of even a 1 KiB response.

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, StatusCode};

/// The static table's index for a name (Appendix A); 0 when it is not there.
fn static_name(name: &str) -> u8 {
    match name {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => 0,
    }
}

/// Fields that belong to an HTTP/1.1 connection and are malformed in
/// HTTP/2 (RFC 9113 §8.2.2): never sent.
fn connection_specific(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

/// An integer with an `prefix`-bit prefix whose high bits are `mask` (§5.1).
fn integer(value: usize, prefix: u8, mask: u8, out: &mut BytesMut) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.put_u8(mask | value as u8);
        return;
    }
    out.put_u8(mask | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.put_u8((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.put_u8(rest as u8);
}

fn string(value: &[u8], out: &mut BytesMut) {
    integer(value.len(), 7, 0, out);
    out.put_slice(value);
}

/// Encodes `:status` and `headers` as one header block.
pub fn encode(status: StatusCode, headers: &HeaderMap, out: &mut BytesMut) {
    // :status has indexed entries for the common codes (§A: 8 to 14).
    let indexed = match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if indexed != 0 {
        integer(indexed, 7, 0x80, out);
    } else {
        // Literal without indexing, name ":status" (index 8).
        integer(8, 4, 0x00, out);
        string(status.as_str().as_bytes(), out);
    }
    for (name, value) in headers {
        let name = name.as_str();
        if connection_specific(name) {
            continue;
        }
        // A value marked sensitive (credentials) is "never indexed", so
        // no intermediary puts it in a table either (§7.1.3).
        let mask = if value.is_sensitive() { 0x10 } else { 0x00 };
        match static_name(name) {
            0 => {
                out.put_u8(mask);
                string(name.as_bytes(), out);
            }
            index => integer(index as usize, 4, mask, out),
        }
        string(value.as_bytes(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// What an independent decoder reads back.
    fn decode(block: &[u8]) -> Vec<(String, String)> {
        let mut decoder = loona_hpack::Decoder::new();
        decoder
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn a_decoder_reads_back_every_field_and_no_connection_field() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("video/mp2t"));
        h.insert(
            "cache-status",
            HeaderValue::from_static("fanout-p1; hit; ttl=3"),
        );
        h.append("vary", HeaderValue::from_static("a"));
        h.append("vary", HeaderValue::from_static("b"));
        h.insert("connection", HeaderValue::from_static("close"));
        let long = "x".repeat(300);
        h.insert("x-long", HeaderValue::from_str(&long).unwrap());
        let mut secret = HeaderValue::from_static("s3cret");
        secret.set_sensitive(true);
        h.insert("set-cookie", secret);
        for status in [200, 206, 304, 404, 503, 299] {
            let mut out = BytesMut::new();
            encode(StatusCode::from_u16(status).unwrap(), &h, &mut out);
            let fields = decode(&out);
            assert_eq!(fields[0], (":status".into(), status.to_string()));
            assert_eq!(
                fields[1..].to_vec(),
                vec![
                    ("content-type".into(), "video/mp2t".into()),
                    ("cache-status".into(), "fanout-p1; hit; ttl=3".into()),
                    ("vary".into(), "a".into()),
                    ("vary".into(), "b".into()),
                    ("x-long".into(), long.clone()),
                    ("set-cookie".into(), "s3cret".into()),
                ]
            );
        }
    }

    #[test]
    fn integers_use_their_prefix_then_continuation_octets() {
        let mut out = BytesMut::new();
        integer(10, 5, 0, &mut out);
        assert_eq!(&out[..], [10]);
        let mut out = BytesMut::new();
        integer(1337, 5, 0, &mut out);
        assert_eq!(&out[..], [31, 154, 10], "RFC 7541 §C.1.2");
    }
}
