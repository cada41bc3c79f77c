//! Playing a `kind: scenario` file: arrivals on schedule (open loop: a
//! slow target never slows the offered load), viewers that behave like
//! players, population targets and drains, fault steps at their times, a
//! live progress display, and a [`Report`] at the end.
//!
//! Owns: the run loop ([`run`]). The schedule is in [`arrivals`], viewer
//! behaviour in [`viewers`], measurement in [`recorder`], and what is made
//! of it in [`report`] and [`html`].

mod alarm;
pub mod arrivals;
pub mod cache_metrics;
mod faults;
pub mod html;
mod progress;
pub mod recorder;
pub mod report;
pub mod viewers;
mod wakeups;

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use fanout_config::{ScenarioConfig, ViewerModel};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pub use arrivals::{Arrival, Arrivals, Shard};
pub use report::Report;

use alarm::Alarm;
use arrivals::Zipf;
use recorder::Recorder;
use viewers::{Ctx, LiveModel, StaticModel, Viewer, VodModel};

/// How to play a scenario here.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub shard: Shard,
    /// Replaces the scenario's target addresses (e.g. the proxies of a
    /// cluster started on free ports).
    pub addresses: Option<Vec<SocketAddr>>,
    pub host: Option<String>,
    pub origin: Option<SocketAddr>,
    /// Replaces the scenario's `target.metrics` (cache nodes' admin
    /// listeners).
    pub metrics: Option<Vec<SocketAddr>>,
    /// Show progress: a bar on a terminal, a line every few seconds
    /// otherwise; nothing when false.
    pub progress: bool,
    /// The generator has the process to itself, so its memory is the
    /// viewers' (false inside `fanout up --demo`, beside the cluster).
    pub own_process: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            shard: Shard::WHOLE,
            addresses: None,
            host: None,
            origin: None,
            metrics: None,
            progress: false,
            own_process: true,
        }
    }
}

enum Model {
    /// A viewer that stays: a task of its own, sharing its model.
    Player(Arc<Player>),
    /// One request, driven by the dispatcher.
    Static(StaticModel),
}

enum Player {
    Live(LiveModel),
    Vod(VodModel),
}

fn models(scenario: &ScenarioConfig) -> Vec<Model> {
    scenario
        .mix
        .iter()
        .map(|m| match m {
            ViewerModel::Live {
                stream,
                abr_down,
                abr_up,
                start_behind,
                cmcd,
                ..
            } => Model::Player(Arc::new(Player::Live(LiveModel {
                stream: stream.clone(),
                abr_down: *abr_down,
                abr_up: *abr_up,
                start_behind: *start_behind,
                cmcd: *cmcd,
            }))),
            ViewerModel::Vod {
                titles,
                zipf,
                seek_probability,
                watch_segments,
                read_ahead,
                ..
            } => Model::Player(Arc::new(Player::Vod(VodModel {
                titles: Zipf::new(*titles, *zipf),
                seek_probability: *seek_probability,
                watch_segments: *watch_segments,
                read_ahead: *read_ahead,
            }))),
            ViewerModel::Static {
                prefix,
                count,
                zipf,
                ..
            } => Model::Static(StaticModel {
                prefix: prefix.clone(),
                objects: Zipf::new(*count, *zipf),
            }),
        })
        .collect()
}

/// Viewers watching now, and how to ask some of them to leave.
#[derive(Default)]
struct Audience {
    active: AtomicU64,
    arrived: AtomicU64,
    /// Arrivals not admitted because the phase's population was reached.
    turned_away: AtomicU64,
    leavers: Mutex<HashMap<u64, CancellationToken>>,
}

