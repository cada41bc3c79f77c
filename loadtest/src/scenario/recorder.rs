//! What the viewers saw, as it happens: one lock per finished request,
//! feeding per-class HdrHistograms, error and cache counters, viewer
//! experience and a per-second timeline the report charts.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What a request was for; latencies are kept apart per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    MasterPlaylist,
    LivePlaylist,
    LiveSegment,
    VodPlaylist,
    VodSegment,
    Static,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::MasterPlaylist,
        Class::LivePlaylist,
        Class::LiveSegment,
        Class::VodPlaylist,
        Class::VodSegment,
        Class::Static,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::MasterPlaylist => "master_playlist",
            Class::LivePlaylist => "live_playlist",
            Class::LiveSegment => "live_segment",
            Class::VodPlaylist => "vod_playlist",
            Class::VodSegment => "vod_segment",
            Class::Static => "static",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Status4xx,
    Status5xx,
    /// The body ended before its declared length, or broke off.
    Truncated,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Status4xx,
        ErrorKind::Status5xx,
        ErrorKind::Truncated,
        ErrorKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Status4xx => "status_4xx",
            ErrorKind::Status5xx => "status_5xx",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Other => "other",
        }
    }
}

/// One finished request.
pub struct Outcome {
    pub class: Class,
    /// Time from the intended send to the response head, and to its last
    /// byte; both include any wait for a free request slot.
    pub ttfb: Duration,
    pub total: Duration,
    pub bytes: u64,
    /// `Some(true)` a hit, `Some(false)` another cache status, `None` none.
    pub hit: Option<bool>,
    pub error: Option<(ErrorKind, String)>,
}

/// Microseconds, up to two minutes.
pub const LATENCY_MAX_US: u64 = 120_000_000;

pub fn latency_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, sigfig).expect("valid histogram bounds")
}

pub(crate) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, LATENCY_MAX_US)
}

pub struct ClassStats {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub ttfb: Histogram<u64>,
    pub total: Histogram<u64>,
}

/// One second of the run.
pub struct Bucket {
    pub requests: u64,
    pub errors: u64,
    pub hits: u64,
    pub with_status: u64,
    pub bytes: u64,
    /// Total latency of the requests that finished in this second.
    pub latency: Histogram<u64>,
    /// Sampled once a second by the run loop; a second the sampler skipped
    /// (its tick came late) has none, see `sampled`.
    pub active: u64,
    /// The origin's requests in this second: a sample's delta is spread
    /// over the seconds since the previous one, so a skipped tick shows as
    /// the rate it was, not as 0 followed by twice the rate.
    pub origin_requests: f64,
    pub sampled: bool,
    pub stall_s: f64,
    pub play_s: f64,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            requests: 0,
            errors: 0,
            hits: 0,
            with_status: 0,
            bytes: 0,
            latency: latency_histogram(2),
            active: 0,
            origin_requests: 0.0,
            sampled: false,
            stall_s: 0.0,
            play_s: 0.0,
        }
    }
}

pub struct Inner {
    pub classes: Vec<ClassStats>,
    pub errors: [u64; 6],
    pub hits: u64,
    pub misses: u64,
    pub no_status: u64,
    pub timeline: Vec<Bucket>,
    /// Join to first segment downloaded, per live viewer.
    pub startup: Histogram<u64>,
    pub stalls: u64,
    pub stall_s: f64,
    pub play_s: f64,
    pub rendition_switches: u64,
    /// Requests sent again to the next target address.
    pub failovers: u64,
    /// Requests the target refused for now (503 or 429 with Retry-After),
    /// and how long each refusal took to arrive, in microseconds.
    pub refused: u64,
    pub refusal: Histogram<u64>,
    pub first_errors: Vec<String>,
    /// How late live and VOD viewers woke for their later requests, in
    /// microseconds: the generator's own delay, as for arrivals.
    pub wake_lateness: Histogram<u64>,
    /// The second of the last origin sample that had a delta.
    pub last_origin_second: Option<usize>,
    /// Live segments some viewer has asked for, by path.
    pub segments_asked: std::collections::HashSet<String>,
    /// Each live segment's first request in the run, and those of them a
    /// cache answered from its store: how many new segments were in the
    /// cache before anyone asked (prefetch).
    pub first_segment_requests: u64,
    pub first_segment_stored: u64,
    /// From the origin publishing a live segment to a viewer having all of
    /// it, in microseconds: the viewer's distance from the live edge.
    pub live_edge: Histogram<u64>,
    /// Every live segment or part request, from asking to having it whole,
    /// in microseconds: those a cache answered from its store, and those
    /// it forwarded (a miss, or a request that joined a fill).
    pub media_stored: Histogram<u64>,
    pub media_forwarded: Histogram<u64>,
}

pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

const FIRST_ERRORS_KEPT: usize = 5;

