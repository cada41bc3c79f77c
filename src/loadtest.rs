//! `fanout loadtest ...`: load tools run from the command line.

use std::process::ExitCode;

use std::path::Path;

use fanout_loadtest::flash::{self, FlashCrowd};
use fanout_loadtest::scenario::report::{Report, Threshold};
use fanout_loadtest::scenario::{self, RunOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::LoadtestTool;

pub async fn run(tool: LoadtestTool, shutdown: CancellationToken) -> ExitCode {
    match tool {
        LoadtestTool::Run {
            scenario,
            target,
            host,
            origin,
            metrics,
            shard,
            json,
            html,
            fail_if,
            quiet,
        } => {
            let config = match fanout_config::load_scenario(&scenario) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(crate::EXIT_CONFIG);
                }
            };
            let options = RunOptions {
                shard,
                addresses: (!target.is_empty()).then_some(target),
                host,
                origin,
                metrics: (!metrics.is_empty()).then_some(metrics),
                progress: !quiet,
                own_process: true,
            };
            if !quiet {
                eprintln!(
                    "Playing {:?} for {} (shard {shard}); Ctrl-C stops early and still reports.",
                    config.name,
                    humantime::format_duration(config.duration())
                );
            }
            let report = scenario::run(&config, options, shutdown).await;
            finish(&report, json.as_deref(), html.as_deref(), &fail_if)
        }
        LoadtestTool::Merge {
            reports,
            json,
            html,
            fail_if,
        } => {
            let mut parsed = Vec::new();
            for path in &reports {
                let read = std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str::<Report>(&t).map_err(|e| e.to_string()));
                match read {
                    Ok(r) => parsed.push(r),
                    Err(e) => {
                        eprintln!("fanout loadtest merge: {}: {e}", path.display());
                        return ExitCode::from(crate::EXIT_CONFIG);
                    }
                }
            }
            match Report::merge(parsed) {
                Ok(report) => finish(&report, json.as_deref(), html.as_deref(), &fail_if),
                Err(e) => {
                    eprintln!("fanout loadtest merge: {e}");
                    ExitCode::from(crate::EXIT_CONFIG)
                }
            }
        }
        LoadtestTool::ControlPlane {
            writes,
            agents,
            dir,
        } => {
            crate::control_bench::run(crate::control_bench::Options {
                writes,
                agents,
                dir,
            })
            .await
        }
        LoadtestTool::FlashCrowd {
            target,
            host,
            path,
            clients,
            spread,
            timeout,
            origin,
            json,
        } => {
            let crowd = FlashCrowd {
                target,
                host,
                path: path.clone(),
                clients,
                spread,
                timeout,
            };
            let before = match origin {
                Some(o) => origin_requests(o, &path).await,
                None => None,
            };
            let result = tokio::select! {
                r = flash::run(&crowd) => r,
                _ = shutdown.cancelled() => return ExitCode::from(130),
            };
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("fanout loadtest flash-crowd: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let origin_count = match (origin, before) {
                (Some(o), Some(b)) => origin_requests(o, &path).await.map(|a| a.saturating_sub(b)),
                _ => None,
            };
            if json {
                let v = serde_json::json!({
                    "clients": clients,
                    "ok": result.ok,
                    "errors": result.errors,
                    "collapsed": result.collapsed,
                    "hits": result.hits,
                    "caches": result.caches,
                    "body_bytes": result.body_bytes,
                    "p50_ms": result.ms(0.5),
                    "p99_ms": result.ms(0.99),
                    "max_ms": result.latency.max() as f64 / 1000.0,
                    "origin_requests": origin_count,
                    "first_error": result.first_error,
                });
                println!("{v}");
            } else {
                println!(
                    "flash crowd: {clients} clients, GET {path} from {target} within {}",
                    humantime::format_duration(spread)
                );
                println!(
                    "  ok {}, failed {}, collapsed {}, hits {}",
                    result.ok, result.errors, result.collapsed, result.hits
                );
                if !result.caches.is_empty() {
                    let per: Vec<String> = result
                        .caches
                        .iter()
                        .map(|(c, n)| format!("{c} {n}"))
                        .collect();
                    println!("  answered by {}", per.join(", "));
                }
                if result.ok > 0 {
                    println!(
                        "  latency p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
                        result.ms(0.5),
                        result.ms(0.99),
                        result.latency.max() as f64 / 1000.0
                    );
                }
                if let Some(n) = origin_count {
                    println!("  origin requests for {path}: {n}");
                }
                if let Some(e) = &result.first_error {
                    println!("  first error: {e}");
                }
            }
            if result.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

async fn origin_requests(origin: std::net::SocketAddr, path: &str) -> Option<u64> {
    match fanout_loadtest::origin::fetch_stats(origin).await {
        Ok(s) => Some(s.paths.get(path).copied().unwrap_or(0)),
        Err(e) => {
            eprintln!("fanout loadtest: {e}");
            None
        }
    }
}

/// Prints the summary, writes the reports asked for, and turns thresholds
/// into the exit status.
pub fn finish(
    report: &Report,
    json: Option<&Path>,
    html: Option<&Path>,
    fail_if: &[Threshold],
) -> ExitCode {
    print!("{}", report.render());
    let mut ok = true;
    if let Some(path) = json {
        match serde_json::to_string_pretty(report)
            .map_err(std::io::Error::other)
            .and_then(|t| std::fs::write(path, t + "\n"))
        {
            Ok(()) => println!("  JSON report  {}", path.display()),
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if let Some(path) = html {
        match std::fs::write(path, scenario::html::render(report)) {
            Ok(()) => println!("  HTML report  {}", path.display()),
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if fail_if.is_empty() {
        if report.totals.errors > 0 {
            println!("FAILED: {} requests failed", report.totals.errors);
            ok = false;
        }
    } else {
        for t in fail_if {
            match t.check(report) {
                Ok(v) => println!("  fail-if      {t}: no ({} is {v})", t.metric),
                Err(why) => {
                    println!("FAILED         fail-if {why}");
                    ok = false;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
