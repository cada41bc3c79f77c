//! `fanout loadtest`: a scenario played against a real cluster reports what
//! the origin counted, the open-loop schedule keeps its offered rate
//! against a server too slow for it, with the queueing in the latencies,
//! and viewers move on from refused connections and come back after a
//! `Retry-After`.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fanout_loadtest::scenario::{self, RunOptions};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio_util::sync::CancellationToken;

async fn origin_total(origin: std::net::SocketAddr) -> u64 {
    let r = get(origin, "origin", "/_origin/stats", &[])
        .await
        .expect("origin stats");
    let stats: serde_json::Value = serde_json::from_slice(&r.body).expect("stats JSON");
    stats["requests"].as_u64().expect("a request count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_against_a_cluster_reports_what_the_origin_counted() {
    let (dir, cluster, _up) = start_up(2, 2, "").await;
    let scenario = format!(
        "kind: scenario
name: e2e
seed: 5
target:
  addresses: ['{}', '{}']
  host: localhost
  origin: '{}'
phases:
  - {{ name: join, duration: 2s, arrival_rate: 20, population: 30 }}
  - {{ name: watch, duration: 3s, arrival_rate: 0, population: 30 }}
mix:
  - {{ viewer: live, stream: main, weight: 3 }}
  - {{ viewer: static, prefix: /static/, count: 20, weight: 1 }}
faults:
  - {{ at: 1s, name: a marker, command: 'true' }}
",
        cluster.proxies[0], cluster.proxies[1], cluster.origin
    );
    let file = dir.path().join("e2e.yaml");
    std::fs::write(&file, scenario).unwrap();
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let before = origin_total(cluster.origin).await;
    let args: Vec<String> = [
        "loadtest",
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--quiet",
        "--fail-if",
        "errors>0",
    ]
    .map(String::from)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let after = origin_total(cluster.origin).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fail-if      errors>0: no (errors is 0)"),
        "{stdout}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "fanout.loadtest.report/v1");
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));
    let t = &r["totals"];
    let requests = n(&t["requests"]);
    assert_eq!(n(&t["errors"]), 0, "{stdout}");
    let by_class: u64 = r["classes"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| n(&c["requests"]))
        .sum();
    assert_eq!(by_class, requests);
    assert_eq!(
        n(&t["hits"]) + n(&t["misses"]) + n(&t["no_cache_status"]),
        requests
    );
    for class in ["master_playlist", "live_playlist", "live_segment", "static"] {
        assert!(
            n(&r["classes"][class]["requests"]) > 0,
            "no {class} requests"
        );
    }
    // The origin's own counter: what the run read at its start and end
    // lies within what this test read around it.
    let origin = n(&r["origin"]["requests"]);
    assert!(
        origin <= after - before && after - before <= origin + 3,
        "report says {origin} origin requests, the origin counted {}",
        after - before
    );
    assert!(
        origin > 0 && origin * 2 < requests,
        "{origin} of {requests}"
    );
    // Live viewers started and played.
    assert!(r["viewers"]["startup_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(r["viewers"]["play_s"].as_f64().unwrap() > 0.0);
    assert!(n(&r["viewers"]["arrived"]) >= 20);
    // Each live segment the run asked for counts once as new; the origin
    // (behind a cache cluster) served each at most once; viewers had them
    // some time after the origin published them, within the window.
    let v = &r["viewers"];
    let segments = n(&r["origin"]["live_segments"]);
    assert!(n(&v["new_segments"]) > 0, "no new segments counted");
    assert!(n(&v["new_segments_stored"]) <= n(&v["new_segments"]));
    assert!(
        segments > 0 && n(&r["origin"]["live_segment_requests"]) == segments,
        "{} origin requests for {segments} live segments",
        r["origin"]["live_segment_requests"]
    );
    let edge = &v["live_edge_ms"];
    assert!(
        edge["p50"].as_f64().unwrap() > 0.0 && edge["max"].as_f64().unwrap() < 10_000.0,
        "live edge {edge}"
    );
    assert!(
        stdout.contains("  live edge    segments reached viewers"),
        "{stdout}"
    );
    // The generator's punctuality counts every arrival and every live
    // viewer's wake-up for its next playlist poll.
    let lateness =
        scenario::report::decode(r["generator"]["arrival_lateness_hist"].as_str().unwrap())
            .unwrap();
    let arrivals = n(&r["viewers"]["arrived"]) + n(&r["viewers"]["turned_away"]);
    let polls = n(&r["classes"]["live_playlist"]["requests"]);
    assert!(
        lateness.len() >= arrivals + polls,
        "{} starts timed for {arrivals} arrivals and {polls} polls",
        lateness.len()
    );
    assert!(r["timeline"].as_array().unwrap().len() >= 5);
    assert_eq!(r["faults"][0]["name"], "a marker");
    assert_eq!(r["faults"][0]["ok"], true);

    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 7, "one chart per figure");
    assert!(page.contains("a marker"));

    // Thresholds decide the exit status; merge re-reads the JSON report.
    let merge = |threshold: &str| {
        run(&[
            "loadtest",
            "merge",
            json.to_str().unwrap(),
            "--fail-if",
            threshold,
        ])
        .status
    };
    assert_eq!(merge("requests<1000000").code(), Some(1));
    assert_eq!(merge("hit_ratio<0.5").code(), Some(0));
    assert_eq!(
        run(&[
            "loadtest",
            "merge",
            json.to_str().unwrap(),
            json.to_str().unwrap()
        ])
        .status
        .code(),
        Some(2),
        "one shard twice is refused"
    );
}

