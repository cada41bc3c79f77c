//! One request through the proxy: match the site, choose a cache node under
//! the load bound, stream the exchange to and from it, retry a GET or HEAD
//! on the next node within the budget, and fail open to the origin when no
//! cache node can take it. [`Proxy::handle`] reads top to bottom as the
//! request's phases: route (request, hot tier, upstream), response, logging.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fanout_config::{CacheKey, HostPort, Site};
use fanout_http_cache::internal;
use fanout_server::in_process::InProcess;
use fanout_server::origin::FetchError;
use fanout_server::trace;
use fanout_server::RequestBody;
use fanout_server::{empty, remove_hop_by_hop, text, ConnInfo, ResponseBody};
use http::header::HeaderName;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter};
use opentelemetry::KeyValue;

use crate::access_log::{AccessLog, Entry};
use crate::balance;
use crate::hot_tier::{HotTier, Lookup};
use crate::node_client::NodeClient;
use crate::ring::key_hash;
use crate::snapshot::Snapshot;
use crate::tracked_body::Tracked;

pub struct Proxy {
    pub routing: Arc<ArcSwap<Snapshot>>,
    /// The objects every viewer wants, kept here; `None` when turned off.
    pub hot: Option<Arc<HotTier>>,
    /// For requests with a body, which it streams to the cache node.
    pub client: Client<HttpConnector, ResponseBody>,
    /// For requests without one: nearly every GET and HEAD.
    pub nodes: Arc<NodeClient>,
    /// Cache nodes running in this process (`fanout up`), reached by a
    /// call instead of a connection.
    pub in_process: Option<InProcess>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    /// Requests and hits, for the control plane's status page.
    pub traffic: Arc<fanout_control_plane::agent::Traffic>,
    /// Refuses requests, newcomers first, when the proxy is overloaded;
    /// `None` when turned off.
    pub admission: Option<Arc<crate::admission::Admission>>,
}

/// The per-request instruments are bound to their attribute sets on first
/// use (OpenTelemetry's bound instruments): counting a request is then an
/// atomic add, not a hash and lookup of four attributes.
pub struct Metrics {
    requests: Counter<u64>,
    duration: BoundHistogram<f64>,
    retries: Counter<u64>,
    fail_open: Counter<u64>,
    body_bytes: Counter<u64>,
    ejections: crate::health::Ejections,
    proxy: KeyValue,
    /// By site name (empty for requests that matched none).
    sites: RwLock<HashMap<String, Arc<SiteInstruments>, foldhash::fast::RandomState>>,
}

type ByNode = HashMap<String, Arc<[OnceLock<BoundCounter<u64>>; 4]>, foldhash::fast::RandomState>;

/// One site's bound instruments.
struct SiteInstruments {
    name: String,
    body_bytes: BoundCounter<u64>,
    /// `requests` by node (or `origin`, `none`), then status class.
    requests: RwLock<ByNode>,
    /// `requests` answered by the hot tier, by status class: most requests,
    /// spared the lookup by node.
    hot_tier: [OnceLock<BoundCounter<u64>>; 4],
}

const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// The `node` of requests the hot tier answered.
const HOT_TIER: &str = "hot-tier";

/// Finds `key` under a read lock, or inserts `make()` under the write lock.
fn get_or_insert<V: Clone>(
    map: &RwLock<HashMap<String, V, foldhash::fast::RandomState>>,
    key: &str,
    make: impl FnOnce() -> V,
) -> V {
    if let Some(v) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.to_string())
        .or_insert_with(make)
        .clone()
}

