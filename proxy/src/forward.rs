//! One request through the proxy: match the site, place its cache key on the
//! ring, and stream the exchange to and from the owning cache node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fanout_config::{CacheKey, SiteTable};
use fanout_server::{empty, remove_hop_by_hop, text, ConnInfo, ResponseBody};
use http::{header, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;

use crate::health::Health;
use crate::ring::{key_hash, Ring};

/// What a request is routed by; swapped whole when the config changes.
pub struct Routing {
    pub sites: SiteTable,
    pub ring: Ring,
    /// Index-aligned with `ring.nodes()`; shared with the health prober.
    pub health: Arc<Health>,
}

pub struct Proxy {
    pub routing: ArcSwap<Routing>,
    pub client: Client<HttpConnector, ResponseBody>,
    /// Longest wait for a cache node's response headers.
    pub upstream_timeout: Duration,
    pub metrics: Metrics,
}

pub struct Metrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    proxy: KeyValue,
}

impl Metrics {
    pub fn new(proxy: &str) -> Metrics {
        let meter = opentelemetry::global::meter("fanout-proxy");
        Metrics {
            requests: meter
                .u64_counter("fanout_proxy_requests")
                .with_description("Requests answered by the proxy, by status class")
                .build(),
            duration: meter
                .f64_histogram("fanout_proxy_response_header_duration")
                .with_description("Time from request to the response headers the proxy sends")
                .with_unit("s")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .build(),
            proxy: KeyValue::new("proxy", proxy.to_string()),
        }
    }

    fn record(&self, status: StatusCode, started: Instant) {
        let class = match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let attrs = [self.proxy.clone(), KeyValue::new("status_class", class)];
        self.requests.add(1, &attrs);
        self.duration
            .record(started.elapsed().as_secs_f64(), &attrs[..1]);
    }
}

impl Proxy {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let resp = self.route(req).await;
        self.metrics.record(resp.status(), started);
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let routing = self.routing.load();
        let (mut parts, body) = req.into_parts();
        // HTTP/2 clients send :authority rather than Host; cache nodes route by Host.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, v);
            }
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let Some(site) = routing.sites.find(host, parts.uri.path()) else {
            return text(StatusCode::NOT_FOUND, "unknown site\n");
        };
        let key = CacheKey::new(site, parts.uri.path(), parts.uri.query());
        let hash = key_hash(&key);
        let now = Instant::now();
        // GET and HEAD may go to the next node of the ring when the owner
        // fails before answering; other methods' bodies cannot be replayed.
        let retryable = parts.method == Method::GET || parts.method == Method::HEAD;
        let attempts = if retryable { 2 } else { 1 };
        let mut candidates: Vec<usize> = routing
            .ring
            .successors(hash)
            .filter(|n| routing.health.is_up(*n, now))
            .take(attempts)
            .collect();
        if candidates.is_empty() {
            // Every node is backing off: trying the owner beats refusing.
            candidates.extend(routing.ring.owner(hash));
        }
        if candidates.is_empty() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no cache node\n");
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        remove_hop_by_hop(&mut parts.headers);
        let mut body = Some(body.map_err(Into::into).boxed_unsync());
        for (attempt, &index) in candidates.iter().enumerate() {
            let node = &routing.ring.nodes()[index];
            let last = attempt + 1 == candidates.len();
            let Ok(uri) = format!("http://{}{path_and_query}", node.address).parse::<Uri>() else {
                return text(StatusCode::BAD_REQUEST, "bad request target\n");
            };
            let mut upstream = Request::new(body.take().unwrap_or_else(empty));
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.headers_mut() = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            match tokio::time::timeout(self.upstream_timeout, self.client.request(upstream)).await {
                Ok(Ok(resp)) => {
                    routing.health.succeeded(index);
                    let (mut p, body) = resp.into_parts();
                    remove_hop_by_hop(&mut p.headers);
                    return Response::from_parts(p, body.map_err(Into::into).boxed_unsync());
                }
                Ok(Err(e)) => {
                    let backoff = routing.health.failed(index, Instant::now());
                    tracing::warn!(node = %node.id, error = %e, backoff = ?backoff, retry = !last, "cache node request failed");
                }
                // Not retried: the node may be waiting on a slow origin, and a
                // second node would only wait for it too.
                Err(_) => {
                    tracing::warn!(node = %node.id, timeout = ?self.upstream_timeout, "cache node did not answer in time");
                    return text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n");
                }
            }
        }
        text(StatusCode::BAD_GATEWAY, "bad gateway\n")
    }
}
