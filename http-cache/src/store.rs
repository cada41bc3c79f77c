//! The in-memory store: whole responses in a moka cache (W-TinyLFU
//! admission, so one scan of the VOD long tail cannot flush the live edge),
//! weighted by the bytes they hold, each expiring when it stops being fresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use moka::sync::Cache;
use moka::Expiry;

use crate::freshness::Freshness;

/// How long an expired response is kept, beyond any stale window, so its
/// validators can turn the next fetch into a cheap 304.
pub const REVALIDATION_KEEP: Duration = Duration::from_secs(60);

/// `headers` with their values copied into one buffer of their own.
///
/// hyper parses a response's header values as slices of the connection's
/// read buffer, which also holds the body's first bytes and whatever else
/// was read with them; a stored response that kept those slices would keep
/// that whole buffer alive, unseen by the store's weigher, for as long as
/// it is cached.
pub fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut bytes = BytesMut::with_capacity(headers.values().map(HeaderValue::len).sum());
    for v in headers.values() {
        bytes.extend_from_slice(v.as_bytes());
    }
    let bytes = bytes.freeze();
    let mut owned = HeaderMap::with_capacity(headers.len());
    let mut at = 0;
    for (name, v) in headers {
        let slice = bytes.slice(at..at + v.len());
        at += v.len();
        // The bytes were a valid value a moment ago; the fallback is
        // only for the type checker.
        let mut value = HeaderValue::from_maybe_shared(slice).unwrap_or_else(|_| v.clone());
        value.set_sensitive(v.is_sensitive());
        owned.append(name.clone(), value);
    }
    owned
}

/// What an entry costs beyond the bytes it holds: moka's nodes, the
/// stored response itself, the key's allocation and allocator rounding.
/// Measured, not derived: with 1 KiB objects loadtest/bench/memory_bound.sh
/// found 3.3 KiB resident per entry when the weigher counted 1.7 KiB
/// (docs/performance.md), so small objects overran the capacity twofold.
const ENTRY_OVERHEAD: usize = 1024;
/// A header's slot in a `HeaderMap` (its bucket and index), beyond its
/// name and value bytes.
const HEADER_OVERHEAD: usize = 112;

/// A stored response. Immutable once stored: a refresh stores a new one.
#[derive(Debug)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the response was received (the "response_time" of §4.2.3).
    pub stored_at: Instant,
    /// Age already accumulated upstream when it was received.
    pub initial_age: Duration,
    pub freshness: Freshness,
    /// The site's window for serving stale when the origin fails.
    pub stale_on_error: Duration,
}

impl StoredResponse {
    /// Current age per RFC 9111 §4.2.3 (the corrected initial age plus the
    /// time it has been resident here).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub fn remaining_ttl(&self, now: Instant) -> Duration {
        self.freshness.lifetime.saturating_sub(self.age(now))
    }

    /// The same response, stale from `now` on: its stale windows start now.
    pub fn expired_at(&self, now: Instant) -> StoredResponse {
        StoredResponse {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            freshness: Freshness {
                lifetime: self.age(now),
                ..self.freshness
            },
            stale_on_error: self.stale_on_error,
        }
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        !self.remaining_ttl(now).is_zero()
    }

    fn staleness(&self, now: Instant) -> Duration {
        self.age(now).saturating_sub(self.freshness.lifetime)
    }

    /// RFC 5861 §3: may be served while one request refreshes it.
    pub fn may_serve_while_revalidating(&self, now: Instant) -> bool {
        !self.freshness.must_revalidate
            && self.staleness(now) < self.freshness.stale_while_revalidate
    }

    /// RFC 5861 §4, or the site's own window: may stand in for an origin
    /// that failed.
    pub fn may_serve_on_error(&self, now: Instant) -> bool {
        !self.freshness.must_revalidate
            && self.staleness(now) < self.freshness.stale_if_error.max(self.stale_on_error)
    }

    /// How long past its lifetime the entry stays in the store.
    fn keep(&self) -> Duration {
        let f = &self.freshness;
        let stale_use = if f.must_revalidate {
            Duration::ZERO
        } else {
            f.stale_while_revalidate
                .max(f.stale_if_error)
                .max(self.stale_on_error)
        };
        stale_use + REVALIDATION_KEEP
    }

    /// `Age` and the `ttl` of `Cache-Status` in whole seconds that add up to
    /// the freshness lifetime, as a client would check them; `ttl` is
    /// negative once stale (RFC 9211 §2.5).
    pub fn age_and_ttl_secs(&self, now: Instant) -> (u64, i64) {
        let age = self.age(now).as_secs();
        (age, self.freshness.lifetime.as_secs() as i64 - age as i64)
    }

    /// What the entry stored under `key` costs against the capacity: its
    /// bytes and what holding them takes.
    fn weight(&self, key: &str) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        (self.body.len() + headers + key.len() + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32
    }
}

