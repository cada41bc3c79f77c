//! The proxy's hot tier, end to end through the real binary: what it keeps
//! and for how long, what it never keeps, that its answers are the node's,
//! that a crowd costs the node one request, that purges and config changes
//! reach it, and that keys spilled under load still cost the origin one
//! request.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use support::*;

/// The sum of a counter's samples on an admin listener's `/metrics` whose
/// line contains every one of `labels` (`name="value"`).
async fn counter(admin: SocketAddr, metric: &str, labels: &[&str]) -> f64 {
    let r = get(admin, "localhost", "/metrics", &[]).await.unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests the cache node has answered (every outcome).
async fn node_requests(cluster: &Cluster) -> f64 {
    counter(cluster.cache_admins[0], "fanout_cache_requests_total", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_object_skips_the_node_until_its_freshness_ends() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let first = get(proxy, "localhost", "/short/1", &[]).await.unwrap();
    let filled = std::time::Instant::now();
    assert!(
        first
            .header("cache-status")
            .ends_with("fanout-proxy-1; fwd=uri-miss; stored; ttl=2")
            || first
                .header("cache-status")
                .ends_with("fanout-proxy-1; fwd=uri-miss; stored; ttl=1"),
        "{}",
        first.header("cache-status")
    );
    let at_node = node_requests(&cluster).await;
    let mut hits = 0;
    let expired = loop {
        let r = get(proxy, "localhost", "/short/1", &[]).await.unwrap();
        assert_eq!(r.body, first.body);
        let status = r.header("cache-status").to_string();
        if !status.starts_with("fanout-proxy-1; hit") {
            break (r, status);
        }
        hits += 1;
        // max-age=2: a copy two seconds old is stale, at the node and here.
        let age: u64 = r.header("age").parse().unwrap();
        assert!(age < 2, "a hot hit {age} s old: {status}");
        assert_eq!(
            node_requests(&cluster).await,
            at_node,
            "a hot hit reached the node"
        );
        assert!(
            filled.elapsed() < DEADLINE,
            "the hot copy outlived its freshness"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(hits >= 5, "only {hits} hot hits in its freshness");
    assert!(
        filled.elapsed() >= std::time::Duration::from_secs(1),
        "let go after {:?}, long before its freshness ended",
        filled.elapsed()
    );
    let (r, status) = expired;
    assert!(
        status.starts_with("fanout-cache-1; "),
        "once stale here, the request went to the node: {status}"
    );
    // `Age` counts whole seconds, and the tier keeps a copy for the lesser
    // of the node's word and what the copy's own fields say, so it may let
    // go up to a second before the node does: the node may still hold it
    // fresh then, for that second at most.
    assert!(
        !status.starts_with("fanout-cache-1; hit;")
            || status.contains("; ttl=0")
            || status.contains("; ttl=1"),
        "{status}"
    );
    assert_eq!(r.status, 200);
    assert!(node_requests(&cluster).await > at_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_node_would_not_share_is_never_kept() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("/private/1", &[]),
        // Set-Cookie: the node passes it, and so does the tier.
        ("/cookie/1", &[]),
        ("/varystar/1", &[]),
        // Not shareable with requests that carry Authorization (§3.5).
        ("/account/1", &[("authorization", "Bearer viewer-1")]),
        // no-store: the node marks the key hit-for-pass.
        ("/nostore/1", &[]),
    ];
    for (path, headers) in cases {
        for round in 0..3 {
            let before = node_requests(&cluster).await;
            let r = get(proxy, "localhost", path, headers).await.unwrap();
            assert_eq!(r.status, 200, "{path}");
            let status = r.header("cache-status");
            assert!(
                !status.contains("fanout-proxy-1; hit")
                    && !status.contains("fanout-proxy-1; fwd=uri-miss; stored"),
                "{path} round {round}: kept by the hot tier: {status}"
            );
            assert_eq!(
                node_requests(&cluster).await,
                before + 1.0,
                "{path} round {round}: the node answered it"
            );
        }
    }
    let hot_entries = counter(
        cluster.proxy_admins[0],
        "fanout_proxy_hot_tier_entries",
        &[],
    )
    .await;
    assert_eq!(hot_entries, 0.0, "nothing was kept");

    // An anonymous request's copy is kept; a request with Authorization
    // does not get it, since the origin did not make it shareable.
    get(proxy, "localhost", "/account/2", &[]).await.unwrap();
    let r = get(proxy, "localhost", "/account/2", &[]).await.unwrap();
    assert!(
        r.header("cache-status").starts_with("fanout-proxy-1; hit"),
        "{}",
        r.header("cache-status")
    );
    let r = get(
        proxy,
        "localhost",
        "/account/2",
        &[("authorization", "Bearer viewer-2")],
    )
    .await
    .unwrap();
    let status = r.header("cache-status");
    assert!(
        status.ends_with("fanout-proxy-1; fwd=request") && !status.starts_with("fanout-proxy-1"),
        "{status}"
    );
}

/// The same request asked of the hot tier (through the proxy, after it
/// kept the object) and of the cache node directly.
async fn both(cluster: &Cluster, path: &str, headers: &[(&str, &str)]) -> (Reply, Reply) {
    let hot = get(cluster.proxies[0], "localhost", path, headers)
        .await
        .unwrap();
    assert!(
        hot.header("cache-status")
            .starts_with("fanout-proxy-1; hit"),
        "{path} {headers:?}: {}",
        hot.header("cache-status")
    );
    let node = get(cluster.caches[0], "localhost", path, headers)
        .await
        .unwrap();
    (hot, node)
}

fn same_answer(path: &str, what: &str, hot: &Reply, node: &Reply) {
    assert_eq!(hot.status, node.status, "{path} {what}");
    assert!(hot.body == node.body, "{path} {what}: bodies differ");
    for name in [
        "content-length",
        "content-range",
        "etag",
        "vary",
        "last-modified",
        "content-type",
    ] {
        assert_eq!(hot.header(name), node.header(name), "{path} {what}: {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_conditionals_ranges_and_head_get_the_nodes_answers() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    for lang in ["fr", "en"] {
        get(proxy, "localhost", "/vary/1", &[("accept-language", lang)])
            .await
            .unwrap();
    }
    get(proxy, "localhost", "/static/5", &[]).await.unwrap();
    let (fr, fr_node) = both(&cluster, "/vary/1", &[("accept-language", "fr")]).await;
    same_answer("/vary/1", "fr", &fr, &fr_node);
    let (en, en_node) = both(&cluster, "/vary/1", &[("accept-language", "en")]).await;
    same_answer("/vary/1", "en", &en, &en_node);
    assert!(fr.body != en.body, "each variant kept on its own");
    // A variant nobody asked for yet is not one the tier has.
    let de = get(proxy, "localhost", "/vary/1", &[("accept-language", "de")])
        .await
        .unwrap();
    assert!(
        de.header("cache-status")
            .ends_with("fanout-proxy-1; fwd=vary-miss; stored; ttl=300")
            || de
                .header("cache-status")
                .ends_with("fanout-proxy-1; fwd=vary-miss; stored; ttl=299"),
        "{}",
        de.header("cache-status")
    );

    let (whole, _) = both(&cluster, "/static/5", &[]).await;
    let etag = whole.header("etag").to_string();
    let modified = whole.header("last-modified").to_string();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("If-None-Match", vec![("if-none-match", &etag)]),
        ("If-Modified-Since", vec![("if-modified-since", &modified)]),
        ("Range", vec![("range", "bytes=100-199")]),
        ("suffix Range", vec![("range", "bytes=-10")]),
        ("unsatisfiable Range", vec![("range", "bytes=999999-")]),
        (
            "If-Range that holds",
            vec![("range", "bytes=0-9"), ("if-range", &etag)],
        ),
        (
            "If-Range that fails",
            vec![("range", "bytes=0-9"), ("if-range", "\"other\"")],
        ),
    ];
    for (what, headers) in &cases {
        let (hot, node) = both(&cluster, "/static/5", headers).await;
        same_answer("/static/5", what, &hot, &node);
    }
    let (hot, node) = both(&cluster, "/static/5", &[("if-none-match", &etag)]).await;
    assert_eq!(hot.status, 304);
    assert_eq!(node.status, 304);
    let (hot, _) = both(&cluster, "/static/5", &[("range", "bytes=100-199")]).await;
    assert_eq!(hot.status, 206);
    assert!(hot.body[..] == whole.body[100..200]);

    // HEAD: the head of the kept GET, no body.
    let head = |addr: SocketAddr| async move {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let req = http::Request::head(format!("http://{addr}/static/5"))
            .header("host", "localhost")
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        (parts, body)
    };
    let (hot, hot_body) = head(proxy).await;
    let (node, _) = head(cluster.caches[0]).await;
    assert!(hot_body.is_empty());
    assert_eq!(hot.status, 200);
    assert_eq!(
        hot.headers["content-length"],
        node.headers["content-length"]
    );
    assert_eq!(hot.headers["etag"], node.headers["etag"]);
    assert!(hot.headers["cache-status"]
        .to_str()
        .unwrap()
        .starts_with("fanout-proxy-1; hit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_at_a_proxy_makes_one_request_to_the_node() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let expected = get(cluster.origin, "localhost", "/crowd/7", &[])
        .await
        .unwrap()
        .body;
    let before = node_requests(&cluster).await;
    let origin_before = origin_count(cluster.origin, "/crowd/7").await;
    // A new object (the origin takes 200 ms), asked for by 100 viewers at once.
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..100 {
        crowd.spawn(async move { get(proxy, "localhost", "/crowd/7", &[]).await });
    }
    let mut collapsed = 0;
    while let Some(r) = crowd.join_next().await {
        let r = r.unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == expected, "every viewer got the whole object");
        collapsed += r
            .header("cache-status")
            .contains("fanout-proxy-1; fwd=uri-miss; collapsed") as usize;
    }
    assert_eq!(
        node_requests(&cluster).await - before,
        1.0,
        "one request reached the node"
    );
    assert_eq!(
        origin_count(cluster.origin, "/crowd/7").await - origin_before,
        1
    );
    assert!(
        collapsed >= 90,
        "{collapsed} of 100 joined the first one's fill"
    );
    assert_eq!(
        counter(
            cluster.proxy_admins[0],
            "fanout_proxy_hot_tier_requests_total",
            &["outcome=\"collapsed\""]
        )
        .await,
        collapsed as f64
    );
}

/// What one client of a proxy saw: when its request started, which
/// path, and which origin response the body came from.
#[derive(Debug, Clone)]
struct Seen {
    started: std::time::Instant,
    path: &'static str,
    origin_request: u64,
}

/// Asks `proxy` for `paths` in turn until `stop`, recording each answer.
fn keep_asking(
    proxy: SocketAddr,
    paths: &'static [&'static str],
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let path = paths[i % paths.len()];
            i += 1;
            let started = std::time::Instant::now();
            let r = get(proxy, "localhost", path, &[]).await.unwrap();
            assert_eq!(r.status, 200, "{path}");
            let origin_request = r.header("x-origin-request").parse().unwrap();
            log.lock().unwrap().push(Seen {
                started,
                path,
                origin_request,
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_purge_is_acknowledged_no_proxy_serves_the_purged_object() {
    const TOKEN: &str = "hot-tier-purge-token";
    let ports = free_ports(3);
    let nodes: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let extra = format!(
        "admin_token_file: admin.token\ncontrol_plane:\n  nodes: [{}]\n  data_dir: cp\n",
        nodes.join(", ")
    );
    let dir = temp_dir();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let (file, cluster) = up_file(dir.path(), 1, 2, &extra);
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    let servers = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let token = dir.path().join("cp/write.token");
    let ctl = move |args: &[&str]| ctl(&servers, &token, args);

    static PATHS: [&str; 4] = ["/static/21", "/static/31", "/tagged/1", "/static/50"];
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Both proxies keep every object before the first purge.
    // (The request after the first may still join the first's fill as it
    // finishes, and get the node's answer: wait for a hot hit.)
    for proxy in &cluster.proxies {
        for path in PATHS {
            poll_until(*proxy, path, &[], |r: &Reply| {
                r.header("cache-status").starts_with("fanout-proxy-")
            })
            .await;
        }
    }
    let clients: Vec<_> = cluster
        .proxies
        .iter()
        .map(|p| keep_asking(*p, &PATHS, log.clone(), stop.clone()))
        .collect();

    let mut acknowledged = Vec::new();
    for (purge, path) in [
        (
            vec!["purge", "--url", "localhost", "/static/21"],
            "/static/21",
        ),
        (
            vec!["purge", "--prefix", "localhost", "/static/3"],
            "/static/31",
        ),
        (vec!["purge", "--tag", "match-1"], "/tagged/1"),
    ] {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let ctl = ctl.clone();
        let out = tokio::task::spawn_blocking(move || ctl(&purge))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("applied by all 3 proxies and cache nodes"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        acknowledged.push((path, std::time::Instant::now()));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    for (path, at) in acknowledged {
        let after: Vec<&Seen> = log
            .iter()
            .filter(|s| s.path == path && s.started > at)
            .collect();
        assert!(
            after.len() >= 4,
            "{path}: {} requests after the purge",
            after.len()
        );
        let stale = after.iter().filter(|s| s.origin_request < 2).count();
        assert_eq!(
            stale,
            0,
            "{path}: {stale} of {} answers after the purge were copies from before it",
            after.len()
        );
    }
    let untouched = log
        .iter()
        .filter(|s| s.path == "/static/50")
        .map(|s| s.origin_request)
        .max();
    assert_eq!(untouched, Some(1), "other objects stay");

    // The proxy's own admin purge: its hot tier only, with the token.
    let admin = cluster.proxy_admins[0];
    let (status, _) = post_with(admin, "/purge?host=localhost&path=/static/50", &[]).await;
    assert_eq!(status, 401);
    let r = get(cluster.proxies[0], "localhost", "/static/50", &[])
        .await
        .unwrap();
    assert!(r.header("cache-status").starts_with("fanout-proxy-1; hit"));
    let (status, body) = post_with(
        admin,
        "/purge?host=localhost&path=/static/50",
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"purged\":1,\"soft\":false}\n")
    );
    let r = get(cluster.proxies[0], "localhost", "/static/50", &[])
        .await
        .unwrap();
    assert!(
        r.header("cache-status").starts_with("fanout-cache-1; hit"),
        "the node still has it: {}",
        r.header("cache-status")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_spilled_under_load_fills_from_its_owner_not_the_origin() {
    // No hot tier: the crowd reaches the nodes, and bounded loads spread it.
    let (_dir, cluster, _process) = start_up_node_only(3, 1, "").await;
    let proxy = cluster.proxies[0];
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..60 {
        crowd.spawn(async move { get(proxy, "localhost", "/crowd/3", &[]).await });
    }
    let mut nodes = std::collections::HashSet::new();
    while let Some(r) = crowd.join_next().await {
        let r = r.unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 256 * 1024);
        nodes.insert(r.cache_node().to_string());
    }
    assert!(nodes.len() >= 2, "the bound spilled the crowd: {nodes:?}");
    assert_eq!(
        origin_count(cluster.origin, "/crowd/3").await,
        1,
        "the origin saw one request for the whole crowd"
    );
    let mut peer_fills = 0.0;
    for admin in &cluster.cache_admins {
        peer_fills += counter(*admin, "fanout_cache_peer_fills_total", &[]).await;
    }
    assert!(peer_fills >= 1.0, "{peer_fills} fills from the owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_sites_cache_policy_empties_its_entries() {
    let s = start_standalone(1, "", "").await;
    get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    let r = get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert!(
        r.header("cache-status").starts_with("fanout-p; hit"),
        "{}",
        r.header("cache-status")
    );
    let generation = s.status().await["generation"].as_u64().unwrap();
    let cluster = std::fs::read_to_string(s.path("cluster.yaml")).unwrap();
    let changed = cluster.replace(
        "    origin: {",
        "    cache: { query: { mode: ignore } }\n    origin: {",
    );
    assert_ne!(cluster, changed);
    std::fs::write(s.path("cluster.yaml"), changed).unwrap();
    hangup(&s.proxy_process);
    let deadline = std::time::Instant::now() + DEADLINE;
    while s.status().await["generation"].as_u64().unwrap() == generation {
        assert!(
            std::time::Instant::now() < deadline,
            "the change was not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = get(s.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert!(
        r.header("cache-status").starts_with("fanout-c1; hit"),
        "the site's hot entries went with its old policy: {}",
        r.header("cache-status")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_request_through_the_proxy_invalidates_its_hot_copy() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    // Kept once the node vouches for it (it may not in the moment after
    // start, before the proxy and the node agree on the purges applied).
    poll_until(proxy, "/static/42", &[], |r: &Reply| {
        r.header("cache-status").starts_with("fanout-proxy-1; hit")
    })
    .await;
    assert_eq!(post(proxy, "/static/42").await, 204);
    let r = get(proxy, "localhost", "/static/42", &[]).await.unwrap();
    assert!(
        r.header("cache-status")
            .starts_with("fanout-cache-1; fwd=uri-miss"),
        "RFC 9111 §4.4, in both caches: {}",
        r.header("cache-status")
    );
}

/// A GET's content has no meaning (RFC 9110 §9.3.1): the proxy does not send
/// it on, so the request is answered as any GET is, from the hot tier.
/// Streamed to the node instead, each such request (an h2 stream a client
/// never ends, say) would hold a connection to the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_content_is_answered_as_any_get() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;

    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let plain = get(proxy, "localhost", "/static/7", &[]).await.unwrap();
    get(proxy, "localhost", "/static/7", &[]).await.unwrap();
    let at_node = node_requests(&cluster).await;

    let client: Client<HttpConnector, Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{proxy}/static/7"))
            .header("host", "localhost")
            .body(Full::new(bytes::Bytes::from_static(b"{\"query\": 1}")))
            .unwrap();
        let resp = tokio::time::timeout(DEADLINE, client.request(req))
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(resp.status(), 200);
        let status = resp
            .headers()
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(status.starts_with("fanout-proxy-1; hit"), "{status}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, plain.body);
    }
    assert_eq!(
        node_requests(&cluster).await,
        at_node,
        "a GET with content reached the node"
    );
}
