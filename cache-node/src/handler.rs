//! One request through the cache node: find the site, look the key up, and
//! answer from the store, from a fill shared with other requests for the
//! same key, or straight from the origin. [`CacheNode::answer`] reads top
//! to bottom as the request's phases (request, lookup, forward); a miss
//! then joins or leads a fill, waits for its head, and answers from it.

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
use fanout_http_cache::collapse::{Failure, Fill, Head, Role, SharedHead, Via};
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
    /// Prefetch budgets, the ring, what playlists listed.
    pub prefetch: Arc<crate::prefetch::Prefetcher>,
    /// LL-HLS blocking reloads per playlist: its newest stored answer, and
    /// the points at the origin.
    pub reloads: crate::ll_hls::Reloads,
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
    /// Another cache node asks this one, the key's owner, to prefetch it.
    prefetch: bool,
}

impl Internal {
    fn take(headers: &mut HeaderMap) -> Internal {
        if !headers.contains_key(&internal::EDGE)
            && !headers.contains_key(&internal::FILL_FROM)
            && !headers.contains_key(&internal::PREFETCH)
        {
            return Internal::default();
        }
        let prefetch = headers.remove(&internal::PREFETCH).is_some();
        let edge = headers
            .remove(&internal::EDGE)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let fill_from = headers
            .remove(&internal::FILL_FROM)
            .and_then(|v| v.to_str().ok().map(str::to_string));
        Internal {
            edge,
            fill_from,
            prefetch,
        }
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

/// What the lookup phase makes of a request.
// Returned once and taken apart at once, never stored: its size costs a
// move at most, where boxing the larger variant would cost every miss an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Looked {
    /// The store answered it (or `only-if-cached` refused it).
    Answered(Response<ResponseBody>),
    /// It goes forward, for the reason and with the stale copy in `Miss`.
    Forward(request::Parts, Miss),
}

/// A miss's place in the fill for its key.
struct Joined {
    fill: Arc<Fill>,
    role: Role,
}

impl Joined {
    fn outcome(&self) -> Outcome {
        match self.role {
            Role::Leader => Outcome::Miss,
            Role::Follower => Outcome::Collapsed,
        }
    }

    /// The `Cache-Status` note of a request that shared another's fill.
    fn collapsed(&self) -> &'static str {
        match self.role {
            Role::Leader => "",
            Role::Follower => "; collapsed",
        }
    }

    /// The fill's response head, once it has one; a follower's wait is
    /// traced as such.
    async fn wait_for_head(&self, request: &HeaderMap) -> Head {
        let waiting = (self.role == Role::Follower)
            .then(|| {
                trace::Span::from_headers("collapse wait", SpanKind::Internal, request, Vec::new)
            })
            .flatten();
        let head = self.fill.head_passing_hints().await;
        if let Some(waiting) = waiting {
            waiting.end();
        }
        head
    }
}

/// What a slicing site's miss makes of its fill's head.
enum SliceAnswer {
    /// Answered slice by slice.
    Answered(Response<ResponseBody>),
    /// The head is the leader's alone: ask the origin on its own.
    OnItsOwn,
    /// The whole object or an error: answered as any fill's.
    AsAnyFill,
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

