//! The synthetic origin over real HTTP (`fanout origin`): live playlists
//! that advance, deterministic segments, validators, conditionals, ranges,
//! injected faults and the request counter.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fanout_loadtest::origin::Noise;
use support::*;

async fn start_origin(extra: &str) -> (tempfile::TempDir, SocketAddr, Running) {
    let dir = temp_dir();
    let addr: SocketAddr = ([127, 0, 0, 1], free_ports(1)[0]).into();
    let file = dir.path().join("origin.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: origin
listen: '{addr}'
live:
  - name: main
    segment_duration: 200ms
    window: 3
    renditions:
      - {{ name: hi, bandwidth: 4000000, resolution: 1280x720 }}
      - {{ name: lo, bandwidth: 400000, segment_size: 1000 }}
vod:
  titles: 2
  segments: 5
  renditions:
    - {{ name: hi, bandwidth: 800000 }}
objects:
  - {{ prefix: /static/, count: 3, size: 100KiB }}
{extra}"
        ),
    )
    .unwrap();
    let mut process = spawn(&["origin", file.to_str().unwrap()]);
    wait_origin(addr, &mut process).await;
    (dir, addr, process)
}

fn tag(playlist: &str, name: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_playlists_advance_and_segments_appear_in_real_time() {
    let (_dir, origin, _p) = start_origin("").await;
    let master = get(origin, "o", "/live/main/master.m3u8", &[])
        .await
        .unwrap();
    assert_eq!(
        master.header("content-type"),
        "application/vnd.apple.mpegurl"
    );
    let text = String::from_utf8_lossy(&master.body);
    assert!(
        text.contains("#EXT-X-STREAM-INF:BANDWIDTH=4000000,RESOLUTION=1280x720\nhi/index.m3u8\n"),
        "{text}"
    );
    assert!(text.contains("lo/index.m3u8"), "{text}");

    let first = get(origin, "o", "/live/main/hi/index.m3u8", &[])
        .await
        .unwrap();
    assert_eq!(first.header("cache-control"), "public, max-age=1");
    let first_text = String::from_utf8_lossy(&first.body).into_owned();
    assert_eq!(first_text.matches(".ts").count(), 3, "{first_text}");
    let seq = tag(&first_text, "#EXT-X-MEDIA-SEQUENCE:");
    let newest = seq + 2;

    // The newest listed segment exists with its advertised size; the next does not yet.
    let segment = get(origin, "o", &format!("/live/main/hi/{newest}.ts"), &[])
        .await
        .unwrap();
    assert_eq!(segment.status, 200);
    assert_eq!(segment.body.len(), 100_000, "4 Mbit/s × 200 ms / 8");
    assert_eq!(
        segment.header("cache-control"),
        "public, max-age=86400, immutable"
    );
    let noise = Noise::new();
    let path = format!("/live/main/hi/{newest}.ts");
    assert!(segment
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == noise.byte(&path, i as u64)));
    let future = format!("/live/main/hi/{}.ts", newest + 5);
    assert_eq!(get(origin, "o", &future, &[]).await.unwrap().status, 404);

    // The window slides as time passes.
    let started = Instant::now();
    loop {
        let now = get(origin, "o", "/live/main/hi/index.m3u8", &[])
            .await
            .unwrap();
        if tag(
            &String::from_utf8_lossy(&now.body),
            "#EXT-X-MEDIA-SEQUENCE:",
        ) > seq
        {
            assert_ne!(
                now.header("etag"),
                first.header("etag"),
                "a new playlist has a new validator"
            );
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the live window never advanced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lo = get(origin, "o", &format!("/live/main/lo/{newest}.ts"), &[])
        .await
        .unwrap();
    assert_eq!(lo.body.len(), 1000, "segment_size overrides the bandwidth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_conditionals_and_ranges() {
    let (_dir, origin, _p) = start_origin("").await;
    let full = get(origin, "o", "/static/1", &[]).await.unwrap();
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-length"), "102400");
    assert_eq!(full.header("accept-ranges"), "bytes");
    let etag = full.header("etag").to_string();
    let last_modified = full.header("last-modified").to_string();
    assert!(etag.starts_with('"') && !last_modified.is_empty());

    let r = get(origin, "o", "/static/1", &[("if-none-match", &etag)])
        .await
        .unwrap();
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), etag);
    let r = get(origin, "o", "/static/1", &[("if-none-match", "\"other\"")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = get(
        origin,
        "o",
        "/static/1",
        &[("if-modified-since", &last_modified)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 304);

    let r = get(origin, "o", "/static/1", &[("range", "bytes=100-199")])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 100-199/102400");
    assert_eq!(&r.body[..], &full.body[100..200]);
    let r = get(origin, "o", "/static/1", &[("range", "bytes=-10")])
        .await
        .unwrap();
    assert_eq!(&r.body[..], &full.body[102390..]);
    let r = get(origin, "o", "/static/1", &[("range", "bytes=999999-")])
        .await
        .unwrap();
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */102400");
    let r = get(
        origin,
        "o",
        "/static/1",
        &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.body.len()),
        (200, 102400),
        "a failed If-Range gets the whole object"
    );

    assert_eq!(
        get(origin, "o", "/static/3", &[]).await.unwrap().status,
        404,
        "count is 3: 0..=2"
    );
    let vod = get(origin, "o", "/vod/1/hi/index.m3u8", &[]).await.unwrap();
    let text = String::from_utf8_lossy(&vod.body);
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("4.ts\n#EXT-X-ENDLIST\n"),
        "{text}"
    );
    assert_eq!(
        get(origin, "o", "/vod/2/hi/index.m3u8", &[])
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_request_counts() {
    let faults = "faults:\n  - { path: '/static/0', error_rate: 1.0, error_status: 503 }\n  - { path: '/static/2', latency: 300ms }\n";
    let (_dir, origin, _p) = start_origin(faults).await;
    let r = get(origin, "o", "/static/0", &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("cache-control"), "no-store");
    let started = Instant::now();
    assert_eq!(
        get(origin, "o", "/static/2", &[]).await.unwrap().status,
        200
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "latency was injected"
    );

    get(origin, "o", "/static/1", &[]).await.unwrap();
    get(origin, "o", "/static/1", &[]).await.unwrap();
    assert_eq!(origin_count(origin, "/static/1").await, 2);
    assert_eq!(
        origin_count(origin, "/static/0").await,
        1,
        "faulted requests are counted"
    );

    let reset = support::post(origin, "/_origin/reset").await;
    assert_eq!(reset, 200);
    assert_eq!(origin_count(origin, "/static/1").await, 0);
}
