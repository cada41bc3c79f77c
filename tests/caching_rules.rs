//! RFC 9111's rules where origins send the unusual: error responses, status
//! codes other than 200, `s-maxage` under a failing origin, every form of
//! HTTP-date, odd `Age` values, and malformed request bodies. Through a real
//! `fanout up` cluster (proxy with its hot tier, then a cache node), in
//! front of an origin written for the test, whose answers each test sets
//! per path and may change while it runs.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One canned answer: status, header lines (repeats allowed), body.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: &'static str,
}

fn canned(status: u16, headers: &[(&str, &str)], body: &'static str) -> Canned {
    Canned {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body,
    }
}

/// The test's origin: answers each path with what `set` last put there
/// (404 otherwise), and counts the requests per path.
#[derive(Clone, Default)]
struct Origin {
    answers: Arc<Mutex<HashMap<String, Canned>>>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    /// Each request's Accept-Encoding, in arrival order.
    accept_encodings: Arc<Mutex<Vec<String>>>,
    /// Per path, the requests answered 304 because their If-None-Match
    /// named the canned answer's ETag.
    not_modified: Arc<Mutex<HashMap<String, u64>>>,
    /// Per path, how long to wait before answering.
    delays: Arc<Mutex<HashMap<String, Duration>>>,
}