impl Audience {
    fn join(&self, index: u64, leave: CancellationToken) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.arrived.fetch_add(1, Ordering::Relaxed);
        self.leavers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(index, leave);
    }

    fn left(&self, index: u64, registered: bool) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        if !registered {
            return;
        }
        self.leavers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
    }

    /// Asks viewers to leave until `n` are on their way out.
    fn send_away(&self, n: u64) {
        let leavers = self.leavers.lock().unwrap_or_else(PoisonError::into_inner);
        let leaving = leavers.values().filter(|t| t.is_cancelled()).count() as u64;
        let more = n.saturating_sub(leaving) as usize;
        for token in leavers.values().filter(|t| !t.is_cancelled()).take(more) {
            token.cancel();
        }
    }

    fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// Plays `scenario` until its phases end or `cancel` fires.
pub async fn run(
    scenario: &ScenarioConfig,
    options: RunOptions,
    cancel: CancellationToken,
) -> Report {
    let addresses = options
        .addresses
        .clone()
        .unwrap_or_else(|| scenario.target.addresses.clone());
    let origin = options.origin.or(scenario.target.origin);
    let duration = scenario.duration();
    let started = Instant::now();
    let wall_start = std::time::SystemTime::now();
    let end = cancel.child_token();
    let recorder = Arc::new(Recorder::new(started));
    let ctx = Arc::new(Ctx {
        pool: crate::h1::Pool::new(&addresses, scenario.limits.connect_timeout.get()),
        addresses: addresses.clone(),
        host: options
            .host
            .clone()
            .unwrap_or_else(|| scenario.target.host.clone()),
        timeout: scenario.limits.request_timeout.get(),
        slots: Semaphore::new(scenario.limits.max_in_flight as usize),
        recorder: recorder.clone(),
        end: end.clone(),
        wakeups: wakeups::Wakeups::start(),
    });
    let models = models(scenario);
    let audience = Arc::new(Audience::default());
    let memory = progress::Memory::start();
    let cpu_before = progress::cpu_seconds();
    let origin_before = match origin {
        Some(o) => crate::origin::fetch_stats(o).await.ok(),
        None => None,
    };
    let metrics = options
        .metrics
        .clone()
        .unwrap_or_else(|| scenario.target.metrics.clone());
    let caches_before = cache_metrics::scrape(&metrics).await;

    let faults = faults::schedule(scenario, started, options.shard, end.clone());
    let sampler = tokio::spawn(sample(
        recorder.clone(),
        audience.clone(),
        origin,
        end.clone(),
        memory.clone(),
    ));
    let display = progress::Display::start(
        options.progress,
        duration,
        recorder.clone(),
        audience.clone(),
        end.clone(),
    );
    let population = tokio::spawn(hold_population(
        scenario.clone(),
        options.shard,
        started,
        audience.clone(),
        end.clone(),
    ));

    let dispatcher = tokio::spawn(dispatch(Dispatch {
        scenario: scenario.clone(),
        shard: options.shard,
        started,
        ctx,
        addresses: addresses.clone(),
        models,
        audience: audience.clone(),
        end: end.clone(),
    }));
    let (elapsed, arrival_lateness) = match dispatcher.await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    // Beside a cluster (`fanout up --demo`) the process's CPU is not the
    // generator's alone.
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let cpu_busy = match (options.own_process, cpu_before, progress::cpu_seconds()) {
        (true, Some(before), Some(after)) => {
            Some((after - before) / (elapsed.as_secs_f64().max(0.001) * workers as f64))
        }
        _ => None,
    };
    let _ = population.await;
    let _ = sampler.await;
    let fault_log = faults.finish().await;
    display.finish();
    let origin_after = match origin {
        Some(o) => crate::origin::fetch_stats(o).await.ok(),
        None => None,
    };
    let prefetch = cache_metrics::scrape(&metrics).await.since(&caches_before);
    let origin_figures = match (origin_before, origin_after) {
        (Some(b), Some(a)) => {
            // Live segments the run made the origin serve, and how often.
            let (mut live_segments, mut live_segment_requests) = (0, 0);
            for (path, n) in &a.paths {
                let before = b.paths.get(path).copied().unwrap_or(0);
                if n > &before && path.starts_with("/live/") && path.ends_with(".ts") {
                    live_segments += 1;
                    live_segment_requests += n - before;
                }
            }
            Some(report::OriginFigures {
                requests: a.requests.saturating_sub(b.requests),
                bytes: a.body_bytes.saturating_sub(b.body_bytes),
                live_segments,
                live_segment_requests,
            })
        }
        _ => None,
    };
    let inner = recorder.lock();
    // One figure for the generator's punctuality: arrivals and viewers'
    // later requests alike. Both histograms have the same bounds.
    let mut lateness = arrival_lateness;
    let _ = lateness.add(&inner.wake_lateness);
    Report::build(report::Inputs {
        scenario,
        shard: options.shard,
        started_at: wall_start,
        elapsed,
        recorder: &inner,
        arrived: audience.arrived.load(Ordering::Relaxed),
        turned_away: audience.turned_away.load(Ordering::Relaxed),
        memory: if options.own_process {
            memory.figures()
        } else {
            report::MemoryFigures::default()
        },
        origin: origin_figures,
        prefetch,
        faults: fault_log,
        arrival_lateness: &lateness,
        cpu_busy,
    })
}

