//! Playlist-aware prefetch: a new live segment is in the cache before its
//! first viewer asks for it.
//!
//! When this node fills a live HLS media playlist or DASH MPD from the
//! origin (its owner on the ring, so once per version cluster-wide:
//! viewers' refreshes collapse into that one fill), it compares what the
//! new version lists (segments, `EXT-X-MAP`, LL-HLS parts and preload
//! hints; each representation's segments of an MPD, [`dash`]) with what the
//! previous version listed, and has each new URI filled by the cache node
//! that owns it on the proxies' ring ([`fanout_config::ring`]): here, or
//! by a request to the owner carrying [`internal::PREFETCH`]. The owner
//! fills it as any miss, so viewers who ask meanwhile join that one fill
//! and the origin sees one request per segment.
//!
//! The new playlist version is held back from viewers (up to the site's
//! `prefetch.hold`) until those fills end: a viewer that sees a segment
//! listed finds it stored. Otherwise the viewers whose refresh brought the
//! new version would ask for its segment at the moment its prefetch
//! starts, and wait for the origin all the same.
//!
//! Prefetches never take what viewers need: each site has a budget per
//! node (fills at once, bytes a second), none starts while fewer than a
//! quarter of the node's origin slots are free, and whatever the budget
//! cannot take is dropped and counted, never queued. A playlist seen for
//! the first time has only its last [`FIRST_SIGHT`] URIs (of each
//! representation, for an MPD) prefetched, where players that join start.
//! An MPD lists every representation, watched or not: all of them are
//! prefetched, newest first when `max_per_playlist` cuts.
//!
//! Owns the budgets, the memory of what each playlist listed, and the
//! accounting of prefetched objects (used by a viewer, or wasted: expired
//! unrequested after [`UNCLAIMED_FOR`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use arc_swap::ArcSwap;
use fanout_config::ring::{key_hash, Ring};
use fanout_config::{CacheKey, CacheNodeRef, Site};
use fanout_http_cache::collapse::{Fill, Role};
use fanout_http_cache::{cmcd, dash, hls, internal, preload};
use fanout_server::{empty, ResponseBody};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::fill::FillJob;
use crate::handler::CacheNode;

/// URIs prefetched from a playlist this node has not seen before: a
/// player joining a live stream starts three segments from its end
/// (RFC 8216 §6.3.3).
pub const FIRST_SIGHT: usize = 3;
/// How long a prefetched object waits for its first viewer before it
/// counts as wasted.
pub const UNCLAIMED_FOR: Duration = Duration::from_secs(60);
/// What one playlist's memory holds at most: a playlist listing more
/// (a VOD title, a malicious origin) is remembered by its last URIs only.
const MAX_REMEMBERED: usize = 4096;
/// How long the owning node waits for a prefetch's fill to end before it
/// answers the node that asked (which waits no longer than its hold).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a CMCD `nor` for an object is not acted on again.
const HINTED_FOR: Duration = Duration::from_secs(10);
/// Playlists larger than this are served as they stream, prefetching
/// nothing: a live media playlist is a few KiB.
pub const MAX_PLAYLIST: usize = 1 << 20;

/// What became of one prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A fill started for it.
    Started,
    /// Already stored fresh, or being filled.
    Present,
    /// Not prefetched: the reason is [`Dropped`].
    Dropped(Dropped),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The site's prefetches at once on this node were all taken.
    Concurrency,
    /// The site's bytes a second on this node were spent.
    Bandwidth,
    /// Fewer than a quarter of this node's origin slots were free.
    OriginBusy,
    /// More new URIs in one playlist version than `max_per_playlist`.
    PerPlaylist,
    /// The owning node did not take it (down, or did not answer in time).
    Owner,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Concurrency => "concurrency",
            Dropped::Bandwidth => "bandwidth",
            Dropped::OriginBusy => "origin_busy",
            Dropped::PerPlaylist => "per_playlist",
            Dropped::Owner => "owner",
        }
    }
}

