//! The synthetic origin (`fanout origin`): what a video packager and an
//! object store look like from a CDN's side, with a request counter.
//!
//! Paths:
//! - `/live/{stream}/master.m3u8`, `/live/{stream}/{rendition}/index.m3u8`,
//!   `/live/{stream}/{rendition}/{seq}.ts`, and with `part_duration` the
//!   parts `/live/{stream}/{rendition}/{seq}.{part}.ts` and the LL-HLS
//!   delivery directives on the media playlist ([`ll_hls`])
//! - the same live streams as MPEG-DASH: `/live/{stream}/manifest.mpd`,
//!   `/live/{stream}/{rendition}/init.mp4`, `/live/{stream}/{rendition}/{seq}.m4s`
//!   ([`dash`])
//! - `/vod/{title}/master.m3u8`, `/vod/{title}/{rendition}/index.m3u8`,
//!   `/vod/{title}/{rendition}/{n}.ts`
//! - `{prefix}{n}` for each object group
//! - `GET /_origin/stats` (JSON counts), `POST /_origin/reset`
//!
//! POST, PUT, PATCH and DELETE on an existing object get 204 and change
//! nothing, so a cache in front sees successful unsafe requests.

mod content;
mod dash;
mod faults;
mod hls;
mod ll_hls;
mod stats;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fanout_config::{LiveStream, OriginConfig, Rendition};
use fanout_server::RequestBody;
use fanout_server::{bind, full, serve, text, ResponseBody, ServeOptions};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

pub use content::Noise;
pub use stats::StatsSnapshot;

use content::{respond, Object};
use hls::LiveClock;
use stats::Stats;

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
/// On every answer: which request for its path this is (1 for the first).
pub const ORIGIN_REQUEST: http::HeaderName = http::HeaderName::from_static("x-origin-request");
const SEGMENT: &str = "video/mp2t";

struct Origin {
    config: OriginConfig,
    /// Whole seconds, so Last-Modified round-trips through HTTP dates.
    started: SystemTime,
    clocks: Vec<LiveClock>,
    /// Each live stream's LL-HLS parts, for those that have them.
    parts: Vec<Option<ll_hls::Parts>>,
    noise: Noise,
    stats: Stats,
}

