//! A cache node dies: the proxy sends its keys to the next node on the
//! ring and no client request fails. Every part is its own process here, so
//! the node can really be killed.

mod support;

use std::net::SocketAddr;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_cache_node_fails_no_request() {
    let dir = temp_dir();
    let d = dir.path();
    let p = free_ports(6);
    let addr = |i: usize| -> SocketAddr { ([127, 0, 0, 1], p[i]).into() };
    let (origin, cache_a, admin_a, cache_b, admin_b, proxy) =
        (addr(0), addr(1), addr(2), addr(3), addr(4), addr(5));
    std::fs::write(
        d.join("cluster.yaml"),
        format!("kind: cluster\nsites:\n  - name: s\n    hosts: [localhost]\n    origin: {{ addresses: ['{origin}'] }}\n"),
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
            "kind: proxy\nid: p\nlisten: '{proxy}'\ncluster: cluster.yaml\n\
             cache_nodes:\n  - {{ id: a, address: '{cache_a}' }}\n  - {{ id: b, address: '{cache_b}' }}\n"
        ),
    )
    .unwrap();
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let mut origin_process = spawn(&["origin", &path("origin.yaml")]);
    let mut a = spawn(&["cache", &path("cache-a.yaml")]);
    let mut b = spawn(&["cache", &path("cache-b.yaml")]);
    let _proxy = spawn(&["proxy", &path("proxy.yaml")]);
    wait_origin(origin, &mut origin_process).await;
    wait_ready(&[admin_a], &mut a).await;
    wait_ready(&[admin_b], &mut b).await;
    let started = std::time::Instant::now();
    while get(proxy, "localhost", "/o/0", &[]).await.is_err() {
        assert!(started.elapsed() < DEADLINE, "proxy not up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Fill both nodes and learn which keys node a owns.
    let mut owned_by_a = Vec::new();
    for i in 0..60 {
        let path = format!("/o/{i}");
        let r = get(proxy, "localhost", &path, &[]).await.unwrap();
        assert_eq!(r.status, 200);
        if r.cache_node() == "fanout-a" {
            owned_by_a.push(path);
        }
    }
    assert!(
        owned_by_a.len() > 10,
        "the ring gives node a a share of the keys: {}",
        owned_by_a.len()
    );

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    for round in 0..3 {
        for path in &owned_by_a {
            let r = get(proxy, "localhost", path, &[]).await.unwrap();
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
