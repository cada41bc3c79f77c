//! Overload protection: what a server does when it is asked for more than
//! it can do. It watches two signals and turns requests away, fast and in
//! order of what matters least, rather than queueing without end:
//!
//! - **Scheduling delay.** A probe task sleeps a few milliseconds at a
//!   time and measures how late it wakes. Every task that becomes ready
//!   (a socket with a request on it, a client that can take more of a
//!   response) waits about that long for a worker, so the delay is the
//!   queue every request stands in, whatever resource is short: CPU, or
//!   the memory bandwidth that copying big segments uses. As CoDel does,
//!   the minimum over a window counts, so a burst that drains by itself
//!   does not. Above `max_delay`, newcomers' first requests are refused.
//!   Nothing else is refused for delay, however high it goes: a refused
//!   segment stalls a viewer who is watching, and on a crowd beyond one
//!   core (docs/performance.md, "Overload shedding") refusing a share of
//!   segments once the delay passed 20 or 100 ms stalled viewers where
//!   plain queueing, with the players' buffers, did not.
//! - **Requests in flight** (admitted and not yet answered with a head:
//!   those waiting on a cache node or an origin). Each priority may fill
//!   its share of `max_in_flight`; past it, a request waits up to
//!   `queue_timeout` for a slot (the most important first, since they may
//!   use more of them) and is then refused. Newcomers do not wait.
//!
//! Priorities (the audience that is in keeps playing; newcomers wait
//! briefly and come back as `Retry-After` tells them):
//! [`Priority::Playlist`] refreshes first, then [`Priority::Media`]
//! (segments and everything else), then [`Priority::Entry`], a new
//! viewer's first request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long the probe sleeps between measurements.
const PROBE_PERIOD: Duration = Duration::from_millis(5);
/// The window whose minimum delay decides (CoDel's interval).
const WINDOW: Duration = Duration::from_millis(100);
/// Shares are kept in thousandths.
const WHOLE: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// A playlist or manifest refresh: tiny, and without it every viewer
    /// of the stream stalls.
    Playlist,
    /// Segments and anything else a viewer already watching asks for.
    Media,
    /// A new viewer's first request (a multivariant playlist).
    Entry,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Playlist, Priority::Media, Priority::Entry];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Playlist => "playlist",
            Priority::Media => "media",
            Priority::Entry => "entry",
        }
    }

    /// The share of `max_in_flight` requests of this priority may fill, in
    /// thousandths: what is left above it is kept for higher priorities.
    fn in_flight_share(self) -> u32 {
        match self {
            Priority::Playlist => WHOLE,
            Priority::Media => 950,
            Priority::Entry => 800,
        }
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The scheduling delay is above its bound.
    Delay,
    /// Its priority's share of requests in flight stayed full.
    InFlight,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Delay => "delay",
            Shed::InFlight => "in_flight",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub max_delay: Duration,
    pub max_in_flight: usize,
    pub queue_timeout: Duration,
}

pub struct Overload {
    settings: Settings,
    in_flight: AtomicUsize,
    /// Requests waiting for a slot; a release wakes them only when there
    /// are some.
    waiting: AtomicUsize,
    freed: Notify,
    /// The last window's minimum scheduling delay, in microseconds.
    delay_us: AtomicU64,
}

impl Overload {
    pub fn new(settings: Settings) -> Arc<Overload> {
        Arc::new(Overload {
            settings,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            delay_us: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Measures the scheduling delay of the runtime it is called on until
    /// `shutdown`.
    pub fn spawn_probe(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut window = Window::new(Instant::now());
            loop {
                let asked = Instant::now();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PROBE_PERIOD) => {}
                }
                let woke = Instant::now();
                let Some(this) = this.upgrade() else { return };
                if let Some(min) = window.add(woke, (woke - asked).saturating_sub(PROBE_PERIOD)) {
                    this.judge(min);
                }
            }
        });
    }

    /// Takes a window's minimum delay into account.
    fn judge(&self, min: Duration) {
        self.delay_us
            .store(min.as_micros() as u64, Ordering::Relaxed);
    }

    /// The last window's minimum scheduling delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Admits a request of priority `p`, at once or after a wait of at
    /// most `queue_timeout`, or says why not. The request counts as in
    /// flight until the returned value is dropped.
    pub async fn admit(&self, p: Priority) -> Result<Admitted<'_>, Shed> {
        if p == Priority::Entry && self.delay() > self.settings.max_delay {
            return Err(Shed::Delay);
        }
        let limit = (self.settings.max_in_flight as u64 * p.in_flight_share() as u64 / WHOLE as u64)
            .max(1) as usize;
        if self.take(limit) {
            return Ok(Admitted(self));
        }
        if p == Priority::Entry || self.settings.queue_timeout.is_zero() {
            return Err(Shed::InFlight);
        }
        let deadline = tokio::time::Instant::now() + self.settings.queue_timeout;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check
            // and the wait is not missed.
            freed.as_mut().enable();
            if self.take(limit) {
                return Ok(Admitted(self));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return if self.take(limit) {
                    Ok(Admitted(self))
                } else {
                    Err(Shed::InFlight)
                };
            }
        }
    }

    fn take(&self, limit: usize) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }
}

