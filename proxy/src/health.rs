//! Health of cache nodes, as this proxy sees it, from two sources:
//!
//! - passive: a node whose request failed before it answered is skipped for
//!   a back-off that doubles with each consecutive failure (1 s up to 30 s;
//!   Envoy's outlier ejection is the model) and is used again once a request
//!   succeeds;
//! - active: [`probe`] asks every node for `/_fanout/health` each interval;
//!   `fall` failures in a row mark it down until `rise` successes in a row.
//!
//! A node is used when neither source holds it down.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(30);

/// Per node of the ring, index-aligned with `Ring::nodes()`.
pub struct Health {
    epoch: Instant,
    /// Set by the active probes.
    probed_down: Vec<AtomicBool>,
    /// Milliseconds since `epoch` until which the node is skipped.
    down_until: Vec<AtomicU64>,
    consecutive_failures: Vec<AtomicU32>,
}

impl Health {
    pub fn new(nodes: usize) -> Health {
        Health {
            epoch: Instant::now(),
            probed_down: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            down_until: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            consecutive_failures: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub fn is_up(&self, node: usize, now: Instant) -> bool {
        !self.probed_down[node].load(Ordering::Relaxed)
            && self.down_until[node].load(Ordering::Relaxed) <= self.now_ms(now)
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

/// Probes every node of `nodes` (index-aligned with `health`) until
/// `shutdown`, by the cluster's `health` settings.
pub async fn probe(
    health: Arc<Health>,
    nodes: Vec<fanout_config::CacheNodeRef>,
    settings: fanout_config::HealthCheck,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(settings.interval.get() * 3)
            .build_http();
    // Streaks of good (positive) or bad (negative) probes per node.
    let mut streaks = vec![0i64; nodes.len()];
    let mut ticks = tokio::time::interval(settings.interval.get());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let probes = nodes.iter().map(|node| {
            let client = &client;
            let uri = format!("http://{}{}", node.address, fanout_cache_health_path());
            async move {
                let Ok(req) = http::Request::get(uri).header(http::header::HOST, "fanout-health").body(http_body_util::Empty::new()) else {
                    return false;
                };
                matches!(tokio::time::timeout(settings.timeout.get(), client.request(req)).await, Ok(Ok(r)) if r.status().is_success())
            }
        });
        let results = futures_util::future::join_all(probes).await;
        for (i, ok) in results.into_iter().enumerate() {
            streaks[i] = match (ok, streaks[i]) {
                (true, s) if s > 0 => s + 1,
                (true, _) => 1,
                (false, s) if s < 0 => s - 1,
                (false, _) => -1,
            };
            let down = health.probed_down[i].load(Ordering::Relaxed);
            if !down && streaks[i] <= -(settings.fall as i64) {
                tracing::warn!(node = %nodes[i].id, failures = settings.fall, "cache node failed its health probes; marked down");
                health.probed_down[i].store(true, Ordering::Relaxed);
            } else if down && streaks[i] >= settings.rise as i64 {
                tracing::info!(node = %nodes[i].id, successes = settings.rise, "cache node passed its health probes; back in service");
                health.probed_down[i].store(false, Ordering::Relaxed);
                health.succeeded(i);
            }
        }
    }
}

/// The path cache nodes answer probes on (kept in step with the cache
/// node's `HEALTH_PATH`; the proxy does not depend on the cache node crate).
fn fanout_cache_health_path() -> &'static str {
    "/_fanout/health"
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