impl Metrics {
    pub fn new(proxy: &str) -> Metrics {
        let meter = opentelemetry::global::meter("fanout-proxy");
        Metrics {
            requests: meter
                .u64_counter("fanout_proxy_requests")
                .with_description("Requests answered by the proxy, by site, cache node (or origin, or none) and status class")
                .build(),
            duration: meter
                .f64_histogram("fanout_proxy_response_header_duration")
                .with_description("Time from request to the response headers the proxy sends")
                .with_unit("s")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .build()
                .bind(&[KeyValue::new("proxy", proxy.to_string())]),
            retries: meter
                .u64_counter("fanout_proxy_retries")
                .with_description("Retries on the next cache node: sent, or not sent because the retry budget was spent")
                .build(),
            fail_open: meter
                .u64_counter("fanout_proxy_fail_open")
                .with_description("Requests no cache node could take: sent to the origin, or refused with 503")
                .build(),
            body_bytes: meter
                .u64_counter("fanout_proxy_response_body")
                .with_description("Body bytes the proxy sent to clients, by site")
                .with_unit("By")
                .build(),
            ejections: crate::health::Ejections::new(proxy),
            proxy: KeyValue::new("proxy", proxy.to_string()),
            sites: RwLock::default(),
        }
    }

    /// Counts a response whose head is ready; returns the counter of the
    /// site's body bytes.
    fn record(
        &self,
        status: StatusCode,
        started: Instant,
        site: &str,
        node: &KeyValue,
    ) -> BoundCounter<u64> {
        let class = match status.as_u16() {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        let instruments = get_or_insert(&self.sites, site, || {
            Arc::new(SiteInstruments {
                name: site.to_string(),
                body_bytes: self
                    .body_bytes
                    .bind(&[self.proxy.clone(), KeyValue::new("site", site.to_string())]),
                requests: RwLock::default(),
                hot_tier: Default::default(),
            })
        });
        let slot = if node.value.as_str() == HOT_TIER {
            &instruments.hot_tier[class]
        } else {
            let by_class = get_or_insert(&instruments.requests, &node.value.as_str(), || {
                Arc::new(Default::default())
            });
            // The slot lives as long as the map entry, which is never removed.
            return self.count_in(&by_class[class], class, &instruments, node, started);
        };
        self.count_in(slot, class, &instruments, node, started)
    }

    fn count_in(
        &self,
        slot: &OnceLock<BoundCounter<u64>>,
        class: usize,
        instruments: &SiteInstruments,
        node: &KeyValue,
        started: Instant,
    ) -> BoundCounter<u64> {
        slot.get_or_init(|| {
            self.requests.bind(&[
                self.proxy.clone(),
                KeyValue::new("status_class", STATUS_CLASSES[class]),
                KeyValue::new("site", instruments.name.clone()),
                node.clone(),
            ])
        })
        .add(1);
        self.duration.record(started.elapsed().as_secs_f64());
        instruments.body_bytes.clone()
    }

    fn retry(&self, outcome: &'static str) {
        self.retries
            .add(1, &[self.proxy.clone(), KeyValue::new("outcome", outcome)]);
    }

    fn fail_open(&self, outcome: &'static str) {
        self.fail_open
            .add(1, &[self.proxy.clone(), KeyValue::new("outcome", outcome)]);
    }
}

/// Who answered a request, for metrics and the access log.
#[derive(Clone)]
pub(crate) enum Upstream {
    None,
    Node(usize),
    Origin,
    /// The hot tier: from a kept copy, or from a fill it collapsed.
    HotTier,
}

/// A response, who answered it, and what its body keeps alive.
pub(crate) struct Upstreamed {
    pub response: Response<ResponseBody>,
    pub upstream: Upstream,
    pub hold: Option<Hold>,
}

impl Upstreamed {
    pub(crate) fn by(response: Response<ResponseBody>, upstream: Upstream) -> Upstreamed {
        Upstreamed {
            response,
            upstream,
            hold: None,
        }
    }
}

impl Proxy {
    /// One request through the proxy, in phases:
    ///
    /// 1. [`route`](Self::route): the site and key, the hot tier, then the
    ///    cache node that owns the key (or the origin);
    /// 2. [`response_phase`](Self::response_phase): what the edge adds to
    ///    and removes from every response, with its metrics and trace;
    /// 3. [`logging_phase`](Self::logging_phase): the access log entry,
    ///    and the body's bytes counted as they go out.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let snapshot = self.routing.load_full();
        let entry = self.access_log.enabled().then(|| Entry::start(&req, &conn));
        let span = trace::Span::server("proxy request", req.headers(), || {
            vec![
                KeyValue::new("http.request.method", req.method().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
            ]
        });
        let (answer, site) = self
            .route(&snapshot, req, conn, span.as_ref(), started)
            .await;
        let Upstreamed {
            response: mut resp,
            upstream,
            hold,
        } = answer;
        let routed = Routed {
            snapshot: &snapshot,
            site,
            upstream,
            started,
        };
        let (sent, trace_id) = self.response_phase(&routed, &mut resp, span);
        self.logging_phase(&routed, resp, hold, entry, trace_id, sent)
    }

