//! Fanout's control plane: a small Raft group (openraft, log and vote in
//! redb with fsync) that owns the cluster config and its versions, the
//! membership of proxies and cache nodes, and the purge log, and serves
//! them over HTTP to operators (`fanout ctl`) and to agents that watch.
//!
//! Owns: the replicated [`state`], durable Raft [`store`]age, Raft RPCs
//! between members ([`network`]), and the HTTP API ([`api`]). Does not
//! own: what a config means (the `config` crate validates it) or how a
//! proxy applies it.

pub mod agent;
pub mod api;
pub mod client;
pub mod network;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fanout_config::ControlConfig;
use fanout_server::{bind, serve, serve_admin, Readiness, ServeOptions};
use openraft::BasicNode;
use tokio_util::sync::CancellationToken;

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of the control plane: commands in, outcomes out.
    pub TypeConfig:
        D = state::Command,
        R = state::Outcome,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control node {id}: {what} {}: {source}", file.display())]
    File {
        id: u64,
        what: &'static str,
        file: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("control node {id}: data dir {}: {source}", dir.display())]
    Store {
        id: u64,
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("control node {id}: {source}")]
    Raft { id: u64, source: anyhow::Error },
    #[error("control node {id}: {source}")]
    Listen { id: u64, source: std::io::Error },
}

/// Reads a secret or token: the file's content without surrounding space.
fn read_secret(id: u64, what: &'static str, file: &std::path::Path) -> Result<String, Error> {
    let err = |source| Error::File {
        id,
        what,
        file: file.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(file).map_err(err)?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        )));
    }
    Ok(text)
}

/// Raft timing: a leader is suspected dead after 0.5 to 1 s without a
/// heartbeat. Shorter timeouts fail over faster but cause needless
/// elections on a loaded machine; the control plane is not on the data
/// path, so a second of failover costs nothing a viewer sees.
pub const ELECTION_TIMEOUT_MS: (u64, u64) = (500, 1000);

fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "fanout".into(),
        heartbeat_interval: 100,
        election_timeout_min: ELECTION_TIMEOUT_MS.0,
        election_timeout_max: ELECTION_TIMEOUT_MS.1,
        // Snapshot often enough that a restart replays little.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
}

/// Runs one control-plane node until `shutdown`.
pub async fn run(config: ControlConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let id = config.id;
    let secret = read_secret(id, "cluster secret file", &config.cluster_secret_file)?;
    let write_token = read_secret(id, "write token file", &config.write_token_file)?;
    let read_token = match &config.read_token_file {
        Some(f) => Some(read_secret(id, "read token file", f)?),
        None => None,
    };
    let db = store::open(&config.data_dir).map_err(|source| Error::Store {
        id,
        dir: config.data_dir.clone(),
        source,
    })?;
    let raft_err = |e: anyhow::Error| Error::Raft { id, source: e };
    let state_machine =
        store::StateMachine::load(db.clone()).map_err(|e| raft_err(anyhow::anyhow!(e)))?;
    let raft_config = Arc::new(
        raft_config()
            .validate()
            .map_err(|e| raft_err(anyhow::anyhow!(e)))?,
    );
    let client = network::http_client();
    let net = network::Network {
        client: client.clone(),
        secret: secret.clone(),
    };
    let raft = Raft::new(
        id,
        raft_config,
        net,
        store::LogStore::new(db),
        state_machine.clone(),
    )
    .await
    .map_err(|e| raft_err(anyhow::anyhow!(e)))?;
    let listener = bind("control API", config.listen)
        .await
        .map_err(|source| Error::Listen { id, source })?;
    // The admin listener: /healthz while the process runs, /readyz while
    // this node knows a leader (it can commit or forward writes), /metrics.
    let readiness = Readiness::default();
    let admin = match config.admin_listen {
        Some(addr) => Some(
            serve_admin(
                &format!("control node {id}"),
                addr,
                readiness.clone(),
                shutdown.clone(),
                None,
            )
            .await
            .map_err(|source| Error::Listen { id, source })?,
        ),
        None => None,
    };
    tokio::spawn({
        let mut metrics = raft.metrics();
        async move {
            loop {
                readiness.set(metrics.borrow().current_leader.is_some());
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        }
    });
    // Every node of a new group proposes the same initial membership; the
    // first to win an election makes it the group's. A node that already
    // has a log (a restart, or one the leader reached first) skips this, and
    // so does a node with `join: true`: it waits to be added to a running
    // group (`fanout ctl raft add`).
    if !config.join
        && !raft
            .is_initialized()
            .await
            .map_err(|e| raft_err(anyhow::anyhow!(e)))?
    {
        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|p| (p.id, BasicNode::new(p.address.to_string())))
            .collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "initialize skipped");
        }
    }
    observe(id, &raft, &state_machine);
    let api = Arc::new(api::Api {
        id,
        raft: raft.clone(),
        state: state_machine,
        client,
        secret,
        write_token,
        read_token,
        agents: Default::default(),
        reports: Default::default(),
    });
    tracing::info!(id, listen = %config.listen, peers = config.peers.len(), "control node serving");
    serve(
        listener,
        move |req, _conn| api.clone().handle(req),
        shutdown,
        ServeOptions {
            drain_timeout: Duration::from_secs(2),
            ..ServeOptions::default()
        },
    )
    .await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    let _ = raft.shutdown().await;
    tracing::info!(id, "control node stopped");
    Ok(())
}

