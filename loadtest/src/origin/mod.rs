//! The synthetic origin (`fanout origin`): what a video packager and an
//! object store look like from a CDN's side, with a request counter.
//!
//! Paths:
//! - `/live/{stream}/master.m3u8`, `/live/{stream}/{rendition}/index.m3u8`,
//!   `/live/{stream}/{rendition}/{seq}.ts`
//! - `/vod/{title}/master.m3u8`, `/vod/{title}/{rendition}/index.m3u8`,
//!   `/vod/{title}/{rendition}/{n}.ts`
//! - `{prefix}{n}` for each object group
//! - `GET /_origin/stats` (JSON counts), `POST /_origin/reset`
//!
//! POST, PUT, PATCH and DELETE on an existing object get 204 and change
//! nothing, so a cache in front sees successful unsafe requests.

mod content;
mod faults;
mod hls;
mod stats;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fanout_config::{OriginConfig, Rendition};
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
        let nth = self
            .stats
            .count(path, req.version() == http::Version::HTTP_2);
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
            if writable && self.object(path).is_some() {
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
        let mut resp = match self.object(path) {
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

    fn object<'a>(&'a self, path: &'a str) -> Option<Object<'a>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["live", stream, rest @ ..] => self.live(path, stream, rest),
            ["vod", title, rest @ ..] => self.vod(path, title, rest),
            _ => self.static_object(path),
        }
    }

    fn live<'a>(&'a self, path: &'a str, stream: &str, rest: &[&str]) -> Option<Object<'a>> {
        let i = self.config.live.iter().position(|s| s.name == stream)?;
        let (s, clock) = (&self.config.live[i], &self.clocks[i]);
        let now = SystemTime::now();
        let latest = clock.latest(now);
        match rest {
            ["master.m3u8"] => Some(playlist(
                path,
                hls::master(&s.renditions),
                60,
                self.started,
                0,
            )),
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
                // Segments from the future do not exist yet.
                (seq <= latest).then(|| Object {
                    published: Some(clock.available_at(seq)),
                    ..segment_object(
                        path,
                        r.segment_bytes(s.segment_duration),
                        clock.available_at(seq),
                    )
                })
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
