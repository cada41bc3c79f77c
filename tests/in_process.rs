//! `fanout up` runs its proxies and cache nodes in one process, and a proxy
//! hands requests to those cache nodes by a call, not over loopback TCP.

mod support;

use std::net::SocketAddr;

use support::*;

/// Established TCP connections (as seen from the connecting side) to any
/// of `ports` on 127.0.0.1, from `/proc/net/tcp`.
fn connections_to(ports: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // fields: sl, local, remote, state (01 = ESTABLISHED), ...
            let (Some(remote), Some(state)) = (fields.get(2), fields.get(3)) else {
                return false;
            };
            let Some((ip, port)) = remote.split_once(':') else {
                return false;
            };
            let port = u16::from_str_radix(port, 16).unwrap_or(0);
            *state == "01" && ip == "0100007F" && ports.contains(&port)
        })
        .count()
}

/// `/static/0` to `/static/{n - 1}` through `proxy`, one after another (all
/// at once, bounded loads could send a key's repeat to another node).
async fn get_all(proxy: SocketAddr, n: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for i in 0..n {
        let path = format!("/static/{i}");
        replies.push(
            get(proxy, "localhost", &path, &[])
                .await
                .expect("GET through the proxy"),
        );
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_reaches_cache_nodes_in_its_process_without_a_connection() {
    // Every request must reach a node here: no hot tier.
    let (_dir, cluster, _process) = start_up_node_only(2, 1, "").await;
    let proxy = cluster.proxies[0];
    let cache_ports: Vec<u16> = cluster.caches.iter().map(SocketAddr::port).collect();

    // Misses, then hits: over sockets the proxy's pool would keep a
    // connection to each node open for 45 s after.
    for round in ["fwd=uri-miss", "; hit"] {
        for reply in get_all(proxy, 16).await {
            assert_eq!(reply.status, 200);
            assert_eq!(reply.body.len(), 16 * 1024);
            assert!(
                reply.header("cache-status").contains(round),
                "{round}: {}",
                reply.header("cache-status")
            );
        }
    }
    let nodes: std::collections::HashSet<String> = get_all(proxy, 16)
        .await
        .iter()
        .map(|r| r.cache_node().to_string())
        .collect();
    assert_eq!(nodes.len(), 2, "keys spread over both nodes: {nodes:?}");
    assert_eq!(
        connections_to(&cache_ports),
        0,
        "the proxy connected to a cache node of its own process"
    );

    // The nodes' sockets still serve everyone else.
    for cache in &cluster.caches {
        let direct = get(*cache, "localhost", "/static/0", &[]).await.unwrap();
        assert_eq!(direct.status, 200);
    }
}
