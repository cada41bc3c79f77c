//! HTTP semantics a cache answers itself (RFC 9110 §13, §14): conditional
//! requests, byte ranges (also on a miss, from the fill as it arrives) and
//! HEAD; and what it may share (RFC 9111 §3.5), through the real binary.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_are_answered_from_cache() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let full = get(proxy, "localhost", "/static/20", &[]).await.unwrap();
    let etag = full.header("etag").to_string();
    let last_modified = full.header("last-modified").to_string();

    let r = get(
        proxy,
        "localhost",
        "/static/20",
        &[("if-none-match", &etag)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), etag);
    assert!(
        r.header("cache-status").contains("; hit"),
        "{}",
        r.header("cache-status")
    );
    assert!(
        r.header("content-type").is_empty(),
        "a 304 carries no representation metadata"
    );

    let r = get(
        proxy,
        "localhost",
        "/static/20",
        &[("if-none-match", "\"something-else\"")],
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.len()), (200, 16 * 1024));
    let r = get(
        proxy,
        "localhost",
        "/static/20",
        &[("if-modified-since", &last_modified)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(
        origin_count(cluster.origin, "/static/20").await,
        1,
        "all answered by the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_answered_from_a_stored_object() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let full = get(proxy, "localhost", "/static/21", &[]).await.unwrap();
    let r = get(
        proxy,
        "localhost",
        "/static/21",
        &[("range", "bytes=1000-1999")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 1000-1999/16384");
    assert_eq!(r.header("content-length"), "1000");
    assert_eq!(&r.body[..], &full.body[1000..2000]);
    let r = get(proxy, "localhost", "/static/21", &[("range", "bytes=-16")])
        .await
        .unwrap();
    assert_eq!(&r.body[..], &full.body[16384 - 16..]);
    let r = get(
        proxy,
        "localhost",
        "/static/21",
        &[("range", "bytes=20000-")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */16384");
    let r = get(
        proxy,
        "localhost",
        "/static/21",
        &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.body.len()),
        (200, 16384),
        "If-Range that does not match gets the whole object"
    );
    assert_eq!(origin_count(cluster.origin, "/static/21").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_on_a_miss_fetches_the_whole_object_once_and_answers_from_the_fill() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    // /slow/ objects arrive at 1 MiB/s: the range is cut from the fill as it runs.
    let r = get(
        proxy,
        "localhost",
        "/slow/5",
        &[("range", "bytes=300000-300099")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 206, "{}", r.header("cache-status"));
    assert_eq!(r.header("content-range"), "bytes 300000-300099/524288");
    assert_eq!(r.body.len(), 100);
    assert!(
        r.header("cache-status").contains("fwd=uri-miss; stored"),
        "{}",
        r.header("cache-status")
    );
    // The range was answered before the fill finished, so the next request
    // usually joins the fill still running; on a slow machine it may find
    // the stored copy. Either way the origin sent the object once.
    let whole = get(proxy, "localhost", "/slow/5", &[]).await.unwrap();
    let status = whole.header("cache-status");
    assert!(
        status.contains("collapsed") || status.contains("; hit"),
        "{status}"
    );
    assert_eq!(whole.body.len(), 524288);
    assert_eq!(&whole.body[300000..300100], &r.body[..]);
    assert_eq!(origin_count(cluster.origin, "/slow/5").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_from_a_cached_get() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    get(proxy, "localhost", "/static/22", &[]).await.unwrap();
    let r = head(proxy, "/static/22").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), "16384");
    assert!(r.body.is_empty());
    assert!(
        r.header("cache-status").contains("; hit"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(origin_count(cluster.origin, "/static/22").await, 1);
}

async fn head(addr: std::net::SocketAddr, path: &str) -> Reply {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let client: Client<HttpConnector, Empty<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::head(format!("http://{addr}{path}"))
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_and_no_store() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let r = get(
        proxy,
        "localhost",
        "/static/30",
        &[("cache-control", "only-if-cached")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(
        origin_count(cluster.origin, "/static/30").await,
        0,
        "only-if-cached never reaches the origin"
    );

    let r = get(
        proxy,
        "localhost",
        "/static/30",
        &[("cache-control", "no-store")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("cache-status").contains("detail=no-store"),
        "{}",
        r.header("cache-status")
    );
    let r = get(
        proxy,
        "localhost",
        "/static/30",
        &[("cache-control", "only-if-cached")],
    )
    .await
    .unwrap();
    assert_eq!(
        r.status, 504,
        "a response to a no-store request was not stored"
    );

    get(proxy, "localhost", "/static/30", &[]).await.unwrap();
    let r = get(
        proxy,
        "localhost",
        "/static/30",
        &[("cache-control", "only-if-cached")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_reach_the_origin_but_max_age_and_min_fresh_revalidate() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    get(proxy, "localhost", "/static/31", &[]).await.unwrap();
    for reload in ["no-cache", "max-age=0"] {
        let r = get(
            proxy,
            "localhost",
            "/static/31",
            &[("cache-control", reload)],
        )
        .await
        .unwrap();
        assert!(
            r.header("cache-status").contains("; hit"),
            "{reload}: {}",
            r.header("cache-status")
        );
    }
    assert_eq!(origin_count(cluster.origin, "/static/31").await, 1);

    // Once the copy is two seconds old, a client that accepts at most one
    // second of age gets a revalidated copy (the origin answers 304). The
    // copy was fresh: the request's own directive sent it forward.
    poll_until(proxy, "/static/31", &[], |r| {
        r.header("age").parse::<u64>().unwrap_or(0) >= 2
    })
    .await;
    let r = get(
        proxy,
        "localhost",
        "/static/31",
        &[("cache-control", "max-age=1")],
    )
    .await
    .unwrap();
    assert!(
        r.header("cache-status")
            .contains("fwd=request; fwd-status=304"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(r.header("age"), "0");
    // max-age=300 leaves less than 400 s of freshness: revalidate again.
    let r = get(
        proxy,
        "localhost",
        "/static/31",
        &[("cache-control", "min-fresh=400")],
    )
    .await
    .unwrap();
    assert!(
        r.header("cache-status").contains("fwd-status=304"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(origin_count(cluster.origin, "/static/31").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_stale_accepts_a_stale_copy_without_the_origin() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    // Live media playlists are fresh for 1 s.
    let path = "/live/main/hi/index.m3u8";
    let first = get(proxy, "localhost", path, &[]).await.unwrap();
    assert!(first.header("cache-control").contains("max-age=1"));
    let r = poll_until(proxy, path, &[("cache-control", "max-stale=60")], |r| {
        r.header("cache-status").contains("max-stale")
    })
    .await
    .pop()
    .unwrap();
    assert_eq!(r.body, first.body, "the stale copy, not a newer playlist");
    assert_eq!(origin_count(cluster.origin, path).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_unsafe_request_invalidates_the_stored_copy() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    get(proxy, "localhost", "/static/41", &[]).await.unwrap();
    // A request sent as the first one's fill finishes may still join it.
    poll_until(proxy, "/static/41", &[], |r: &Reply| {
        r.header("cache-status").contains("; hit")
    })
    .await;
    assert_eq!(support::post(proxy, "/static/41").await, 204);
    let after = get(proxy, "localhost", "/static/41", &[]).await.unwrap();
    assert!(
        after.header("cache-status").contains("fwd=uri-miss"),
        "{}",
        after.header("cache-status")
    );
    assert_eq!(
        origin_count(cluster.origin, "/static/41").await,
        3,
        "GET, POST, and the GET after it"
    );
}

/// The bytes the synthetic origin sends for `path` to a client whose
/// Accept-Language is `lang` (objects under /vary/ vary on it).
fn variant_body(path: &str, lang: &str, len: usize) -> Vec<u8> {
    let noise = fanout_loadtest::origin::Noise::new();
    let variant = format!("{path}|{lang}");
    (0..len as u64).map(|i| noise.byte(&variant, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_variant_is_stored_under_its_own_secondary_key() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let first_en = get(proxy, "localhost", "/vary/1", &en).await.unwrap();
    assert_eq!(first_en.header("vary"), "accept-language");
    assert_eq!(first_en.body.as_ref(), variant_body("/vary/1", "en", 8192));
    let first_fr = get(proxy, "localhost", "/vary/1", &fr).await.unwrap();
    assert!(
        first_fr.header("cache-status").contains("fwd=vary-miss"),
        "{}",
        first_fr.header("cache-status")
    );
    assert_eq!(first_fr.body.as_ref(), variant_body("/vary/1", "fr", 8192));
    for (lang, body) in [(&en, &first_en.body), (&fr, &first_fr.body)] {
        let r = get(proxy, "localhost", "/vary/1", lang).await.unwrap();
        assert!(
            r.header("cache-status").contains("; hit"),
            "{}",
            r.header("cache-status")
        );
        assert_eq!(&r.body, body);
    }
    assert_eq!(
        origin_count(cluster.origin, "/vary/1").await,
        2,
        "one fetch per variant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_collapsed_before_the_vary_was_known_get_their_own_variant() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let lang = if i % 2 == 0 { "en" } else { "fr" };
        tasks.spawn(async move {
            let r = get(proxy, "localhost", "/vary/2", &[("accept-language", lang)])
                .await
                .unwrap();
            (lang, r)
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (lang, r) = r.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body.as_ref(),
            variant_body("/vary/2", lang, 8192),
            "{lang}: {}",
            r.header("cache-status")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_served_from_cache() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    for _ in 0..3 {
        let r = get(proxy, "localhost", "/varystar/1", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            !r.header("cache-status").contains("hit;"),
            "{}",
            r.header("cache-status")
        );
    }
    assert_eq!(origin_count(cluster.origin, "/varystar/1").await, 3);
}

/// A large stored object goes out of a memory file with `sendfile` rather
/// than being copied (fanout_server::memory_file): whole and in ranges, the
/// bytes must be exactly the origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_sent_from_memory_files_byte_for_byte() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let original = get(cluster.origin, "localhost", "/crowd/4", &[])
        .await
        .unwrap();
    assert_eq!(original.body.len(), 256 * 1024);
    let fill = get(proxy, "localhost", "/crowd/4", &[]).await.unwrap();
    assert!(fill.body == original.body);
    let hit = get(proxy, "localhost", "/crowd/4", &[]).await.unwrap();
    assert!(
        hit.header("cache-status").contains("; hit"),
        "{}",
        hit.header("cache-status")
    );
    assert!(hit.body == original.body, "a hit is the origin's bytes");
    let r = get(
        proxy,
        "localhost",
        "/crowd/4",
        &[("range", "bytes=70000-199999")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body[..] == original.body[70_000..200_000]);

    let metrics = get(cluster.proxy_admins[0], "localhost", "/metrics", &[])
        .await
        .unwrap();
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let sent: f64 = text
        .lines()
        .find(|l| l.starts_with("fanout_memory_file_sent_bytes_total"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no fanout_memory_file_sent_bytes_total in\n{text}"))
        .parse()
        .unwrap();
    // The 256 KiB hit and the range go with sendfile under any congestion
    // control (BBR copies only larger slices: fanout_server::memory_file).
    assert!(
        sent >= (256 * 1024 + 130_000) as f64,
        "the hit and the range went out with sendfile: {sent} bytes"
    );
    // The node's copy and the proxy's hot-tier copy (a miss's body came
    // in chunks, which the proxy gathered into a file of its own).
    assert!(
        text.lines()
            .any(|l| l.starts_with("fanout_memory_files{") && l.ends_with(" 2")),
        "two stored bodies, each in one memory file:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_authorization_get_only_what_the_origin_lets_them_share() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let auth = [("authorization", "Bearer viewer-7")];
    let status = |r: &Reply| r.header("cache-status").to_string();
    // Answered without the origin: from a kept copy, or from the fill that
    // stored it (on a loaded machine the proxy's fill can still be ending
    // after its client had the whole body, and a request then joins it).
    let from_cache = |r: &Reply| status(r).contains("; hit") || status(r).contains("; collapsed");

    // `max-age` alone: an anonymous copy is stored, but it may not answer
    // a request with Authorization, which goes to the origin.
    let r = get(proxy, "localhost", "/account/1", &[]).await.unwrap();
    assert!(status(&r).contains("stored"), "{}", status(&r));
    let r = get(proxy, "localhost", "/account/1", &auth).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        status(&r).contains("fwd=request") && !status(&r).contains("; hit"),
        "{}",
        status(&r)
    );
    assert_eq!(origin_count(cluster.origin, "/account/1").await, 2);
    // The stored copy still serves everyone else.
    let r = get(proxy, "localhost", "/account/1", &[]).await.unwrap();
    assert!(from_cache(&r), "{}", status(&r));
    assert_eq!(origin_count(cluster.origin, "/account/1").await, 2);

    // Its response to a request with Authorization is that client's
    // alone, and does not make the key pass to the origin for others.
    let r = get(proxy, "localhost", "/account/2", &auth).await.unwrap();
    assert!(!status(&r).contains("stored"), "{}", status(&r));
    let r = get(proxy, "localhost", "/account/2", &[]).await.unwrap();
    assert!(
        status(&r).contains("fwd=uri-miss") && status(&r).contains("stored"),
        "not hit-for-pass: {}",
        status(&r)
    );
    assert_eq!(origin_count(cluster.origin, "/account/2").await, 2);

    // Nor may it join a fill another request leads for such a response.
    let anonymous = tokio::spawn(get(proxy, "localhost", "/account/9", &[]));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while origin_count(cluster.origin, "/account/9").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fill never reached the origin"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = get(proxy, "localhost", "/account/9", &auth).await.unwrap();
    assert!(
        status(&r).contains("fwd=request; detail=authorization"),
        "{}",
        status(&r)
    );
    let r = anonymous.await.unwrap().unwrap();
    assert!(status(&r).contains("stored"), "{}", status(&r));
    assert_eq!(origin_count(cluster.origin, "/account/9").await, 2);

    // `public` lets the cache store it for, and serve it to, anyone.
    let r = get(proxy, "localhost", "/static/40", &auth).await.unwrap();
    assert!(status(&r).contains("stored"), "{}", status(&r));
    for headers in [&auth[..], &[]] {
        let r = get(proxy, "localhost", "/static/40", headers)
            .await
            .unwrap();
        assert!(from_cache(&r), "{}", status(&r));
    }
    assert_eq!(origin_count(cluster.origin, "/static/40").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_not_stored_unless_the_site_strips_the_cookie() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let status = |r: &Reply| r.header("cache-status").to_string();

    // By default the cookie's response goes to its client alone.
    for _ in 0..2 {
        let r = get(proxy, "localhost", "/cookie/1", &[]).await.unwrap();
        assert_eq!(r.header("set-cookie"), "session=abc; Path=/");
        assert!(
            !status(&r).contains("stored") && !status(&r).contains("; hit"),
            "{}",
            status(&r)
        );
    }
    assert_eq!(origin_count(cluster.origin, "/cookie/1").await, 2);

    // `set_cookie: strip`: stored and served without the cookie, to everyone.
    let r = get(proxy, "cookies.test", "/cookie/2", &[]).await.unwrap();
    assert!(status(&r).contains("stored"), "{}", status(&r));
    assert_eq!(
        r.header("set-cookie"),
        "",
        "stripped for the first client too"
    );
    let r = get(proxy, "cookies.test", "/cookie/2", &[]).await.unwrap();
    assert!(status(&r).contains("; hit"), "{}", status(&r));
    assert_eq!(r.header("set-cookie"), "");
    assert_eq!(origin_count(cluster.origin, "/cookie/2").await, 1);
}
