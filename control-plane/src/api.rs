//! The HTTP API every control-plane node serves on its listener:
//!
//! - `POST /raft/{append,vote,snapshot}`: Raft RPCs from peers (cluster
//!   secret);
//! - `/v1/...`: the operator and agent API (write token for changes, read
//!   token, if configured, for reads). A write that reaches a follower is
//!   forwarded to the leader; the answer comes back the same way.
//!
//! Errors are JSON `{"error": "..."}` (plus `"errors": [...]` for a config
//! that does not validate) with the status that says why: 400 for a bad
//! body, 401 for a missing or wrong token, 404 for an unknown member or
//! version, 422 for an invalid config, 503 when there is no leader.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fanout_server::RequestBody;
use fanout_server::{full, ResponseBody};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::network::HttpClient;
use crate::state::{Command, Member, MemberState, Outcome, PurgeRule};
use crate::store::StateMachine;
use crate::{NodeId, Raft};

/// Largest request body the API reads (a cluster config is far smaller).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Marks a request one node forwarded to the leader, so it is never
/// forwarded twice.
const FORWARDED: &str = "x-fanout-forwarded";

pub struct Api {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    pub client: HttpClient,
    pub secret: String,
    pub write_token: String,
    pub read_token: Option<String>,
    /// Agents that watch through this node: the revision each has applied
    /// and when it last asked. Kept in memory, not in the Raft log: it is
    /// telemetry, and `ctl status` merges what every node saw.
    pub agents: std::sync::Mutex<std::collections::HashMap<String, (u64, SystemTime)>>,
    /// Traffic reports by member id: (requests, hits, when), as this node
    /// received them.
    pub reports: std::sync::Mutex<std::collections::HashMap<String, (u64, u64, SystemTime)>>,
}

