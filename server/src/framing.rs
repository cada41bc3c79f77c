//! Requests every Fanout listener refuses before any component sees them:
//! the shapes that let a request be read two ways by two servers
//! (request smuggling) and targets that are not valid (RFC 9112).
//!
//! hyper itself already answers 400 for unparsable requests, duplicate
//! Content-Length values, obs-fold and a Transfer-Encoding that does not
//! end in chunked, and 431 once headers pass `ServeOptions::max_header_bytes`.
//! A request with both Content-Length and Transfer-Encoding is framed by
//! the latter alone, its Content-Length removed, and the connection closed
//! after the response (RFC 9112 §6.3), so nothing queued behind it on the
//! connection can be read another way; services never see both fields.

use http::{header, Method, Request, StatusCode, Version};

use crate::body::{text, ResponseBody};

/// The response a malformed request gets, or `None` if it may proceed.
pub fn refuse<B>(req: &Request<B>, max_body_bytes: u64) -> Option<http::Response<ResponseBody>> {
    let h = req.headers();
    // §3.2: an HTTP/1.1 request without Host is invalid (HTTP/2 carries
    // :authority in the target instead).
    if req.version() == Version::HTTP_11 && !h.contains_key(header::HOST) {
        return Some(close(StatusCode::BAD_REQUEST, "missing Host\n"));
    }
    // §3.2: origin-form starts with '/'; absolute-form has a scheme;
    // asterisk-form is for OPTIONS only; authority-form for CONNECT.
    let uri = req.uri();
    let path = uri.path();
    let target_ok = uri.scheme().is_some()
        || path.starts_with('/')
        || (req.method() == Method::OPTIONS && path == "*")
        || (req.method() == Method::CONNECT && uri.authority().is_some());
    if !target_ok {
        return Some(close(StatusCode::BAD_REQUEST, "invalid request target\n"));
    }
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body_bytes) {
        return Some(close(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        ));
    }
    None
}

/// The connection's framing cannot be trusted after such a request.
fn close(status: StatusCode, body: &'static str) -> http::Response<ResponseBody> {
    let mut r = text(status, body);
    r.headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(req: Request<()>) -> Option<StatusCode> {
        refuse(&req, 1000).map(|r| r.status())
    }

    #[test]
    fn bad_targets_missing_host_and_large_bodies_are_refused() {
        let ok = || Request::get("/a").header("host", "x");
        assert_eq!(status(ok().body(()).unwrap()), None);
        assert_eq!(
            status(Request::get("/a").body(()).unwrap()),
            Some(StatusCode::BAD_REQUEST),
            "no Host"
        );
        assert_eq!(
            status(
                Request::get("/a")
                    .version(Version::HTTP_2)
                    .body(())
                    .unwrap()
            ),
            None,
            "h2 has :authority"
        );
        assert_eq!(
            status(
                Request::get("nothing")
                    .header("host", "x")
                    .body(())
                    .unwrap()
            ),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(Request::options("*").header("host", "x").body(()).unwrap()),
            None
        );
        assert_eq!(
            status(ok().header("content-length", "1001").body(()).unwrap()),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            status(ok().header("content-length", "1000").body(()).unwrap()),
            None
        );
    }
}
