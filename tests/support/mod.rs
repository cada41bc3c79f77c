//! Shared support for the end-to-end tests: free loopback ports, a cluster
//! file written for them, the real `fanout` binary started on it, and a
//! small HTTP client. Waits are on conditions with deadlines, never sleeps.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub const BIN: &str = env!("CARGO_BIN_EXE_fanout");

/// Generous: CI machines are small and busy.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `n` distinct free ports on 127.0.0.1, from 10000 to 31999: below the
/// kernel's ephemeral range (32768 and up), so no outgoing connection of
/// this or another test can take one between our check and the server's
/// bind. Each test process walks the range from its own offset, so tests
/// running in parallel do not pick the same ports.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut held = Vec::with_capacity(n);
    for _ in 0..SPAN {
        if held.len() == n {
            break;
        }
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports below 32000");
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fanout-e2e-")
        .tempdir()
        .expect("temp dir")
}

/// Addresses of a cluster described by [`up_file`].
#[derive(Debug, Clone)]
pub struct Cluster {
    pub origin: SocketAddr,
    pub proxies: Vec<SocketAddr>,
    pub proxy_admins: Vec<SocketAddr>,
    pub caches: Vec<SocketAddr>,
    pub cache_admins: Vec<SocketAddr>,
}

/// A `kind: up` file with one origin, `caches` cache nodes and `proxies`
/// proxies on free ports, plus a demo section.
pub fn up_file(dir: &Path, caches: usize, proxies: usize, demo: &str) -> (PathBuf, Cluster) {
    up_file_with(dir, caches, proxies, demo, "")
}

/// Proxy fields that turn the hot tier off, for tests of what cache nodes
/// do with requests (every request reaches a node).
pub const NO_HOT_TIER: &str = ", hot_tier: { capacity: 0 }";

