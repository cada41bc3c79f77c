//! The proxy's hot tier: the objects every viewer wants at once (each
//! rendition's playlist and newest segments), kept in the proxy so their
//! requests are answered without the hop to a cache node.
//!
//! Owns: the lookup of a request in the tier and the answer from a kept
//! copy, the decision whether a cache node's answer may be kept, purges and
//! config changes that reach the tier, and its metrics. The rules are
//! `fanout_http_cache`'s, the same the cache nodes follow; filling the tier
//! (one request to the node per key, streamed to every waiter) is in
//! `hot_fill`.
//!
//! The tier never serves a copy its cache node would not: it keeps only
//! what the node answered as shareable and fresh, for no longer than the
//! node said it stays fresh (`fanout-fresh-ms`, which the node sends only
//! once it has applied every purge this proxy has), and it leaves anything
//! stale, uncertain or private to the node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanout_config::{ClusterConfig, HotTier as HotTierConfig, SiteTable};
use fanout_http_cache::freshness::{
    classify, shareable_with_authorization, Freshness, NotStored, Storability, TtlPolicy,
};
use fanout_http_cache::purge::{PurgeError, Selector};
use fanout_http_cache::request_directives::RequestDirectives;
use fanout_http_cache::respond::from_store;
use fanout_http_cache::store::{Store, StoredResponse};
use fanout_http_cache::Tier;
use fanout_server::ResponseBody;
use http::header::HeaderName;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use opentelemetry::metrics::{BoundCounter, Counter};
use opentelemetry::KeyValue;

pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// How long a key whose answer may not be kept here goes straight to the
/// node, rather than queue its requests behind fills that are not shared.
const PASS_FOR: Duration = Duration::from_secs(10);

pub struct HotTier {
    pub tier: Tier,
    /// This cache's name in `Cache-Status` (`fanout-<proxy id>`).
    name: String,
    /// `<name>; hit; ttl=`, the start of every hit's entry.
    hit_prefix: Vec<u8>,
    max_object_size: u64,
    /// Keys whose last answer from the node was not shareable.
    pass: moka::sync::Cache<String, (), foldhash::fast::RandomState>,
    /// The last control-plane purge applied to the tier.
    purge_seq: AtomicU64,
    pub metrics: HotMetrics,
}

/// What the tier does with a request.
pub enum Lookup {
    /// Answered from a kept copy.
    Hit(Response<ResponseBody>),
    /// Not kept (or no longer fresh): fill it, collapsed, under this key.
    Fill(String),
    /// Not for the tier: the request goes to its node as it is, and the
    /// tier's `Cache-Status` entry says why.
    Bypass(&'static str),
}

impl HotTier {
    /// The tier of the proxy `id`, or `None` when its capacity is 0.
    pub fn new(id: &str, config: &HotTierConfig) -> Option<Arc<HotTier>> {
        if !config.enabled() {
            return None;
        }
        let store = Store::fresh_only(config.capacity.bytes());
        Some(Arc::new(HotTier {
            metrics: HotMetrics::new(id, &store),
            tier: Tier::new(store),
            name: format!("fanout-{id}"),
            hit_prefix: format!("fanout-{id}; hit; ttl=").into_bytes(),
            max_object_size: config.max_object_size.bytes().min(config.capacity.bytes()),
            pass: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PASS_FOR)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            purge_seq: AtomicU64::new(0),
        }))
    }

    /// Looks up a GET or HEAD for the URL whose primary key is `primary`.
    pub fn lookup(
        &self,
        method: &Method,
        headers: &HeaderMap,
        primary: &str,
        now: Instant,
    ) -> Lookup {
        let variant = self.tier.vary.variant_key(primary, headers);
        let wants = RequestDirectives::parse(headers);
        if let Some(kept) = self.tier.store.get(variant.as_deref().unwrap_or(primary)) {
            // RFC 9111 §3.5, as at the node: a copy the origin did not make
            // shareable with requests carrying `Authorization` is not theirs.
            let authorized = headers.contains_key(header::AUTHORIZATION)
                && !shareable_with_authorization(&kept.headers);
            if !authorized && wants.accepts_fresh(&kept, now) {
                self.metrics.count(Outcome::Hit);
                return Lookup::Hit(self.serve(method, headers, &kept, now));
            }
            if authorized || kept.is_fresh(now) {
                // Fresh, but not for this request: the node decides.
                self.metrics.count(Outcome::Bypass);
                return Lookup::Bypass("fwd=request");
            }
        }
        if wants.only_if_cached || wants.no_store {
            self.metrics.count(Outcome::Bypass);
            return Lookup::Bypass("fwd=request");
        }
        if self.pass.contains_key(primary) {
            self.metrics.count(Outcome::Bypass);
            return Lookup::Bypass("fwd=bypass");
        }
        Lookup::Fill(variant.unwrap_or_else(|| primary.to_string()))
    }

