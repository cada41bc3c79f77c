//! May a shared cache store this response, and for how long is it fresh
//! (RFC 9111 §3 and §4.2)?
//!
//! This is the walking skeleton's subset: it refuses whatever it cannot yet
//! serve correctly (Vary, validators-only responses, partial content), so it
//! errs towards passing to the origin, never towards serving a wrong copy.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, StatusCode};

/// The response's own Cache-Control directives that decide storing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Directives {
    no_store: bool,
    private: bool,
    no_cache: bool,
    public: bool,
    s_maxage: Option<u64>,
    max_age: Option<u64>,
}

fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                // `private` and `no-cache` with field names restrict only
                // those fields; treating them as whole-response is the safe
                // reading a shared cache may take (§5.2.2.4, §5.2.2.7).
                "private" => d.private = true,
                "no-cache" => d.no_cache = true,
                "public" => d.public = true,
                // RFC 9111 §1.2.2: an invalid or duplicated delta-seconds is
                // stale; the first occurrence wins.
                "s-maxage" => d.s_maxage = d.s_maxage.or(Some(seconds().unwrap_or(0))),
                "max-age" => d.max_age = d.max_age.or(Some(seconds().unwrap_or(0))),
                _ => {}
            }
        }
    }
    d
}

/// Why a response is passed through instead of stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    Vary,
    NoCache,
}

/// Freshness lifetime (§4.2.1) of a storable response, or why it is not
/// storable. `default_ttl` applies when the origin states no lifetime.
pub fn storable_lifetime(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    default_ttl: Duration,
) -> Result<Duration, NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if status != StatusCode::OK {
        return Err(NotStored::Status);
    }
    let d = directives(response);
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    // §3.5: a shared cache stores a response to a request with Authorization
    // only when the response explicitly allows it.
    if request.contains_key(header::AUTHORIZATION) && !(d.public || d.s_maxage.is_some()) {
        return Err(NotStored::Authorization);
    }
    if response.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if response.contains_key(header::VARY) {
        return Err(NotStored::Vary);
    }
    if d.no_cache {
        return Err(NotStored::NoCache);
    }
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Ok(Duration::from_secs(s));
    }
    let date = |name| {
        response
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    if response.contains_key(header::EXPIRES) {
        // An invalid Expires (such as "0") means already expired (§5.3).
        let Some(expires) = date(header::EXPIRES) else {
            return Ok(Duration::ZERO);
        };
        let base = date(header::DATE).unwrap_or_else(SystemTime::now);
        return Ok(expires.duration_since(base).unwrap_or(Duration::ZERO));
    }
    Ok(default_ttl)
}

/// The origin's `Age` value, if valid (§5.1).
pub fn origin_age(response: &HeaderMap) -> Duration {
    response
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TTL: Duration = Duration::from_secs(10);

    fn lifetime(pairs: &[(header::HeaderName, &str)]) -> Result<Duration, NotStored> {
        lifetime_with(&HeaderMap::new(), pairs)
    }

    fn lifetime_with(
        req: &HeaderMap,
        pairs: &[(header::HeaderName, &str)],
    ) -> Result<Duration, NotStored> {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        storable_lifetime(&Method::GET, req, StatusCode::OK, &h, TTL)
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires_beats_default() {
        use header::*;
        assert_eq!(
            lifetime(&[(CACHE_CONTROL, "max-age=60, s-maxage=5")]),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            lifetime(&[
                (CACHE_CONTROL, "max-age=60"),
                (EXPIRES, "Thu, 01 Jan 2099 00:00:00 GMT")
            ]),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime(&[
                (DATE, "Thu, 01 Jan 2026 00:00:00 GMT"),
                (EXPIRES, "Thu, 01 Jan 2026 00:00:30 GMT")
            ]),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(lifetime(&[(EXPIRES, "0")]), Ok(Duration::ZERO));
        assert_eq!(lifetime(&[]), Ok(TTL));
        assert_eq!(
            lifetime(&[(CACHE_CONTROL, "max-age=oops")]),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn what_a_shared_cache_must_not_store() {
        use header::*;
        assert_eq!(
            lifetime(&[(CACHE_CONTROL, "public, no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            lifetime(&[(CACHE_CONTROL, "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(lifetime(&[(SET_COOKIE, "a=b")]), Err(NotStored::SetCookie));
        assert_eq!(lifetime(&[(VARY, "accept-encoding")]), Err(NotStored::Vary));
        let mut auth = HeaderMap::new();
        auth.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            lifetime_with(&auth, &[(CACHE_CONTROL, "max-age=60")]),
            Err(NotStored::Authorization)
        );
        assert_eq!(
            lifetime_with(&auth, &[(CACHE_CONTROL, "s-maxage=60")]),
            Ok(Duration::from_secs(60))
        );
        let h = HeaderMap::new();
        assert_eq!(
            storable_lifetime(&Method::POST, &h, StatusCode::OK, &h, TTL),
            Err(NotStored::Method)
        );
        assert_eq!(
            storable_lifetime(&Method::GET, &h, StatusCode::NOT_FOUND, &h, TTL),
            Err(NotStored::Status)
        );
    }
}
