//! Fault steps: at its time, each step sends its HTTP request, signal or
//! shell command, and the outcome goes into the report (and onto the
//! charts' time axis). Only shard 0 acts, so a sharded run kills a node
//! once.

use std::time::{Duration, Instant, SystemTime};

use fanout_config::{FaultAction, ScenarioConfig};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant as TokioInstant};
use tokio_util::sync::CancellationToken;

use super::arrivals::Shard;
use super::report::FaultRecord;

pub struct Faults {
    tasks: JoinSet<Option<FaultRecord>>,
}

pub fn schedule(
    scenario: &ScenarioConfig,
    started: Instant,
    shard: Shard,
    end: CancellationToken,
) -> Faults {
    let mut tasks = JoinSet::new();
    if shard.index == 0 {
        for step in scenario.faults.clone() {
            let end = end.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = sleep_until(TokioInstant::from_std(started + step.at.get())) => {}
                    _ = end.cancelled() => return None,
                }
                let at = started.elapsed();
                let outcome = act(step.action()).await;
                match &outcome {
                    Ok(o) => tracing::info!(fault = %step.label(), outcome = %o, "fault step"),
                    Err(e) => {
                        tracing::warn!(fault = %step.label(), error = %e, "fault step failed")
                    }
                }
                Some(FaultRecord {
                    at_s: at.as_secs_f64(),
                    name: step.label(),
                    ok: outcome.is_ok(),
                    outcome: outcome.unwrap_or_else(|e| e),
                })
            });
        }
    }
    Faults { tasks }
}

impl Faults {
    /// The steps that ran, in time order.
    pub async fn finish(mut self) -> Vec<FaultRecord> {
        let mut done = Vec::new();
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(Some(r)) = r {
                done.push(r);
            }
        }
        done.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        done
    }
}

async fn act(action: FaultAction<'_>) -> Result<String, String> {
    match action {
        FaultAction::Http(h) => {
            let method =
                http::Method::from_bytes(h.method.as_bytes()).map_err(|e| e.to_string())?;
            let mut req = http::Request::builder().method(method).uri(&h.url);
            for line in &h.headers {
                if let Some((n, v)) = line.split_once(':') {
                    req = req.header(n.trim(), v.trim());
                }
            }
            let req = req
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| e.to_string())?;
            let client = crate::client::client();
            let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .map_err(|_| "no answer within 10 s".to_string())?
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(format!("status {}", resp.status()))
            } else {
                Err(format!("status {}", resp.status()))
            }
        }
        FaultAction::Signal(s) => {
            let name = s.signal.trim_start_matches("SIG").to_string();
            let pid = s.pid.to_string();
            run(tokio::process::Command::new("kill").args(["-s", &name, &pid])).await
        }
        FaultAction::Command(c) => run(tokio::process::Command::new("sh").args(["-c", c])).await,
    }
}

async fn run(cmd: &mut tokio::process::Command) -> Result<String, String> {
    let began = SystemTime::now();
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.kill_on_drop(true).output())
        .await
        .map_err(|_| "still running after 30 s; killed".to_string())?
        .map_err(|e| format!("cannot run: {e}"))?;
    let took = began.elapsed().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        Ok(format!("exit 0 after {} ms", took.as_millis()))
    } else {
        Err(format!("{}: {stderr}", out.status))
    }
}
