//! The cache node's instruments, through the OpenTelemetry metrics API. The
//! binary decides where they go (Prometheus text on `/metrics`).

use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;

use crate::store::Store;

/// Outcome of one request, as counted and as reported in `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// A miss that joined a fill already in flight for its key.
    Collapsed,
    /// Answered with a stale copy (while revalidating, or for a failed origin).
    Stale,
    /// Sent to the origin without a cache lookup (not GET/HEAD).
    Pass,
    /// Sent to the origin alone because the key's last response was not storable.
    HitForPass,
    UnknownSite,
    OriginError,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Stale => "stale",
            Outcome::Pass => "pass",
            Outcome::HitForPass => "hit_for_pass",
            Outcome::UnknownSite => "unknown_site",
            Outcome::OriginError => "origin_error",
        }
    }
    const ALL: [Outcome; 8] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Stale,
        Outcome::Pass,
        Outcome::HitForPass,
        Outcome::UnknownSite,
        Outcome::OriginError,
    ];
}

pub struct Metrics {
    requests: Counter<u64>,
    /// Attribute sets built once per node, not per request.
    outcome_attrs: Vec<[KeyValue; 2]>,
    origin_fetches: Counter<u64>,
    origin_errors: Counter<u64>,
    node: [KeyValue; 1],
    bytes_out: Counter<u64>,
}

impl Metrics {
    pub fn new(node: &str, store: &Store) -> Metrics {
        let meter = opentelemetry::global::meter("fanout-cache-node");
        let node_kv = KeyValue::new("node", node.to_string());
        let s = store.clone();
        let attrs = [node_kv.clone()];
        meter
            .u64_observable_gauge("fanout_cache_stored_bytes")
            .with_description("Bytes held by the cache, as weighed against its capacity")
            .with_unit("By")
            .with_callback(move |o| o.observe(s.weighted_size(), &attrs))
            .build();
        let s = store.clone();
        let attrs = [node_kv.clone()];
        meter
            .u64_observable_gauge("fanout_cache_entries")
            .with_description("Objects held by the cache")
            .with_callback(move |o| o.observe(s.entry_count(), &attrs))
            .build();
        Metrics {
            requests: meter
                .u64_counter("fanout_cache_requests")
                .with_description("Requests answered by the cache node, by outcome")
                .build(),
            outcome_attrs: Outcome::ALL
                .iter()
                .map(|o| [node_kv.clone(), KeyValue::new("outcome", o.as_str())])
                .collect(),
            origin_fetches: meter
                .u64_counter("fanout_cache_origin_fetches")
                .with_description("Requests the cache node sent to origins")
                .build(),
            origin_errors: meter
                .u64_counter("fanout_cache_origin_body_errors")
                .with_description("Origin responses that broke off mid-body (never stored)")
                .build(),
            bytes_out: meter
                .u64_counter("fanout_cache_response_body_bytes")
                .with_description("Body bytes of responses served from the store")
                .with_unit("By")
                .build(),
            node: [node_kv],
        }
    }

    pub fn request(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests.add(1, &self.outcome_attrs[i]);
    }

    pub fn origin_fetch(&self) {
        self.origin_fetches.add(1, &self.node);
    }

    pub fn origin_error(&self) {
        self.origin_errors.add(1, &self.node);
    }

    pub fn served_from_store(&self, bytes: usize) {
        self.bytes_out.add(bytes as u64, &self.node);
    }
}
