//! RFC 9111 §4.4: a successful unsafe request invalidates the URIs its
//! response names in Location and Content-Location, when they are on the
//! same host. The origin here is a small real server written for the test,
//! because it must answer POSTs with those fields.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;

/// GET anything: 200 with the path as body, fresh for 5 minutes.
/// POST /a: 201 naming /b (Location) and /c (Content-Location).
/// POST /x: 201 naming /e, but on another host.
/// GET /v/...: varies on Accept-Language.
async fn origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let mut resp =
                        hyper::Response::new(Full::new(Bytes::from(req.uri().path().to_string())));
                    let h = resp.headers_mut();
                    match (req.method().as_str(), req.uri().path()) {
                        ("POST", "/a") => {
                            *resp.status_mut() = hyper::StatusCode::CREATED;
                            let h = resp.headers_mut();
                            h.insert("location", "/b".parse().unwrap());
                            h.insert("content-location", "http://localhost/c".parse().unwrap());
                        }
                        ("POST", "/x") => {
                            *resp.status_mut() = hyper::StatusCode::CREATED;
                            resp.headers_mut()
                                .insert("location", "http://elsewhere.example/e".parse().unwrap());
                        }
                        (_, path) => {
                            h.insert("cache-control", "public, max-age=300".parse().unwrap());
                            if path.starts_with("/v/") {
                                h.insert("vary", "accept-language".parse().unwrap());
                            }
                        }
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_and_content_location_on_the_same_host_are_invalidated() {
    let origin = origin().await;
    let dir = temp_dir();
    let p = free_ports(3);
    std::fs::write(
        dir.path().join("up.yaml"),
        format!(
            "kind: up\ncluster:\n  sites:\n    - name: s\n      hosts: [localhost]\n      origin: {{ addresses: ['{origin}'] }}\n\
             cache_nodes:\n  - {{ id: c1, listen: '127.0.0.1:{}', admin_listen: '127.0.0.1:{}' }}\n\
             proxies:\n  - {{ id: p1, listen: '127.0.0.1:{}' }}\n",
            p[0], p[1], p[2]
        ),
    )
    .unwrap();
    let mut process = spawn(&["up", dir.path().join("up.yaml").to_str().unwrap()]);
    wait_ready(&[([127, 0, 0, 1], p[1]).into()], &mut process).await;
    let proxy: SocketAddr = ([127, 0, 0, 1], p[2]).into();
    let status = |r: Reply| r.header("cache-status").to_string();

    for path in ["/b", "/c", "/d", "/e"] {
        get(proxy, "localhost", path, &[]).await.unwrap();
        assert!(
            status(get(proxy, "localhost", path, &[]).await.unwrap()).contains("; hit"),
            "{path} stored"
        );
    }
    assert_eq!(post(proxy, "/a").await, 201);
    assert_eq!(post(proxy, "/x").await, 201);
    assert!(
        status(get(proxy, "localhost", "/b", &[]).await.unwrap()).contains("fwd=uri-miss"),
        "Location"
    );
    assert!(
        status(get(proxy, "localhost", "/c", &[]).await.unwrap()).contains("fwd=uri-miss"),
        "absolute Content-Location, same host"
    );
    assert!(
        status(get(proxy, "localhost", "/d", &[]).await.unwrap()).contains("; hit"),
        "not named"
    );
    assert!(
        status(get(proxy, "localhost", "/e", &[]).await.unwrap()).contains("; hit"),
        "named on another host"
    );

    // The target URI itself, every variant of it.
    let langs = [[("accept-language", "en")], [("accept-language", "fr")]];
    for lang in &langs {
        get(proxy, "localhost", "/v/1", lang).await.unwrap();
        assert!(status(get(proxy, "localhost", "/v/1", lang).await.unwrap()).contains("; hit"));
    }
    assert_eq!(post(proxy, "/v/1").await, 200);
    // The first GET after it finds nothing for the URL; the second finds
    // the URL varies again but nothing for its language.
    for (lang, expected) in langs.iter().zip(["fwd=uri-miss", "fwd=vary-miss"]) {
        let s = status(get(proxy, "localhost", "/v/1", lang).await.unwrap());
        assert!(s.contains(expected), "{lang:?} after the POST: {s}");
    }
}
