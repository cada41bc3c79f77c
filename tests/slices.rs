//! Large objects read from the origin in slices (`cache.slice`), and 206
//! responses stored and combined (RFC 9111 §3.3–3.4): through a real
//! `fanout up` cluster (a proxy with its hot tier, then a cache node), in
//! front of an origin written for the test that honours single byte ranges
//! and logs the `Range` of every request it gets.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;

const SLICE: usize = 64 * 1024;
/// Sixteen whole slices and a short one.
const BIG: usize = 16 * SLICE + 1000;

/// The bytes of version `v` of an object of `len` bytes: no two slices
/// alike, and every version different.
fn content(len: usize, v: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 997 + v as usize * 7) % 251) as u8)
        .collect()
}

#[derive(Default)]
struct State {
    /// Per request: its path and `Range` ("-" without one).
    log: Vec<(String, String)>,
    version: u8,
    /// The version changes once this many ranged requests have been
    /// answered, for the next (0: never).
    change_after: usize,
    ranged: usize,
}

/// The state, and the gate that holds `/gated`'s first slice.
#[derive(Clone, Default)]
struct Origin(Arc<Mutex<State>>, Arc<tokio::sync::Notify>);

type OriginBody = BoxBody<Bytes, Infallible>;

impl Origin {
    async fn start() -> (Origin, SocketAddr) {
        let origin = Origin::default();
        origin.0.lock().unwrap().version = 1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let o = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let o = o.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let answer = o.answer(&req);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (origin, addr)
    }

