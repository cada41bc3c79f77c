//! A cache node dies: the proxy sends its keys to the next node on the
//! ring and no client request fails; its health probes take the node out,
//! and bring it back when it recovers. Every part is its own process here,
//! so a node can really be killed and restarted. The proxies' hot tier is
//! off: which node answers each key is what these tests watch.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use support::*;

struct Cluster2 {
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    proxy_admin: SocketAddr,
    a: Running,
    _b: Running,
    _origin: Running,
    _proxy: Running,
}

impl Cluster2 {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An origin, cache nodes `a` and `b`, and a proxy in front of both that
/// probes them every 100 ms (down after 2 failures, up after 2 successes).
async fn start() -> (Cluster2, SocketAddr) {
    let dir = temp_dir();
    let d = dir.path();
    let p = free_ports(7);
    let addr = |i: usize| -> SocketAddr { ([127, 0, 0, 1], p[i]).into() };
    let (origin, cache_a, admin_a, cache_b, admin_b, proxy, proxy_admin) = (
        addr(0),
        addr(1),
        addr(2),
        addr(3),
        addr(4),
        addr(5),
        addr(6),
    );
    std::fs::write(
        d.join("cluster.yaml"),
        format!(
            "kind: cluster\nsites:\n  - name: s\n    hosts: [localhost]\n    origin: {{ addresses: ['{origin}'] }}\n\
             health: {{ interval: 100ms, timeout: 50ms, rise: 2, fall: 2 }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("origin.yaml"),
        format!("kind: origin\nlisten: '{origin}'\nobjects:\n  - {{ prefix: /o/, count: 1000, size: 4KiB }}\n"),
    )
    .unwrap();
    for (id, listen, admin) in [("a", cache_a, admin_a), ("b", cache_b, admin_b)] {
        std::fs::write(
            d.join(format!("cache-{id}.yaml")),
            format!("kind: cache\nid: {id}\nlisten: '{listen}'\nadmin_listen: '{admin}'\ncluster: cluster.yaml\n"),
        )
        .unwrap();
    }
    std::fs::write(
        d.join("proxy.yaml"),
        format!(
            "kind: proxy\nid: p\nlisten: '{proxy}'\nadmin_listen: '{proxy_admin}'\ncluster: cluster.yaml\n\
             cache_nodes:\n  - {{ id: a, address: '{cache_a}' }}\n  - {{ id: b, address: '{cache_b}' }}\n\
             hot_tier: {{ capacity: 0 }}\n"
        ),
    )
    .unwrap();
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let mut origin_process = spawn(&["origin", &path("origin.yaml")]);
    let mut a = spawn(&["cache", &path("cache-a.yaml")]);
    let mut b = spawn(&["cache", &path("cache-b.yaml")]);
    let mut proxy_process = spawn(&["proxy", &path("proxy.yaml")]);
    wait_origin(origin, &mut origin_process).await;
    wait_ready(&[admin_a], &mut a).await;
    wait_ready(&[admin_b], &mut b).await;
    wait_ready(&[proxy_admin], &mut proxy_process).await;
    let cluster = Cluster2 {
        dir,
        proxy,
        proxy_admin,
        a,
        _b: b,
        _origin: origin_process,
        _proxy: proxy_process,
    };
    (cluster, admin_a)
}

/// Fills both nodes and returns the paths node `a` owns.
async fn keys_of_a(proxy: SocketAddr) -> Vec<String> {
    let mut owned = Vec::new();
    for i in 0..60 {
        let path = format!("/o/{i}");
        let r = get(proxy, "localhost", &path, &[]).await.unwrap();
        assert_eq!(r.status, 200);
        if r.cache_node() == "fanout-a" {
            owned.push(path);
        }
    }
    assert!(
        owned.len() > 10,
        "the ring gives node a a share of the keys: {}",
        owned.len()
    );
    owned
}

/// The proxy's view of node `a`, from `fanout_proxy_cache_node_up`.
async fn a_is_up(proxy_admin: SocketAddr) -> Option<bool> {
    let metrics = get(proxy_admin, "localhost", "/metrics", &[]).await.ok()?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("fanout_proxy_cache_node_up{") && l.contains("node=\"a\""))?;
    Some(line.ends_with(" 1"))
}

/// `fanout_proxy_cache_node_ejections_total` for node `a` and `reason`.
async fn ejections_of_a(proxy_admin: SocketAddr, reason: &str) -> u64 {
    let metrics = get(proxy_admin, "localhost", "/metrics", &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    text.lines()
        .filter(|l| {
            l.starts_with("fanout_proxy_cache_node_ejections_total{")
                && l.contains("node=\"a\"")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn wait_for_a(proxy_admin: SocketAddr, up: bool) {
    let started = std::time::Instant::now();
    while a_is_up(proxy_admin).await != Some(up) {
        assert!(
            started.elapsed() < DEADLINE,
            "node a never became {}",
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_cache_node_fails_no_request() {
    let (mut c, _) = start().await;
    let owned_by_a = keys_of_a(c.proxy).await;
    c.a.child.kill().unwrap();
    c.a.child.wait().unwrap();
    for round in 0..3 {
        for path in &owned_by_a {
            let r = get(c.proxy, "localhost", path, &[]).await.unwrap();
            assert_eq!(
                r.status,
                200,
                "round {round}, {path}: {}",
                r.header("cache-status")
            );
            assert_eq!(r.cache_node(), "fanout-b", "{path} moved to the next node");
        }
    }
    // The first failed request took `a` out; the back-off kept the rest
    // from trying it (unless it ran out on a slow machine).
    assert!(ejections_of_a(c.proxy_admin, "request").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_take_a_dead_node_out_and_bring_it_back() {
    let (mut c, admin_a) = start().await;
    let owned_by_a = keys_of_a(c.proxy).await;
    wait_for_a(c.proxy_admin, true).await;

    c.a.child.kill().unwrap();
    c.a.child.wait().unwrap();
    // No request is sent: only the probes can notice.
    wait_for_a(c.proxy_admin, false).await;
    assert_eq!(ejections_of_a(c.proxy_admin, "probe").await, 1);
    assert_eq!(ejections_of_a(c.proxy_admin, "request").await, 0);

    let path = c.file("cache-a.yaml").to_string_lossy().into_owned();
    c.a = spawn(&["cache", &path]);
    wait_ready(&[admin_a], &mut c.a).await;
    wait_for_a(c.proxy_admin, true).await;
    let r = get(c.proxy, "localhost", &owned_by_a[0], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.cache_node(),
        "fanout-a",
        "the key went back to its owner: {}",
        r.header("cache-status")
    );
}

/// Clients on both proxies fetching `/o/0..300` in a loop until `stop`;
/// each returns (successes, failures with the first one described).
fn continuous_load(
    proxies: [SocketAddr; 2],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinSet<(u64, Vec<String>)> {
    use std::sync::atomic::Ordering;
    let mut set = tokio::task::JoinSet::new();
    for client in 0..8usize {
        let stop = stop.clone();
        let proxy = proxies[client % 2];
        set.spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut n = client * 37;
            while !stop.load(Ordering::Relaxed) {
                n = (n + 1) % 300;
                match get(proxy, "localhost", &format!("/o/{n}"), &[]).await {
                    Ok(r) if r.status == 200 && r.body.len() == 4096 => ok += 1,
                    other => failed.push(format!("/o/{n}: {other:?}")),
                }
            }
            (ok, failed)
        });
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_on_two_proxies_fails_nothing_and_restart_takes_keys_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Which node answers is what this test watches: no hot tier.
    let mut s = start_standalone(3, "", "hot_tier: { capacity: 0 }\n").await;
    // A second proxy over the same nodes, from its own file.
    let p2 = free_ports(1)[0];
    let proxy2: SocketAddr = ([127, 0, 0, 1], p2).into();
    let text = std::fs::read_to_string(s.path("proxy.yaml"))
        .unwrap()
        .replace(&s.proxy.to_string(), &proxy2.to_string())
        .replace("id: p\n", "id: p2\n")
        .replace(&format!("admin_listen: '{}'\n", s.proxy_admin), "");
    std::fs::write(s.path("proxy2.yaml"), text).unwrap();
    let mut proxy2_process = spawn(&["proxy", &s.path("proxy2.yaml")]);
    wait_ok_get(proxy2, &mut proxy2_process).await;

    // Which keys c2 owns, seen while every node is up and traffic is light.
    let mut owned_by_c2 = Vec::new();
    for n in 0..60 {
        let r = get(s.proxy, "localhost", &format!("/o/{n}"), &[])
            .await
            .unwrap();
        if r.cache_node() == "fanout-c2" {
            owned_by_c2.push(format!("/o/{n}"));
        }
    }
    assert!(!owned_by_c2.is_empty());

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let load = continuous_load([s.proxy, proxy2], stop.clone());
    // Let the load run, then kill c2 in the middle of it.
    wait_for_requests(s.origin, 100).await;
    s.cache_processes[1].child.kill().unwrap();
    s.cache_processes[1].child.wait().unwrap();
    wait_node(&s, "c2", false).await;
    // Restart it with the load still running: the probes bring it back.
    let file = s.path("c2.yaml");
    s.cache_processes[1] = spawn(&["cache", &file]);
    wait_node(&s, "c2", true).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    let mut load = load;
    while let Some(r) = load.join_next().await {
        let (o, f) = r.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 200, "the load ran ({ok} requests)");
    // Back in service, c2 answers for its keys again.
    let r = get(s.proxy, "localhost", &owned_by_c2[0], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_node(), "fanout-c2", "{}", r.header("cache-status"));
}

/// Waits until a proxy without an admin listener answers a request.
async fn wait_ok_get(proxy: SocketAddr, process: &mut Running) {
    let started = std::time::Instant::now();
    loop {
        if matches!(get(proxy, "localhost", "/o/0", &[]).await, Ok(r) if r.status == 200) {
            return;
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("proxy exited with {status}");
        }
        assert!(started.elapsed() < DEADLINE, "second proxy never served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until the origin has served `n` requests for `/o/` objects.
async fn wait_for_requests(origin: SocketAddr, n: u64) {
    let started = std::time::Instant::now();
    loop {
        let r = get(origin, "origin", "/_origin/stats", &[]).await.unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let total: u64 = stats["paths"]
            .as_object()
            .map(|p| {
                p.iter()
                    .filter(|(k, _)| k.starts_with("/o/"))
                    .map(|(_, v)| v.as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        if total >= n {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "load never reached {n} origin requests: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until the first proxy's `/status` shows node `id` up or down.
async fn wait_node(s: &Standalone, id: &str, up: bool) {
    let started = std::time::Instant::now();
    loop {
        let status = s.status().await;
        let node = status["ring"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap();
        if node["up"] == up && node["probed_down"] == !up {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{id} never became up={up}: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