/// On the leader, the highest log index that a majority of each voter
/// configuration in force (two during a joint change) holds; `None`
/// elsewhere.
fn committed_index(
    id: NodeId,
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
) -> Option<u64> {
    let replication = m.replication.as_ref()?;
    let matched = |voter: &NodeId| {
        if *voter == id {
            m.last_log_index.unwrap_or(0)
        } else {
            replication
                .get(voter)
                .copied()
                .flatten()
                .map_or(0, |l| l.index)
        }
    };
    m.membership_config
        .membership()
        .get_joint_config()
        .iter()
        .map(|voters| {
            let mut held: Vec<u64> = voters.iter().map(matched).collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            held.get(voters.len() / 2).copied().unwrap_or(0)
        })
        .min()
}

/// Raft and state gauges for `/metrics`, read when scraped.
fn observe(id: NodeId, raft: &Raft, state: &store::StateMachine) {
    let meter = opentelemetry::global::meter("fanout-control-plane");
    let node = [opentelemetry::KeyValue::new("control_node", id.to_string())];
    let gauge =
        |name: &'static str, what: &'static str, read: Box<dyn Fn() -> u64 + Send + Sync>| {
            let attrs = node.clone();
            meter
                .u64_observable_gauge(name)
                .with_description(what)
                .with_callback(move |o| o.observe(read(), &attrs))
                .build();
        };
    let m = raft.metrics();
    gauge(
        "fanout_control_raft_term",
        "Current Raft term",
        Box::new(move || m.borrow().current_term),
    );
    let m = raft.metrics();
    gauge(
        "fanout_control_raft_leader",
        "Id of the leader this node knows (0: none)",
        Box::new(move || m.borrow().current_leader.unwrap_or(0)),
    );
    let m = raft.metrics();
    gauge(
        "fanout_control_raft_is_leader",
        "1 on the leader, 0 elsewhere",
        Box::new(move || u64::from(m.borrow().current_leader == Some(id))),
    );
    let m = raft.metrics();
    gauge(
        "fanout_control_raft_last_log_index",
        "Index of the last entry in this node's log",
        Box::new(move || m.borrow().last_log_index.unwrap_or(0)),
    );
    let m = raft.metrics();
    gauge(
        "fanout_control_raft_applied_index",
        "Index of the last entry applied to this node's state machine (committed)",
        Box::new(move || m.borrow().last_applied.map_or(0, |l| l.index)),
    );
    // The leader alone knows what each voter has: the committed index is
    // the highest a majority of every configuration in force holds, and a
    // follower's lag is how far its copy is behind the leader's log.
    let m = raft.metrics();
    let attrs = node.to_vec();
    meter
        .u64_observable_gauge("fanout_control_raft_committed_index")
        .with_description("Index a majority of the voters hold (reported by the leader only)")
        .with_callback(move |o| {
            if let Some(index) = committed_index(id, &m.borrow()) {
                o.observe(index, &attrs);
            }
        })
        .build();
    let m = raft.metrics();
    meter
        .u64_observable_gauge("fanout_control_raft_replication_lag_entries")
        .with_description(
            "Log entries each follower is behind the leader (reported by the leader only)",
        )
        .with_callback(move |o| {
            let m = m.borrow();
            let (Some(replication), Some(last)) = (&m.replication, m.last_log_index) else {
                return;
            };
            for (follower, matched) in replication {
                if *follower == id {
                    continue;
                }
                o.observe(
                    last.saturating_sub(matched.map_or(0, |l| l.index)),
                    &[
                        opentelemetry::KeyValue::new("control_node", id.to_string()),
                        opentelemetry::KeyValue::new("follower", follower.to_string()),
                    ],
                );
            }
        })
        .build();
    let s = state.clone();
    gauge(
        "fanout_control_revision",
        "Revision of the cluster state this node has applied",
        Box::new(move || {
            s.applied
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .state
                .revision
        }),
    );
    let s = state.clone();
    gauge(
        "fanout_control_config_version",
        "Cluster config version in force",
        Box::new(move || {
            s.applied
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .state
                .config_version
        }),
    );
}
