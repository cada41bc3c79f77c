//! `fanout loadtest ...`: load tools run from the command line.

use std::process::ExitCode;

use fanout_loadtest::flash::{self, FlashCrowd};
use tokio_util::sync::CancellationToken;

use crate::cli::LoadtestTool;

pub async fn run(tool: LoadtestTool, shutdown: CancellationToken) -> ExitCode {
    match tool {
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
