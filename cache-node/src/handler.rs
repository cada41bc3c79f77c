//! One request through the cache node: find the site, look the key up, and
//! answer from the store, from a fill shared with other requests for the
//! same key, or straight from the origin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use fanout_http_cache::internal;
use fanout_http_cache::Tier;

use fanout_config::{CacheKey, Site, SiteTable};
use fanout_server::{empty, remove_hop_by_hop, text, trace, ResponseBody};
use http::{header, request, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

use crate::fill::{FillJob, SliceJob};
use crate::metrics::{Metrics, Outcome};
use crate::slices::{FirstPiece, Sliced};
use fanout_http_cache::collapse::{Failure, Head, Role, Via};
use fanout_http_cache::request_directives::RequestDirectives;
use fanout_http_cache::respond::{
    fill_request_headers, from_store, respond, Representation, Source,
};
use fanout_http_cache::store::StoredResponse;
use fanout_http_cache::vary::secondary_key;
use fanout_server::origin::{FetchError, OriginResponse, Origins};
use tokio::sync::OwnedSemaphorePermit;

/// How long a key whose response was not storable skips collapsing, so its
/// requests go to the origin in parallel instead of queueing behind fills
/// that would not be shared anyway.
const HIT_FOR_PASS: Duration = Duration::from_secs(10);

pub struct CacheNode {
    /// Names this cache in `Cache-Status` (RFC 9211 §2).
    pub name: String,
    /// This node's id among its peers.
    pub id: String,
    /// Swapped whole when the control plane changes the cluster config;
    /// shared with the purger.
    pub sites: Arc<ArcSwap<SiteTable>>,
    /// The store, Vary index and fills in flight.
    pub tier: Arc<Tier>,
    pub origins: ArcSwap<Origins>,
    pub metrics: Metrics,
    /// Keys recently answered with something not storable.
    pub hit_for_pass: moka::sync::Cache<String, ()>,
    /// The last control-plane purge this node has applied (0 without one).
    pub purge_seq: Arc<AtomicU64>,
    /// The other cache nodes, which spilled keys are filled from.
    pub peers: Arc<crate::peer::Peers>,
    /// Sites whose origin sent nonsensical caching metadata in the last
    /// minute, so that it is logged once a minute rather than per fill.
    pub anomalies_logged: moka::sync::Cache<String, ()>,
}

/// What a proxy asked of this node beside the request itself (the
/// `fanout_http_cache::internal` headers, removed from the request so they
/// go no further).
#[derive(Debug, Default, Clone)]
pub struct Internal {
    /// The purge sequence the asking proxy has applied, when it has a hot
    /// tier that may keep the answer.
    edge: Option<u64>,
    /// The key's owner, to fill from.
    pub(crate) fill_from: Option<String>,
}

impl Internal {
    fn take(headers: &mut HeaderMap) -> Internal {
        if !headers.contains_key(&internal::EDGE) && !headers.contains_key(&internal::FILL_FROM) {
            return Internal::default();
        }
        let edge = headers
            .remove(&internal::EDGE)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let fill_from = headers
            .remove(&internal::FILL_FROM)
            .and_then(|v| v.to_str().ok().map(str::to_string));
        Internal { edge, fill_from }
    }
}

/// What a miss fills: the object, or on a slicing site the slice of it
/// the request starts in; a revalidation of `stale` when there is one.
pub(crate) struct Miss {
    pub stale: Option<Arc<StoredResponse>>,
    /// Why the request goes forward, for `Cache-Status`.
    pub fwd: &'static str,
    pub slice: Option<Sliced>,
}

/// The keys of one request: the primary key (site, path, query) and the
/// key it is looked up under, with its secondary key when the URL varies.
pub struct Keys {
    pub primary: String,
    pub lookup: String,
}

pub fn anomaly_log_marks() -> moka::sync::Cache<String, ()> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(60))
        .build()
}

pub fn hit_for_pass_marks() -> moka::sync::Cache<String, ()> {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(HIT_FOR_PASS)
        .build()
}

/// Where proxies probe a cache node's data listener. `/_fanout/` is
/// reserved: no site's content is served under it.
pub const HEALTH_PATH: &str = "/_fanout/health";

pub(crate) const CACHE_STATUS: header::HeaderName = header::HeaderName::from_static("cache-status");

