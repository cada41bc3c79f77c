//! End to end through the real binary: client → proxy → cache node →
//! synthetic origin, on free loopback ports.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_stored_and_the_repeat_is_a_hit_with_one_origin_request() {
    let (_dir, cluster, _process) = start_up(3, 2, "").await;
    let proxy = cluster.proxies[0];

    let first = get(proxy, "localhost", "/static/7", &[]).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body.len(), 16 * 1024);
    let status = first.header("cache-status");
    assert!(
        status.contains("fwd=uri-miss") && status.contains("stored"),
        "first: {status}"
    );
    assert_eq!(first.header("age"), "0");

    // The repeat is answered by the proxy's hot tier, without the node.
    let second = get(proxy, "localhost", "/static/7", &[]).await.unwrap();
    assert_eq!(second.status, 200);
    let status = second.header("cache-status");
    assert!(
        status.starts_with("fanout-proxy-1; hit"),
        "second, from the hot tier: {status}"
    );
    assert!(!second.header("age").is_empty(), "a hit carries Age");
    assert_eq!(second.body, first.body, "a hit serves the stored bytes");
    assert_eq!(second.header("etag"), first.header("etag"));

    // The other proxy's first request finds it at the same cache node.
    let third = get(cluster.proxies[1], "localhost", "/static/7", &[])
        .await
        .unwrap();
    let status = third.header("cache-status");
    assert!(
        status.starts_with(&format!("{}; hit", first.cache_node())),
        "same node: {status}"
    );
    assert!(
        status.ends_with("fanout-proxy-2; fwd=uri-miss; stored; ttl=299")
            || status.ends_with("fanout-proxy-2; fwd=uri-miss; stored; ttl=300"),
        "kept by the second proxy too: {status}"
    );
    assert_eq!(third.body, first.body);

    assert_eq!(
        origin_count(cluster.origin, "/static/7").await,
        1,
        "the origin saw one request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_proxies_route_each_key_to_the_same_cache_node() {
    let (_dir, cluster, _process) = start_up(3, 2, "").await;
    let mut nodes_used = std::collections::HashSet::new();
    for i in 100..130 {
        let path = format!("/static/{i}");
        let via_first = get(cluster.proxies[0], "localhost", &path, &[])
            .await
            .unwrap();
        let via_second = get(cluster.proxies[1], "localhost", &path, &[])
            .await
            .unwrap();
        assert_eq!(via_first.cache_node(), via_second.cache_node(), "{path}");
        assert!(
            via_second.header("cache-status").contains("; hit"),
            "{path}: filled by the first proxy's request"
        );
        assert_eq!(origin_count(cluster.origin, &path).await, 1, "{path}");
        nodes_used.insert(via_first.cache_node().to_string());
    }
    assert_eq!(
        nodes_used.len(),
        3,
        "30 keys spread over all 3 nodes: {nodes_used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_may_not_be_stored_goes_to_the_origin_every_time() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    for _ in 0..3 {
        let r = get(cluster.proxies[0], "localhost", "/nostore/1", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(
            !r.header("cache-status").contains("stored"),
            "{}",
            r.header("cache-status")
        );
    }
    assert_eq!(origin_count(cluster.origin, "/nostore/1").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sites_get_404_and_admin_endpoints_answer() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let r = get(cluster.proxies[0], "elsewhere.example", "/static/1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.body.as_ref(), b"unknown site\n");

    get(cluster.proxies[0], "localhost", "/static/1", &[])
        .await
        .unwrap();
    // The proxy keeps it now; a client of the node itself gets the hit.
    get(cluster.caches[0], "localhost", "/static/1", &[])
        .await
        .unwrap();
    let admin = cluster.cache_admins[0];
    assert_eq!(
        get(admin, "localhost", "/healthz", &[])
            .await
            .unwrap()
            .status,
        200
    );
    let metrics = get(admin, "localhost", "/metrics", &[]).await.unwrap();
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    let hits = text
        .lines()
        .find(|l| {
            l.starts_with("fanout_cache_requests_total{")
                && l.contains("outcome=\"hit\"")
                && l.contains("node=\"cache-1\"")
        })
        .unwrap_or_else(|| panic!("no hit counter in:\n{text}"));
    let value: f64 = hits.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= 1.0, "{hits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_speaks_h2c_with_prior_knowledge() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};

    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(HttpConnector::new());
    let uri = format!("http://localhost:{}/static/3", cluster.proxies[0].port());
    let resp = client
        .request(http::Request::get(uri).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("fwd=uri-miss"));
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        16 * 1024
    );
}