/// The answer an owner gives to a prefetch request, and how the asking
/// node reads it back.
impl Outcome {
    fn status(self) -> StatusCode {
        match self {
            Outcome::Started => StatusCode::ACCEPTED,
            Outcome::Present => StatusCode::OK,
            Outcome::Dropped(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One site's prefetch budget on this node.
struct Budget {
    slots: Arc<Semaphore>,
    /// Bytes a second, if limited.
    bandwidth: Option<u64>,
    /// Bytes fetched that have not drained yet at `bandwidth`, and when
    /// that was last computed.
    level: Mutex<(f64, Instant)>,
    /// The settings it was made from, to notice a config change.
    made_from: (u32, Option<u64>),
}

impl Budget {
    fn new(max_concurrent: u32, bandwidth: Option<u64>) -> Budget {
        Budget {
            slots: Arc::new(Semaphore::new(max_concurrent as usize)),
            bandwidth,
            level: Mutex::new((0.0, Instant::now())),
            made_from: (max_concurrent, bandwidth),
        }
    }

    /// A slot for one prefetch, when the site's budget has one.
    fn take(&self) -> Result<OwnedSemaphorePermit, Dropped> {
        if let Some(rate) = self.bandwidth {
            // More than a second's worth still draining: the bytes of the
            // last second were spent.
            if self.drained(rate, 0) >= rate as f64 {
                return Err(Dropped::Bandwidth);
            }
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Dropped::Concurrency)
    }

    fn spent(&self, bytes: u64) {
        if let Some(rate) = self.bandwidth {
            self.drained(rate, bytes);
        }
    }

    /// The level after draining at `rate` since it was last computed and
    /// adding `bytes`.
    fn drained(&self, rate: u64, bytes: u64) -> f64 {
        let mut level = self.level.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let gone = now.duration_since(level.1).as_secs_f64() * rate as f64;
        level.0 = (level.0 - gone).max(0.0) + bytes as f64;
        level.1 = now;
        level.0
    }
}

pub struct Prefetcher {
    /// The cluster's cache nodes on the proxies' ring, this one among them.
    ring: ArcSwap<Ring>,
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    /// What each playlist (by primary key) listed when last filled.
    listed: moka::sync::Cache<String, Arc<HashSet<String>>>,
    /// Prefetched objects (by key) no viewer has asked for yet.
    unclaimed: moka::sync::Cache<String, ()>,
    /// Entries of `unclaimed`, so a hit checks it only while there are any.
    outstanding: Arc<AtomicUsize>,
    /// Objects a CMCD `nor` or an origin's hint named lately (by site,
    /// host and target), so that a crowd of players naming the same next
    /// segment costs one prefetch request, not one per player.
    hinted: moka::sync::Cache<String, ()>,
}

impl Prefetcher {
    pub fn new(metrics: Arc<dyn Fn(&str) + Send + Sync>) -> Prefetcher {
        let outstanding = Arc::new(AtomicUsize::new(0));
        let gone = outstanding.clone();
        Prefetcher {
            ring: ArcSwap::from_pointee(Ring::new(&[], 1)),
            budgets: Mutex::new(HashMap::new()),
            listed: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            unclaimed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(UNCLAIMED_FOR)
                .eviction_listener(move |key: Arc<String>, (), cause| {
                    gone.fetch_sub(1, Ordering::Relaxed);
                    if cause != moka::notification::RemovalCause::Explicit {
                        // The key names its site first (see `CacheKey`).
                        let site = key.split(':').next().unwrap_or("");
                        metrics(site);
                    }
                })
                .build(),
            outstanding,
            hinted: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(HINTED_FOR)
                .build(),
        }
    }

    /// Whether `target` was not hinted lately (and now is).
    fn first_hint(&self, site: &Site, host: &str, target: &str) -> bool {
        let hinted = format!("{}:{host}{target}", site.name);
        if self.hinted.contains_key(&hinted) {
            return false;
        }
        self.hinted.insert(hinted, ());
        true
    }

    /// The cluster's cache nodes changed (or `vnodes` did): rebuild the
    /// ring the proxies route by.
    pub fn set_members(&self, nodes: &[CacheNodeRef], vnodes: u32) {
        self.ring.store(Arc::new(Ring::new(nodes, vnodes)));
    }

    fn budget(&self, site: &Site) -> Arc<Budget> {
        let settings = (
            site.prefetch.max_concurrent,
            site.prefetch.bandwidth.map(|b| b.bytes()),
        );
        let mut budgets = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = budgets
            .entry(site.name.clone())
            .or_insert_with(|| Arc::new(Budget::new(settings.0, settings.1)));
        if budget.made_from != settings {
            *budget = Arc::new(Budget::new(settings.0, settings.1));
        }
        budget.clone()
    }

    /// A viewer's request found `key` stored or filling: if a prefetch put
    /// it there, the prefetch was used. True the first time only.
    pub fn claim(&self, key: &str) -> bool {
        // A lookup first: it takes no write lock, and most hits are not
        // of prefetched objects.
        self.outstanding.load(Ordering::Relaxed) > 0
            && self.unclaimed.contains_key(key)
            && self.unclaimed.remove(key).is_some()
    }

    /// The new URIs of a manifest version, as paths with queries on the
    /// manifest's host, newest last, and whether this node had not seen
    /// the manifest before; remembers this version's for the next.
    fn new_uris(&self, playlist_key: &str, base: &url::Url, listed: Listed) -> (Vec<String>, bool) {
        let mut seen = HashSet::new();
        // Per rendition (one for an HLS media playlist, one per
        // representation of an MPD), oldest first.
        let groups: Vec<Vec<String>> = listed
            .groups
            .iter()
            .map(|uris| {
                uris.iter()
                    .filter_map(|u| same_host(base, u))
                    .filter(|t| seen.insert(t.clone()))
                    .collect()
            })
            .collect();
        let previous = self.listed.get(playlist_key);
        let mut remembered: Vec<&String> = groups.iter().flatten().collect();
        remembered.drain(..remembered.len().saturating_sub(MAX_REMEMBERED));
        self.listed.insert(
            playlist_key.to_string(),
            Arc::new(remembered.into_iter().cloned().collect()),
        );
        let first_sight = previous.is_none();
        let new: Vec<Vec<String>> = groups
            .into_iter()
            .map(|mut group| match &previous {
                Some(before) => group.into_iter().filter(|u| !before.contains(u)).collect(),
                None => group.split_off(group.len().saturating_sub(FIRST_SIGHT)),
            })
            .collect();
        (newest_last(new), first_sight)
    }
}

/// What one manifest version lists, per rendition, oldest first.
struct Listed {
    groups: Vec<Vec<String>>,
    /// Whether the presentation gains no more segments (`EXT-X-ENDLIST`,
    /// a VOD playlist, a static MPD).
    ended: bool,
}

impl Listed {
    fn of(base: &url::Url, text: &str) -> Option<Listed> {
        if dash::looks_like_mpd(text) {
            let mpd = dash::parse(text, base)?;
            return Some(Listed {
                groups: mpd
                    .representations
                    .into_iter()
                    .map(|uris| uris.into_iter().map(String::from).collect())
                    .collect(),
                ended: !mpd.dynamic,
            });
        }
        let uris = hls::media_uris(text)?;
        Some(Listed {
            groups: vec![uris.into_iter().map(str::to_string).collect()],
            ended: hls::ended(text),
        })
    }
}

/// The renditions' new URIs in one list, newest last across renditions:
/// whatever `max_per_playlist` cuts from the front is each rendition's
/// oldest, not whole renditions.
fn newest_last(mut groups: Vec<Vec<String>>) -> Vec<String> {
    let mut out = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    loop {
        let before = out.len();
        for group in groups.iter_mut().rev() {
            out.extend(group.pop());
        }
        if out.len() == before {
            break;
        }
    }
    out.reverse();
    out
}

/// `uri` resolved against the playlist's URL, as the path and query a
/// request for it carries, when it is on the playlist's own host and is
/// not itself a playlist (which would make prefetch follow a loop).
fn same_host(base: &url::Url, uri: &str) -> Option<String> {
    let target = base.join(uri).ok()?;
    if !matches!(target.scheme(), "http" | "https")
        || target.host_str() != base.host_str()
        || target.port_or_known_default() != base.port_or_known_default()
    {
        return None;
    }
    let path = target.path();
    if path.ends_with(".m3u8") || path.ends_with(".m3u") || path.ends_with(".mpd") {
        return None;
    }
    Some(match target.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    })
}

/// The headers a prefetch is asked with: those a cache key or the origin's
/// choice of representation may depend on.
fn ask_headers(from: &HeaderMap) -> HeaderMap {
    let mut ask = HeaderMap::new();
    for name in [header::HOST, header::ACCEPT_ENCODING] {
        if let Some(v) = from.get(&name) {
            ask.insert(name, v.clone());
        }
    }
    ask
}

/// Whether a stored response is a manifest, an HLS playlist or a DASH
/// MPD (by its media type, or by its extension when the origin sent none
/// it recognises).
pub fn is_playlist(path: &str, headers: &HeaderMap) -> bool {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media_type.as_deref() {
        Some(
            "application/vnd.apple.mpegurl"
            | "application/x-mpegurl"
            | "audio/mpegurl"
            | "application/dash+xml",
        ) => true,
        Some("text/plain" | "application/octet-stream" | "application/xml" | "text/xml") | None => {
            let path = path.split('?').next().unwrap_or(path);
            path.ends_with(".m3u8") || path.ends_with(".m3u") || path.ends_with(".mpd")
        }
        Some(_) => false,
    }
}

/// Whether a fill's response is a playlist to prefetch from and hold: a
/// whole 200 from the origin, to be stored, on a site that prefetches,
/// small enough to read before answering.
pub struct Candidate<'a> {
    pub site: &'a Site,
    pub from_origin: bool,
    /// The fill was itself a prefetch.
    pub prefetch: bool,
    pub status: StatusCode,
    pub whole: bool,
    pub stored: bool,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub length: Option<u64>,
}

impl Candidate<'_> {
    pub fn holds(&self) -> bool {
        self.site.prefetch.playlists
            && self.from_origin
            && !self.prefetch
            && self.status == StatusCode::OK
            && self.whole
            && self.stored
            && self.length.is_none_or(|n| n <= MAX_PLAYLIST as u64)
            && is_playlist(self.path_and_query, self.headers)
    }
}

impl CacheNode {
    /// A new playlist version from the origin: reads it whole, prefetches
    /// what it adds, and waits (up to the site's hold) for those fills to
    /// end; returns the body to store and answer with. Errs when the body
    /// fails or outlasts the fill's deadline. `headers` are the
    /// fill's request headers (Host, and the Accept-Encoding the site
    /// normalised).
    pub(crate) async fn hold_playlist(
        self: &Arc<Self>,
        site: &Arc<Site>,
        (playlist_key, path_and_query): (&str, &str),
        headers: &HeaderMap,
        body: ResponseBody,
        deadline: tokio::time::Instant,
    ) -> Result<ResponseBody, String> {
        let mut body = body;
        let mut whole = bytes::BytesMut::new();
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| "the playlist's body took too long".to_string())?;
            let Some(frame) = frame else { break };
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                whole.extend_from_slice(&data);
                if whole.len() > MAX_PLAYLIST {
                    // No live playlist is this long: served as it comes,
                    // what was read first, and nothing prefetched.
                    use futures_util::StreamExt;
                    let read = futures_util::stream::once(std::future::ready(Ok(
                        hyper::body::Frame::data(whole.freeze()),
                    )));
                    let rest = http_body_util::BodyStream::new(body);
                    return Ok(http_body_util::StreamBody::new(read.chain(rest)).boxed_unsync());
                }
            }
        }
        let bytes = whole.freeze();
        let round = self.playlist_filled(site, playlist_key, path_and_query, headers, &bytes);
        let hold = site.prefetch.hold.get();
        if !round.is_empty() && !hold.is_zero() {
            let started = Instant::now();
            let all = futures_util::future::join_all(round);
            if tokio::time::timeout(hold, all).await.is_err() {
                tracing::debug!(site = %site.name, playlist = %path_and_query, ?hold, "prefetches outlasted the hold; playlist released");
            }
            self.metrics.playlist_held(started.elapsed());
        }
        Ok(fanout_server::full(bytes))
    }

    /// Prefetches what a new playlist version adds; the handles end when
    /// each prefetch's fill has (or its owner gave up waiting on it).
    fn playlist_filled(
        self: &Arc<Self>,
        site: &Arc<Site>,
        playlist_key: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Vec<JoinHandle<()>> {
        let mut round = Vec::new();
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return round;
        };
        let Ok(base) = url::Url::parse(&format!("http://{host}{path_and_query}")) else {
            return round;
        };
        // Text that is not UTF-8 is not a playlist (RFC 8216 §4.1).
        let Ok(text) = std::str::from_utf8(body) else {
            return round;
        };
        // A VOD title lists all it ever will: nothing is new in it, and its
        // last segments (what a first sight of a live playlist prefetches)
        // are where its viewers end, not where they start. Found by the
        // demo's prefetch line: 34 of 74 prefetches were VOD titles' ends.
        let Some(listed) = Listed::of(&base, text).filter(|l| !l.ended) else {
            tracing::debug!(site = %site.name, playlist = %path_and_query, "not a live media playlist or MPD; nothing prefetched");
            return round;
        };
        let (mut new, first_sight) = self.prefetch.new_uris(playlist_key, &base, listed);
        let max = site.prefetch.max_per_playlist as usize;
        if new.len() > max {
            // The newest are the ones viewers will ask for next.
            for _ in 0..new.len() - max {
                self.metrics
                    .prefetch(&site.name, Outcome::Dropped(Dropped::PerPlaylist));
            }
            new.drain(..new.len() - max);
        }
        tracing::debug!(site = %site.name, playlist = %path_and_query, new = new.len(), first_sight, "prefetching what the playlist added");
        // The preload hint names a part that is not out yet: its fill
        // waits at the origin until it is, so the version is not held for
        // it (that would hold LL-HLS players back by a part), but the
        // fill is started, for viewers' requests to join.
        let media = hls::MediaPlaylist::parse(text);
        let hint = media.preload_hint.and_then(|h| same_host(&base, h));
        // In an LL-HLS playlist, a segment whose parts are listed is what
        // LL-HLS players fetch as parts: prefetching it too would be
        // wasted on them (22 % of prefetches in the ll-hls-final
        // scenario) and holding the version for it would hold them back.
        // A player that fetches whole segments collapses on one fill.
        let in_parts: HashSet<String> = media
            .numbered()
            .filter(|(seq, _, _)| media.parts.iter().any(|p| p.msn == *seq))
            .filter_map(|(_, uri, _)| same_host(&base, uri))
            .collect();
        let ask = ask_headers(headers);
        for target in new.into_iter().filter(|t| !in_parts.contains(t)) {
            let hinted = hint.as_deref() == Some(target.as_str());
            let fill = self.prefetch_at_owner(site, host, target, &ask);
            if !hinted {
                round.extend(fill);
            }
        }
        round
    }

    /// A request's CMCD says what the player will ask for next (`nor`):
    /// prefetch it at its owner, once per object however many players
    /// say so.
    pub(crate) fn cmcd_hint<B>(self: &Arc<Self>, site: &Arc<Site>, req: &http::Request<B>) {
        let Some(next) = cmcd::next_request(req.uri().query(), req.headers()) else {
            return;
        };
        // A range of the current object alone (`nrr` without `nor`) is
        // of what this request fetches already.
        let Some(object) = next.object else { return };
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return;
        };
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Ok(base) = url::Url::parse(&format!("http://{host}{here}")) else {
            return;
        };
        let Some(target) = same_host(&base, &object) else {
            tracing::debug!(site = %site.name, nor = %object, "CMCD nor names another host or a playlist; ignored");
            return;
        };
        if !self.prefetch.first_hint(site, host, &target) {
            return;
        }
        let ask = ask_headers(req.headers());
        // Nothing waits on it: the player asks for the object when it needs it.
        drop(self.prefetch_at_owner(site, host, target, &ask));
    }

    /// The origin named what clients will want next on a response it sent
    /// (`Link: <…>; rel=preload`, `CDN-Origin-Assist-Prefetch-Path`):
    /// prefetch it at its owner, as many as `max_per_playlist`.
    pub(crate) fn origin_hints(
        self: &Arc<Self>,
        site: &Arc<Site>,
        request: &HeaderMap,
        path_and_query: &str,
        response: &HeaderMap,
    ) {
        let targets = preload::targets(response);
        if targets.is_empty() {
            return;
        }
        let Some(host) = request.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return;
        };
        let Ok(base) = url::Url::parse(&format!("http://{host}{path_and_query}")) else {
            return;
        };
        let ask = ask_headers(request);
        let max = site.prefetch.max_per_playlist as usize;
        for uri in targets.into_iter().take(max) {
            let Some(target) = same_host(&base, &uri) else {
                tracing::debug!(site = %site.name, uri = %uri, "origin hint names another host or a playlist; ignored");
                continue;
            };
            if self.prefetch.first_hint(site, host, &target) {
                drop(self.prefetch_at_owner(site, host, target, &ask));
            }
        }
    }

    /// Has `target` (a path and query on `host`) filled by the node that
    /// owns it: here, or by asking the owner. The handle ends when the
    /// fill has (as far as this node can tell).
    fn prefetch_at_owner(
        self: &Arc<Self>,
        site: &Arc<Site>,
        host: &str,
        target: String,
        ask: &HeaderMap,
    ) -> Option<JoinHandle<()>> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target.as_str(), None),
        };
        // Another site's path on the same host is that site's to fill.
        if self
            .sites
            .load()
            .find(host, path)
            .is_none_or(|s| s.name != site.name)
        {
            return None;
        }
        let key = CacheKey::new(site, path, query);
        let ring = self.prefetch.ring.load();
        let owner = ring
            .owner(key_hash(&key))
            .map(|i| ring.nodes()[i].clone())
            .filter(|n| n.id != self.id);
        let Some(owner) = owner else {
            let (outcome, fill) = self.prefetch_here(site, key.as_str(), &target, ask);
            self.metrics.prefetch(&site.name, outcome);
            return fill.map(|fill| {
                tokio::spawn(async move {
                    fill.finished().await;
                })
            });
        };
        let (node, site, mut ask) = (self.clone(), site.clone(), ask.clone());
        ask.insert(&internal::PREFETCH, HeaderValue::from_static("1"));
        Some(tokio::spawn(async move {
            let answered = node
                .peers
                .fetch(&owner.id, &owner.address, &target, &ask, ASK_TIMEOUT)
                .await;
            // The owner counts what it did with it; only a prefetch it
            // never took is counted here.
            if let Err(e) = answered {
                tracing::debug!(site = %site.name, owner = %owner.id, error = %e, "prefetch not taken by its owner");
                node.metrics
                    .prefetch(&site.name, Outcome::Dropped(Dropped::Owner));
            }
        }))
    }

    /// Another node asked this one, the owner, to prefetch `req`'s
    /// target: answered once the fill ends, so the asking node can hold
    /// its playlist until then.
    pub(crate) async fn prefetch_asked(
        self: Arc<Self>,
        site: Arc<Site>,
        parts: http::request::Parts,
    ) -> Response<ResponseBody> {
        let p = &site.prefetch;
        let (outcome, fill) = if p.playlists || p.cmcd || p.origin_hints {
            let key = CacheKey::new(&site, parts.uri.path(), parts.uri.query());
            let target = crate::handler::origin_form(&parts);
            self.prefetch_here(&site, key.as_str(), &target, &parts.headers)
        } else {
            // The site turned prefetch off since the asking node looked.
            (Outcome::Present, None)
        };
        self.metrics.prefetch(&site.name, outcome);
        if let Some(fill) = fill {
            let _ = tokio::time::timeout(ASK_TIMEOUT, fill.finished()).await;
        }
        let mut resp = Response::new(empty());
        *resp.status_mut() = outcome.status();
        resp
    }

    /// Starts a fill of `target` here, within the site's budget, unless it
    /// is stored fresh or filling already; with the fill to wait for, when
    /// one runs.
    fn prefetch_here(
        self: &Arc<Self>,
        site: &Arc<Site>,
        primary: &str,
        target: &str,
        headers: &HeaderMap,
    ) -> (Outcome, Option<Arc<Fill>>) {
        // A slicing site stores objects by slice; a whole-object fill here
        // would store what its viewers never look up.
        if site.cache.slice.is_some() || self.hit_for_pass.contains_key(primary) {
            return (Outcome::Present, None);
        }
        let lookup = self.tier.vary.lookup_key(primary, headers);
        let stale = match self.tier.store.get(&lookup) {
            Some(stored) if stored.is_fresh(Instant::now()) => return (Outcome::Present, None),
            other => other,
        };
        if !self.origins.load().has_spare(4) {
            return (Outcome::Dropped(Dropped::OriginBusy), None);
        }
        let budget = self.prefetch.budget(site);
        let permit = match budget.take() {
            Ok(p) => p,
            Err(why) => return (Outcome::Dropped(why), None),
        };
        let (fill, role) = self.tier.inflight.join_or_lead(&lookup);
        if role == Role::Follower {
            return (Outcome::Present, Some(fill));
        }
        self.prefetch.outstanding.fetch_add(1, Ordering::Relaxed);
        self.prefetch.unclaimed.insert(lookup.clone(), ());
        let job = FillJob {
            site: site.clone(),
            key: lookup,
            primary: primary.to_string(),
            path_and_query: target.to_string(),
            headers: headers.clone(),
            stale,
            fill: fill.clone(),
            fill_from: None,
            slice: None,
            prefetch: true,
        };
        let node = self.clone();
        let running = fill.clone();
        tokio::spawn(async move {
            node.clone().run_fill(job).await;
            budget.spent(running.received());
            drop(permit);
        });
        (Outcome::Started, Some(fill))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> url::Url {
        url::Url::parse("http://live.example/live/main/720p/index.m3u8?token=1").unwrap()
    }

    #[test]
    fn uris_resolve_against_the_playlist_and_stay_on_its_host() {
        let b = base();
        assert_eq!(
            same_host(&b, "7.ts").as_deref(),
            Some("/live/main/720p/7.ts")
        );
        assert_eq!(
            same_host(&b, "../1080p/7.ts?x=1").as_deref(),
            Some("/live/main/1080p/7.ts?x=1")
        );
        assert_eq!(same_host(&b, "/abs/7.ts").as_deref(), Some("/abs/7.ts"));
        assert_eq!(
            same_host(&b, "http://live.example/live/x.ts").as_deref(),
            Some("/live/x.ts")
        );
        assert_eq!(same_host(&b, "http://other.example/x.ts"), None);
        assert_eq!(same_host(&b, "//other.example/x.ts"), None);
        assert_eq!(same_host(&b, "http://live.example:8080/x.ts"), None);
        assert_eq!(same_host(&b, "data:text/plain,x"), None);
        assert_eq!(same_host(&b, "index.m3u8"), None, "a playlist is a loop");
        assert_eq!(same_host(&b, "../../other/index.m3u8?a"), None);
    }

    impl Prefetcher {
        fn new_in(&self, key: &str, text: &str) -> Option<(Vec<String>, bool)> {
            Some(self.new_uris(key, &base(), Listed::of(&base(), text)?))
        }
    }

    #[test]
    fn the_first_version_prefetches_its_last_uris_and_later_ones_only_what_is_new() {
        let p = Prefetcher::new(Arc::new(|_| {}));
        let v1 = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2,\n1.ts\n#EXTINF:2,\n2.ts\n#EXTINF:2,\n3.ts\n#EXTINF:2,\n4.ts\n";
        let (new, first) = p.new_in("k", v1).unwrap();
        assert!(first);
        assert_eq!(
            new,
            [
                "/live/main/720p/2.ts",
                "/live/main/720p/3.ts",
                "/live/main/720p/4.ts"
            ]
        );
        let v2 = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:2\n#EXTINF:2,\n2.ts\n#EXTINF:2,\n3.ts\n#EXTINF:2,\n4.ts\n#EXTINF:2,\n5.ts\n";
        let (new, first) = p.new_in("k", v2).unwrap();
        assert!(!first);
        assert_eq!(new, ["/live/main/720p/5.ts"]);
        let (new, _) = p.new_in("k", v2).unwrap();
        assert!(new.is_empty(), "the same version again adds nothing");
        assert!(p.new_in("k", "not a playlist").is_none());
    }

    #[test]
    fn a_playlist_listing_thousands_is_remembered_by_its_last_uris_only() {
        let p = Prefetcher::new(Arc::new(|_| {}));
        let mut text = String::from("#EXTM3U\n");
        for i in 0..20_000 {
            text.push_str(&format!("#EXTINF:2,\n{i}.ts\n"));
        }
        let (new, _) = p.new_in("k", &text).unwrap();
        assert_eq!(new.len(), FIRST_SIGHT);
        assert_eq!(p.listed.get("k").unwrap().len(), MAX_REMEMBERED);
    }

    fn mpd(first: u64, count: u64) -> String {
        let t = first * 2000;
        format!(
            r#"<MPD type="dynamic"><Period><AdaptationSet>
              <SegmentTemplate timescale="1000" startNumber="{first}"
                media="$RepresentationID$/$Number$.m4s" initialization="$RepresentationID$/init.mp4">
                <SegmentTimeline><S t="{t}" d="2000" r="{}"/></SegmentTimeline></SegmentTemplate>
              <Representation id="hi"/><Representation id="lo"/></AdaptationSet></Period></MPD>"#,
            count - 1
        )
    }

    #[test]
    fn an_mpd_prefetches_each_representations_new_segments_newest_last() {
        let p = Prefetcher::new(Arc::new(|_| {}));
        let (new, first) = p.new_in("k", &mpd(10, 5)).unwrap();
        assert!(first);
        // Each representation's last three, interleaved by age.
        assert_eq!(
            new,
            [
                "/live/main/720p/hi/12.m4s",
                "/live/main/720p/lo/12.m4s",
                "/live/main/720p/hi/13.m4s",
                "/live/main/720p/lo/13.m4s",
                "/live/main/720p/hi/14.m4s",
                "/live/main/720p/lo/14.m4s"
            ]
        );
        let (new, first) = p.new_in("k", &mpd(11, 5)).unwrap();
        assert!(!first);
        assert_eq!(
            new,
            ["/live/main/720p/hi/15.m4s", "/live/main/720p/lo/15.m4s"]
        );
        let static_mpd = mpd(11, 6).replace(r#"type="dynamic""#, "");
        assert!(Listed::of(&base(), &static_mpd).unwrap().ended);
    }

    #[test]
    fn playlists_are_known_by_media_type_or_extension() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.apple.mpegurl; charset=utf-8"),
        );
        assert!(is_playlist("/a/b", &h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
        assert!(!is_playlist("/a/index.m3u8", &h));
        h.remove(header::CONTENT_TYPE);
        assert!(is_playlist("/a/index.m3u8?x=1", &h));
        assert!(!is_playlist("/a/1.ts", &h));
        assert!(is_playlist("/a/manifest.mpd", &h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/dash+xml"),
        );
        assert!(is_playlist("/a/b", &h));
    }

    #[test]
    fn a_budget_gives_its_slots_and_its_bytes_a_second_then_drops() {
        let b = Budget::new(2, None);
        let (x, y) = (b.take().unwrap(), b.take().unwrap());
        assert_eq!(b.take().unwrap_err(), Dropped::Concurrency);
        drop((x, y));
        let b = Budget::new(8, Some(1_000_000));
        let first = b.take().unwrap();
        b.spent(1_500_000);
        assert_eq!(b.take().unwrap_err(), Dropped::Bandwidth);
        drop(first);
    }
}
