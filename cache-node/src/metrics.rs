//! The cache node's instruments, through the OpenTelemetry metrics API. The
//! binary decides where they go (Prometheus text on `/metrics`, and OTLP
//! when configured).
//!
//! A request's outcome is decided deep in the handler (a hit, a collapsed
//! miss, a stale answer on origin error...), but it is counted once, with
//! its site and status, when the response head is ready: [`decided`] notes
//! the outcome in a task-local slot that [`Metrics::answered`] reads.

use std::cell::Cell;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram};
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

tokio::task_local! {
    static OUTCOME: Cell<Outcome>;
}

/// Notes how the request this task is answering was served. Outside
/// [`Metrics::scope`] (a background fill) it does nothing.
pub fn decided(outcome: Outcome) {
    let _ = OUTCOME.try_with(|o| o.set(outcome));
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

/// Why an origin fetch failed.
#[derive(Debug, Clone, Copy)]
pub enum OriginFailure {
    /// The origin answered 5xx.
    Status,
    Timeout,
    /// Refused, reset, unresolvable: no answer at all.
    Unreachable,
    /// The body broke off after the head.
    Body,
}

impl OriginFailure {
    fn as_str(self) -> &'static str {
        match self {
            OriginFailure::Status => "status_5xx",
            OriginFailure::Timeout => "timeout",
            OriginFailure::Unreachable => "unreachable",
            OriginFailure::Body => "body",
        }
    }
}

pub struct Metrics {
    requests: Counter<u64>,
    response_duration: Histogram<f64>,
    lookup_duration: Histogram<f64>,
    /// Attribute sets built once per node, not per request.
    outcome_attrs: Vec<[KeyValue; 2]>,
    origin_fetches: Counter<u64>,
    origin_errors: Counter<u64>,
    origin_duration: Histogram<f64>,
    origin_bytes: Counter<u64>,
    node: [KeyValue; 1],
    bytes_out: Counter<u64>,
    /// Requests and hits, for the control plane's status page.
    traffic: std::sync::Arc<fanout_control_plane::agent::Traffic>,
}

impl Metrics {
    pub fn new(node: &str, store: &Store) -> Metrics {
        let meter = opentelemetry::global::meter("fanout-cache-node");
        let node_kv = KeyValue::new("node", node.to_string());
        let s = store.clone();
        let attrs = [node_kv.clone()];
        // The Prometheus exporter appends the unit (`_bytes`) and, for
        // counters, `_total`: names here carry neither.
        meter
            .u64_observable_gauge("fanout_cache_size")
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
        let s = store.clone();
        let attrs = [node_kv.clone()];
        meter
            .u64_observable_counter("fanout_cache_evictions")
            .with_description("Objects evicted to stay within capacity (not expiries or purges)")
            .with_callback(move |o| o.observe(s.evictions(), &attrs))
            .build();
        Metrics {
            requests: meter
                .u64_counter("fanout_cache_requests")
                .with_description("Requests answered by the cache node, by site, status class and outcome (hit, miss, collapsed, stale, pass, hit_for_pass, unknown_site, origin_error)")
                .build(),
            response_duration: meter
                .f64_histogram("fanout_cache_response_header_duration")
                .with_description("Time from request to the response head the cache node sends, by outcome: a hit's is the cache's own latency, a miss's includes the origin")
                .with_unit("s")
                .with_boundaries(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0,
                ])
                .build(),
            lookup_duration: meter
                .f64_histogram("fanout_cache_lookup_duration")
                .with_description("Time to look a key up in the store (variant selection included)")
                .with_unit("s")
                .with_boundaries(vec![
                    0.000_001, 0.000_002_5, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1,
                    0.001, 0.01,
                ])
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
                .u64_counter("fanout_cache_origin_errors")
                .with_description("Origin fetches that failed, by kind: status_5xx, timeout, unreachable, body (broke off mid-body)")
                .build(),
            origin_duration: meter
                .f64_histogram("fanout_cache_origin_response_header_duration")
                .with_description("Time from sending an origin request to its response head")
                .with_unit("s")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .build(),
            origin_bytes: meter
                .u64_counter("fanout_cache_origin_body")
                .with_description("Body bytes received from origins")
                .with_unit("By")
                .build(),
            bytes_out: meter
                .u64_counter("fanout_cache_served_body")
                .with_description("Body bytes of responses served from the store (hits)")
                .with_unit("By")
                .build(),
            node: [node_kv],
            traffic: Default::default(),
        }
    }

    /// Runs the answer to one request with a slot for [`decided`], and
    /// returns the outcome noted there (a miss if nothing was).
    pub async fn scope<F: std::future::Future>(&self, answer: F) -> (F::Output, Outcome) {
        OUTCOME
            .scope(Cell::new(Outcome::Miss), async {
                let out = answer.await;
                (out, OUTCOME.with(Cell::get))
            })
            .await
    }

    /// Counts one request whose response head is ready.
    pub fn answered(&self, site: &str, status: u16, outcome: Outcome, started: std::time::Instant) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let [node, outcome_kv] = &self.outcome_attrs[i];
        self.requests.add(
            1,
            &[
                node.clone(),
                outcome_kv.clone(),
                KeyValue::new("site", site.to_string()),
                KeyValue::new("status_class", class),
            ],
        );
        self.response_duration
            .record(started.elapsed().as_secs_f64(), &self.outcome_attrs[i]);
        self.traffic
            .count(matches!(outcome, Outcome::Hit | Outcome::Stale));
    }

    pub fn lookup(&self, took: Duration) {
        self.lookup_duration.record(took.as_secs_f64(), &self.node);
    }

    pub fn traffic(&self) -> std::sync::Arc<fanout_control_plane::agent::Traffic> {
        self.traffic.clone()
    }

    pub fn origin_fetch(&self) {
        self.origin_fetches.add(1, &self.node);
    }

    pub fn origin_error(&self, kind: OriginFailure) {
        self.origin_errors.add(
            1,
            &[self.node[0].clone(), KeyValue::new("kind", kind.as_str())],
        );
    }

    pub fn origin_answered(&self, after: Duration) {
        self.origin_duration.record(after.as_secs_f64(), &self.node);
    }

    pub fn origin_body(&self, bytes: usize) {
        self.origin_bytes.add(bytes as u64, &self.node);
    }

    pub fn served_from_store(&self, bytes: usize) {
        self.bytes_out.add(bytes as u64, &self.node);
    }
}
