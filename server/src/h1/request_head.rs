//! Reading a request head off the connection's buffer, for the requests
//! this server answers itself: GET and HEAD over HTTP/1.1, without a body,
//! in origin form. Everything else is left in the buffer for hyper.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::request_body::RequestBody;

/// hyper's default, so a head this server declines is declined for its
/// size by hyper with the same 431.
const MAX_HEADERS: usize = 100;

// Returned by value and taken apart at once: boxing the request would
// cost an allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A request, and whether the client asked to close after it.
    Request(Request<RequestBody>, bool),
    /// The head is not complete yet.
    Partial,
    /// Not one this server takes: hyper serves the connection from here,
    /// with the buffer as it is.
    Handoff,
}

/// Where a field's name and value lie in the head.
#[derive(Clone, Copy, Default)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Parses the head at the start of `buf`. On [`Parsed::Request`] the head
/// is taken out of `buf`; its header values share its bytes.
pub fn parse(buf: &mut BytesMut, max_header_bytes: usize) -> Parsed {
    // Left uninitialised: httparse writes what it uses, and clearing 100
    // slots a request showed in profiles.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= max_header_bytes => return Parsed::Partial,
        // Too large, or malformed: hyper gives the answer it always gave.
        _ => return Parsed::Handoff,
    };
    if len > max_header_bytes || req.version != Some(1) {
        return Parsed::Handoff;
    }
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Handoff,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Handoff;
    };
    let base = buf.as_ptr() as usize;
    // Offsets fit: a head longer than `max_header_bytes` went to hyper.
    let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
    let path = at(path.as_bytes());
    let mut fields = [Field::default(); MAX_HEADERS];
    let mut close = false;
    for (field, h) in fields.iter_mut().zip(req.headers.iter()) {
        let name = h.name.as_bytes();
        // A body, an upgrade or a 100-continue: hyper's to handle.
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::Handoff;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Handoff;
                }
            }
        }
        *field = Field {
            name: at(name),
            value: at(h.value),
        };
    }
    let count = req.headers.len();
    let head = buf.split_to(len).freeze();
    match build(&head, method, path, &fields[..count]) {
        Some(request) => Parsed::Request(request, close),
        None => {
            // Something http's types refuse that httparse let through: put
            // the head back for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Handoff
        }
    }
}

fn build(
    head: &Bytes,
    method: Method,
    path: (u32, u32),
    fields: &[Field],
) -> Option<Request<RequestBody>> {
    let slice = |(from, len): (u32, u32)| head.slice(from as usize..(from + len) as usize);
    let uri = Uri::from_maybe_shared(slice(path)).ok()?;
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let (from, len) = (f.name.0 as usize, f.name.1 as usize);
        let name = HeaderName::from_bytes(&head[from..from + len]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(f.value)).ok()?;
        map.append(name, value);
    }
    // RFC 9112 §3.2: a Host field is required; more than one is invalid.
    // framing::refuse answers 400 for a missing one; two go to hyper.
    if map.get_all(header::HOST).iter().nth(1).is_some() {
        return None;
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(s);
        let p = parse(&mut buf, 64 * 1024);
        (p, buf)
    }

    #[test]
    fn a_get_is_taken_and_leaves_what_follows() {
        let (p, rest) = parse_str(
            "GET /live/1.ts?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nConnection: keep-alive, close\r\n\r\nGET /next",
        );
        let Parsed::Request(req, close) = p else {
            panic!("not taken")
        };
        assert!(close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/live/1.ts");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.headers()["host"], "a");
        assert_eq!(req.headers()["accept"], "*/*");
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn a_partial_head_waits_and_an_oversized_one_goes_to_hyper() {
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHost: a\r\n").0,
            Parsed::Partial
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX: "[..]);
        buf.extend_from_slice(&[b'y'; 100]);
        assert!(matches!(parse(&mut buf, 64), Parsed::Handoff));
    }

    #[test]
    fn bodies_upgrades_other_methods_and_versions_go_to_hyper_untouched() {
        for s in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let (p, rest) = parse_str(s);
            assert!(matches!(p, Parsed::Handoff), "{s:?}");
            assert_eq!(&rest[..], s.as_bytes(), "{s:?} must be left whole");
        }
    }
}
