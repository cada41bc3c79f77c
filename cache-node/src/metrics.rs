//! The cache node's instruments, through the OpenTelemetry metrics API. The
//! binary decides where they go (Prometheus text on `/metrics`, and OTLP
//! when configured).
//!
//! A request's outcome is decided deep in the handler (a hit, a collapsed
//! miss, a stale answer on origin error...), but it is counted once, with
//! its site and status, when the response head is ready: [`decided`] notes
//! the outcome in a task-local slot that [`Metrics::answered`] reads.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram};
use opentelemetry::KeyValue;

use fanout_http_cache::store::Store;

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

/// `Metrics::requests` bound to each status class and outcome of one site.
type SiteCounts = [OnceLock<BoundCounter<u64>>; STATUS_CLASSES.len() * Outcome::ALL.len()];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The per-request instruments are bound to their attribute sets on first
/// use (OpenTelemetry's bound instruments), so counting a request is an
/// atomic add rather than a hash and lookup of its attributes: that lookup
/// was about 4 % of a cache hit's CPU.
pub struct Metrics {
    requests: Counter<u64>,
    /// By site name.
    site_requests: RwLock<HashMap<String, Box<SiteCounts>, foldhash::fast::RandomState>>,
    response_duration: Histogram<f64>,
    /// `response_duration` by outcome, bound on first use.
    response_durations: [OnceLock<BoundHistogram<f64>>; Outcome::ALL.len()],
    lookup_duration: BoundHistogram<f64>,
    /// Attribute sets built once per node, not per request.
    outcome_attrs: Vec<[KeyValue; 2]>,
    origin_fetches: Counter<u64>,
    peer_fills: Counter<u64>,
    prefetches: Counter<u64>,
    playlist_hold: Histogram<f64>,
    origin_errors: Counter<u64>,
    origin_anomalies: Counter<u64>,
    origin_duration: Histogram<f64>,
    origin_bytes: Counter<u64>,
    node: [KeyValue; 1],
    bytes_out: BoundCounter<u64>,
    /// Requests and hits, for the control plane's status page.
    traffic: std::sync::Arc<fanout_control_plane::agent::Traffic>,
}

