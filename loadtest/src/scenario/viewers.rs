//! The viewer models: how a live player, a VOD player and a page asset
//! request load a target. Each viewer draws its choices from its own seeded
//! generator, so a seed fixes what is asked for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::arrivals::Zipf;
use super::recorder::{Class, ErrorKind, Outcome, Recorder};
use super::wakeups::Wakeups;
use crate::h1::{H1Error, Pool, Response};
use fanout_http_cache::hls::{renditions, MediaPlaylist};

/// What every viewer shares.
pub struct Ctx {
    pub pool: Pool,
    /// Every target address: a viewer whose address refuses or drops a
    /// request before answering moves on to the next, as a player does
    /// with the next address a name resolves to.
    pub addresses: Vec<SocketAddr>,
    pub host: String,
    pub timeout: Duration,
    pub slots: Semaphore,
    pub recorder: Arc<Recorder>,
    /// Ends the run for every viewer.
    pub end: CancellationToken,
    /// Where live and VOD viewers sleep until their next request.
    pub wakeups: Wakeups,
}

/// One viewer's identity and connection target.
pub struct Viewer {
    pub ctx: Arc<Ctx>,
    pub target: SocketAddr,
    pub rng: fastrand::Rng,
    /// Fires when this viewer leaves (a drain) or the run ends. `None`
    /// for a static request, which ends when the dispatcher that drives it
    /// drops it: watching a token costs a lock per request.
    pub leave: Option<CancellationToken>,
}

impl Viewer {
    /// One GET, recorded. `None` when the viewer left before it finished
    /// (not counted: a player that closes does not see an error). A
    /// request the target refuses for now (503 or 429 with `Retry-After`,
    /// an overloaded server shedding load) is counted as refused, not
    /// failed, and asked again after the time it names, as a player does;
    /// the latency recorded is the answered attempt's.
    async fn get(
        &mut self,
        class: Class,
        path: &str,
        intended: Instant,
        keep_body: bool,
    ) -> Option<Result<Response, ()>> {
        let mut intended = intended;
        loop {
            let sent = Instant::now();
            match self.attempt(class, path, intended, keep_body).await? {
                Attempted::Refused(wait) => {
                    self.ctx.recorder.refused(Instant::now() - sent);
                    if !self.wait_until(Instant::now() + wait).await {
                        return None;
                    }
                    intended = Instant::now();
                }
                Attempted::Answered(r) => return Some(r),
            }
        }
    }

    async fn attempt(
        &mut self,
        class: Class,
        path: &str,
        intended: Instant,
        keep_body: bool,
    ) -> Option<Attempted> {
        let ctx = self.ctx.clone();
        let target = &mut self.target;
        let exchange = async {
            let _slot = ctx.slots.acquire().await;
            tokio::time::timeout(ctx.timeout, async {
                // Each other address once, in order, then give up.
                let mut tries = ctx.addresses.len();
                loop {
                    tries -= 1;
                    match ctx.pool.get(*target, &ctx.host, path, keep_body).await {
                        Err(e) if e.may_fail_over() && tries > 0 => {
                            let at = ctx.addresses.iter().position(|a| a == target);
                            *target =
                                ctx.addresses[at.map_or(0, |i| (i + 1) % ctx.addresses.len())];
                            ctx.recorder.failed_over();
                        }
                        other => break other,
                    }
                }
            })
            .await
        };
        let result = match &self.leave {
            Some(leave) => tokio::select! {
                r = exchange => r,
                _ = leave.cancelled() => return None,
            },
            None => exchange.await,
        };
        let finished = Instant::now();
        if let Ok(Ok(Response {
            retry_after: Some(seconds),
            ..
        })) = &result
        {
            // Bounded, so that a wrong header cannot park a viewer for
            // the rest of the run.
            return Some(Attempted::Refused(Duration::from_secs(
                u64::from(*seconds).clamp(1, MAX_RETRY_AFTER_S),
            )));
        }
        let (outcome, result) = match result {
            Ok(Ok(r)) if (200..300).contains(&r.status) => (
                Outcome {
                    class,
                    ttfb: r.head_at.saturating_duration_since(intended),
                    total: finished.saturating_duration_since(intended),
                    bytes: r.bytes,
                    hit: r.hit,
                    error: None,
                },
                Ok(r),
            ),
            Ok(Ok(r)) => {
                let kind = match r.status {
                    400..=499 => ErrorKind::Status4xx,
                    500..=599 => ErrorKind::Status5xx,
                    _ => ErrorKind::Other,
                };
                (
                    failed(class, kind, format!("GET {path}: status {}", r.status)),
                    Err(()),
                )
            }
            Ok(Err(e)) => {
                let kind = match &e {
                    H1Error::Connect(_) | H1Error::ConnectTimeout(_) => ErrorKind::Connect,
                    H1Error::Truncated(_) => ErrorKind::Truncated,
                    H1Error::NoResponse | H1Error::Io(_) | H1Error::Malformed(_) => {
                        ErrorKind::Other
                    }
                };
                (failed(class, kind, format!("GET {path}: {e}")), Err(()))
            }
            Err(_) => (
                failed(
                    class,
                    ErrorKind::Timeout,
                    format!("GET {path}: no complete response within {:?}", ctx.timeout),
                ),
                Err(()),
            ),
        };
        self.ctx.recorder.record(outcome, finished);
        Some(Attempted::Answered(result))
    }