/// What the dispatcher needs, owned: it runs as a task of its own.
struct Dispatch {
    scenario: ScenarioConfig,
    shard: Shard,
    started: Instant,
    ctx: Arc<Ctx>,
    addresses: Vec<SocketAddr>,
    models: Vec<Model>,
    audience: Arc<Audience>,
    end: CancellationToken,
}

/// Starts each arrival at its time until the run ends, then waits for
/// every viewer to leave; returns how long the run lasted, and how late
/// (in microseconds) each arrival started.
///
/// It runs as a runtime task, not on the thread that called [`run`]: a
/// task spawned from outside the runtime's workers goes through the
/// shared queue and wakes a parked worker, a context switch per arrival.
/// Live and VOD viewers are tasks of their own. Static requests, most
/// arrivals and over in moments, are futures this task drives itself, so
/// one costs no task, no join-set entry and no cancellation token; those
/// still in flight when the run ends are dropped, and so not counted, as a
/// viewer who leaves mid-request is not.
async fn dispatch(d: Dispatch) -> (Duration, Histogram<u64>) {
    let Dispatch {
        scenario,
        shard,
        started,
        ctx,
        addresses,
        models,
        audience,
        end,
    } = d;
    let mut viewers = JoinSet::new();
    let mut lateness = recorder::latency_histogram(2);
    let mut in_flight = InFlight {
        requests: FuturesUnordered::new(),
        alarm: Alarm::new(started),
        cancelled: Box::pin(end.cancelled()),
        now: started,
    };
    let limit = |phase: usize| {
        scenario.phases[phase]
            .population
            .div_ceil(u64::from(shard.count))
    };
    for arrival in Arrivals::new(&scenario).filter(|a| shard.owns(a.index)) {
        let at = started + arrival.at;
        if !in_flight.drive_until(at).await {
            break;
        }
        // `now` as the dispatcher last read it: at most a burst's work old.
        lateness.saturating_record(recorder::micros(
            in_flight.now.saturating_duration_since(at),
        ));
        if audience.active() >= limit(arrival.phase) {
            audience.turned_away.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let target = addresses[(arrival.index as usize) % addresses.len()];
        let rng = fastrand::Rng::with_seed(arrival.seed);
        let player = match &models[arrival.model] {
            Model::Player(p) => p.clone(),
            Model::Static(m) => {
                audience.active.fetch_add(1, Ordering::Relaxed);
                audience.arrived.fetch_add(1, Ordering::Relaxed);
                let viewer = Viewer {
                    ctx: ctx.clone(),
                    target,
                    rng,
                    leave: None,
                };
                let audience = &audience;
                in_flight.requests.push(async move {
                    viewers::static_object(viewer, m, at).await;
                    audience.left(arrival.index, false);
                });
                continue;
            }
        };
        // Reap finished viewers so the set does not grow with the run.
        while viewers.try_join_next().is_some() {}
        let leave = end.child_token();
        audience.join(arrival.index, leave.clone());
        let viewer = Viewer {
            ctx: ctx.clone(),
            target,
            rng,
            leave: Some(leave),
        };
        let audience = audience.clone();
        viewers.spawn(async move {
            // Boxed: a spawned future is copied whole, and a live or VOD
            // viewer's is several times the size of most.
            match &*player {
                Player::Live(m) => Box::pin(viewers::live(viewer, m, at)).await,
                Player::Vod(m) => Box::pin(viewers::vod(viewer, m, at)).await,
            }
            audience.left(arrival.index, true);
        });
    }
    // The schedule is exhausted before the last phase ends when it closes
    // with no arrivals: let the audience watch to the end.
    in_flight.drive_until(started + scenario.duration()).await;
    let elapsed = started.elapsed();
    end.cancel();
    let dropped = in_flight.requests.len() as u64;
    drop(in_flight);
    audience.active.fetch_sub(dropped, Ordering::Relaxed);
    while viewers.join_next().await.is_some() {}
    (elapsed, lateness)
}

/// The static requests in flight, which the dispatcher drives while it
/// waits for the next arrival.
struct InFlight<'a, F> {
    requests: FuturesUnordered<F>,
    /// Re-armed only when an arrival is not yet due, which at a high rate
    /// is seldom: arming a timer costs more than the request's own work.
    alarm: Alarm,
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
    /// The clock as last read: arrivals come in bursts (the alarm rings
    /// at most every 200 µs), and a burst needs one read, not one per
    /// arrival.
    now: Instant,
}

