//! Collapsed misses through the real binary: one origin fetch however many
//! clients ask at once, bytes streamed to all of them as they arrive, and
//! neither unstorable nor broken responses shared or stored.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use support::*;

/// Each client on its own connection, as viewers are.
fn one_connection_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_crowd_makes_one_origin_request() {
    let (_dir, cluster, _process) = start_up(1, 2, "").await;
    let origin_requests = flash_crowd(&cluster).await;
    assert_eq!(origin_requests, 1, "one origin request for the crowd");
}

/// The proxies' load bound spreads a crowd for one key over the owner and
/// its ring successors; each of them collapses its share into one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_crowd_on_a_cluster_makes_at_most_one_origin_request_per_node() {
    let (_dir, cluster, _process) = start_up(3, 2, "").await;
    let origin_requests = flash_crowd(&cluster).await;
    assert!(
        (1..=3).contains(&origin_requests),
        "{origin_requests} origin requests for one object on 3 cache nodes"
    );
}

/// 500 clients ask for one new object at once through the proxies; returns
/// how many requests for it reached the origin.
async fn flash_crowd(cluster: &Cluster) -> u64 {
    const CLIENTS: usize = 500;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let proxy = cluster.proxies[i % cluster.proxies.len()];
        tasks.spawn(async move {
            let client = one_connection_client();
            let req = http::Request::get(format!("http://{proxy}/crowd/1"))
                .header("host", "localhost")
                .body(Empty::new())
                .unwrap();
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let cache_status = resp
                .headers()
                .get("cache-status")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, cache_status, body))
        });
    }
    let mut bodies = std::collections::HashSet::new();
    let mut collapsed = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, cache_status, body) = r.unwrap().unwrap();
        assert_eq!(status, 200, "{cache_status}");
        assert_eq!(body.len(), 256 * 1024);
        collapsed += cache_status.contains("collapsed") as usize;
        bodies.insert(body);
    }
    assert_eq!(bodies.len(), 1, "every client got the same bytes");
    // The origin takes 200 ms: most clients arrive while the fill runs.
    assert!(collapsed > 0, "no request joined the fill in flight");
    origin_count(cluster.origin, "/crowd/1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_joins_mid_fill_gets_every_byte() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let client = one_connection_client();
    let req = http::Request::get(format!("http://{proxy}/slow/2"))
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let first = client.request(req).await.unwrap();
    assert!(first.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("fwd=uri-miss; stored"));
    let mut first_body = first.into_body();
    // Read the first bytes: the origin is sending at 1 MiB/s, so the fill
    // has half a second to go.
    let mut received = Vec::new();
    while received.is_empty() {
        let frame = first_body
            .frame()
            .await
            .expect("more body")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert!(
        received.len() < 512 * 1024,
        "the first client got bytes before the fill completed"
    );

    // A second client arrives mid-fill and is collapsed onto it.
    let second = get(proxy, "localhost", "/slow/2", &[]).await.unwrap();
    assert!(
        second.header("cache-status").contains("collapsed"),
        "{}",
        second.header("cache-status")
    );
    received.extend_from_slice(&first_body.collect().await.unwrap().to_bytes());
    assert_eq!(received.len(), 512 * 1024);
    assert_eq!(
        second.body.as_ref(),
        &received[..],
        "the late joiner got the bytes before it joined, then the rest"
    );
    assert_eq!(origin_count(cluster.origin, "/slow/2").await, 1);

    let third = get(proxy, "localhost", "/slow/2", &[]).await.unwrap();
    assert!(
        third.header("cache-status").contains("; hit"),
        "{}",
        third.header("cache-status")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_failure_mid_body_breaks_every_waiter_and_is_not_stored() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        tasks.spawn(async move {
            let client = one_connection_client();
            let req = http::Request::get(format!("http://{proxy}/broken/3"))
                .header("host", "localhost")
                .body(Empty::new())
                .unwrap();
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            match resp.into_body().collect().await {
                Ok(b) => Ok(b.to_bytes().len()),
                Err(e) => Err(e.to_string()),
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        // Headers may or may not have been sent; either way no client may
        // receive what looks like a complete 256 KiB body.
        if let Ok(len) = r.unwrap() {
            panic!("a client received a complete-looking body of {len} bytes");
        }
    }
    assert_eq!(
        origin_count(cluster.origin, "/broken/3").await,
        1,
        "the waiters shared the one fill"
    );
    let again = get(proxy, "localhost", "/broken/3", &[]).await;
    assert!(
        again.is_err(),
        "still broken, and not served from cache: {again:?}"
    );
    assert_eq!(
        origin_count(cluster.origin, "/broken/3").await,
        2,
        "nothing was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_responses_are_not_shared_and_later_requests_pass() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        tasks.spawn(async move { get(proxy, "localhost", "/nostore/4", &[]).await.unwrap() });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            !r.header("cache-status").contains("collapsed"),
            "{}",
            r.header("cache-status")
        );
        statuses.push(r.header("cache-status").to_string());
    }
    assert_eq!(
        origin_count(cluster.origin, "/nostore/4").await,
        10,
        "each client got its own origin response"
    );
    assert!(
        statuses.iter().any(|s| s.contains("hit-for-pass")),
        "{statuses:?}"
    );
    let later = get(proxy, "localhost", "/nostore/4", &[]).await.unwrap();
    assert!(
        later
            .header("cache-status")
            .contains("fwd=bypass; detail=hit-for-pass"),
        "{}",
        later.header("cache-status")
    );
}

/// Many concurrent GETs through the proxy; returns (status, Cache-Status) of each.
async fn crowd(proxy: std::net::SocketAddr, path: &str, clients: usize) -> Vec<(u16, String)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let path = path.to_string();
        tasks.spawn(async move {
            let r = get(proxy, "localhost", &path, &[]).await.unwrap();
            (r.status, r.header("cache-status").to_string())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_requested_before_it_exists_still_collapses_once_published() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let playlist = get(cluster.origin, "localhost", "/live/main/hi/index.m3u8", &[])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&playlist.body).into_owned();
    let latest = text
        .lines()
        .rev()
        .find(|l| l.ends_with(".ts"))
        .unwrap()
        .trim_end_matches(".ts")
        .parse::<u64>()
        .unwrap();
    let path = format!("/live/main/hi/{}.ts", latest + 3);

    // A player asks too early: 404, which the origin allows to be cached for 1 s.
    let early = get(proxy, "localhost", &path, &[]).await.unwrap();
    assert_eq!(early.status, 404);

    // Wait for the origin to publish it (and the 1 s 404 to expire).
    let started = std::time::Instant::now();
    while get(cluster.origin, "localhost", &path, &[])
        .await
        .unwrap()
        .status
        != 200
    {
        assert!(started.elapsed() < DEADLINE, "segment never published");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = origin_count(cluster.origin, &path).await;
    let results = crowd(proxy, &path, 30).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    assert!(
        !results.iter().any(|(_, c)| c.contains("hit-for-pass")),
        "{results:?}"
    );
    assert_eq!(
        origin_count(cluster.origin, &path).await - before,
        1,
        "the crowd made one origin request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_server_errors_are_shared_by_the_fill_and_not_passed() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let results = crowd(proxy, "/err/1", 20).await;
    assert!(results.iter().all(|(s, _)| *s == 503), "{results:?}");
    assert_eq!(
        origin_count(cluster.origin, "/err/1").await,
        1,
        "one origin request for 20 clients"
    );
    let (status, cache_status) = crowd(proxy, "/err/1", 1).await.remove(0);
    assert_eq!(status, 503);
    assert!(!cache_status.contains("hit-for-pass"), "{cache_status}");
    assert_eq!(
        origin_count(cluster.origin, "/err/1").await,
        2,
        "errors are not stored either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_origin_body_is_abandoned_at_the_total_timeout() {
    // The site allows 3 s for a whole fill; /crawl/ objects would take 16 s.
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let started = std::time::Instant::now();
    let r = get(proxy, "localhost", "/crawl/1", &[]).await;
    assert!(
        r.is_err(),
        "a body cut off by the timeout must not look complete: {r:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the fill was not cut off"
    );
    let again = get(proxy, "localhost", "/crawl/1", &[("range", "bytes=0-0")])
        .await
        .unwrap();
    assert!(
        again.header("cache-status").contains("fwd=uri-miss"),
        "nothing was stored: {}",
        again.header("cache-status")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_to_its_cap_on_open_origin_requests() {
    let dir = temp_dir();
    let (file, cluster) = up_file(dir.path(), 1, 1, "");
    // Same cluster, but the cache node may have only 2 origin requests open.
    let yaml = std::fs::read_to_string(&file).unwrap().replace(
        "capacity: 64MiB }",
        "capacity: 64MiB, max_origin_fetches: 2 }",
    );
    std::fs::write(&file, yaml).unwrap();
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_ready(&cluster.cache_admins, &mut process).await;
    // Ten distinct misses at once, each taking 200 ms at the origin.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let proxy = cluster.proxies[0];
        tasks.spawn(async move {
            get(proxy, "localhost", &format!("/crowd/{i}"), &[])
                .await
                .unwrap()
                .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(
            status.unwrap(),
            200,
            "requests over the cap wait their turn"
        );
    }
    let stats = get(cluster.origin, "o", "/_origin/stats", &[])
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["peak_in_flight"], 2, "{stats}");
}
