//! 103 Early Hints (RFC 8297) from the origin reach clients before the
//! final response, through the proxy and the cache node, over a socket
//! between them (separate processes) and in one process (`fanout up`);
//! they reach requests that joined the fill after the hints came, never
//! an HTTP/1.0 client, and are never stored.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const HINT: &str = "</style.css>; rel=preload; as=style";

/// An origin that answers every request with a 103 carrying [`HINT`], then,
/// once released (at once for paths other than `/held`), a stored 200.
struct Origin {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    release: Arc<Notify>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let (count, gate) = (requests.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (count, gate) = (count.clone(), gate.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = find(&buf, b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        count.fetch_add(1, Ordering::SeqCst);
                        let hints = format!("HTTP/1.1 103 Early Hints\r\nLink: {HINT}\r\n\r\n");
                        if stream.write_all(hints.as_bytes()).await.is_err() {
                            return;
                        }
                        if head.starts_with("GET /held ") {
                            gate.notified().await;
                        }
                        let body = "hello";
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            requests,
            release,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw HTTP/1.x exchange, read as text as it arrives.
struct Exchange {
    stream: TcpStream,
    read: String,
}

impl Exchange {
    async fn send(addr: SocketAddr, path: &str, version: &str) -> Exchange {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} {version}\r\nHost: hints.test\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        Exchange {
            stream,
            read: String::new(),
        }
    }

    /// Reads until `done` accepts what has arrived, within the deadline.
    async fn until(&mut self, done: impl Fn(&str) -> bool) -> &str {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !done(&self.read) {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("not read in time; so far: {:?}", self.read))
                .unwrap();
            assert!(n > 0, "closed; so far: {:?}", self.read);
            self.read.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        &self.read
    }

    /// Reads until a whole final response (with its 5-byte body) is in.
    async fn response(&mut self) -> &str {
        self.until(|r| {
            r.split("\r\n\r\n")
                .nth(r.matches("103 Early Hints").count() + 1)
                .is_some_and(|body| body.len() >= 5)
        })
        .await
    }
}

fn site(origin: SocketAddr) -> String {
    format!("  - name: hints\n    hosts: [hints.test]\n    origin: {{ addresses: ['{origin}'] }}\n")
}

/// The checks, against a proxy in front of a node in front of `origin`.
async fn hints_pass_through(proxy: SocketAddr, origin: &Origin) {
    // A miss: the origin's 103 first, then its 200.
    let mut first = Exchange::send(proxy, "/page", "HTTP/1.1").await;
    let got = first.response().await.to_lowercase();
    assert!(got.starts_with("http/1.1 103 early hints\r\n"), "{got}");
    assert!(got.contains(&format!("link: {HINT}")), "{got}");
    let final_at = got.find("http/1.1 200 ok").expect("a final 200");
    assert!(got.find("103 early hints").unwrap() < final_at);
    assert!(got.ends_with("hello"));

    // A hit: no hints, since they are never stored.
    let replies = poll_until_host(proxy, "hints.test", "/page", &[], |r: &Reply| {
        r.header("cache-status").contains("; hit")
    })
    .await;
    assert_eq!(replies.last().unwrap().status, 200);
    let mut hit = Exchange::send(proxy, "/page", "HTTP/1.1").await;
    let got = hit.response().await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(!got.contains("103"), "{got}");

    // Hints reach the first request before the origin has answered, and a
    // request that joined the fill after they came gets them too.
    let before = origin.requests.load(Ordering::SeqCst);
    let mut leader = Exchange::send(proxy, "/held", "HTTP/1.1").await;
    leader.until(|r| r.contains("103 Early Hints")).await;
    let mut joiner = Exchange::send(proxy, "/held", "HTTP/1.1").await;
    joiner.until(|r| r.contains("103 Early Hints")).await;
    origin.release.notify_one();
    for e in [&mut leader, &mut joiner] {
        let got = e.response().await;
        assert!(got.contains(&format!("link: {HINT}")), "{got}");
        assert!(got.ends_with("hello"), "{got}");
    }
    assert_eq!(
        origin.requests.load(Ordering::SeqCst) - before,
        1,
        "both requests shared one fill"
    );

    // RFC 9110 §15.2: never a 1xx to an HTTP/1.0 client.
    let mut old = Exchange::send(proxy, "/page10", "HTTP/1.0").await;
    old.stream.read_to_string(&mut old.read).await.unwrap();
    assert!(old.read.contains(" 200 "), "{}", old.read);
    assert!(!old.read.contains("103"), "{}", old.read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_cross_the_socket_from_node_to_proxy() {
    let origin = Origin::start().await;
    let s = start_standalone(1, &site(origin.addr), "").await;
    hints_pass_through(s.proxy, &origin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_pass_through_a_node_in_the_proxys_process() {
    let origin = Origin::start().await;
    let up = start_one_of_each(
        &site(origin.addr)
            .replace("  - ", "    - ")
            .replace("\n    ", "\n      "),
    )
    .await;
    hints_pass_through(up.proxy, &origin).await;
}