/// Serves the synthetic origin until `shutdown` is cancelled.
pub async fn run(config: OriginConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    let tls = match &config.tls {
        Some(files) => Some(
            fanout_server::tls::server_config(&files.cert_file, &files.key_file)
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    let listener = bind("origin", config.listen).await?;
    let now = SystemTime::now();
    let started = UNIX_EPOCH
        + Duration::from_secs(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
    let origin = Arc::new(Origin {
        clocks: config
            .live
            .iter()
            .map(|s| LiveClock::new(s, started))
            .collect(),
        parts: config
            .live
            .iter()
            .map(|s| {
                let clock = LiveClock::new(s, started);
                s.part_duration.map(|p| ll_hls::Parts::new(clock, p.get()))
            })
            .collect(),
        config,
        started,
        noise: Noise::new(),
        stats: Stats::default(),
    });
    tracing::info!(listen = %origin.config.listen, live = origin.config.live.len(), "synthetic origin serving");
    let options = ServeOptions {
        tls,
        ..ServeOptions::default()
    };
    serve(
        listener,
        move |req, _| origin.clone().handle(req),
        shutdown,
        options,
    )
    .await;
    Ok(())
}

impl Origin {
    async fn handle(self: Arc<Self>, req: Request<RequestBody>) -> Response<ResponseBody> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET, "/_origin/stats") => return self.stats_json(),
            (&Method::POST, "/_origin/reset") => {
                self.stats.reset();
                return text(StatusCode::OK, "reset\n");
            }
            _ => {}
        }
        let query = req.uri().query();
        // A blocking reload is counted per point asked for: "one origin
        // request per playlist version" is measured by it.
        let counted = match query {
            Some(q) if q.contains("_HLS_") => std::borrow::Cow::Owned(format!("{path}?{q}")),
            _ => std::borrow::Cow::Borrowed(path),
        };
        let nth = self
            .stats
            .count(&counted, req.version() == http::Version::HTTP_2);
        if let Some(tp) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            self.stats.traced(path, tp);
        }
        let _in_flight = self.stats.in_flight();
        let fault = self
            .config
            .faults
            .iter()
            .find(|f| f.path.matcher.is_match(path));
        if let Some(fault) = fault {
            if let Some(latency) = fault.latency {
                tokio::time::sleep(latency.get()).await;
            }
            if fault.error_rate > 0.0 && fastrand::f64() < fault.error_rate {
                let status = StatusCode::from_u16(fault.error_status)
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut r = text(status, "injected fault\n");
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return r;
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            // Writes to an existing object are accepted and change nothing:
            // enough for a cache to see a successful unsafe request.
            let writable =
                [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(req.method());
            if writable && self.object(path, None).is_some() {
                // An upload endpoint takes the whole body before it answers.
                // Answering first makes hyper close the connection with the
                // body unread, and the reset can reach the client before the
                // answer does: a cache in front would see a failed request.
                let mut body = req.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
                let mut r = Response::new(fanout_server::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                return r;
            }
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
            );
            return r;
        }
        // LL-HLS: a blocking reload, or the hinted part, waits until it
        // can be answered (RFC 8216bis §6.2.5.2, §6.2.6).
        match self.blocking(path, query) {
            Ok(Some(at)) => {
                if let Ok(wait) = at.duration_since(SystemTime::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            Ok(None) => {}
            Err(why) => {
                let mut r = text(StatusCode::BAD_REQUEST, why);
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return r;
            }
        }
        let mut resp = match self.object(path, query) {
            Some(obj) => respond(&self.noise, req.method(), req.headers(), obj),
            None => {
                let mut r = text(StatusCode::NOT_FOUND, "not found\n");
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
                r
            }
        };
        // Which of this path's requests the answer is for: a cache's copy
        // tells by it which origin response it holds (tests catch a copy
        // from before a purge with it).
        resp.headers_mut()
            .insert(ORIGIN_REQUEST, HeaderValue::from(nth));
        if req.method() == Method::GET {
            if let Some(n) = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
            {
                self.stats.add_body_bytes(n);
            }
        }
        match fault {
            Some(f) if f.throughput.is_some() || f.abort_after.is_some() => {
                let (parts, body) = resp.into_parts();
                let body = faults::shape(
                    body,
                    f.throughput.map(|t| t.bytes()),
                    f.abort_after.map(|a| a.bytes()),
                );
                Response::from_parts(parts, body)
            }
            _ => resp,
        }
    }

    fn stats_json(&self) -> Response<ResponseBody> {
        let body = serde_json::to_vec(&self.stats.snapshot()).unwrap_or_default();
        let mut r = Response::new(full(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// When an LL-HLS request may be answered: `Some(at)` for a blocking
    /// reload of a point, or the hinted part, not out yet; `Err` for
    /// directives that do not parse or ask too far ahead.
    fn blocking(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Result<Option<SystemTime>, &'static str> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["live", stream, _rendition, file] = segments.as_slice() else {
            return Ok(None);
        };
        let Some(Some(parts)) = self
            .config
            .live
            .iter()
            .position(|s| s.name == *stream)
            .map(|i| self.parts[i].as_ref())
        else {
            return Ok(None);
        };
        let now = SystemTime::now();
        if *file == "index.m3u8" {
            let directives = ll_hls::Directives::of_query(query)?;
            return match directives.point {
                Some(point) => parts.ready_at(point, now),
                None => Ok(None),
            };
        }
        Ok(part_of(file).and_then(|(msn, part)| parts.hinted_ready_at(msn, part, now)))
    }

    fn object<'a>(&'a self, path: &'a str, query: Option<&str>) -> Option<Object<'a>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["live", stream, rest @ ..] => self.live(path, query, stream, rest),
            ["vod", title, rest @ ..] => self.vod(path, title, rest),
            _ => self.static_object(path),
        }
    }

    fn live<'a>(
        &'a self,
        path: &'a str,
        query: Option<&str>,
        stream: &str,
        rest: &[&str],
    ) -> Option<Object<'a>> {
        let i = self.config.live.iter().position(|s| s.name == stream)?;
        let (s, clock) = (&self.config.live[i], &self.clocks[i]);
        let now = SystemTime::now();
        let latest = clock.latest(now);
        if rest == ["master.m3u8"] {
            return Some(playlist(
                path,
                hls::master(&s.renditions),
                60,
                self.started,
                0,
            ));
        }
        if let Some(dash) = self.dash(path, s, clock, rest, now) {
            return Some(dash);
        }
        if let Some(parts) = &self.parts[i] {
            return self.low_latency(path, query, s, parts, rest, now);
        }
        match rest {
            [rendition, "index.m3u8"] => {
                find(&s.renditions, rendition)?;
                // Half a segment: players poll every target duration, and a
                // cache must not hold the live edge back by more than that.
                let max_age = (clock.segment.as_secs() / 2).max(1);
                Some(playlist(
                    path,
                    clock.media_playlist(latest),
                    max_age,
                    clock.available_at(latest),
                    latest,
                ))
            }
            [rendition, segment] => {
                let r = find(&s.renditions, rendition)?;
                let seq: u64 = segment.strip_suffix(".ts")?.parse().ok()?;
                live_segment(path, r.segment_bytes(s.segment_duration), clock, seq, now)
            }
            _ => None,
        }
    }

    /// A live stream as MPEG-DASH: its MPD, initialization segments and
    /// media segments; `None` for any other path.
    fn dash<'a>(
        &'a self,
        path: &'a str,
        s: &LiveStream,
        clock: &LiveClock,
        rest: &[&str],
        now: SystemTime,
    ) -> Option<Object<'a>> {
        let latest = clock.latest(now);
        match rest {
            ["manifest.mpd"] => Some(Object {
                content_type: dash::MPD,
                // As the media playlists: half a segment.
                ..playlist(
                    path,
                    dash::mpd(clock, &s.renditions, latest),
                    (clock.segment.as_secs() / 2).max(1),
                    clock.available_at(latest),
                    latest,
                )
            }),
            [rendition, "init.mp4"] => {
                find(&s.renditions, rendition)?;
                Some(Object {
                    content_type: dash::INIT_SEGMENT,
                    ..segment_object(path, dash::INIT_BYTES, self.started)
                })
            }
            [rendition, file] if file.ends_with(".m4s") => {
                let r = find(&s.renditions, rendition)?;
                let seq: u64 = file.strip_suffix(".m4s")?.parse().ok()?;
                let bytes = r.segment_bytes(s.segment_duration);
                live_segment(path, bytes, clock, seq, now).map(|o| Object {
                    content_type: dash::MEDIA_SEGMENT,
                    ..o
                })
            }
            _ => None,
        }
    }

    /// A live stream with parts: its media playlists as the directives
    /// ask, its segments and its parts.
    fn low_latency<'a>(
        &'a self,
        path: &'a str,
        query: Option<&str>,
        s: &LiveStream,
        parts: &ll_hls::Parts,
        rest: &[&str],
        now: SystemTime,
    ) -> Option<Object<'a>> {
        match rest {
            [rendition, "index.m3u8"] => {
                find(&s.renditions, rendition)?;
                let directives = ll_hls::Directives::of_query(query).ok()?;
                // The answer to a blocking reload is that point's for good
                // (Apple's LL-HLS guidance: six target durations); the
                // plain playlist changes with every part.
                let target = parts.clock.segment.as_secs_f64().ceil().max(1.0) as u64;
                let max_age = if directives.point.is_some() {
                    6 * target
                } else {
                    1
                };
                Some(playlist(
                    path,
                    parts.media_playlist(now, directives.skip),
                    max_age,
                    parts.modified(now),
                    parts.version(now) * 2 + u64::from(directives.skip),
                ))
            }
            [rendition, file] => {
                let r = find(&s.renditions, rendition)?;
                let clock = &parts.clock;
                let bytes = r.segment_bytes(s.segment_duration);
                if let Some((msn, part)) = part_of(file) {
                    return parts.published(msn, part, now).then(|| {
                        let at = parts.available_at(parts.global(msn, part));
                        Object {
                            published: Some(at),
                            ..segment_object(path, bytes / parts.per_segment, at)
                        }
                    });
                }
                let seq: u64 = file.strip_suffix(".ts")?.parse().ok()?;
                live_segment(path, bytes, clock, seq, now)
            }
            _ => None,
        }
    }

    fn vod<'a>(&'a self, path: &'a str, title: &str, rest: &[&str]) -> Option<Object<'a>> {
        let vod = self.config.vod.as_ref()?;
        // Every title has the same shape; only its existence is checked.
        title.parse::<u32>().ok().filter(|t| *t < vod.titles)?;
        match rest {
            ["master.m3u8"] => Some(playlist(
                path,
                hls::master(&vod.renditions),
                3600,
                self.started,
                0,
            )),
            [rendition, "index.m3u8"] => {
                find(&vod.renditions, rendition)?;
                Some(playlist(
                    path,
                    hls::vod_playlist(vod.segment_duration.get(), vod.segments),
                    3600,
                    self.started,
                    0,
                ))
            }
            [rendition, segment] => {
                let r = find(&vod.renditions, rendition)?;
                let n: u32 = segment.strip_suffix(".ts")?.parse().ok()?;
                (n < vod.segments).then(|| {
                    segment_object(path, r.segment_bytes(vod.segment_duration), self.started)
                })
            }
            _ => None,
        }
    }

    fn static_object<'a>(&'a self, path: &'a str) -> Option<Object<'a>> {
        let group = self
            .config
            .objects
            .iter()
            .find(|g| path.starts_with(&g.prefix))?;
        let n: u32 = path[group.prefix.len()..].parse().ok()?;
        (n < group.count).then(|| Object {
            path,
            len: group.size.bytes(),
            content_type: "application/octet-stream",
            cache_control: group.cache_control.clone(),
            last_modified: self.started,
            version: 0,
            text: None,
            vary: &group.vary,
            extra: &group.headers,
            published: None,
        })
    }
}

