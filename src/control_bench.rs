//! `fanout loadtest control-plane`: commit latency, propagation to
//! watching agents and leader failover of a 3-node control plane started
//! by the tool itself (real processes, real fsync, loopback), with a raw
//! write+fsync loop on the same disk as the reference.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout_control_plane::client::ControlClient;
use hdrhistogram::Histogram;
use http::Method;

pub struct Options {
    pub writes: usize,
    pub agents: usize,
    pub dir: Option<std::path::PathBuf>,
}

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A write and an fsync of one small block, as a Raft append costs at least.
fn fsync_reference(dir: &Path, n: usize) -> std::io::Result<Histogram<u64>> {
    use std::io::Write;
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut f = std::fs::File::create(dir.join("fsync-probe"))?;
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&[0u8; 512])?;
        f.sync_data()?;
        h.record(t.elapsed().as_micros() as u64).ok();
    }
    Ok(h)
}

pub async fn run(opts: Options) -> ExitCode {
    match bench(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout loadtest control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(opts: Options) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("fanout-cp-bench-")
        .tempdir()?;
    let dir = opts.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("secret"), "bench-secret")?;
    std::fs::write(dir.join("token"), "bench-token")?;
    let ports = (0..3).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
    let peers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  - {{ id: {}, address: '127.0.0.1:{p}' }}\n", i + 1))
        .collect();
    let exe = std::env::current_exe()?;
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let file = dir.join(format!("control-{}.yaml", i + 1));
        std::fs::write(
            &file,
            format!(
                "kind: control\nid: {}\nlisten: '127.0.0.1:{p}'\ndata_dir: data-{}\ncluster_secret_file: secret\nwrite_token_file: token\npeers:\n{peers}",
                i + 1,
                i + 1
            ),
        )?;
        let child = Command::new(&exe)
            .args(["--log", "error", "control"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        nodes.push(Some(Node { child }));
    }
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let client = ControlClient::new(servers.clone(), Some("bench-token".into()));
    wait_leader(&client, None).await?;
    println!(
        "control plane: 3 nodes on loopback, data in {} (fsync on every append)",
        dir.display()
    );

    // Agents long-polling the watch, spread over the nodes, each noting the
    // revision it has seen.
    let seen: Arc<Vec<AtomicU64>> = Arc::new((0..opts.agents).map(|_| AtomicU64::new(0)).collect());
    let stop = tokio_util::sync::CancellationToken::new();
    for agent in 0..opts.agents {
        let mut c = ControlClient::new(
            vec![servers[agent % servers.len()].clone()],
            Some("bench-token".into()),
        );
        c.deadline = Duration::from_secs(30);
        c.attempt_timeout = c.deadline;
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut after = 0u64;
            loop {
                let path = format!("/v1/watch?after={after}&timeout_ms=20000");
                let answer = tokio::select! {
                    a = c.request(Method::GET, &path, None) => a,
                    _ = stop.cancelled() => return,
                };
                match answer.ok().and_then(|a| a.json()["revision"].as_u64()) {
                    Some(rev) => {
                        after = rev;
                        seen[agent].store(rev, Ordering::Relaxed);
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }

    let config = |i: usize| {
        format!("kind: cluster\nsites:\n  - name: s\n    hosts: [bench.example]\n    origin: {{ addresses: ['127.0.0.1:9'] }}\n    cache: {{ default_ttl: {}s }}\n", i % 3600 + 1)
    };
    let mut commit = Histogram::<u64>::new(3)?;
    let mut spread = Histogram::<u64>::new(3)?;
    let bar = indicatif::ProgressBar::new(opts.writes as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "config writes {bar:30} {pos}/{len} {elapsed}",
    )?);
    for i in 0..opts.writes {
        let t = Instant::now();
        let a = client
            .request(
                Method::PUT,
                "/v1/config",
                Some((Bytes::from(config(i)), "application/yaml")),
            )
            .await?;
        anyhow::ensure!(
            a.status.is_success(),
            "write {i}: {} {}",
            a.status,
            a.error_text()
        );
        commit.record(t.elapsed().as_micros() as u64)?;
        let revision = a.json()["revision"].as_u64().unwrap_or(0);
        // Until every agent has the revision (or 5 s: then it is an outlier).
        while seen.iter().any(|s| s.load(Ordering::Relaxed) < revision)
            && t.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        spread.record(t.elapsed().as_micros() as u64)?;
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Failover: kill -9 the leader, then time until a write commits.
    let leader = wait_leader(&client, None).await?;
    let killed = Instant::now();
    if let Some(mut n) = nodes[leader as usize - 1].take() {
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
    let mut failover_client = client.clone();
    failover_client.deadline = Duration::from_secs(30);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let a = failover_client
            .request(
                Method::PUT,
                "/v1/config",
                Some((Bytes::from(config(0)), "application/yaml")),
            )
            .await?;
        if a.status.is_success() {
            break;
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(30),
            "no commit within 30 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failover = killed.elapsed();
    let new_leader = wait_leader(&client, Some(leader)).await?;
    stop.cancel();

    let fsync = fsync_reference(&dir, 200)?;
    println!();
    println!("{:<44} {:>9} {:>9}", "", "p50 ms", "p99 ms");
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        "write + fsync of 512 B (reference)",
        ms(&fsync, 0.5),
        ms(&fsync, 0.99)
    );
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        format!("config write committed ({} writes)", opts.writes),
        ms(&commit, 0.5),
        ms(&commit, 0.99)
    );
    println!(
        "{:<44} {:>9.2} {:>9.2}",
        format!("write to applied on all {} agents", opts.agents),
        ms(&spread, 0.5),
        ms(&spread, 0.99)
    );
    println!(
        "commit p50 / fsync p50: {:.1}x   (a commit needs the leader's and one follower's fsync, plus two HTTP hops)",
        ms(&commit, 0.5) / ms(&fsync, 0.5).max(0.001)
    );
    println!(
        "leader failover: node {leader} killed, node {new_leader} leads; first commit {:.0} ms after the kill ({attempts} attempts; election timeout {}-{} ms)",
        failover.as_secs_f64() * 1000.0,
        fanout_control_plane::ELECTION_TIMEOUT_MS.0,
        fanout_control_plane::ELECTION_TIMEOUT_MS.1,
    );
    drop(nodes);
    Ok(())
}

async fn wait_leader(client: &ControlClient, not: Option<u64>) -> anyhow::Result<u64> {
    let started = Instant::now();
    loop {
        if let Ok(a) = client.request(Method::GET, "/v1/status", None).await {
            if let Some(l) = a.json()["leader"].as_u64() {
                if Some(l) != not {
                    return Ok(l);
                }
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "no leader elected in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