    /// The response phase: counts the response and ends its span, adds
    /// `Via`, and removes the fields addressed to the CDN. Returns the
    /// counter of the site's body bytes, and the trace the request was in.
    fn response_phase(
        &self,
        routed: &Routed<'_>,
        resp: &mut Response<ResponseBody>,
        span: Option<trace::Span>,
    ) -> (BoundCounter<u64>, Option<String>) {
        let node_attr = match &routed.upstream {
            Upstream::Node(i) => routed.snapshot.node_attrs[*i].clone(),
            Upstream::Origin => KeyValue::new("node", "origin"),
            Upstream::None => KeyValue::new("node", "none"),
            Upstream::HotTier => KeyValue::new("node", HOT_TIER),
        };
        self.traffic.count(is_hit(resp.headers()));
        let trace_id = span.as_ref().map(trace::Span::trace_id);
        if let Some(span) = span {
            span.status(resp.status().as_u16());
            span.set(node_attr.clone());
            span.end();
        }
        let site = routed.site;
        let sent = self.metrics.record(
            resp.status(),
            routed.started,
            site.map_or("", |s| s.name.as_str()),
            &node_attr,
        );
        append(resp.headers_mut(), header::VIA, via(Version::HTTP_11));
        // Directives addressed to the CDN (RFC 9213) stop at its edge.
        if let Some(site) = site.filter(|s| !s.cache.forward_targeted_fields) {
            for name in &site.cache.targeted_fields {
                if resp.headers().contains_key(name.as_str()) {
                    resp.headers_mut().remove(name.as_str());
                }
            }
        }
        (sent, trace_id)
    }