    /// A kept copy as this request gets it: conditionals, ranges, HEAD and
    /// `Age` applied as the node would, and this tier's `Cache-Status`.
    fn serve(
        &self,
        method: &Method,
        request: &HeaderMap,
        kept: &StoredResponse,
        now: Instant,
    ) -> Response<ResponseBody> {
        let (mut resp, ttl) = from_store(method, request, kept, now);
        if method != Method::HEAD && resp.status().is_success() {
            self.metrics.served(kept.body.len());
        }
        // Built from a prefix made once: this runs on every hit.
        let mut value = bytes::BytesMut::with_capacity(self.hit_prefix.len() + 20);
        value.extend_from_slice(&self.hit_prefix);
        value.extend_from_slice(itoa::Buffer::new().format(ttl).as_bytes());
        if let Ok(v) = HeaderValue::from_maybe_shared(value.freeze()) {
            resp.headers_mut().append(CACHE_STATUS, v);
        }
        resp
    }

    /// Adds this tier's entry to `Cache-Status`, after the cache node's: RFC
    /// 9211 §2 lists caches from the origin's side to the client's.
    pub fn add_status(&self, headers: &mut HeaderMap, status: std::fmt::Arguments<'_>) {
        use std::fmt::Write;
        let mut value = String::with_capacity(self.name.len() + 32);
        value.push_str(&self.name);
        value.push_str("; ");
        let _ = value.write_fmt(status);
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.append(CACHE_STATUS, v);
        }
    }

    /// The value of `fanout-edge` on requests to cache nodes.
    pub fn edge(&self) -> HeaderValue {
        HeaderValue::from(self.purge_seq.load(Ordering::Acquire))
    }

    /// Marks `primary` as not for this tier for a while.
    pub fn pass(&self, primary: &str) {
        self.pass.insert(primary.to_string(), ());
    }

    /// What may become of the node's answer to a fill: `request` is what
    /// the fill sent, `node_fresh_for` what the node said of its freshness.
    pub fn keepable(
        &self,
        ttl: TtlPolicy,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        node_fresh_for: Option<Duration>,
    ) -> Keep {
        if status == StatusCode::PARTIAL_CONTENT {
            return Keep::Leader;
        }
        let freshness = match classify(&Method::GET, request, status, response, ttl) {
            Storability::Store(f) => f,
            // Stored nowhere (an error, no freshness): the waiters share it
            // as the node's would, and nothing is kept.
            Storability::Transient => return Keep::Share,
            // Private to this request's credentials only: no pass mark, the
            // next anonymous request's answer may well be shared.
            Storability::Private(NotStored::Authorization) => return Keep::Private { pass: false },
            Storability::Private(_) => return Keep::Private { pass: true },
        };
        // `no-cache` (stored at the node, validated there on every use):
        // the waiters share this validation's answer; nothing is kept.
        if freshness.lifetime.is_zero() {
            return Keep::Share;
        }
        let too_large = response
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_object_size);
        if too_large {
            return Keep::TooLarge;
        }
        match node_fresh_for {
            Some(d) if !d.is_zero() => Keep::For(freshness, d),
            // The node did not vouch for it: stale there, or the node has
            // not applied every purge this proxy has. It goes to the
            // request that asked, and to no one who came later.
            _ => Keep::Leader,
        }
    }

    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    /// Applies a purge to the tier.
    pub fn purge(
        &self,
        sites: &SiteTable,
        selector: &Selector,
        soft: bool,
    ) -> Result<usize, PurgeError> {
        // A soft purge at the node keeps a stale copy to revalidate; the
        // tier keeps nothing stale, so soft or hard, it removes.
        let _ = soft;
        self.tier.purge(sites, selector, false)
    }

    /// Records the sequence of a control-plane state, before its purges
    /// are applied: from then on the tier asks nodes for answers that
    /// reflect them (see `control::apply_purges` for why first).
    pub fn purged_through(&self, seq: u64) {
        self.purge_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Empties the entries of every site whose cache policy changed or that
    /// is gone: their keys or lifetimes no longer mean what they meant.
    pub fn config_changed(&self, old: &ClusterConfig, new: &ClusterConfig) {
        for site in &old.sites {
            let same = new
                .sites
                .iter()
                .any(|s| s.name == site.name && s.cache == site.cache);
            if !same {
                let n = self.tier.remove_prefix(&format!("{}:", site.name));
                tracing::info!(site = %site.name, entries = n, "site's cache policy changed; its hot-tier entries removed");
            }
        }
    }

    /// Builds the stored form of a kept answer. `initial_age` is its age
    /// on arrival, `fresh_for` how much longer it stays fresh (the lesser
    /// of what the node said and what its own fields say).
    pub fn kept(
        status: StatusCode,
        headers: HeaderMap,
        body: bytes::Bytes,
        stored_at: Instant,
        initial_age: Duration,
        fresh_for: Duration,
    ) -> StoredResponse {
        StoredResponse {
            status,
            headers,
            body,
            stored_at,
            initial_age,
            // No stale use here at all: stale copies are the node's to serve.
            freshness: Freshness {
                lifetime: initial_age + fresh_for,
                must_revalidate: true,
                ..Freshness::new(Duration::ZERO)
            },
            stale_on_error: Duration::ZERO,
        }
    }
}

