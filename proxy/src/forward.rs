//! One request through the proxy: match the site, place its cache key on the
//! ring, and stream the exchange to and from the owning cache node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fanout_config::{CacheKey, SiteTable};
use fanout_server::{remove_hop_by_hop, text, ConnInfo, ResponseBody};
use http::{header, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;

use crate::ring::{key_hash, Ring};

/// What a request is routed by; swapped whole when the config changes.
pub struct Routing {
    pub sites: SiteTable,
    pub ring: Ring,
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
        let Some(node) = routing.ring.owner(key_hash(&key)) else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no cache node\n");
        };
        let node = &routing.ring.nodes()[node];
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = format!("http://{}{path_and_query}", node.address).parse::<Uri>() else {
            return text(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        let upstream = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
        match tokio::time::timeout(self.upstream_timeout, self.client.request(upstream)).await {
            Ok(Ok(resp)) => {
                let (mut p, body) = resp.into_parts();
                remove_hop_by_hop(&mut p.headers);
                Response::from_parts(p, body.map_err(Into::into).boxed_unsync())
            }
            Ok(Err(e)) => {
                tracing::warn!(node = %node.id, error = %e, "cache node request failed");
                text(StatusCode::BAD_GATEWAY, "bad gateway\n")
            }
            Err(_) => {
                tracing::warn!(node = %node.id, timeout = ?self.upstream_timeout, "cache node did not answer in time");
                text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n")
            }
        }
    }
}