    /// The logging phase: the access log entry (when the site logs, and
    /// this request is in its sample) is written when the body ends, and
    /// the body's bytes are counted as they go out.
    fn logging_phase(
        &self,
        routed: &Routed<'_>,
        resp: Response<ResponseBody>,
        hold: Option<Hold>,
        entry: Option<Entry>,
        trace_id: Option<String>,
        sent: BoundCounter<u64>,
    ) -> Response<ResponseBody> {
        let site = routed.site;
        let entry = entry
            .filter(|_| {
                site.is_none_or(|s| {
                    s.access_log
                        && (s.access_log_sample >= 1.0 || fastrand::f64() < s.access_log_sample)
                })
            })
            .map(|e| match trace_id {
                Some(id) => e.traced(id),
                None => e,
            })
            .map(|e| {
                let (node, tier) = match routed.upstream {
                    Upstream::Node(i) => (routed.snapshot.ring.nodes()[i].id.clone(), "node"),
                    Upstream::Origin => ("origin".to_string(), "origin"),
                    Upstream::None => (String::new(), ""),
                    Upstream::HotTier => (String::new(), "proxy"),
                };
                e.answered(
                    &resp,
                    site.map(|s| s.name.clone()),
                    node,
                    tier,
                    routed.started,
                )
            });
        let (parts, body) = resp.into_parts();
        // A body whose length is known and that keeps nothing alive (a hot
        // hit's, without an access log) is counted now rather than watched
        // to its end: one box and one layer of polling fewer per response.
        if let (None, None, Some(n)) = (&entry, &hold, body.size_hint().exact()) {
            if n > 0 {
                sent.add(n);
            }
            return Response::from_parts(parts, body);
        }
        let declared = entry.as_ref().and_then(|_| {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        let body = Tracked::new(
            body,
            hold,
            entry.map(|e| (e, self.access_log.clone())),
            sent,
            declared,
        );
        Response::from_parts(parts, body.boxed_unsync())
    }

    /// Answers `req`: the request phase matches its site and key, the hot
    /// tier answers it or fills it, and otherwise the upstream phase sends
    /// it to the cache node that owns the key (or, with none usable, to
    /// the origin). Also returns the site it matched.
    async fn route<'s>(
        self: &Arc<Self>,
        snapshot: &'s Arc<Snapshot>,
        req: Request<RequestBody>,
        conn: ConnInfo,
        span: Option<&trace::Span>,
        started: Instant,
    ) -> (Upstreamed, Option<&'s Site>) {
        let (mut parts, body) = req.into_parts();
        let Some((site, key)) = request_phase(snapshot, &mut parts) else {
            let resp = text(StatusCode::NOT_FOUND, "unknown site\n");
            return (Upstreamed::by(resp, Upstream::None), None);
        };
        // Admitted before the hot tier: a hot hit on a big segment costs
        // the very bandwidth an overloaded proxy is short of. Counted in
        // flight until the response head is ready.
        let _admitted = match &self.admission {
            Some(admission) => {
                let priority = admission.priority(parts.uri.path());
                match admission.overload.admit(priority).await {
                    Ok(admitted) => Some(admitted),
                    Err(why) => {
                        let resp = admission.refusal(priority, why);
                        return (Upstreamed::by(resp, Upstream::None), Some(site.as_ref()));
                    }
                }
            }
            None => None,
        };
        // A GET or HEAD's content has no defined meaning (RFC 9110 §9.3.1)
        // and no part in its cache key: it is not sent on. Such requests
        // all take the light path, so a client that opens streams and never
        // ends them costs no connection to a cache node.
        let body = if (parts.method == Method::GET || parts.method == Method::HEAD)
            && !body.is_end_stream()
        {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            RequestBody::Empty
        } else {
            body
        };
        // Nothing to stream to the node: the hot tier, or the lighter
        // client, can carry it.
        let bodiless = body.is_end_stream();
        let mut bypassed = None;
        // A range of an object the node reads slice by slice goes to the
        // node as asked: a hot fill would ask for the whole object.
        let sliced_range = site.cache.slice.is_some() && parts.headers.contains_key(header::RANGE);
        if let Some(hot) = self.hot.as_ref().filter(|_| {
            bodiless
                && (parts.method == Method::GET || parts.method == Method::HEAD)
                && !sliced_range
        }) {
            match hot.lookup(&parts.method, &parts.headers, key.as_str(), started) {
                Lookup::Hit(resp) => {
                    return (Upstreamed::by(resp, Upstream::HotTier), Some(site.as_ref()))
                }
                Lookup::Fill(lookup) => {
                    prepare_upstream(&mut parts, conn, span);
                    // Boxed: inline, the miss path's state would make every
                    // request's future (hits included) kilobytes larger,
                    // copied on each move before its first poll.
                    let answer =
                        Box::pin(self.hot_miss(hot, snapshot, site, key, lookup, parts)).await;
                    return (answer, Some(site.as_ref()));
                }
                Lookup::Bypass(why) => bypassed = Some((hot, why)),
            }
        }
        prepare_upstream(&mut parts, conn, span);
        let upstream = Box::pin(self.upstream_phase(snapshot, site, &key, parts, body, bypassed));
        (upstream.await, Some(site.as_ref()))
    }

    /// The upstream phase of a request the hot tier did not take: to the
    /// cache node that owns its key. An unsafe request that succeeds
    /// invalidates what the hot tier keeps of its target (RFC 9111 §4.4),
    /// as the node it passes through does.
    async fn upstream_phase(
        &self,
        snapshot: &Snapshot,
        site: &Site,
        key: &CacheKey,
        parts: http::request::Parts,
        body: RequestBody,
        bypassed: Option<(&Arc<HotTier>, &'static str)>,
    ) -> Upstreamed {
        let bodiless = body.is_end_stream();
        let unsafe_request = match &self.hot {
            Some(hot) if !parts.method.is_safe() => Some((hot, target_of(&parts))),
            _ => None,
        };
        let body = body.map_err(Into::into).boxed_unsync();
        let mut answer = self
            .to_node(snapshot, site, key_hash(key), parts, body, bodiless)
            .await;
        if let Some((hot, why)) = bypassed {
            hot.add_status(answer.response.headers_mut(), format_args!("{why}"));
        }
        if let Some((hot, request)) = unsafe_request {
            let status = answer.response.status();
            if status.is_success() || status.is_redirection() {
                hot.tier.invalidate_after_unsafe(
                    &snapshot.sites,
                    site,
                    &request,
                    answer.response.headers(),
                );
            }
        }
        answer
    }

    /// Sends a request to the cache node that owns its key (`hash`) under
    /// the load bound, retrying a GET or HEAD on the next node within the
    /// budget, and fails open to the origin when no node takes it.
    pub(crate) async fn to_node(
        &self,
        snapshot: &Snapshot,
        site: &Site,
        hash: u64,
        parts: http::request::Parts,
        body: ResponseBody,
        bodiless: bool,
    ) -> Upstreamed {
        // GET and HEAD may go to the next node of the ring when the chosen
        // one fails before answering; other methods' bodies cannot be
        // replayed. Unsafe methods still go through the owning cache node,
        // which passes them on and invalidates what they change (RFC 9111 §4.4).
        let retryable = parts.method == Method::GET || parts.method == Method::HEAD;
        // An LL-HLS blocking reload (RFC 8216bis §6.2.5.2) is a long poll:
        // it waits at the playlist's owner without working it. Counted as
        // load, a live audience's reloads would push the owner past its
        // bound and spill everything else it owns (its parts, measured in
        // the LL prefetch bench) to nodes that fill them from it; spilled
        // itself, it would only wait at another node for the same answer.
        let long_poll = fanout_http_cache::hls::is_blocking_reload(parts.uri.query());
        let load_factor = if long_poll {
            f64::INFINITY
        } else {
            snapshot.config.cluster.hashing.load_factor
        };
        let choice = balance::choose(
            &snapshot.ring,
            hash,
            &snapshot.health,
            &snapshot.loads,
            load_factor,
            Instant::now(),
            if retryable { 2 } else { 1 },
        );
        let candidates = choice.nodes;
        // The bound passed the owner over: the node chosen instead fills
        // from it rather than from the origin.
        let spilled_from = choice
            .spilled_from
            .filter(|_| retryable)
            .and_then(|i| HeaderValue::from_str(&snapshot.ring.nodes()[i].id).ok());
        let mut out = Outgoing {
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            parts,
            body: Some(body),
            bodiless,
            retryable,
            // The node waits as long as the origin holds it.
            timeout: snapshot.upstream_timeout
                + if long_poll {
                    fanout_http_cache::hls::MAX_BLOCKING_HOLD
                } else {
                    Duration::ZERO
                },
        };
        snapshot.retries.deposit();
        for (attempt, &index) in candidates.iter().enumerate() {
            if attempt > 0 {
                if !snapshot.retries.try_withdraw(Instant::now()) {
                    self.metrics.retry("budget_exhausted");
                    tracing::warn!(site = %site.name, "retry budget spent; not retrying");
                    break;
                }
                self.metrics.retry("sent");
            }
            match (&spilled_from, attempt) {
                (Some(owner), 0) => {
                    out.parts.headers.insert(internal::FILL_FROM, owner.clone());
                }
                (Some(_), 1) => {
                    out.parts.headers.remove(internal::FILL_FROM);
                }
                _ => {}
            }
            let node = &snapshot.ring.nodes()[index];
            let last = attempt + 1 == candidates.len();
            let load = (!long_poll).then(|| snapshot.loads.start(index));
            match self.attempt(&node.address, &mut out, last).await {
                Attempted::Answered(resp) => {
                    snapshot.health.succeeded(index);
                    let (mut p, body) = resp.into_parts();
                    remove_hop_by_hop(&mut p.headers);
                    return Upstreamed {
                        response: Response::from_parts(p, body),
                        upstream: Upstream::Node(index),
                        hold: load.map(Hold::Load),
                    };
                }
                Attempted::BadTarget => {
                    let resp = text(StatusCode::BAD_REQUEST, "bad request target\n");
                    return Upstreamed::by(resp, Upstream::None);
                }
                // The client's body broke off or was malformed: a 400, and
                // no mark against the node, which did nothing wrong.
                Attempted::Failed(e) if fanout_server::caused_by_client_body(&*e) => {
                    tracing::debug!(node = %node.id, error = %e, "request body failed");
                    let resp = text(StatusCode::BAD_REQUEST, "malformed request body\n");
                    return Upstreamed::by(resp, Upstream::None);
                }
                Attempted::Failed(e) => {
                    let (backoff, ejected) = snapshot.health.failed(index, Instant::now());
                    if ejected {
                        self.metrics
                            .ejections
                            .count(&snapshot.node_attrs[index], "request");
                    }
                    tracing::warn!(node = %node.id, error = %e, backoff = ?backoff, retry = !last, "cache node request failed");
                }
                // Not retried: the node may be waiting on a slow origin, and a
                // second node would only wait for it too.
                Attempted::TimedOut => {
                    tracing::warn!(node = %node.id, timeout = ?out.timeout, "cache node did not answer in time");
                    let resp = text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n");
                    return Upstreamed::by(resp, Upstream::Node(index));
                }
            }
        }
        // No cache node took it. A GET or HEAD (or any request that never
        // reached a node) can still be answered by the origin.
        if candidates.is_empty() || retryable {
            let Outgoing {
                mut parts,
                path_and_query,
                body,
                ..
            } = out;
            parts.headers.remove(internal::FILL_FROM);
            let body = body.unwrap_or_else(empty);
            return self
                .fail_open(
                    snapshot,
                    site,
                    parts.method,
                    &path_and_query,
                    &parts.headers,
                    body,
                )
                .await;
        }
        Upstreamed::by(
            text(StatusCode::BAD_GATEWAY, "bad gateway\n"),
            Upstream::None,
        )
    }

    /// One attempt at a cache node, within the upstream timeout: a call to
    /// the node's handler when it runs in this process, the light client
    /// for a request without a body, and hyper's client (streaming the
    /// body) for the rest.
    async fn attempt(&self, address: &HostPort, out: &mut Outgoing, last: bool) -> Attempted {
        let parts = &mut out.parts;
        let local = if out.bodiless {
            self.in_process.as_ref().and_then(|l| l.find(address))
        } else {
            None
        };
        let sent = if let Some(handler) = local {
            let mut upstream = Request::new(empty());
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = match out.path_and_query.parse::<Uri>() {
                Ok(uri) => uri,
                Err(_) => parts.uri.clone(),
            };
            // Moved, not cloned: an in-process answer is never retried
            // (the handler always answers; a timeout is a 504).
            *upstream.headers_mut() = std::mem::take(&mut parts.headers);
            tokio::time::timeout(out.timeout, handler(upstream))
                .await
                .map(Ok)
        } else if out.bodiless {
            let send = self
                .nodes
                .send(address, &parts.method, &out.path_and_query, &parts.headers);
            tokio::time::timeout(out.timeout, send)
                .await
                .map(|r| r.map(|r| r.map(BodyExt::boxed_unsync)).map_err(Box::from))
        } else {
            let Ok(uri) = format!("http://{address}{}", out.path_and_query).parse::<Uri>() else {
                return Attempted::BadTarget;
            };
            let mut upstream = Request::new(out.body.take().unwrap_or_else(empty));
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.headers_mut() = if last && !out.retryable {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            tokio::time::timeout(out.timeout, self.client.request(upstream))
                .await
                .map(|r| {
                    r.map(|r| r.map(|b| b.map_err(Into::into).boxed_unsync()))
                        .map_err(Box::from)
                })
        };
        let sent: Result<Result<Response<ResponseBody>, BoxError>, _> = sent;
        match sent {
            Ok(Ok(resp)) => Attempted::Answered(resp),
            Ok(Err(e)) => Attempted::Failed(e),
            Err(_) => Attempted::TimedOut,
        }
    }

    async fn fail_open(
        &self,
        snapshot: &Snapshot,
        site: &Site,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: ResponseBody,
    ) -> Upstreamed {
        let refused = |why: &'static str| {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, why);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Upstreamed::by(r, Upstream::None)
        };
        let Some(origins) = &snapshot.origins else {
            self.metrics.fail_open("refused");
            return refused("no cache node available\n");
        };
        let fetched = fanout_server::interim::relaying(|hints| {
            origins.fetch(site, method, path_and_query, headers, body, hints)
        });
        match fetched.await {
            Ok(o) => {
                self.metrics.fail_open("forwarded");
                let (mut p, body) = o.response.into_parts();
                remove_hop_by_hop(&mut p.headers);
                Upstreamed {
                    response: Response::from_parts(p, body.map_err(Into::into).boxed_unsync()),
                    upstream: Upstream::Origin,
                    hold: Some(Hold::Origin(o.permit)),
                }
            }
            Err(FetchError::Busy { .. }) => {
                self.metrics.fail_open("refused");
                refused("no cache node available and the origin is at its limit\n")
            }
            Err(e) if fanout_server::caused_by_client_body(&e) => Upstreamed::by(
                text(StatusCode::BAD_REQUEST, "malformed request body\n"),
                Upstream::None,
            ),
            Err(e) => {
                self.metrics.fail_open("failed");
                tracing::warn!(site = %site.name, error = %e, "failing open to the origin failed");
                let status = match e {
                    FetchError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                };
                Upstreamed::by(text(status, "bad gateway\n"), Upstream::Origin)
            }
        }
    }
}

/// A request on its way to the cache nodes, kept across attempts.
struct Outgoing {
    parts: http::request::Parts,
    path_and_query: String,
    /// Taken by the first attempt that streams it.
    body: Option<ResponseBody>,
    bodiless: bool,
    /// A GET or HEAD, which may be sent again.
    retryable: bool,
    /// How long the node has to answer.
    timeout: Duration,
}

/// How one attempt at a cache node ended.
enum Attempted {
    Answered(Response<ResponseBody>),
    Failed(BoxError),
    TimedOut,
    /// The target could not be sent on (the client's request was bad).
    BadTarget,
}

/// What the phases after routing know of a request.
struct Routed<'s> {
    snapshot: &'s Snapshot,
    site: Option<&'s Site>,
    upstream: Upstream,
    started: Instant,
}

/// The request phase: the site the request is for and its cache key. The
/// request loses the headers only Fanout's own parts may send each other,
/// and a GET or HEAD has its Accept-Encoding normalised as the cache node
/// will, so that the hot tier's Vary keys match the node's. `None` for a
/// request no site serves.
fn request_phase<'s>(
    snapshot: &'s Snapshot,
    parts: &mut http::request::Parts,
) -> Option<(&'s Arc<Site>, CacheKey)> {
    let site = match_site(snapshot, parts)?;
    for name in &internal::ALL {
        if parts.headers.contains_key(name) {
            parts.headers.remove(name);
        }
    }
    if parts.method == Method::GET || parts.method == Method::HEAD {
        fanout_http_cache::vary::normalise_accept_encoding(
            &site.cache.accept_encoding,
            &mut parts.headers,
        );
    }
    let key = CacheKey::new(site, parts.uri.path(), parts.uri.query());
    Some((site, key))
}

/// What the hot tier needs to invalidate after an unsafe request: its
/// target and Host.
fn target_of(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = Request::new(()).into_parts().0;
    request.uri = parts.uri.clone();
    request.headers.insert(
        header::HOST,
        parts
            .headers
            .get(header::HOST)
            .cloned()
            .unwrap_or(HeaderValue::from_static("")),
    );
    request
}

/// The site a request is for. HTTP/2 clients send `:authority` rather than
/// Host; it becomes Host, which cache nodes route by.
fn match_site<'s>(
    snapshot: &'s Snapshot,
    parts: &mut http::request::Parts,
) -> Option<&'s Arc<Site>> {
    if !parts.headers.contains_key(header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, v);
        }
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    snapshot.sites.find(host, parts.uri.path())
}

