//! The client's `Cache-Control` request directives (RFC 9111 §5.2.1) and
//! which of them a shared cache in front of a live event honours.
//!
//! Honoured: `max-age=N` (N ≥ 1), `min-fresh`, `max-stale`, `only-if-cached`
//! (504 when nothing usable is stored) and `no-store` (a miss goes to the
//! origin alone and is not stored). Ignored, as §5.2.1 allows for these
//! preferences and as Varnish and NGINX do by default: `no-cache` and
//! `max-age=0`, what a player's reload sends; honouring them would let any
//! viewer push requests through to the origin.

use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::freshness::cache_control;

use crate::store::StoredResponse;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestDirectives {
    max_age: Option<u64>,
    /// `Some(None)`: any staleness; `Some(Some(n))`: up to n seconds.
    max_stale: Option<Option<u64>>,
    min_fresh: Option<u64>,
    pub only_if_cached: bool,
    pub no_store: bool,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        for (name, arg) in cache_control(headers) {
            let seconds = arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "max-age" => d.max_age = seconds.filter(|s| *s > 0),
                "max-stale" => d.max_stale = Some(seconds),
                "min-fresh" => d.min_fresh = seconds,
                "only-if-cached" => d.only_if_cached = true,
                "no-store" => d.no_store = true,
                _ => {}
            }
        }
        d
    }

    /// A fresh response the client also accepts (max-age, min-fresh).
    pub fn accepts_fresh(&self, stored: &StoredResponse, now: Instant) -> bool {
        stored.is_fresh(now)
            && self
                .max_age
                .is_none_or(|m| stored.age(now) <= Duration::from_secs(m))
            && self
                .min_fresh
                .is_none_or(|m| stored.remaining_ttl(now) >= Duration::from_secs(m))
    }

    /// A stale response the client accepts (max-stale), unless the origin
    /// forbade stale use.
    pub fn accepts_stale(&self, stored: &StoredResponse, now: Instant) -> bool {
        let staleness = stored.age(now).saturating_sub(stored.freshness.lifetime);
        !stored.freshness.must_revalidate
            && !stored.is_fresh(now)
            && match self.max_stale {
                Some(None) => true,
                Some(Some(n)) => staleness <= Duration::from_secs(n),
                None => false,
            }
    }

    /// Whether the client constrained freshness itself; then the cache does
    /// not substitute stale-while-revalidate for what it asked.
    pub fn constrains_freshness(&self) -> bool {
        self.max_age.is_some() || self.min_fresh.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Freshness;
    use bytes::Bytes;
    use http::{header, HeaderValue, StatusCode};

    fn parse(v: &'static str) -> RequestDirectives {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(v));
        RequestDirectives::parse(&h)
    }

    fn stored(lifetime: u64, must_revalidate: bool) -> StoredResponse {
        StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            stored_at: Instant::now(),
            initial_age: Duration::ZERO,
            freshness: Freshness {
                must_revalidate,
                ..Freshness::new(Duration::from_secs(lifetime))
            },
            stale_on_error: Duration::ZERO,
        }
    }

    #[test]
    fn reload_directives_are_ignored() {
        assert_eq!(parse("no-cache"), RequestDirectives::default());
        assert_eq!(parse("max-age=0"), RequestDirectives::default());
    }

    #[test]
    fn max_age_and_min_fresh_narrow_what_is_fresh_enough() {
        let s = stored(100, false);
        let at = s.stored_at + Duration::from_secs(10);
        assert!(parse("max-age=20").accepts_fresh(&s, at));
        assert!(!parse("max-age=5").accepts_fresh(&s, at));
        assert!(parse("min-fresh=90").accepts_fresh(&s, at));
        assert!(!parse("min-fresh=91").accepts_fresh(&s, at));
    }

    #[test]
    fn max_stale_widens_it_unless_the_origin_forbids() {
        let s = stored(10, false);
        let at = s.stored_at + Duration::from_secs(15);
        assert!(parse("max-stale=5").accepts_stale(&s, at));
        assert!(!parse("max-stale=4").accepts_stale(&s, at));
        assert!(parse("max-stale").accepts_stale(&s, at));
        assert!(!RequestDirectives::default().accepts_stale(&s, at));
        assert!(!parse("max-stale").accepts_stale(&stored(10, true), at));
        assert!(parse("only-if-cached, no-store").only_if_cached);
        assert!(parse("only-if-cached, no-store").no_store);
    }
}
