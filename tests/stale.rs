//! Expired responses: revalidated with a 304, served while one request
//! refreshes them (stale-while-revalidate), and served when the origin dies
//! (stale-if-error and the site's stale_on_error window), never past that
//! window and never for must-revalidate. The origin runs as its own process
//! so a test can kill it.

mod support;

use std::net::SocketAddr;

use support::*;

struct Setup {
    _dir: tempfile::TempDir,
    origin: SocketAddr,
    proxy: SocketAddr,
    origin_process: Running,
    _cluster: Running,
}

async fn setup() -> Setup {
    let dir = temp_dir();
    let p = free_ports(4);
    let origin: SocketAddr = ([127, 0, 0, 1], p[0]).into();
    let (cache, proxy, admin) = (p[1], p[2], p[3]);
    std::fs::write(
        dir.path().join("origin.yaml"),
        format!(
            "kind: origin
listen: '{origin}'
objects:
  - {{ prefix: /short/, count: 10, size: 4KiB, cache_control: 'public, max-age=1' }}
  - {{ prefix: /swr/, count: 10, size: 4KiB, cache_control: 'public, max-age=1, stale-while-revalidate=30' }}
  - {{ prefix: /strict/, count: 10, size: 4KiB, cache_control: 'public, max-age=1, must-revalidate' }}
faults:
  - {{ path: '/swr/*', latency: 300ms }}
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("up.yaml"),
        format!(
            "kind: up
cluster:
  sites:
    - name: s
      hosts: [localhost]
      origin: {{ addresses: ['{origin}'], connect_timeout: 200ms }}
      cache: {{ stale_on_error: 3s }}
cache_nodes:
  - {{ id: c1, listen: '127.0.0.1:{cache}', admin_listen: '127.0.0.1:{admin}' }}
proxies:
  - {{ id: p1, listen: '127.0.0.1:{proxy}' }}
"
        ),
    )
    .unwrap();
    let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let mut origin_process = spawn(&["origin", &path("origin.yaml")]);
    let mut cluster = spawn(&["up", &path("up.yaml")]);
    wait_origin(origin, &mut origin_process).await;
    wait_ready(&[([127, 0, 0, 1], admin).into()], &mut cluster).await;
    Setup {
        _dir: dir,
        origin,
        proxy: ([127, 0, 0, 1], proxy).into(),
        origin_process,
        _cluster: cluster,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_response_is_revalidated_with_a_304() {
    let s = setup().await;
    let first = get(s.proxy, "localhost", "/short/2", &[]).await.unwrap();
    let seen = poll_until(s.proxy, "/short/2", &[], |r| {
        r.header("cache-status").contains("fwd-status=304")
    })
    .await;
    let revalidated = seen.last().unwrap();
    assert_eq!(revalidated.status, 200);
    assert_eq!(
        revalidated.body, first.body,
        "the stored body is served after a 304"
    );
    assert!(revalidated
        .header("cache-status")
        .starts_with("fanout-c1; fwd=stale; fwd-status=304; stored"));
    let after = get(s.proxy, "localhost", "/short/2", &[]).await.unwrap();
    assert!(
        after.header("cache-status").contains("; hit"),
        "fresh again: {}",
        after.header("cache-status")
    );
    assert_eq!(
        origin_count(s.origin, "/short/2").await,
        2,
        "one fetch, one revalidation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let s = setup().await;
    let first = get(s.proxy, "localhost", "/swr/1", &[]).await.unwrap();
    assert!(first
        .header("cache-status")
        .contains("fwd=uri-miss; stored"));
    // Once stale, replies are the stale copy while one background request
    // (300 ms at the origin) refreshes it; then fresh hits again.
    let seen = poll_until(s.proxy, "/swr/1", &[], |r| {
        r.header("cache-status")
            .contains("detail=stale-while-revalidate")
    })
    .await;
    assert_eq!(seen.last().unwrap().body, first.body);
    let seen = poll_until(s.proxy, "/swr/1", &[], |r| {
        r.header("cache-status").contains("; hit; ttl=")
            && !r.header("cache-status").contains("stale")
    })
    .await;
    assert!(seen.iter().all(|r| r.status == 200 && r.body == first.body));
    assert_eq!(
        origin_count(s.origin, "/swr/1").await,
        2,
        "stale replies did not each go to the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_is_covered_by_the_stale_copy_for_the_site_window_only() {
    let mut s = setup().await;
    let first = get(s.proxy, "localhost", "/short/3", &[]).await.unwrap();
    let strict = get(s.proxy, "localhost", "/strict/3", &[]).await.unwrap();
    assert_eq!((first.status, strict.status), (200, 200));
    s.origin_process.child.kill().unwrap();
    s.origin_process.child.wait().unwrap();

    // max-age=1 plus stale_on_error: 3s: stale copies until about 4 s of
    // age, then 502; no failed request before that.
    let seen = poll_until(s.proxy, "/short/3", &[], |r| r.status != 200).await;
    let (last, served) = seen.split_last().unwrap();
    assert_eq!(last.status, 502, "{}", last.header("cache-status"));
    assert!(served.iter().all(|r| r.body == first.body));
    assert!(
        served.iter().any(|r| r
            .header("cache-status")
            .contains("fwd=stale; detail=stale-if-error")),
        "a stale copy stood in for the dead origin"
    );

    // must-revalidate: no stale copy, ever. The 502 says the stored copy
    // was too old to use (fwd=stale) and the origin failed.
    let seen = poll_until(s.proxy, "/strict/3", &[], |r| r.status != 200).await;
    let last = seen.last().unwrap();
    assert_eq!(last.status, 502);
    assert!(
        last.header("cache-status")
            .contains("fwd=stale; detail=origin-error"),
        "{}",
        last.header("cache-status")
    );
    assert!(!seen
        .iter()
        .any(|r| r.header("cache-status").contains("stale-if-error")));
}