/// A request as it goes upstream: hop-by-hop fields out, the client named
/// in the forwarding fields, and the trace context.
fn prepare_upstream(parts: &mut http::request::Parts, conn: ConnInfo, span: Option<&trace::Span>) {
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    add_forwarding_headers(headers, &host, parts.version, conn);
    if let Some(span) = span {
        span.inject(headers);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a response body keeps alive while it streams.
#[expect(dead_code, reason = "held for what dropping it releases")]
pub enum Hold {
    /// The cache node's in-flight count, for the load bound.
    Load(balance::InFlight),
    /// A slot among the origin requests this proxy may have open.
    Origin(tokio::sync::OwnedSemaphorePermit),
}

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Tells the cache node and origin who the client is and how it came in:
/// `X-Forwarded-For` and `Forwarded` (RFC 7239) are appended to, since
/// they record a chain; `X-Forwarded-Proto` and `-Host` describe this hop's
/// client-facing side and are replaced, so a client cannot claim https.
fn add_forwarding_headers(headers: &mut HeaderMap, host: &str, version: Version, conn: ConnInfo) {
    let ip = conn.peer.ip().to_canonical();
    let proto = if conn.secure { "https" } else { "http" };
    // The address is formatted once for both fields: this runs per request.
    let ip_text = ip.to_string();
    append(
        headers,
        X_FORWARDED_FOR,
        HeaderValue::from_str(&ip_text).expect("an IP address is a valid header value"),
    );
    let mut forwarded = String::with_capacity(32 + ip_text.len() + host.len());
    forwarded.push_str("for=");
    match ip {
        IpAddr::V4(_) => forwarded.push_str(&ip_text),
        IpAddr::V6(_) => {
            forwarded.push_str("\"[");
            forwarded.push_str(&ip_text);
            forwarded.push_str("]\"");
        }
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        append(headers, FORWARDED, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    append(headers, header::VIA, via(version));
}

/// `Via` names the protocol the message was received with (RFC 9110 §7.6.3).
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_2 => "2 fanout",
        Version::HTTP_10 => "1.0 fanout",
        _ => "1.1 fanout",
    })
}

/// Adds `value` to a list-valued field, as one comma-separated line.
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match headers.entry(name) {
        http::header::Entry::Occupied(mut e) => {
            let old = e.get();
            let mut v = Vec::with_capacity(old.len() + 2 + value.len());
            v.extend_from_slice(old.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(value.as_bytes());
            e.insert(HeaderValue::from_bytes(&v).unwrap_or(value));
        }
        http::header::Entry::Vacant(e) => {
            e.insert(value);
        }
    }
}

/// Whether the nearest cache (the last `Cache-Status` entry) answered from
/// its store.
fn is_hit(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_STATUS)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|entry| entry.split(';').skip(1).any(|p| p.trim() == "hit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: &str, secure: bool) -> ConnInfo {
        ConnInfo {
            peer: peer.parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            secure,
        }
    }

    #[test]
    fn forwarding_headers_extend_the_chain_and_replace_the_proto() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 edge-a"));
        add_forwarding_headers(
            &mut h,
            "live.example.com",
            Version::HTTP_11,
            conn("198.51.100.2:5000", false),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, 198.51.100.2");
        assert_eq!(h[&X_FORWARDED_PROTO], "http", "a client cannot claim https");
        assert_eq!(h[&X_FORWARDED_HOST], "live.example.com");
        assert_eq!(
            h[&FORWARDED],
            "for=198.51.100.2;proto=http;host=\"live.example.com\""
        );
        assert_eq!(h[header::VIA], "1.1 edge-a, 1.1 fanout");
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded_and_tls_is_https() {
        let mut h = HeaderMap::new();
        add_forwarding_headers(
            &mut h,
            "a.example",
            Version::HTTP_2,
            conn("[2001:db8::1]:443", true),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(
            h[&FORWARDED],
            "for=\"[2001:db8::1]\";proto=https;host=\"a.example\""
        );
        assert_eq!(h[header::VIA], "2 fanout");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }
}
