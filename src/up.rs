//! `fanout up`: a whole local cluster in one process, started from one
//! `kind: up` file (or the built-in quickstart), each part through the same
//! `run` its own subcommand uses.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fanout_config::{HostPattern, UpConfig};
use fanout_loadtest::live::LiveLoad;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const QUICKSTART: &str = include_str!("../examples/quickstart.yaml");
const QUICKSTART_NAME: &str = "examples/quickstart.yaml (built in)";

/// How long every listener has to come up before `up` gives up.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long parts may take to drain on shutdown.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

pub async fn run(file: Option<&Path>, demo: bool, shutdown: CancellationToken) -> ExitCode {
    let loaded = match file {
        Some(f) => fanout_config::load_up(f),
        None => match fanout_config::load_str(Path::new(QUICKSTART_NAME), QUICKSTART) {
            Ok(fanout_config::AnyConfig::Up(u)) => Ok(u),
            Ok(_) => unreachable!("the quickstart is a kind: up file"),
            Err(e) => Err(e),
        },
    };
    let config = match loaded {
        Ok(c) => *c,
        Err(e) => return crate::config_failed(&e),
    };
    let demo_plan = if demo {
        match plan_demo(&config) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("fanout up --demo: {e}");
                return ExitCode::from(crate::EXIT_CONFIG);
            }
        }
    } else {
        None
    };

    // Parts stop on their own token, so a failing part can stop the rest
    // without being mistaken for Ctrl-C.
    let parts_token = CancellationToken::new();
    let mut parts = start(&config, &parts_token);
    let outcome = tokio::select! {
        r = wait_ready(&config) => r,
        Some(failed) = parts.join_next() => Err(part_failure(failed)),
    };
    let code = match outcome {
        Err(e) => {
            eprintln!("fanout up: {e:#}");
            ExitCode::FAILURE
        }
        Ok(()) => {
            print_banner(&config);
            match demo_plan {
                Some(load) => run_demo(&config, load, &shutdown).await,
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => ExitCode::SUCCESS,
                        Some(failed) = parts.join_next() => {
                            eprintln!("fanout up: {:#}", part_failure(failed));
                            ExitCode::FAILURE
                        }
                    }
                }
            }
        }
    };
    parts_token.cancel();
    let drained = tokio::time::timeout(STOP_DEADLINE, async {
        while let Some(r) = parts.join_next().await {
            if let Ok((name, Err(e))) = r {
                tracing::warn!(part = %name, error = %format!("{e:#}"), "part stopped with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some parts did not stop within {STOP_DEADLINE:?}");
    }
    code
}

type PartResult = (String, anyhow::Result<()>);

fn start(config: &UpConfig, token: &CancellationToken) -> JoinSet<PartResult> {
    let mut parts = JoinSet::new();
    if let Some(origin) = config.origin.clone() {
        let t = token.clone();
        parts.spawn(async move {
            (
                "origin".to_string(),
                fanout_loadtest::origin::run(origin, t)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    for c in config.cache_node_configs() {
        let t = token.clone();
        parts.spawn(async move {
            (
                c.id.clone(),
                fanout_cache_node::run(c, t).await.map_err(Into::into),
            )
        });
    }
    for p in config.proxy_configs() {
        let t = token.clone();
        parts.spawn(async move {
            (
                p.id.clone(),
                fanout_proxy::run(p, t).await.map_err(Into::into),
            )
        });
    }
    parts
}

fn part_failure(r: Result<PartResult, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok((name, Err(e))) => e.context(format!("{name} failed")),
        Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped unexpectedly"),
        Err(e) => anyhow::anyhow!("a part crashed: {e}"),
    }
}

/// Every address a part listens on, as a client on this host reaches it.
fn listeners(config: &UpConfig) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = config.origin.iter().map(|o| o.listen).collect();
    for n in &config.cache_nodes {
        addrs.push(n.listen);
        addrs.extend(n.admin_listen);
    }
    for p in &config.proxies {
        addrs.push(p.listen);
        addrs.extend(p.admin_listen);
    }
    addrs.into_iter().map(reachable).collect()
}

/// 0.0.0.0 is where to listen, not where to connect.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

async fn wait_ready(config: &UpConfig) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    for addr in listeners(config) {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(anyhow::anyhow!(
                        "{addr} did not start listening within {START_DEADLINE:?}: {e}"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    Ok(())
}

fn first_host(config: &UpConfig) -> Option<String> {
    config
        .cluster
        .sites
        .iter()
        .flat_map(|s| &s.hosts)
        .find_map(|h| match h {
            HostPattern::Exact(h) => Some(h.clone()),
            HostPattern::Wildcard(_) => None,
        })
}

fn plan_demo(config: &UpConfig) -> anyhow::Result<LiveLoad> {
    let origin = config
        .origin
        .as_ref()
        .context("the demo needs the synthetic origin (an `origin:` section)")?;
    let stream = match &config.demo.stream {
        Some(s) => s.clone(),
        None => origin
            .live
            .first()
            .context("the demo needs a live stream under origin.live")?
            .name
            .clone(),
    };
    let host = match &config.demo.host {
        Some(h) => h.clone(),
        None => first_host(config)
            .context("the demo needs a site with an exact host name (or demo.host)")?,
    };
    Ok(LiveLoad {
        targets: config.proxies.iter().map(|p| reachable(p.listen)).collect(),
        host,
        stream,
        viewers: config.demo.viewers,
        duration: config.demo.duration.get(),
        ramp: config.demo.ramp.get(),
        seed: 1,
        request_timeout: Duration::from_secs(10),
    })
}

fn print_banner(config: &UpConfig) {
    let host = first_host(config).unwrap_or_else(|| "localhost".into());
    let proxy = reachable(config.proxies[0].listen);
    let mut out = format!(
        "\nFanout is up: {}{} cache nodes, {} proxies.\n\n",
        if config.origin.is_some() {
            "1 synthetic origin, "
        } else {
            ""
        },
        config.cache_nodes.len(),
        config.proxies.len()
    );
    if let Some(origin) = &config.origin {
        if let Some(live) = origin.live.first() {
            out += &format!(
                "  Try:  curl -i -H 'Host: {host}' http://{proxy}/live/{}/master.m3u8\n",
                live.name
            );
        }
        out += &format!(
            "        curl http://{}/_origin/stats\n\n",
            reachable(origin.listen)
        );
    }
    for p in &config.proxies {
        out += &format!("  proxy {:<10} http://{}", p.id, reachable(p.listen));
        if let Some(a) = p.admin_listen {
            out += &format!("   admin http://{}/metrics", reachable(a));
        }
        out.push('\n');
    }
    for n in &config.cache_nodes {
        out += &format!("  cache {:<10} http://{}", n.id, reachable(n.listen));
        if let Some(a) = n.admin_listen {
            out += &format!("   admin http://{}/metrics", reachable(a));
        }
        out.push('\n');
    }
    println!("{out}");
}

async fn run_demo(config: &UpConfig, load: LiveLoad, shutdown: &CancellationToken) -> ExitCode {
    let origin = reachable(
        config
            .origin
            .as_ref()
            .map(|o| o.listen)
            .expect("planned demos have an origin"),
    );
    let before = fanout_loadtest::origin::fetch_stats(origin).await;
    println!(
        "Running the demo: {} live viewers of /live/{}/ for {}, spread over {} proxies...",
        load.viewers,
        load.stream,
        humantime::format_duration(load.duration),
        load.targets.len()
    );
    let summary = fanout_loadtest::live::run(load, shutdown.clone()).await;
    let after = fanout_loadtest::origin::fetch_stats(origin).await;
    let origin_requests = match (before, after) {
        (Ok(b), Ok(a)) => Some(a.requests.saturating_sub(b.requests)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fanout up --demo: {e}");
            None
        }
    };
    println!("\n{}", summary.render(origin_requests));
    if shutdown.is_cancelled() {
        println!("Interrupted.");
        return ExitCode::from(130);
    }
    if summary.requests == 0 || summary.errors > 0 {
        eprintln!(
            "fanout up --demo: failed: {} of {} requests failed",
            summary.errors, summary.requests
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
