//! May a shared cache store this response, and for how long is it fresh
//! (RFC 9111 §3 and §4.2)?
//!
//! Where the RFC leaves a choice, it errs towards passing to the origin,
//! never towards serving a wrong copy: the site's `default_ttl` only for a
//! 200, `private` and `no-cache` with field names read as whole-response,
//! partial content never stored.

use std::time::{Duration, SystemTime};

use fanout_server::time_fields::{delta_seconds, http_date};
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
    /// RFC 9111 §5.2.2.3: store only if the status code is understood.
    must_understand: bool,
    /// `max-age` or `s-maxage` given twice with different values: §4.2.1
    /// lets a cache take the first or call the response stale; Fanout
    /// takes the conservative reading.
    conflicting_lifetime: bool,
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
    directives_of(cache_control(headers))
}

/// The directives that decide for this cache: those of the first targeted
/// field on the site's list that is present and valid (RFC 9213), else
/// `Cache-Control`'s; and whether a targeted field decided, in which case
/// `Expires` is ignored too.
fn effective_directives(headers: &HeaderMap, targeted: &[String]) -> (Directives, bool) {
    match crate::targeted::directives(headers, targeted) {
        Some(items) => (
            directives_of(items.iter().map(|(n, a)| (n.as_str(), a.as_deref()))),
            true,
        ),
        None => (directives(headers), false),
    }
}

