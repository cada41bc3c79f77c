//! One cache tier's state, as a cache node or a proxy's hot tier holds it:
//! the store, what its URLs vary on, and the fills in flight; and the one
//! way to purge all three together.

use std::time::Instant;

use fanout_config::{CacheKey, Site, SiteTable};
use http::{header, request, HeaderMap};

use crate::collapse::Inflight;
use crate::purge::{PurgeError, Selector};
use crate::store::Store;
use crate::vary::VaryIndex;

pub struct Tier {
    pub store: Store,
    pub vary: VaryIndex,
    pub inflight: Inflight,
    /// Primary keys with slices stored (see [`crate::slice`]), which an
    /// unsafe request's invalidation must look for beside the object.
    pub sliced: moka::sync::Cache<String, (), foldhash::fast::RandomState>,
}

impl Tier {
    /// A tier around `store` (see [`Store::new`] and [`Store::fresh_only`]).
    pub fn new(store: Store) -> Tier {
        Tier {
            store,
            vary: VaryIndex::new(),
            inflight: Inflight::default(),
            sliced: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(std::time::Duration::from_secs(3600))
                .build_with_hasher(Default::default()),
        }
    }

    /// Purges what `selector` names (keys as `sites` derives them): hard
    /// removes, soft marks expired now. Returns how many stored entries it
    /// touched.
    ///
    /// Fills in flight that it names are detached first, so that once this
    /// returns no request can receive, and no fill can store, a body
    /// fetched before the purge (a fill that stores after the walk below
    /// checks its mark and takes its entry out again).
    pub fn purge(
        &self,
        sites: &SiteTable,
        selector: &Selector,
        soft: bool,
    ) -> Result<usize, PurgeError> {
        let targets = selector.targets(sites)?;
        self.inflight
            .detach_matching(|key, headers| (targets.in_flight)(key, headers));
        if let (false, Some(url)) = (soft, &targets.url) {
            // A soft purge keeps the copies (stale) for revalidation.
            self.vary.forget(url);
        }
        Ok(self
            .store
            .purge_matching(|k, v| (targets.stored)(k, v), soft, Instant::now()))
    }

    /// Removes every entry (and fill in flight) whose key starts with
    /// `prefix`: a site's entries, when a change to its cache policy makes
    /// its keys or lifetimes mean something else.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        self.inflight
            .detach_matching(|key, _| key.starts_with(prefix));
        self.store
            .purge_matching(|k, _| k.starts_with(prefix), false, Instant::now())
    }

    /// Removes everything: a part that fell behind the control plane's
    /// purge window cannot know what it missed.
    pub fn flush(&self) -> usize {
        self.inflight.detach_matching(|_, _| true);
        self.store
            .purge_matching(|_, _| true, false, Instant::now())
    }

    /// RFC 9111 §4.4: a non-error response to an unsafe request invalidates
    /// the target URI, and the Location and Content-Location URIs when they
    /// are on the same host, in every cache it passes through.
    pub fn invalidate_after_unsafe(
        &self,
        sites: &SiteTable,
        site: &Site,
        request: &request::Parts,
        response: &HeaderMap,
    ) {
        self.invalidate_url(CacheKey::new(site, request.uri.path(), request.uri.query()).as_str());
        let host = request
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = response
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = uri
                .authority()
                .is_none_or(|a| a.as_str().eq_ignore_ascii_case(host));
            if !same_host || uri.path().is_empty() {
                continue;
            }
            if let Some(target) = sites.find(host, uri.path()) {
                self.invalidate_url(CacheKey::new(target, uri.path(), uri.query()).as_str());
            }
        }
    }

    /// Removes every response stored for the URL whose primary key is
    /// `primary` (each variant, when it varies, and each slice), and
    /// detaches its fills.
    /// Variants are found by walking the store, as a purge does; unsafe
    /// requests to varying URLs are rare next to lookups, which an index of
    /// variants would slow.
    fn invalidate_url(&self, primary: &str) {
        let variants = format!("{primary}{}", crate::vary::SEPARATOR);
        let of_url = |key: &str| key == primary || key.starts_with(&variants);
        self.inflight.detach_matching(|key, _| of_url(key));
        self.store.remove(primary);
        let sliced = self.sliced.contains_key(primary);
        if self.vary.varies(primary) || sliced {
            self.vary.forget(primary);
            self.sliced.invalidate(primary);
            self.store
                .purge_matching(|k, _| of_url(k), false, Instant::now());
        }
    }

    /// Stores `value` under `key` for a fill, unless a purge matched the
    /// fill meanwhile; returns whether it is stored.
    pub fn store_fill(
        &self,
        fill: &crate::collapse::Fill,
        key: String,
        value: std::sync::Arc<crate::store::StoredResponse>,
    ) -> bool {
        if fill.is_purged() {
            return false;
        }
        self.store.insert(key.clone(), value);
        // A purge that marked the fill after the check above may have
        // walked the store before the insert: take the entry out again.
        if fill.is_purged() {
            self.store.remove(&key);
            return false;
        }
        true
    }
}
