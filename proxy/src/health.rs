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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fanout_config::CacheNodeRef;
use fanout_server::in_process::InProcess;

use crate::snapshot::Snapshot;

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
        self.is_up_at(node, self.clock(now))
    }

    /// `now` in the form [`Health::is_up_at`] takes, so a caller checking
    /// every node converts the time once.
    pub fn clock(&self, now: Instant) -> u64 {
        self.now_ms(now)
    }

    pub fn is_up_at(&self, node: usize, clock: u64) -> bool {
        !self.probed_down[node].load(Ordering::Relaxed)
            && self.down_until[node].load(Ordering::Relaxed) <= clock
    }

    /// Holds the node out for a back-off that grows with its failures in
    /// a row; says how long, and whether the node was in use until now (a
    /// request that fails while it is already held out only lengthens it).
    pub fn failed(&self, node: usize, now: Instant) -> (Duration, bool) {
        let n = self.consecutive_failures[node].fetch_add(1, Ordering::Relaxed);
        let backoff = BASE.saturating_mul(1 << n.min(5)).min(MAX);
        let before = self.down_until[node].swap(self.now_ms(now + backoff), Ordering::Relaxed);
        (backoff, before <= self.now_ms(now))
    }

    pub fn probed_down(&self, node: usize) -> bool {
        self.probed_down[node].load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self, node: usize) -> u32 {
        self.consecutive_failures[node].load(Ordering::Relaxed)
    }

    /// Copies the state of nodes that `old` also knew (matched by id), so
    /// a membership change does not put a down node straight back in use.
    pub fn carry_over(&self, old: &Health, old_nodes: &[CacheNodeRef], new_nodes: &[CacheNodeRef]) {
        for (i, n) in new_nodes.iter().enumerate() {
            let Some(j) = old_nodes
                .iter()
                .position(|o| o.id == n.id && o.address == n.address)
            else {
                continue;
            };
            // Both epochs are process-relative; rebase the deadline.
            let until = old.down_until[j].load(Ordering::Relaxed);
            let shift = self.epoch.saturating_duration_since(old.epoch).as_millis() as u64;
            self.down_until[i].store(until.saturating_sub(shift), Ordering::Relaxed);
            self.probed_down[i].store(
                old.probed_down[j].load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            self.consecutive_failures[i].store(
                old.consecutive_failures[j].load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
        }
    }

    pub fn succeeded(&self, node: usize) {
        if self.consecutive_failures[node].swap(0, Ordering::Relaxed) != 0 {
            self.down_until[node].store(0, Ordering::Relaxed);
        }
    }
}

/// Probes every cache node of the current snapshot until `shutdown`, by
/// that snapshot's health settings. Streaks are kept per node id, so a
/// reload that keeps a node keeps its count.
pub async fn probe(
    routing: Arc<ArcSwap<Snapshot>>,
    ejections: Ejections,
    in_process: Option<InProcess>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
    // Good (positive) or bad (negative) probes in a row, per node id.
    let mut streaks: HashMap<String, i64> = HashMap::new();
    loop {
        let snapshot = routing.load_full();
        let settings = snapshot.config.cluster.health.clone();
        tokio::select! {
            _ = tokio::time::sleep(settings.interval.get()) => {}
            _ = shutdown.cancelled() => return,
        }
        // Probe the nodes of the snapshot current now, not of the one
        // loaded before the wait.
        let snapshot = routing.load_full();
        let nodes = snapshot.ring.nodes();
        let probes = nodes.iter().map(|node| {
            let client = &client;
            let uri = format!("http://{}{}", node.address, fanout_cache_health_path());
            // A node in this process is probed the way requests reach it.
            let local = in_process.as_ref().and_then(|l| l.find(&node.address));
            async move {
                if let Some(handler) = local {
                    let mut req = http::Request::new(fanout_server::empty());
                    *req.uri_mut() = http::Uri::from_static(fanout_cache_health_path());
                    req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("fanout-health"));
                    return matches!(tokio::time::timeout(settings.timeout.get(), handler(req)).await, Ok(r) if r.status().is_success());
                }
                let Ok(req) = http::Request::get(uri).header(http::header::HOST, "fanout-health").body(http_body_util::Empty::new()) else {
                    return false;
                };
                matches!(tokio::time::timeout(settings.timeout.get(), client.request(req)).await, Ok(Ok(r)) if r.status().is_success())
            }
        });
        let results = futures_util::future::join_all(probes).await;
        streaks.retain(|id, _| nodes.iter().any(|n| &n.id == id));
        let health = &snapshot.health;
        for (i, ok) in results.into_iter().enumerate() {
            let streak = streaks.entry(nodes[i].id.clone()).or_insert(0);
            *streak = match (ok, *streak) {
                (true, s) if s > 0 => s + 1,
                (true, _) => 1,
                (false, s) if s < 0 => s - 1,
                (false, _) => -1,
            };
            let down = health.probed_down[i].load(Ordering::Relaxed);
            if !down && *streak <= -(settings.fall as i64) {
                tracing::warn!(node = %nodes[i].id, failures = settings.fall, "cache node failed its health probes; marked down");
                health.probed_down[i].store(true, Ordering::Relaxed);
                ejections.count(&snapshot.node_attrs[i], "probe");
            } else if down && *streak >= settings.rise as i64 {
                tracing::info!(node = %nodes[i].id, successes = settings.rise, "cache node passed its health probes; back in service");
                health.probed_down[i].store(false, Ordering::Relaxed);
                health.succeeded(i);
            }
        }
    }
}

/// `fanout_proxy_cache_node_ejections_total{proxy,node,reason}`: times a
/// cache node was taken out of use, after a failed request (`request`) or
/// failed health probes (`probe`).
#[derive(Clone)]
pub struct Ejections {
    counter: opentelemetry::metrics::Counter<u64>,
    proxy: opentelemetry::KeyValue,
}

impl Ejections {
    pub fn new(proxy: &str) -> Ejections {
        Ejections {
            counter: opentelemetry::global::meter("fanout-proxy")
                .u64_counter("fanout_proxy_cache_node_ejections")
                .with_description("Times a cache node was taken out of use: after a failed request (reason=request) or failed health probes (reason=probe)")
                .build(),
            proxy: opentelemetry::KeyValue::new("proxy", proxy.to_string()),
        }
    }

    pub fn count(&self, node: &opentelemetry::KeyValue, reason: &'static str) {
        self.counter.add(
            1,
            &[
                self.proxy.clone(),
                node.clone(),
                opentelemetry::KeyValue::new("reason", reason),
            ],
        );
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
        assert_eq!(h.failed(0, t), (Duration::from_secs(1), true));
        assert!(!h.is_up(0, t) && h.is_up(1, t));
        assert!(h.is_up(0, t + Duration::from_millis(1001)));
        assert_eq!(h.failed(0, t), (Duration::from_secs(2), false));
        for _ in 0..10 {
            h.failed(0, t);
        }
        assert_eq!(h.failed(0, t).0, MAX);
        h.succeeded(0);
        assert!(h.is_up(0, t));
        assert_eq!(h.failed(0, t).0, Duration::from_secs(1));
    }
}
