//! A cache node dies: the proxy sends its keys to the next node on the
//! ring and no client request fails; its health probes take the node out,
//! and bring it back when it recovers. Every part is its own process here,
//! so a node can really be killed and restarted.

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
             cache_nodes:\n  - {{ id: a, address: '{cache_a}' }}\n  - {{ id: b, address: '{cache_b}' }}\n"
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
