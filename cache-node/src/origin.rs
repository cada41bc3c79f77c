//! Requests to a site's origin pool: one pooled client per site (so each
//! site's connect timeout applies), addresses taken round-robin, and the
//! response-header timeout named by the site.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanout_config::{ClusterConfig, HostPort, Scheme, Site};
use fanout_server::{remove_hop_by_hop, ResponseBody};
use http::{header, HeaderMap, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("every origin request slot of this node stayed busy for {timeout:?}")]
    Busy { timeout: Duration },
    #[error("origin {address} did not send response headers within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("origin {address}: {source}")]
    Failed {
        address: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("request to origin {address} could not be built: {source}")]
    BadRequest {
        address: String,
        source: http::Error,
    },
}

struct Pool {
    client: Client<HttpConnector, ResponseBody>,
    addresses: Vec<HostPort>,
    next: AtomicUsize,
    response_timeout: Duration,
    host_header: Option<HeaderValue>,
}

pub struct Origins {
    pools: HashMap<String, Pool>,
    /// Origin requests this node may have open at once.
    open: Arc<Semaphore>,
}

/// An origin response and its place among the node's open origin requests,
/// which it holds until dropped: keep it as long as the body is read.
pub struct OriginResponse {
    pub response: Response<Incoming>,
    pub permit: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
#[error("site {site}: origin scheme https is not supported yet; use http origins")]
pub struct UnsupportedScheme {
    site: String,
}

impl Origins {
    pub fn new(cluster: &ClusterConfig, max_open: u32) -> Result<Origins, UnsupportedScheme> {
        let mut pools = HashMap::new();
        for site in &cluster.sites {
            if site.origin.scheme == Scheme::Https {
                return Err(UnsupportedScheme {
                    site: site.name.clone(),
                });
            }
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(site.origin.connect_timeout.get()));
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
            pools.insert(
                site.name.clone(),
                Pool {
                    client,
                    addresses: site.origin.addresses.clone(),
                    next: AtomicUsize::new(0),
                    response_timeout: site.origin.response_timeout.get(),
                    host_header: site
                        .origin
                        .host_header
                        .as_deref()
                        .and_then(|h| HeaderValue::from_str(h).ok()),
                },
            );
        }
        Ok(Origins {
            pools,
            open: Arc::new(Semaphore::new(max_open as usize)),
        })
    }

    /// Sends `method path_and_query` with the client's end-to-end headers to
    /// the next origin of the site's pool.
    pub async fn fetch(
        &self,
        site: &Site,
        method: http::Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
        body: ResponseBody,
    ) -> Result<OriginResponse, FetchError> {
        let pool = &self.pools[&site.name];
        // At the cap, wait for a turn, but no longer than the origin itself
        // would be given to answer.
        let wait = tokio::time::timeout(pool.response_timeout, self.open.clone().acquire_owned());
        let Ok(Ok(permit)) = wait.await else {
            return Err(FetchError::Busy {
                timeout: pool.response_timeout,
            });
        };
        let address =
            &pool.addresses[pool.next.fetch_add(1, Ordering::Relaxed) % pool.addresses.len()];
        let uri: Result<Uri, _> = format!("http://{address}{path_and_query}").parse();
        let mut builder = Request::builder().method(method);
        if let Ok(uri) = uri {
            builder = builder.uri(uri);
        }
        let mut req = builder
            .body(body)
            .map_err(|source| FetchError::BadRequest {
                address: address.to_string(),
                source,
            })?;
        let headers = req.headers_mut();
        headers.clone_from(client_headers);
        remove_hop_by_hop(headers);
        if let Some(h) = &pool.host_header {
            headers.insert(header::HOST, h.clone());
        }
        match tokio::time::timeout(pool.response_timeout, pool.client.request(req)).await {
            Err(_) => Err(FetchError::Timeout {
                address: address.to_string(),
                timeout: pool.response_timeout,
            }),
            Ok(Err(source)) => Err(FetchError::Failed {
                address: address.to_string(),
                source,
            }),
            Ok(Ok(response)) => Ok(OriginResponse { response, permit }),
        }
    }
}
