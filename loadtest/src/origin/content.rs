//! Object bodies and the HTTP rules for serving them: deterministic bytes
//! (the same path always yields the same bytes, so a cache that corrupts
//! or mixes objects is caught) with validators; conditional requests and
//! ranges follow the rules in `fanout_server::conditional`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use fanout_server::conditional::{self, Answer};
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
    /// Request headers this object varies on.
    pub vary: &'a [String],
    /// Extra response headers (surrogate keys and the like).
    pub extra: &'a BTreeMap<String, String>,
    /// When a live segment was published, to the millisecond (sent as
    /// [`PUBLISHED`]): `Last-Modified` has whole seconds.
    pub published: Option<SystemTime>,
}

/// On live segments: when the origin published it, in milliseconds since
/// the Unix epoch. The load generator measures viewers' distance from the
/// live edge by it.
pub const PUBLISHED: header::HeaderName = header::HeaderName::from_static("x-origin-published-ms");

/// For objects without extra headers.
pub static NO_EXTRA: BTreeMap<String, String> = BTreeMap::new();

impl Object<'_> {
    fn etag(&self, variant: &str) -> String {
        format!(
            "\"{:016x}-{:x}\"",
            xxh3_64(variant.as_bytes()) ^ self.version,
            self.len
        )
    }

    /// What the bytes derive from: the path, plus the values of the request
    /// headers the object varies on, so each variant has its own bytes.
    pub fn variant(&self, req: &HeaderMap) -> String {
        let mut v = self.path.to_string();
        for name in self.vary {
            v.push('|');
            v.push_str(
                req.get(name.as_str())
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or(""),
            );
        }
        v
    }
}

/// Serves `obj` for a GET or HEAD, honouring conditionals and Range.
pub fn respond(
    noise: &Noise,
    method: &Method,
    req: &HeaderMap,
    obj: Object<'_>,
) -> Response<ResponseBody> {
    let variant = obj.variant(req);
    let etag = obj.etag(&variant);
    let mut headers = HeaderMap::new();
    if !obj.vary.is_empty() {
        headers.insert(header::VARY, value(&obj.vary.join(", ")));
    }
    for (name, v) in obj.extra {
        if let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) {
            headers.insert(name, value(v));
        }
    }
    if let Some(at) = obj.published {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        headers.insert(PUBLISHED, HeaderValue::from(ms));
    }
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

    let len = obj.text.as_ref().map_or(obj.len, |t| t.len() as u64);
    let answer = conditional::answer(req, Some(&etag), Some(obj.last_modified), Some(len));
    if let Some(cr) = conditional::content_range(answer, len) {
        headers.insert(header::CONTENT_RANGE, cr);
    }
    let (status, from, to) = match answer {
        Answer::NotModified => return build(StatusCode::NOT_MODIFIED, headers, empty()),
        Answer::Full => (StatusCode::OK, 0, len),
        Answer::Partial(from, to) => (StatusCode::PARTIAL_CONTENT, from, to),
        Answer::Unsatisfiable => {
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
                .chunks(&variant, from, to)
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

#[cfg(test)]
mod tests {
    use super::*;

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
