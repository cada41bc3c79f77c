//! Playlist-aware prefetch, end to end through the real binary: a live
//! stream's new segments are stored at their owning cache node before any
//! viewer asks, each costs the origin one request, prefetched objects
//! count as used when a viewer asks, and playlists that are not what they
//! should be (unparsable, thousands of URIs, other hosts, loops) are
//! served as they are and prefetched no further than the budget. Also
//! the prefetch's neighbours: CMCD and origin hints, and LL-HLS blocking
//! reloads answered from the stored playlist. DASH MPDs prefetch the
//! same way, for every representation they list.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;

const PLAYLIST: &str = "/live/main/hi/index.m3u8";

/// `fanout up` with `caches` cache nodes, one proxy without a hot tier
/// (so every request reaches a node and its `Cache-Status`), and
/// `prefetch` as the `live` site's prefetch section.
async fn start(caches: usize, prefetch: &str) -> (tempfile::TempDir, Cluster, Running) {
    let dir = temp_dir();
    let (file, cluster) = up_file_with(dir.path(), caches, 1, "", NO_HOT_TIER);
    let yaml = std::fs::read_to_string(&file).unwrap();
    let site = "    - name: live\n      hosts: [localhost]\n";
    assert!(yaml.contains(site), "the up file's live site moved");
    let yaml = yaml.replacen(site, &format!("{site}      prefetch: {prefetch}\n"), 1);
    std::fs::write(&file, yaml).unwrap();
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    (dir, cluster, process)
}

