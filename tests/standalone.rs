//! Each component as its own process, as on separate machines: `fanout
//! origin`, `fanout cache` and `fanout proxy`, each from its own file.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_form_a_cluster_and_stop_cleanly_on_sigterm() {
    let dir = temp_dir();
    let d = dir.path();
    let p = free_ports(5);
    let (origin, cache, cache_admin, proxy, proxy_admin) = (p[0], p[1], p[2], p[3], p[4]);
    std::fs::write(
        d.join("cluster.yaml"),
        format!("kind: cluster\nsites:\n  - name: s\n    hosts: [localhost]\n    origin: {{ addresses: ['127.0.0.1:{origin}'] }}\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("origin.yaml"),
        format!("kind: origin\nlisten: 127.0.0.1:{origin}\nobjects:\n  - {{ prefix: /o/, count: 10, size: 1KiB }}\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("cache.yaml"),
        format!("kind: cache\nid: c1\nlisten: 127.0.0.1:{cache}\nadmin_listen: 127.0.0.1:{cache_admin}\ncluster: cluster.yaml\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("proxy.yaml"),
        format!(
            "kind: proxy\nid: p1\nlisten: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{proxy_admin}\ncluster: cluster.yaml\n\
             cache_nodes:\n  - {{ id: c1, address: '127.0.0.1:{cache}' }}\n"
        ),
    )
    .unwrap();
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let mut origin_process = spawn(&["origin", &path("origin.yaml")]);
    let mut cache_process = spawn(&["cache", &path("cache.yaml")]);
    let mut proxy_process = spawn(&["proxy", &path("proxy.yaml")]);
    wait_origin(([127, 0, 0, 1], origin).into(), &mut origin_process).await;
    wait_ready(&[([127, 0, 0, 1], cache_admin).into()], &mut cache_process).await;
    wait_ready(&[([127, 0, 0, 1], proxy_admin).into()], &mut proxy_process).await;

    let proxy_addr = ([127, 0, 0, 1], proxy).into();
    let first = get(proxy_addr, "localhost", "/o/1", &[]).await.unwrap();
    // RFC 9211 order: the node's entry, then the proxy's hot tier's.
    let status = first.header("cache-status");
    assert!(
        status.starts_with(
            "fanout-c1; fwd=uri-miss; stored; ttl=300, fanout-p1; fwd=uri-miss; stored; ttl="
        ),
        "{status}"
    );
    let second = get(proxy_addr, "localhost", "/o/1", &[]).await.unwrap();
    assert!(
        second
            .header("cache-status")
            .starts_with("fanout-p1; hit; ttl="),
        "{}",
        second.header("cache-status")
    );
    assert_eq!(
        origin_count(([127, 0, 0, 1], origin).into(), "/o/1").await,
        1
    );

    // SIGTERM: the proxy drains and exits 0.
    let pid = proxy_process.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = proxy_process.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "proxy did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "proxy exited with {status}");
}
