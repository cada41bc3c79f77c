//! An https origin: the cache node verifies its certificate (against the
//! site's ca_file here), fetches and stores through TLS, and refuses an
//! origin it cannot trust.

mod support;

use std::net::SocketAddr;

use support::*;

struct Setup {
    dir: tempfile::TempDir,
    origin: SocketAddr,
    proxy: SocketAddr,
    _origin: Running,
    _cluster: Running,
}

/// A synthetic origin serving https for `localhost` with a fresh
/// self-signed certificate, and a cluster in front of it that trusts that
/// certificate only if `trust` is set.
async fn setup(trust: bool) -> Setup {
    let dir = temp_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("origin.crt"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("origin.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let p = free_ports(3);
    let origin: SocketAddr = ([127, 0, 0, 1], p[0]).into();
    std::fs::write(
        dir.path().join("origin.yaml"),
        format!(
            "kind: origin\nlisten: '{origin}'\ntls: {{ cert_file: origin.crt, key_file: origin.key }}\n\
             objects:\n  - {{ prefix: /s/, count: 10, size: 32KiB }}\n"
        ),
    )
    .unwrap();
    let ca = if trust { "ca_file: origin.crt, " } else { "" };
    std::fs::write(
        dir.path().join("up.yaml"),
        format!(
            "kind: up
cluster:
  sites:
    - name: s
      hosts: [localhost]
      origin: {{ scheme: https, {ca}addresses: ['localhost:{}'] }}
cache_nodes:
  - {{ id: c1, listen: '127.0.0.1:{}' }}
proxies:
  - {{ id: p1, listen: '127.0.0.1:{}' }}
",
            p[0], p[1], p[2]
        ),
    )
    .unwrap();
    let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let origin_process = spawn(&["origin", &path("origin.yaml")]);
    let mut cluster = spawn(&["up", &path("up.yaml")]);
    let proxy: SocketAddr = ([127, 0, 0, 1], p[2]).into();
    // The proxy answering at all means the cluster is up.
    let started = std::time::Instant::now();
    while get(proxy, "localhost", "/nothing-here", &[]).await.is_err() {
        assert!(
            cluster.child.try_wait().unwrap().is_none(),
            "fanout up exited"
        );
        assert!(started.elapsed() < DEADLINE, "cluster not up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Setup {
        dir,
        origin,
        proxy,
        _origin: origin_process,
        _cluster: cluster,
    }
}

/// The origin's request count for `path`, read over https trusting the
/// test certificate.
async fn origin_stats(s: &Setup) -> serde_json::Value {
    use http_body_util::{BodyExt, Empty};
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let cert =
        rustls_pki_types::CertificateDer::from_pem_file(s.dir.path().join("origin.crt")).unwrap();
    roots.add(cert).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let uri = format!("https://localhost:{}/_origin/stats", s.origin.port());
    let resp = client
        .request(http::Request::get(uri).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

async fn origin_requests(s: &Setup, path: &str) -> u64 {
    origin_stats(s).await["paths"][path].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_https_origin_is_fetched_once_and_cached() {
    let s = setup(true).await;
    let first = get(s.proxy, "localhost", "/s/1", &[]).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.header("cache-status"));
    assert_eq!(first.body.len(), 32 * 1024);
    assert!(first
        .header("cache-status")
        .contains("fwd=uri-miss; stored"));
    let second = get(s.proxy, "localhost", "/s/1", &[]).await.unwrap();
    assert!(second.header("cache-status").contains("; hit"));
    assert_eq!(second.body, first.body);
    let noise = fanout_loadtest::origin::Noise::new();
    assert!(first
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == noise.byte("/s/1", i as u64)));
    assert_eq!(origin_requests(&s, "/s/1").await, 1);
    // ALPN: every request the cache node sent went over HTTP/2.
    let stats = origin_stats(&s).await;
    assert!(stats["requests"].as_u64().unwrap() >= 1);
    assert_eq!(stats["http2_requests"], stats["requests"], "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_origin_certificate_is_refused() {
    let s = setup(false).await;
    let r = get(s.proxy, "localhost", "/s/1", &[]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.header("cache-status"));
    assert_eq!(
        origin_requests(&s, "/s/1").await,
        0,
        "no request was sent over an untrusted connection"
    );
}
