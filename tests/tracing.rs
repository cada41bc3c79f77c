//! Traces end to end: a client's W3C trace context goes through the proxy
//! and the cache node to the origin, and each hop exports its span over
//! OTLP/HTTP to a collector (here, one in the test that decodes the
//! protobuf with the opentelemetry-proto types).

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use support::*;

#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

/// An OTLP/HTTP trace receiver on a free port.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        let mut store = store.lock().unwrap();
                        for rs in export.resource_spans {
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    store.push(Received {
                                        name: s.name,
                                        trace_id: hex(&s.trace_id),
                                        span_id: hex(&s.span_id),
                                        parent: hex(&s.parent_span_id),
                                    });
                                }
                            }
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_from_client_to_origin() {
    let (otlp, spans) = collector().await;
    let dir = temp_dir();
    let (file, cluster) = up_file(dir.path(), 1, 1, "");
    let endpoint = format!("http://{otlp}");
    let mut process = spawn_with_env(
        &["up", file.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    wait_cluster_ready(&cluster, &mut process).await;

    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = get(
        cluster.proxies[0],
        "localhost",
        "/static/7",
        &[("traceparent", &traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let by_name = loop {
        let seen: HashMap<String, Received> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == TRACE)
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        if [
            "proxy request",
            "cache request",
            "cache lookup",
            "origin fetch",
        ]
        .iter()
        .all(|n| seen.contains_key(*n))
        {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "spans of the trace so far: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let proxy = &by_name["proxy request"];
    let cache = &by_name["cache request"];
    assert_eq!(
        proxy.parent, CLIENT_SPAN,
        "the proxy continues the client's trace"
    );
    assert_eq!(cache.parent, proxy.span_id);
    assert_eq!(by_name["cache lookup"].parent, cache.span_id);
    let fetch = &by_name["origin fetch"];
    assert_eq!(fetch.parent, cache.span_id);

    // The origin saw the trace, with the origin fetch as its parent.
    let stats = get(cluster.origin, "origin", "/_origin/stats", &[])
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(
        stats["traceparents"]["/static/7"],
        format!("00-{TRACE}-{}-01", fetch.span_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_the_context_still_passes_through() {
    let (_dir, cluster, _up) = start_up(1, 1, "").await;
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = get(
        cluster.proxies[0],
        "localhost",
        "/static/8",
        &[("traceparent", &traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let stats = get(cluster.origin, "origin", "/_origin/stats", &[])
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["traceparents"]["/static/8"], traceparent);
}

/// The up file's `telemetry:` section: the endpoint, and a sample ratio of
/// zero that records no new trace but continues a caller's sampled one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_names_the_collector_and_the_sampling() {
    let (otlp, spans) = collector().await;
    let dir = temp_dir();
    let (file, cluster) = up_file(
        dir.path(),
        1,
        1,
        &format!("telemetry: {{ otlp_endpoint: 'http://{otlp}', sample_ratio: 0 }}\n"),
    );
    let mut process = spawn_with_env(
        &["up", file.to_str().unwrap()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    wait_cluster_ready(&cluster, &mut process).await;

    // No caller context: a new trace, sampled out at ratio 0.
    let r = get(cluster.proxies[0], "localhost", "/static/11", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // A caller that sampled its trace: continued and exported.
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    let r = get(
        cluster.proxies[0],
        "localhost",
        "/static/12",
        &[("traceparent", &traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = spans.lock().unwrap().clone();
        if seen.iter().any(|s| s.name == "origin fetch") {
            // Spans leave in the order they end: the first request's would
            // have come first.
            let other: Vec<_> = seen.iter().filter(|s| s.trace_id != TRACE).collect();
            assert!(other.is_empty(), "sampled out, yet exported: {other:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no spans from the file's endpoint: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collector that accepts connections and never answers: exports hang,
/// the queue fills, and further spans are dropped and counted, while
/// requests are answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_costs_dropped_spans_not_requests() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let dir = temp_dir();
    let (file, cluster) = up_file(dir.path(), 1, 1, "");
    let endpoint = format!("http://{hung}");
    let mut process = spawn_with_env(
        &["up", file.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
        ],
    );
    wait_cluster_ready(&cluster, &mut process).await;
    for i in 0..20 {
        let r = get(
            cluster.proxies[0],
            "localhost",
            // Each a miss: a hot-tier hit would end one span, not three.
            &format!("/static/{}", 100 + i),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get(cluster.cache_admins[0], "localhost", "/metrics", &[])
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&m.body).into_owned();
        let dropped: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("fanout_trace_spans_dropped_total{")
                    && l.contains("reason=\"queue_full\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        // 20 requests end 60 or more spans; the queue holds 4 and one
        // export is stuck.
        if dropped >= 40.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{dropped} spans counted as dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
