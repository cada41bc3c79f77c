//! Fills from a peer: the cache node that owns a key on the ring.
//!
//! When bounded loads spill a hot key from its owner to the next node, the
//! proxy names the owner in `fanout-fill-from`; on a miss this node fills
//! from that peer instead of the origin, and the peer collapses it with
//! its own requests for the key, so a crowd spread over several nodes
//! still costs the origin one request per object.
//!
//! Only nodes this one knows as peers (its `up` file, its `cache` file's
//! `peers`, or the control plane's membership) are asked, by id: a request
//! cannot point a node at an address of its choosing. The peer's answer is
//! taken as an origin's would be (its `Cache-Control` and `Age` decide
//! freshness here); if the peer cannot be reached, the fill goes to the
//! origin after all.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_config::{CacheNodeRef, HostPort};
use fanout_server::in_process::InProcess;
use fanout_server::{empty, ResponseBody};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub struct Peers {
    nodes: ArcSwap<Vec<CacheNodeRef>>,
    client: Client<HttpConnector, ResponseBody>,
    in_process: Option<InProcess>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("peer {0}: {1}")]
    Failed(String, String),
}

impl Peers {
    pub fn new(nodes: &[CacheNodeRef], in_process: Option<InProcess>) -> Arc<Peers> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        Arc::new(Peers {
            nodes: ArcSwap::from_pointee(nodes.to_vec()),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            in_process,
        })
    }

    /// Replaces the known peers (a membership change).
    pub fn set(&self, nodes: &[CacheNodeRef]) {
        if **self.nodes.load() != nodes {
            self.nodes.store(Arc::new(nodes.to_vec()));
        }
    }

    /// The address of the peer named `id`, if it is one.
    pub fn address(&self, id: &str) -> Option<HostPort> {
        self.nodes
            .load()
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.address.clone())
    }

    /// GETs `path_and_query` from the peer at `address` with `headers`
    /// (the fill's, which carry Host), waiting at most `timeout` for the
    /// response head.
    pub async fn fetch(
        &self,
        id: &str,
        address: &HostPort,
        path_and_query: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, PeerError> {
        let failed = |e: String| PeerError::Failed(id.to_string(), e);
        let local = self.in_process.as_ref().and_then(|l| l.find(address));
        let answer = async {
            if let Some(handler) = local {
                let mut req = Request::new(empty());
                *req.uri_mut() = path_and_query
                    .parse::<Uri>()
                    .map_err(|e| failed(e.to_string()))?;
                *req.headers_mut() = headers.clone();
                return Ok(handler(req).await);
            }
            let uri = format!("http://{address}{path_and_query}")
                .parse::<Uri>()
                .map_err(|e| failed(e.to_string()))?;
            let mut req = Request::new(empty());
            *req.method_mut() = Method::GET;
            *req.uri_mut() = uri;
            *req.headers_mut() = headers.clone();
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| failed(e.to_string()))?;
            Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
        };
        tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| PeerError::Timeout(id.to_string(), timeout))?
    }
}