impl CacheNode {
    /// Answers one request. `B` is hyper's body for requests from the
    /// listener, and the proxy's for requests handed over in-process.
    pub async fn handle<B>(self: Arc<Self>, mut req: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<fanout_server::BoxError>,
    {
        // Proxies' active health probes, on any host.
        if req.uri().path() == HEALTH_PATH {
            return text(StatusCode::OK, "ok\n");
        }
        let Some(span) = trace::Span::server("cache request", req.headers(), || {
            vec![
                KeyValue::new("http.request.method", req.method().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
                KeyValue::new("fanout.node", self.name.to_string()),
            ]
        }) else {
            return self.answer_counted(req).await;
        };
        // What this request sends on (a fill, a pass) continues this span.
        span.inject(req.headers_mut());
        let resp = self.answer_counted(req).await;
        span.status(resp.status().as_u16());
        if let Some(status) = resp
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
        {
            span.set(KeyValue::new(
                "http.response.header.cache_status",
                status.to_string(),
            ));
        }
        span.end();
        resp
    }

    async fn answer_counted<B>(self: Arc<Self>, req: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<fanout_server::BoxError>,
    {
        let started = Instant::now();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or("");
        let Some(site) = self.sites.load().find(host, req.uri().path()).cloned() else {
            let resp = text(StatusCode::NOT_FOUND, "unknown site\n");
            self.metrics
                .answered("", 404, Outcome::UnknownSite, started);
            return resp;
        };
        let metrics = self.clone();
        // Boxed so the layers around it (the outcome scope, this function,
        // the span in `handle`) each hold a pointer, not another copy of it.
        let answer = Box::pin(self.answer(site.clone(), req));
        let (resp, outcome) = metrics.metrics.scope(answer).await;
        metrics
            .metrics
            .answered(&site.name, resp.status().as_u16(), outcome, started);
        resp
    }

    async fn answer<B>(
        self: Arc<Self>,
        site: Arc<Site>,
        mut req: Request<B>,
    ) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<fanout_server::BoxError>,
    {
        let method = req.method().clone();
        let mut asked = Internal::take(req.headers_mut());
        // Whether this node had applied the asking proxy's purges before it
        // looks anything up: read after the lookup, a purge applied in
        // between would have the node vouch for the copy it just removed.
        asked.edge = asked
            .edge
            .filter(|seq| self.purge_seq.load(Ordering::Acquire) >= *seq);
        // The paths that reach the origin are boxed: inline, their futures
        // made every request's future (hits included) about 9 KiB, copied
        // on each move before its first poll.
        if method != Method::GET && method != Method::HEAD {
            return Box::pin(self.pass(&site, req)).await;
        }
        fanout_http_cache::vary::normalise_accept_encoding(
            &site.cache.accept_encoding,
            req.headers_mut(),
        );
        let primary = CacheKey::new(&site, req.uri().path(), req.uri().query());
        let key = Keys {
            lookup: self.tier.vary.lookup_key(primary.as_str(), req.headers()),
            primary: primary.as_str().to_string(),
        };
        let wants = RequestDirectives::parse(req.headers());
        let mut stale = None;
        // Why this request goes forward, for Cache-Status (RFC 9211 §2.2):
        // nothing stored for the URI, or nothing for these request headers
        // when it varies; below, a stored copy too old, or one the
        // client's own directives refused.
        let mut fwd = if key.lookup != key.primary {
            "vary-miss"
        } else {
            "uri-miss"
        };
        let lookup =
            trace::Span::from_headers("cache lookup", SpanKind::Internal, req.headers(), Vec::new);
        // Freshness is judged at the lookup's start.
        let now = Instant::now();
        let mut found = self.tier.store.get(&key.lookup);
        self.metrics.lookup(now.elapsed());
        // RFC 9111 §3.5: a copy stored without `public`, `s-maxage` or
        // `must-revalidate` may not answer a request that carries
        // `Authorization`; it goes to the origin, and the copy stays.
        if found
            .as_ref()
            .is_some_and(|s| forbidden_with_authorization(req.headers(), &s.headers))
        {
            found = None;
            fwd = "request";
        }
        if let Some(lookup) = lookup {
            lookup.set(KeyValue::new("fanout.stored", found.is_some()));
            lookup.end();
        }
        if let Some(stored) = found {
            if wants.accepts_fresh(&stored, now) {
                crate::metrics::decided(Outcome::Hit);
                let resp = self.serve_stored(&method, req.headers(), &stored, now, "hit");
                return self.for_edge(resp, asked.edge, stored.remaining_ttl(now));
            }
            if wants.accepts_stale(&stored, now) {
                crate::metrics::decided(Outcome::Stale);
                return self.serve_stored(
                    &method,
                    req.headers(),
                    &stored,
                    now,
                    "hit; detail=max-stale",
                );
            }
            if !wants.constrains_freshness() && stored.may_serve_while_revalidating(now) {
                // RFC 5861 §3: this client gets the stale copy at once, and
                // one fill (however many requests see it stale) refreshes it.
                crate::metrics::decided(Outcome::Stale);
                let (parts, _body) = req.into_parts();
                self.clone().revalidate_in_background(
                    site,
                    key,
                    &parts,
                    stored.clone(),
                    asked.fill_from,
                );
                return self.serve_stored(
                    &method,
                    &parts.headers,
                    &stored,
                    now,
                    "hit; detail=stale-while-revalidate",
                );
            }
            fwd = if stored.is_fresh(now) {
                "request"
            } else {
                "stale"
            };
            stale = Some(stored);
        }
        if wants.only_if_cached {
            // §5.2.1.7: nothing usable is stored, and the origin is off limits.
            return self.with_status(
                text(StatusCode::GATEWAY_TIMEOUT, "not cached\n"),
                // Not forwarded: no `fwd` (RFC 9211 §2.2).
                "detail=only-if-cached",
            );
        }
        let (parts, _body) = req.into_parts();
        if wants.no_store {
            crate::metrics::decided(Outcome::Pass);
            return Box::pin(self.direct(&site, &parts, "fwd=request; detail=no-store")).await;
        }
        if self.hit_for_pass.contains_key(&key.primary) {
            crate::metrics::decided(Outcome::HitForPass);
            return Box::pin(self.direct(&site, &parts, "fwd=bypass; detail=hit-for-pass")).await;
        }
        if let (Some(size), None) = (site.cache.slice, &stale) {
            // A request with `Authorization` may not be answered from
            // slices stored for others, nor share their fills (RFC 9111
            // §3.5): it goes to the origin as asked, its range included.
            if parts.headers.contains_key(header::AUTHORIZATION) {
                crate::metrics::decided(Outcome::Pass);
                return Box::pin(self.direct(&site, &parts, "fwd=request; detail=authorization"))
                    .await;
            }
            return Box::pin(self.sliced(site, key, parts, size.bytes(), fwd, asked)).await;
        }
        let miss = Miss {
            stale,
            fwd,
            slice: None,
        };
        Box::pin(self.miss(site, key, parts, miss, asked)).await
    }

    /// Tells a proxy that asked ([`Internal::edge`]) how long `resp` stays
    /// fresh here, when it is fresh and this node had applied every purge
    /// the proxy has before the request looked anything up (`answer`
    /// clears `edge` otherwise): only then may the proxy keep a copy.
    fn for_edge(
        &self,
        mut resp: Response<ResponseBody>,
        edge: Option<u64>,
        fresh_for: Duration,
    ) -> Response<ResponseBody> {
        if edge.is_some() && !fresh_for.is_zero() {
            resp.headers_mut().insert(
                &internal::FRESH_MS,
                HeaderValue::from(fresh_for.as_millis() as u64),
            );
        }
        resp
    }

    fn revalidate_in_background(
        self: Arc<Self>,
        site: Arc<Site>,
        key: Keys,
        parts: &request::Parts,
        stale: Arc<StoredResponse>,
        fill_from: Option<String>,
    ) {
        let (fill, role) = self.tier.inflight.join_or_lead(&key.lookup);
        if role == Role::Leader {
            let job = fill_job(site, key, parts, Some(stale), fill, fill_from, None);
            tokio::spawn(self.clone().run_fill(job));
        }
    }

    fn serve_stored(
        &self,
        method: &Method,
        request: &HeaderMap,
        stored: &StoredResponse,
        now: Instant,
        status: &str,
    ) -> Response<ResponseBody> {
        let (resp, ttl) = from_store(method, request, stored, now);
        if method != Method::HEAD && resp.status().is_success() {
            self.metrics.served_from_store(stored.body.len());
        }
        self.with_status_fmt(resp, format_args!("{status}; ttl={ttl}"))
    }

    /// A miss joins the fill in flight for its key, or leads a new one
    /// (a revalidation when there is a stale copy).
    pub(crate) async fn miss(
        self: Arc<Self>,
        site: Arc<Site>,
        key: Keys,
        parts: request::Parts,
        miss: Miss,
        asked: Internal,
    ) -> Response<ResponseBody> {
        let Miss { stale, fwd, slice } = miss;
        let fill_key = match &slice {
            Some(s) => s.piece_key(),
            None => key.lookup.clone(),
        };
        let (fill, role) = self.tier.inflight.join_or_lead(&fill_key);
        if role == Role::Leader {
            let fill_keys = Keys {
                primary: key.primary.clone(),
                lookup: fill_key,
            };
            let job = fill_job(
                site.clone(),
                fill_keys,
                &parts,
                stale,
                fill.clone(),
                asked.fill_from.clone(),
                slice.as_ref().map(|s| s.job),
            );
            tokio::spawn(self.clone().run_fill(job));
        }
        let outcome = if role == Role::Leader {
            Outcome::Miss
        } else {
            Outcome::Collapsed
        };
        let collapsed = if role == Role::Follower {
            "; collapsed"
        } else {
            ""
        };
        let waiting = (role == Role::Follower)
            .then(|| {
                trace::Span::from_headers(
                    "collapse wait",
                    SpanKind::Internal,
                    &parts.headers,
                    Vec::new,
                )
            })
            .flatten();
        let head = fill.head_passing_hints().await;
        if let Some(waiting) = waiting {
            waiting.end();
        }
        // Another request led this fill; one carrying `Authorization` may
        // use its response only where the origin allowed that (§3.5).
        let shared_headers = match &head {
            Head::Stored(stored, _) => Some(&stored.headers),
            Head::Shared(head) => Some(&head.headers),
            Head::Failed(_) | Head::Private => None,
        };
        if role == Role::Follower
            && shared_headers.is_some_and(|h| forbidden_with_authorization(&parts.headers, h))
        {
            crate::metrics::decided(Outcome::Pass);
            return self
                .direct(&site, &parts, "fwd=request; detail=authorization")
                .await;
        }
        if let Some(sliced) = slice {
            let status = format!("fwd={fwd}{collapsed}; detail=slices");
            match &head {
                Head::Stored(stored, _)
                    if sliced.first_of_object(stored.status, &stored.headers) =>
                {
                    crate::metrics::decided(outcome);
                    return self.serve_sliced(
                        &parts,
                        site,
                        sliced,
                        FirstPiece::Stored(stored.clone()),
                        &status,
                    );
                }
                Head::Shared(head) if sliced.first_of_object(head.status, &head.headers) => {
                    crate::metrics::decided(outcome);
                    return self.serve_sliced(
                        &parts,
                        site,
                        sliced,
                        FirstPiece::Fill(fill.clone(), head.clone()),
                        &status,
                    );
                }
                // A slice's answer is the leader's alone: not the bytes this
                // request asked for, so it asks on its own.
                Head::Private => {
                    crate::metrics::decided(Outcome::HitForPass);
                    return self
                        .direct(&site, &parts, "fwd=bypass; detail=hit-for-pass")
                        .await;
                }
                // The whole object, an error: as for any fill.
                _ => {}
            }
        }
        match head {
            Head::Stored(stored, via) => {
                let status = match via {
                    Via::Revalidated => {
                        crate::metrics::decided(outcome);
                        format!("fwd={fwd}; fwd-status=304{collapsed}; stored")
                    }
                    Via::StaleOnError(origin_status) => {
                        crate::metrics::decided(Outcome::Stale);
                        match origin_status {
                            Some(s) => format!(
                                "fwd={fwd}; fwd-status={}{collapsed}; detail=stale-if-error",
                                s.as_u16()
                            ),
                            None => format!("fwd={fwd}{collapsed}; detail=stale-if-error"),
                        }
                    }
                };
                let now = Instant::now();
                let resp = self.serve_stored(&parts.method, &parts.headers, &stored, now, &status);
                self.for_edge(resp, asked.edge, stored.remaining_ttl(now))
            }
            Head::Failed(failure) => {
                crate::metrics::decided(Outcome::OriginError);
                self.with_status(
                    failure_response(failure),
                    &format!("fwd={fwd}; detail=origin-error"),
                )
            }
            // Only the leader may take the private response: a follower that
            // took it would drop it, and send the leader to the origin again.
            Head::Private => match (role == Role::Leader)
                .then(|| fill.take_private())
                .flatten()
            {
                Some(resp) => {
                    crate::metrics::decided(outcome);
                    let (p, body) = resp.into_parts();
                    let body = if parts.method == Method::HEAD {
                        empty()
                    } else {
                        body
                    };
                    self.with_status(Response::from_parts(p, body), &format!("fwd={fwd}"))
                }
                // Not ours to share: ask the origin ourselves, in parallel.
                None => {
                    crate::metrics::decided(Outcome::HitForPass);
                    self.direct(&site, &parts, "fwd=bypass; detail=hit-for-pass")
                        .await
                }
            },
            Head::Shared(head) => {
                // This request joined before anyone knew the response varies;
                // if it differs from the leader's where it matters, the
                // leader's variant is not its to have.
                if let (Role::Follower, Some(vary)) = (role, &head.vary) {
                    if secondary_key(&vary.names, &parts.headers) != vary.secondary {
                        crate::metrics::decided(Outcome::Miss);
                        return self.direct(&site, &parts, "fwd=vary-miss").await;
                    }
                }
                crate::metrics::decided(outcome);
                let precise_age = head.initial_age + head.received_at.elapsed();
                let age = precise_age.as_secs();
                let len = head
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let representation = Representation {
                    status: head.status,
                    headers: &head.headers,
                    len,
                    source: Source::Fill(&fill),
                    age_secs: age,
                };
                let resp = respond(&parts.method, &parts.headers, representation);
                let status = match head.lifetime {
                    Some(lifetime) => format!(
                        "fwd={fwd}{collapsed}; stored; ttl={}",
                        lifetime.as_secs().saturating_sub(age)
                    ),
                    None => format!("fwd={fwd}{collapsed}"),
                };
                let resp = self.with_status(resp, &status);
                // A fill a purge detached stores nothing: no copy at the edge either.
                let fresh_for = match head.lifetime {
                    Some(lifetime) if !fill.is_purged() => lifetime.saturating_sub(precise_age),
                    _ => Duration::ZERO,
                };
                self.for_edge(resp, asked.edge, fresh_for)
            }
        }
    }

    /// Straight to the origin for this request alone (hit-for-pass).
    async fn direct(
        &self,
        site: &Site,
        parts: &request::Parts,
        status: &str,
    ) -> Response<ResponseBody> {
        match self.forward(site, parts, empty()).await {
            Ok(resp) => self.with_status(resp, status),
            // Keep why it went forward (`fwd=bypass`, `fwd=request`...).
            Err(e) => self.origin_failed(site, e, status.split(';').next().unwrap_or("fwd=miss")),
        }
    }

    /// Methods a cache does not answer go to the origin, body and all; a
    /// successful unsafe one invalidates what it may have changed.
    async fn pass<B>(&self, site: &Site, req: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<fanout_server::BoxError>,
    {
        crate::metrics::decided(Outcome::Pass);
        let (parts, body) = req.into_parts();
        match self
            .forward(site, &parts, body.map_err(Into::into).boxed_unsync())
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                if !parts.method.is_safe() && (status.is_success() || status.is_redirection()) {
                    // Only this node's copies: other keys may live on other
                    // nodes, which a purge reaches and this cannot.
                    self.tier.invalidate_after_unsafe(
                        &self.sites.load(),
                        site,
                        &parts,
                        resp.headers(),
                    );
                }
                self.with_status(resp, "fwd=method")
            }
            Err(e) => self.origin_failed(site, e, "fwd=method"),
        }
    }

    /// Sends the request to the origin as it is and streams the answer
    /// back, holding an origin-request slot until the body is done.
    async fn forward(
        &self,
        site: &Site,
        parts: &request::Parts,
        body: ResponseBody,
    ) -> Result<Response<ResponseBody>, FetchError> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        self.metrics.origin_fetch();
        let origins = self.origins.load_full();
        let OriginResponse { response, permit } = fanout_server::interim::relaying(|hints| {
            origins.fetch(
                site,
                parts.method.clone(),
                path_and_query,
                &parts.headers,
                body,
                hints,
            )
        })
        .await?;
        let (mut p, body) = response.into_parts();
        remove_hop_by_hop(&mut p.headers);
        Ok(Response::from_parts(p, hold_until_read(body, permit)))
    }

    fn origin_failed(&self, site: &Site, e: FetchError, fwd: &str) -> Response<ResponseBody> {
        if fanout_server::caused_by_client_body(&e) {
            // The client's body broke off or was malformed: its fault, and
            // nothing to say about the origin.
            tracing::debug!(site = %site.name, error = %e, "request body failed");
            crate::metrics::decided(Outcome::Pass);
            return self.with_status(
                text(StatusCode::BAD_REQUEST, "malformed request body\n"),
                &format!("{fwd}; detail=request-body"),
            );
        }
        tracing::warn!(site = %site.name, error = %e, "origin request failed");
        crate::metrics::decided(Outcome::OriginError);
        self.with_status(
            failure_response(failure_of(&e)),
            &format!("{fwd}; detail=origin-error"),
        )
    }

    fn with_status(
        &self,
        mut resp: Response<ResponseBody>,
        status: &str,
    ) -> Response<ResponseBody> {
        self.set_cache_status(resp.headers_mut(), format_args!("{status}"));
        resp
    }

    /// [`with_status`](Self::with_status) for a status built from parts,
    /// formatted once into the header.
    fn with_status_fmt(
        &self,
        mut resp: Response<ResponseBody>,
        status: std::fmt::Arguments<'_>,
    ) -> Response<ResponseBody> {
        self.set_cache_status(resp.headers_mut(), status);
        resp
    }

    /// Adds this cache's entry to `Cache-Status`, after any entries of
    /// caches nearer the origin (RFC 9211 §2: the list runs from origin to
    /// client).
    fn set_cache_status(&self, headers: &mut HeaderMap, status: std::fmt::Arguments<'_>) {
        let value = format!("{}; {status}", self.name);
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(&CACHE_STATUS, v);
        }
    }
}