/// The newest segment number a media playlist lists.
fn newest(r: &Reply) -> u64 {
    let text = String::from_utf8_lossy(&r.body);
    text.lines()
        .filter_map(|l| l.strip_suffix(".ts")?.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no segments in {text}"))
}

/// Waits until the playlist, as viewers get it, lists a segment past
/// `after`; returns the newest it lists.
async fn next_version(proxy: SocketAddr, after: u64) -> u64 {
    let replies = poll_until(proxy, PLAYLIST, &[], |r| {
        r.status == 200 && newest(r) > after
    })
    .await;
    newest(replies.last().unwrap())
}

/// The sum over every cache node of `fanout_cache_prefetches_total` with
/// `result`. The nodes of one `fanout up` share a process and its
/// metrics, so any one admin listener shows them all.
async fn prefetches(cluster: &Cluster, result: &str) -> f64 {
    prefetch_lines(cluster)
        .await
        .lines()
        .filter(|l| l.contains(&format!("result=\"{result}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every node's prefetch counters, for a failure's message.
async fn prefetch_lines(cluster: &Cluster) -> String {
    let r = get(cluster.cache_admins[0], "localhost", "/metrics", &[])
        .await
        .unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with("fanout_cache_prefetches_total{"))
        .map(|l| format!("{l}\n"))
        .collect()
}

const ONLY_IF_CACHED: (&str, &str) = ("cache-control", "only-if-cached");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_live_segments_are_stored_before_viewers_ask_and_cost_the_origin_one_request() {
    // A hold far longer than a loopback fill needs: the playlist is never
    // released before its segments are stored, however busy the machine.
    let (_dir, cluster, _process) = start(3, "{ playlists: true, hold: 5s }").await;
    let proxy = cluster.proxies[0];
    let first = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    assert_eq!(first.status, 200);
    let mut last = newest(&first);
    // Three new versions: with three nodes, their segments' owners differ
    // from the playlist's owner (the prefetch is asked of another node)
    // as well as match it.
    let mut prefetched = Vec::new();
    for _ in 0..3 {
        last = next_version(proxy, last).await;
        let segment = format!("/live/main/hi/{last}.ts");
        // No viewer has asked for it, and the playlist that lists it was
        // held until the prefetch stored it: `only-if-cached` finds it.
        let r = get(proxy, "localhost", &segment, &[ONLY_IF_CACHED])
            .await
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "{segment} listed before it was stored: {}",
            r.header("cache-status")
        );
        assert!(
            r.header("cache-status").contains("hit"),
            "{segment}: {}",
            r.header("cache-status")
        );
        prefetched.push(segment);
    }
    // Viewers now ask for them as players do: hits, and the origin was
    // asked once for each, by the prefetch.
    for segment in &prefetched {
        let r = get(proxy, "localhost", segment, &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.header("cache-status").contains("hit"),
            "{segment}: {}",
            r.header("cache-status")
        );
        assert_eq!(
            origin_count(cluster.origin, segment).await,
            1,
            "{segment} cost the origin more than one request"
        );
    }
    // Every version the origin served was one fill at the playlist's
    // owner, and each new segment one prefetch cluster-wide.
    let started = prefetches(&cluster, "started").await;
    let playlist_fills = origin_count(cluster.origin, PLAYLIST).await as f64;
    assert!(started >= 3.0, "{started} prefetches started");
    assert!(
        started <= playlist_fills + 3.0,
        "{started} prefetches for {playlist_fills} playlist versions: more than one round per version\n{}",
        prefetch_lines(&cluster).await
    );
    assert!(
        prefetches(&cluster, "used").await >= 3.0,
        "a viewer's hit on a prefetched segment counts as used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prefetch_a_new_segment_waits_for_its_first_viewer() {
    // The control for the test above: the same cluster, prefetch off.
    let (_dir, cluster, _process) = start(3, "{ playlists: false }").await;
    let proxy = cluster.proxies[0];
    let first = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    let new = next_version(proxy, newest(&first)).await;
    // One more version later, the segment has had time to be prefetched.
    next_version(proxy, new).await;
    let segment = format!("/live/main/hi/{new}.ts");
    let r = get(proxy, "localhost", &segment, &[ONLY_IF_CACHED])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{segment} was stored before anyone asked");
    assert_eq!(origin_count(cluster.origin, &segment).await, 0);
    assert_eq!(prefetches(&cluster, "started").await, 0.0);
}

const MPD: &str = "/live/main/manifest.mpd";

/// Each representation's newest segment in an MPD, as a path.
fn newest_in_mpd(r: &Reply) -> Vec<String> {
    let text = String::from_utf8_lossy(&r.body);
    let url = url::Url::parse(&format!("http://localhost{MPD}")).unwrap();
    let mpd =
        fanout_http_cache::dash::parse(&text, &url).unwrap_or_else(|| panic!("not an MPD: {text}"));
    mpd.representations
        .iter()
        .map(|rep| rep.last().expect("a segment").path().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_mpds_new_segments_are_stored_for_every_representation_before_viewers_ask() {
    let (_dir, cluster, _process) = start(3, "{ playlists: true, hold: 5s }").await;
    let proxy = cluster.proxies[0];
    let first = get(proxy, "localhost", MPD, &[]).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), "application/dash+xml");
    let mut last = newest_in_mpd(&first);
    assert_eq!(last.len(), 2, "the stream's two representations");
    let mut prefetched = Vec::new();
    for _ in 0..2 {
        let replies = poll_until(proxy, MPD, &[], |r| {
            r.status == 200 && newest_in_mpd(r) != last
        })
        .await;
        last = newest_in_mpd(replies.last().unwrap());
        for segment in &last {
            let r = get(proxy, "localhost", segment, &[ONLY_IF_CACHED])
                .await
                .unwrap();
            assert_eq!(
                r.status,
                200,
                "{segment} listed before it was stored: {}",
                r.header("cache-status")
            );
            prefetched.push(segment.clone());
        }
    }
    for segment in &prefetched {
        let r = get(proxy, "localhost", segment, &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), "video/iso.segment");
        assert!(
            r.header("cache-status").contains("hit"),
            "{segment}: {}",
            r.header("cache-status")
        );
        assert_eq!(origin_count(cluster.origin, segment).await, 1, "{segment}");
    }
    assert!(prefetches(&cluster, "used").await >= prefetched.len() as f64);
}

/// `fanout up` with `caches` cache nodes and one proxy (no hot tier) in
/// front of `origin`, its one site `s` on localhost with `prefetch` as its
/// prefetch section; the proxy's address.
async fn in_front_of(
    origin: SocketAddr,
    prefetch: &str,
    caches: usize,
) -> (tempfile::TempDir, SocketAddr, Running) {
    let dir = temp_dir();
    let ports = free_ports(2 + 2 * caches);
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let nodes: String = (0..caches)
        .map(|i| {
            format!(
                "  - {{ id: cache-{}, listen: '{}', admin_listen: '{}' }}\n",
                i + 1,
                addr(2 + 2 * i),
                addr(3 + 2 * i)
            )
        })
        .collect();
    let file = dir.path().join("up.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: up
cluster:
  sites:
    - name: s
      hosts: [localhost]
      origin: {{ addresses: ['{origin}'] }}
      prefetch: {prefetch}
cache_nodes:
{nodes}proxies:
  - {{ id: proxy-1, listen: '{p1}', admin_listen: '{a2}', hot_tier: {{ capacity: 0 }} }}
",
            p1 = addr(0),
            a2 = addr(1),
        ),
    )
    .unwrap();
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    let admins: Vec<SocketAddr> = (0..=caches).map(|i| addr(1 + 2 * i)).collect();
    wait_ready(&admins, &mut process).await;
    // Until the proxy counts every node up, a request may go to the next
    // node of the ring rather than to its owner.
    let start = Instant::now();
    loop {
        let r = get(addr(1), "localhost", "/status", &[]).await.unwrap();
        let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let nodes = status["ring"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if nodes.len() == caches && nodes.iter().all(|n| n["up"] == true) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "nodes never all up: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (dir, addr(0), process)
}

/// An origin serving fixed playlists (by path) and counting every request.
struct TestOrigin {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl TestOrigin {
    fn count(&self, path: &str) -> u64 {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests for paths that start with `prefix`.
    fn count_prefix(&self, prefix: &str) -> u64 {
        let counts = self.counts.lock().unwrap();
        counts
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Extra response headers by path, for [`test_origin`].
type Extra = HashMap<&'static str, Vec<(&'static str, &'static str)>>;

async fn test_origin(playlists: HashMap<&'static str, String>, extra: Extra) -> TestOrigin {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let (playlists, extra) = (Arc::new(playlists), Arc::new(extra));
    let seen = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (playlists, extra, seen) = (playlists.clone(), extra.clone(), seen.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_string();
                    *seen.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                    let (body, content_type) = match playlists.get(path.as_str()) {
                        Some(text) => (text.clone(), "application/vnd.apple.mpegurl"),
                        None => ("segment".repeat(100), "video/mp2t"),
                    };
                    let mut resp = http::Response::builder()
                        .header("content-type", content_type)
                        .header("cache-control", "public, max-age=60");
                    for (name, value) in extra.get(path.as_str()).into_iter().flatten() {
                        resp = resp.header(*name, *value);
                    }
                    let resp = resp.body(Full::new(Bytes::from(body))).unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestOrigin { addr, counts }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_that_are_not_what_they_should_be_are_served_and_prefetched_within_bounds() {
    let mut thousands = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
    for i in 0..5000 {
        thousands += &format!("#EXTINF:2,\nmany/{i}.ts\n");
    }
    let playlists: HashMap<&'static str, String> = [
        ("/p/garbage.m3u8", "<html>not a playlist</html>\ngarbage/1.ts\n".to_string()),
        ("/p/binary.m3u8", "#EXTM3U\n\u{0}\u{1}\u{2}\n".to_string()),
        ("/p/thousands.m3u8", thousands),
        (
            "/p/elsewhere.m3u8",
            "#EXTM3U\n#EXTINF:2,\nhttp://other.example/p/stolen.ts\n#EXTINF:2,\n//other.example/p/stolen2.ts\n#EXTINF:2,\nlocal/1.ts\n"
                .to_string(),
        ),
        // A VOD title: complete, nothing new in it to prefetch.
        (
            "/p/vod.m3u8",
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2,\nvod/0.ts\n#EXTINF:2,\nvod/1.ts\n#EXTINF:2,\nvod/2.ts\n#EXT-X-ENDLIST\n"
                .to_string(),
        ),
        // DASH: cut off mid-document, a timeline of a billion segments,
        // a BaseURL on another host, and a static MPD.
        (
            "/p/broken.mpd",
            r#"<MPD type="dynamic"><Period><AdaptationSet><SegmentTemplate media="broken/$Number$.m4s"><SegmentTimeline><S d="2" r="3"/>"#
                .to_string(),
        ),
        (
            "/p/huge.mpd",
            r#"<MPD type="dynamic"><Period><AdaptationSet><SegmentTemplate media="huge/$Number$.m4s"><SegmentTimeline><S t="0" d="2" r="999999999"/></SegmentTimeline></SegmentTemplate><Representation id="a"/></AdaptationSet></Period></MPD>"#
                .to_string(),
        ),
        (
            "/p/away.mpd",
            r#"<MPD type="dynamic"><BaseURL>http://other.example/p/stolen-dash/</BaseURL><Period><AdaptationSet><SegmentTemplate media="$Number$.m4s"><SegmentTimeline><S d="2" r="3"/></SegmentTimeline></SegmentTemplate><Representation id="a"/></AdaptationSet></Period></MPD>"#
                .to_string(),
        ),
        (
            "/p/static.mpd",
            r#"<MPD><Period><AdaptationSet><Representation id="a"><SegmentList><SegmentURL media="static/1.m4s"/><SegmentURL media="static/2.m4s"/></SegmentList></Representation></AdaptationSet></Period></MPD>"#
                .to_string(),
        ),
        (
            "/p/loop.m3u8",
            "#EXTM3U\n#EXTINF:2,\nloop.m3u8\n#EXTINF:2,\n../p/loop.m3u8?again\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"loop/1.ts\"\n"
                .to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let origin = test_origin(playlists.clone(), Extra::new()).await;
    let (_dir, proxy, _process) =
        in_front_of(origin.addr, "{ playlists: true, max_per_playlist: 4 }", 1).await;
    for (path, text) in &playlists {
        let r = get(proxy, "localhost", path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.body,
            text.as_bytes(),
            "{path} served as the origin sent it"
        );
    }
    // What was prefetched shows at the origin; wait until the one URI that
    // should be (elsewhere's local one) has been, then check the rest.
    let start = Instant::now();
    while origin.count("/p/local/1.ts") == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the playlist's own segment was never prefetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let many = {
        // A first sight of 5000 URIs prefetches the last few, never all.
        let start = Instant::now();
        while origin.count_prefix("/p/many/") < 3 {
            assert!(
                start.elapsed() < DEADLINE,
                "nothing of the long playlist prefetched"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        origin.count_prefix("/p/many/")
    };
    assert_eq!(
        many, 3,
        "a long playlist's first sight prefetched {many} URIs"
    );
    assert_eq!(origin.count("/p/many/4999.ts"), 1);
    assert_eq!(
        origin.count_prefix("/p/garbage/"),
        0,
        "a page that is no playlist was read as one"
    );
    // An MPD's billion segments: the last few of its one representation.
    let start = Instant::now();
    while origin.count_prefix("/p/huge/") < 3 {
        assert!(
            start.elapsed() < DEADLINE,
            "nothing of the huge MPD prefetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.count_prefix("/p/huge/"), 3);
    assert_eq!(origin.count("/p/huge/1000000000.m4s"), 1);
    assert_eq!(
        origin.count_prefix("/p/broken/"),
        0,
        "a broken MPD was read"
    );
    assert_eq!(
        origin.count_prefix("/p/static/"),
        0,
        "a static MPD was prefetched"
    );
    assert_eq!(
        origin.count_prefix("/p/stolen"),
        0,
        "another host's URIs were fetched from ours"
    );
    assert_eq!(
        origin.count("/p/loop.m3u8"),
        1,
        "a playlist listing itself was prefetched"
    );
    assert_eq!(
        origin.count_prefix("/p/vod/"),
        0,
        "a VOD title's segments were prefetched"
    );
    // The preload hint is a part, and prefetched.
    let start = Instant::now();
    while origin.count("/p/loop/1.ts") == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the preload hint was never prefetched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Serving continues: the playlists again, now from the cache.
    for path in playlists.keys() {
        let r = get(proxy, "localhost", path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(origin.count(path), 1, "{path} asked of the origin again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_in_their_own_processes_ask_the_owner_over_the_network() {
    // Each part its own process, from its own file, as in production: the
    // cache nodes know each other from `peers`, and a prefetch for a
    // segment another node owns crosses a real socket.
    let dir = temp_dir();
    let d = dir.path();
    let p = free_ports(7);
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], p[i]));
    let (origin, proxy, proxy_admin) = (addr(0), addr(1), addr(2));
    let nodes = [(addr(3), addr(4)), (addr(5), addr(6))];
    let write = |name: &str, text: String| std::fs::write(d.join(name), text).unwrap();
    write(
        "origin.yaml",
        format!(
            "kind: origin\nlisten: '{origin}'\nlive:\n  - name: main\n    segment_duration: 1s\n    window: 4\n    renditions:\n      - {{ name: hi, bandwidth: 800000 }}\n"
        ),
    );
    write(
        "cluster.yaml",
        format!(
            "kind: cluster\nsites:\n  - name: live\n    hosts: [localhost]\n    origin: {{ addresses: ['{origin}'] }}\n    prefetch: {{ playlists: true, hold: 5s }}\n"
        ),
    );
    let peers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, (listen, _))| format!("  - {{ id: c{}, address: '{listen}' }}\n", i + 1))
        .collect();
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let mut processes = vec![spawn(&["origin", &path("origin.yaml")])];
    for (i, (listen, admin)) in nodes.iter().enumerate() {
        let file = format!("c{}.yaml", i + 1);
        write(
            &file,
            format!(
                "kind: cache\nid: c{}\nlisten: '{listen}'\nadmin_listen: '{admin}'\ncluster: cluster.yaml\npeers:\n{peers}",
                i + 1
            ),
        );
        let mut process = spawn(&["cache", &path(&file)]);
        wait_ready(&[*admin], &mut process).await;
        processes.push(process);
    }
    write(
        "proxy.yaml",
        format!(
            "kind: proxy\nid: p\nlisten: '{proxy}'\nadmin_listen: '{proxy_admin}'\ncluster: cluster.yaml\nhot_tier: {{ capacity: 0 }}\ncache_nodes:\n{peers}"
        ),
    );
    let mut proxy_process = spawn(&["proxy", &path("proxy.yaml")]);
    wait_ready(&[proxy_admin], &mut proxy_process).await;
    wait_origin(origin, &mut processes[0]).await;

    let first = get(proxy, "localhost", PLAYLIST, &[]).await.unwrap();
    assert_eq!(first.status, 200);
    let playlist_node = first.cache_node().to_string();
    let mut last = newest(&first);
    // Until one new segment is owned by the node that does not own the
    // playlist: that one was asked for over the network, and the playlist
    // held until the owner's fill ended.
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no segment owned by the other node"
        );
        last = next_version(proxy, last).await;
        let segment = format!("/live/main/hi/{last}.ts");
        let stored = get(proxy, "localhost", &segment, &[ONLY_IF_CACHED])
            .await
            .unwrap();
        assert_eq!(stored.status, 200, "{segment} listed before it was stored");
        assert_eq!(origin_count(origin, &segment).await, 1, "{segment}");
        if stored.cache_node() != playlist_node {
            break;
        }
    }
}

/// `fanout up` with the support cluster's `live` site taking CMCD hints
/// (or not), `caches` nodes, no hot tier.
async fn start_cmcd(caches: usize, on: bool) -> (tempfile::TempDir, Cluster, Running) {
    start(caches, &format!("{{ cmcd: {on} }}")).await
}

/// A `CMCD` query parameter as a player writes it: `nor` URL-encoded,
/// quoted, then the whole payload URL-encoded.
fn cmcd_query(nor: &str) -> String {
    let payload = format!(
        "bl=21300,br=3200,nor=\"{}\",sid=\"6e2fb550\"",
        nor.replace('/', "%2F")
    );
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("CMCD", &payload);
    q.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_object_a_player_names_in_cmcd_is_prefetched_at_its_owner() {
    let (_dir, cluster, _process) = start_cmcd(3, true).await;
    let proxy = cluster.proxies[0];
    // Three hints, relative to the request: with three nodes, the named
    // objects' owners differ from the hinted request's as well as match.
    for (now, next) in [(1, 2), (10, 11), (20, 21)] {
        let r = get(
            proxy,
            "localhost",
            &format!("/static/{now}?{}", cmcd_query(&next.to_string())),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let named = format!("/static/{next}");
        poll_until(proxy, &named, &[ONLY_IF_CACHED], |r| r.status == 200).await;
        assert_eq!(origin_count(cluster.origin, &named).await, 1, "{named}");
    }
    // The same hint from a crowd of players is one prefetch.
    for _ in 0..20 {
        let r = get(
            proxy,
            "localhost",
            &format!("/static/1?{}", cmcd_query("30")),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    poll_until(proxy, "/static/30", &[ONLY_IF_CACHED], |r| r.status == 200).await;
    assert_eq!(origin_count(cluster.origin, "/static/30").await, 1);
    // CMCD is never part of the key: players' differing data shares one
    // stored copy.
    let a = get(
        proxy,
        "localhost",
        &format!("/static/40?{}", cmcd_query("41")),
        &[],
    )
    .await
    .unwrap();
    let b = get(proxy, "localhost", "/static/40?CMCD=bl%3D100", &[])
        .await
        .unwrap();
    assert_eq!(a.body, b.body);
    assert!(
        b.header("cache-status").contains("hit"),
        "{}",
        b.header("cache-status")
    );
    assert_eq!(origin_count(cluster.origin, "/static/40").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_hints_are_ignored_when_off_or_when_they_do_not_parse_or_leave_the_host() {
    let (_dir, cluster, _process) = start_cmcd(1, true).await;
    let proxy = cluster.proxies[0];
    let header_hint = [("cmcd-request", "nor=\"%2Fstatic%2F60\"")];
    for (path, headers) in [
        // Not CMCD: an unterminated string.
        (
            "/static/50?CMCD=nor%3D%22%2Fstatic%2F51".to_string(),
            &[][..],
        ),
        // Another host, absolute or scheme-relative.
        (
            format!(
                "/static/52?{}",
                cmcd_query("http://other.example/static/53")
            ),
            &[][..],
        ),
        (
            format!("/static/54?{}", cmcd_query("//other.example/static/55")),
            &[][..],
        ),
        // A well-formed hint in the header: taken (the control).
        ("/static/59".to_string(), &header_hint[..]),
    ] {
        let r = get(proxy, "localhost", &path, headers).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    poll_until(proxy, "/static/60", &[ONLY_IF_CACHED], |r| r.status == 200).await;
    for never in ["/static/51", "/static/53", "/static/55"] {
        assert_eq!(
            origin_count(cluster.origin, never).await,
            0,
            "{never} was prefetched"
        );
    }
    drop(_process);

    // Off: the same well-formed hint prefetches nothing.
    let (_dir, cluster, _process) = start_cmcd(1, false).await;
    let proxy = cluster.proxies[0];
    let r = get(proxy, "localhost", "/static/59", &header_hint)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // On, the hint starts the named object's fill before the hinted
    // request is answered (one node: it is the owner), so this request
    // would join that fill or hit; off, it is the object's first miss.
    let r = get(proxy, "localhost", "/static/60", &[]).await.unwrap();
    let status = r.header("cache-status");
    assert!(
        status.contains("fwd=uri-miss") && !status.contains("collapsed"),
        "prefetched with cmcd off: {status}"
    );
    assert_eq!(origin_count(cluster.origin, "/static/60").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_origin_names_for_preload_is_prefetched_when_the_site_says_so() {
    let extra: Extra = [(
        "/h/now.ts",
        vec![
            (
                "link",
                "<next.ts>; rel=preload; as=video, </h/style.css>; rel=stylesheet",
            ),
            ("link", "<http://other.example/h/stolen.ts>; rel=preload"),
            ("cdn-origin-assist-prefetch-path", "/h/assist.ts"),
        ],
    )]
    .into_iter()
    .collect();
    for on in [true, false] {
        let origin = test_origin(HashMap::new(), extra.clone()).await;
        let (_dir, proxy, _process) =
            in_front_of(origin.addr, &format!("{{ origin_hints: {on} }}"), 1).await;
        let r = get(proxy, "localhost", "/h/now.ts", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        if on {
            for hinted in ["/h/next.ts", "/h/assist.ts"] {
                let start = Instant::now();
                while origin.count(hinted) == 0 {
                    assert!(start.elapsed() < DEADLINE, "{hinted} never prefetched");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let r = get(proxy, "localhost", hinted, &[]).await.unwrap();
                assert!(
                    r.header("cache-status").contains("hit")
                        || r.header("cache-status").contains("collapsed"),
                    "{hinted}: {}",
                    r.header("cache-status")
                );
                assert_eq!(origin.count(hinted), 1, "{hinted}");
            }
            assert_eq!(
                origin.count("/h/style.css"),
                0,
                "a stylesheet link is no preload"
            );
            assert_eq!(
                origin.count_prefix("/h/stolen"),
                0,
                "another host's URI fetched from ours"
            );
        } else {
            // Off: the hinted object's first request is its first miss.
            let r = get(proxy, "localhost", "/h/next.ts", &[]).await.unwrap();
            let status = r.header("cache-status");
            assert!(
                status.contains("fwd=uri-miss") && !status.contains("collapsed"),
                "{status}"
            );
            assert_eq!(origin.count("/h/next.ts"), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_reload_the_stored_playlist_already_reaches_is_answered_from_it() {
    let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
                    #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n#EXT-X-MEDIA-SEQUENCE:10\n\
                    #EXTINF:2,\n10.ts\n#EXTINF:2,\n11.ts\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"12.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.1.m4s\"\n";
    let origin = test_origin(
        [("/ll/index.m3u8", playlist.to_string())]
            .into_iter()
            .collect(),
        Extra::new(),
    )
    .await;
    // Three nodes: the blocking requests must reach the playlist's owner.
    let (_dir, proxy, _process) = in_front_of(origin.addr, "{}", 3).await;
    let first = get(proxy, "localhost", "/ll/index.m3u8", &[])
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    for reached in ["_HLS_msn=11", "_HLS_msn=5", "_HLS_msn=12&_HLS_part=0"] {
        let r = get(
            proxy,
            "localhost",
            &format!("/ll/index.m3u8?{reached}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{reached}");
        assert_eq!(r.body, playlist.as_bytes());
        // Answered by the playlist's owner from its copy (`hit;
        // detail=ll-hls-reached`), or, when the proxy spilled it to the
        // next node under its load bound, by that node filling from the
        // owner, which answers the same way: the origin is not asked.
        assert_eq!(
            origin.count("/ll/index.m3u8"),
            1,
            "{reached} went to the origin: {}",
            r.header("cache-status")
        );
    }
    // A point the stored version does not reach goes to the origin, which
    // would hold it until it does; so does a delta update.
    for later in [
        "_HLS_msn=12",
        "_HLS_msn=12&_HLS_part=1",
        "_HLS_msn=11&_HLS_skip=YES",
    ] {
        let before = origin.count("/ll/index.m3u8");
        let r = get(proxy, "localhost", &format!("/ll/index.m3u8?{later}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{later}");
        assert_eq!(
            origin.count("/ll/index.m3u8"),
            before + 1,
            "{later} was not asked of the origin"
        );
    }
}