/// What `GET /v1/watch` answers: the whole state an agent needs, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchSnapshot {
    pub revision: u64,
    pub config_version: u64,
    /// The live `kind: cluster` YAML; `None` before the first apply.
    pub config: Option<String>,
    pub members: Vec<Member>,
    pub purge_seq: u64,
    /// Purges after the watcher's `purges_after`, in order.
    pub purges: Vec<crate::state::Purge>,
    /// The watcher is behind the kept purge window: flush everything.
    pub purges_flush: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    soft: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    to: Option<u64>,
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<ResponseBody> {
    json_response(status, &json!({ "error": message.into() }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn query<'a>(req: &'a Request<RequestBody>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(req: &Request<RequestBody>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Compares in time independent of where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

enum Access {
    Raft,
    Read,
    Write,
}

impl Api {
    pub async fn handle(self: Arc<Self>, req: Request<RequestBody>) -> Response<ResponseBody> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let access = if path.starts_with("/raft/") {
            Access::Raft
        } else if method == Method::GET || method == Method::HEAD {
            Access::Read
        } else {
            Access::Write
        };
        let token = bearer(&req);
        // The status page itself carries no data; its script asks for
        // /v1/status with the token from the URL's #token= fragment.
        let page = method == Method::GET && (path == "/" || path == "/ui");
        let allowed = page
            || match access {
                Access::Raft => token.is_some_and(|t| same(t, &self.secret)),
                Access::Write => token.is_some_and(|t| same(t, &self.write_token)),
                Access::Read => match &self.read_token {
                    None => true,
                    Some(read) => {
                        token.is_some_and(|t| same(t, read) || same(t, &self.write_token))
                    }
                },
            };
        if !allowed {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.clone(), segments.as_slice()) {
            (Method::POST, ["raft", rpc]) => {
                let rpc = rpc.to_string();
                self.raft_rpc(&rpc, req).await
            }
            (Method::GET, ["v1", "status"]) => self.status(&req).await,
            (Method::GET, ["metrics"]) => fanout_server::metrics(),
            (Method::GET, ["v1", "report"]) => self.report(&req),
            (Method::GET, [""] | ["ui"]) => status_page(),
            (Method::GET, ["v1", "config"]) => self.get_config(&req),
            (Method::GET, ["v1", "members"]) => {
                let s = self.state.applied.read().unwrap_or_else(|p| p.into_inner());
                json_response(
                    StatusCode::OK,
                    &s.state.members.values().collect::<Vec<_>>(),
                )
            }
            (Method::GET, ["v1", "watch"]) => self.watch(&req).await,
            (Method::POST, ["v1", "raft", "members"])
            | (Method::DELETE, ["v1", "raft", "members", _]) => self.raft_membership(req).await,
            (Method::PUT, ["v1", "config"])
            | (Method::POST, ["v1", "config", "rollback"])
            | (Method::POST, ["v1", "members"])
            | (Method::POST, ["v1", "members", _, "drain"])
            | (Method::POST, ["v1", "members", _, "activate"])
            | (Method::POST, ["v1", "members", _, "leave"])
            | (Method::DELETE, ["v1", "members", _])
            | (Method::POST, ["v1", "purge"]) => self.write(req).await,
            (_, ["v1", ..]) | (_, ["raft", ..]) => error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {method} {path}"),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {method} {path}"),
            ),
        }
    }

    async fn body(
        req: Request<RequestBody>,
    ) -> Result<(http::request::Parts, Bytes), Response<ResponseBody>> {
        let (parts, body) = req.into_parts();
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => Ok((parts, b.to_bytes())),
            Err(e) => Err(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )),
        }
    }

    async fn raft_rpc(&self, rpc: &str, req: Request<RequestBody>) -> Response<ResponseBody> {
        let (_, body) = match Self::body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let bad = |e: serde_json::Error| error(StatusCode::BAD_REQUEST, e.to_string());
        match rpc {
            "append" => match serde_json::from_slice(&body) {
                Ok(r) => json_response(StatusCode::OK, &self.raft.append_entries(r).await),
                Err(e) => bad(e),
            },
            "vote" => match serde_json::from_slice(&body) {
                Ok(r) => json_response(StatusCode::OK, &self.raft.vote(r).await),
                Err(e) => bad(e),
            },
            "snapshot" => match serde_json::from_slice(&body) {
                Ok(r) => json_response(StatusCode::OK, &self.raft.install_snapshot(r).await),
                Err(e) => bad(e),
            },
            other => error(StatusCode::NOT_FOUND, format!("no Raft RPC {other}")),
        }
    }

    /// `GET /v1/report?agent=ID&requests=N&hits=M`: a part's traffic.
    fn report(&self, req: &Request<RequestBody>) -> Response<ResponseBody> {
        let number = |name| query(req, name).and_then(|v| v.parse::<u64>().ok());
        let (Some(agent), Some(requests), Some(hits)) =
            (query(req, "agent"), number("requests"), number("hits"))
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "give agent, requests and hits, e.g. /v1/report?agent=cache-1&requests=10&hits=9",
            );
        };
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if reports.len() < 10_000 || reports.contains_key(agent) {
            reports.insert(agent.to_string(), (requests, hits, SystemTime::now()));
        }
        json_response(StatusCode::OK, &json!({ "ok": true }))
    }

    /// `GET /v1/status`: this node's view, with the parts that watch and
    /// report to its peers merged in, so any node's status page shows the
    /// whole fleet. `?local=1` is this node's view alone (what peers ask
    /// each other for).
    async fn status(&self, req: &Request<RequestBody>) -> Response<ResponseBody> {
        let mut status = self.local_status();
        if query(req, "local").is_some() {
            return json_response(StatusCode::OK, &status);
        }
        let peers: Vec<(NodeId, String)> = {
            let m = self.raft.metrics().borrow().clone();
            let nodes = m
                .membership_config
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect();
            nodes
        };
        let auth = req.headers().get(header::AUTHORIZATION).cloned();
        let views = futures_util::future::join_all(
            peers
                .iter()
                .map(|(_, address)| self.peer_status(address, auth.clone())),
        )
        .await;
        let mut control_nodes = vec![control_node_summary(&status, true)];
        for ((id, address), view) in peers.iter().zip(views) {
            match view {
                Some(view) => {
                    merge_agents(&mut status, &view);
                    control_nodes.push(control_node_summary(&view, true));
                }
                None => control_nodes.push(json!({
                    "id": id, "address": address, "reachable": false,
                })),
            }
        }
        status["control_nodes"] = serde_json::Value::Array(control_nodes);
        json_response(StatusCode::OK, &status)
    }

    /// A peer's own view, or `None` if it does not answer within a second
    /// (a partitioned node must not hold up the page).
    async fn peer_status(
        &self,
        address: &str,
        auth: Option<HeaderValue>,
    ) -> Option<serde_json::Value> {
        let mut builder = Request::get(format!("http://{address}/v1/status?local=1"));
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let request = builder.body(Full::new(Bytes::new())).ok()?;
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            let resp = self.client.request(request).await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            serde_json::from_slice(&body).ok()
        });
        answer.await.ok().flatten()
    }

    fn local_status(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let s = self.state.applied.read().unwrap_or_else(|p| p.into_inner());
        let voters: Vec<serde_json::Value> = m
            .membership_config
            .nodes()
            .map(|(id, node)| json!({ "id": id, "address": node.addr }))
            .collect();
        let agents: Vec<serde_json::Value> = {
            let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            let ms = |at: &SystemTime| {
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            };
            let mut list: Vec<_> = agents
                .iter()
                .map(|(id, (rev, at))| {
                    let traffic = reports.get(id);
                    json!({
                        "id": id,
                        "control_node": self.id,
                        "applied_revision": rev,
                        "last_contact_unix_ms": ms(at),
                        "requests": traffic.map(|t| t.0),
                        "hits": traffic.map(|t| t.1),
                        "reported_unix_ms": traffic.map(|t| ms(&t.2)),
                    })
                })
                .collect();
            list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            list
        };
        json!({
                "agents": agents,
                "id": self.id,
                "address": m
                    .membership_config
                    .nodes()
                    .find(|(id, _)| **id == self.id)
                    .map(|(_, n)| n.addr.clone()),
                "role": format!("{:?}", m.state),
                "leader": m.current_leader,
                "term": m.current_term,
                "last_log_index": m.last_log_index,
                "applied_index": m.last_applied.map(|l| l.index),
                "snapshot_index": m.snapshot.map(|l| l.index),
                "purged_index": m.purged.map(|l| l.index),
                "members": voters,
                "revision": s.state.revision,
                "config_version": s.state.config_version,
                "purge_seq": s.state.purge_seq,
                "proxies_and_caches": s.state.members.len(),
        })
    }

    fn get_config(&self, req: &Request<RequestBody>) -> Response<ResponseBody> {
        let s = self.state.applied.read().unwrap_or_else(|p| p.into_inner());
        let version = match query(req, "version") {
            Some(v) => match v.parse::<u64>() {
                Ok(v) => v,
                Err(_) => return error(StatusCode::BAD_REQUEST, "version must be a number"),
            },
            None => s.state.config_version,
        };
        match s.state.config(version) {
            Some(c) => {
                let mut r = Response::new(full(c.yaml.clone()));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                );
                h.insert("x-fanout-config-version", HeaderValue::from(c.version));
                r
            }
            None if version == 0 => error(StatusCode::NOT_FOUND, "no config has been applied yet"),
            None => error(
                StatusCode::NOT_FOUND,
                format!("version {version} is not kept"),
            ),
        }
    }

    async fn watch(&self, req: &Request<RequestBody>) -> Response<ResponseBody> {
        let after: u64 = query(req, "after")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let purges_after: Option<u64> = query(req, "purges_after").and_then(|v| v.parse().ok());
        let wait = query(req, "timeout_ms")
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(30), Duration::from_millis)
            .min(Duration::from_secs(60));
        if let Some(agent) = query(req, "agent").filter(|a| !a.is_empty()) {
            let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: ids come from clients.
            if agents.len() < 10_000 || agents.contains_key(agent) {
                agents.insert(agent.to_string(), (after, SystemTime::now()));
            }
        }
        let mut changes = self.state.changes.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|r| *r > after)).await;
        let s = self.state.applied.read().unwrap_or_else(|p| p.into_inner());
        let st = &s.state;
        let (purges, purges_flush) = match purges_after {
            None => (Vec::new(), false),
            Some(seq) => match st.purges_after(seq) {
                Some(p) => (p, false),
                None => (Vec::new(), true),
            },
        };
        json_response(
            StatusCode::OK,
            &WatchSnapshot {
                revision: st.revision,
                config_version: st.config_version,
                config: st.live_config().map(|c| c.yaml.clone()),
                members: st.members.values().cloned().collect(),
                purge_seq: st.purge_seq,
                purges,
                purges_flush,
            },
        )
    }

    /// Turns a write request into a command, proposes it (on the leader, or
    /// by forwarding to it) and answers with its outcome.
    async fn write(&self, req: Request<RequestBody>) -> Response<ResponseBody> {
        let (parts, body) = match Self::body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return self.forward(leader, parts, body).await;
        }
        let command = match self.command(&parts, &body) {
            Ok(c) => c,
            Err(r) => return *r,
        };
        match self.raft.client_write(command).await {
            Ok(resp) => self.outcome(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                self.forward(f.leader_id, parts, body).await
            }
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not committed: {e}"),
            ),
        }
    }

    /// `POST /v1/raft/members {"id", "address"}` adds a control-plane node
    /// (first as a learner that catches up, then as a voter, through joint
    /// consensus); `DELETE /v1/raft/members/{id}` removes one.
    async fn raft_membership(&self, req: Request<RequestBody>) -> Response<ResponseBody> {
        let (parts, body) = match Self::body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return self.forward(leader, parts, body).await;
        }
        let path = parts.uri.path().trim_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').collect();
        let result = if parts.method == Method::POST {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Add {
                id: NodeId,
                address: String,
            }
            let add: Add = match serde_json::from_slice(&body) {
                Ok(a) => a,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")),
            };
            if fanout_config::HostPort::try_from(add.address.clone()).is_err() || add.id == 0 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "a control node needs a positive id and a host:port address",
                );
            }
            match self
                .raft
                .add_learner(add.id, openraft::BasicNode::new(add.address), true)
                .await
            {
                Ok(_) => {
                    let ids = std::collections::BTreeSet::from([add.id]);
                    self.raft
                        .change_membership(openraft::ChangeMembers::AddVoterIds(ids), false)
                        .await
                }
                Err(e) => Err(e),
            }
        } else {
            let Some(Ok(id)) = segments.last().map(|s| s.parse::<NodeId>()) else {
                return error(StatusCode::BAD_REQUEST, "the id must be a number");
            };
            let ids = std::collections::BTreeSet::from([id]);
            self.raft
                .change_membership(openraft::ChangeMembers::RemoveVoters(ids), false)
                .await
        };
        match result {
            Ok(resp) => {
                let voters: Vec<NodeId> = resp
                    .membership
                    .map(|m| m.voter_ids().collect())
                    .unwrap_or_default();
                json_response(StatusCode::OK, &json!({ "voters": voters }))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                self.forward(f.leader_id, parts, body).await
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                error(StatusCode::CONFLICT, e.to_string())
            }
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("membership not changed: {e}"),
            ),
        }
    }

    fn outcome(&self, outcome: Outcome) -> Response<ResponseBody> {
        match &outcome.error {
            Some(e) => error(StatusCode::NOT_FOUND, e.clone()),
            None => json_response(StatusCode::OK, &outcome),
        }
    }

    fn command(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Command, Box<Response<ResponseBody>>> {
        let path = parts.uri.path().trim_matches('/').to_string();
        let segments: Vec<&str> = path.split('/').collect();
        let bad =
            |e: serde_json::Error| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}"));
        Ok(match (parts.method.clone(), segments.as_slice()) {
            (Method::PUT, ["v1", "config"]) => {
                let text = std::str::from_utf8(body).map_err(|_| {
                    Box::new(error(StatusCode::BAD_REQUEST, "the config is not UTF-8"))
                })?;
                match fanout_config::load_str(Path::new("config"), text) {
                    Ok(fanout_config::AnyConfig::Cluster(_)) => Command::SetConfig {
                        yaml: text.to_string(),
                        time: now(),
                    },
                    Ok(other) => {
                        return Err(Box::new(error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!(
                                "this is a kind: {} file; the control plane takes kind: cluster",
                                other.kind()
                            ),
                        )))
                    }
                    Err(errors) => {
                        let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                        return Err(Box::new(json_response(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            &json!({ "error": "the config does not validate; nothing was changed", "errors": list }),
                        )));
                    }
                }
            }
            (Method::POST, ["v1", "config", "rollback"]) => {
                let req: RollbackRequest = if body.is_empty() {
                    RollbackRequest { to: None }
                } else {
                    serde_json::from_slice(body).map_err(bad)?
                };
                let to = match req.to {
                    Some(v) => v,
                    None => {
                        let s = self.state.applied.read().unwrap_or_else(|p| p.into_inner());
                        let live = s.state.config_version;
                        s.state
                            .configs
                            .iter()
                            .rev()
                            .map(|c| c.version)
                            .find(|v| *v < live)
                            .ok_or_else(|| {
                                error(StatusCode::NOT_FOUND, "no earlier version is kept")
                            })?
                    }
                };
                Command::Rollback { to, time: now() }
            }
            (Method::POST, ["v1", "members"]) => {
                let member: Member = serde_json::from_slice(body).map_err(bad)?;
                if member.id.is_empty()
                    || fanout_config::HostPort::try_from(member.address.clone()).is_err()
                {
                    return Err(Box::new(error(
                        StatusCode::BAD_REQUEST,
                        "a member needs an id and a host:port address",
                    )));
                }
                Command::UpsertMember { member }
            }
            (Method::POST, ["v1", "members", id, "drain"]) => Command::SetMemberState {
                id: id.to_string(),
                state: MemberState::Draining,
            },
            (Method::POST, ["v1", "members", id, "activate"]) => Command::SetMemberState {
                id: id.to_string(),
                state: MemberState::Active,
            },
            (Method::POST, ["v1", "members", id, "leave"]) => Command::Leave { id: id.to_string() },
            (Method::DELETE, ["v1", "members", id]) => Command::RemoveMember { id: id.to_string() },
            (Method::POST, ["v1", "purge"]) => {
                let p: PurgeRequest = serde_json::from_slice(body).map_err(bad)?;
                let rule = match (p.host, p.path, p.prefix, p.tag) {
                    (Some(host), Some(path), None, None) => PurgeRule::Url { host, path },
                    (Some(host), None, Some(prefix), None) => PurgeRule::Prefix { host, prefix },
                    (None, None, None, Some(tag)) => PurgeRule::Tag(tag),
                    _ => {
                        return Err(Box::new(error(
                            StatusCode::BAD_REQUEST,
                            "purge one of: {host, path}, {host, prefix} or {tag}",
                        )))
                    }
                };
                Command::Purge {
                    rule,
                    soft: p.soft,
                    time: now(),
                }
            }
            _ => return Err(Box::new(error(StatusCode::NOT_FOUND, "no such endpoint"))),
        })
    }

    async fn forward(
        &self,
        leader: Option<NodeId>,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Response<ResponseBody> {
        if parts.headers.contains_key(FORWARDED) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "leadership moved while forwarding; retry",
            );
        }
        let Some(leader) = leader else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no leader elected; retry shortly",
            );
        };
        let address = {
            let m = self.raft.metrics().borrow().clone();
            let found = m
                .membership_config
                .nodes()
                .find(|(id, _)| **id == leader)
                .map(|(_, n)| n.addr.clone());
            found
        };
        let Some(address) = address else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the leader's address is unknown; retry",
            );
        };
        let target = format!(
            "http://{address}{}",
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut builder = Request::builder().method(parts.method.clone()).uri(target);
        for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
            if let Some(v) = parts.headers.get(&name) {
                builder = builder.header(name, v);
            }
        }
        let Ok(request) = builder
            .header(FORWARDED, self.id.to_string())
            .body(Full::new(body))
        else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot build the forwarded request",
            );
        };
        // Short: a leader cut off by a partition never answers, and the
        // client should move on to another node, which by then knows the
        // new leader.
        match tokio::time::timeout(Duration::from_secs(3), self.client.request(request)).await {
            Ok(Ok(resp)) => {
                let (p, b) = resp.into_parts();
                Response::from_parts(p, b.map_err(Into::into).boxed_unsync())
            }
            Ok(Err(e)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("leader {leader} at {address} unreachable: {e}"),
            ),
            Err(_) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("leader {leader} at {address} did not answer"),
            ),
        }
    }
}

