//! `/metrics` is Prometheus text that a Prometheus parser reads, follows
//! the naming conventions, and moves as requests are made.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use support::*;

async fn scrape(admin: std::net::SocketAddr) -> Scrape {
    let r = get(admin, "localhost", "/metrics", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

fn value(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => f64::NAN,
    }
}

/// The sum of a metric's samples whose labels include all of `labels`.
fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_follow_the_conventions_and_move_with_requests() {
    let dir = temp_dir();
    let (control_plane, _) = control_plane_section();
    let (file, cluster) = up_file(dir.path(), 1, 1, &control_plane);
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    let admin = cluster.cache_admins[0];

    let before = scrape(admin).await;
    for _ in 0..3 {
        let r = get(cluster.proxies[0], "localhost", "/static/3", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let after = scrape(admin).await;

    // Conventions: one prefix, counters end in _total, units spelled once.
    for s in &after.samples {
        if s.metric == "target_info" {
            continue;
        }
        assert!(s.metric.starts_with("fanout_"), "{}", s.metric);
        assert!(!s.metric.contains("_bytes_bytes"), "{}", s.metric);
        if matches!(s.value, Value::Counter(_)) {
            assert!(s.metric.ends_with("_total"), "{} is a counter", s.metric);
        }
    }
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        sum(&after, metric, labels) - sum(&before, metric, labels)
    };
    assert_eq!(
        moved("fanout_cache_requests_total", &[("outcome", "miss")]),
        1.0
    );
    assert_eq!(
        moved("fanout_cache_requests_total", &[("outcome", "hit")]),
        2.0
    );
    assert_eq!(moved("fanout_cache_origin_fetches_total", &[]), 1.0);
    assert_eq!(moved("fanout_cache_origin_body_bytes_total", &[]), 16384.0);
    assert_eq!(
        moved("fanout_cache_served_body_bytes_total", &[]),
        2.0 * 16384.0
    );
    assert_eq!(
        moved(
            "fanout_proxy_requests_total",
            &[("status_class", "2xx"), ("site", "live")]
        ),
        3.0
    );
    assert_eq!(
        moved(
            "fanout_cache_origin_response_header_duration_seconds_count",
            &[]
        ),
        1.0
    );
    assert!(sum(&after, "fanout_cache_size_bytes", &[]) >= 16384.0);

    // Every metric the Grafana dashboard queries is one Fanout exports
    // (counters that only appear once their event happens are named here).
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/fanout.json"),
    )
    .unwrap();
    let exported: HashSet<&str> = after.samples.iter().map(|s| s.metric.as_str()).collect();
    let on_event = [
        "fanout_proxy_retries_total",
        "fanout_proxy_fail_open_total",
        "fanout_cache_origin_errors_total",
    ];
    let mut queried = 0;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("fanout_") {
            continue;
        }
        queried += 1;
        let name = word.strip_suffix("_bucket").unwrap_or(word);
        assert!(
            exported.contains(name) || on_event.contains(&name),
            "the dashboard queries {word}, which is not exported"
        );
    }
    assert!(queried > 20, "{queried} metric references in the dashboard");
    assert_eq!(sum(&after, "fanout_proxy_cache_node_up", &[]), 1.0);

    // The control plane: a term, one leader, and every part's applied
    // revision catching up with the group's.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(admin).await;
        let leaders = sum(&m, "fanout_control_raft_is_leader", &[]);
        let group = m
            .samples
            .iter()
            .filter(|s| s.metric == "fanout_control_revision")
            .map(value)
            .fold(0.0, f64::max);
        let applied: Vec<f64> = m
            .samples
            .iter()
            .filter(|s| s.metric == "fanout_control_revision_applied")
            .map(value)
            .collect();
        if leaders == 1.0
            && sum(&m, "fanout_control_raft_term", &[]) >= 1.0
            && group >= 1.0
            && applied.len() == 2
            && applied.iter().all(|a| *a == group)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders {leaders}, group revision {group}, applied {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
