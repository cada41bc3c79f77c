//! HTTPS at the edge: the proxy picks a certificate by SNI (exact name,
//! then wildcard, then the default), negotiates HTTP/2 by ALPN, picks up a
//! renewed certificate without a restart or a dropped connection, and
//! refuses a key that does not belong to its certificate.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Fanout test CA");
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Ca { issuer }
    }

    /// Writes `<stem>.crt` and `<stem>.key` for `names`; returns the DER.
    fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(ca: &Ca, addr: SocketAddr, name: &str) -> Result<Tls, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

fn presented(tls: &Tls) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2(tls: Tls) -> H2 {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn h2_get(send: &mut H2, path: &str) -> (u16, usize) {
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body.len())
}

const TLS_SECTION: &str = "tls:
  listen: '{tls}'
  certificates:
    - { cert_file: a.crt, key_file: a.key, names: [a.example.com] }
    - { cert_file: wild.crt, key_file: wild.key, names: ['*.example.net'] }
    - { cert_file: fallback.crt, key_file: fallback.key, names: [fallback.example.org], default: true }
";

/// A cluster whose proxy serves TLS with three certificates; returns it,
/// the TLS address and the DER of each certificate.
async fn setup(ca: &Ca) -> (Standalone, SocketAddr, [CertificateDer<'static>; 3]) {
    // Certificates must exist before the proxy starts: write them into a
    // directory the standalone cluster then reuses.
    let tls_port = free_ports(1)[0];
    let tls: SocketAddr = ([127, 0, 0, 1], tls_port).into();
    let section = TLS_SECTION.replace("{tls}", &tls.to_string());
    let staging = temp_dir();
    let ders = [
        ca.leaf(staging.path(), "a", &["a.example.com"]),
        ca.leaf(staging.path(), "wild", &["*.example.net"]),
        // The IP name lets a client that sends no SNI verify the default.
        ca.leaf(
            staging.path(),
            "fallback",
            &["fallback.example.org", "127.0.0.1"],
        ),
    ];
    let s = start_standalone_with(1, "", &section, staging.path()).await;
    (s, tls, ders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_alpn_negotiates_http2() {
    let ca = Ca::new();
    let (_s, tls, [a, wild, fallback]) = setup(&ca).await;
    let conn = connect(&ca, tls, "a.example.com").await.unwrap();
    assert!(presented(&conn) == a, "exact name gets its certificate");
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(conn).await;
    assert_eq!(h2_get(&mut send, "/o/1").await, (200, 4096));

    let conn = connect(&ca, tls, "live.example.net").await.unwrap();
    assert!(presented(&conn) == wild, "a wildcard covers one label");
    // Two labels deep is not covered by *.example.net: the default answers
    // (and the client, rightly, refuses it for that name).
    let err = connect(&ca, tls, "a.b.example.net").await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    // A client that names no server (rustls sends no SNI for an IP
    // address) gets the default certificate.
    let conn = connect(&ca, tls, "127.0.0.1").await.unwrap();
    assert!(presented(&conn) == fallback, "no SNI gets the default");
    let conn = connect(&ca, tls, "unknown.example.com").await;
    assert!(
        conn.is_err(),
        "an unknown name gets the default, which does not cover it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_dropping_connections() {
    let ca = Ca::new();
    let (s, tls, [a, ..]) = setup(&ca).await;
    let conn = connect(&ca, tls, "a.example.com").await.unwrap();
    let mut before = h2(conn).await;
    assert_eq!(h2_get(&mut before, "/o/2").await.0, 200);
    // Renew: new key, new certificate, same file names.
    let renewed = ca.leaf(s.dir.path(), "a", &["a.example.com"]);
    assert!(renewed != a);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let conn = connect(&ca, tls, "a.example.com").await.unwrap();
        if presented(&conn) == renewed {
            let mut after = h2(conn).await;
            assert_eq!(h2_get(&mut after, "/o/3").await.0, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h2_get(&mut before, "/o/4").await.0,
        200,
        "the connection opened before the renewal still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_fit_its_certificate_is_refused_with_a_clear_error() {
    let ca = Ca::new();
    let dir = temp_dir();
    ca.leaf(dir.path(), "a", &["a.example.com"]);
    ca.leaf(dir.path(), "other", &["other.example.com"]);
    let p = free_ports(3);
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "kind: cluster\nsites:\n  - name: s\n    hosts: [localhost]\n    origin: { addresses: ['127.0.0.1:9'] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("proxy.yaml"),
        format!(
            "kind: proxy\nid: p\nlisten: '127.0.0.1:{}'\ncluster: cluster.yaml\n\
             cache_nodes: [{{ id: c, address: '127.0.0.1:{}' }}]\n\
             tls:\n  listen: '127.0.0.1:{}'\n  certificates:\n    - {{ cert_file: a.crt, key_file: other.key, names: [a.example.com] }}\n",
            p[0], p[1], p[2]
        ),
    )
    .unwrap();
    let out = run(&["proxy", dir.path().join("proxy.yaml").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the proxy must not start");
    assert!(
        stderr.contains("other.key")
            && stderr.contains("does not fit certificate")
            && stderr.contains("a.crt"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_share_a_connection_and_carry_bodies_both_ways() {
    let ca = Ca::new();
    let (_s, tls, _) = setup(&ca).await;
    // Twenty concurrent streams on one connection, each its own object.
    let send = h2(connect(&ca, tls, "a.example.com").await.unwrap()).await;
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut send = send.clone();
        streams.spawn(async move { (i, h2_get(&mut send, &format!("/o/{}", 100 + i)).await) });
    }
    while let Some(r) = streams.join_next().await {
        let (i, got) = r.unwrap();
        assert_eq!(got, (200, 4096), "stream for /o/{}", 100 + i);
    }
    // A request body larger than every flow-control window, through the
    // proxy and its cache node to the origin (which takes writes).
    let (mut post, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(connect(&ca, tls, "a.example.com").await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let body = http_body_util::Full::new(Bytes::from(vec![b'p'; 3 << 20]));
    let req = http::Request::post("https://localhost/o/7")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, post.send_request(req))
        .await
        .expect("the upload completes")
        .unwrap();
    assert_eq!(resp.status(), 204);
}
