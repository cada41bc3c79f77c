//! Requests beside the load itself (reading the synthetic origin's
//! counters, fault steps' HTTP calls) over hyper's pooled client, and the
//! cache verdict of a response. The viewers' own requests go through
//! [`crate::h1`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// GETs `path` from `target` with `host` as the Host header; the status
/// and the whole body.
pub async fn get_body(
    client: &HttpClient,
    target: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), FetchError> {
    let req = Request::get(format!("http://{target}{path}"))
        .header(header::HOST, host)
        .body(Empty::new())
        .map_err(FetchError::Request)?;
    let exchange = async {
        let resp = client.request(req).await.map_err(FetchError::Connect)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(FetchError::Body)?
            .to_bytes();
        Ok((status, body))
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
/// many CDNs send it. `last_cache_status` is the last Cache-Status field
/// value; Cache-Status wins when both are present.
/// Whether any cache on the way answered from its store (`hit` in any
/// `Cache-Status` entry, or an `X-Cache` HIT): the response did not wait
/// for the origin, even where the cache nearest the client missed.
pub(crate) fn stored_anywhere(cache_status: Option<&str>, x_cache: Option<&str>) -> Option<bool> {
    if let Some(v) = cache_status {
        return Some(
            v.split(',')
                .any(|entry| entry.split(';').skip(1).any(|p| p.trim() == "hit")),
        );
    }
    Some(x_cache?.to_ascii_uppercase().starts_with("HIT"))
}

pub(crate) fn verdict(last_cache_status: Option<&str>, x_cache: Option<&str>) -> Option<bool> {
    if let Some(v) = last_cache_status {
        let last_entry = v.rsplit(',').next()?;
        return Some(last_entry.split(';').skip(1).any(|p| p.trim() == "hit"));
    }
    Some(x_cache?.to_ascii_uppercase().starts_with("HIT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cache_nearest_the_client() {
        assert_eq!(
            verdict(Some("fanout-cache-1; hit; ttl=3"), None),
            Some(true)
        );
        assert_eq!(
            verdict(Some("fanout-cache-1; fwd=miss; stored"), None),
            Some(false)
        );
        assert_eq!(
            verdict(Some("origin-cache; hit, edge; fwd=miss"), None),
            Some(false)
        );
        assert_eq!(verdict(Some("edge; fwd=miss"), Some("HIT")), Some(false));
        assert_eq!(verdict(None, Some("HIT from varnish")), Some(true));
        assert_eq!(verdict(None, None), None);
    }

    #[test]
    fn a_hit_anywhere_on_the_way_is_stored_anywhere() {
        let chain = Some("fanout-cache-1; hit; ttl=3, fanout-proxy-1; fwd=uri-miss; stored");
        assert_eq!(verdict(chain, None), Some(false));
        assert_eq!(stored_anywhere(chain, None), Some(true));
        assert_eq!(
            stored_anywhere(Some("fanout-cache-1; fwd=uri-miss; collapsed"), None),
            Some(false)
        );
        assert_eq!(stored_anywhere(None, None), None);
    }
}