impl Metrics {
    pub fn new(node: &str, store: &Store) -> Metrics {
        let meter = opentelemetry::global::meter("fanout-cache-node");
        fanout_server::memory_file::register_metric();
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
                .build()
                .bind(std::slice::from_ref(&node_kv)),
            outcome_attrs: Outcome::ALL
                .iter()
                .map(|o| [node_kv.clone(), KeyValue::new("outcome", o.as_str())])
                .collect(),
            origin_fetches: meter
                .u64_counter("fanout_cache_origin_fetches")
                .with_description("Requests the cache node sent to origins")
                .build(),
            peer_fills: meter
                .u64_counter("fanout_cache_peer_fills")
                .with_description("Fills answered by the key's owning cache node instead of the origin (keys the proxies spilled here)")
                .build(),
            prefetches: meter
                .u64_counter("fanout_cache_prefetches")
                .with_description("Prefetches by site and result: started (this node, the owner, began a fill), present (stored or filling already), used (a viewer asked for it), wasted (no viewer asked within a minute), dropped (with the reason: concurrency, bandwidth, origin_busy, per_playlist, owner)")
                .build(),
            playlist_hold: meter
                .f64_histogram("fanout_cache_playlist_hold_duration")
                .with_description("How long new playlist versions were held back from viewers while the segments they add were prefetched")
                .with_unit("s")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
                .build(),
            origin_errors: meter
                .u64_counter("fanout_cache_origin_errors")
                .with_description("Origin fetches that failed, by kind: status_5xx, timeout, unreachable, body (broke off mid-body)")
                .build(),
            origin_anomalies: meter
                .u64_counter("fanout_cache_origin_anomalies")
                .with_description("Origin responses with nonsensical caching metadata (conflicting max-age or Expires, an invalid max-age or Vary), by site; each was given the conservative reading")
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
                .build()
                .bind(std::slice::from_ref(&node_kv)),
            site_requests: RwLock::default(),
            response_durations: Default::default(),
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
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let slot = class * Outcome::ALL.len() + i;
        let bind = || {
            let [node, outcome_kv] = &self.outcome_attrs[i];
            self.requests.bind(&[
                node.clone(),
                outcome_kv.clone(),
                KeyValue::new("site", site.to_string()),
                KeyValue::new("status_class", STATUS_CLASSES[class]),
            ])
        };
        let counted = self
            .site_requests
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(site)
            .map(|counts| counts[slot].get_or_init(bind).add(1))
            .is_some();
        if !counted {
            let mut sites = self
                .site_requests
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let counts = sites
                .entry(site.to_string())
                .or_insert_with(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
            counts[slot].get_or_init(bind).add(1);
        }
        self.response_durations[i]
            .get_or_init(|| self.response_duration.bind(&self.outcome_attrs[i]))
            .record(started.elapsed().as_secs_f64());
        self.traffic
            .count(matches!(outcome, Outcome::Hit | Outcome::Stale));
    }

    pub fn lookup(&self, took: Duration) {
        self.lookup_duration.record(took.as_secs_f64());
    }

    pub fn traffic(&self) -> std::sync::Arc<fanout_control_plane::agent::Traffic> {
        self.traffic.clone()
    }

    pub fn origin_fetch(&self) {
        self.origin_fetches.add(1, &self.node);
    }

    pub fn peer_fill(&self) {
        self.peer_fills.add(1, &self.node);
    }

    pub fn prefetch(&self, site: &str, outcome: crate::prefetch::Outcome) {
        use crate::prefetch::Outcome;
        let (result, reason) = match outcome {
            Outcome::Started => ("started", ""),
            Outcome::Present => ("present", ""),
            Outcome::Dropped(why) => ("dropped", why.as_str()),
        };
        self.count_prefetch(site, result, reason);
    }

    /// How long a new playlist version was held while its prefetches ran.
    pub fn playlist_held(&self, held: Duration) {
        self.playlist_hold.record(held.as_secs_f64(), &self.node);
    }

    pub fn prefetch_used(&self, site: &str) {
        self.count_prefetch(site, "used", "");
    }

    /// Counts a prefetch no viewer asked for, from outside the node (the
    /// store of unclaimed prefetches expires them).
    pub fn prefetch_wasted(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let (counter, node) = (self.prefetches.clone(), self.node[0].clone());
        move |site| {
            counter.add(
                1,
                &[
                    node.clone(),
                    KeyValue::new("site", site.to_string()),
                    KeyValue::new("result", "wasted"),
                    KeyValue::new("reason", ""),
                ],
            )
        }
    }

    fn count_prefetch(&self, site: &str, result: &'static str, reason: &'static str) {
        self.prefetches.add(
            1,
            &[
                self.node[0].clone(),
                KeyValue::new("site", site.to_string()),
                KeyValue::new("result", result),
                KeyValue::new("reason", reason),
            ],
        );
    }

    pub fn origin_error(&self, kind: OriginFailure) {
        self.origin_errors.add(
            1,
            &[self.node[0].clone(), KeyValue::new("kind", kind.as_str())],
        );
    }

    pub fn origin_anomaly(&self, site: &str) {
        self.origin_anomalies.add(
            1,
            &[
                self.node[0].clone(),
                KeyValue::new("site", site.to_string()),
            ],
        );
    }

    pub fn origin_answered(&self, after: Duration) {
        self.origin_duration.record(after.as_secs_f64(), &self.node);
    }

    pub fn origin_body(&self, bytes: usize) {
        self.origin_bytes.add(bytes as u64, &self.node);
    }

    pub fn served_from_store(&self, bytes: usize) {
        self.bytes_out.add(bytes as u64);
    }
}
