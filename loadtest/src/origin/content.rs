//! Object bodies and the HTTP rules for serving them: deterministic bytes
//! (the same path always yields the same bytes, so a cache that corrupts
//! or mixes objects is caught), validators, conditional requests (RFC 9110
//! §13) and single byte ranges (§14).

use std::time::SystemTime;

use bytes::Bytes;
use fanout_server::{empty, ResponseBody};
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use xxhash_rust::xxh3::xxh3_64;

/// Bodies are served in chunks of this size, each a slice of one shared
/// buffer, so serving a 10 MiB object copies nothing.
const CHUNK: usize = 64 * 1024;
const NOISE_LEN: usize = 1 << 20;

/// One MiB of fixed pseudo-random bytes that every body is cut from.
#[derive(Clone)]
pub struct Noise(Bytes);

impl Noise {
    pub fn new() -> Noise {
        let mut rng = fastrand::Rng::with_seed(0x00fa_0e17);
        let mut v = vec![0u8; NOISE_LEN];
        rng.fill(&mut v);
        // The tail repeats the head, so a chunk that starts near the end
        // reads the same bytes as if the buffer wrapped around.
        v.extend_from_within(..CHUNK);
        Noise(Bytes::from(v))
    }

    /// Byte `i` of the body of `path`; used by tests to check what arrived.
    pub fn byte(&self, path: &str, i: u64) -> u8 {
        let start = (xxh3_64(path.as_bytes()) % NOISE_LEN as u64) as usize;
        self.0[(start + (i % NOISE_LEN as u64) as usize) % NOISE_LEN]
    }

    /// Bytes `[from, to)` of the body of `path`, as zero-copy chunks.
    fn chunks(
        &self,
        path: &str,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Bytes> + Send + 'static {
        let noise = self.0.clone();
        let start = xxh3_64(path.as_bytes()) % NOISE_LEN as u64;
        let mut pos = from;
        std::iter::from_fn(move || {
            if pos >= to {
                return None;
            }
            let offset = ((start + pos) % NOISE_LEN as u64) as usize;
            let n = ((to - pos) as usize).min(CHUNK);
            pos += n as u64;
            Some(noise.slice(offset..offset + n))
        })
    }
}

impl Default for Noise {
    fn default() -> Self {
        Noise::new()
    }
}

/// What the origin knows about an object before it serves it.
pub struct Object<'a> {
    pub path: &'a str,
    pub len: u64,
    pub content_type: &'static str,
    pub cache_control: String,
    pub last_modified: SystemTime,
    /// Distinguishes versions of the same path (playlists change).
    pub version: u64,
    /// Text bodies (playlists); `None` means deterministic bytes.
    pub text: Option<String>,
}

impl Object<'_> {
    fn etag(&self) -> String {
        format!(
            "\"{:016x}-{:x}\"",
            xxh3_64(self.path.as_bytes()) ^ self.version,
            self.len
        )
    }
}

/// Serves `obj` for a GET or HEAD, honouring conditionals and Range.
pub fn respond(
    noise: &Noise,
    method: &Method,
    req: &HeaderMap,
    obj: Object<'_>,
) -> Response<ResponseBody> {
    let etag = obj.etag();
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, value(&obj.cache_control));
    headers.insert(header::ETAG, value(&etag));
    headers.insert(
        header::LAST_MODIFIED,
        value(&httpdate::fmt_http_date(obj.last_modified)),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(obj.content_type),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    if not_modified(req, &etag, obj.last_modified) {
        return build(StatusCode::NOT_MODIFIED, headers, empty());
    }
    let len = obj.text.as_ref().map_or(obj.len, |t| t.len() as u64);
    let range = match req.get(header::RANGE).and_then(|r| r.to_str().ok()) {
        Some(r) if if_range_holds(req, &etag) => parse_range(r, len),
        _ => RangeRequest::Full,
    };
    let (status, from, to) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial(from, to) => {
            headers.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {from}-{}/{len}", to - 1)),
            );
            (StatusCode::PARTIAL_CONTENT, from, to)
        }
        RangeRequest::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, value(&format!("bytes */{len}")));
            headers.remove(header::CONTENT_TYPE);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return build(StatusCode::RANGE_NOT_SATISFIABLE, headers, empty());
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(to - from));
    if method == Method::HEAD {
        return build(status, headers, empty());
    }
    let body = match obj.text {
        Some(t) => fanout_server::full(Bytes::from(t).slice(from as usize..to as usize)),
        None => {
            let frames = noise
                .chunks(obj.path, from, to)
                .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
            StreamBody::new(stream::iter(frames))
                .map_err(|never| match never {})
                .boxed_unsync()
        }
    };
    build(status, headers, body)
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn build(status: StatusCode, headers: HeaderMap, body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// RFC 9110 §13.1.2 and §13.1.3: If-None-Match (weak comparison) decides
/// when present; otherwise If-Modified-Since.
fn not_modified(req: &HeaderMap, etag: &str, last_modified: SystemTime) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let ours = etag.trim_start_matches("W/");
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    match req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        // HTTP dates have one-second resolution.
        Some(since) => {
            let lm = httpdate::parse_http_date(&httpdate::fmt_http_date(last_modified))
                .unwrap_or(last_modified);
            lm <= since
        }
        None => false,
    }
}

/// §13.1.5: a Range applies only if If-Range (when sent) matches strongly.
fn if_range_holds(req: &HeaderMap, etag: &str) -> bool {
    match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == etag,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Full,
    /// Half-open `[from, to)`.
    Partial(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; several ranges or other units get the full object,
/// which §14.2 allows.
fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => Some((first, last.saturating_add(1).min(len))),
        (Ok(first), Err(_)) if b.is_empty() => Some((first, len)),
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return RangeRequest::Unsatisfiable;
            }
            Some((len.saturating_sub(suffix), len))
        }
        _ => return RangeRequest::Full,
    };
    match range {
        Some((from, to)) if from < len => RangeRequest::Partial(from, to),
        _ => RangeRequest::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Partial(0, 100));
        assert_eq!(parse_range("bytes=900-", 1000), Partial(900, 1000));
        assert_eq!(parse_range("bytes=-100", 1000), Partial(900, 1000));
        assert_eq!(parse_range("bytes=990-2000", 1000), Partial(990, 1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
    }

    #[test]
    fn chunks_are_deterministic_and_cover_the_range() {
        let n = Noise::new();
        let whole: Vec<u8> = n
            .chunks("/a", 0, 3 * NOISE_LEN as u64)
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(whole.len(), 3 * NOISE_LEN);
        assert!(whole
            .iter()
            .enumerate()
            .all(|(i, b)| *b == n.byte("/a", i as u64)));
        let part: Vec<u8> = n
            .chunks("/a", 70_000, 70_100)
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(&whole[70_000..70_100], &part[..]);
        assert_eq!(whole[12345], n.byte("/a", 12345));
        let other: Vec<u8> = n.chunks("/b", 0, 64).flat_map(|b| b.to_vec()).collect();
        assert_ne!(&whole[..64], &other[..]);
    }
}
