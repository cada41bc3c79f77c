//! Purging through a cache node's admin listener: by URL (every variant),
//! prefix and surrogate key, hard and soft, and only with the bearer token.

mod support;

use support::*;

const TOKEN: &str = "s3cret-purge-token";

/// A cluster whose proxy keeps no hot tier, so every request shows what
/// the node's purge did (the hot tier's purges: `tests/hot_tier.rs`).
async fn start(token: bool) -> (tempfile::TempDir, Cluster, Running) {
    if token {
        start_up_full(
            1,
            1,
            "admin_token_file: admin.token\n",
            &[("admin.token", &format!("{TOKEN}\n"))],
            NO_HOT_TIER,
        )
        .await
    } else {
        start_up_node_only(1, 1, "").await
    }
}

async fn status_of(cluster: &Cluster, path: &str, headers: &[(&str, &str)]) -> String {
    get(cluster.proxies[0], "localhost", path, headers)
        .await
        .unwrap()
        .header("cache-status")
        .to_string()
}

async fn purge(cluster: &Cluster, query: &str) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    post_with(
        cluster.cache_admins[0],
        &format!("/purge?{query}"),
        &[("authorization", &auth)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_needs_the_bearer_token() {
    let (_dir, cluster, _p) = start(true).await;
    get(cluster.proxies[0], "localhost", "/static/60", &[])
        .await
        .unwrap();
    let admin = cluster.cache_admins[0];
    let (status, _) = post_with(admin, "/purge?host=localhost&path=/static/60", &[]).await;
    assert_eq!(status, 401);
    let (status, _) = post_with(
        admin,
        "/purge?host=localhost&path=/static/60",
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        status_of(&cluster, "/static/60", &[])
            .await
            .contains("; hit"),
        "nothing changed"
    );
    assert_eq!(
        purge(&cluster, "path=/static/60").await.0,
        400,
        "a URL purge needs the host"
    );
    assert_eq!(
        purge(&cluster, "host=unknown.example&path=/static/60")
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_purging_is_disabled() {
    let (_dir, cluster, _p) = start(false).await;
    let (status, body) = purge(&cluster, "host=localhost&path=/static/1").await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_removes_every_variant() {
    let (_dir, cluster, _p) = start(true).await;
    for lang in ["en", "fr"] {
        get(
            cluster.proxies[0],
            "localhost",
            "/vary/3",
            &[("accept-language", lang)],
        )
        .await
        .unwrap();
    }
    get(cluster.proxies[0], "localhost", "/static/61", &[])
        .await
        .unwrap();
    assert_eq!(
        purge(&cluster, "host=localhost&path=/vary/3").await,
        (200, "{\"purged\":2,\"soft\":false}\n".into())
    );
    assert!(status_of(&cluster, "/vary/3", &[("accept-language", "fr")])
        .await
        .contains("fwd=uri-miss"));
    assert!(
        status_of(&cluster, "/static/61", &[])
            .await
            .contains("; hit"),
        "other URLs stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_prefix_and_by_surrogate_key() {
    let (_dir, cluster, _p) = start(true).await;
    for path in [
        "/static/70",
        "/static/71",
        "/static/80",
        "/tagged/1",
        "/tagged/2",
    ] {
        get(cluster.proxies[0], "localhost", path, &[])
            .await
            .unwrap();
    }
    assert_eq!(
        purge(&cluster, "host=localhost&prefix=/static/7").await.1,
        "{\"purged\":2,\"soft\":false}\n"
    );
    assert!(status_of(&cluster, "/static/70", &[])
        .await
        .contains("fwd=uri-miss"));
    assert!(status_of(&cluster, "/static/80", &[])
        .await
        .contains("; hit"));
    assert_eq!(
        purge(&cluster, "tag=match-1").await.1,
        "{\"purged\":2,\"soft\":false}\n"
    );
    assert!(status_of(&cluster, "/tagged/2", &[])
        .await
        .contains("fwd=uri-miss"));
    assert_eq!(
        purge(&cluster, "tag=no-such-tag").await.1,
        "{\"purged\":0,\"soft\":false}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_keeps_a_copy_to_revalidate() {
    let (_dir, cluster, _p) = start(true).await;
    get(cluster.proxies[0], "localhost", "/static/90", &[])
        .await
        .unwrap();
    assert_eq!(
        purge(&cluster, "host=localhost&path=/static/90&soft=true")
            .await
            .1,
        "{\"purged\":1,\"soft\":true}\n"
    );
    // Expired now, so the next request asks the origin, which answers 304:
    // no body is fetched again.
    let status = status_of(&cluster, "/static/90", &[]).await;
    assert!(status.contains("fwd=stale; fwd-status=304"), "{status}");
    assert!(status_of(&cluster, "/static/90", &[])
        .await
        .contains("; hit"));
}
