//! Partial content (RFC 9110 §14, RFC 9111 §3.3–3.4) and slices: a large
//! object fetched from the origin as aligned byte ranges, each stored as a
//! 206 under a key of its own beside the object's, and combined into whole
//! or ranged answers when every piece carries the same validators.
//!
//! The pure parts live here (keys, `Content-Range`, which slice a request
//! starts in, whether two pieces are of one object); a cache node does the
//! fetching.

use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::vary::SEPARATOR;

/// The key slice `index` of the object stored under `object_key` lives
/// under. It extends the object's key past the separator, so a purge of
/// the URL (every variant) reaches its slices too.
pub fn piece_key(object_key: &str, index: u64) -> String {
    format!("{}{index}", pieces_prefix(object_key))
}

/// What the keys of every slice of the object under `object_key` start with.
pub fn pieces_prefix(object_key: &str) -> String {
    format!("{object_key}{SEPARATOR}slice:")
}

/// Bytes `[from, to)` of slice `index`, not yet cut at the object's end.
/// Saturating: a client may ask for a first byte near 2^64.
pub fn slice_bounds(index: u64, size: u64) -> (u64, u64) {
    let from = index.saturating_mul(size);
    (from, from.saturating_add(size))
}

/// The `Range` a fill of slice `index` sends.
pub fn range_header(index: u64, size: u64) -> HeaderValue {
    let (from, to) = slice_bounds(index, size);
    HeaderValue::from_str(&format!("bytes={from}-{}", to - 1)).expect("digits are a valid value")
}

/// The slice a request's answer starts in: the one holding the first byte
/// of a `bytes=N-` or `bytes=N-M` range, else the first (a whole object,
/// a suffix range whose start depends on the length, other units).
pub fn first_slice(request: &HeaderMap, size: u64) -> u64 {
    request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .filter(|spec| !spec.contains(','))
        .and_then(|spec| spec.split_once('-'))
        .and_then(|(first, _)| first.trim().parse::<u64>().ok())
        .map_or(0, |first| first / size)
}

/// A 206's `Content-Range: bytes first-last/complete` (RFC 9110 §14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    /// Inclusive, as the field writes it.
    pub last: u64,
    /// `None` for `*` (unknown).
    pub complete: Option<u64>,
}

impl ContentRange {
    pub fn of(headers: &HeaderMap) -> Option<ContentRange> {
        let mut values = headers.get_all(header::CONTENT_RANGE).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return None;
        };
        Self::parse(v.to_str().ok()?)
    }

    pub fn parse(v: &str) -> Option<ContentRange> {
        let rest = v.trim().strip_prefix("bytes ")?;
        let (range, complete) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let digits = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let (first, last) = (digits(first)?, digits(last)?);
        let complete = match complete.trim() {
            "*" => None,
            n => Some(digits(n)?),
        };
        // §14.4: an invalid range is one whose last precedes its first, or
        // that does not lie within the complete length.
        if last < first || complete.is_some_and(|c| last >= c) {
            return None;
        }
        Some(ContentRange {
            first,
            last,
            complete,
        })
    }

    /// The part covers the whole representation.
    pub fn is_whole(&self) -> bool {
        self.first == 0 && self.complete == Some(self.last + 1)
    }

    pub fn byte_count(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// Rewrites a 206 that covers its whole representation as the 200 it
/// stands for (§3.4: a cache may combine parts; one part that is all of
/// them needs no other). Returns whether it did.
pub fn whole_206_as_200(status: &mut StatusCode, headers: &mut HeaderMap) -> bool {
    if *status != StatusCode::PARTIAL_CONTENT {
        return false;
    }
    let Some(range) = ContentRange::of(headers).filter(ContentRange::is_whole) else {
        return false;
    };
    *status = StatusCode::OK;
    headers.remove(header::CONTENT_RANGE);
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.byte_count()),
    );
    true
}

/// What makes two pieces parts of one representation: its length, and its
/// validators, `ETag` and `Last-Modified` alike. §3.4 asks for one strong
/// validator; like NGINX's slice module, equal weak tags (or, with no tag,
/// equal dates) are accepted too, since every piece was asked for as part
/// of this object and its length must agree as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub length: u64,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
}

impl Object {
    /// The object a stored or fetched 206 is a part of, when it says its
    /// complete length.
    pub fn of_piece(status: StatusCode, headers: &HeaderMap) -> Option<Object> {
        if status != StatusCode::PARTIAL_CONTENT {
            return None;
        }
        let length = ContentRange::of(headers)?.complete?;
        Some(Object {
            length,
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
        })
    }

