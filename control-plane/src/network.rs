//! Raft RPCs between control-plane nodes: JSON over HTTP/1.1 (hyper), to
//! `POST /raft/{append,vote,snapshot}` on the peer's listener, with the
//! cluster secret as a bearer token. The reply carries the peer's
//! `Result`, so a Raft-level refusal (a higher term) is told apart from a
//! peer that cannot be reached.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{NodeId, TypeConfig};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(500)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

#[derive(Clone)]
pub struct Network {
    pub client: HttpClient,
    pub secret: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            address: node.addr.clone(),
            client: self.client.clone(),
            secret: self.secret.clone(),
        }
    }
}

pub struct Peer {
    target: NodeId,
    address: String,
    client: HttpClient,
    secret: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = http::Request::post(format!("http://{}{path}", self.address))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.secret),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let sent = tokio::time::timeout(option.hard_ttl(), async {
            let resp =
                self.client.request(request).await.map_err(|e| {
                    RPCError::Unreachable(Unreachable::new(&Failure(e.to_string())))
                })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?
                .to_bytes();
            if !status.is_success() {
                let why = format!(
                    "peer {} answered {status}: {}",
                    self.target,
                    String::from_utf8_lossy(&bytes).trim()
                );
                return Err(RPCError::Unreachable(Unreachable::new(&Failure(why))));
            }
            Ok(bytes)
        })
        .await;
        let bytes = match sent {
            Ok(r) => r?,
            Err(_) => {
                let why = format!(
                    "peer {} did not answer in {:?}",
                    self.target,
                    option.hard_ttl()
                );
                return Err(RPCError::Unreachable(Unreachable::new(&Failure(why))));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}