/// What may become of a node's answer to a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Shared with the fill's waiters and kept, at most as long as the
    /// node said.
    For(Freshness, Duration),
    /// Shared with the fill's waiters, kept by no cache (an error, a
    /// response without freshness).
    Share,
    /// Shared with the fill's waiters, but too large to keep here: the
    /// key bypasses the tier for a while.
    TooLarge,
    /// The requester's alone: storable, but the node did not say it is
    /// fresh (or it is partial).
    Leader,
    /// The requester's alone, shareable with no one; with `pass`, the key
    /// bypasses the tier for a while.
    Private { pass: bool },
}

/// How the tier answered.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Hit,
    /// Led a fill.
    Miss,
    /// Joined a fill in flight.
    Collapsed,
    /// Went to the node without the tier.
    Bypass,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Bypass,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Bypass => "bypass",
        }
    }
}

/// `fanout_proxy_hot_tier_*`: requests by outcome, bytes served from the
/// tier, and (observed when scraped) its size, entries and evictions.
pub struct HotMetrics {
    requests: [BoundCounter<u64>; 4],
    served: BoundCounter<u64>,
}

impl HotMetrics {
    fn new(proxy: &str, store: &Store) -> HotMetrics {
        let meter = opentelemetry::global::meter("fanout-proxy");
        let proxy = KeyValue::new("proxy", proxy.to_string());
        let requests: Counter<u64> = meter
            .u64_counter("fanout_proxy_hot_tier_requests")
            .with_description("GET and HEAD requests by what the hot tier did: hit, miss (led a fill from a cache node), collapsed (joined one), bypass (sent to the node without it)")
            .build();
        let served: Counter<u64> = meter
            .u64_counter("fanout_proxy_hot_tier_served")
            .with_description("Body bytes answered from the hot tier")
            .with_unit("By")
            .build();
        let attrs = [proxy.clone()];
        let s = store.clone();
        meter
            .u64_observable_gauge("fanout_proxy_hot_tier_size")
            .with_description("Bytes the hot tier holds, as weighed against its capacity")
            .with_unit("By")
            .with_callback(move |o| o.observe(s.weighted_size(), &attrs))
            .build();
        let attrs = [proxy.clone()];
        let s = store.clone();
        meter
            .u64_observable_gauge("fanout_proxy_hot_tier_entries")
            .with_description("Responses the hot tier holds")
            .with_callback(move |o| o.observe(s.entry_count(), &attrs))
            .build();
        let attrs = [proxy.clone()];
        let s = store.clone();
        meter
            .u64_observable_counter("fanout_proxy_hot_tier_evictions")
            .with_description("Hot-tier entries evicted to make room (not expired or purged)")
            .with_callback(move |o| o.observe(s.evictions(), &attrs))
            .build();
        HotMetrics {
            requests: Outcome::ALL
                .map(|o| requests.bind(&[proxy.clone(), KeyValue::new("outcome", o.as_str())])),
            served: served.bind(std::slice::from_ref(&proxy)),
        }
    }

    pub fn count(&self, outcome: Outcome) {
        self.requests[outcome as usize].add(1);
    }

