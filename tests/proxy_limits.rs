//! The proxy when things go wrong around it: every cache node gone (fail
//! open to the origin under a cap, or 503 when configured so), clients
//! that hold connections open without using them, and clients that send
//! headers slowly.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

/// Kills every cache node of `s` and waits until the proxy's probes agree.
async fn kill_all_caches(s: &mut Standalone) {
    for c in &mut s.cache_processes {
        c.child.kill().unwrap();
        c.child.wait().unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = s.status().await;
        let nodes = status["ring"]["nodes"].as_array().unwrap().clone();
        if nodes.iter().all(|n| n["up"] == false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes never marked down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_cache_node_down_requests_go_to_the_origin() {
    let mut s = start_standalone(2, "", "").await;
    // Right after the kill, before any probe: connect errors, a retry, then
    // the origin.
    for c in &mut s.cache_processes {
        c.child.kill().unwrap();
        c.child.wait().unwrap();
    }
    let r = get(s.proxy, "localhost", "/o/7", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 4096);
    assert_eq!(
        r.header("cache-status"),
        "fanout-p; fwd=uri-miss",
        "no cache node answered; the hot tier forwarded and kept nothing"
    );
    assert!(r.header("via").contains("fanout"), "{:?}", r.headers);
    kill_all_caches(&mut s).await;
    for i in 0..20 {
        let r = get(s.proxy, "localhost", &format!("/o/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "fail-open answer {i}");
    }
    assert_eq!(origin_count(s.origin, "/o/3").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_is_capped_to_protect_the_origin() {
    let mut s = start_standalone(1, "", "fail_open: { max_origin_requests: 2 }\n").await;
    kill_all_caches(&mut s).await;
    // Ten viewers at once for objects that take the origin 500 ms: two
    // go through, the rest are told to come back.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let proxy = s.proxy;
        tasks.spawn(async move { get(proxy, "localhost", &format!("/slow/{i}"), &[]).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap().unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("retry-after"), "1");
                refused += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((1..=2).contains(&ok), "{ok} went to the origin, cap is 2");
    assert_eq!(ok + refused, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_open_disabled_no_node_means_503() {
    let mut s = start_standalone(1, "", "fail_open: { enabled: false }\n").await;
    kill_all_caches(&mut s).await;
    let r = get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(origin_count(s.origin, "/o/1").await, 0);
}

/// Reads until the server closes the connection; returns how long it took.
fn time_to_close(mut stream: TcpStream) -> Duration {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("connection not closed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let s = start_standalone(
        1,
        "",
        "limits: { idle_timeout: 300ms, header_read_timeout: 20s }\n",
    )
    .await;
    // HTTP/1.1: one request, then silence.
    let mut c = TcpStream::connect(s.proxy).unwrap();
    c.write_all(b"GET /o/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let waited = time_to_close(c);
    assert!(
        waited < Duration::from_secs(15),
        "closed by the idle timeout, not the header timeout ({waited:?})"
    );
    // A request in flight is not idleness: the origin takes 500 ms to
    // answer /slow/, longer than the idle timeout.
    let mut c = TcpStream::connect(s.proxy).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(b"GET /slow/1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Had the idle check closed it, hyper would have finished the request
    // and said so.
    assert!(
        !head.contains("connection: close"),
        "the connection was closed as idle mid-request: {head}"
    );
    // HTTP/2 (prior knowledge): the connection ends after the idle time.
    let tcp = tokio::net::TcpStream::connect(s.proxy).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://localhost/o/2")
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_headers_slowly_is_cut_off() {
    let s = start_standalone(1, "", "limits: { header_read_timeout: 300ms }\n").await;
    let mut c = TcpStream::connect(s.proxy).unwrap();
    // Half a request, and then nothing (slowloris).
    c.write_all(b"GET /o/1 HTTP/1.1\r\nHost: local").unwrap();
    let waited = time_to_close(c);
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // And the proxy still serves everyone else.
    let r = get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight_and_sends_goaway() {
    let mut s = start_standalone(1, "", "").await;
    // An HTTP/2 client with an open, quiet connection.
    let tcp = tokio::net::TcpStream::connect(s.proxy).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
    let h2_conn = tokio::spawn(conn);
    let req = http::Request::get("http://localhost/o/5")
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    // A request the origin takes 500 ms to answer, in flight at SIGTERM.
    let proxy = s.proxy;
    let slow = tokio::spawn(async move { get(proxy, "localhost", "/slow/1", &[]).await });
    let deadline = Instant::now() + DEADLINE;
    while s.status().await["ring"]["nodes"][0]["in_flight"] == 0 {
        assert!(Instant::now() < deadline, "the slow request never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.proxy_process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "the request in flight finished");
    assert_eq!(r.body.len(), 4096);
    // The HTTP/2 connection was told to go away and ended.
    let ended = tokio::time::timeout(DEADLINE, h2_conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection stayed open");
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = s.proxy_process.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
    assert!(
        TcpStream::connect(s.proxy).is_err(),
        "nothing listens after shutdown"
    );
}
