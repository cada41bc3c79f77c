//! The proxy's access log: one JSON line per request on stdout, written
//! once the body is sent, with the cache node, the cache status and the
//! bytes; sites can opt out.

mod support;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_one_json_line_and_opted_out_sites_none() {
    let mut s = start_standalone(
        1,
        concat!(
            "  - name: quiet\n    hosts: [quiet.localhost]\n    access_log: false\n",
            "    origin: { addresses: ['ORIGIN'] }\n",
            "  - name: sampled\n    hosts: [sampled.localhost]\n    access_log_sample: 0\n",
            "    origin: { addresses: ['ORIGIN'] }\n",
        ),
        "access_log: true\n",
    )
    .await;
    // Restart the proxy with its stdout readable by the test.
    s.proxy_process.child.kill().unwrap();
    s.proxy_process.child.wait().unwrap();
    s.proxy_process = spawn_capturing_stdout(&["proxy", &s.path("proxy.yaml")]);
    let admin = s.proxy_admin;
    wait_ready(&[admin], &mut s.proxy_process).await;
    let stdout = s.proxy_process.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    let quiet = get(s.proxy, "quiet.localhost", "/o/9", &[]).await.unwrap();
    assert_eq!(quiet.status, 200);
    let sampled_out = get(s.proxy, "sampled.localhost", "/o/8", &[])
        .await
        .unwrap();
    assert_eq!(sampled_out.status, 200);
    let miss = get(s.proxy, "localhost", "/o/1?x=1", &[]).await.unwrap();
    assert_eq!(miss.status, 200);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let hit = get(
        s.proxy,
        "localhost",
        "/o/1?x=1",
        &[("traceparent", traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(hit.status, 200);
    let unknown = get(s.proxy, "nowhere.example", "/", &[]).await.unwrap();
    assert_eq!(unknown.status, 404);

    let deadline = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left.max(Duration::from_millis(1)))
            .unwrap_or_else(|_| panic!("only {} access-log lines: {lines:?}", lines.len()));
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        lines.push(json);
    }
    let [first, second, third] = &lines[..] else {
        unreachable!()
    };
    assert_eq!(
        first["host"], "localhost",
        "the quiet and sampled-out sites are not logged: {first}"
    );
    assert_eq!(first["path"], "/o/1?x=1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["status"], 200);
    assert_eq!(first["site"], "s");
    assert_eq!(first["node"], "c1");
    assert_eq!(first["bytes"], 4096);
    assert_eq!(first["complete"], true);
    assert!(
        first["cache_status"]
            .as_str()
            .unwrap()
            .contains("fwd=uri-miss"),
        "{first}"
    );
    assert!(
        second["cache_status"].as_str().unwrap().contains("hit"),
        "{second}"
    );
    assert!(first["duration_ms"].as_f64().unwrap() >= first["ttfb_ms"].as_f64().unwrap());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["trace_id"], serde_json::Value::Null);
    assert_eq!(second["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(third["status"], 404);
    assert_eq!(third["site"], serde_json::Value::Null);
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "one line per request"
    );
}
