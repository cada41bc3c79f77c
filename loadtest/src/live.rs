//! Live HLS viewers: each joins during the ramp, reads the master playlist,
//! picks a rendition, polls its media playlist once per target duration as
//! a player does, and fetches every new segment. What they saw becomes a
//! [`Summary`].

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;

use crate::client::{client, get, FetchError, Fetched, HttpClient};

/// A live audience to simulate.
#[derive(Debug, Clone)]
pub struct LiveLoad {
    /// Addresses to spread viewers over (viewer i uses target i mod n).
    pub targets: Vec<SocketAddr>,
    pub host: String,
    pub stream: String,
    pub viewers: u32,
    pub duration: Duration,
    pub ramp: Duration,
    pub seed: u64,
    pub request_timeout: Duration,
}

/// Everything the viewers saw, merged.
#[derive(Debug, Clone)]
pub struct Summary {
    pub viewers: u32,
    pub elapsed: Duration,
    pub requests: u64,
    pub errors: u64,
    /// Responses that said whether they were a cache hit, and how many were.
    pub with_cache_status: u64,
    pub hits: u64,
    pub body_bytes: u64,
    /// Microseconds from request start to the last body byte.
    pub segment_latency: Histogram<u64>,
    pub playlist_latency: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Summary {
    fn new(viewers: u32) -> Summary {
        let h = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Summary {
            viewers,
            elapsed: Duration::ZERO,
            requests: 0,
            errors: 0,
            with_cache_status: 0,
            hits: 0,
            body_bytes: 0,
            segment_latency: h(),
            playlist_latency: h(),
            first_error: None,
        }
    }

    fn merge(&mut self, other: &Summary) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.with_cache_status += other.with_cache_status;
        self.hits += other.hits;
        self.body_bytes += other.body_bytes;
        let _ = self.segment_latency.add(&other.segment_latency);
        let _ = self.playlist_latency.add(&other.playlist_latency);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    pub fn hit_ratio(&self) -> Option<f64> {
        (self.with_cache_status > 0).then(|| self.hits as f64 / self.with_cache_status as f64)
    }

    /// A human-readable report; `origin_requests` comes from the origin's
    /// own counter when the caller can read it.
    pub fn render(&self, origin_requests: Option<u64>) -> String {
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64().max(0.001);
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "Fanout demo: {} live viewers for {:.1} s",
            self.viewers, secs
        );
        let _ = writeln!(
            out,
            "  requests         {} ({:.0}/s), {} failed",
            self.requests,
            self.requests as f64 / secs,
            self.errors
        );
        match self.hit_ratio() {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "  cache hit ratio  {:.1}% of {} responses",
                    r * 100.0,
                    self.with_cache_status
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  cache hit ratio  n/a (no response carried Cache-Status or X-Cache)"
                );
            }
        }
        if let Some(o) = origin_requests {
            let offload = if self.requests > 0 {
                100.0 * (1.0 - o as f64 / self.requests as f64)
            } else {
                0.0
            };
            let _ = writeln!(out, "  origin requests  {o} (offload {offload:.1}%)");
        }
        let _ = writeln!(
            out,
            "  body bytes       {:.1} MiB ({:.1} MiB/s)",
            self.body_bytes as f64 / 1048576.0,
            self.body_bytes as f64 / 1048576.0 / secs
        );
        for (name, h) in [
            ("segments", &self.segment_latency),
            ("playlists", &self.playlist_latency),
        ] {
            if !h.is_empty() {
                let _ = writeln!(
                    out,
                    "  {name:<16} p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} requests)",
                    ms(h, 0.5),
                    ms(h, 0.99),
                    h.max() as f64 / 1000.0,
                    h.len()
                );
            }
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "  first error      {e}");
        }
        out
    }
}

/// Counters the progress display reads while the load runs.
#[derive(Default)]
struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
    hits: AtomicU64,
    with_status: AtomicU64,
}

/// Runs the audience until its duration ends or `cancel` fires.
pub async fn run(load: LiveLoad, cancel: CancellationToken) -> Summary {
    let started = Instant::now();
    let end = TokioInstant::now() + load.duration;
    let live = Arc::new(Live::default());
    let progress = progress_bar(load.duration);
    let mut viewers = JoinSet::new();
    for i in 0..load.viewers {
        let join_at =
            TokioInstant::now() + load.ramp.mul_f64(i as f64 / load.viewers.max(1) as f64);
        let target = load.targets[i as usize % load.targets.len()];
        let viewer = Viewer {
            client: client(),
            target,
            load: load.clone(),
            rng: fastrand::Rng::with_seed(
                load.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            live: live.clone(),
            summary: Summary::new(0),
        };
        let cancel = cancel.clone();
        viewers.spawn(async move {
            tokio::select! {
                _ = sleep_until(join_at) => {}
                _ = cancel.cancelled() => return viewer.summary,
            }
            viewer.watch(end, cancel).await
        });
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut total = Summary::new(load.viewers);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let elapsed = started.elapsed();
                progress.set_position(elapsed.as_secs().min(load.duration.as_secs()));
                let req = live.requests.load(Ordering::Relaxed);
                let with = live.with_status.load(Ordering::Relaxed).max(1);
                progress.set_message(format!(
                    "{req} requests, {:.0}/s, hit ratio {:.1}%, {} failed",
                    req as f64 / elapsed.as_secs_f64().max(0.001),
                    100.0 * live.hits.load(Ordering::Relaxed) as f64 / with as f64,
                    live.errors.load(Ordering::Relaxed),
                ));
            }
            done = viewers.join_next() => match done {
                Some(Ok(s)) => total.merge(&s),
                Some(Err(e)) => {
                    total.errors += 1;
                    total.first_error.get_or_insert_with(|| format!("viewer task failed: {e}"));
                }
                None => break,
            },
        }
    }
    progress.finish_and_clear();
    total.elapsed = started.elapsed();
    total
}

fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_secs());
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

struct Viewer {
    client: HttpClient,
    target: SocketAddr,
    load: LiveLoad,
    rng: fastrand::Rng,
    live: Arc<Live>,
    summary: Summary,
}

enum Kind {
    Playlist,
    Segment,
}

impl Viewer {
    async fn watch(mut self, end: TokioInstant, cancel: CancellationToken) -> Summary {
        let base = format!("/live/{}/", self.load.stream);
        let Some(master) = self
            .fetch(&format!("{base}master.m3u8"), Kind::Playlist)
            .await
        else {
            return self.summary;
        };
        let renditions: Vec<String> = uris(&String::from_utf8_lossy(&master.body))
            .filter(|u| u.ends_with(".m3u8"))
            .map(str::to_string)
            .collect();
        if renditions.is_empty() {
            self.fail("master playlist lists no renditions".to_string());
            return self.summary;
        }
        let media = format!("{base}{}", renditions[self.rng.usize(..renditions.len())]);
        let dir = media.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
        let mut last_seq: Option<u64> = None;
        loop {
            let polled_at = TokioInstant::now();
            if polled_at >= end || cancel.is_cancelled() {
                break;
            }
            let mut target_duration = Duration::from_secs(2);
            if let Some(p) = self.fetch(&media, Kind::Playlist).await {
                let text = String::from_utf8_lossy(&p.body).into_owned();
                let playlist = MediaPlaylist::parse(&text);
                target_duration = playlist.target_duration;
                // A joining player starts at the live edge; after that it
                // fetches every segment it has not seen.
                let from = match last_seq {
                    Some(s) => s + 1,
                    None => playlist.last_seq().unwrap_or(0),
                };
                for (seq, uri) in playlist.segments() {
                    if seq >= from && TokioInstant::now() < end {
                        self.fetch(&format!("{dir}/{uri}"), Kind::Segment).await;
                        last_seq = Some(seq);
                    }
                }
            }
            tokio::select! {
                _ = sleep_until((polled_at + target_duration).min(end)) => {}
                _ = cancel.cancelled() => break,
            }
        }
        self.summary
    }

    async fn fetch(&mut self, path: &str, kind: Kind) -> Option<Fetched> {
        let result = get(
            &self.client,
            self.target,
            &self.load.host,
            path,
            self.load.request_timeout,
        )
        .await;
        self.summary.requests += 1;
        self.live.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(f) if f.status.is_success() => {
                if let Some(hit) = f.hit {
                    self.summary.with_cache_status += 1;
                    self.live.with_status.fetch_add(1, Ordering::Relaxed);
                    if hit {
                        self.summary.hits += 1;
                        self.live.hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.summary.body_bytes += f.body.len() as u64;
                let micros = f.total.as_micros().clamp(1, 60_000_000) as u64;
                let h = match kind {
                    Kind::Playlist => &mut self.summary.playlist_latency,
                    Kind::Segment => &mut self.summary.segment_latency,
                };
                let _ = h.record(micros);
                Some(f)
            }
            Ok(f) => {
                self.fail(format!("GET {path}: status {}", f.status));
                None
            }
            Err(e) => {
                let what = match e {
                    FetchError::Timeout(_) => "timeout",
                    _ => "error",
                };
                self.fail(format!("GET {path}: {what}: {e}"));
                None
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.summary.errors += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        self.summary.first_error.get_or_insert(what);
    }
}

/// URI lines of a playlist (RFC 8216 §4.1: lines that are not tags).
fn uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

struct MediaPlaylist<'a> {
    target_duration: Duration,
    media_sequence: u64,
    uris: Vec<&'a str>,
}

impl<'a> MediaPlaylist<'a> {
    fn parse(text: &'a str) -> MediaPlaylist<'a> {
        let tag = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        MediaPlaylist {
            target_duration: Duration::from_secs(tag("#EXT-X-TARGETDURATION:").unwrap_or(2).max(1)),
            media_sequence: tag("#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0),
            uris: uris(text).collect(),
        }
    }

    fn segments(&self) -> impl Iterator<Item = (u64, &'a str)> + '_ {
        self.uris
            .iter()
            .enumerate()
            .map(|(i, u)| (self.media_sequence + i as u64, *u))
    }

    fn last_seq(&self) -> Option<u64> {
        (!self.uris.is_empty()).then(|| self.media_sequence + self.uris.len() as u64 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_playlists_number_segments_from_the_media_sequence() {
        let p = MediaPlaylist::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:17\n#EXTINF:4.0,\n17.ts\n#EXTINF:4.0,\n18.ts\n",
        );
        assert_eq!(p.target_duration, Duration::from_secs(4));
        assert_eq!(
            p.segments().collect::<Vec<_>>(),
            [(17, "17.ts"), (18, "18.ts")]
        );
        assert_eq!(p.last_seq(), Some(18));
    }
}
