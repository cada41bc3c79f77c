//! LL-HLS blocking playlist reloads (RFC 8216bis §6.2.5.2): a player asks
//! for a media playlist with `_HLS_msn` (and `_HLS_part`), meaning "once
//! it reaches that point". When the playlist this node has stored already
//! reaches it, the request is answered from that copy at once, without a
//! blocking request to the origin; proxies place these requests with the
//! playlist (see `fanout_config::ring::key_hash`) so the node that holds
//! it gets them. Otherwise the request goes on as any other: requests for
//! the same point collapse into one origin request, which the origin
//! holds until it can answer.
//!
//! The origin may hold a blocking reload for up to three target durations
//! (§6.2.5.2): that hold is added to the site's response timeouts for it
//! ([`CacheNode::blocking_hold`]) and kept out of the origin's latency.
//!
//! Not built yet: collapsing requests for earlier points into a fill for
//! a later one (requests for the same point collapse as any others), and
//! `_HLS_skip` delta updates beyond caching them under their own key.

use std::time::{Duration, Instant};

use fanout_config::{CacheKey, Site};
use fanout_http_cache::hls::{self, Point};
use fanout_server::ResponseBody;
use http::{header, Request, Response, StatusCode};

use crate::handler::{forbidden_with_authorization, CacheNode};
use crate::metrics::Outcome;

impl CacheNode {
    /// How long the origin may hold this request before it answers: three
    /// target durations of the playlist (from the stored copy) for an
    /// LL-HLS blocking reload, zero for anything else.
    pub(crate) fn blocking_hold(&self, site: &Site, path_and_query: &str) -> Duration {
        let Some((path, query)) = path_and_query.split_once('?') else {
            return Duration::ZERO;
        };
        if !hls::is_blocking_reload(Some(query)) {
            return Duration::ZERO;
        }
        let base = Point::base_query(query)
            .split('&')
            .filter(|p| !p.starts_with("_HLS_skip="))
            .collect::<Vec<_>>()
            .join("&");
        let primary = CacheKey::new(site, path, (!base.is_empty()).then_some(base.as_str()));
        let target = self.tier.store.get(primary.as_str()).and_then(|stored| {
            let text = std::str::from_utf8(&stored.body).ok()?;
            Some(fanout_http_cache::hls::MediaPlaylist::parse(text).target_duration)
        });
        target.map_or(hls::MAX_BLOCKING_HOLD, |t| 3 * t)
    }

    /// The stored playlist, when a blocking reload asks for a point it
    /// already reaches; `None` sends the request on its usual way.
    pub(crate) fn reached_already<B>(
        &self,
        site: &Site,
        req: &Request<B>,
    ) -> Option<Response<ResponseBody>> {
        let query = req.uri().query().filter(|q| q.contains("_HLS_msn="))?;
        // The client's own directives (no-cache, max-age...) take the
        // usual path, which honours them.
        if req.headers().contains_key(header::CACHE_CONTROL)
            || req.headers().contains_key(header::PRAGMA)
        {
            return None;
        }
        let point = Point::of_query(query)?;
        let base = Point::base_query(query);
        let path = req.uri().path();
        let primary = CacheKey::new(site, path, (!base.is_empty()).then_some(base.as_str()));
        let lookup = self.tier.vary.lookup_key(primary.as_str(), req.headers());
        let stored = self.tier.store.get(&lookup)?;
        if stored.status != StatusCode::OK
            || forbidden_with_authorization(req.headers(), &stored.headers)
            || !crate::prefetch::is_playlist(path, &stored.headers)
        {
            return None;
        }
        if !point.reached_by(std::str::from_utf8(&stored.body).ok()?) {
            return None;
        }
        crate::metrics::decided(Outcome::Hit);
        Some(self.serve_stored(
            req.method(),
            req.headers(),
            &stored,
            Instant::now(),
            "hit; detail=ll-hls-reached",
        ))
    }
}