/// `{msn}.{part}.ts`: a part's segment and index.
fn part_of(file: &str) -> Option<(u64, u64)> {
    let (msn, part) = file.strip_suffix(".ts")?.split_once('.')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

fn find<'r>(renditions: &'r [Rendition], name: &str) -> Option<&'r Rendition> {
    renditions.iter().find(|r| r.name == name)
}

fn playlist(
    path: &str,
    text: String,
    max_age: u64,
    last_modified: SystemTime,
    version: u64,
) -> Object<'_> {
    Object {
        path,
        len: text.len() as u64,
        content_type: PLAYLIST,
        cache_control: format!("public, max-age={max_age}"),
        last_modified,
        version,
        text: Some(text),
        vary: &[],
        extra: &content::NO_EXTRA,
        published: None,
    }
}

/// Live segment `seq` of `len` bytes, once it is published: segments
/// from the future do not exist yet.
fn live_segment<'a>(
    path: &'a str,
    len: u64,
    clock: &LiveClock,
    seq: u64,
    now: SystemTime,
) -> Option<Object<'a>> {
    (seq <= clock.latest(now)).then(|| Object {
        published: Some(clock.available_at(seq)),
        ..segment_object(path, len, clock.available_at(seq))
    })
}

fn segment_object(path: &str, len: u64, last_modified: SystemTime) -> Object<'_> {
    Object {
        path,
        len,
        content_type: SEGMENT,
        // Segments never change once published.
        cache_control: "public, max-age=86400, immutable".to_string(),
        last_modified,
        version: 0,
        text: None,
        vary: &[],
        extra: &content::NO_EXTRA,
        published: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot reach the origin's stats: {0}")]
    Fetch(#[from] crate::client::FetchError),
    #[error("the origin's stats answered {0}")]
    Status(StatusCode),
    #[error("the origin's stats are not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads `/_origin/stats` from a running synthetic origin.
pub async fn fetch_stats(origin: std::net::SocketAddr) -> Result<StatsSnapshot, StatsError> {
    let client = crate::client::client();
    let (status, body) = crate::client::get_body(
        &client,
        origin,
        "origin",
        "/_origin/stats",
        Duration::from_secs(5),
    )
    .await?;
    if status != StatusCode::OK {
        return Err(StatsError::Status(status));
    }
    Ok(serde_json::from_slice(&body)?)
}
