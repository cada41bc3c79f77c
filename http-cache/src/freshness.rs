//! May a shared cache store this response, and for how long is it fresh
//! (RFC 9111 §3 and §4.2)?
//!
//! Where the RFC leaves a choice, it errs towards passing to the origin,
//! never towards serving a wrong copy: no heuristic lifetime except for a
//! 200, `private` and `no-cache` with field names read as whole-response,
//! partial content never stored.

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
    must_revalidate: bool,
    /// `must-revalidate` itself: unlike `proxy-revalidate`, it lets a
    /// shared cache answer requests that carry `Authorization` (§5.2.2.2).
    must_revalidate_strict: bool,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
}

/// The directives of every `Cache-Control` field line, as (name, argument)
/// with the argument unquoted (RFC 9111 §5.2), for requests and responses.
pub(crate) fn cache_control(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
            None => (item.trim(), None),
        })
}

impl Directives {
    /// RFC 9111 §3.5: `public`, `s-maxage` and `must-revalidate` are the
    /// directives that let a shared cache store, and reuse, a response for
    /// requests that carry `Authorization`.
    fn shareable_with_authorization(&self) -> bool {
        self.public || self.s_maxage.is_some() || self.must_revalidate_strict
    }
}

/// Whether a stored or in-flight response may answer a request that
/// carries `Authorization` (RFC 9111 §3.5): without one of the directives
/// that allow it, the origin may answer such a request differently, so it
/// goes to the origin instead.
pub fn shareable_with_authorization(response: &HeaderMap) -> bool {
    directives(response).shareable_with_authorization()
}

fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for (name, arg) in cache_control(headers) {
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
            // §5.2.2.2 and §5.2.2.8: a stale copy may not be used at all.
            "must-revalidate" => {
                d.must_revalidate = true;
                d.must_revalidate_strict = true;
            }
            "proxy-revalidate" => d.must_revalidate = true,
            // RFC 5861; an invalid value grants nothing.
            "stale-while-revalidate" => d.stale_while_revalidate = seconds(),
            "stale-if-error" => d.stale_if_error = seconds(),
            _ => {}
        }
    }
    d
}

/// Why a response may not be shared with other clients at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Method,
    NoStore,
    Private,
    Authorization,
    SetCookie,
    Vary,
}

/// How long a stored response is fresh, and what the origin allows once
/// it is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub lifetime: Duration,
    /// RFC 5861 §3: serve stale this long past `lifetime` while refreshing.
    pub stale_while_revalidate: Duration,
    /// RFC 5861 §4: serve stale this long past `lifetime` when the origin fails.
    pub stale_if_error: Duration,
    /// No stale use at all (`must-revalidate`, `proxy-revalidate`).
    pub must_revalidate: bool,
}

impl Freshness {
    pub const fn new(lifetime: Duration) -> Freshness {
        Freshness {
            lifetime,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
        }
    }
}

/// What a cache may do with an origin response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storability {
    /// Store it.
    Store(Freshness),
    /// Do not store it, but it is public: the requests collapsed onto the
    /// same fill may share it (a 404 without freshness, `max-age=0`).
    Transient,
    /// Only the client that asked may see it.
    Private(NotStored),
}

/// Status codes a cache may store without explicit permission from the
/// response (RFC 9110 §15.1). Fanout stores them only with explicit
/// freshness: a heuristic lifetime on a 404 would keep a live segment
/// "missing" after it is published.
const HEURISTICALLY_CACHEABLE: [u16; 10] = [203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// The site's say in lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// For a 200 with no freshness information; caps the heuristic.
    pub default_ttl: Duration,
    /// For every storable 200, whatever the origin says.
    pub override_ttl: Option<Duration>,
}

impl TtlPolicy {
    pub fn of(site: &fanout_config::Site) -> TtlPolicy {
        TtlPolicy {
            default_ttl: site.cache.default_ttl.get(),
            override_ttl: site.cache.override_ttl.map(|t| t.get()),
        }
    }
}

