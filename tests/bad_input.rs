//! Malformed and hostile requests get the right 4xx from every listener,
//! and the process keeps serving.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use support::*;

/// Sends raw bytes and returns the status line of the answer.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server may answer and close before reading all of a huge request.
    let _ = s.write_all(request);
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_nothing_crashes() {
    let dir = temp_dir();
    let (file, cluster) = up_file(dir.path(), 1, 1, "");
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_ready(
        &[cluster.cache_admins[0], cluster.proxy_admins[0]],
        &mut process,
    )
    .await;
    let big_header = [
        b"GET /static/1 HTTP/1.1\r\nHost: localhost\r\nX-Big: ".as_slice(),
        &[b'a'; 100_000],
        b"\r\n\r\n",
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not HTTP", b"HELLO THERE\r\n\r\n".to_vec(), "400"),
        ("unknown version", b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n".to_vec(), "400"),
        ("headers over 64 KiB", big_header, "431"),
        (
            "two Content-Lengths",
            b"POST /static/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
            "400",
        ),
        ("obs-fold", b"GET /static/1 HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n".to_vec(), "400"),
        ("HTTP/1.1 without Host", b"GET /static/1 HTTP/1.1\r\n\r\n".to_vec(), "400"),
        ("target not origin-form", b"GET static HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), "400"),
        (
            "body over 64 MiB",
            b"POST /static/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n".to_vec(),
            "413",
        ),
    ];
    for target in [cluster.proxies[0], cluster.caches[0]] {
        for (what, request, status) in &cases {
            let line = raw(target, request);
            assert!(
                line.starts_with(&format!("HTTP/1.1 {status}")),
                "{what} to {target}: {line:?}"
            );
        }
    }
    for target in [cluster.proxies[0], cluster.caches[0]] {
        assert_eq!(answers_to_a_smuggling_attempt(target), 1, "to {target}");
    }
    let ok = get(cluster.proxies[0], "localhost", "/static/1", &[])
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "still serving");
    assert!(process.child.try_wait().unwrap().is_none(), "still running");
}

/// A request with both Content-Length and Transfer-Encoding whose
/// Content-Length reading would hide a second request in its body. Framed
/// by Transfer-Encoding, the body ends at the empty chunk and the hidden
/// request would be the next one on the connection, but the connection is
/// closed after the first response. Returns how many responses came back.
fn answers_to_a_smuggling_attempt(addr: SocketAddr) -> usize {
    let hidden = "GET /static/2 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let body = format!("0\r\n\r\n{hidden}");
    let request = format!(
        "POST /static/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    // Reads until the server closes the connection.
    let _ = s.read_to_end(&mut all);
    String::from_utf8_lossy(&all).matches("HTTP/1.1 ").count()
}