fn directives_of<'a>(items: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> Directives {
    let mut d = Directives::default();
    for (name, arg) in items {
        let seconds = || arg.and_then(delta_seconds);
        match name.to_ascii_lowercase().as_str() {
            "no-store" => d.no_store = true,
            // `private` and `no-cache` with field names restrict only
            // those fields; treating them as whole-response is the safe
            // reading a shared cache may take (§5.2.2.4, §5.2.2.7).
            "private" => d.private = true,
            "no-cache" => d.no_cache = true,
            "public" => d.public = true,
            // RFC 9111 §1.2.2: an invalid or duplicated delta-seconds is
            // stale; the first occurrence wins. §5.2.2.10: in a shared
            // cache `s-maxage` also means `proxy-revalidate`.
            "s-maxage" => {
                let n = seconds().unwrap_or(0);
                d.conflicting_lifetime |= d.s_maxage.is_some_and(|first| first != n);
                d.s_maxage = d.s_maxage.or(Some(n));
                d.must_revalidate = true;
            }
            "max-age" => {
                let n = seconds().unwrap_or(0);
                d.conflicting_lifetime |= d.max_age.is_some_and(|first| first != n);
                d.max_age = d.max_age.or(Some(n));
            }
            // §5.2.2.2 and §5.2.2.8: a stale copy may not be used at all.
            "must-revalidate" => {
                d.must_revalidate = true;
                d.must_revalidate_strict = true;
            }
            "proxy-revalidate" => d.must_revalidate = true,
            // RFC 5861; an invalid value grants nothing.
            "stale-while-revalidate" => d.stale_while_revalidate = seconds(),
            "stale-if-error" => d.stale_if_error = seconds(),
            "must-understand" => d.must_understand = true,
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
    /// No stale use at all (`must-revalidate`, `proxy-revalidate`,
    /// `s-maxage`).
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

/// Status codes a cache may give a heuristic lifetime (RFC 9110 §15.1),
/// besides 200 and 206 (never stored here). Only from `Last-Modified`: the
/// site's `default_ttl` is for 200s, so a 404 without freshness is not
/// kept, and a live segment asked for early is not "missing" for long.
const HEURISTICALLY_CACHEABLE: [u16; 10] = [203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// The final status codes RFC 9110 defines, whose requirements Fanout
/// follows as a cache (§3: such a response may be stored whatever its
/// status when it has explicit freshness; §5.2.2.3 `must-understand`).
/// 206 and 304 are left out: a partial or a not-modified response is never
/// stored as a whole one.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=205 | 300..=303 | 305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// The site's say in lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy<'a> {
    /// For a 200 with no freshness information; caps the heuristic.
    pub default_ttl: Duration,
    /// For every storable 200, whatever the origin says.
    pub override_ttl: Option<Duration>,
    /// Targeted cache-control fields (RFC 9213) obeyed in place of
    /// `Cache-Control`, in order of preference.
    pub targeted: &'a [String],
}

impl TtlPolicy<'_> {
    pub fn of(site: &fanout_config::Site) -> TtlPolicy<'_> {
        TtlPolicy {
            default_ttl: site.cache.default_ttl.get(),
            override_ttl: site.cache.override_ttl.map(|t| t.get()),
            targeted: &site.cache.targeted_fields,
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
    let (d, targeted) = effective_directives(response, ttl.targeted);
    let understood = understood(status);
    // §5.2.2.3: with `must-understand`, a cache that understands the
    // status ignores `no-store`, and one that does not never stores.
    if d.no_store && !(d.must_understand && understood) {
        // A server error is not kept, but the requests collapsed on its
        // fill share it rather than each asking an origin in trouble
        // again: `no-store` forbids keeping it, not handing one answer to
        // requests made at the same moment.
        if status.is_server_error() {
            return Storability::Transient;
        }
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
    // §4.1: `Vary: *` matches no other request, so it is never reused;
    // nor is one whose Vary names something that is not a field name,
    // since the request headers it depends on cannot be known.
    let vary_star = response.get_all(header::VARY).iter().any(|v| {
        v.to_str().map_or(true, |v| {
            v.split(',').map(str::trim).any(invalid_vary_member)
        })
    });
    if vary_star {
        return Storability::Private(NotStored::Vary);
    }
    if d.no_cache
        && !matches!(
            status,
            StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        // §5.2.2.4: stored, but never used without a successful
        // validation, so it needs a validator to be worth keeping. Every
        // use is then a conditional request, collapsed like any miss,
        // that the origin can answer with a 304.
        let validator =
            response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
        if !validator {
            return Storability::Transient;
        }
        return Storability::Store(Freshness {
            must_revalidate: true,
            ..Freshness::new(Duration::ZERO)
        });
    }
    if (d.must_understand && !understood)
        || matches!(
            status,
            StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
        || status.is_informational()
    {
        return Storability::Transient;
    }
    let lifetime = match explicit_lifetime(&d, response, targeted) {
        // §3: explicit freshness makes any final status storable, an
        // unknown one included (`must-understand` aside, above).
        Some(l) => l,
        None if status == StatusCode::OK => {
            heuristic_lifetime(response).map_or(ttl.default_ttl, |h| h.min(ttl.default_ttl))
        }
        None if HEURISTICALLY_CACHEABLE.contains(&status.as_u16()) => {
            match heuristic_lifetime(response) {
                Some(h) => h.min(ttl.default_ttl),
                None => return Storability::Transient,
            }
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

fn invalid_vary_member(name: &str) -> bool {
    // Empty list elements are allowed (RFC 9110 §5.6.1).
    name == "*" || !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_err()
}

/// What an origin sent that makes no sense as caching metadata, for the
/// node to log and count; the rules above already take the conservative
/// reading of each. `None` for a well-formed response.
pub fn anomaly(response: &HeaderMap) -> Option<&'static str> {
    let mut seen: [Option<&str>; 2] = [None, None];
    for (name, arg) in cache_control(response) {
        let slot = match name.to_ascii_lowercase().as_str() {
            "max-age" => 0,
            "s-maxage" => 1,
            _ => continue,
        };
        let Some(arg) = arg.filter(|a| delta_seconds(a).is_some()) else {
            return Some("a max-age or s-maxage that is not a number of seconds");
        };
        match seen[slot] {
            Some(first) if first != arg => {
                return Some("max-age or s-maxage given twice with different values")
            }
            _ => seen[slot] = Some(arg),
        }
    }
    let mut expires = response.get_all(header::EXPIRES).iter();
    let first = expires.next();
    if expires.any(|v| Some(v) != first) {
        return Some("Expires given twice with different values");
    }
    let bad_vary = response.get_all(header::VARY).iter().any(|v| {
        v.to_str().map_or(true, |v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n != "*" && invalid_vary_member(n))
        })
    });
    if bad_vary {
        return Some("a Vary that names no valid field");
    }
    None
}

/// §4.2.2: a tenth of the time since Last-Modified, as of Date (or now).
fn heuristic_lifetime(response: &HeaderMap) -> Option<Duration> {
    let date = |name| response.get(name).and_then(http_date);
    let modified = date(header::LAST_MODIFIED)?;
    let as_of = date(header::DATE).unwrap_or_else(SystemTime::now);
    Some(as_of.duration_since(modified).unwrap_or(Duration::ZERO) / 10)
}

/// `s-maxage` > `max-age` > `Expires` − `Date` (§4.2.1); without
/// `Expires` when a targeted field decides (RFC 9213 §2.1).
fn explicit_lifetime(d: &Directives, response: &HeaderMap, targeted: bool) -> Option<Duration> {
    if d.conflicting_lifetime {
        return Some(Duration::ZERO);
    }
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(s));
    }
    if targeted {
        return None;
    }
    let date = |name| response.get(name).and_then(http_date);
    if response.contains_key(header::EXPIRES) {
        // Two Expires that disagree: stale, as for two max-ages (§4.2.1).
        let mut all = response.get_all(header::EXPIRES).iter();
        let first = all.next();
        if all.any(|v| Some(v) != first) {
            return Some(Duration::ZERO);
        }
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
    // RFC 9111 §5.1: of a list (or several lines), the first member; a
    // value that is not a non-negative integer is ignored.
    let age_value = response
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.split(',').next().unwrap_or("").trim()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent_age = response
        .get(header::DATE)
        .and_then(http_date)
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
        targeted: &[],
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

    impl Storability {
        fn with_must_revalidate(self) -> Storability {
            match self {
                Storability::Store(f) => Storability::Store(Freshness {
                    must_revalidate: true,
                    ..f
                }),
                other => other,
            }
        }
    }

    fn ok(pairs: &[(header::HeaderName, &str)]) -> Storability {
        classify_with(&HeaderMap::new(), 200, pairs)
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires_beats_default() {
        use header::*;
        assert_eq!(
            ok(&[(CACHE_CONTROL, "max-age=60, s-maxage=5")]),
            secs(5).with_must_revalidate()
        );
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
            targeted: &[],
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
    fn an_age_that_is_not_one_non_negative_integer_is_read_as_rfc_9111_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let age = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(header::AGE, HeaderValue::from_str(l).unwrap());
            }
            initial_age(&h, Duration::ZERO, now).as_secs()
        };
        assert_eq!(age(&["5, 10"]), 5, "a list: its first member");
        assert_eq!(age(&["7", "100"]), 7, "two lines: the first");
        assert_eq!(age(&["-5"]), 0, "negative: ignored");
        assert_eq!(age(&["ten"]), 0, "not a number: ignored");
        assert_eq!(age(&["1.5"]), 0, "not an integer: ignored");
        assert_eq!(age(&["99999999999999999999"]), 1 << 31, "too large: 2^31");
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
        assert_eq!(
            ok(&[(CACHE_CONTROL, "no-cache")]),
            Storability::Transient,
            "no-cache without a validator could never be reused"
        );
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_to_be_revalidated_on_every_use() {
        use header::*;
        let revalidate_always = Storability::Store(Freshness {
            must_revalidate: true,
            ..Freshness::new(Duration::ZERO)
        });
        assert_eq!(
            ok(&[(CACHE_CONTROL, "no-cache, max-age=60"), (ETAG, "\"v1\"")]),
            revalidate_always
        );
        assert_eq!(
            ok(&[
                (CACHE_CONTROL, "no-cache"),
                (LAST_MODIFIED, "Thu, 01 Jan 2026 00:00:00 GMT")
            ]),
            revalidate_always
        );
        assert_eq!(
            ok(&[(CACHE_CONTROL, "no-cache, private"), (ETAG, "\"v1\"")]),
            Storability::Private(NotStored::Private)
        );
    }

    #[test]
    fn any_final_status_is_stored_with_explicit_freshness() {
        use header::*;
        let none = HeaderMap::new();
        let fresh = [(CACHE_CONTROL, "max-age=60")];
        // RFC 9111 §3: understood or not, explicit freshness is enough.
        for status in [
            203, 204, 301, 302, 303, 307, 400, 404, 410, 500, 503, 599, 299,
        ] {
            assert_eq!(classify_with(&none, status, &fresh), secs(60), "{status}");
        }
        // Partial and not-modified responses are never stored whole.
        for status in [206, 304] {
            assert_eq!(
                classify_with(&none, status, &fresh),
                Storability::Transient,
                "{status}"
            );
        }
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_and_expires() {
        use header::*;
        let targeted = ["cdn-cache-control".to_string()];
        let policy = TtlPolicy {
            targeted: &targeted,
            ..POLICY
        };
        let classify_targeted = |pairs: &[(HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(n.clone(), HeaderValue::from_str(v).unwrap());
            }
            classify(&Method::GET, &HeaderMap::new(), StatusCode::OK, &h, policy)
        };
        let cdn = HeaderName::from_static("cdn-cache-control");
        assert_eq!(
            classify_targeted(&[(CACHE_CONTROL, "no-store"), (cdn.clone(), "max-age=60")]),
            secs(60),
            "browsers get no-store, the CDN keeps it a minute"
        );
        assert_eq!(
            classify_targeted(&[(CACHE_CONTROL, "max-age=600"), (cdn.clone(), "no-store")]),
            Storability::Private(NotStored::NoStore)
        );
        assert_eq!(
            classify_targeted(&[(CACHE_CONTROL, "max-age=600"), (cdn.clone(), "Max-Age=5")]),
            secs(600),
            "an invalid targeted field is ignored as a whole"
        );
        assert_eq!(
            classify_targeted(&[
                (DATE, "Thu, 01 Jan 2026 00:00:00 GMT"),
                (EXPIRES, "Thu, 01 Jan 2026 00:10:00 GMT"),
                (cdn, "public"),
            ]),
            Storability::Store(Freshness::new(TTL)),
            "Expires is ignored with a targeted field: the default applies"
        );
    }

    #[test]
    fn nonsense_gets_the_conservative_reading_and_is_reported() {
        use header::*;
        let cases: [(&[(HeaderName, &str)], Storability); 5] = [
            (
                &[(CACHE_CONTROL, "max-age=60, max-age=0")],
                Storability::Transient,
            ),
            (
                &[
                    (CACHE_CONTROL, "max-age=60"),
                    (CACHE_CONTROL, "max-age=600"),
                ],
                Storability::Transient,
            ),
            (&[(CACHE_CONTROL, "max-age=-60")], Storability::Transient),
            (
                &[
                    (CACHE_CONTROL, "public"),
                    (EXPIRES, "Thu, 01 Jan 2099 00:00:00 GMT"),
                    (EXPIRES, "Thu, 01 Jan 2098 00:00:00 GMT"),
                ],
                Storability::Transient,
            ),
            (
                &[
                    (CACHE_CONTROL, "max-age=60"),
                    (VARY, "accept-language, bad name"),
                ],
                Storability::Private(NotStored::Vary),
            ),
        ];
        for (pairs, expected) in cases {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(n.clone(), HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(ok(pairs), expected, "{pairs:?}");
            assert!(anomaly(&h).is_some(), "{pairs:?}");
        }
        let mut fine = HeaderMap::new();
        fine.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, max-age=60"),
        );
        fine.insert(VARY, HeaderValue::from_static("accept-encoding, , origin"));
        assert_eq!(
            anomaly(&fine),
            None,
            "a repeat that agrees, an empty list element"
        );
    }

    #[test]
    fn heuristic_lifetimes_only_for_the_heuristically_cacheable_statuses() {
        use header::*;
        let none = HeaderMap::new();
        let modified = [
            (DATE, "Thu, 01 Jan 2026 00:01:40 GMT"),
            (LAST_MODIFIED, "Thu, 01 Jan 2026 00:01:00 GMT"),
        ];
        for status in [203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert_eq!(classify_with(&none, status, &modified), secs(4), "{status}");
            assert_eq!(
                classify_with(&none, status, &[]),
                Storability::Transient,
                "{status}: the site's default_ttl is for 200s"
            );
        }
        for status in [302, 303, 307, 400, 500, 503] {
            assert_eq!(
                classify_with(&none, status, &modified),
                Storability::Transient,
                "{status}"
            );
        }
    }

    #[test]
    fn must_understand_stores_only_understood_statuses_and_overrides_no_store() {
        use header::*;
        let none = HeaderMap::new();
        let cc = [(CACHE_CONTROL, "max-age=60, must-understand, no-store")];
        assert_eq!(classify_with(&none, 200, &cc), secs(60));
        assert_eq!(classify_with(&none, 404, &cc), secs(60));
        assert_eq!(
            classify_with(&none, 299, &cc),
            Storability::Private(NotStored::NoStore),
            "not understood: no-store holds"
        );
        assert_eq!(
            classify_with(
                &none,
                599,
                &[(CACHE_CONTROL, "max-age=60, must-understand")]
            ),
            Storability::Transient
        );
        assert_eq!(
            classify_with(&none, 200, &[(CACHE_CONTROL, "max-age=60, no-store")]),
            Storability::Private(NotStored::NoStore)
        );
        assert_eq!(
            classify_with(&none, 503, &[(CACHE_CONTROL, "no-store")]),
            Storability::Transient,
            "an error page is shared by the fill, never kept"
        );
    }

    #[test]
    fn s_maxage_forbids_stale_use_and_huge_lifetimes_saturate() {
        use header::*;
        let revalidate = |l| {
            Storability::Store(Freshness {
                must_revalidate: true,
                ..Freshness::new(Duration::from_secs(l))
            })
        };
        assert_eq!(ok(&[(CACHE_CONTROL, "s-maxage=5")]), revalidate(5));
        assert_eq!(
            ok(&[(CACHE_CONTROL, "s-maxage=5, stale-if-error=60")]),
            Storability::Store(Freshness {
                stale_if_error: Duration::from_secs(60),
                ..Freshness::new(Duration::from_secs(5))
            })
            .with_must_revalidate()
        );
        assert_eq!(
            ok(&[(CACHE_CONTROL, "max-age=99999999999999999999")]),
            secs(1 << 31),
            "RFC 9111 §1.2.2"
        );
        assert_eq!(
            ok(&[(CACHE_CONTROL, "max-age=-5")]),
            Storability::Transient,
            "invalid: stale at once"
        );
        assert_eq!(
            ok(&[(EXPIRES, "Sunday, 06-Nov-94 08:49:37 GMT")]),
            Storability::Transient,
            "an RFC 850 date in the past"
        );
        assert_eq!(
            ok(&[
                (DATE, "sun nov  6 08:49:37 1994"),
                (EXPIRES, "Sun Nov  6 08:50:37 1994")
            ]),
            secs(60),
            "asctime dates, any case"
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
            secs(60).with_must_revalidate()
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