impl<F: Future<Output = ()>> InFlight<'_, F> {
    /// Drives the requests until `at`; false once the run is cancelled.
    async fn drive_until(&mut self, at: Instant) -> bool {
        poll_fn(|cx| {
            if self.cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            while let Poll::Ready(Some(())) = self.requests.poll_next_unpin(cx) {}
            if at <= self.now {
                return Poll::Ready(true);
            }
            loop {
                self.now = Instant::now();
                if at <= self.now {
                    return Poll::Ready(true);
                }
                // A ring means "look at the clock": it may come for a
                // deadline shared with earlier arrivals.
                ready!(self.alarm.poll_ring(cx, at, self.now));
            }
        })
        .await
    }
}

/// Once a second: active viewers, the origin's request count, memory.
async fn sample(
    recorder: Arc<Recorder>,
    audience: Arc<Audience>,
    origin: Option<SocketAddr>,
    end: CancellationToken,
    memory: progress::Memory,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_origin: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = end.cancelled() => return,
        }
        let now = Instant::now();
        let active = audience.active();
        memory.sample(active);
        let delta = match origin {
            Some(o) => match crate::origin::fetch_stats(o).await {
                Ok(s) => {
                    // The first reading is where counting starts: 0.
                    let d = Some(last_origin.map_or(0, |l| s.requests.saturating_sub(l)));
                    last_origin = Some(s.requests);
                    d
                }
                Err(_) => None,
            },
            None => None,
        };
        recorder.sample(now, active, delta);
    }
}

/// Drains: when more viewers watch than a phase's population, some leave,
/// evenly over the phase, until the population is reached.
async fn hold_population(
    scenario: ScenarioConfig,
    shard: Shard,
    started: Instant,
    audience: Arc<Audience>,
    end: CancellationToken,
) {
    let mut phase_start = started;
    for phase in &scenario.phases {
        let phase_end = phase_start + phase.duration.get();
        let target = phase.population.div_ceil(u64::from(shard.count));
        let at_start = audience.active();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while Instant::now() < phase_end {
            tokio::select! {
                _ = tick.tick() => {}
                _ = end.cancelled() => return,
            }
            if at_start <= target {
                continue;
            }
            let done =
                (Instant::now() - phase_start).as_secs_f64() / phase.duration.get().as_secs_f64();
            let allowed = at_start - ((at_start - target) as f64 * done.min(1.0)) as u64;
            let active = audience.active();
            if active > allowed {
                audience.send_away(active - allowed);
            }
        }
        phase_start = phase_end;
    }
}
