//! Everything a request is routed by, built once per configuration and
//! swapped whole through `ArcSwap`: a new snapshot applies to requests that
//! start after it, while requests in flight finish on the one they loaded.
//!
//! State that outlives a configuration is carried over when its inputs did
//! not change: node health and in-flight counts (per node id), the retry
//! budget, and the fail-open origin pools.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout_config::{ProxyConfig, SiteTable};
use fanout_server::origin::{OriginSetupError, Origins};
use opentelemetry::KeyValue;

use crate::balance::Loads;
use crate::health::Health;
use crate::retry_budget::RetryBudget;
use crate::ring::Ring;

pub struct Snapshot {
    /// 1 for the configuration the proxy started with, +1 per reload.
    pub generation: u64,
    pub applied_at: std::time::SystemTime,
    pub config: ProxyConfig,
    pub sites: SiteTable,
    pub ring: Ring,
    /// Index-aligned with `ring.nodes()`.
    pub health: Arc<Health>,
    pub loads: Arc<Loads>,
    pub retries: Arc<RetryBudget>,
    /// The site's origins, for failing open; `None` when fail-open is off.
    pub origins: Option<Arc<Origins>>,
    /// Longest wait for a cache node's response headers.
    pub upstream_timeout: Duration,
    /// Metric attributes, built once rather than per request.
    pub node_attrs: Vec<KeyValue>,
}

impl Snapshot {
    pub fn build(
        config: ProxyConfig,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, OriginSetupError> {
        let same_nodes = previous.is_some_and(|p| p.config.cache_nodes == config.cache_nodes);
        let (health, loads) = match previous {
            Some(p) if same_nodes => (p.health.clone(), p.loads.clone()),
            _ => {
                let health = Health::new(config.cache_nodes.len());
                if let Some(p) = previous {
                    health.carry_over(&p.health, p.ring.nodes(), &config.cache_nodes);
                }
                // In-flight counts of removed or re-ordered nodes belong to
                // the old snapshot's requests; the new one starts from zero.
                (
                    Arc::new(health),
                    Arc::new(Loads::new(config.cache_nodes.len())),
                )
            }
        };
        let retries = match previous {
            Some(p) if p.config.edge.retries == config.edge.retries => p.retries.clone(),
            _ => Arc::new(RetryBudget::new(
                config.edge.retries.budget_ratio,
                config.edge.retries.min_per_second,
            )),
        };
        let origins = match previous {
            Some(p)
                if p.config.cluster.sites == config.cluster.sites
                    && p.config.edge.fail_open == config.edge.fail_open =>
            {
                p.origins.clone()
            }
            _ if config.edge.fail_open.enabled => Some(Arc::new(
                Origins::new(&config.cluster, config.edge.fail_open.max_origin_requests)?
                    .without_queue(),
            )),
            _ => None,
        };
        // A cache node answers within the slowest origin's budget; past that
        // it is stuck, not slow.
        let upstream_timeout = config
            .cluster
            .sites
            .iter()
            .map(|s| s.origin.connect_timeout.get() + s.origin.response_timeout.get())
            .max()
            .unwrap_or(Duration::from_secs(10))
            + Duration::from_secs(1);
        let node_attrs = config
            .cache_nodes
            .iter()
            .map(|n| KeyValue::new("node", Arc::<str>::from(n.id.as_str())))
            .collect();
        Ok(Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            applied_at: std::time::SystemTime::now(),
            sites: SiteTable::new(&config.cluster),
            ring: Ring::new(&config.cache_nodes, config.cluster.hashing.vnodes),
            health,
            loads,
            retries,
            origins,
            upstream_timeout,
            node_attrs,
            config,
        })
    }

    /// The ring, health and loads as JSON, for `/status`.
    pub fn status(&self) -> serde_json::Value {
        let now = Instant::now();
        let nodes: Vec<serde_json::Value> = self
            .ring
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                serde_json::json!({
                    "id": n.id,
                    "address": n.address.to_string(),
                    "weight": n.weight,
                    "up": self.health.is_up(i, now),
                    "probed_down": self.health.probed_down(i),
                    "consecutive_failures": self.health.consecutive_failures(i),
                    "in_flight": self.loads.get(i),
                })
            })
            .collect();
        let applied = self
            .applied_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        serde_json::json!({
            "proxy": self.config.id,
            "generation": self.generation,
            "applied_at_unix": applied,
            "sites": self.config.cluster.sites.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "ring": {
                "vnodes": self.config.cluster.hashing.vnodes,
                "load_factor": self.config.cluster.hashing.load_factor,
                "nodes": nodes,
            },
            "fail_open": self.config.edge.fail_open.enabled,
        })
    }
}
