//! Overload protection at the edge, end to end through the real binary:
//! with its slots full, a proxy refuses a new viewer's first request at
//! once with `503` and `Retry-After` while a watching viewer's playlist
//! refresh waits for a slot; with its worker falling behind under load, it
//! turns newcomers away and lets them in again once the load is gone.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tokio_util::sync::CancellationToken;

/// The sum of a metric's samples on an admin listener's `/metrics` whose
/// line contains every one of `labels` (`name="value"`).
async fn metric(admin: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let r = get(admin, "localhost", "/metrics", &[]).await.unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn assert_refused(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r:?}");
    assert_eq!(r.header("retry-after"), "1", "{what}");
    assert_eq!(r.header("cache-control"), "no-store", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_slots_full_newcomers_are_refused_segments_wait_and_playlists_pass() {
    // Of two slots, segments may fill one and newcomers one; the second
    // is kept for playlist refreshes.
    let (_dir, cluster, _process) = start_up_full(
        1,
        1,
        "",
        &[],
        ", overload: { enabled: true, max_in_flight: 2, queue_timeout: 20s }",
    )
    .await;
    let (proxy, admin) = (cluster.proxies[0], cluster.proxy_admins[0]);
    let held = |i: u32| {
        tokio::spawn(async move {
            let r = get(proxy, "localhost", &format!("/held/{i}"), &[])
                .await
                .unwrap();
            (r.status, Instant::now())
        })
    };
    // The origin holds each for 1.5 s.
    let first = held(1);
    let deadline = Instant::now() + DEADLINE;
    while metric(admin, "fanout_proxy_admitted_in_flight", &[]).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the held request never took its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = held(2);
    let newcomer = get(proxy, "localhost", "/live/main/master.m3u8", &[])
        .await
        .unwrap();
    assert_refused(&newcomer, "a new viewer's first request");
    let watching = get(proxy, "localhost", "/live/main/hi/index.m3u8", &[])
        .await
        .unwrap();
    assert_eq!(watching.status, 200, "{watching:?}");
    assert!(
        !first.is_finished(),
        "the refusal and the playlist waited for the held request"
    );
    let (status, first_at) = first.await.unwrap();
    assert_eq!(status, 200);
    let (status, second_at) = second.await.unwrap();
    assert_eq!(status, 200, "the waiting segment request was refused");
    assert!(
        second_at >= first_at + Duration::from_secs(1),
        "the second segment request did not wait for the first's slot"
    );
    assert_eq!(
        metric(
            admin,
            "fanout_proxy_shed_total",
            &[r#"priority="entry""#, r#"reason="in_flight""#]
        )
        .await,
        1.0
    );
    for p in ["playlist", "media"] {
        let label = format!(r#"priority="{p}""#);
        assert_eq!(
            metric(admin, "fanout_proxy_shed_total", &[&label]).await,
            0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_falls_behind_turns_newcomers_away_until_it_catches_up() {
    let dir = temp_dir();
    let (file, cluster) = up_file_with(
        dir.path(),
        1,
        1,
        "",
        ", overload: { enabled: true, max_delay: 1ms }",
    );
    let mut process = spawn(&["--workers", "1", "up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    let (proxy, admin) = (cluster.proxies[0], cluster.proxy_admins[0]);
    let before = get(proxy, "localhost", "/live/main/master.m3u8", &[])
        .await
        .unwrap();
    assert_eq!(before.status, 200, "refused with no load: {before:?}");
    // Viewers downloading 256 KiB objects back to back keep the proxy's
    // one worker busier than it can keep up with.
    let stop = CancellationToken::new();
    let load: Vec<_> = (0..96)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let _ = get(proxy, "localhost", &format!("/crowd/{}", i % 10), &[]).await;
                }
            })
        })
        .collect();
    let stop_load = Arc::new(stop);
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let r = get(proxy, "localhost", "/live/main/master.m3u8", &[])
            .await
            .unwrap();
        if r.status != 200 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the loaded proxy never turned a newcomer away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_refused(&refused, "a newcomer at a proxy that fell behind");
    assert!(
        metric(
            admin,
            "fanout_proxy_shed_total",
            &[r#"priority="entry""#, r#"reason="delay""#]
        )
        .await
            >= 1.0
    );
    stop_load.cancel();
    for l in load {
        let _ = l.await;
    }
    let after = poll_until(proxy, "/live/main/master.m3u8", &[], |r| r.status == 200).await;
    assert_eq!(after.last().unwrap().status, 200);
}
