//! Common Media Client Data (CTA-5004): what a player says about itself
//! and what it will ask for next, as the `CMCD` query parameter or the
//! `CMCD-Request` header. A cache reads one key from it: `nor`, the next
//! object the player will request, which it may prefetch.
//!
//! Parsing never fails loudly: data that does not parse yields nothing,
//! and the request is served as if it carried none.

use http::HeaderMap;

/// The request header that carries `nor` (CTA-5004 §2.1: keys are
/// spread over four headers; `nor` and `nrr` travel in this one).
pub const REQUEST_HEADER: &str = "cmcd-request";

/// What a player said it will ask for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRequest {
    /// `nor`: the next object's URL, relative to the current request's
    /// (already percent-decoded once, as the key requires it encoded).
    pub object: Option<String>,
    /// `nrr`: the byte range it will ask for, `start-` or `start-end`.
    pub range: Option<(u64, Option<u64>)>,
}

/// The next-request hint of a request, from its `CMCD` query parameter
/// or its `CMCD-Request` header; `None` when it carries none that parses.
pub fn next_request(query: Option<&str>, headers: &HeaderMap) -> Option<NextRequest> {
    let from_query = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(name, _)| name == "CMCD")
            .map(|(_, value)| value.into_owned())
    });
    let data = match from_query {
        Some(d) => d,
        None => headers
            .get(REQUEST_HEADER)
            .and_then(|v| v.to_str().ok())?
            .to_string(),
    };
    parse(&data)
}

/// `nor` and `nrr` from a CMCD payload: comma-separated `key=value`
/// pairs (a key alone is a true boolean), strings in double quotes with
/// `\"` and `\\` escapes.
pub fn parse(data: &str) -> Option<NextRequest> {
    let mut next = NextRequest {
        object: None,
        range: None,
    };
    let mut rest = data.trim();
    while !rest.is_empty() {
        let key_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let key = rest[..key_end].trim();
        rest = &rest[key_end..];
        let value = match rest.strip_prefix('=') {
            Some(after) => {
                let (value, after) = value(after)?;
                rest = after.trim_start();
                Some(value)
            }
            None => None,
        };
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => {}
            None => return None,
        }
        match (key, value) {
            ("nor", Some(Value::String(s))) => {
                let decoded = percent_decode(&s)?;
                next.object = (!decoded.is_empty()).then_some(decoded);
            }
            ("nrr", Some(Value::String(s))) => next.range = range(&s),
            _ => {}
        }
    }
    (next.object.is_some() || next.range.is_some()).then_some(next)
}

enum Value {
    String(String),
    Token,
}

/// A value at the start of `text`, and what follows it.
fn value(text: &str) -> Option<(Value, &str)> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find(',').unwrap_or(text.len());
        return Some((Value::Token, &text[end..]));
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Value::String(out), &quoted[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    // No closing quote: not CMCD.
    None
}

fn range(s: &str) -> Option<(u64, Option<u64>)> {
    let (start, end) = s.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse().ok().filter(|e: &u64| *e >= start)?),
    };
    Some((start, end))
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn nor_and_nrr_are_read_from_the_query_and_the_header() {
        // CTA-5004's own example: the whole payload URL-encoded in the
        // query, `nor` URL-encoded inside it.
        let q = "a=1&CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Cnor%3D%22..%252F300kbps%252Fsegment35.m4v%22%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22";
        let next = next_request(Some(q), &HeaderMap::new()).unwrap();
        assert_eq!(next.object.as_deref(), Some("../300kbps/segment35.m4v"));
        assert_eq!(next.range, None);
        let mut h = HeaderMap::new();
        h.insert(
            REQUEST_HEADER,
            HeaderValue::from_static("nor=\"seg%2036.m4v\",nrr=\"12323-48763\",su"),
        );
        let next = next_request(None, &h).unwrap();
        assert_eq!(next.object.as_deref(), Some("seg 36.m4v"));
        assert_eq!(next.range, Some((12323, Some(48763))));
    }

    #[test]
    fn data_that_does_not_parse_is_ignored() {
        for bad in [
            "nor=\"unterminated",
            "nor=\"a\"x",
            "nor=\"%ff%fe\"",
            "bl=1,br=2",
            "",
            ",,,",
            "nrr=\"5-1\"",
            "nor=42",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(next_request(Some("CMCD=%zz"), &HeaderMap::new()), None);
        assert_eq!(next_request(Some("a=1"), &HeaderMap::new()), None);
    }

    #[test]
    fn escapes_and_spaces_in_strings() {
        let next = parse("sid=\"a,\\\"b\", nor=\"x.ts\" ").unwrap();
        assert_eq!(next.object.as_deref(), Some("x.ts"));
        assert_eq!(parse("nrr=\"100-\"").unwrap().range, Some((100, None)));
    }
}
