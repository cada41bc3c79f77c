//! LL-HLS blocking playlist reloads (RFC 8216bis §6.2.5.2): a player asks
//! for a media playlist with `_HLS_msn` (and `_HLS_part`), meaning "once
//! it reaches that point". Proxies place these requests with the playlist
//! (see `fanout_config::ring::key_hash`), so the node that holds it gets
//! them all, and here:
//!
//! - a request is answered at once when a version this node has stored
//!   already reaches its point: the playlist without directives, or the
//!   newest answer to any blocking reload of the playlist ([`Reloads`]),
//!   so a player a point behind the crowd costs the origin nothing;
//! - a request for a later point than one whose fill is at the origin
//!   waits for that fill and looks again: the answer often reaches it
//!   (the origin answers with what it has when it answers, and the same
//!   point has more than one spelling, `_HLS_msn=5&_HLS_part=4` being
//!   `_HLS_msn=6&_HLS_part=0` when segments have four parts), so each
//!   playlist has one blocking request at the origin at a time, not one
//!   per point asked;
//! - otherwise it goes on as any other request: requests for the same
//!   point collapse into one origin request, which the origin holds until
//!   it can answer.
//!
//! A request never waits behind a fill for a later point than its own:
//! one client asking far ahead would otherwise hold everyone back.
//!
//! The origin may hold a blocking reload for up to three target durations
//! (§6.2.5.2): that hold is added to the site's response timeouts for it
//! ([`CacheNode::blocking_hold`]) and kept out of the origin's latency.
//! `_HLS_skip` delta updates are their own playlist (the skip stays in the
//! key), answered and collapsed the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fanout_config::{CacheKey, Site};
use fanout_http_cache::hls::{self, MediaPlaylist, Point};
use fanout_http_cache::store::StoredResponse;
use fanout_http_cache::vary::storage_key;
use fanout_server::ResponseBody;
use http::{header, request, HeaderName, Response, StatusCode};

use crate::handler::{forbidden_with_authorization, CacheNode};
use crate::metrics::Outcome;

/// Where a point falls in its stream (see [`Point::position`]).
type Position = (u64, u64);

/// The blocking reloads of each LL-HLS playlist on this node, by the
/// playlist's own key (path and query without `_HLS_msn`/`_HLS_part`).
pub struct Reloads {
    playlists: moka::sync::Cache<String, Arc<Board>>,
    next_id: AtomicU64,
}

impl Default for Reloads {
    fn default() -> Self {
        Reloads {
            playlists: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(120))
                .build(),
            next_id: AtomicU64::new(0),
        }
    }
}

#[derive(Default)]
struct Board {
    state: Mutex<State>,
    /// Woken when a fill of this playlist ends or stores a version.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    newest: Option<Newest>,
    /// The points whose fills are at the origin.
    fetching: Vec<Fetch>,
}

struct Fetch {
    at: Position,
    /// The request that put it on the board.
    id: u64,
    /// Its fill has started, and takes it off the board when it ends: the
    /// request's answer can be out before the fill has stored it.
    adopted: bool,
}

/// The newest answer to a blocking reload this node stored.
struct Newest {
    /// Of the point after the newest one it lists.
    reaches: Position,
    /// Where it is stored, and what its key was made from, to tell whether
    /// it is the variant a request would get.
    store_key: String,
    primary: String,
    vary: Vec<HeaderName>,
}

impl State {
    fn lock(board: &Board) -> std::sync::MutexGuard<'_, State> {
        board.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A blocking reload on its way to the origin: unless its fill has
/// started (which then owns the point, [`ReloadFill`]), the point comes
/// off the board when this is dropped (answered from a stale copy, or the
/// request went away), and whoever waits on it looks again.
pub(crate) struct Fetching {
    board: Arc<Board>,
    id: u64,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        State::lock(&self.board)
            .fetching
            .retain(|f| f.id != self.id || f.adopted);
        self.board.changed.notify_waiters();
    }
}

/// A blocking reload's fill: its point is off the board when it ends,
/// stored or not.
pub(crate) struct ReloadFill {
    board: Arc<Board>,
    at: Position,
}

impl Drop for ReloadFill {
    fn drop(&mut self) {
        State::lock(&self.board)
            .fetching
            .retain(|f| f.at != self.at);
        self.board.changed.notify_waiters();
    }
}

pub(crate) enum Reload {
    Answered(Response<ResponseBody>),
    /// Goes on as any request; with the point on the board when it is a
    /// blocking reload that goes to the origin.
    Forward(Option<Fetching>),
}