/// What a shared cache may do with a response (RFC 9111 §3, §4.2).
pub fn classify(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    ttl: TtlPolicy,
) -> Storability {
    if method != Method::GET {
        return Storability::Private(NotStored::Method);
    }
    let d = directives(response);
    if d.no_store {
        return Storability::Private(NotStored::NoStore);
    }
    if d.private {
        return Storability::Private(NotStored::Private);
    }
    if request.contains_key(header::AUTHORIZATION) && !d.shareable_with_authorization() {
        return Storability::Private(NotStored::Authorization);
    }
    if response.contains_key(header::SET_COOKIE) {
        return Storability::Private(NotStored::SetCookie);
    }
    // §4.1: `Vary: *` matches no other request, so it is never reused.
    let vary_star = response.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.split(',').any(|n| n.trim() == "*"))
    });
    if vary_star {
        return Storability::Private(NotStored::Vary);
    }
    if d.no_cache {
        return Storability::Transient;
    }
    let lifetime = match explicit_lifetime(&d, response) {
        Some(l)
            if status == StatusCode::OK || HEURISTICALLY_CACHEABLE.contains(&status.as_u16()) =>
        {
            l
        }
        Some(_) => return Storability::Transient,
        None if status == StatusCode::OK => {
            heuristic_lifetime(response).map_or(ttl.default_ttl, |h| h.min(ttl.default_ttl))
        }
        None => return Storability::Transient,
    };
    let lifetime = match ttl.override_ttl {
        Some(forced) if status == StatusCode::OK => forced,
        _ => lifetime,
    };
    if lifetime.is_zero() {
        return Storability::Transient;
    }
    let secs = |s: Option<u64>| Duration::from_secs(s.unwrap_or(0));
    Storability::Store(Freshness {
        lifetime,
        stale_while_revalidate: secs(d.stale_while_revalidate),
        stale_if_error: secs(d.stale_if_error),
        must_revalidate: d.must_revalidate,
    })
}

/// §4.2.2: a tenth of the time since Last-Modified, as of Date (or now).
fn heuristic_lifetime(response: &HeaderMap) -> Option<Duration> {
    let date = |name| {
        response
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    let modified = date(header::LAST_MODIFIED)?;
    let as_of = date(header::DATE).unwrap_or_else(SystemTime::now);
    Some(as_of.duration_since(modified).unwrap_or(Duration::ZERO) / 10)
}

/// `s-maxage` > `max-age` > `Expires` − `Date` (§4.2.1).
fn explicit_lifetime(d: &Directives, response: &HeaderMap) -> Option<Duration> {
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(s));
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
            return Some(Duration::ZERO);
        };
        let base = date(header::DATE).unwrap_or_else(SystemTime::now);
        return Some(expires.duration_since(base).unwrap_or(Duration::ZERO));
    }
    None
}