/// The body of a response streamed straight from the origin, holding the
/// node's origin-request slot until the body is finished or dropped.
fn hold_until_read(body: Incoming, permit: OwnedSemaphorePermit) -> ResponseBody {
    body.map_frame(move |frame| {
        let _slot = &permit;
        frame
    })
    .map_err(Into::into)
    .boxed_unsync()
}

/// A request with `Authorization` may not be answered with a response the
/// origin did not mark as shareable with such requests (RFC 9111 §3.5).
fn forbidden_with_authorization(request: &HeaderMap, response: &HeaderMap) -> bool {
    request.contains_key(header::AUTHORIZATION)
        && !fanout_http_cache::freshness::shareable_with_authorization(response)
}

fn failure_of(e: &FetchError) -> Failure {
    match e {
        FetchError::Timeout { .. } => Failure::Timeout,
        _ => Failure::Unreachable,
    }
}

fn failure_response(f: Failure) -> Response<ResponseBody> {
    match f {
        Failure::Status(status) => text(status, "origin error\n"),
        Failure::Timeout => text(StatusCode::GATEWAY_TIMEOUT, "origin timed out\n"),
        Failure::Unreachable => text(StatusCode::BAD_GATEWAY, "origin unreachable\n"),
    }
}

/// The fill a request leads.
fn fill_job(
    site: Arc<Site>,
    key: Keys,
    parts: &request::Parts,
    stale: Option<Arc<StoredResponse>>,
    fill: Arc<fanout_http_cache::collapse::Fill>,
    fill_from: Option<String>,
    slice: Option<SliceJob>,
) -> FillJob {
    FillJob {
        site,
        key: key.lookup,
        primary: key.primary,
        path_and_query: origin_form(parts),
        headers: fill_request_headers(&parts.headers),
        stale,
        fill,
        fill_from,
        slice,
    }
}

/// The request's target as a fill sends it on: path and query.
pub(crate) fn origin_form(parts: &request::Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string()
}