    /// Sleeps until `at`; false if the viewer left first.
    async fn wait_until(&self, at: Instant) -> bool {
        let woke = match &self.leave {
            None => {
                self.ctx.wakeups.sleep_until(at).await;
                true
            }
            Some(leave) => tokio::select! {
                _ = self.ctx.wakeups.sleep_until(at) => true,
                _ = leave.cancelled() => false,
            },
        };
        if woke {
            self.ctx
                .recorder
                .woke(Instant::now().saturating_duration_since(at));
        }
        woke
    }
}

/// The longest `Retry-After` a viewer honours, in seconds.
const MAX_RETRY_AFTER_S: u64 = 30;

enum Attempted {
    /// Refused for now: ask again after this long.
    Refused(Duration),
    Answered(Result<Response, ()>),
}

fn failed(class: Class, kind: ErrorKind, what: String) -> Outcome {
    Outcome {
        class,
        ttfb: Duration::ZERO,
        total: Duration::ZERO,
        bytes: 0,
        hit: None,
        error: Some((kind, what)),
    }
}

/// Live-player settings from the scenario.
pub struct LiveModel {
    pub stream: String,
    pub abr_down: f64,
    pub abr_up: f64,
    pub start_behind: u32,
    /// Say the next object in CMCD (`CMCD=nor="…"` on each media request).
    pub cmcd: bool,
}

/// Where the playhead stands, and what a new piece of media does to it.
#[derive(Default)]
struct Playback {
    /// When the playhead reaches the end of what is buffered.
    buffered_until: Option<Instant>,
}

impl Playback {
    /// A piece of `duration` arrived at `done`: playback starts with the
    /// first; a later one that arrives after the playhead needed it is a
    /// stall.
    fn arrived(&mut self, v: &Viewer, joined: Instant, done: Instant, duration: Duration) {
        match self.buffered_until {
            None => {
                v.ctx.recorder.startup(done - joined);
                v.ctx.recorder.played(duration, Duration::ZERO);
                self.buffered_until = Some(done + duration);
            }
            Some(until) => {
                let stalled = done.saturating_duration_since(until);
                v.ctx.recorder.played(duration, stalled);
                self.buffered_until = Some(until.max(done) + duration);
            }
        }
    }
}

impl Viewer {
    /// One live segment or part, recorded as a first request when it is
    /// one, and with `edge` its distance from the live edge; `None` when
    /// the viewer left.
    async fn live_media(&mut self, path: &str, edge: bool) -> Option<Result<Response, ()>> {
        let asked = Instant::now();
        let first = self
            .ctx
            .recorder
            .first_ask(path.split('?').next().unwrap_or(path));
        let got = self.get(Class::LiveSegment, path, asked, false).await?;
        let stored = got.as_ref().is_ok_and(|r| r.stored == Some(true));
        if first {
            self.ctx.recorder.first_answer(stored);
        }
        if got.is_ok() {
            self.ctx.recorder.live_media(stored, asked.elapsed());
        }
        if let Some(ms) = got
            .as_ref()
            .ok()
            .and_then(|r| r.published_ms)
            .filter(|_| edge)
        {
            let published = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            if let Ok(behind) = std::time::SystemTime::now().duration_since(published) {
                self.ctx.recorder.live_edge(behind);
            }
        }
        Some(got)
    }
}

/// `path` with the CMCD query argument naming `next` (relative to it).
fn with_cmcd(path: &str, next: Option<&str>) -> String {
    match next {
        Some(next) => format!(
            "{path}?CMCD=nor%3D%22{}%22",
            next.replace('%', "%25").replace('"', "%22")
        ),
        None => path.to_string(),
    }
}

