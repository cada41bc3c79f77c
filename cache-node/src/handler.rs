//! One request through the cache node: find the site, look the key up, and
//! answer from the store or from the origin, storing what may be stored.

use std::sync::Arc;
use std::time::Instant;

use fanout_config::{CacheKey, Site, SiteTable};
use fanout_server::{empty, full, text, ResponseBody};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::freshness::{origin_age, storable_lifetime};
use crate::metrics::{Metrics, Outcome};
use crate::origin::{FetchError, Origins};
use crate::store::{Store, StoredResponse};

pub struct CacheNode {
    /// Names this cache in `Cache-Status` (RFC 9211 §2).
    pub name: String,
    pub sites: SiteTable,
    pub store: Store,
    pub origins: Origins,
    pub metrics: Metrics,
}

static CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

/// Request headers that make an origin answer differ from the full object
/// a cache stores; a fill request goes without them.
const CONDITIONAL: [header::HeaderName; 6] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

impl CacheNode {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or("");
        let Some(site) = self.sites.find(host, req.uri().path()).cloned() else {
            self.metrics.request(Outcome::UnknownSite);
            return text(StatusCode::NOT_FOUND, "unknown site\n");
        };
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.pass(&site, req).await;
        }
        let key = CacheKey::new(&site, req.uri().path(), req.uri().query());
        let now = Instant::now();
        if let Some(stored) = self.store.get(key.as_str()) {
            if !stored.remaining_ttl(now).is_zero() {
                self.metrics.request(Outcome::Hit);
                return self.serve_stored(&stored, now, &method, "hit");
            }
        }
        self.miss(&site, key, req).await
    }

    fn serve_stored(
        &self,
        stored: &StoredResponse,
        now: Instant,
        method: &Method,
        status: &str,
    ) -> Response<ResponseBody> {
        let body = if method == Method::HEAD {
            empty()
        } else {
            self.metrics.served_from_store(stored.body.len());
            full(stored.body.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = stored.status;
        let headers = resp.headers_mut();
        headers.clone_from(&stored.headers);
        let (age, ttl) = stored.age_and_ttl_secs(now);
        headers.insert(header::AGE, HeaderValue::from(age));
        self.set_cache_status(headers, &format!("{status}; ttl={ttl}"));
        resp
    }

    async fn miss(
        &self,
        site: &Site,
        key: CacheKey,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let (parts, _body) = req.into_parts();
        let mut fill_headers = parts.headers.clone();
        for h in &CONDITIONAL {
            fill_headers.remove(h);
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        self.metrics.origin_fetch();
        let resp = match self
            .origins
            .fetch(site, Method::GET, path_and_query, &fill_headers, empty())
            .await
        {
            Ok(r) => r,
            Err(e) => return self.origin_failed(site, e),
        };
        let received_at = Instant::now();
        let lifetime = storable_lifetime(
            &Method::GET,
            &parts.headers,
            resp.status(),
            resp.headers(),
            site.cache.default_ttl.get(),
        );
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let max = site.cache.max_object_size.bytes();
        let (mut resp_parts, body) = resp.into_parts();
        fanout_server::remove_hop_by_hop(&mut resp_parts.headers);
        match (lifetime, length) {
            (Ok(lifetime), Some(len)) if len <= max && !lifetime.is_zero() => {
                let body = match Limited::new(body, max as usize).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        tracing::warn!(site = %site.name, key = %key, error = %e, "origin body failed");
                        self.metrics.request(Outcome::OriginError);
                        return self.with_status(
                            text(StatusCode::BAD_GATEWAY, "bad gateway\n"),
                            "fwd=miss; detail=body",
                        );
                    }
                };
                let initial_age = origin_age(&resp_parts.headers);
                resp_parts.headers.remove(header::AGE);
                let stored = Arc::new(StoredResponse {
                    status: resp_parts.status,
                    headers: resp_parts.headers,
                    body,
                    stored_at: received_at,
                    initial_age,
                    lifetime,
                });
                self.store.insert(key.as_str().to_string(), stored.clone());
                self.metrics.request(Outcome::Miss);
                self.serve_stored(&stored, Instant::now(), &parts.method, "fwd=miss; stored")
            }
            _ => {
                // Not storable (or unknown length): stream it through as is.
                self.metrics.request(Outcome::Miss);
                let body = if parts.method == Method::HEAD {
                    empty()
                } else {
                    body.map_err(Into::into).boxed_unsync()
                };
                let resp = Response::from_parts(resp_parts, body);
                self.with_status(resp, "fwd=miss")
            }
        }
    }

    /// Methods a cache does not answer go to the origin, body and all.
    async fn pass(&self, site: &Site, req: Request<Incoming>) -> Response<ResponseBody> {
        self.metrics.request(Outcome::Pass);
        let (parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        self.metrics.origin_fetch();
        match self
            .origins
            .fetch(
                site,
                parts.method.clone(),
                path_and_query,
                &parts.headers,
                body.map_err(Into::into).boxed_unsync(),
            )
            .await
        {
            Ok(resp) => {
                let (mut p, body) = resp.into_parts();
                fanout_server::remove_hop_by_hop(&mut p.headers);
                self.with_status(
                    Response::from_parts(p, body.map_err(Into::into).boxed_unsync()),
                    "fwd=method",
                )
            }
            Err(e) => self.origin_failed(site, e),
        }
    }

    fn origin_failed(&self, site: &Site, e: FetchError) -> Response<ResponseBody> {
        tracing::warn!(site = %site.name, error = %e, "origin request failed");
        self.metrics.request(Outcome::OriginError);
        let resp = match e {
            FetchError::Timeout { .. } => text(StatusCode::GATEWAY_TIMEOUT, "origin timed out\n"),
            _ => text(StatusCode::BAD_GATEWAY, "origin unreachable\n"),
        };
        self.with_status(resp, "fwd=miss; detail=origin-error")
    }

    fn with_status(
        &self,
        mut resp: Response<ResponseBody>,
        status: &str,
    ) -> Response<ResponseBody> {
        self.set_cache_status(resp.headers_mut(), status);
        resp
    }

    /// Adds this cache's entry to `Cache-Status`, after any entries of
    /// caches nearer the origin (RFC 9211 §2: the list runs from origin to
    /// client).
    fn set_cache_status(&self, headers: &mut HeaderMap, status: &str) {
        let value = format!("{}; {status}", self.name);
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(&CACHE_STATUS, v);
        }
    }
}
