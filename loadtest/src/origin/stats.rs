//! Counts of every request the origin received, per path, served at
//! `/_origin/stats` so that offload and collapsing can be measured from
//! outside: "how many times did the origin see this segment?".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Distinct paths tracked; past this, requests are counted in `other_paths`
/// so a long-tail load cannot grow the origin's memory without bound.
const MAX_PATHS: usize = 200_000;
/// Paths whose latest trace context is kept.
const MAX_TRACED: usize = 1000;

#[derive(Default)]
pub struct Stats {
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    requests: AtomicU64,
    body_bytes: AtomicU64,
    paths: Mutex<HashMap<String, u64>>,
    other_paths: AtomicU64,
    http2: AtomicU64,
    traceparents: Mutex<HashMap<String, String>>,
}

/// The JSON served at `/_origin/stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    /// Most requests the origin was working on at once (until their
    /// response headers): the load a cache let through.
    pub peak_in_flight: u64,
    pub body_bytes: u64,
    pub paths: HashMap<String, u64>,
    pub other_paths: u64,
    /// Requests that came over HTTP/2 (the rest came over HTTP/1.x).
    pub http2_requests: u64,
    /// The W3C `traceparent` of the latest traced request per path (up to
    /// a thousand paths): where a trace reached the origin.
    #[serde(default)]
    pub traceparents: HashMap<String, String>,
}

impl Stats {
    /// Counts a request for `path`; returns how many `path` has had, this
    /// one included (0 once too many paths are counted to tell).
    pub fn count(&self, path: &str, http2: bool) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if http2 {
            self.http2.fetch_add(1, Ordering::Relaxed);
        }
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = paths.get_mut(path) {
            *n += 1;
            *n
        } else if paths.len() < MAX_PATHS {
            paths.insert(path.to_string(), 1);
            1
        } else {
            self.other_paths.fetch_add(1, Ordering::Relaxed);
            0
        }
    }

    /// Remembers the trace context a request for `path` arrived with.
    pub fn traced(&self, path: &str, traceparent: &str) {
        let mut t = self.traceparents.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() < MAX_TRACED || t.contains_key(path) {
            t.insert(path.to_string(), traceparent.to_string());
        }
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn add_body_bytes(&self, n: u64) {
        self.body_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            paths: self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            other_paths: self.other_paths.load(Ordering::Relaxed),
            http2_requests: self.http2.load(Ordering::Relaxed),
            traceparents: self
                .traceparents
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    pub fn reset(&self) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        paths.clear();
        self.traceparents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.requests.store(0, Ordering::Relaxed);
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.body_bytes.store(0, Ordering::Relaxed);
        self.other_paths.store(0, Ordering::Relaxed);
        self.http2.store(0, Ordering::Relaxed);
    }
}

pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