/// A live HLS player from join to leave: master playlist, a rendition,
/// the media playlist every target duration, each new segment in order.
/// Playback starts when the first segment is in; a segment that arrives
/// after the playhead needs it is a stall.
pub async fn live(mut v: Viewer, m: &LiveModel, joined: Instant) {
    let base = format!("/live/{}/", m.stream);
    let Some(Ok(master)) = v
        .get(
            Class::MasterPlaylist,
            &format!("{base}master.m3u8"),
            joined,
            true,
        )
        .await
    else {
        return;
    };
    let ladder = renditions(&String::from_utf8_lossy(&master.body));
    if ladder.is_empty() {
        return;
    }
    let mut rung = v.rng.usize(..ladder.len());
    let mut next_poll = Instant::now();
    let mut next_seq: Option<u64> = None;
    let mut playback = Playback::default();
    loop {
        if !v.wait_until(next_poll).await {
            return;
        }
        let media = format!("{base}{}", ladder[rung].1);
        let dir = media.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        let polled = next_poll;
        let Some(reply) = v.get(Class::LivePlaylist, &media, polled, true).await else {
            return;
        };
        let mut target_duration = Duration::from_secs(2);
        if let Ok(p) = reply {
            let text = String::from_utf8_lossy(&p.body).into_owned();
            let playlist = MediaPlaylist::parse(&text);
            if MediaPlaylist::can_block_reload(&text) && !playlist.parts.is_empty() {
                // An LL-HLS stream: play it part by part (RFC 8216bis).
                return low_latency(v, m, joined, &media, &dir, &text).await;
            }
            target_duration = playlist.target_duration;
            let from = match next_seq {
                Some(s) => s,
                None => playlist
                    .last_seq()
                    .unwrap_or(0)
                    .saturating_sub(u64::from(m.start_behind.max(1) - 1)),
            };
            let listed: Vec<_> = playlist.numbered().collect();
            for (i, &(seq, uri, duration)) in listed.iter().enumerate() {
                if seq < from {
                    continue;
                }
                let asked = Instant::now();
                let next = listed.get(i + 1).map(|(_, u, _)| *u).filter(|_| m.cmcd);
                let path = with_cmcd(&format!("{dir}/{uri}"), next);
                let Some(got) = v.live_media(&path, true).await else {
                    return;
                };
                next_seq = Some(seq + 1);
                if got.is_err() {
                    continue;
                }
                let done = Instant::now();
                playback.arrived(&v, joined, done, duration);
                let load = (done - asked).as_secs_f64() / duration.as_secs_f64().max(0.001);
                if load > m.abr_down && rung > 0 {
                    rung -= 1;
                    v.ctx.recorder.switched_rendition();
                } else if load < m.abr_up && rung + 1 < ladder.len() {
                    rung += 1;
                    v.ctx.recorder.switched_rendition();
                }
            }
        }
        next_poll = polled + target_duration;
    }
}

/// Parts from the live edge a low-latency player starts at: three part
/// durations, the `PART-HOLD-BACK` the origin advertises.
const PART_HOLD_BACK: usize = 3;

/// A low-latency HLS player (RFC 8216bis §6.3): every part in order, each
/// new playlist asked for with a blocking reload of the point after the
/// last one it lists (`_HLS_msn`, `_HLS_part`), as a delta update
/// (`_HLS_skip=YES`) once it has the whole playlist. Parts play as
/// segments do: one that arrives after the playhead needed it is a stall.
async fn low_latency(
    mut v: Viewer,
    m: &LiveModel,
    joined: Instant,
    media: &str,
    dir: &str,
    first: &str,
) {
    let mut text = first.to_string();
    // The last part fetched, as (segment, index).
    let mut last: Option<(u64, u64)> = None;
    let mut playback = Playback::default();
    // The parts a player starts with were out before it came: the live
    // edge is measured on those it waited for.
    let mut joining = true;
    loop {
        let playlist = MediaPlaylist::parse(&text);
        let parts = &playlist.parts;
        let start = parts.len().saturating_sub(PART_HOLD_BACK);
        for (i, part) in parts.iter().enumerate() {
            let newer = match last {
                Some(l) => (part.msn, part.index) > l,
                None => i >= start,
            };
            if !newer {
                continue;
            }
            let next = match parts.get(i + 1) {
                Some(p) => Some(p.uri),
                None => playlist.preload_hint,
            };
            let path = with_cmcd(&format!("{dir}/{}", part.uri), next.filter(|_| m.cmcd));
            let Some(got) = v.live_media(&path, !joining).await else {
                return;
            };
            last = Some((part.msn, part.index));
            if got.is_ok() {
                playback.arrived(&v, joined, Instant::now(), part.duration);
            }
        }
        joining = false;
        let Some(point) = playlist.next_point() else {
            return;
        };
        let mut reload = format!("{media}?_HLS_msn={}", point.msn);
        if let Some(part) = point.part {
            reload.push_str(&format!("&_HLS_part={part}"));
        }
        reload.push_str("&_HLS_skip=YES");
        let polled = Instant::now();
        let Some(reply) = v.get(Class::LivePlaylist, &reload, polled, true).await else {
            return;
        };
        match reply {
            Ok(r) => text = String::from_utf8_lossy(&r.body).into_owned(),
            // Asked again after a part's time, as a player backs off.
            Err(()) => {
                let part = parts
                    .last()
                    .map_or(Duration::from_millis(500), |p| p.duration);
                if !v.wait_until(Instant::now() + part).await {
                    return;
                }
            }
        }
    }
}

