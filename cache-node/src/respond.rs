//! The response a client gets from a stored or filling representation: its
//! conditional and range headers applied (RFC 9110 §13, §14, by the rules
//! in `fanout_server::conditional`), no body for HEAD, and `Age`.

use std::sync::Arc;

use bytes::Bytes;
use fanout_server::conditional::{self, Answer, NOT_MODIFIED_FIELDS};
use fanout_server::{empty, full, ResponseBody};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::collapse::Fill;

/// Where the body comes from.
pub enum Source<'a> {
    Stored(&'a Bytes),
    /// A fill still running (or just finished): bytes as they arrive.
    Fill(&'a Arc<Fill>),
}

pub struct Representation<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    /// `None` while a fill of unknown length runs.
    pub len: Option<u64>,
    pub source: Source<'a>,
    pub age_secs: u64,
}

pub fn respond(
    method: &Method,
    request: &HeaderMap,
    rep: Representation<'_>,
) -> Response<ResponseBody> {
    let answer = if rep.status == StatusCode::OK {
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
            };
            (StatusCode::PARTIAL_CONTENT, body, h)
        }
        Answer::Full => {
            let body = match (head_only, rep.source) {
                (true, _) => empty(),
                (false, Source::Stored(b)) => full(b.clone()),
                (false, Source::Fill(f)) => f.body(),
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
