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

/// `n` distinct free ports on 127.0.0.1. All are held until all are chosen,
/// so they differ from each other; the kernel hands out ephemeral ports in
/// rotation, so another test is unlikely to take one before we bind it.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
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
cluster:
  sites:
    - name: live
      hosts: [localhost]
      origin: {{ addresses: ['{origin}'], response_timeout: 2s, total_timeout: 3s }}
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
            "  - {{ id: proxy-{}, listen: '{}', admin_listen: '{}' }}\n",
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

pub fn spawn(args: &[&str]) -> Running {
    // Tests provoke origin failures on purpose; their warnings are noise.
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
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

    /// The node named in the last `Cache-Status` entry, e.g. `fanout-cache-2`.
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
        let headers = resp.headers().clone();
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

/// [`start_up`], with `files` (name, content) written beside the up file first.
pub async fn start_up_with_files(
    caches: usize,
    proxies: usize,
    extra: &str,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, Cluster, Running) {
    let dir = temp_dir();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write test file");
    }
    let (file, cluster) = up_file(dir.path(), caches, proxies, extra);
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
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let r = get(addr, "localhost", path, headers).await.unwrap();
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