/// VOD-player settings, with the title popularity drawn once per run.
pub struct VodModel {
    pub titles: Zipf,
    pub seek_probability: f64,
    pub watch_segments: u32,
    pub read_ahead: u32,
}

/// The paths a VOD viewer asks for, in order: a title by popularity, its
/// master and media playlists, then segments from the start, sometimes
/// jumping elsewhere in the title. A pure function of the viewer's seed.
pub fn vod_plan(
    m: &VodModel,
    rng: &mut fastrand::Rng,
    rendition: &str,
    segments: u32,
) -> Vec<String> {
    let title = m.titles.sample(rng);
    let base = format!("/vod/{title}/{rendition}");
    let mut paths = Vec::with_capacity(m.watch_segments as usize);
    let mut n = 0u32;
    for _ in 0..m.watch_segments {
        if n >= segments {
            break;
        }
        paths.push(format!("{base}/{n}.ts"));
        n = if rng.f64() < m.seek_probability {
            rng.u32(0..segments.max(1))
        } else {
            n + 1
        };
    }
    paths
}

/// A VOD player: playlists, then segments paced to playback after a short
/// read-ahead, until it has watched its share or the run ends.
pub async fn vod(mut v: Viewer, m: &VodModel, joined: Instant) {
    // The title is drawn first so the master playlist is the title's own.
    let mut plan_rng = v.rng.clone();
    let title = m.titles.sample(&mut plan_rng);
    let Some(Ok(master)) = v
        .get(
            Class::VodPlaylist,
            &format!("/vod/{title}/master.m3u8"),
            joined,
            true,
        )
        .await
    else {
        return;
    };
    let ladder = renditions(&String::from_utf8_lossy(&master.body));
    let Some((_, media)) = ladder.get(ladder.len().saturating_sub(1) / 2) else {
        return;
    };
    let media_path = format!("/vod/{title}/{media}");
    let Some(Ok(playlist)) = v
        .get(Class::VodPlaylist, &media_path, Instant::now(), true)
        .await
    else {
        return;
    };
    let text = String::from_utf8_lossy(&playlist.body).into_owned();
    let parsed = MediaPlaylist::parse(&text);
    let rendition = media.rsplit_once('/').map_or("", |(r, _)| r);
    let paths = vod_plan(m, &mut v.rng, rendition, parsed.segments.len() as u32);
    let segment = parsed.target_duration;
    let mut playhead: Option<Instant> = None;
    for (i, path) in paths.iter().enumerate() {
        // Read ahead a few segments, then fetch each as playback needs it.
        let due = playhead.map(|start| start + segment * (i as u32).saturating_sub(m.read_ahead));
        let intended = match due {
            Some(at) if at > Instant::now() => {
                if !v.wait_until(at).await {
                    return;
                }
                at
            }
            _ => Instant::now(),
        };
        match v.get(Class::VodSegment, path, intended, false).await {
            None => return,
            Some(_) => {
                playhead.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Static-object settings.
pub struct StaticModel {
    pub prefix: String,
    pub objects: Zipf,
}

/// One request for an object by popularity, sent at the arrival's
/// scheduled time (open loop).
pub async fn static_object(mut v: Viewer, m: &StaticModel, scheduled: Instant) {
    let n = m.objects.sample(&mut v.rng);
    // Not `format!`: its machinery showed as 5 % of the generator's user
    // time in perf (90 000 requests/s offered).
    let mut path = String::with_capacity(m.prefix.len() + 10);
    path.push_str(&m.prefix);
    path.push_str(itoa::Buffer::new().format(n));
    let _ = v.get(Class::Static, &path, scheduled, false).await;
}