/// One control node's line in `control_nodes`.
fn control_node_summary(view: &serde_json::Value, reachable: bool) -> serde_json::Value {
    json!({
        "id": view["id"],
        "address": view["address"],
        "reachable": reachable,
        "role": view["role"],
        "leader": view["leader"],
        "term": view["term"],
        "applied_index": view["applied_index"],
        "revision": view["revision"],
    })
}

/// Adds a peer's agents to `into`: an agent seen by both keeps the newer
/// watch contact and, separately, the newer traffic report (a part watches
/// one node but may report to another after a failover).
fn merge_agents(into: &mut serde_json::Value, peer: &serde_json::Value) {
    let (Some(mine), Some(theirs)) = (into["agents"].as_array_mut(), peer["agents"].as_array())
    else {
        return;
    };
    let newer = |a: &serde_json::Value, b: &serde_json::Value, field: &str| {
        b[field].as_u64().unwrap_or(0) > a[field].as_u64().unwrap_or(0)
    };
    for agent in theirs {
        match mine.iter_mut().find(|m| m["id"] == agent["id"]) {
            None => mine.push(agent.clone()),
            Some(m) => {
                if newer(m, agent, "last_contact_unix_ms") {
                    for field in ["control_node", "applied_revision", "last_contact_unix_ms"] {
                        m[field] = agent[field].clone();
                    }
                }
                if newer(m, agent, "reported_unix_ms") {
                    for field in ["requests", "hits", "reported_unix_ms"] {
                        m[field] = agent[field].clone();
                    }
                }
            }
        }
    }
    mine.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
}

/// The status page: plain HTML, CSS and JavaScript from the binary, which
/// polls `/v1/status` once a second.
fn status_page() -> Response<ResponseBody> {
    let mut r = Response::new(full(STATUS_PAGE));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const STATUS_PAGE: &str = include_str!("status.html");