    /// `/big` and `/small` honour a single `bytes=first-last` or
    /// `bytes=first-` range; `/whole` ignores ranges, as some origins do.
    /// `/gated` is `/big` whose first slice stops after 1000 bytes until
    /// the gate opens.
    fn answer(&self, req: &hyper::Request<hyper::body::Incoming>) -> hyper::Response<OriginBody> {
        let path = req.uri().path().to_string();
        let range = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let mut s = self.0.lock().unwrap();
        s.log.push((path.clone(), range.clone()));
        let version = s.version;
        let (len, ranges) = match path.as_str() {
            "/big" | "/gated" => (BIG, true),
            "/small" => (1000, true),
            "/whole" => (200_000, false),
            _ => return response(404, &[], Vec::new()),
        };
        let body = content(len, version);
        let mut headers = vec![
            ("etag".to_string(), format!("\"v{version}\"")),
            ("cache-control".to_string(), "max-age=600".to_string()),
            ("content-type".to_string(), "video/mp4".to_string()),
        ];
        let asked = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                let first: usize = a.parse().ok()?;
                let last = if b.is_empty() {
                    len - 1
                } else {
                    b.parse::<usize>().ok()?.min(len - 1)
                };
                Some((first, last))
            });
        match asked.filter(|_| ranges && req.method() == hyper::Method::GET) {
            Some((first, _)) if first >= len => {
                headers.push(("content-range".to_string(), format!("bytes */{len}")));
                response(416, &headers, Vec::new())
            }
            Some((first, last)) => {
                s.ranged += 1;
                if s.change_after > 0 && s.ranged == s.change_after {
                    s.version += 1;
                }
                headers.push((
                    "content-range".to_string(),
                    format!("bytes {first}-{last}/{len}"),
                ));
                let part = body[first..=last].to_vec();
                if path == "/gated" && first == 0 {
                    let (mut tx, held) = Channel::<Bytes, Infallible>::new(1);
                    let gate = self.1.clone();
                    tokio::spawn(async move {
                        let _ = tx.send_data(Bytes::copy_from_slice(&part[..1000])).await;
                        gate.notified().await;
                        let _ = tx.send_data(Bytes::copy_from_slice(&part[1000..])).await;
                    });
                    let mut resp = response(206, &headers, Vec::new());
                    resp.headers_mut()
                        .insert("content-length", (last - first + 1).into());
                    *resp.body_mut() = held.boxed();
                    return resp;
                }
                response(206, &headers, part)
            }
            None => response(200, &headers, body),
        }
    }

    /// The `Range` of each request for `path`, in order.
    fn ranges(&self, path: &str) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.log
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn response(
    status: u16,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> hyper::Response<OriginBody> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (n, v) in headers {
        resp.headers_mut().append(
            hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

struct Setup {
    origin: Origin,
    proxy: SocketAddr,
    _dir: tempfile::TempDir,
    _cluster: Running,
}

/// One proxy and one cache node; the site reads objects in 64 KiB slices.
async fn setup() -> Setup {
    let (origin, origin_addr) = Origin::start().await;
    let up = start_one_of_each(&format!(
        "    - name: s
      hosts: [localhost]
      origin: {{ addresses: ['{origin_addr}'] }}
      cache: {{ slice: 64KiB }}
"
    ))
    .await;
    Setup {
        origin,
        proxy: up.proxy,
        _dir: up.dir,
        _cluster: up.process,
    }
}

impl Setup {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        get(self.proxy, "localhost", path, headers).await
    }
}

fn slice_range(index: usize) -> String {
    let first = index * SLICE;
    format!("bytes={first}-{}", first + SLICE - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_fetches_only_its_slices_and_a_full_request_combines_them() {
    let s = setup().await;
    let v1 = content(BIG, 1);

    let r = s
        .get("/big", &[("range", "bytes=300000-400000")])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        format!("bytes 300000-400000/{BIG}")
    );
    assert_eq!(&r.body[..], &v1[300000..=400000]);
    assert_eq!(
        s.origin.ranges("/big"),
        [slice_range(4), slice_range(5), slice_range(6)],
        "only the slices the range covers, each once"
    );

    let again = s
        .get("/big", &[("range", "bytes=300000-400000")])
        .await
        .unwrap();
    assert_eq!(&again.body[..], &v1[300000..=400000]);
    assert!(
        again.header("cache-status").contains("hit"),
        "{}",
        again.header("cache-status")
    );
    assert_eq!(
        s.origin.ranges("/big").len(),
        3,
        "answered from the stored slices"
    );

    // The whole object: the stored slices and the missing ones, combined.
    let whole = s.get("/big", &[]).await.unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), BIG.to_string());
    assert!(whole.header("content-range").is_empty());
    assert_eq!(whole.header("etag"), "\"v1\"");
    assert!(whole.body == v1, "the object, byte for byte");
    let mut asked = s.origin.ranges("/big");
    asked.sort();
    let mut every: Vec<String> = (0..17).map(slice_range).collect();
    every.sort();
    assert_eq!(asked, every, "every slice once, none of them twice");

    // Every later answer, whole or ranged, comes from the slices.
    let whole = s.get("/big", &[]).await.unwrap();
    assert!(whole.body == v1);
    let tail = s.get("/big", &[("range", "bytes=-500")]).await.unwrap();
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], &v1[BIG - 500..]);
    let across = s
        .get(
            "/big",
            &[("range", &format!("bytes={}-", BIG - SLICE - 10))],
        )
        .await
        .unwrap();
    assert_eq!(&across.body[..], &v1[BIG - SLICE - 10..]);
    let past = s
        .get("/big", &[("range", &format!("bytes={BIG}-"))])
        .await
        .unwrap();
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{BIG}"));
    let stale_if_range = s
        .get("/big", &[("range", "bytes=0-9"), ("if-range", "\"v0\"")])
        .await
        .unwrap();
    assert_eq!(
        (stale_if_range.status, stale_if_range.body.len()),
        (200, BIG)
    );
    let not_modified = s
        .get(
            "/big",
            &[("if-none-match", "\"v1\""), ("range", "bytes=0-9")],
        )
        .await
        .unwrap();
    assert_eq!(not_modified.status, 304);
    assert_eq!(s.origin.ranges("/big").len(), 17);

    // An unsafe request to the URL invalidates its slices (RFC 9111 §4.4).
    assert_eq!(post(s.proxy, "/big").await, 200);
    let r = s.get("/big", &[("range", "bytes=0-9")]).await.unwrap();
    assert_eq!(&r.body[..], &v1[..10]);
    assert_eq!(
        s.origin.ranges("/big").len(),
        19,
        "{:?}",
        s.origin.ranges("/big")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_changes_mid_read_breaks_off_and_is_fetched_anew() {
    let s = setup().await;
    // The fifth slice the origin serves is of version 2.
    s.origin.0.lock().unwrap().change_after = 4;
    let first = s.get("/big", &[]).await;
    assert!(
        first.is_err(),
        "a body assembled from two versions must not pass for complete"
    );
    assert_eq!(
        s.origin.ranges("/big").len(),
        5,
        "it stopped at the changed slice"
    );

    let v2 = content(BIG, 2);
    let replies = poll_until(s.proxy, "/big", &[], |r: &Reply| {
        r.status == 200 && r.body.len() == BIG
    })
    .await;
    let r = replies.last().unwrap();
    assert_eq!(r.header("etag"), "\"v2\"");
    assert!(
        r.body == v2,
        "every slice of the new version, none of the old"
    );
    let stored = s.get("/big", &[("range", "bytes=0-99")]).await.unwrap();
    assert_eq!(&stored.body[..], &v2[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_and_origins_that_ignore_ranges_are_stored_whole() {
    let s = setup().await;
    let small = content(1000, 1);
    let r = s.get("/small", &[]).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &small[..]));
    assert!(r.header("content-range").is_empty());
    let part = s.get("/small", &[("range", "bytes=10-19")]).await.unwrap();
    assert_eq!((part.status, &part.body[..]), (206, &small[10..20]));
    assert_eq!(part.header("content-range"), "bytes 10-19/1000");
    assert_eq!(
        s.origin.ranges("/small"),
        [slice_range(0)],
        "one slice-sized request, whose answer was the whole object"
    );

    let whole = content(200_000, 1);
    let r = s
        .get("/whole", &[("range", "bytes=150000-150099")])
        .await
        .unwrap();
    assert_eq!((r.status, &r.body[..]), (206, &whole[150000..150100]));
    // The range ends before the object does: wait for the fill to store
    // it (the same range joins that fill meanwhile).
    poll_until(
        s.proxy,
        "/whole",
        &[("range", "bytes=150000-150099")],
        |r: &Reply| r.header("cache-status").contains("hit"),
    )
    .await;
    let r = s
        .get("/whole", &[("range", "bytes=70000-70009")])
        .await
        .unwrap();
    assert_eq!((r.status, &r.body[..]), (206, &whole[70000..70010]));
    let r = s.get("/whole", &[]).await.unwrap();
    assert!(r.body == whole);
    assert_eq!(
        s.origin.ranges("/whole").len(),
        1,
        "stored whole from its one answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_slice_is_fetched_while_one_streams() {
    let s = setup().await;
    let proxy = s.proxy;
    let whole = tokio::spawn(async move { get(proxy, "localhost", "/gated", &[]).await });
    // The origin holds the first slice's body mid-way: the node must
    // already be asking for the second, not wait for the first to end.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !s.origin.ranges("/gated").contains(&slice_range(1)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slice 1 not asked for while slice 0 streamed: {:?}",
            s.origin.ranges("/gated")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.origin.1.notify_one();
    let r = whole.await.unwrap().unwrap();
    assert!(r.body == content(BIG, 1));
    let mut asked = s.origin.ranges("/gated");
    asked.sort();
    let mut every: Vec<String> = (0..17).map(slice_range).collect();
    every.sort();
    assert_eq!(asked, every, "read ahead, every slice still once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_authorization_is_not_answered_from_slices_stored_for_others() {
    let s = setup().await;
    let v1 = content(BIG, 1);
    let r = s.get("/big", &[("range", "bytes=0-9")]).await.unwrap();
    assert_eq!(&r.body[..], &v1[..10]);
    let before = s.origin.ranges("/big").len();
    // RFC 9111 §3.5: the stored slices are not marked public.
    let r = s
        .get(
            "/big",
            &[("range", "bytes=0-9"), ("authorization", "Bearer viewer-7")],
        )
        .await
        .unwrap();
    assert_eq!((r.status, &r.body[..]), (206, &v1[..10]));
    assert!(
        !r.header("cache-status").contains("hit"),
        "{}",
        r.header("cache-status")
    );
    assert_eq!(
        s.origin.ranges("/big")[before..],
        ["bytes=0-9".to_string()],
        "asked the origin itself, for its own range"
    );
}
