//! The response a client gets from a stored or filling representation: its
//! conditional and range headers applied (RFC 9110 §13, §14, by the rules
//! in `fanout_server::conditional`), no body for HEAD, and `Age`.

use std::sync::Arc;

use bytes::Bytes;
use fanout_server::conditional::{self, Answer, NOT_MODIFIED_FIELDS};
use fanout_server::{empty, full, ResponseBody};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::collapse::Fill;
use crate::store::StoredResponse;

/// Where the body comes from.
pub enum Source<'a> {
    Stored(&'a Bytes),
    /// A fill still running (or just finished): bytes as they arrive.
    Fill(&'a Arc<Fill>),
    /// Bytes `[from, to)` as this function makes them (an object read
    /// slice by slice).
    Ranges(&'a dyn Fn(u64, u64) -> ResponseBody),
}

pub struct Representation<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    /// `None` while a fill of unknown length runs.
    pub len: Option<u64>,
    pub source: Source<'a>,
    pub age_secs: u64,
}

/// Request headers that make an answer differ from the full object a cache
/// keeps; a fill asks without them, and [`respond`] applies each client's
/// own to what the fill brings.
const CONDITIONAL: [header::HeaderName; 6] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// A client's request headers as a fill sends them on: without its
/// conditionals, since the fill is for the whole object.
pub fn fill_request_headers(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    for c in &CONDITIONAL {
        h.remove(c);
    }
    h
}

/// A stored response as `request` gets it at `now`, and the `ttl` a cache
/// reports for it in `Cache-Status` (negative once stale).
pub fn from_store(
    method: &Method,
    request: &HeaderMap,
    stored: &StoredResponse,
    now: std::time::Instant,
) -> (Response<ResponseBody>, i64) {
    let (age_secs, ttl) = stored.age_and_ttl_secs(now);
    let resp = respond(
        method,
        request,
        Representation {
            status: stored.status,
            headers: &stored.headers,
            len: Some(stored.body.len() as u64),
            source: Source::Stored(&stored.body),
            age_secs,
        },
    );
    (resp, ttl)
}

pub fn respond(
    method: &Method,
    request: &HeaderMap,
    rep: Representation<'_>,
) -> Response<ResponseBody> {
    // Most requests carry no conditional: skip parsing the validators
    // (Last-Modified is a date) for them. One pass over the few request
    // fields costs less than hashing five names.
    let conditional = request.keys().any(|k| CONDITIONAL[1..].contains(k));
    let answer = if rep.status == StatusCode::OK && conditional {
        let (etag, last_modified) = conditional::validators(rep.headers);
        conditional::answer(request, etag, last_modified, rep.len)
    } else {
        Answer::Full
    };
    let head_only = method == Method::HEAD;
    let (status, body, mut headers) = match answer {
        Answer::NotModified => {
            let mut h = HeaderMap::new();
            for name in &NOT_MODIFIED_FIELDS {
                for v in rep.headers.get_all(name) {
                    h.append(name.clone(), v.clone());
                }
            }
            (StatusCode::NOT_MODIFIED, empty(), h)
        }
        Answer::Unsatisfiable => {
            let mut h = rep.headers.clone();
            h.remove(header::CONTENT_TYPE);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            (StatusCode::RANGE_NOT_SATISFIABLE, empty(), h)
        }
        Answer::Partial(from, to) => {
            let mut h = rep.headers.clone();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(to - from));
            let body = match (head_only, rep.source) {
                (true, _) => empty(),
                (false, Source::Stored(b)) => full(b.slice(from as usize..to as usize)),
                (false, Source::Fill(f)) => f.body_range(from, to),
                (false, Source::Ranges(make)) => make(from, to),
            };
            (StatusCode::PARTIAL_CONTENT, body, h)
        }
        Answer::Full => {
            let body = match (head_only, rep.source) {
                (true, _) => empty(),
                (false, Source::Stored(b)) => full(b.clone()),
                (false, Source::Fill(f)) => f.body(),
                (false, Source::Ranges(make)) => make(0, rep.len.unwrap_or(u64::MAX)),
            };
            (rep.status, body, rep.headers.clone())
        }
    };
    if let Some(len) = rep.len {
        if let Some(cr) = conditional::content_range(answer, len) {
            headers.insert(header::CONTENT_RANGE, cr);
        }
    }
    headers.insert(header::AGE, HeaderValue::from(rep.age_secs));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}