impl Recorder {
    pub fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            inner: Mutex::new(Inner {
                classes: Class::ALL
                    .iter()
                    .map(|_| ClassStats {
                        requests: 0,
                        errors: 0,
                        bytes: 0,
                        ttfb: latency_histogram(3),
                        total: latency_histogram(3),
                    })
                    .collect(),
                errors: [0; 6],
                hits: 0,
                misses: 0,
                no_status: 0,
                timeline: Vec::new(),
                startup: latency_histogram(3),
                stalls: 0,
                stall_s: 0.0,
                play_s: 0.0,
                rendition_switches: 0,
                failovers: 0,
                refused: 0,
                refusal: latency_histogram(3),
                first_errors: Vec::new(),
                wake_lateness: latency_histogram(2),
                last_origin_second: None,
                segments_asked: std::collections::HashSet::new(),
                first_segment_requests: 0,
                first_segment_stored: 0,
                live_edge: latency_histogram(3),
                media_stored: latency_histogram(3),
                media_forwarded: latency_histogram(3),
            }),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn second(&self, at: Instant) -> usize {
        at.saturating_duration_since(self.started).as_secs() as usize
    }

    /// Counts a request that ended at `finished` (the caller's clock
    /// read, so a request costs one).
    pub fn record(&self, o: Outcome, finished: Instant) {
        let second = self.second(finished);
        let mut g = self.lock();
        let inner = &mut *g;
        let bucket = bucket(&mut inner.timeline, second);
        bucket.requests += 1;
        bucket.bytes += o.bytes;
        let class = &mut inner.classes[o.class as usize];
        class.requests += 1;
        class.bytes += o.bytes;
        match o.error {
            Some((kind, what)) => {
                class.errors += 1;
                bucket.errors += 1;
                inner.errors[kind as usize] += 1;
                if inner.first_errors.len() < FIRST_ERRORS_KEPT {
                    inner.first_errors.push(what);
                }
            }
            None => {
                let _ = class.ttfb.record(micros(o.ttfb));
                let _ = class.total.record(micros(o.total));
                let _ = bucket.latency.record(micros(o.total));
                match o.hit {
                    Some(true) => {
                        inner.hits += 1;
                        bucket.hits += 1;
                        bucket.with_status += 1;
                    }
                    Some(false) => {
                        inner.misses += 1;
                        bucket.with_status += 1;
                    }
                    None => inner.no_status += 1,
                }
            }
        }
    }

    /// A viewer woke `late` after the moment it meant to send a request.
    pub fn woke(&self, late: Duration) {
        self.lock().wake_lateness.saturating_record(micros(late));
    }

    pub fn startup(&self, took: Duration) {
        let _ = self.lock().startup.record(micros(took));
    }

    /// A segment's worth of playback, and how long the player waited for
    /// it beyond its deadline.
    pub fn played(&self, segment: Duration, stalled: Duration) {
        let second = self.second(Instant::now());
        let mut g = self.lock();
        let inner = &mut *g;
        inner.play_s += segment.as_secs_f64();
        let b = bucket(&mut inner.timeline, second);
        b.play_s += segment.as_secs_f64();
        if !stalled.is_zero() {
            inner.stalls += 1;
            inner.stall_s += stalled.as_secs_f64();
            bucket(&mut inner.timeline, second).stall_s += stalled.as_secs_f64();
        }
    }

    /// A viewer is about to ask for live segment `path`: true when nobody
    /// asked for it before in this run.
    pub fn first_ask(&self, path: &str) -> bool {
        let mut g = self.lock();
        !g.segments_asked.contains(path) && g.segments_asked.insert(path.to_string())
    }

    /// What the first request for a live segment found: `stored` when a
    /// cache answered it from its store (a failed request was not).
    pub fn first_answer(&self, stored: bool) {
        let mut g = self.lock();
        g.first_segment_requests += 1;
        g.first_segment_stored += u64::from(stored);
    }

    /// A live segment or part took `took`, answered from a cache's store
    /// or not.
    pub fn live_media(&self, stored: bool, took: Duration) {
        let mut g = self.lock();
        let h = if stored {
            &mut g.media_stored
        } else {
            &mut g.media_forwarded
        };
        let _ = h.record(micros(took));
    }

    /// A viewer has a live segment, `behind` after its origin published it.
    pub fn live_edge(&self, behind: Duration) {
        let _ = self.lock().live_edge.record(micros(behind));
    }

    pub fn failed_over(&self) {
        self.lock().failovers += 1;
    }

    /// A request refused for now, `took` after it was sent.
    pub fn refused(&self, took: Duration) {
        let mut g = self.lock();
        g.refused += 1;
        let _ = g.refusal.record(micros(took));
    }

    pub fn switched_rendition(&self) {
        self.lock().rendition_switches += 1;
    }

    /// The once-a-second samples: active viewers and origin requests.
    pub fn sample(&self, at: Instant, active: u64, origin_requests: Option<u64>) {
        let second = self.second(at);
        let mut g = self.lock();
        let b = bucket(&mut g.timeline, second);
        b.active = b.active.max(active);
        b.sampled = true;
        if let Some(o) = origin_requests {
            // The delta counts the requests since the previous sample.
            let from = g.last_origin_second.map_or(second, |l| (l + 1).min(second));
            let share = o as f64 / (second - from + 1) as f64;
            for s in from..=second {
                bucket(&mut g.timeline, s).origin_requests += share;
            }
            g.last_origin_second = Some(second);
        }
    }
}

fn bucket(timeline: &mut Vec<Bucket>, second: usize) -> &mut Bucket {
    while timeline.len() <= second {
        timeline.push(Bucket::new());
    }
    &mut timeline[second]
}