/// The age a response already had when it arrived: RFC 9111 §4.2.3's
/// corrected initial age, the larger of its apparent age (now − `Date`)
/// and its `Age` plus the time the request took (`response_delay`).
///
/// `Date` has one-second resolution, so a response sent a moment ago can
/// look up to a second old; for a live playlist with `max-age=1` that
/// would be all of its freshness. One second of apparent age is forgiven.
pub fn initial_age(response: &HeaderMap, response_delay: Duration, now: SystemTime) -> Duration {
    let age_value = response
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = response
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|date| now.duration_since(date).ok())
        .map_or(Duration::ZERO, |a| a.saturating_sub(Duration::from_secs(1)));
    apparent_age.max(age_value + response_delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TTL: Duration = Duration::from_secs(10);
    const POLICY: TtlPolicy = TtlPolicy {
        default_ttl: TTL,
        override_ttl: None,
    };
    const fn secs(n: u64) -> Storability {
        Storability::Store(Freshness::new(Duration::from_secs(n)))
    }

    fn classify_with(
        req: &HeaderMap,
        status: u16,
        pairs: &[(header::HeaderName, &str)],
    ) -> Storability {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        classify(
            &Method::GET,
            req,
            StatusCode::from_u16(status).unwrap(),
            &h,
            POLICY,
        )
    }

    fn ok(pairs: &[(header::HeaderName, &str)]) -> Storability {
        classify_with(&HeaderMap::new(), 200, pairs)
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires_beats_default() {
        use header::*;
        assert_eq!(ok(&[(CACHE_CONTROL, "max-age=60, s-maxage=5")]), secs(5));
        assert_eq!(
            ok(&[
                (CACHE_CONTROL, "max-age=60"),
                (EXPIRES, "Thu, 01 Jan 2099 00:00:00 GMT")
            ]),
            secs(60)
        );
        assert_eq!(
            ok(&[
                (DATE, "Thu, 01 Jan 2026 00:00:00 GMT"),
                (EXPIRES, "Thu, 01 Jan 2026 00:00:30 GMT")
            ]),
            secs(30)
        );
        assert_eq!(ok(&[]), Storability::Store(Freshness::new(TTL)));
    }

    #[test]
    fn heuristic_lifetime_from_last_modified_is_capped_by_the_default() {
        use header::*;
        let date = "Thu, 01 Jan 2026 00:01:40 GMT";
        assert_eq!(
            ok(&[
                (DATE, date),
                (LAST_MODIFIED, "Thu, 01 Jan 2026 00:01:00 GMT")
            ]),
            secs(4),
            "10% of 40 s"
        );
        assert_eq!(
            ok(&[
                (DATE, date),
                (LAST_MODIFIED, "Thu, 01 Jan 2025 00:00:00 GMT")
            ]),
            secs(10),
            "capped at default_ttl"
        );
        assert_eq!(
            ok(&[(DATE, date), (LAST_MODIFIED, date)]),
            Storability::Transient,
            "just modified: nothing to go on"
        );
    }

    #[test]
    fn an_override_forces_the_lifetime_of_storable_200s_only() {
        use header::*;
        let forced = TtlPolicy {
            default_ttl: TTL,
            override_ttl: Some(Duration::from_secs(2)),
        };
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
        let none = HeaderMap::new();
        assert_eq!(
            classify(&Method::GET, &none, StatusCode::OK, &h, forced),
            secs(2)
        );
        assert_eq!(
            classify(&Method::GET, &none, StatusCode::NOT_FOUND, &h, forced),
            secs(600)
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("private"));
        assert_eq!(
            classify(&Method::GET, &none, StatusCode::OK, &h, forced),
            Storability::Private(NotStored::Private)
        );
    }

    #[test]
    fn initial_age_is_corrected_for_dates_and_delays() {
        use header::*;
        let now = httpdate::parse_http_date("Thu, 01 Jan 2026 00:01:40 GMT").unwrap();
        let mut h = HeaderMap::new();
        let ms = Duration::from_millis;
        assert_eq!(
            initial_age(&h, ms(300), now),
            ms(300),
            "no Age, no Date: the delay alone"
        );
        h.insert(AGE, HeaderValue::from_static("5"));
        assert_eq!(initial_age(&h, ms(1000), now), ms(6000));
        h.insert(
            DATE,
            HeaderValue::from_static("Thu, 01 Jan 2026 00:01:30 GMT"),
        );
        assert_eq!(
            initial_age(&h, ms(1000), now),
            ms(9_000),
            "the Date says older than Age does (less its 1 s resolution)"
        );
        h.insert(
            DATE,
            HeaderValue::from_static("Thu, 01 Jan 2026 00:02:00 GMT"),
        );
        assert_eq!(
            initial_age(&h, ms(1000), now),
            ms(6000),
            "a Date in the future counts as zero"
        );
    }

    #[test]
    fn stale_directives_of_rfc_5861() {
        use header::*;
        let Storability::Store(f) = ok(&[(
            CACHE_CONTROL,
            "max-age=2, stale-while-revalidate=30, stale-if-error=600",
        )]) else {
            panic!()
        };
        assert_eq!(
            (
                f.lifetime,
                f.stale_while_revalidate,
                f.stale_if_error,
                f.must_revalidate
            ),
            (
                Duration::from_secs(2),
                Duration::from_secs(30),
                Duration::from_secs(600),
                false
            )
        );
        let Storability::Store(f) = ok(&[(
            CACHE_CONTROL,
            "max-age=2, proxy-revalidate, stale-if-error=x",
        )]) else {
            panic!()
        };
        assert!(f.must_revalidate);
        assert_eq!(
            f.stale_if_error,
            Duration::ZERO,
            "an invalid value grants nothing"
        );
    }

    #[test]
    fn zero_or_invalid_lifetimes_are_shared_but_not_stored() {
        use header::*;
        assert_eq!(ok(&[(EXPIRES, "0")]), Storability::Transient);
        assert_eq!(
            ok(&[(CACHE_CONTROL, "max-age=oops")]),
            Storability::Transient
        );
        assert_eq!(ok(&[(CACHE_CONTROL, "max-age=0")]), Storability::Transient);
        assert_eq!(ok(&[(CACHE_CONTROL, "no-cache")]), Storability::Transient);
    }

    #[test]
    fn other_statuses_are_stored_only_with_explicit_freshness() {
        use header::*;
        let none = HeaderMap::new();
        assert_eq!(
            classify_with(&none, 404, &[(CACHE_CONTROL, "max-age=1")]),
            secs(1)
        );
        assert_eq!(
            classify_with(&none, 404, &[]),
            Storability::Transient,
            "no heuristic 404s"
        );
        assert_eq!(
            classify_with(&none, 301, &[(CACHE_CONTROL, "max-age=60")]),
            secs(60)
        );
        assert_eq!(
            classify_with(&none, 302, &[(CACHE_CONTROL, "max-age=60")]),
            Storability::Transient
        );
        assert_eq!(
            classify_with(&none, 206, &[(CACHE_CONTROL, "max-age=60")]),
            Storability::Transient
        );
    }

    #[test]
    fn what_a_shared_cache_must_not_share() {
        use header::*;
        use Storability::Private;
        assert_eq!(
            ok(&[(CACHE_CONTROL, "public, no-store")]),
            Private(NotStored::NoStore)
        );
        assert_eq!(
            ok(&[(CACHE_CONTROL, "private, max-age=60")]),
            Private(NotStored::Private)
        );
        assert_eq!(ok(&[(SET_COOKIE, "a=b")]), Private(NotStored::SetCookie));
        assert_eq!(
            ok(&[(VARY, "accept-encoding, *")]),
            Private(NotStored::Vary)
        );
        assert_eq!(
            ok(&[(VARY, "accept-encoding")]),
            Storability::Store(Freshness::new(TTL))
        );
        let mut auth = HeaderMap::new();
        auth.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            classify_with(&auth, 200, &[(CACHE_CONTROL, "max-age=60")]),
            Private(NotStored::Authorization)
        );
        assert_eq!(
            classify_with(&auth, 200, &[(CACHE_CONTROL, "s-maxage=60")]),
            secs(60)
        );
        assert_eq!(
            classify_with(&auth, 200, &[(CACHE_CONTROL, "public, max-age=60")]),
            secs(60)
        );
        let must_revalidate = Storability::Store(Freshness {
            must_revalidate: true,
            ..Freshness::new(Duration::from_secs(60))
        });
        assert_eq!(
            classify_with(
                &auth,
                200,
                &[(CACHE_CONTROL, "max-age=60, must-revalidate")]
            ),
            must_revalidate
        );
        // §5.2.2.8 gives `proxy-revalidate` no such permission.
        assert_eq!(
            classify_with(
                &auth,
                200,
                &[(CACHE_CONTROL, "max-age=60, proxy-revalidate")]
            ),
            Private(NotStored::Authorization)
        );
        let allows = |cc: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, HeaderValue::from_static(cc));
            shareable_with_authorization(&h)
        };
        assert!(allows("public, max-age=1") && allows("s-maxage=1") && allows("must-revalidate"));
        assert!(!allows("max-age=60") && !allows("proxy-revalidate, max-age=60"));
        assert!(!shareable_with_authorization(&HeaderMap::new()));
        let h = HeaderMap::new();
        assert_eq!(
            classify(&Method::POST, &h, StatusCode::OK, &h, POLICY),
            Private(NotStored::Method)
        );
    }
}
