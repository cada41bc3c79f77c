//! Passive health of cache nodes, as this proxy sees it: a node whose
//! request failed before it answered is skipped for a back-off that doubles
//! with each consecutive failure (1 s up to 30 s, Envoy's outlier
//! ejection is the model), and is used again once a request succeeds.
//! Active probes come with the proxy's health-check work.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BASE: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(30);

/// Per node of the ring, index-aligned with `Ring::nodes()`.
pub struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` until which the node is skipped.
    down_until: Vec<AtomicU64>,
    consecutive_failures: Vec<AtomicU32>,
}

impl Health {
    pub fn new(nodes: usize) -> Health {
        Health {
            epoch: Instant::now(),
            down_until: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            consecutive_failures: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub fn is_up(&self, node: usize, now: Instant) -> bool {
        self.down_until[node].load(Ordering::Relaxed) <= self.now_ms(now)
    }

    pub fn failed(&self, node: usize, now: Instant) -> Duration {
        let n = self.consecutive_failures[node].fetch_add(1, Ordering::Relaxed);
        let backoff = BASE.saturating_mul(1 << n.min(5)).min(MAX);
        self.down_until[node].store(self.now_ms(now + backoff), Ordering::Relaxed);
        backoff
    }

    pub fn succeeded(&self, node: usize) {
        if self.consecutive_failures[node].swap(0, Ordering::Relaxed) != 0 {
            self.down_until[node].store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_and_a_success_ends_it() {
        let h = Health::new(2);
        let t = Instant::now();
        assert!(h.is_up(0, t));
        assert_eq!(h.failed(0, t), Duration::from_secs(1));
        assert!(!h.is_up(0, t) && h.is_up(1, t));
        assert!(h.is_up(0, t + Duration::from_millis(1001)));
        assert_eq!(h.failed(0, t), Duration::from_secs(2));
        for _ in 0..10 {
            h.failed(0, t);
        }
        assert_eq!(h.failed(0, t), MAX);
        h.succeeded(0);
        assert!(h.is_up(0, t));
        assert_eq!(h.failed(0, t), Duration::from_secs(1));
    }
}