impl Origin {
    async fn start() -> (Origin, SocketAddr) {
        let origin = Origin::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let o = origin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let o = o.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let o = o.clone();
                        async move {
                            // As an upload endpoint does, the whole body is
                            // read before the answer: answering at once
                            // raced a client's broken body to the cache
                            // (the test of it failed when the answer won).
                            // A broken body still gets the canned answer,
                            // which the client must then never see.
                            let (req, body) = req.into_parts();
                            let _ = body.collect().await;
                            let path = req.uri.path().to_string();
                            *o.counts.lock().unwrap().entry(path.clone()).or_default() += 1;
                            let ae = req.headers.get("accept-encoding");
                            o.accept_encodings
                                .lock()
                                .unwrap()
                                .push(ae.and_then(|v| v.to_str().ok()).unwrap_or("-").to_string());
                            let c = o.answers.lock().unwrap().get(&path).cloned();
                            let c = c.unwrap_or_else(|| canned(404, &[], "no such path\n"));
                            let delay = o.delays.lock().unwrap().get(&path).copied();
                            if let Some(delay) = delay {
                                tokio::time::sleep(delay).await;
                            }
                            let etag = c.headers.iter().find(|(n, _)| n == "etag").map(|h| &h.1);
                            let inm = req
                                .headers
                                .get("if-none-match")
                                .and_then(|v| v.to_str().ok());
                            if etag.is_some() && etag.map(String::as_str) == inm {
                                *o.not_modified.lock().unwrap().entry(path).or_default() += 1;
                                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                                *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
                                for (n, v) in
                                    c.headers.iter().filter(|(n, _)| n != "content-length")
                                {
                                    resp.headers_mut().append(
                                        hyper::header::HeaderName::from_bytes(n.as_bytes())
                                            .unwrap(),
                                        v.parse().unwrap(),
                                    );
                                }
                                return Ok::<_, Infallible>(resp);
                            }
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(c.body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(c.status).unwrap();
                            for (n, v) in &c.headers {
                                resp.headers_mut().append(
                                    hyper::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                                    v.parse().unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (origin, addr)
    }

    fn set(&self, path: &str, answer: Canned) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }

    fn not_modified(&self, path: &str) -> u64 {
        self.not_modified
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, path: &str) -> u64 {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

struct Setup {
    origin: Origin,
    proxy: SocketAddr,
    /// The cache node's admin listener (`/metrics`).
    admin: SocketAddr,
    dir: tempfile::TempDir,
    _cluster: Running,
}

/// A cluster of one proxy and one cache node in front of the test origin;
/// the site serves stale copies for 60 s when the origin fails, where the
/// response's directives allow it.
async fn setup() -> Setup {
    let (origin, origin_addr) = Origin::start().await;
    setup_in_front_of(origin, origin_addr).await
}

/// [`setup`] in front of any origin; the cluster's warnings go to
/// `log.txt` in the setup's directory.
async fn setup_in_front_of(origin: Origin, origin_addr: SocketAddr) -> Setup {
    let up = start_one_of_each(&format!(
        "    - name: s
      hosts: [localhost]
      origin: {{ addresses: ['{origin_addr}'] }}
      cache: {{ stale_on_error: 60s }}
"
    ))
    .await;
    Setup {
        origin,
        proxy: up.proxy,
        admin: up.node_admin,
        dir: up.dir,
        _cluster: up.process,
    }
}

impl Setup {
    async fn get(&self, path: &str) -> Reply {
        get(self.proxy, "localhost", path, &[]).await.unwrap()
    }

    /// Asks, then asks again until an answer did not join another
    /// request's fill (one sent just as the previous fill finishes may
    /// still join it); true when the origin was asked only the once.
    async fn stored(&self, path: &str) -> bool {
        self.get(path).await;
        poll_until(self.proxy, path, &[], |r: &Reply| {
            !r.header("cache-status").contains("collapsed")
        })
        .await;
        self.origin.count(path) == 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_error_reaches_the_client_as_the_origin_sent_it() {
    let s = setup().await;
    s.origin.set(
        "/down",
        canned(
            503,
            &[
                ("retry-after", "30"),
                ("content-type", "application/problem+json"),
                ("cache-control", "no-store"),
            ],
            "{\"title\":\"maintenance\"}",
        ),
    );
    let r = s.get("/down").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), "30");
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert_eq!(&r.body[..], b"{\"title\":\"maintenance\"}");
    // Not stored, and no hit-for-pass either.
    s.get("/down").await;
    assert_eq!(s.origin.count("/down"), 2);

    // A stale copy the directives allow still stands in for an error.
    s.origin.set(
        "/flaky",
        canned(200, &[("cache-control", "max-age=1")], "good copy"),
    );
    assert_eq!(&s.get("/flaky").await.body[..], b"good copy");
    s.origin
        .set("/flaky", canned(500, &[("x-origin", "broken")], "broken"));
    let replies = poll_until(s.proxy, "/flaky", &[], |r: &Reply| {
        r.header("cache-status").contains("stale-if-error")
    })
    .await;
    let r = replies.last().unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"good copy"[..]));
    assert!(
        replies.iter().all(|r| r.status == 200),
        "the error never reaches the client while a stale copy may stand in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_freshness_stores_any_final_status_and_heuristics_only_the_listed_ones() {
    let s = setup().await;
    let fresh = [("cache-control", "max-age=60")];
    s.origin.set(
        "/moved",
        canned(
            302,
            &[("cache-control", "max-age=60"), ("location", "/there")],
            "",
        ),
    );
    s.origin.set("/gone", canned(410, &fresh, "gone"));
    s.origin.set("/error", canned(500, &fresh, "cached error"));
    s.origin
        .set("/unknown", canned(299, &fresh, "unknown status"));
    s.origin.set(
        "/unknown-must-understand",
        canned(299, &[("cache-control", "max-age=60, must-understand")], ""),
    );
    s.origin.set(
        "/understood-must-understand",
        canned(
            200,
            &[("cache-control", "max-age=60, must-understand, no-store")],
            "kept",
        ),
    );
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let ten_days_ago = httpdate::fmt_http_date(now - Duration::from_secs(864_000));
    let modified = [
        ("date", date.as_str()),
        ("last-modified", ten_days_ago.as_str()),
    ];
    s.origin
        .set("/heuristic-404", canned(404, &modified, "missing"));
    s.origin.set("/heuristic-302", canned(302, &modified, ""));

    for path in [
        "/moved",
        "/gone",
        "/error",
        "/unknown",
        "/understood-must-understand",
    ] {
        assert!(
            s.stored(path).await,
            "{path}: stored with explicit freshness"
        );
    }
    assert_eq!(s.get("/moved").await.header("location"), "/there");
    assert_eq!(&s.get("/error").await.body[..], b"cached error");
    assert!(
        s.stored("/heuristic-404").await,
        "404 gets a heuristic lifetime"
    );
    for path in ["/unknown-must-understand", "/heuristic-302"] {
        assert!(!s.stored(path).await, "{path}: not stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_forbids_serving_stale_when_the_origin_fails() {
    let s = setup().await;
    s.origin.set(
        "/shared",
        canned(
            200,
            &[("cache-control", "s-maxage=1, stale-if-error=60")],
            "copy",
        ),
    );
    s.origin.set(
        "/plain",
        canned(
            200,
            &[("cache-control", "max-age=1, stale-if-error=60")],
            "copy",
        ),
    );
    for path in ["/shared", "/plain"] {
        assert_eq!(s.get(path).await.status, 200);
        s.origin.set(path, canned(503, &[], "down"));
    }
    // Once stale, the plain copy stands in for the error (stale-if-error,
    // and the site's window), the s-maxage one may not (RFC 9111 §5.2.2.10).
    let plain = poll_until(s.proxy, "/plain", &[], |r: &Reply| {
        r.header("cache-status").contains("stale-if-error")
    })
    .await;
    assert_eq!(plain.last().unwrap().status, 200);
    let shared = poll_until(s.proxy, "/shared", &[], |r: &Reply| r.status != 200).await;
    let r = shared.last().unwrap();
    assert_eq!((r.status, &r.body[..]), (503, &b"down"[..]));
}

/// `at` in RFC 850 and asctime form, as old origins still send.
fn old_forms(at: SystemTime) -> (String, String) {
    let imf = httpdate::fmt_http_date(at); // "Thu, 03 Dec 2026 18:00:00 GMT"
    let f: Vec<&str> = imf.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    let (day, dd, mon, yyyy, time) = (f[0], f[1], f[2], f[3], f[4]);
    let long_day = match day {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    let rfc850 = format!("{long_day}, {dd}-{mon}-{} {time} GMT", &yyyy[2..]);
    let day_of_month: u32 = dd.parse().unwrap();
    let asctime = format!("{day} {mon} {day_of_month:>2} {time} {yyyy}");
    (rfc850, asctime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_is_read_in_every_date_form_and_any_case() {
    let s = setup().await;
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let (rfc850, asctime) = old_forms(now + Duration::from_secs(3600));
    let lower_imf = httpdate::fmt_http_date(now + Duration::from_secs(3600)).to_lowercase();
    for (path, expires) in [
        ("/rfc850", rfc850.as_str()),
        ("/asctime", asctime.as_str()),
        ("/lowercase", lower_imf.as_str()),
        ("/lowercase-rfc850", &rfc850.to_lowercase()),
        ("/invalid", "0"),
    ] {
        s.origin.set(
            path,
            canned(200, &[("date", &date), ("expires", expires)], "dated"),
        );
    }
    for path in ["/rfc850", "/asctime", "/lowercase", "/lowercase-rfc850"] {
        assert!(s.stored(path).await, "{path}: fresh for an hour");
    }
    assert!(
        !s.stored("/invalid").await,
        "an invalid Expires is already expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_age_values_are_read_as_rfc_9111_says() {
    let s = setup().await;
    let cc = ("cache-control", "max-age=100");
    s.origin
        .set("/list", canned(200, &[cc, ("age", "90, 5")], "x"));
    s.origin.set(
        "/two-lines",
        canned(200, &[cc, ("age", "90"), ("age", "5")], "x"),
    );
    s.origin
        .set("/negative", canned(200, &[cc, ("age", "-5")], "x"));
    s.origin.set(
        "/huge",
        canned(200, &[cc, ("age", "99999999999999999999")], "x"),
    );
    let age = |r: &Reply| r.header("age").parse::<u64>().unwrap_or(0);
    for path in ["/list", "/two-lines"] {
        let r = s.get(path).await;
        assert!(
            (90..=91).contains(&age(&r)),
            "{path}: the first member: {:?}",
            r.headers
        );
    }
    let r = s.get("/negative").await;
    assert!(age(&r) <= 1, "an invalid Age is ignored: {:?}", r.headers);
    assert!(s.stored("/negative").await);
    // 2^31 seconds old: stale on arrival, so never served from the cache.
    assert!(
        !s.stored("/huge").await,
        "a huge Age saturates, it is not ignored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_request_body_is_the_clients_fault() {
    let s = setup().await;
    s.origin.set("/upload", canned(201, &[], "created"));
    let mut c = tokio::net::TcpStream::connect(s.proxy).await.unwrap();
    c.write_all(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nnot a chunk\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    // The cluster still answers, and the node was not marked down for it.
    s.origin.set(
        "/after",
        canned(200, &[("cache-control", "max-age=60")], "fine"),
    );
    for _ in 0..5 {
        assert_eq!(s.get("/after").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_is_normalised_before_it_forms_a_vary_key() {
    let s = setup().await;
    s.origin.set(
        "/styles.css",
        canned(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
            "body",
        ),
    );
    let ask = |ae: &'static str| async move {
        get(
            s.proxy,
            "localhost",
            "/styles.css",
            &[("accept-encoding", ae)],
        )
        .await
        .unwrap()
    };
    for ae in ["gzip, deflate, br", "br, gzip", "br;q=0.9, gzip, identity"] {
        assert_eq!(ask(ae).await.status, 200);
    }
    assert_eq!(
        s.origin.count("/styles.css"),
        1,
        "one entry for one set of codings"
    );
    assert_eq!(
        s.origin.accept_encodings.lock().unwrap().as_slice(),
        ["br, gzip"],
        "the origin sees what every sharer can decode"
    );
    // A client that takes only gzip is another variant.
    ask("gzip").await;
    assert_eq!(s.origin.count("/styles.css"), 2);
    assert_eq!(s.origin.accept_encodings.lock().unwrap()[1], "gzip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_responses_are_stored_and_revalidated_on_every_use() {
    let s = setup().await;
    let playlist = |body| {
        canned(
            200,
            &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
            body,
        )
    };
    s.origin.set("/live.m3u8", playlist("#EXTM3U v1\n"));
    assert_eq!(&s.get("/live.m3u8").await.body[..], b"#EXTM3U v1\n");
    for _ in 0..3 {
        // (An answer may also come from the previous validation as it
        // finishes, collapsed: ask until one validated on its own.)
        let replies = poll_until(s.proxy, "/live.m3u8", &[], |r: &Reply| {
            r.header("cache-status").contains("fwd-status=304")
        })
        .await;
        for r in &replies {
            assert_eq!(&r.body[..], b"#EXTM3U v1\n", "the stored body");
        }
    }
    let (asked, validated) = (
        s.origin.count("/live.m3u8"),
        s.origin.not_modified("/live.m3u8"),
    );
    assert!(validated >= 3, "{validated} validations");
    assert_eq!(
        asked,
        1 + validated,
        "every use after the first was a conditional request"
    );
    // A crowd's validations collapse into one conditional request.
    s.origin
        .delays
        .lock()
        .unwrap()
        .insert("/live.m3u8".to_string(), Duration::from_millis(800));
    let before = s.origin.count("/live.m3u8");
    let mut crowd = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let proxy = s.proxy;
        crowd.spawn(async move { get(proxy, "localhost", "/live.m3u8", &[]).await.unwrap() });
    }
    for r in crowd.join_all().await {
        assert_eq!((r.status, &r.body[..]), (200, &b"#EXTM3U v1\n"[..]));
    }
    let asked = s.origin.count("/live.m3u8") - before;
    assert!(
        (1..=2).contains(&asked),
        "{asked} origin requests for 20 viewers"
    );
    // A new version replaces the stored one.
    s.origin.delays.lock().unwrap().clear();
    s.origin.set(
        "/live.m3u8",
        canned(
            200,
            &[("cache-control", "no-cache"), ("etag", "\"v2\"")],
            "#EXTM3U v2\n",
        ),
    );
    assert_eq!(&s.get("/live.m3u8").await.body[..], b"#EXTM3U v2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_decides_for_the_cdn_and_stops_at_its_edge() {
    let s = setup().await;
    // Browsers may not keep it; the CDN keeps it a minute.
    s.origin.set(
        "/segment",
        canned(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            "seg",
        ),
    );
    // The origin lets browsers keep it, but not the CDN.
    s.origin.set(
        "/personal",
        canned(
            200,
            &[
                ("cache-control", "public, max-age=600"),
                ("cdn-cache-control", "no-store"),
            ],
            "mine",
        ),
    );
    // An invalid targeted field is ignored as a whole: Cache-Control decides.
    s.origin.set(
        "/typo",
        canned(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "Max-Age=0"),
            ],
            "t",
        ),
    );
    assert!(s.stored("/segment").await);
    assert!(!s.stored("/personal").await);
    assert!(s.stored("/typo").await);
    let r = s.get("/segment").await;
    assert_eq!(
        r.header("cache-control"),
        "no-store",
        "Cache-Control goes downstream unchanged"
    );
    assert_eq!(
        r.header("cdn-cache-control"),
        "",
        "the targeted field is not forwarded"
    );
}

/// An origin that declares 100 bytes, sends 50 and closes; and how many
/// requests it has answered so.
async fn short_body_origin() -> (SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ncache-control: max-age=60\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b'x'; 50]).await;
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (addr, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_never_stored() {
    let (origin, answered) = short_body_origin().await;
    let s = setup_in_front_of(Origin::default(), origin).await;
    // Nothing is stored: asking again keeps reaching the origin.
    let started = std::time::Instant::now();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < DEADLINE, "the short body was stored");
        // An error is right too: the connection was cut, and the client knows.
        if let Ok(r) = get(s.proxy, "localhost", "/short", &[]).await {
            assert!(
                r.body.len() != 100,
                "a cut-off body must not look complete: {r:?}"
            );
        }
    }
    // And the cluster still answers.
    let r = get(s.proxy, "nowhere.example", "/", &[]).await.unwrap();
    assert_eq!(r.status, 404, "unknown site");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonsense_from_the_origin_is_read_conservatively_and_logged_once_a_minute() {
    let s = setup().await;
    s.origin.set(
        "/conflict",
        canned(200, &[("cache-control", "max-age=600, max-age=0")], "c"),
    );
    s.origin.set(
        "/two-lines",
        canned(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("cache-control", "max-age=5"),
            ],
            "t",
        ),
    );
    s.origin.set(
        "/negative",
        canned(200, &[("cache-control", "max-age=-1")], "n"),
    );
    s.origin.set(
        "/vary",
        canned(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("vary", "accept-language, not a name"),
            ],
            "v",
        ),
    );
    for path in ["/conflict", "/two-lines", "/negative", "/vary"] {
        assert!(!s.stored(path).await, "{path}: not served from the cache");
    }
    // Each fill of such a response is counted (the Vary one's second
    // request passes as hit-for-pass, with no fill), one warning per site.
    let metrics = get(s.admin, "localhost", "/metrics", &[]).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("fanout_cache_origin_anomalies_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!((7.0..=8.0).contains(&counted), "{text}");
    let log = std::fs::read_to_string(s.dir.path().join("log.txt")).unwrap();
    let warned = log.lines().filter(|l| l.contains("origin sent")).count();
    assert_eq!(warned, 1, "{log}");
}