/// [`up_file`], with `proxy_fields` added to every proxy's entry (such as
/// [`NO_HOT_TIER`]).
pub fn up_file_with(
    dir: &Path,
    caches: usize,
    proxies: usize,
    demo: &str,
    proxy_fields: &str,
) -> (PathBuf, Cluster) {
    let ports = free_ports(1 + 2 * caches + 2 * proxies);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let cluster = Cluster {
        origin: addr(ports[0]),
        caches: (0..caches).map(|i| addr(ports[1 + i])).collect(),
        cache_admins: (0..caches).map(|i| addr(ports[1 + caches + i])).collect(),
        proxies: (0..proxies)
            .map(|i| addr(ports[1 + 2 * caches + i]))
            .collect(),
        proxy_admins: (0..proxies)
            .map(|i| addr(ports[1 + 2 * caches + proxies + i]))
            .collect(),
    };
    let mut yaml = format!(
        "kind: up
origin:
  listen: '{origin}'
  live:
    - name: main
      segment_duration: 1s
      window: 4
      renditions:
        - {{ name: hi, bandwidth: 800000 }}
        - {{ name: lo, bandwidth: 200000 }}
    # Low-latency HLS: four parts a segment, a window long enough for
    # delta updates to skip some.
    - name: ll
      segment_duration: 1s
      part_duration: 250ms
      window: 10
      renditions:
        - {{ name: hi, bandwidth: 800000 }}
  objects:
    - {{ prefix: /static/, count: 1000, size: 16KiB }}
    - {{ prefix: /nostore/, count: 10, size: 1KiB, cache_control: no-store }}
    - {{ prefix: /crowd/, count: 10, size: 256KiB }}
    - {{ prefix: /slow/, count: 10, size: 512KiB }}
    - {{ prefix: /broken/, count: 10, size: 256KiB }}
    - {{ prefix: /err/, count: 10, size: 1KiB }}
    - {{ prefix: /vary/, count: 10, size: 8KiB, vary: [accept-language] }}
    - {{ prefix: /varystar/, count: 10, size: 1KiB, vary: ['*'] }}
    - {{ prefix: /tagged/, count: 10, size: 1KiB, headers: {{ surrogate-key: 'tagged match-1' }} }}
    - {{ prefix: /crawl/, count: 10, size: 1MiB }}
    # Neither `public`, `s-maxage` nor `must-revalidate`: not for requests
    # with Authorization (RFC 9111 §3.5).
    - {{ prefix: /account/, count: 10, size: 1KiB, cache_control: 'max-age=300' }}
    - {{ prefix: /cookie/, count: 10, size: 1KiB, headers: {{ set-cookie: 'session=abc; Path=/' }} }}
    # Fresh for two seconds: the hot tier must let go of it in time.
    - {{ prefix: /short/, count: 10, size: 1KiB, cache_control: 'public, max-age=2' }}
    - {{ prefix: /private/, count: 10, size: 1KiB, cache_control: 'private, max-age=60' }}
    # An origin that takes a while to answer: requests that stay in flight.
    - {{ prefix: /held/, count: 10, size: 1KiB, cache_control: no-store }}
  faults:
    # A new object that takes a while to come: the flash crowd's segment.
    - {{ path: '/crowd/*', latency: 200ms }}
    # A slow origin: a fill takes about half a second.
    - {{ path: '/slow/*', throughput: 1MiB }}
    # An origin that dies mid-body.
    - {{ path: '/broken/*', abort_after: 64KiB, throughput: 1MiB }}
    - {{ path: '/nostore/*', latency: 100ms }}
    # An origin in trouble: every request fails after a while.
    - {{ path: '/err/*', latency: 100ms, error_rate: 1.0, error_status: 503 }}
    - {{ path: '/vary/*', latency: 200ms }}
    # An origin that stalls: 1 MiB at 64 KiB/s would take 16 s.
    - {{ path: '/crawl/*', throughput: 64KiB }}
    # A slow fill of a response not shareable with Authorization requests.
    - {{ path: '/account/9', latency: 1500ms }}
    - {{ path: '/held/*', latency: 1500ms }}
cluster:
  sites:
    - name: live
      hosts: [localhost]
      origin: {{ addresses: ['{origin}'], response_timeout: 2s, total_timeout: 3s }}
    # The same origin, for a site that caches responses with their cookies stripped.
    - name: cookies
      hosts: [cookies.test]
      origin: {{ addresses: ['{origin}'] }}
      cache: {{ set_cookie: strip }}
cache_nodes:
",
        origin = cluster.origin
    );
    for i in 0..caches {
        yaml += &format!(
            "  - {{ id: cache-{}, listen: '{}', admin_listen: '{}', capacity: 64MiB }}\n",
            i + 1,
            cluster.caches[i],
            cluster.cache_admins[i]
        );
    }
    yaml += "proxies:\n";
    for i in 0..proxies {
        yaml += &format!(
            "  - {{ id: proxy-{}, listen: '{}', admin_listen: '{}'{proxy_fields} }}\n",
            i + 1,
            cluster.proxies[i],
            cluster.proxy_admins[i]
        );
    }
    yaml += demo;
    let file = dir.join("up.yaml");
    std::fs::write(&file, yaml).expect("write up file");
    (file, cluster)
}

/// A running `fanout` process, killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log filter for spawned processes: `error` unless `FANOUT_TEST_LOG`
/// asks for more while a test is being debugged.
fn test_log_filter() -> String {
    std::env::var("FANOUT_TEST_LOG").unwrap_or_else(|_| "error".into())
}

pub fn spawn(args: &[&str]) -> Running {
    // Tests provoke origin failures on purpose; their warnings are noise.
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", test_log_filter())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fanout");
    Running { child }
}

/// [`spawn`], with extra environment variables.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", test_log_filter())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fanout");
    Running { child }
}

/// [`spawn`], with stdout piped to the test (for the access log).
pub fn spawn_capturing_stdout(args: &[&str]) -> Running {
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", test_log_filter())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fanout");
    Running { child }
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fanout")
}

