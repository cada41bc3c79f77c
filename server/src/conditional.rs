//! Conditional requests and byte ranges (RFC 9110 §13 and §14), evaluated
//! against a representation's validators and length. The synthetic origin
//! and the cache node answer them with the same rules.

use std::time::SystemTime;

use http::{header, HeaderMap, HeaderValue};

/// What a `GET` with these request headers should get for a 200
/// representation with the given validators and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 304: the client's copy is current (§13.1.1, §13.1.3).
    NotModified,
    /// 200 with the whole representation.
    Full,
    /// 206 with bytes `[from, to)` (§14.2).
    Partial(u64, u64),
    /// 416 (§15.5.17).
    Unsatisfiable,
}

/// Evaluates If-None-Match, then If-Modified-Since (only without
/// If-None-Match), then Range guarded by If-Range (§13.2.2's order).
/// `len` is `None` when the length is not known yet: ranges then get the
/// whole representation, which §14.2 allows.
pub fn answer(
    req: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
    len: Option<u64>,
) -> Answer {
    if not_modified(req, etag, last_modified) {
        return Answer::NotModified;
    }
    let (Some(len), Some(range)) = (len, req.get(header::RANGE).and_then(|r| r.to_str().ok()))
    else {
        return Answer::Full;
    };
    if !if_range_holds(req, etag) {
        return Answer::Full;
    }
    parse_range(range, len)
}

/// The validators of a stored or forwarded response's headers.
pub fn validators(headers: &HeaderMap) -> (Option<&str>, Option<SystemTime>) {
    let etag = headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    let last_modified = headers
        .get(header::LAST_MODIFIED)
        .and_then(crate::time_fields::http_date);
    (etag, last_modified)
}

/// The `Content-Range` value of a 206 or 416.
pub fn content_range(answer: Answer, len: u64) -> Option<HeaderValue> {
    let v = match answer {
        Answer::Partial(from, to) => format!("bytes {from}-{}/{len}", to - 1),
        Answer::Unsatisfiable => format!("bytes */{len}"),
        _ => return None,
    };
    HeaderValue::from_str(&v).ok()
}

/// Fields a 304 carries from the 200 it stands for (§15.4.5).
pub const NOT_MODIFIED_FIELDS: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

/// If-None-Match uses weak comparison (§13.1.2); If-Modified-Since applies
/// only when If-None-Match is absent (§13.1.3).
fn not_modified(req: &HeaderMap, etag: Option<&str>, last_modified: Option<SystemTime>) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(ours) = etag.map(|e| e.trim_start_matches("W/")) else {
            return inm.trim() == "*";
        };
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    let since = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(crate::time_fields::http_date);
    match (since, last_modified) {
        // HTTP dates have one-second resolution.
        (Some(since), Some(lm)) => {
            let lm = httpdate::parse_http_date(&httpdate::fmt_http_date(lm)).unwrap_or(lm);
            lm <= since
        }
        _ => false,
    }
}

/// A Range applies only if If-Range (when sent) matches the ETag strongly
/// (§13.1.5); a date in If-Range is not a strong validator here, so the
/// whole representation is sent.
fn if_range_holds(req: &HeaderMap, etag: Option<&str>) -> bool {
    match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => etag.is_some_and(|e| !e.starts_with("W/") && v.trim() == e),
    }
}

/// One `bytes=` range; several ranges or other units get the whole
/// representation, which §14.2 allows.
fn parse_range(header: &str, len: u64) -> Answer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Answer::Full;
    };
    if spec.contains(',') {
        return Answer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Answer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last.saturating_add(1).min(len)),
        (Ok(first), Err(_)) if b.is_empty() => (first, len),
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 {
                return Answer::Unsatisfiable;
            }
            (len.saturating_sub(suffix), len)
        }
        _ => return Answer::Full,
    };
    if range.0 < len {
        Answer::Partial(range.0, range.1)
    } else {
        Answer::Unsatisfiable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ranges() {
        use Answer::*;
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
    fn precedence_of_conditions() {
        use header::*;
        let lm = httpdate::parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT").unwrap();
        let etag = Some("\"v1\"");
        let later = "Fri, 02 Jan 2026 00:00:00 GMT";
        assert_eq!(
            answer(&req(&[(IF_NONE_MATCH, "\"v1\"")]), etag, Some(lm), Some(10)),
            Answer::NotModified
        );
        assert_eq!(
            answer(
                &req(&[(IF_NONE_MATCH, "W/\"v1\", \"v2\"")]),
                etag,
                Some(lm),
                Some(10)
            ),
            Answer::NotModified
        );
        // If-None-Match decides alone when present.
        assert_eq!(
            answer(
                &req(&[(IF_NONE_MATCH, "\"v0\""), (IF_MODIFIED_SINCE, later)]),
                etag,
                Some(lm),
                Some(10)
            ),
            Answer::Full
        );
        assert_eq!(
            answer(
                &req(&[(IF_MODIFIED_SINCE, later)]),
                etag,
                Some(lm),
                Some(10)
            ),
            Answer::NotModified
        );
        assert_eq!(
            answer(&req(&[(IF_MODIFIED_SINCE, later)]), etag, None, Some(10)),
            Answer::Full
        );
        assert_eq!(
            answer(&req(&[(RANGE, "bytes=2-3")]), etag, None, Some(10)),
            Answer::Partial(2, 4)
        );
        assert_eq!(
            answer(
                &req(&[(RANGE, "bytes=2-3"), (IF_RANGE, "\"v1\"")]),
                etag,
                None,
                Some(10)
            ),
            Answer::Partial(2, 4)
        );
        assert_eq!(
            answer(
                &req(&[(RANGE, "bytes=2-3"), (IF_RANGE, "\"v0\"")]),
                etag,
                None,
                Some(10)
            ),
            Answer::Full
        );
        assert_eq!(
            answer(&req(&[(RANGE, "bytes=2-3")]), etag, None, None),
            Answer::Full,
            "length unknown yet"
        );
    }
}