    fn served(&self, bytes: usize) {
        self.served.add(bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn tier(capacity: u64, max_object: u64) -> Arc<HotTier> {
        HotTier::new(
            "p1",
            &HotTierConfig {
                capacity: fanout_config::Size(capacity),
                max_object_size: fanout_config::Size(max_object),
            },
        )
        .expect("a tier with room")
    }

    const TTL: TtlPolicy = TtlPolicy {
        default_ttl: Duration::from_secs(10),
        override_ttl: None,
        targeted: &[],
    };

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn keep(
        request: &HeaderMap,
        status: u16,
        response: &[(&'static str, &'static str)],
        node: Option<u64>,
    ) -> Keep {
        tier(1 << 20, 4096).keepable(
            TTL,
            request,
            StatusCode::from_u16(status).unwrap(),
            &headers(response),
            node.map(Duration::from_millis),
        )
    }

    #[test]
    fn only_what_the_node_vouches_for_and_would_share_is_kept() {
        let none = HeaderMap::new();
        let fresh = [("cache-control", "public, max-age=60")];
        assert!(
            matches!(keep(&none, 200, &fresh, Some(5000)), Keep::For(_, d) if d == Duration::from_secs(5))
        );
        // The node did not say it is fresh: stale there, or behind on purges.
        assert_eq!(keep(&none, 200, &fresh, None), Keep::Leader);
        assert_eq!(keep(&none, 200, &fresh, Some(0)), Keep::Leader);
        assert_eq!(keep(&none, 206, &fresh, Some(5000)), Keep::Leader);
        // Never: private, no-store, Set-Cookie, Vary: *.
        for never in [
            &[("cache-control", "private, max-age=60")][..],
            &[("cache-control", "no-store")],
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            &[("cache-control", "max-age=60"), ("vary", "*")],
        ] {
            assert_eq!(
                keep(&none, 200, never, Some(5000)),
                Keep::Private { pass: true },
                "{never:?}"
            );
        }
        // Private to this request's credentials: no pass for the key.
        let authorized = headers(&[("authorization", "Bearer x")]);
        assert_eq!(
            keep(
                &authorized,
                200,
                &[("cache-control", "max-age=60")],
                Some(5000)
            ),
            Keep::Private { pass: false }
        );
        assert!(matches!(
            keep(
                &authorized,
                200,
                &[("cache-control", "public, max-age=60")],
                Some(5000)
            ),
            Keep::For(..)
        ));
        // Errors and responses without freshness: shared with the waiters, kept by no one.
        assert_eq!(keep(&none, 503, &[], Some(5000)), Keep::Share);
        assert_eq!(
            keep(&none, 200, &[("cache-control", "no-cache")], Some(5000)),
            Keep::Share
        );
        assert_eq!(
            keep(
                &none,
                200,
                &[("cache-control", "max-age=60"), ("content-length", "4097")],
                Some(5000)
            ),
            Keep::TooLarge
        );
    }

    #[test]
    fn a_kept_copy_answers_until_its_freshness_ends_and_only_fresh() {
        let hot = tier(1 << 20, 1 << 20);
        let now = Instant::now();
        let kept = HotTier::kept(
            StatusCode::OK,
            headers(&[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("content-length", "5"),
            ]),
            Bytes::from_static(b"hello"),
            now,
            Duration::from_secs(3),
            Duration::from_secs(2),
        );
        hot.tier.store.insert("s:/a".into(), Arc::new(kept));
        let get = |headers: &HeaderMap, at: Instant| match hot.lookup(
            &Method::GET,
            headers,
            "s:/a",
            at,
        ) {
            Lookup::Hit(r) => Ok(r),
            Lookup::Fill(_) => Err("fill"),
            Lookup::Bypass(why) => Err(why),
        };
        let r = get(&HeaderMap::new(), now + Duration::from_millis(1500)).unwrap();
        assert_eq!(r.headers()["age"], "4");
        assert_eq!(r.headers()["cache-status"], "fanout-p1; hit; ttl=1");
        let r = get(&headers(&[("if-none-match", "\"v1\"")]), now).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        // The client wants it younger than it is: the node decides.
        assert_eq!(
            get(&headers(&[("cache-control", "max-age=2")]), now).unwrap_err(),
            "fwd=request"
        );
        // A stale copy is never served here, whatever the client allows.
        let later = now + Duration::from_millis(2100);
        assert!(get(&headers(&[("cache-control", "max-stale=60")]), later).is_err());
        assert!(get(&HeaderMap::new(), later).is_err());
    }
}