/// Waits until every admin listener answers `/readyz` with 200.
pub async fn wait_ready(admins: &[SocketAddr], process: &mut Running) {
    wait_ok(admins, "/readyz", process).await
}

/// Waits until every cache node and proxy of `cluster` is ready.
pub async fn wait_cluster_ready(cluster: &Cluster, process: &mut Running) {
    let admins: Vec<_> = cluster
        .cache_admins
        .iter()
        .chain(&cluster.proxy_admins)
        .copied()
        .collect();
    wait_ready(&admins, process).await
}

/// An up file's `control_plane` section with three nodes on free ports,
/// and those ports.
pub fn control_plane_section() -> (String, Vec<u16>) {
    let ports = free_ports(3);
    let nodes: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    (
        format!("control_plane:\n  nodes: [{}]\n", nodes.join(", ")),
        ports,
    )
}

/// Waits until the synthetic origin answers its stats endpoint.
pub async fn wait_origin(origin: SocketAddr, process: &mut Running) {
    wait_ok(&[origin], "/_origin/stats", process).await
}

async fn wait_ok(addrs: &[SocketAddr], path: &str, process: &mut Running) {
    let start = Instant::now();
    for admin in addrs {
        loop {
            if let Ok(r) = get(*admin, "localhost", path, &[]).await {
                if r.status == 200 {
                    break;
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("fanout exited with {status} before it was ready");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{admin} not ready within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The cache named in the first `Cache-Status` entry, e.g.
    /// `fanout-cache-2`: the node that answered, or the proxy's hot tier
    /// when it answered alone.
    pub fn cache_node(&self) -> &str {
        self.header("cache-status")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    }
}

pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::get(format!("http://{addr}{path}")).header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut headers = resp.headers().clone();
        combine_cache_status(&mut headers);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| format!("GET {path} timed out"))?
}

/// Joins the `Cache-Status` field lines (the node's, then the proxy's hot
/// tier's) into one list, as RFC 9110 §5.3 lets a recipient.
pub fn combine_cache_status(headers: &mut http::HeaderMap) {
    let lines: Vec<&str> = headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if lines.len() > 1 {
        let joined = http::HeaderValue::from_str(&lines.join(", ")).expect("a valid list");
        headers.insert("cache-status", joined);
    }
}

/// Requests per path the synthetic origin has counted.
pub async fn origin_count(origin: SocketAddr, path: &str) -> u64 {
    let r = get(origin, "origin", "/_origin/stats", &[])
        .await
        .expect("origin stats");
    let stats: serde_json::Value = serde_json::from_slice(&r.body).expect("stats JSON");
    stats["paths"][path].as_u64().unwrap_or(0)
}

/// POSTs an empty body with these headers; returns the status and body.
pub async fn post_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::post(format!("http://{addr}{path}")).header("host", "localhost");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs an empty body and returns the status.
pub async fn post(addr: SocketAddr, path: &str) -> u16 {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    client
        .request(req)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Starts `fanout up` on a cluster from [`up_file`] (with `extra` YAML at
/// the end) and waits until its cache nodes and proxies are ready.
pub async fn start_up(
    caches: usize,
    proxies: usize,
    extra: &str,
) -> (tempfile::TempDir, Cluster, Running) {
    start_up_with_files(caches, proxies, extra, &[]).await
}

/// [`start_up`] with the proxies' hot tier off: every request reaches a
/// cache node, for tests of what the nodes do.
pub async fn start_up_node_only(
    caches: usize,
    proxies: usize,
    extra: &str,
) -> (tempfile::TempDir, Cluster, Running) {
    start_up_full(caches, proxies, extra, &[], NO_HOT_TIER).await
}

/// [`start_up`], with `files` (name, content) written beside the up file first.
pub async fn start_up_with_files(
    caches: usize,
    proxies: usize,
    extra: &str,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, Cluster, Running) {
    start_up_full(caches, proxies, extra, files, "").await
}

/// [`start_up_with_files`], with `proxy_fields` added to each proxy.
pub async fn start_up_full(
    caches: usize,
    proxies: usize,
    extra: &str,
    files: &[(&str, &str)],
    proxy_fields: &str,
) -> (tempfile::TempDir, Cluster, Running) {
    let dir = temp_dir();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write test file");
    }
    let (file, cluster) = up_file_with(dir.path(), caches, proxies, extra, proxy_fields);
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    let admins: Vec<_> = cluster
        .cache_admins
        .iter()
        .chain(&cluster.proxy_admins)
        .copied()
        .collect();
    wait_ready(&admins, &mut process).await;
    (dir, cluster, process)
}

/// GETs `path` every 50 ms until `done` accepts a reply; returns every
/// reply, the accepted one last.
pub async fn poll_until(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&Reply) -> bool,
) -> Vec<Reply> {
    poll_until_host(addr, "localhost", path, headers, done).await
}

/// [`poll_until`] with another Host.
pub async fn poll_until_host(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&Reply) -> bool,
) -> Vec<Reply> {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let r = get(addr, host, path, headers).await.unwrap();
        let stop = done(&r);
        seen.push(r);
        if stop {
            return seen;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "condition not reached for {path}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An origin, cache nodes and one proxy, each its own process started from
/// its own file (so the proxy's file can be rewritten and reloaded).
pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub origin: SocketAddr,
    /// (id, address) of each cache node.
    pub caches: Vec<(String, SocketAddr)>,
    pub proxy: SocketAddr,
    pub proxy_admin: SocketAddr,
    pub proxy_process: Running,
    pub cache_processes: Vec<Running>,
    pub _origin_process: Running,
}

impl Standalone {
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// Writes `proxy.yaml` naming `nodes` (indexes into `caches`), with
    /// `extra` appended (more top-level keys).
    pub fn write_proxy(&self, nodes: &[usize], extra: &str) {
        let mut yaml = format!(
            "kind: proxy\nid: p\nlisten: '{}'\nadmin_listen: '{}'\ncluster: cluster.yaml\ncache_nodes:\n",
            self.proxy, self.proxy_admin
        );
        for &i in nodes {
            let (id, addr) = &self.caches[i];
            yaml += &format!("  - {{ id: {id}, address: '{addr}' }}\n");
        }
        yaml += extra;
        // Written whole and renamed, so a reload never reads half a file.
        let tmp = self.dir.path().join("proxy.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.dir.path().join("proxy.yaml")).unwrap();
    }

    /// The proxy's `/status` JSON.
    pub async fn status(&self) -> serde_json::Value {
        let r = get(self.proxy_admin, "localhost", "/status", &[])
            .await
            .expect("proxy /status");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("/status is JSON")
    }
}

/// Starts an origin (4 KiB objects under `/o/`, and under `/slow/` after
/// 500 ms), `caches` cache nodes
/// and a proxy over all of them, with `proxy_extra` appended to the proxy
/// file and `cluster_extra` to the cluster file, right after its `sites`
/// (so it may add sites, with `ORIGIN` standing for the origin's address).
pub async fn start_standalone(caches: usize, cluster_extra: &str, proxy_extra: &str) -> Standalone {
    let dir = temp_dir();
    start_in(dir, caches, cluster_extra, proxy_extra).await
}

/// [`start_standalone`], with the files of `seed` (certificates, say)
/// copied into the cluster's directory first.
pub async fn start_standalone_with(
    caches: usize,
    cluster_extra: &str,
    proxy_extra: &str,
    seed: &Path,
) -> Standalone {
    let dir = temp_dir();
    for entry in std::fs::read_dir(seed).expect("read seed dir") {
        let entry = entry.expect("seed entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy seed file");
    }
    start_in(dir, caches, cluster_extra, proxy_extra).await
}

async fn start_in(
    dir: tempfile::TempDir,
    caches: usize,
    cluster_extra: &str,
    proxy_extra: &str,
) -> Standalone {
    let d = dir.path();
    let p = free_ports(3 + 2 * caches);
    let addr = |i: usize| -> SocketAddr { ([127, 0, 0, 1], p[i]).into() };
    let origin = addr(0);
    std::fs::write(
        d.join("cluster.yaml"),
        format!(
            "kind: cluster\nhealth: {{ interval: 100ms, timeout: 50ms, rise: 2, fall: 2 }}\n\
             sites:\n  - name: s\n    hosts: [localhost]\n    origin: {{ addresses: ['{origin}'] }}\n{}",
            cluster_extra.replace("ORIGIN", &origin.to_string())
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("origin.yaml"),
        format!(
            "kind: origin\nlisten: '{origin}'\nobjects:\n  - {{ prefix: /o/, count: 100000, size: 4KiB }}\n\
             \x20 - {{ prefix: /slow/, count: 100, size: 4KiB }}\nfaults:\n  - {{ path: '/slow/*', latency: 500ms }}\n"
        ),
    )
    .unwrap();
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let mut origin_process = spawn(&["origin", &path("origin.yaml")]);
    let mut cache_list = Vec::new();
    let mut cache_processes = Vec::new();
    for i in 0..caches {
        let (listen, admin) = (addr(3 + 2 * i), addr(4 + 2 * i));
        let id = format!("c{}", i + 1);
        std::fs::write(
            d.join(format!("{id}.yaml")),
            format!("kind: cache\nid: {id}\nlisten: '{listen}'\nadmin_listen: '{admin}'\ncluster: cluster.yaml\n"),
        )
        .unwrap();
        let mut process = spawn(&["cache", &path(&format!("{id}.yaml"))]);
        wait_ready(&[admin], &mut process).await;
        cache_list.push((id, listen));
        cache_processes.push(process);
    }
    wait_origin(origin, &mut origin_process).await;
    let mut s = Standalone {
        dir,
        origin,
        caches: cache_list,
        proxy: addr(1),
        proxy_admin: addr(2),
        // Replaced below, once the proxy file exists.
        proxy_process: Running {
            child: Command::new("true").spawn().expect("spawn true"),
        },
        cache_processes,
        _origin_process: origin_process,
    };
    s.write_proxy(&(0..caches).collect::<Vec<_>>(), proxy_extra);
    s.proxy_process = spawn(&["proxy", &s.path("proxy.yaml")]);
    let admin = s.proxy_admin;
    wait_ready(&[admin], &mut s.proxy_process).await;
    s
}

/// Sends SIGHUP to a running process.
pub fn hangup(process: &Running) {
    let status = Command::new("kill")
        .args(["-HUP", &process.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

/// A control-plane group of real `fanout control` processes, each with its
/// own data directory under one temp dir.
pub struct ControlGroup {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
    /// Each node's admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admins: Vec<SocketAddr>,
    pub nodes: Vec<Option<Running>>,
}

pub const WRITE_TOKEN: &str = "write-token-for-tests";
pub const READ_TOKEN: &str = "read-token-for-tests";

impl ControlGroup {
    /// Starts `n` nodes with the same peer list and waits for a leader.
    pub async fn start(n: usize) -> ControlGroup {
        let dir = temp_dir();
        let d = dir.path();
        std::fs::write(d.join("cluster.secret"), "raft-secret-for-tests\n").unwrap();
        std::fs::write(d.join("write.token"), WRITE_TOKEN).unwrap();
        std::fs::write(d.join("read.token"), READ_TOKEN).unwrap();
        let ports = free_ports(2 * n);
        let addrs: Vec<SocketAddr> = ports[..n]
            .iter()
            .map(|p| ([127, 0, 0, 1], *p).into())
            .collect();
        let admins: Vec<SocketAddr> = ports[n..]
            .iter()
            .map(|p| ([127, 0, 0, 1], *p).into())
            .collect();
        let peers: String = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  - {{ id: {}, address: '{a}' }}\n", i + 1))
            .collect();
        for (i, a) in addrs.iter().enumerate() {
            std::fs::write(
                d.join(format!("control-{}.yaml", i + 1)),
                format!(
                    "kind: control\nid: {}\nlisten: '{a}'\nadmin_listen: '{}'\ndata_dir: data-{}\n\
                     cluster_secret_file: cluster.secret\nwrite_token_file: write.token\n\
                     read_token_file: read.token\npeers:\n{peers}",
                    i + 1,
                    admins[i],
                    i + 1
                ),
            )
            .unwrap();
        }
        let mut group = ControlGroup {
            dir,
            addrs,
            admins,
            nodes: Vec::new(),
        };
        for i in 0..n {
            let process = group.spawn_node(i);
            group.nodes.push(Some(process));
        }
        group.wait_leader(&[]).await;
        group
    }

    fn spawn_node(&self, i: usize) -> Running {
        let file = self.dir.path().join(format!("control-{}.yaml", i + 1));
        spawn(&["control", file.to_str().unwrap()])
    }

    /// `kill -9` node `i` (0-based).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.child.kill().unwrap();
            p.child.wait().unwrap();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i] = Some(self.spawn_node(i));
    }

    pub fn servers(&self) -> String {
        self.addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `GET /v1/status` of node `i`.
    pub async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let r = get(
            self.addrs[i],
            "control",
            "/v1/status",
            &[("authorization", &format!("Bearer {READ_TOKEN}"))],
        )
        .await
        .ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
    }

    /// Waits until every running node agrees on one leader that is not in
    /// `not`; returns its index (0-based).
    pub async fn wait_leader(&self, not: &[usize]) -> usize {
        let started = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                if n.is_some() {
                    leaders.push(self.status(i).await.and_then(|s| s["leader"].as_u64()));
                }
            }
            if let Some(Some(l)) = leaders.first() {
                let l = *l as usize - 1;
                if leaders.iter().all(|x| *x == Some(l as u64 + 1))
                    && !not.contains(&l)
                    && self.nodes[l].is_some()
                {
                    return l;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no agreed leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `fanout ctl` against the group with the write token.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.servers(), &self.dir.path().join("write.token"), args)
    }
}

/// Runs `fanout ctl` against `servers` (comma-separated) with the write
/// token in `token_file`.
pub fn ctl(servers: &str, token_file: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "ctl",
        "--server",
        servers,
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    run(&all)
}

/// Sends `method path` with `body` and the bearer `token`; returns the
/// status and body.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let client: Client<HttpConnector, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| format!("{method} {path} timed out"))?
}

/// One `fanout up` process with one cache node (`c1`) and one proxy
/// (`p1`), serving `sites` (YAML list items, indented as under
/// `cluster.sites`); its warnings go to `log.txt` in `dir`.
pub struct OneOfEach {
    pub dir: tempfile::TempDir,
    pub proxy: SocketAddr,
    /// The cache node's admin listener (`/metrics`).
    pub node_admin: SocketAddr,
    pub process: Running,
}

pub async fn start_one_of_each(sites: &str) -> OneOfEach {
    let dir = temp_dir();
    let p = free_ports(4);
    std::fs::write(
        dir.path().join("up.yaml"),
        format!(
            "kind: up\ncluster:\n  sites:\n{sites}cache_nodes:\n  \
             - {{ id: c1, listen: '127.0.0.1:{}', admin_listen: '127.0.0.1:{}' }}\nproxies:\n  \
             - {{ id: p1, listen: '127.0.0.1:{}', admin_listen: '127.0.0.1:{}' }}\n",
            p[0], p[1], p[2], p[3]
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log.txt")).unwrap();
    let child = Command::new(BIN)
        .args(["up", dir.path().join("up.yaml").to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start fanout");
    let mut process = Running { child };
    let node_admin: SocketAddr = ([127, 0, 0, 1], p[1]).into();
    wait_ready(&[node_admin, ([127, 0, 0, 1], p[3]).into()], &mut process).await;
    OneOfEach {
        dir,
        proxy: ([127, 0, 0, 1], p[2]).into(),
        node_admin,
        process,
    }
}