/// A server that takes 200 ms per request, on a free loopback port.
async fn slow_server() -> std::net::SocketAddr {
    server_taking(Duration::from_millis(200)).await
}

/// A server that answers every request after `delay`, on a free loopback port.
async fn server_taking(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offered_rate_holds_against_a_slow_server_and_latency_counts_the_queue() {
    let server = slow_server().await;
    // 40 arrivals/s for 3 s, at most 4 requests in flight, 200 ms each: the
    // server completes 20/s, so a backlog builds. A closed-loop generator
    // would slow to 20/s and report 200 ms; this one keeps arriving and
    // reports each request from its scheduled time.
    let text = format!(
        "kind: scenario
name: slow
seed: 9
target: {{ addresses: ['{server}'], host: localhost }}
limits: {{ max_in_flight: 4, request_timeout: 30s }}
phases: [{{ name: p, duration: 3s, arrival_rate: 40, population: 100000 }}]
mix: [{{ viewer: static, prefix: /x/, count: 10 }}]
"
    );
    let fanout_config::AnyConfig::Scenario(s) =
        fanout_config::load_str(Path::new("slow.yaml"), &text).unwrap()
    else {
        panic!()
    };
    let report = scenario::run(&s, RunOptions::default(), CancellationToken::new()).await;
    let arrived = report.viewers.arrived;
    let completed = report.totals.requests;
    assert!(
        (80..=160).contains(&arrived),
        "{arrived} arrivals; about 120 offered"
    );
    assert!(
        completed <= 4 * 3 * 5 + 4,
        "{completed} completed; the server does at most 20/s"
    );
    assert!(
        arrived > completed + 20,
        "{arrived} arrived, {completed} completed"
    );
    let l = report.totals.latency_ms;
    // The k-th request waits about k/40 s for a slot: the median of those
    // that finish is near 0.9 s, the slowest near 1.6 s.
    assert!(l.p50 >= 500.0, "p50 {} ms hides the queue", l.p50);
    assert!(l.max >= 1000.0, "max {} ms hides the queue", l.max);
    assert_eq!(report.totals.errors, 0);
    // The generator's own lateness counts every arrival, and the queue for
    // a slot, the server's doing, is not in it.
    let lateness = scenario::report::decode(&report.generator.arrival_lateness_hist).unwrap();
    assert_eq!(lateness.len(), arrived + report.viewers.turned_away);
    let late = report.generator.arrival_lateness_ms;
    assert!(
        late.p99 < l.p50 / 2.0,
        "arrivals started p99 {} ms late, requests took p50 {} ms",
        late.p99,
        l.p50
    );
}

/// A viewer whose address refuses the connection, or accepts and closes it
/// without answering (a proxy restarting), moves on to the next address,
/// as a player does with the next address its name resolves to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_move_to_the_next_address_when_one_refuses_or_drops_them() {
    let good = server_taking(Duration::ZERO).await;
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dropping = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        addr
    };
    let text = format!(
        "kind: scenario
name: failover
seed: 4
target: {{ addresses: ['{refusing}', '{dropping}', '{good}'], host: localhost }}
phases: [{{ name: p, duration: 2s, arrival_rate: 30, population: 100000 }}]
mix: [{{ viewer: static, prefix: /x/, count: 10 }}]
"
    );
    let fanout_config::AnyConfig::Scenario(s) =
        fanout_config::load_str(Path::new("failover.yaml"), &text).unwrap()
    else {
        panic!()
    };
    let report = scenario::run(&s, RunOptions::default(), CancellationToken::new()).await;
    assert_eq!(report.totals.errors, 0, "{:?}", report.first_errors);
    assert!(report.totals.requests >= 30, "{}", report.totals.requests);
    // Two of every three viewers start on a bad address; the one on the
    // refusing address passes the dropping one too.
    assert!(
        report.totals.failovers >= report.totals.requests / 2,
        "{} failovers for {} requests",
        report.totals.failovers,
        report.totals.requests
    );

    // With only bad addresses, the requests fail: nothing is hidden.
    let text = text.replace(&format!(", '{good}'"), "");
    let fanout_config::AnyConfig::Scenario(s) =
        fanout_config::load_str(Path::new("failover.yaml"), &text).unwrap()
    else {
        panic!()
    };
    let report = scenario::run(&s, RunOptions::default(), CancellationToken::new()).await;
    assert_eq!(report.totals.errors, report.totals.requests);
    assert!(report.totals.requests > 0);
}