/// A blocking reload's point and its playlist's own key.
fn playlist_of(site: &Site, path_and_query: &str) -> Option<(Point, String)> {
    let (path, query) = path_and_query.split_once('?')?;
    if !hls::is_blocking_reload(Some(query)) {
        return None;
    }
    let point = Point::of_query(query)?;
    let base = Point::base_query(query);
    let key = CacheKey::new(site, path, (!base.is_empty()).then_some(base.as_str()));
    Some((point, key.as_str().to_string()))
}

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
            Some(MediaPlaylist::parse(text).target_duration)
        });
        target.map_or(hls::MAX_BLOCKING_HOLD, |t| 3 * t)
    }

    /// A blocking reload: answered from a stored version that reaches its
    /// point (at once, or once an earlier point's fill has stored one),
    /// or sent on with its point on the board.
    pub(crate) async fn blocking_reload(&self, site: &Site, req: &request::Parts) -> Reload {
        let Some(pq) = req.uri.path_and_query().map(|p| p.as_str()) else {
            return Reload::Forward(None);
        };
        let Some((point, playlist)) = playlist_of(site, pq) else {
            return Reload::Forward(None);
        };
        // The client's own directives (no-cache, max-age...) take the
        // usual path, which honours them.
        if req.headers.contains_key(header::CACHE_CONTROL)
            || req.headers.contains_key(header::PRAGMA)
        {
            return Reload::Forward(None);
        }
        let board = self
            .reloads
            .playlists
            .get_with(playlist.clone(), Default::default);
        let at = point.position();
        let deadline = tokio::time::Instant::now()
            + self.blocking_hold(site, pq)
            + site.origin.total_timeout.get();
        let mut detail = "ll-hls-reached";
        let mut waited_out = false;
        loop {
            if let Some(stored) = self.reaching(req, point, &playlist, &board) {
                crate::metrics::decided(Outcome::Hit);
                let status = format!("hit; detail={detail}");
                return Reload::Answered(self.serve_stored(
                    &req.method,
                    &req.headers,
                    &stored,
                    Instant::now(),
                    &status,
                ));
            }
            // Registered before the board is read, so a change between
            // the two is not missed.
            let changed = board.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = State::lock(&board);
                let earlier = state.fetching.iter().any(|f| f.at < at);
                if !earlier || waited_out {
                    if state.fetching.iter().any(|f| f.at == at) {
                        // Its fill is under way: the request joins it by key.
                        return Reload::Forward(None);
                    }
                    let id = self.reloads.next_id.fetch_add(1, Ordering::Relaxed);
                    state.fetching.push(Fetch {
                        at,
                        id,
                        adopted: false,
                    });
                    return Reload::Forward(Some(Fetching {
                        board: board.clone(),
                        id,
                    }));
                }
            }
            detail = "ll-hls-after-earlier-fill";
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                waited_out = true;
            }
        }
    }

    /// A stored version of `playlist` that reaches `point` and may answer
    /// this request: the playlist without directives, or the newest answer
    /// to a blocking reload of it.
    fn reaching(
        &self,
        req: &request::Parts,
        point: Point,
        playlist: &str,
        board: &Board,
    ) -> Option<Arc<StoredResponse>> {
        let usable = |stored: &StoredResponse| {
            stored.status == StatusCode::OK
                && !forbidden_with_authorization(&req.headers, &stored.headers)
                && crate::prefetch::is_playlist(req.uri.path(), &stored.headers)
                && std::str::from_utf8(&stored.body).is_ok_and(|t| point.reached_by(t))
        };
        let plain = self.tier.vary.lookup_key(playlist, &req.headers);
        if let Some(stored) = self.tier.store.get(&plain).filter(|s| usable(s)) {
            return Some(stored);
        }
        let newest = {
            let state = State::lock(board);
            let n = state
                .newest
                .as_ref()
                .filter(|n| n.reaches > point.position())?;
            (n.store_key.clone(), n.primary.clone(), n.vary.clone())
        };
        let (store_key, primary, vary) = newest;
        // The variant this request would have got had it asked that point.
        if !vary.is_empty() && storage_key(&primary, &vary, &req.headers) != store_key {
            return None;
        }
        self.tier
            .store
            .get(&store_key)
            .filter(|s| s.is_fresh(Instant::now()) && usable(s))
    }

    /// A fill stored an answer to a blocking reload: it becomes the
    /// playlist's newest when it reaches further, its point comes off the
    /// board, and the requests waiting on it look again.
    pub(crate) fn reload_stored(
        &self,
        site: &Site,
        path_and_query: &str,
        (store_key, primary, vary): (&str, &str, &[HeaderName]),
        stored: &StoredResponse,
    ) {
        let Some((point, playlist)) = playlist_of(site, path_and_query) else {
            return;
        };
        let Some(board) = self.reloads.playlists.get(&playlist) else {
            return;
        };
        let reaches = std::str::from_utf8(&stored.body)
            .ok()
            .and_then(|t| MediaPlaylist::parse(t).next_point());
        {
            let mut state = State::lock(&board);
            if let Some(reaches) = reaches.filter(|_| stored.status == StatusCode::OK) {
                let reaches = reaches.position();
                if state.newest.as_ref().is_none_or(|n| n.reaches <= reaches) {
                    state.newest = Some(Newest {
                        reaches,
                        store_key: store_key.to_string(),
                        primary: primary.to_string(),
                        vary: vary.to_vec(),
                    });
                }
            }
            let at = point.position();
            state.fetching.retain(|f| f.at != at);
        }
        board.changed.notify_waiters();
    }

    /// A fill for a blocking reload starts: it holds the point on the
    /// board until it ends.
    pub(crate) fn reload_fill(&self, site: &Site, path_and_query: &str) -> Option<ReloadFill> {
        let (point, playlist) = playlist_of(site, path_and_query)?;
        let board = self.reloads.playlists.get(&playlist)?;
        let at = point.position();
        for f in State::lock(&board).fetching.iter_mut() {
            if f.at == at {
                f.adopted = true;
            }
        }
        Some(ReloadFill { board, at })
    }
}