    /// Whether a piece with `status` and `headers` is slice `index` of
    /// this very object: the right bytes, the same length and validators.
    pub fn holds(&self, index: u64, size: u64, status: StatusCode, headers: &HeaderMap) -> bool {
        let Some(other) = Object::of_piece(status, headers) else {
            return false;
        };
        let Some(range) = ContentRange::of(headers) else {
            return false;
        };
        let (from, to) = slice_bounds(index, size);
        other == *self && range.first == from && range.last + 1 == to.min(self.length)
    }

    /// How many slices of `size` the object spans.
    pub fn slices(&self, size: u64) -> u64 {
        self.length.div_ceil(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_range_is_read_strictly() {
        let cr = ContentRange::parse("bytes 0-99/1000").unwrap();
        assert_eq!((cr.first, cr.last, cr.complete), (0, 99, Some(1000)));
        assert_eq!(cr.byte_count(), 100);
        assert!(!cr.is_whole());
        assert!(ContentRange::parse("bytes 0-999/1000").unwrap().is_whole());
        assert_eq!(ContentRange::parse("bytes 5-9/*").unwrap().complete, None);
        for bad in [
            "bytes 9-5/100",
            "bytes 0-100/100",
            "bytes -5/100",
            "bytes 0-+5/100",
            "items 0-5/100",
            "bytes 0-5",
            "bytes */100",
            "bytes 0-5/abc",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_request_starts_in_the_slice_of_its_first_byte() {
        let size = 1000;
        assert_eq!(first_slice(&HeaderMap::new(), size), 0);
        let at = |r: &str| first_slice(&headers(&[(header::RANGE, r)]), size);
        assert_eq!(at("bytes=0-10"), 0);
        assert_eq!(at("bytes=999-"), 0);
        assert_eq!(at("bytes=1000-1500"), 1);
        assert_eq!(at("bytes=25000-"), 25);
        assert_eq!(at("bytes=-500"), 0, "a suffix needs the length first");
        assert_eq!(at("bytes=3000-3100,5-9"), 0);
        assert_eq!(range_header(2, size), "bytes=2000-2999");
        // Found by http-cache/tests/properties.rs: this overflowed.
        let last = at(&format!("bytes={}-", u64::MAX));
        assert_eq!(slice_bounds(last, size).1, u64::MAX);
        assert_eq!(
            range_header(last, size),
            format!("bytes={}-{}", last * size, u64::MAX - 1)
        );
    }

    #[test]
    fn a_whole_206_becomes_a_200() {
        let mut status = StatusCode::PARTIAL_CONTENT;
        let mut h = headers(&[(header::CONTENT_RANGE, "bytes 0-9/10")]);
        assert!(whole_206_as_200(&mut status, &mut h));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_LENGTH], "10");
        assert!(!h.contains_key(header::CONTENT_RANGE));
        let mut status = StatusCode::PARTIAL_CONTENT;
        let mut h = headers(&[(header::CONTENT_RANGE, "bytes 0-8/10")]);
        assert!(!whole_206_as_200(&mut status, &mut h));
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    }

    #[test]
    fn pieces_combine_only_with_one_length_and_strong_validators() {
        let piece = |range: &str, etag: &str| {
            headers(&[(header::CONTENT_RANGE, range), (header::ETAG, etag)])
        };
        let p = StatusCode::PARTIAL_CONTENT;
        let object = Object::of_piece(p, &piece("bytes 0-99/250", "\"v1\"")).unwrap();
        assert_eq!(object.slices(100), 3);
        assert!(object.holds(1, 100, p, &piece("bytes 100-199/250", "\"v1\"")));
        assert!(object.holds(2, 100, p, &piece("bytes 200-249/250", "\"v1\"")));
        assert!(!object.holds(2, 100, p, &piece("bytes 200-239/250", "\"v1\"")));
        assert!(!object.holds(1, 100, p, &piece("bytes 100-199/250", "\"v2\"")));
        assert!(!object.holds(1, 100, p, &piece("bytes 100-199/251", "\"v1\"")));
        assert!(!object.holds(1, 100, p, &piece("bytes 0-99/250", "\"v1\"")));
        assert!(!object.holds(
            1,
            100,
            StatusCode::OK,
            &piece("bytes 100-199/250", "\"v1\"")
        ));
    }
}
