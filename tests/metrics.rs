//! `/metrics` is Prometheus text that a Prometheus parser reads, follows
//! the naming conventions, and moves as requests are made.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
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
    // The proxy counts a body's bytes when it has sent the last of them,
    // which may be just after the client has read it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(admin).await;
        let sent = sum(&after, "fanout_proxy_response_body_bytes_total", &[])
            - sum(&before, "fanout_proxy_response_body_bytes_total", &[]);
        if sent >= 3.0 * 16384.0 || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

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
    // The first request misses everywhere; the proxy's hot tier answers
    // the other two without the node.
    assert_eq!(
        moved("fanout_cache_requests_total", &[("outcome", "miss")]),
        1.0
    );
    assert_eq!(
        moved("fanout_cache_requests_total", &[("outcome", "hit")]),
        0.0
    );
    assert_eq!(
        moved(
            "fanout_cache_requests_total",
            &[("site", "live"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        moved("fanout_cache_lookup_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        moved(
            "fanout_proxy_hot_tier_requests_total",
            &[("outcome", "miss")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "fanout_proxy_hot_tier_requests_total",
            &[("outcome", "hit")]
        ),
        2.0
    );
    assert_eq!(
        moved("fanout_proxy_hot_tier_served_bytes_total", &[]),
        2.0 * 16384.0
    );
    assert_eq!(sum(&after, "fanout_proxy_hot_tier_entries", &[]), 1.0);
    assert!(sum(&after, "fanout_proxy_hot_tier_size_bytes", &[]) >= 16384.0);
    assert_eq!(
        moved(
            "fanout_proxy_requests_total",
            &[("node", "hot-tier"), ("status_class", "2xx")]
        ),
        2.0
    );
    assert_eq!(moved("fanout_cache_origin_fetches_total", &[]), 1.0);
    assert_eq!(
        moved(
            "fanout_proxy_response_body_bytes_total",
            &[("site", "live")]
        ),
        3.0 * 16384.0
    );
    assert_eq!(moved("fanout_cache_origin_body_bytes_total", &[]), 16384.0);
    assert_eq!(moved("fanout_cache_served_body_bytes_total", &[]), 0.0);
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
        "fanout_proxy_cache_node_ejections_total",
        "fanout_trace_spans_dropped_total",
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
        let committed: Vec<f64> = m
            .samples
            .iter()
            .filter(|s| s.metric == "fanout_control_raft_committed_index")
            .map(value)
            .collect();
        let lagging = m
            .samples
            .iter()
            .filter(|s| s.metric == "fanout_control_raft_replication_lag_entries")
            .count();
        let contact_age = m
            .samples
            .iter()
            .filter(|s| s.metric == "fanout_control_contact_age_seconds")
            .map(value)
            .collect::<Vec<_>>();
        // Only the leader reports what a majority holds and how far each
        // of its two followers is behind.
        if leaders == 1.0
            && committed.len() == 1
            && committed[0] >= 1.0
            && lagging == 2
            && contact_age.len() == 2
            && contact_age.iter().all(|a| *a < 60.0)
            && sum(&m, "fanout_control_raft_term", &[]) >= 1.0
            && group >= 1.0
            && applied.len() == 2
            && applied.iter().all(|a| *a == group)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders {leaders}, group revision {group}, applied {applied:?}, contact age {contact_age:?}, committed {committed:?}, {lagging} lag gauges"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sums of each sum-type metric (counters) in OTLP pushes, latest push wins.
type Pushed = Arc<Mutex<HashMap<String, f64>>>;

/// An OTLP/HTTP metrics receiver on a free port.
async fn metrics_collector() -> (std::net::SocketAddr, Pushed) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
    use prost::Message;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pushed: Pushed = Default::default();
    let store = pushed.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/metrics");
                        let body = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        let export =
                            ExportMetricsServiceRequest::decode(body).expect("OTLP protobuf");
                        let mut store = store.lock().unwrap();
                        for rm in export.resource_metrics {
                            for sm in rm.scope_metrics {
                                for m in sm.metrics {
                                    let Some(Data::Sum(sum)) = m.data else {
                                        continue;
                                    };
                                    let total = sum
                                        .data_points
                                        .iter()
                                        .map(|p| match p.value {
                                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                                            Some(number_data_point::Value::AsDouble(v)) => v,
                                            None => 0.0,
                                        })
                                        .sum();
                                    store.insert(m.name, total);
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, pushed)
}

/// With `telemetry.otlp_metrics_interval`, the same counters `/metrics`
/// shows are pushed to the collector, and they move with requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_over_otlp_when_the_file_asks() {
    let (otlp, pushed) = metrics_collector().await;
    let dir = temp_dir();
    let (file, cluster) = up_file(
        dir.path(),
        1,
        1,
        &format!("telemetry: {{ otlp_endpoint: 'http://{otlp}', otlp_metrics_interval: 200ms }}\n"),
    );
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    for _ in 0..3 {
        let r = get(cluster.proxies[0], "localhost", "/static/5", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = pushed.lock().unwrap().clone();
        // Names as instrumented: the Prometheus suffixes are the exporter's.
        if seen.get("fanout_cache_requests") == Some(&1.0)
            && seen.get("fanout_proxy_requests") == Some(&3.0)
            && seen.get("fanout_proxy_hot_tier_requests") == Some(&3.0)
            && seen.get("fanout_cache_origin_fetches") == Some(&1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "pushed: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
