//! What a person watching the run sees: a progress bar with the current
//! rate, p99, errors, hit ratio and audience on a terminal, or one plain
//! line every five seconds in a log; and the process's memory, sampled to
//! report the cost of a viewer.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::recorder::Recorder;
use super::report::MemoryFigures;
use super::Audience;

pub struct Display {
    task: Option<(JoinHandle<()>, Option<ProgressBar>)>,
}

impl Display {
    pub(super) fn start(
        enabled: bool,
        duration: Duration,
        recorder: Arc<Recorder>,
        audience: Arc<Audience>,
        end: CancellationToken,
    ) -> Display {
        if !enabled {
            return Display { task: None };
        }
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(duration.as_secs().max(1));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:25} {pos}/{len} s  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let period = if shown.is_some() { 500 } else { 5000 };
            let mut tick = tokio::time::interval(Duration::from_millis(period));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = end.cancelled() => return,
                }
                let elapsed = recorder.started().elapsed();
                let line = status_line(&recorder, &audience);
                match &shown {
                    Some(bar) => {
                        bar.set_position(elapsed.as_secs().min(duration.as_secs()));
                        bar.set_message(line);
                    }
                    None => eprintln!("[{:>4}s/{}s] {line}", elapsed.as_secs(), duration.as_secs()),
                }
            }
        });
        Display {
            task: Some((task, bar)),
        }
    }

    pub fn finish(self) {
        if let Some((task, bar)) = self.task {
            task.abort();
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
    }
}

/// The last whole second's figures.
fn status_line(recorder: &Recorder, audience: &Audience) -> String {
    let g = recorder.lock();
    let n = g.timeline.len();
    let last = n.checked_sub(2).and_then(|i| g.timeline.get(i));
    let errors: u64 = g.errors.iter().sum();
    let seen = g.hits + g.misses;
    let hit = if seen > 0 {
        format!("{:.1}%", 100.0 * g.hits as f64 / seen as f64)
    } else {
        "n/a".into()
    };
    match last {
        Some(b) => format!(
            "{} req/s  p99 {:.1} ms  errors {errors}  hit {hit}  viewers {}",
            b.requests,
            b.latency.value_at_quantile(0.99) as f64 / 1000.0,
            audience.active()
        ),
        None => format!("starting  viewers {}", audience.active()),
    }
}

/// Resident memory at the start and at its peak, and the audience then.
#[derive(Clone)]
pub struct Memory {
    baseline: u64,
    peak: Arc<AtomicU64>,
    peak_viewers: Arc<AtomicU64>,
}

impl Memory {
    pub fn start() -> Memory {
        let baseline = resident_bytes().unwrap_or(0);
        Memory {
            baseline,
            peak: Arc::new(AtomicU64::new(baseline)),
            peak_viewers: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn sample(&self, viewers: u64) {
        if let Some(rss) = resident_bytes() {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        self.peak_viewers.fetch_max(viewers, Ordering::Relaxed);
    }

    pub fn figures(&self) -> MemoryFigures {
        let peak = self.peak.load(Ordering::Relaxed);
        let viewers = self.peak_viewers.load(Ordering::Relaxed);
        MemoryFigures {
            baseline_rss_bytes: self.baseline,
            peak_rss_bytes: peak,
            peak_viewers: viewers,
            bytes_per_viewer: (viewers > 0).then(|| peak.saturating_sub(self.baseline) / viewers),
        }
    }
}

/// This process's resident set, from /proc (Linux only).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// CPU time (user and system) this process has used so far, from /proc
/// (Linux only).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, field 2, is in parentheses and may hold spaces:
    // count fields from the last ')', where field 3 begins.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / rustix::param::clock_ticks_per_second() as f64)
}