/// A request counted in flight.
#[must_use = "the request counts as in flight only while this lives"]
pub struct Admitted<'a>(&'a Overload);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_waiters();
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The minimum of the delays measured in one window.
struct Window {
    started: Instant,
    min: Duration,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            min: Duration::MAX,
        }
    }

    /// Adds a measurement; at the end of a window, its minimum.
    fn add(&mut self, now: Instant, delay: Duration) -> Option<Duration> {
        self.min = self.min.min(delay);
        if now.duration_since(self.started) < WINDOW {
            return None;
        }
        let min = self.min;
        *self = Window::new(now);
        Some(min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_in_flight: usize, queue_timeout: Duration) -> Settings {
        Settings {
            max_delay: Duration::from_millis(5),
            max_in_flight,
            queue_timeout,
        }
    }

    #[test]
    fn a_window_reports_its_minimum_once_it_is_over() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        assert_eq!(
            w.add(t0 + Duration::from_millis(10), Duration::from_millis(9)),
            None
        );
        assert_eq!(
            w.add(t0 + Duration::from_millis(50), Duration::from_millis(3)),
            None
        );
        assert_eq!(
            w.add(t0 + Duration::from_millis(101), Duration::from_millis(7)),
            Some(Duration::from_millis(3))
        );
        // The next window starts afresh.
        assert_eq!(
            w.add(t0 + Duration::from_millis(202), Duration::from_millis(8)),
            Some(Duration::from_millis(8))
        );
    }

    #[tokio::test]
    async fn newcomers_are_refused_while_the_delay_is_high_and_the_others_are_not() {
        let o = Overload::new(settings(100, Duration::ZERO));
        o.judge(Duration::from_millis(6));
        assert_eq!(o.admit(Priority::Entry).await.err(), Some(Shed::Delay));
        assert!(o.admit(Priority::Playlist).await.is_ok());
        assert!(o.admit(Priority::Media).await.is_ok());
        o.judge(Duration::from_millis(1));
        assert!(o.admit(Priority::Entry).await.is_ok());
    }

    #[tokio::test]
    async fn however_high_the_delay_no_watching_viewer_is_refused_for_it() {
        let o = Overload::new(settings(1_000_000, Duration::ZERO));
        o.judge(Duration::from_secs(5));
        assert_eq!(o.admit(Priority::Entry).await.err(), Some(Shed::Delay));
        for _ in 0..1000 {
            assert!(o.admit(Priority::Media).await.is_ok());
            assert!(o.admit(Priority::Playlist).await.is_ok());
        }
    }

    #[tokio::test]
    async fn each_priority_fills_only_its_share_of_the_slots() {
        let o = Overload::new(settings(10, Duration::ZERO));
        let mut held = Vec::new();
        while let Ok(a) = o.admit(Priority::Entry).await {
            held.push(a);
        }
        assert_eq!(held.len(), 8);
        while let Ok(a) = o.admit(Priority::Media).await {
            held.push(a);
        }
        assert_eq!(held.len(), 9);
        while let Ok(a) = o.admit(Priority::Playlist).await {
            held.push(a);
        }
        assert_eq!(held.len(), 10);
        assert_eq!(
            o.admit(Priority::Playlist).await.err(),
            Some(Shed::InFlight)
        );
        held.pop();
        assert_eq!(o.in_flight(), 9);
        assert!(o.admit(Priority::Playlist).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_request_takes_the_slot_a_finished_one_frees() {
        let o = Overload::new(settings(1, Duration::from_secs(30)));
        let first = o.admit(Priority::Playlist).await.unwrap();
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.admit(Priority::Playlist).await.is_ok() });
        // Newcomers do not queue.
        let refused = o.admit(Priority::Entry).await.err();
        assert_eq!(refused, Some(Shed::InFlight));
        while o.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(first);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn a_wait_ends_in_a_refusal_at_the_queue_timeout() {
        let o = Overload::new(settings(1, Duration::from_millis(200)));
        let _first = o.admit(Priority::Media).await.unwrap();
        let asked = Instant::now();
        assert_eq!(
            o.admit(Priority::Playlist).await.err(),
            Some(Shed::InFlight)
        );
        assert!(asked.elapsed() >= Duration::from_millis(200));
        assert_eq!(o.waiting.load(Ordering::SeqCst), 0);
    }
}