/// A request refused for now (`503` with `Retry-After`, an overloaded
/// server shedding load) is asked again after the time it names, as a
/// player does: the refusal is counted apart from errors, and the answered
/// retry's latency does not include the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_with_retry_after_is_retried_and_counted_apart_from_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    // Each path's first request is refused.
                    let first = seen.lock().unwrap().insert(req.uri().path().to_string());
                    async move {
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                        if first {
                            *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                            resp.headers_mut().insert(
                                "retry-after",
                                hyper::header::HeaderValue::from_static("1"),
                            );
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let text = format!(
        "kind: scenario
name: refused
seed: 5
target: {{ addresses: ['{server}'], host: localhost }}
phases: [{{ name: p, duration: 3s, arrival_rate: 20, population: 100000 }}]
mix: [{{ viewer: static, prefix: /x/, count: 100000 }}]
"
    );
    let fanout_config::AnyConfig::Scenario(s) =
        fanout_config::load_str(Path::new("refused.yaml"), &text).unwrap()
    else {
        panic!()
    };
    let report = scenario::run(&s, RunOptions::default(), CancellationToken::new()).await;
    let t = &report.totals;
    assert_eq!(t.errors, 0, "{:?}", report.first_errors);
    assert!(t.refused >= 20, "{} refused", t.refused);
    assert!(t.requests >= 10, "{} retries answered", t.requests);
    assert!(
        t.latency_ms.max < 900.0,
        "the answered retries' latency ({} ms max) includes the 1 s wait",
        t.latency_ms.max
    );
    assert!(t.refusal_ms.p50 > 0.0);
}
