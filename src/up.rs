//! `fanout up`: a whole local cluster in one process, started from one
//! `kind: up` file (or the built-in quickstart), each part through the same
//! `run` its own subcommand uses.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fanout_config::ScenarioConfig;
use fanout_config::{HostPattern, UpConfig};
use fanout_loadtest::scenario::{self, RunOptions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const QUICKSTART: &str = include_str!("../examples/quickstart.yaml");
const QUICKSTART_NAME: &str = "examples/quickstart.yaml (built in)";
const DEMO_SCENARIO: &str = include_str!("../loadtest/scenarios/quickstart.yaml");
const DEMO_SCENARIO_NAME: &str = "loadtest/scenarios/quickstart.yaml (built in)";

/// How long every listener has to come up before `up` gives up.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long parts may take to drain on shutdown.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// What `--demo` asks for: where its reports go.
pub struct DemoArgs {
    pub report_dir: std::path::PathBuf,
}

pub async fn run(
    file: Option<&Path>,
    demo: Option<DemoArgs>,
    shutdown: CancellationToken,
) -> ExitCode {
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
    let demo_plan = match demo {
        Some(args) => match plan_demo(&config) {
            Ok(p) => Some((p, args)),
            Err(code) => return code,
        },
        None => None,
    };

    // Parts stop on their own token, so a failing part can stop the rest
    // without being mistaken for Ctrl-C.
    let parts_token = CancellationToken::new();
    let mut parts = JoinSet::new();
    let outcome = tokio::select! {
        r = start(&config, &parts_token, &mut parts) => r,
        _ = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let outcome = match outcome {
        Ok(control) => tokio::select! {
            r = wait_ready(&config) => r.map(|()| control),
            Some(failed) = parts.join_next() => Err(part_failure(failed)),
        },
        Err(e) => Err(e),
    };
    let code = match outcome {
        Err(e) => {
            eprintln!("fanout up: {e:#}");
            ExitCode::FAILURE
        }
        Ok(control) => {
            print_banner(&config, control.as_ref());
            match demo_plan {
                Some((plan, args)) => run_demo(plan, args, &shutdown).await,
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

/// A control plane `up` started, and where its secrets live.
struct ControlRun {
    servers: Vec<String>,
    token_file: std::path::PathBuf,
    /// Kept so a temporary data directory lives as long as the cluster.
    _temp: Option<tempfile::TempDir>,
}

/// Starts every part. With a control plane: the control nodes first, the
/// cluster config applied to them, then cache nodes (which register), then
/// proxies (which find the cache nodes registered).
async fn start(
    config: &UpConfig,
    token: &CancellationToken,
    parts: &mut JoinSet<PartResult>,
) -> anyhow::Result<Option<ControlRun>> {
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
    let control = match &config.control_plane {
        Some(cp) => Some(start_control(config, cp, token, parts).await?),
        None => None,
    };
    let source = |id: &str| {
        control.as_ref().map(|c| fanout_config::ControlSource {
            servers: c
                .servers
                .iter()
                .filter_map(|s| fanout_config::HostPort::try_from(s.clone()).ok())
                .collect(),
            token_file: c.token_file.clone(),
            state_file: c
                .token_file
                .with_file_name("state")
                .join(format!("{id}.json")),
            advertise: None,
            zone: None,
        })
    };
    // Proxies hand requests to the cache nodes of this process directly;
    // the sockets still serve every other client (and other proxies).
    let registry = fanout_server::in_process::InProcess::default();
    for mut c in config.cache_node_configs() {
        c.control = source(&c.id);
        let t = token.clone();
        let in_process = registry.clone();
        parts.spawn(async move {
            (
                c.id.clone(),
                fanout_cache_node::run(c, t, Some(in_process))
                    .await
                    .map_err(Into::into),
            )
        });
    }
    if let Some(c) = &control {
        wait_registered(c, config).await?;
    }
    for mut p in config.proxy_configs() {
        p.control = source(&p.id);
        let t = token.clone();
        let in_process = registry.clone();
        parts.spawn(async move {
            (
                p.id.clone(),
                fanout_proxy::run(p, None, t, Some(in_process))
                    .await
                    .map_err(Into::into),
            )
        });
    }
    Ok(control)
}

async fn start_control(
    config: &UpConfig,
    cp: &fanout_config::UpControlPlane,
    token: &CancellationToken,
    parts: &mut JoinSet<PartResult>,
) -> anyhow::Result<ControlRun> {
    let (temp, dir) = match &cp.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new().prefix("fanout-up-").tempdir()?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("data dir {}", dir.display()))?;
    // Secrets are made once per data directory and kept with it.
    let secret = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        let file = dir.join(name);
        if !file.exists() {
            let mut raw = [0u8; 24];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            let value: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&file, value).with_context(|| format!("{}", file.display()))?;
        }
        Ok(file)
    };
    let secret_file = secret("cluster.secret")?;
    let token_file = secret("write.token")?;
    let peers: Vec<fanout_config::ControlPeer> = cp
        .nodes
        .iter()
        .enumerate()
        .map(|(i, a)| fanout_config::ControlPeer {
            id: i as u64 + 1,
            address: fanout_config::HostPort {
                host: reachable(*a).ip().to_string(),
                port: a.port(),
            },
        })
        .collect();
    for (i, listen) in cp.nodes.iter().enumerate() {
        let node = fanout_config::ControlConfig {
            id: i as u64 + 1,
            listen: *listen,
            admin_listen: None,
            data_dir: dir.join(format!("control-{}", i + 1)),
            peers: peers.clone(),
            cluster_secret_file: secret_file.clone(),
            write_token_file: token_file.clone(),
            read_token_file: None,
            // One node proposes the initial membership and the others wait
            // to hear from it: with every node of one process initializing
            // at once, the group sometimes elected a leader whose writes
            // never committed (seen under CPU load).
            join: i > 0,
        };
        let t = token.clone();
        parts.spawn(async move {
            (
                format!("control-{}", node.id),
                fanout_control_plane::run(node, t).await.map_err(Into::into),
            )
        });
    }
    let servers: Vec<String> = cp.nodes.iter().map(|a| reachable(*a).to_string()).collect();
    let token_value = std::fs::read_to_string(&token_file)?.trim().to_string();
    let mut client =
        fanout_control_plane::client::ControlClient::new(servers.clone(), Some(token_value));
    client.deadline = START_DEADLINE;
    // Apply the file's cluster config unless it is already live (a kept
    // data directory).
    let live = client
        .request(http::Method::GET, "/v1/config", None)
        .await?;
    if !live.status.is_success() || live.body != config.cluster_yaml.as_bytes() {
        let a = client
            .request(
                http::Method::PUT,
                "/v1/config",
                Some((
                    bytes::Bytes::from(config.cluster_yaml.clone()),
                    "application/yaml",
                )),
            )
            .await?;
        anyhow::ensure!(
            a.status.is_success(),
            "the control plane refused the cluster config: {}",
            a.error_text()
        );
    }
    Ok(ControlRun {
        servers,
        token_file,
        _temp: temp,
    })
}

/// Waits until every cache node of the file has registered.
async fn wait_registered(control: &ControlRun, config: &UpConfig) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&control.token_file)?
        .trim()
        .to_string();
    let client =
        fanout_control_plane::client::ControlClient::new(control.servers.clone(), Some(token));
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    loop {
        let a = client
            .request(http::Method::GET, "/v1/members", None)
            .await?;
        let registered: Vec<String> = a
            .json()
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if config
            .cache_nodes
            .iter()
            .all(|n| registered.contains(&n.id))
        {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "cache nodes did not register with the control plane within {START_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// The demo's scenario, aimed at this cluster: its proxies, host and origin.
struct DemoPlan {
    scenario: ScenarioConfig,
    options: RunOptions,
}

fn plan_demo(config: &UpConfig) -> Result<DemoPlan, ExitCode> {
    let loaded = match &config.demo.scenario {
        Some(f) => fanout_config::load_scenario(f),
        None => match fanout_config::load_str(Path::new(DEMO_SCENARIO_NAME), DEMO_SCENARIO) {
            Ok(fanout_config::AnyConfig::Scenario(s)) => Ok(s),
            Ok(_) => unreachable!("the demo scenario is a kind: scenario file"),
            Err(e) => Err(e),
        },
    };
    let scenario = match loaded {
        Ok(s) => *s,
        Err(e) => return Err(crate::config_failed(&e)),
    };
    let host = match config.demo.host.clone().or_else(|| first_host(config)) {
        Some(h) => h,
        None => {
            eprintln!(
                "fanout up --demo: the demo needs a site with an exact host name (or demo.host)"
            );
            return Err(ExitCode::from(crate::EXIT_CONFIG));
        }
    };
    Ok(DemoPlan {
        options: RunOptions {
            addresses: Some(config.proxies.iter().map(|p| reachable(p.listen)).collect()),
            host: Some(host),
            origin: config.origin.as_ref().map(|o| reachable(o.listen)),
            metrics: Some(
                config
                    .cache_nodes
                    .iter()
                    .filter_map(|n| n.admin_listen.map(reachable))
                    .collect(),
            ),
            progress: true,
            own_process: false,
            ..RunOptions::default()
        },
        scenario,
    })
}

fn print_banner(config: &UpConfig, control: Option<&ControlRun>) {
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
    if let Some(c) = control {
        out += &format!(
            "\n  control plane: {} (Raft, {} nodes)\n  status page:   http://{}/\n  Try:  fanout ctl --server {} --token-file {} status\n",
            c.servers.join(", "),
            c.servers.len(),
            c.servers[0],
            c.servers.join(","),
            c.token_file.display()
        );
    }
    println!("{out}");
}

async fn run_demo(plan: DemoPlan, args: DemoArgs, shutdown: &CancellationToken) -> ExitCode {
    println!(
        "Running the demo: scenario {:?} for {} against {} proxies...",
        plan.scenario.name,
        humantime::format_duration(plan.scenario.duration()),
        plan.options.addresses.as_ref().map_or(0, Vec::len)
    );
    let report = scenario::run(&plan.scenario, plan.options, shutdown.clone()).await;
    println!();
    if let Err(e) = std::fs::create_dir_all(&args.report_dir) {
        eprintln!(
            "fanout up --demo: cannot create {}: {e}",
            args.report_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let code = crate::loadtest::finish(
        &report,
        Some(&args.report_dir.join("report.json")),
        Some(&args.report_dir.join("report.html")),
        &[],
    );
    if shutdown.is_cancelled() {
        println!("Interrupted.");
        return ExitCode::from(130);
    }
    if report.totals.requests == 0 {
        eprintln!("fanout up --demo: failed: no request was made");
        return ExitCode::FAILURE;
    }
    code
}
