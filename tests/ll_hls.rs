//! Low-latency HLS end to end, through the real binary in front of the
//! synthetic origin's LL-HLS stream: a blocking playlist reload waits for
//! its part and costs the origin one request however many viewers ask for
//! that point, the hinted part is held until it is out, delta updates are
//! cached under their own key, directives that do not parse or ask too
//! far ahead get 400, and LL-HLS players in a scenario get every part
//! from one origin request.

mod support;

use std::time::{Duration, Instant};

use fanout_http_cache::hls::{MediaPlaylist, Point};
use support::*;

const PLAYLIST: &str = "/live/ll/hi/index.m3u8";

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn query_of(point: Point) -> String {
    match point.part {
        Some(p) => format!("_HLS_msn={}&_HLS_part={p}", point.msn),
        None => format!("_HLS_msn={}", point.msn),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_reload_waits_for_its_part_and_costs_the_origin_one_request() {
    let (_dir, cluster, _process) = start_up(3, 1, "").await;
    let proxy = cluster.proxies[0];
    let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let body = text(&r);
    assert!(MediaPlaylist::can_block_reload(&body), "{body}");
    // Two parts past what this version lists: not out yet at the origin.
    let next = MediaPlaylist::parse(&body)
        .next_point()
        .expect("a next point");
    let point = Point {
        msn: next.msn,
        part: next.part.map(|p| p + 1),
    };
    // Spawned requests outlive this frame; the test's one path may too.
    let path: &'static str = format!("{PLAYLIST}?{}", query_of(point)).leak();
    let asked = Instant::now();
    let viewers: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(proxy, "localhost", path, &[])))
        .collect();
    for viewer in viewers {
        let r = viewer.await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{}", text(&r));
        assert!(
            point.reached_by(&text(&r)),
            "{point:?} not in\n{}",
            text(&r)
        );
    }
    // The origin held it until the part was out: at least one part's time.
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "answered after {:?}: not held",
        asked.elapsed()
    );
    assert_eq!(
        origin_count(cluster.origin, path).await,
        1,
        "one origin request for the point"
    );
    // A point the stored answer reaches is answered without the origin.
    let r = get(proxy, "localhost", path, &[]).await.unwrap();
    assert!(
        r.header("cache-status").contains("; hit"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(origin_count(cluster.origin, path).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reloads_held_at_the_owner_do_not_count_as_its_load() {
    // Three nodes, no hot tier: every request reaches a node, which names
    // itself first in Cache-Status.
    let dir = temp_dir();
    let (file, cluster) = up_file_with(dir.path(), 3, 1, "", NO_HOT_TIER);
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    let proxy = cluster.proxies[0];
    let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    let owner = r
        .header("cache-status")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let next = MediaPlaylist::parse(&text(&r)).next_point().unwrap();
    let point = Point {
        msn: next.msn,
        part: next.part.map(|p| p + 1),
    };
    let path: &'static str = format!("{PLAYLIST}?{}", query_of(point)).leak();
    // A live audience's reloads, held at the playlist's owner: with them
    // counted, its load would be 30 of 31 and its keys would spill.
    let reloads: Vec<_> = (0..30)
        .map(|_| tokio::spawn(get(proxy, "localhost", path, &[])))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin_count(cluster.origin, path).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the reload never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Counted, the reloads would put the owner far past its bound, and
    // every request for its keys would spill. Not counted, one may still
    // spill now and then on a loaded machine, when the guards of the
    // requests just answered have not been dropped yet (with one request
    // at a time, the bound is two).
    let (mut checked, mut spilled) = (0, Vec::new());
    while reloads.iter().any(|r| !r.is_finished()) {
        let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
        if !r.header("cache-status").starts_with(&owner) {
            spilled.push(r.header("cache-status").to_string());
        }
        checked += 1;
    }
    assert!(checked >= 4, "the reloads ended after {checked} checks");
    assert!(
        spilled.len() * 4 <= checked,
        "{} of {checked} spilled from {owner} while the reloads waited: {spilled:?}",
        spilled.len()
    );
    for r in reloads {
        assert_eq!(r.await.unwrap().unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hinted_part_is_held_until_it_is_out_and_delta_updates_have_their_own_key() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    let body = text(&r);
    let hint = MediaPlaylist::parse(&body)
        .preload_hint
        .expect("a preload hint")
        .to_string();
    let part = format!("/live/ll/hi/{hint}");
    let r = get(proxy, "localhost", &part, &[]).await.unwrap();
    assert_eq!(r.status, 200, "the hinted part {part}");
    // 800 kbit/s × 1 s / 8, in four parts.
    assert_eq!(r.body.len(), 25_000);
    let published: u64 = r
        .header("x-origin-published-ms")
        .parse()
        .expect("published");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(published <= now, "served before it was out");
    assert_eq!(origin_count(cluster.origin, &part).await, 1);

    // A part two past the hint does not exist yet.
    let (msn, index) = hint.strip_suffix(".ts").unwrap().split_once('.').unwrap();
    let (msn, index): (u64, u64) = (msn.parse().unwrap(), index.parse().unwrap());
    let later = format!("/live/ll/hi/{}.{}.ts", msn + 2, index);
    assert_eq!(
        get(proxy, "localhost", &later, &[]).await.unwrap().status,
        404
    );

    // A delta update skips the old segments, and is cached as itself.
    let delta = format!("{PLAYLIST}?_HLS_skip=YES");
    let r = get(proxy, "localhost", &delta, &[]).await.unwrap();
    assert!(
        text(&r).contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="),
        "{}",
        text(&r)
    );
    let r = get(proxy, "localhost", &delta, &[]).await.unwrap();
    assert!(
        r.header("cache-status").contains("; hit"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(origin_count(cluster.origin, &delta).await, 1);
    let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    assert!(
        !text(&r).contains("#EXT-X-SKIP"),
        "the full playlist is not the delta"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_hold_of_a_blocking_reload_is_not_a_slow_origin() {
    // An origin given 300 ms to answer: a blocking reload two segments
    // ahead is held longer than that, and up to three target durations
    // is its right (RFC 8216bis §6.2.5.2).
    let dir = temp_dir();
    let (file, cluster) = up_file_with(dir.path(), 1, 1, "", "");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let timeouts = "response_timeout: 2s, total_timeout: 3s";
    assert!(yaml.contains(timeouts), "the up file's timeouts moved");
    let yaml = yaml.replacen(timeouts, "response_timeout: 300ms, total_timeout: 1s", 1);
    std::fs::write(&file, yaml).unwrap();
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    let proxy = cluster.proxies[0];

    let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    let last = MediaPlaylist::parse(&text(&r)).last_seq().unwrap();
    let point = Point {
        msn: last + 2,
        part: None,
    };
    let asked = Instant::now();
    let r = get(
        proxy,
        "localhost",
        &format!("{PLAYLIST}?{}", query_of(point)),
        &[],
    )
    .await
    .unwrap();
    let held = asked.elapsed();
    assert_eq!(r.status, 200, "after {held:?}: {}", text(&r));
    assert!(point.reached_by(&text(&r)), "{}", text(&r));
    assert!(
        held > Duration::from_millis(600),
        "held {held:?}: not longer than the response timeout, the test shows nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_that_do_not_parse_or_ask_too_far_ahead_get_400() {
    let (_dir, cluster, _process) = start_up(1, 1, "").await;
    let proxy = cluster.proxies[0];
    let r = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    let last = MediaPlaylist::parse(&text(&r)).last_seq().unwrap();
    for bad in [
        format!("_HLS_msn={}", last + 10),
        "_HLS_part=1".to_string(),
        "_HLS_msn=x".to_string(),
        "_HLS_skip=maybe".to_string(),
    ] {
        let started = Instant::now();
        let r = get(proxy, "localhost", &format!("{PLAYLIST}?{bad}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", text(&r));
        assert!(started.elapsed() < Duration::from_secs(1), "{bad} was held");
    }
}

/// Plays 20 LL-HLS viewers for five seconds against `cluster`; returns
/// the report and what the origin counted per path.
async fn play(
    dir: &std::path::Path,
    cluster: &Cluster,
) -> (
    serde_json::Value,
    serde_json::Map<String, serde_json::Value>,
) {
    let scenario = format!(
        "kind: scenario
name: ll
seed: 3
target:
  addresses: ['{}']
  host: localhost
  origin: '{}'
  metrics: ['{}']
phases:
  - {{ name: join, duration: 1s, arrival_rate: 20, population: 20 }}
  - {{ name: watch, duration: 4s, arrival_rate: 0, population: 20 }}
mix:
  - {{ viewer: live, stream: ll, cmcd: true }}
",
        cluster.proxies[0], cluster.origin, cluster.cache_admins[0]
    );
    let file = dir.join("ll.yaml");
    std::fs::write(&file, scenario).unwrap();
    let json = dir.join("r.json");
    let args: Vec<String> = [
        "loadtest",
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["totals"]["errors"], 0, "{stdout}");
    let stats = get(cluster.origin, "origin", "/_origin/stats", &[])
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    (r, stats["paths"].as_object().unwrap().clone())
}

/// Every part and blocking reload the origin served cost it one request.
fn one_request_each(paths: &serde_json::Map<String, serde_json::Value>) {
    let parts: Vec<_> = paths
        .iter()
        .filter(|(p, _)| p.starts_with("/live/ll/hi/") && p.matches('.').count() == 2)
        .collect();
    let reloads: Vec<_> = paths
        .iter()
        .filter(|(p, _)| p.starts_with(PLAYLIST) && p.contains("_HLS_msn="))
        .collect();
    // Four parts a second for five seconds, each fetched by 20 players.
    assert!(parts.len() >= 8, "parts the origin served: {parts:?}");
    assert!(
        reloads.len() >= 8,
        "blocking reloads the origin served: {reloads:?}"
    );
    for (path, n) in parts.iter().chain(&reloads) {
        assert_eq!(n.as_u64(), Some(1), "{path} cost the origin {n} requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_players_get_every_part_from_one_origin_request() {
    let (dir, cluster, _up) = start_up(3, 1, "").await;
    let (r, paths) = play(dir.path(), &cluster).await;
    one_request_each(&paths);
    // The players were on the live edge: every part within two seconds
    // of its publication, on a loaded two-core machine.
    let edge = r["viewers"]["live_edge_ms"]["p50"].as_f64().unwrap();
    assert!(edge > 0.0 && edge < 2000.0, "live edge p50 {edge} ms");
    // Without prefetch a new part's first players wait on its fill: the
    // report shows forwarded part requests beside the stored ones.
    let v = &r["viewers"];
    for split in ["segment_stored_ms", "segment_forwarded_ms"] {
        assert!(v[split]["max"].as_f64().unwrap() > 0.0, "{split}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prefetch_new_parts_are_stored_before_their_first_player_asks() {
    let dir = temp_dir();
    let (file, cluster) = up_file_with(dir.path(), 3, 1, "", NO_HOT_TIER);
    let yaml = std::fs::read_to_string(&file).unwrap();
    let site = "    - name: live\n      hosts: [localhost]\n";
    assert!(yaml.contains(site), "the up file's live site moved");
    let with = format!("{site}      prefetch: {{ playlists: true, cmcd: true }}\n");
    std::fs::write(&file, yaml.replacen(site, &with, 1)).unwrap();
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;

    let (r, paths) = play(dir.path(), &cluster).await;
    one_request_each(&paths);
    let v = &r["viewers"];
    let (new, stored) = (
        v["new_segments"].as_u64().unwrap(),
        v["new_segments_stored"].as_u64().unwrap(),
    );
    // Without prefetch every new part's first request is a miss (the
    // blocking reload that lists it comes back before any viewer asked).
    assert!(new >= 8, "{v}");
    assert!(
        stored * 2 >= new,
        "{stored} of {new} new parts stored at their first request"
    );
    // The report read what the nodes prefetched from their metrics.
    let p = &r["prefetch"];
    let (started, used) = (p["started"].as_u64().unwrap(), p["used"].as_u64().unwrap());
    assert!(started >= 8 && used > 0 && used <= started, "{p}");
}

/// Waits (up to 10 s) until the origin has counted a request for `path`.
async fn until_origin_asked(origin: std::net::SocketAddr, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin_count(origin, path).await == 0 {
        assert!(Instant::now() < deadline, "{path} never reached the origin");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_point_waits_for_the_earlier_fill_and_an_earlier_one_never_waits_for_a_later() {
    let (_dir, cluster, _process) = start_up(3, 1, "").await;
    let (proxy, origin) = (cluster.proxies[0], cluster.origin);
    // From the origin: a stored copy may be a second old.
    let r = get(
        proxy,
        "localhost",
        PLAYLIST,
        &[("cache-control", "no-cache")],
    )
    .await
    .unwrap();
    let body = text(&r);
    let media = MediaPlaylist::parse(&body);
    let last = media.last_seq().unwrap();
    let per_segment = media.parts.iter().filter(|p| p.msn == last).count() as u64;
    assert!(per_segment > 1, "the ll stream has parts:\n{}", text(&r));
    // The last part of the segment two ahead (about two segments away),
    // and the whole of that segment: the same moment, another point and
    // another key. The whole segment is the later point of the two.
    let part = Point {
        msn: last + 2,
        part: Some(per_segment - 1),
    };
    let whole = Point {
        msn: last + 2,
        part: None,
    };
    let part_path: &'static str = format!("{PLAYLIST}?{}", query_of(part)).leak();
    let whole_path: &'static str = format!("{PLAYLIST}?{}", query_of(whole)).leak();
    let first = tokio::spawn(get(proxy, "localhost", part_path, &[]));
    until_origin_asked(origin, part_path).await;
    let later = tokio::spawn(get(proxy, "localhost", whole_path, &[]));
    // A player at the live edge asks for the next point meanwhile: it is
    // answered when that point is out, not held behind the far one.
    let next = media.next_point().unwrap();
    let next_path = format!("{PLAYLIST}?{}", query_of(next));
    let r = get(proxy, "localhost", &next_path, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        !first.is_finished(),
        "the next point was answered after the point two segments ahead"
    );

    let first = first.await.unwrap().unwrap();
    assert!(part.reached_by(&text(&first)), "{}", text(&first));
    let later = later.await.unwrap().unwrap();
    assert_eq!(later.status, 200, "{}", text(&later));
    assert!(whole.reached_by(&text(&later)), "{}", text(&later));
    // Answered by the earlier point's fill: no request of its own.
    assert!(
        later.header("cache-status").contains("hit"),
        "{}",
        later.header("cache-status")
    );
    assert_eq!(origin_count(origin, whole_path).await, 0);
    assert_eq!(origin_count(origin, part_path).await, 1);
}
