//! The HTTP client side of the load: one GET, timed from when it was meant
//! to be sent, its body drained and counted, its cache status read from the
//! response.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    client_with(Duration::from_secs(2))
}

pub fn client_with(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// What one request of a scenario saw, timed from `intended`.
#[derive(Debug)]
pub struct Timed {
    pub status: StatusCode,
    pub hit: Option<bool>,
    /// The body, when asked to keep it (playlists); otherwise empty.
    pub body: Bytes,
    pub bytes: u64,
    pub ttfb: Duration,
    pub total: Duration,
}

/// GETs `path` like [`get`], but measures from `intended` (the moment the
/// viewer meant to send, so waiting for a slot or a late schedule counts)
/// and keeps the body only when `keep_body`.
pub async fn fetch_timed(
    client: &HttpClient,
    target: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    intended: Instant,
    keep_body: bool,
) -> Result<Timed, FetchError> {
    let req = Request::get(format!("http://{target}{path}"))
        .header(header::HOST, host)
        .body(Empty::new())
        .map_err(FetchError::Request)?;
    let exchange = async {
        let resp = client.request(req).await.map_err(FetchError::Connect)?;
        let ttfb = intended.elapsed();
        let status = resp.status();
        let hit = cache_hit(resp.headers());
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(FetchError::Body)?;
            if let Ok(data) = frame.into_data() {
                bytes += data.len() as u64;
                if keep_body {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok(Timed {
            status,
            hit,
            body: Bytes::from(kept),
            bytes,
            ttfb,
            total: intended.elapsed(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Connect(hyper_util::client::legacy::Error),
    #[error("response body: {0}")]
    Body(hyper::Error),
    #[error("bad request: {0}")]
    Request(http::Error),
}

/// Reads the nearest cache's verdict: the last `Cache-Status` entry (RFC
/// 9211 lists caches from origin to client), or `X-Cache` as Varnish and
/// many CDNs send it.
fn cache_hit(headers: &http::HeaderMap) -> Option<bool> {
    if let Some(last) = headers.get_all("cache-status").iter().next_back() {
        let v = last.to_str().ok()?;
        let last_entry = v.rsplit(',').next()?;
        return Some(last_entry.split(';').skip(1).any(|p| p.trim() == "hit"));
    }
    let x = headers.get("x-cache")?.to_str().ok()?;
    Some(x.to_ascii_uppercase().starts_with("HIT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn hit(pairs: &[(&'static str, &'static str)]) -> Option<bool> {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        cache_hit(&h)
    }

    #[test]
    fn reads_the_cache_nearest_the_client() {
        assert_eq!(
            hit(&[("cache-status", "fanout-cache-1; hit; ttl=3")]),
            Some(true)
        );
        assert_eq!(
            hit(&[("cache-status", "fanout-cache-1; fwd=miss; stored")]),
            Some(false)
        );
        assert_eq!(
            hit(&[("cache-status", "origin-cache; hit, edge; fwd=miss")]),
            Some(false)
        );
        assert_eq!(hit(&[("x-cache", "HIT from varnish")]), Some(true));
        assert_eq!(hit(&[]), None);
    }
}
