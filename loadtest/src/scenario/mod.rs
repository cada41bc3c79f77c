//! Playing a `kind: scenario` file: arrivals on schedule (open loop: a
//! slow target never slows the offered load), viewers that behave like
//! players, population targets and drains, fault steps at their times, a
//! live progress display, and a [`Report`] at the end.
//!
//! Owns: the run loop ([`run`]). The schedule is in [`arrivals`], viewer
//! behaviour in [`viewers`], measurement in [`recorder`], and what is made
//! of it in [`report`] and [`html`].

pub mod arrivals;
mod faults;
pub mod html;
mod progress;
pub mod recorder;
pub mod report;
pub mod viewers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fanout_config::{ScenarioConfig, ViewerModel};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;

pub use arrivals::{Arrival, Arrivals, Shard};
pub use report::Report;

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
            progress: false,
            own_process: true,
        }
    }
}

enum Model {
    Live(LiveModel),
    Vod(VodModel),
    Static(StaticModel),
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
                ..
            } => Model::Live(LiveModel {
                stream: stream.clone(),
                abr_down: *abr_down,
                abr_up: *abr_up,
                start_behind: *start_behind,
            }),
            ViewerModel::Vod {
                titles,
                zipf,
                seek_probability,
                watch_segments,
                read_ahead,
                ..
            } => Model::Vod(VodModel {
                titles: Zipf::new(*titles, *zipf),
                seek_probability: *seek_probability,
                watch_segments: *watch_segments,
                read_ahead: *read_ahead,
            }),
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
    });
    let models = Arc::new(models(scenario));
    let audience = Arc::new(Audience::default());
    let memory = progress::Memory::start();
    let origin_before = match origin {
        Some(o) => crate::origin::fetch_stats(o).await.ok(),
        None => None,
    };

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

    let mut viewers = JoinSet::new();
    let mut schedule = Arrivals::new(scenario).filter(|a| options.shard.owns(a.index));
    let limit = |phase: usize| {
        scenario.phases[phase]
            .population
            .div_ceil(u64::from(options.shard.count))
    };
    for arrival in schedule.by_ref() {
        let at = started + arrival.at;
        tokio::select! {
            _ = sleep_until(TokioInstant::from_std(at)) => {}
            _ = end.cancelled() => break,
        }
        // Reap finished viewers so the set does not grow with the run.
        while viewers.try_join_next().is_some() {}
        if audience.active() >= limit(arrival.phase) {
            audience.turned_away.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A static request is over in moments: it is not sent away in a
        // drain, so it skips the bookkeeping that would allow it.
        let leave = if matches!(models[arrival.model], Model::Static(_)) {
            audience.active.fetch_add(1, Ordering::Relaxed);
            audience.arrived.fetch_add(1, Ordering::Relaxed);
            end.clone()
        } else {
            let leave = end.child_token();
            audience.join(arrival.index, leave.clone());
            leave
        };
        let viewer = Viewer {
            ctx: ctx.clone(),
            target: addresses[(arrival.index as usize) % addresses.len()],
            rng: fastrand::Rng::with_seed(arrival.seed),
            leave,
        };
        let (models, audience) = (models.clone(), audience.clone());
        viewers.spawn(async move {
            let registered = match &models[arrival.model] {
                // Boxed: a spawned future is copied whole, and a live or
                // VOD viewer's is several times the size of a static
                // request's, which is most arrivals.
                Model::Live(m) => {
                    Box::pin(viewers::live(viewer, m, at)).await;
                    true
                }
                Model::Vod(m) => {
                    Box::pin(viewers::vod(viewer, m, at)).await;
                    true
                }
                Model::Static(m) => {
                    viewers::static_object(viewer, m, at).await;
                    false
                }
            };
            audience.left(arrival.index, registered);
        });
    }
    // The schedule is exhausted before the last phase ends when it closes
    // with no arrivals: let the audience watch to the end.
    tokio::select! {
        _ = sleep_until(TokioInstant::from_std(started + duration)) => {}
        _ = end.cancelled() => {}
    }
    let elapsed = started.elapsed();
    end.cancel();
    while viewers.join_next().await.is_some() {}
    let _ = population.await;
    let _ = sampler.await;
    let fault_log = faults.finish().await;
    display.finish();
    let origin_after = match origin {
        Some(o) => crate::origin::fetch_stats(o).await.ok(),
        None => None,
    };
    let origin_figures = match (origin_before, origin_after) {
        (Some(b), Some(a)) => Some(report::OriginFigures {
            requests: a.requests.saturating_sub(b.requests),
            bytes: a.body_bytes.saturating_sub(b.body_bytes),
        }),
        _ => None,
    };
    let inner = recorder.lock();
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
        faults: fault_log,
    })
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
                    let d = last_origin.map(|l| s.requests.saturating_sub(l));
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
