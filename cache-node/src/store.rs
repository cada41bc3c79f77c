//! The in-memory store: whole responses in a moka cache (W-TinyLFU
//! admission, so one scan of the VOD long tail cannot flush the live edge),
//! weighted by the bytes they hold, each expiring when it stops being fresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use moka::sync::Cache;
use moka::Expiry;

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
    pub lifetime: Duration,
}

impl StoredResponse {
    /// Current age per RFC 9111 §4.2.3 (the corrected initial age plus the
    /// time it has been resident here).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub fn remaining_ttl(&self, now: Instant) -> Duration {
        self.lifetime.saturating_sub(self.age(now))
    }

    /// `Age` and the `ttl` of `Cache-Status`, in whole seconds that add up
    /// to the freshness lifetime, as a client would check them.
    pub fn age_and_ttl_secs(&self, now: Instant) -> (u64, u64) {
        let age = self.age(now).as_secs();
        (age, self.lifetime.as_secs().saturating_sub(age))
    }

    /// What the entry costs against the capacity: body, headers and a fixed
    /// allowance for the entry itself and moka's bookkeeping.
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + 256).min(u32::MAX as usize) as u32
    }
}

struct ExpireWhenStale;

impl Expiry<String, Arc<StoredResponse>> for ExpireWhenStale {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<StoredResponse>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.remaining_ttl(created_at))
    }
}

#[derive(Clone)]
pub struct Store {
    cache: Cache<String, Arc<StoredResponse>>,
}

impl Store {
    pub fn new(capacity_bytes: u64) -> Store {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_k: &String, v: &Arc<StoredResponse>| v.weight())
            .expire_after(ExpireWhenStale)
            .build();
        Store { cache }
    }

    pub fn get(&self, key: &str) -> Option<Arc<StoredResponse>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: String, value: Arc<StoredResponse>) {
        self.cache.insert(key, value);
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
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
            lifetime: Duration::from_secs(300),
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
            (405, 0)
        );
    }
}
