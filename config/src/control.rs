//! `kind: control`: one node of the control-plane Raft group.
//!
//! Only the file format lives here; the control plane that runs it is
//! built separately. Secret and token files are named, not read: the
//! process that uses them reads them, so secrets never sit in config values.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cluster::HostPort;
use crate::process::Listeners;
use crate::validate::Validator;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Raft node id: unique in the group and never reused for another node.
    pub id: u64,
    /// API and Raft RPCs.
    pub listen: SocketAddr,
    /// Admin endpoints: `/healthz` (the process runs), `/readyz` (200 while
    /// this node knows a leader) and `/metrics` (also on `listen`).
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Raft log, vote and snapshots (relative to this file).
    pub data_dir: PathBuf,
    /// Every initial member, this node included; all nodes of a new group
    /// start with the same list. With `join`, the running group's nodes
    /// (this node is not among them yet).
    pub peers: Vec<ControlPeer>,
    /// This node joins a running group: it forms no group of its own and
    /// waits to be added with `fanout ctl raft add`.
    #[serde(default)]
    pub join: bool,
    /// Shared secret that authenticates Raft RPCs between members.
    pub cluster_secret_file: PathBuf,
    /// Bearer token required for writes (apply, drain, purge).
    pub write_token_file: PathBuf,
    /// Bearer token required for reads; without it reads are open.
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlPeer {
    pub id: u64,
    pub address: HostPort,
}

impl ControlConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        if self.id == 0 {
            v.error("id", "id 0", "a positive integer, unique in the group");
        }
        let mut listeners = Listeners::default();
        listeners.add(self.listen, "listen", v);
        if let Some(a) = self.admin_listen {
            listeners.add(a, "admin_listen", v);
        }
        if self.data_dir.as_os_str().is_empty() {
            v.error(
                "data_dir",
                "empty path",
                "a directory for the Raft log, such as data/control-1",
            );
        }
        if self.peers.is_empty() {
            v.error(
                "peers",
                "no peers",
                "every initial member with id and address, this node included",
            );
        }
        let mut ids = Vec::new();
        let mut addrs = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            v.unique(&mut ids, &p.id, &format!("peers[{i}].id"), "peer id");
            v.unique(
                &mut addrs,
                &p.address,
                &format!("peers[{i}].address"),
                "peer address",
            );
        }
        let listed = self.peers.iter().any(|p| p.id == self.id);
        if !self.peers.is_empty() && !listed && !self.join {
            v.error(
                "peers",
                format!("this node (id {}) is not among the peers", self.id),
                "a list that includes this node's own id (or join: true to join a running group)",
            );
        }
        if self.join && listed {
            v.error(
                "join",
                format!("a joining node (id {}) is already among the peers", self.id),
                "peers listing the running group's nodes only",
            );
        }
        if self.peers.len() % 2 == 0 && !self.peers.is_empty() {
            v.error(
                "peers",
                format!(
                    "{} members tolerate no more failures than {}",
                    self.peers.len(),
                    self.peers.len() - 1
                ),
                "an odd number of members: 1, 3 or 5",
            );
        }
    }

    /// Resolves the relative paths of the file against its directory.
    pub(crate) fn resolve(mut self, base: &std::path::Path) -> Self {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.data_dir);
        join(&mut self.cluster_secret_file);
        join(&mut self.write_token_file);
        if let Some(p) = self.read_token_file.as_mut() {
            join(p);
        }
        self
    }
}