/// Entries leave when their freshness and, for a store that serves stale
/// copies and revalidates, their stale windows are over.
struct ExpireWhenStale {
    keep_stale: bool,
}

impl Expiry<String, Arc<StoredResponse>> for ExpireWhenStale {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<StoredResponse>,
        created_at: Instant,
    ) -> Option<Duration> {
        let keep = if self.keep_stale {
            value.keep()
        } else {
            Duration::ZERO
        };
        Some((value.freshness.lifetime + keep).saturating_sub(value.age(created_at)))
    }
}

/// Keys are URLs clients choose: foldhash with a random seed per store,
/// a fraction of SipHash's cost on every lookup.
type Hasher = foldhash::fast::RandomState;

#[derive(Clone)]
pub struct Store {
    cache: Cache<String, Arc<StoredResponse>, Hasher>,
    evictions: Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// A store whose entries stay past their freshness, for stale serving
    /// and revalidation (a cache node's).
    pub fn new(capacity_bytes: u64) -> Store {
        Store::build(capacity_bytes, true)
    }

    /// A store whose entries leave as soon as they are stale (a proxy's hot
    /// tier, which serves only fresh copies and leaves the rest to the
    /// cache node).
    pub fn fresh_only(capacity_bytes: u64) -> Store {
        Store::build(capacity_bytes, false)
    }

