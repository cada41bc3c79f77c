//! The proxy's configuration swapped under load: SIGHUP and file changes
//! apply a new snapshot (nodes, health, settings) while requests keep
//! flowing, and not one of them fails; a broken file is refused whole and
//! the running configuration stays.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// Clients fetching `/o/N` in a loop until `stop`; returns (ok, failed,
/// first failure).
fn load(
    proxy: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinSet<(u64, u64, Option<String>)> {
    let mut set = tokio::task::JoinSet::new();
    let counter = Arc::new(AtomicU64::new(0));
    for _ in 0..clients {
        let stop = stop.clone();
        let counter = counter.clone();
        set.spawn(async move {
            let (mut ok, mut failed, mut first) = (0, 0, None);
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed) % 500;
                match get(proxy, "localhost", &format!("/o/{n}"), &[]).await {
                    Ok(r) if r.status == 200 && r.body.len() == 4096 => ok += 1,
                    other => {
                        failed += 1;
                        first.get_or_insert_with(|| format!("{other:?}"));
                    }
                }
            }
            (ok, failed, first)
        });
    }
    set
}

async fn finish(mut set: tokio::task::JoinSet<(u64, u64, Option<String>)>) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (o, f, first) = r.unwrap();
        ok += o;
        failed += f;
        assert!(first.is_none(), "a request failed: {}", first.unwrap());
    }
    (ok, failed)
}

fn node_ids(status: &serde_json::Value) -> Vec<String> {
    status["ring"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_config_ten_times_a_second_under_load_fails_no_request() {
    let s = start_standalone(3, "", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(s.proxy, 8, stop.clone());
    let started = s.status().await["generation"].as_u64().unwrap();
    // Thirty swaps between three nodes and two, each announced by SIGHUP.
    let swaps = 30;
    for i in 0..swaps {
        let nodes: &[usize] = if i % 2 == 0 { &[0, 1] } else { &[0, 1, 2] };
        let retries = if i % 3 == 0 {
            "retries: { budget_ratio: 0.5 }\n"
        } else {
            ""
        };
        s.write_proxy(nodes, retries);
        hangup(&s.proxy_process);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last file names all three nodes: wait for it to be the one running.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = s.status().await;
        let generation = status["generation"].as_u64().unwrap();
        if node_ids(&status) == ["c1", "c2", "c3"] && generation >= started + swaps / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "reloads not applied: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = finish(clients).await;
    assert_eq!(failed, 0);
    assert!(ok > 100, "the load ran ({ok} requests)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_is_picked_up_without_a_signal() {
    let s = start_standalone(2, "", "").await;
    assert_eq!(node_ids(&s.status().await), ["c1", "c2"]);
    s.write_proxy(&[1], "");
    let deadline = Instant::now() + DEADLINE;
    while node_ids(&s.status().await) != ["c2"] {
        assert!(
            Instant::now() < deadline,
            "the changed file was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.cache_node(), "fanout-c2", "only c2 is configured now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_refused_and_the_running_config_stays() {
    let s = start_standalone(2, "", "").await;
    let before = s.status().await;
    // A typo in a field name: the whole file is refused.
    s.write_proxy(&[1], "retries: { budget_ration: 0.5 }\n");
    hangup(&s.proxy_process);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = get(s.proxy_admin, "localhost", "/metrics", &[])
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        if text.lines().any(|l| {
            l.starts_with("fanout_proxy_config_reloads_total{") && l.contains("result=\"rejected\"")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was not reported:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = s.status().await;
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(node_ids(&after), ["c1", "c2"]);
    let r = get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(r.status, 200, "the proxy keeps serving");
}