    /// A GET or HEAD goes through three phases, in this order:
    ///
    /// 1. [`request_phase`](Self::request_phase): the keys it is stored
    ///    under and what the client's directives allow;
    /// 2. [`lookup_phase`](Self::lookup_phase): the store answers it, or
    ///    says why it must go forward;
    /// 3. [`forward_phase`](Self::forward_phase): straight to the origin,
    ///    or through a fill shared with every request for the key.
    ///
    /// Any other method is passed to the origin.
    async fn answer<B>(
        self: Arc<Self>,
        site: Arc<Site>,
        mut req: Request<B>,
    ) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<fanout_server::BoxError>,
    {
        let asked = self.asked(req.headers_mut());
        // The paths that reach the origin are boxed: inline, their futures
        // made every request's future (hits included) about 9 KiB, copied
        // on each move before its first poll.
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Box::pin(self.pass(&site, req)).await;
        }
        if asked.prefetch && req.method() == Method::GET {
            let (parts, _body) = req.into_parts();
            return Box::pin(self.prefetch_asked(site, parts)).await;
        }
        if site.prefetch.cmcd {
            self.cmcd_hint(&site, &req);
        }
        // Held until the answer's head is out; the fill takes the point
        // off the board sooner, when it stores the playlist.
        let mut _fetching = None;
        if fanout_http_cache::hls::is_blocking_reload(req.uri().query()) {
            // The body stays out of the wait: only what is shared is borrowed.
            let (parts, body) = req.into_parts();
            match Box::pin(self.blocking_reload(&site, &parts)).await {
                crate::ll_hls::Reload::Answered(resp) => return resp,
                crate::ll_hls::Reload::Forward(fetching) => _fetching = fetching,
            }
            req = Request::from_parts(parts, body);
        }
        let (key, wants) = self.request_phase(&site, &mut req);
        let (parts, miss) = match self.lookup_phase(&site, &key, wants, req, &asked) {
            Looked::Answered(resp) => return resp,
            Looked::Forward(parts, miss) => (parts, miss),
        };
        Box::pin(self.forward_phase(site, key, parts, wants, miss, asked)).await
    }

    /// What the asking proxy said beside the request, taken out of it so
    /// that it goes no further.
    fn asked(&self, headers: &mut HeaderMap) -> Internal {
        let mut asked = Internal::take(headers);
        // Whether this node had applied the asking proxy's purges before it
        // looks anything up: read after the lookup, a purge applied in
        // between would have the node vouch for the copy it just removed.
        asked.edge = asked
            .edge
            .filter(|seq| self.purge_seq.load(Ordering::Acquire) >= *seq);
        asked
    }

    /// The request phase: the keys the request is looked up and filled
    /// under (Accept-Encoding normalised first, as the Vary keys expect),
    /// and the client's own Cache-Control directives.
    fn request_phase<B>(&self, site: &Site, req: &mut Request<B>) -> (Keys, RequestDirectives) {
        fanout_http_cache::vary::normalise_accept_encoding(
            &site.cache.accept_encoding,
            req.headers_mut(),
        );
        let primary = CacheKey::new(site, req.uri().path(), req.uri().query());
        let key = Keys {
            lookup: self.tier.vary.lookup_key(primary.as_str(), req.headers()),
            primary: primary.as_str().to_string(),
        };
        (key, RequestDirectives::parse(req.headers()))
    }

    /// The lookup phase: a stored copy answers the request when it is
    /// fresh enough for the client, or stale within what the client or
    /// the origin allows (refreshed in the background under
    /// stale-while-revalidate). Otherwise the request goes forward, with
    /// any stale copy for the fill to revalidate.
    fn lookup_phase<B>(
        self: &Arc<Self>,
        site: &Arc<Site>,
        key: &Keys,
        wants: RequestDirectives,
        req: Request<B>,
        asked: &Internal,
    ) -> Looked {
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
        let method = req.method();
        let mut stale = None;
        if let Some(stored) = found {
            if wants.accepts_fresh(&stored, now) {
                crate::metrics::decided(Outcome::Hit);
                if self.prefetch.claim(&key.lookup) {
                    self.metrics.prefetch_used(&site.name);
                }
                let resp = self.serve_stored(method, req.headers(), &stored, now, "hit");
                return Looked::Answered(self.for_edge(
                    resp,
                    asked.edge,
                    stored.remaining_ttl(now),
                ));
            }
            if wants.accepts_stale(&stored, now) {
                crate::metrics::decided(Outcome::Stale);
                let status = "hit; detail=max-stale";
                return Looked::Answered(self.serve_stored(
                    method,
                    req.headers(),
                    &stored,
                    now,
                    status,
                ));
            }
            if !wants.constrains_freshness() && stored.may_serve_while_revalidating(now) {
                // RFC 5861 §3: this client gets the stale copy at once, and
                // one fill (however many requests see it stale) refreshes it.
                crate::metrics::decided(Outcome::Stale);
                let (parts, _body) = req.into_parts();
                self.revalidate_in_background(site, key, &parts, &stored, asked);
                let status = "hit; detail=stale-while-revalidate";
                return Looked::Answered(self.serve_stored(
                    &parts.method,
                    &parts.headers,
                    &stored,
                    now,
                    status,
                ));
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
            return Looked::Answered(self.with_status(
                text(StatusCode::GATEWAY_TIMEOUT, "not cached\n"),
                // Not forwarded: no `fwd` (RFC 9211 §2.2).
                "detail=only-if-cached",
            ));
        }
        let (parts, _body) = req.into_parts();
        let miss = Miss {
            stale,
            fwd,
            slice: None,
        };
        Looked::Forward(parts, miss)
    }

    /// The forward phase: a request the store could not answer goes to
    /// the origin on its own when it may not share (the client's
    /// `no-store`, a key recently found not storable, `Authorization` on
    /// a slicing site), and otherwise through the fill for its key, or
    /// for the slice it starts in.
    async fn forward_phase(
        self: Arc<Self>,
        site: Arc<Site>,
        key: Keys,
        parts: request::Parts,
        wants: RequestDirectives,
        miss: Miss,
        asked: Internal,
    ) -> Response<ResponseBody> {
        if wants.no_store {
            crate::metrics::decided(Outcome::Pass);
            return self
                .direct(&site, &parts, "fwd=request; detail=no-store")
                .await;
        }
        if self.hit_for_pass.contains_key(&key.primary) {
            crate::metrics::decided(Outcome::HitForPass);
            return self
                .direct(&site, &parts, "fwd=bypass; detail=hit-for-pass")
                .await;
        }
        if let (Some(size), None) = (site.cache.slice, &miss.stale) {
            // A request with `Authorization` may not be answered from
            // slices stored for others, nor share their fills (RFC 9111
            // §3.5): it goes to the origin as asked, its range included.
            if parts.headers.contains_key(header::AUTHORIZATION) {
                crate::metrics::decided(Outcome::Pass);
                return self
                    .direct(&site, &parts, "fwd=request; detail=authorization")
                    .await;
            }
            return self
                .sliced(site, key, parts, size.bytes(), miss.fwd, asked)
                .await;
        }
        self.miss(site, key, parts, miss, asked).await
    }

    /// Tells a proxy that asked ([`Internal::edge`]) how long `resp` stays
    /// fresh here, when it is fresh and this node had applied every purge
    /// the proxy has before the request looked anything up (`asked`
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
        self: &Arc<Self>,
        site: &Arc<Site>,
        key: &Keys,
        parts: &request::Parts,
        stale: &Arc<StoredResponse>,
        asked: &Internal,
    ) {
        let (fill, role) = self.tier.inflight.join_or_lead(&key.lookup);
        if role == Role::Leader {
            let key = Keys {
                primary: key.primary.clone(),
                lookup: key.lookup.clone(),
            };
            let job = fill_job(
                site.clone(),
                key,
                parts,
                Some(stale.clone()),
                fill,
                asked.fill_from.clone(),
                None,
            );
            tokio::spawn(self.clone().run_fill(job));
        }
    }

    pub(crate) fn serve_stored(
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

    /// A miss joins the fill in flight for its key, or leads a new one (a
    /// revalidation when there is a stale copy), waits for the fill's
    /// response head, and answers from it.
    pub(crate) async fn miss(
        self: Arc<Self>,
        site: Arc<Site>,
        key: Keys,
        parts: request::Parts,
        miss: Miss,
        asked: Internal,
    ) -> Response<ResponseBody> {
        let Miss { stale, fwd, slice } = miss;
        let joined = self.join_or_lead(&site, key, &parts, stale, slice.as_ref(), &asked);
        let head = joined.wait_for_head(&parts.headers).await;
        // Another request led this fill; one carrying `Authorization` may
        // use its response only where the origin allowed that (§3.5).
        let shared_headers = match &head {
            Head::Stored(stored, _) => Some(&stored.headers),
            Head::Shared(head) => Some(&head.headers),
            Head::Failed(_) | Head::Private => None,
        };
        if joined.role == Role::Follower
            && shared_headers.is_some_and(|h| forbidden_with_authorization(&parts.headers, h))
        {
            crate::metrics::decided(Outcome::Pass);
            return self
                .direct(&site, &parts, "fwd=request; detail=authorization")
                .await;
        }
        if let Some(sliced) = slice {
            match self.answer_slice_head(&site, &parts, sliced, &joined, fwd, &head) {
                SliceAnswer::Answered(resp) => return resp,
                SliceAnswer::OnItsOwn => {
                    crate::metrics::decided(Outcome::HitForPass);
                    return self
                        .direct(&site, &parts, "fwd=bypass; detail=hit-for-pass")
                        .await;
                }
                SliceAnswer::AsAnyFill => {}
            }
        }
        match head {
            Head::Stored(stored, via) => {
                self.answer_stored_head(&parts, &joined, fwd, &stored, via, &asked)
            }
            Head::Failed(failure) => {
                crate::metrics::decided(Outcome::OriginError);
                self.with_status(
                    failure_response(failure),
                    &format!("fwd={fwd}; detail=origin-error"),
                )
            }
            Head::Private => match self.answer_private_head(&parts, &joined, fwd) {
                Some(resp) => resp,
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
                if let (Role::Follower, Some(vary)) = (joined.role, &head.vary) {
                    if secondary_key(&vary.names, &parts.headers) != vary.secondary {
                        crate::metrics::decided(Outcome::Miss);
                        return self.direct(&site, &parts, "fwd=vary-miss").await;
                    }
                }
                self.answer_shared_head(&parts, &joined, fwd, &head, &asked)
            }
        }
    }

    /// Joins the fill in flight for the key (or the slice), or leads a
    /// new one and starts it.
    fn join_or_lead(
        self: &Arc<Self>,
        site: &Arc<Site>,
        key: Keys,
        parts: &request::Parts,
        stale: Option<Arc<StoredResponse>>,
        slice: Option<&Sliced>,
        asked: &Internal,
    ) -> Joined {
        let fill_key = match slice {
            Some(s) => s.piece_key(),
            None => key.lookup,
        };
        let (fill, role) = self.tier.inflight.join_or_lead(&fill_key);
        if role == Role::Follower && self.prefetch.claim(&fill_key) {
            self.metrics.prefetch_used(&site.name);
        }
        if role == Role::Leader {
            let fill_keys = Keys {
                primary: key.primary,
                lookup: fill_key,
            };
            let job = fill_job(
                site.clone(),
                fill_keys,
                parts,
                stale,
                fill.clone(),
                asked.fill_from.clone(),
                slice.map(|s| s.job),
            );
            tokio::spawn(self.clone().run_fill(job));
        }
        Joined { fill, role }
    }

    /// On a slicing site, the fill's head answers the request slice by
    /// slice when it is the first slice of the object it asked for.
    fn answer_slice_head(
        self: &Arc<Self>,
        site: &Arc<Site>,
        parts: &request::Parts,
        sliced: Sliced,
        joined: &Joined,
        fwd: &str,
        head: &Head,
    ) -> SliceAnswer {
        let status = format!("fwd={fwd}{}; detail=slices", joined.collapsed());
        let first = match head {
            Head::Stored(stored, _) if sliced.first_of_object(stored.status, &stored.headers) => {
                FirstPiece::Stored(stored.clone())
            }
            Head::Shared(head) if sliced.first_of_object(head.status, &head.headers) => {
                FirstPiece::Fill(joined.fill.clone(), head.clone())
            }
            // A slice's answer is the leader's alone: not the bytes this
            // request asked for, so it asks on its own.
            Head::Private => return SliceAnswer::OnItsOwn,
            // The whole object, an error: as for any fill.
            _ => return SliceAnswer::AsAnyFill,
        };
        crate::metrics::decided(joined.outcome());
        let resp = self.serve_sliced(parts, site.clone(), sliced, first, &status);
        SliceAnswer::Answered(resp)
    }

    /// The fill revalidated the stale copy, or kept it because the origin
    /// failed (stale-if-error): the request is answered from the store.
    fn answer_stored_head(
        &self,
        parts: &request::Parts,
        joined: &Joined,
        fwd: &str,
        stored: &StoredResponse,
        via: Via,
        asked: &Internal,
    ) -> Response<ResponseBody> {
        let collapsed = joined.collapsed();
        let status = match via {
            Via::Revalidated => {
                crate::metrics::decided(joined.outcome());
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
        let resp = self.serve_stored(&parts.method, &parts.headers, stored, now, &status);
        self.for_edge(resp, asked.edge, stored.remaining_ttl(now))
    }

    /// A response only its leader may take: a follower that took it would
    /// drop it, and send the leader to the origin again. `None` for a
    /// follower, which must ask on its own.
    fn answer_private_head(
        &self,
        parts: &request::Parts,
        joined: &Joined,
        fwd: &str,
    ) -> Option<Response<ResponseBody>> {
        if joined.role != Role::Leader {
            return None;
        }
        let resp = joined.fill.take_private()?;
        crate::metrics::decided(joined.outcome());
        let (p, body) = resp.into_parts();
        let body = if parts.method == Method::HEAD {
            empty()
        } else {
            body
        };
        Some(self.with_status(Response::from_parts(p, body), &format!("fwd={fwd}")))
    }

    /// A shareable response, streamed to every request that joined the
    /// fill as it arrives from the origin.
    fn answer_shared_head(
        &self,
        parts: &request::Parts,
        joined: &Joined,
        fwd: &str,
        head: &SharedHead,
        asked: &Internal,
    ) -> Response<ResponseBody> {
        crate::metrics::decided(joined.outcome());
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
            source: Source::Fill(&joined.fill),
            age_secs: age,
        };
        let resp = respond(&parts.method, &parts.headers, representation);
        let collapsed = joined.collapsed();
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
            Some(lifetime) if !joined.fill.is_purged() => lifetime.saturating_sub(precise_age),
            _ => Duration::ZERO,
        };
        self.for_edge(resp, asked.edge, fresh_for)
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
pub(crate) fn forbidden_with_authorization(request: &HeaderMap, response: &HeaderMap) -> bool {
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
    fill: Arc<Fill>,
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
        prefetch: false,
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