    fn build(capacity_bytes: u64, keep_stale: bool) -> Store {
        let evictions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = evictions.clone();
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &String, v: &Arc<StoredResponse>| v.weight(k))
            .expire_after(ExpireWhenStale { keep_stale })
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .build_with_hasher(Hasher::default());
        Store { cache, evictions }
    }

    /// Entries evicted for space so far (not expired, replaced or purged).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, key: &str) -> Option<Arc<StoredResponse>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: String, value: Arc<StoredResponse>) {
        self.cache.insert(key, value);
    }

    /// Removes (hard) or expires now (soft) every entry that matches;
    /// returns how many. Walks the whole store: purges are rare, lookups
    /// are not, so no index is kept for them.
    pub fn purge_matching(
        &self,
        matches: impl Fn(&str, &StoredResponse) -> bool,
        soft: bool,
        now: Instant,
    ) -> usize {
        let mut n = 0;
        for (key, value) in self.cache.iter() {
            if !matches(&key, &value) {
                continue;
            }
            n += 1;
            if soft {
                self.cache
                    .insert(String::clone(&key), Arc::new(value.expired_at(now)));
            } else {
                self.cache.invalidate(key.as_str());
            }
        }
        n
    }

    pub fn remove(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Entries held. moka counts lazily; this settles its pending work
    /// first, so call it when scraped, not per request.
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Bytes held, as weighed against capacity; settles pending work
    /// first, like [`Store::entry_count`].
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {

    /// Whether `inner` lies within `outer`'s memory.
    fn within(inner: &[u8], outer: &[u8]) -> bool {
        let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
        i >= o && i < o + outer.len()
    }

    #[test]
    fn stored_headers_keep_none_of_the_buffer_they_were_parsed_from() {
        // As hyper leaves them: values sliced out of a large read buffer.
        let mut buffer = BytesMut::zeroed(64 * 1024);
        let head = b"max-age=60\"v1\"text/plain";
        buffer[..head.len()].copy_from_slice(head);
        let buffer = buffer.freeze();
        let mut parsed = HeaderMap::new();
        for (name, range) in [
            (http::header::CACHE_CONTROL, 0..10),
            (http::header::ETAG, 10..14),
            (http::header::CONTENT_TYPE, 14..24),
            (http::header::VARY, 14..18),
        ] {
            let v = HeaderValue::from_maybe_shared(buffer.slice(range)).unwrap();
            parsed.append(name, v);
        }
        parsed.append(http::header::VARY, HeaderValue::from_static("accept"));
        let owned = owned_headers(&parsed);
        assert_eq!(owned, parsed);
        for v in owned.values() {
            assert!(
                !within(v.as_bytes(), &buffer),
                "{v:?} still points into the read buffer"
            );
        }
    }

    use super::*;

    #[test]
    fn age_and_ttl_add_up_to_the_lifetime() {
        let stored_at = Instant::now();
        let r = StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"x"),
            stored_at,
            initial_age: Duration::from_secs(5),
            freshness: Freshness::new(Duration::from_secs(300)),
            stale_on_error: Duration::ZERO,
        };
        assert_eq!(
            r.age_and_ttl_secs(stored_at + Duration::from_micros(10)),
            (5, 295)
        );
        assert_eq!(
            r.age_and_ttl_secs(stored_at + Duration::from_millis(1500)),
            (6, 294)
        );
        assert_eq!(
            r.remaining_ttl(stored_at + Duration::from_secs(400)),
            Duration::ZERO
        );
        assert_eq!(
            r.age_and_ttl_secs(stored_at + Duration::from_secs(400)),
            (405, -105)
        );
    }

    #[test]
    fn small_objects_are_weighed_with_what_holding_them_costs() {
        // 1 MiB of 100-byte bodies: counted by their bytes alone, 10 000
        // of them would fit; each also costs the entry's own memory.
        let capacity = 1024 * 1024;
        let store = Store::new(capacity);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        headers.insert(http::header::ETAG, HeaderValue::from_static("\"v1\""));
        for i in 0..10_000 {
            store.insert(
                format!("site/localhost/obj/{i}"),
                Arc::new(StoredResponse {
                    status: StatusCode::OK,
                    headers: headers.clone(),
                    body: Bytes::from(vec![b'x'; 100]),
                    stored_at: Instant::now(),
                    initial_age: Duration::ZERO,
                    freshness: Freshness::new(Duration::from_secs(60)),
                    stale_on_error: Duration::ZERO,
                }),
            );
        }
        let (weight, entries) = (store.weighted_size(), store.entry_count());
        assert!(
            weight <= capacity,
            "{weight} bytes weighed in a {capacity}-byte store"
        );
        let per_entry = (100 + ENTRY_OVERHEAD + 2 * HEADER_OVERHEAD) as u64;
        assert!(
            entries <= capacity / per_entry,
            "{entries} entries kept: each costs at least {per_entry} bytes"
        );
        assert!(
            entries > capacity / (2 * per_entry),
            "only {entries} entries kept"
        );
    }

    #[test]
    fn stale_windows() {
        let stored_at = Instant::now();
        let mut r = StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            stored_at,
            initial_age: Duration::ZERO,
            freshness: Freshness {
                lifetime: Duration::from_secs(2),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(60),
                must_revalidate: false,
            },
            stale_on_error: Duration::from_secs(10),
        };
        let at = |s: u64| stored_at + Duration::from_secs(s);
        assert!(r.is_fresh(at(1)) && !r.is_fresh(at(2)));
        assert!(r.may_serve_while_revalidating(at(6)) && !r.may_serve_while_revalidating(at(7)));
        assert!(
            r.may_serve_on_error(at(61)) && !r.may_serve_on_error(at(62)),
            "stale-if-error beats the site's 10 s"
        );
        assert_eq!(r.keep(), Duration::from_secs(60) + REVALIDATION_KEEP);
        r.freshness.must_revalidate = true;
        assert!(!r.may_serve_while_revalidating(at(3)) && !r.may_serve_on_error(at(3)));
        assert_eq!(r.keep(), REVALIDATION_KEEP);
    }
}
