//! The files that start one process each: `kind: proxy` and `kind: cache`.
//! Each names the cluster file it serves; the loader resolves that into a
//! [`ProxyConfig`] or [`CacheNodeConfig`], the values the components run on.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cluster::{ClusterConfig, HostPort};
use crate::edge::{
    ClientLimits, ControlSource, EdgeSettings, EdgeTls, FailOpen, HotTier, Overload, RetryPolicy,
};
use crate::telemetry::Telemetry;
use crate::units::Size;
use crate::validate::Validator;

/// `kind: proxy` as written.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub id: String,
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Path of the cluster file, relative to this file (not with `control`).
    #[serde(default)]
    pub cluster: Option<PathBuf>,
    /// The cache nodes (not with `control`: they register there).
    #[serde(default)]
    pub cache_nodes: Vec<CacheNodeRef>,
    /// Take the cluster config and cache nodes from a control plane.
    #[serde(default)]
    pub control: Option<ControlSource>,
    /// HTTPS at the edge (a second listener).
    #[serde(default)]
    pub tls: Option<EdgeTls>,
    #[serde(default)]
    pub limits: ClientLimits,
    #[serde(default)]
    pub retries: RetryPolicy,
    #[serde(default)]
    pub fail_open: FailOpen,
    /// One JSON line per request on stdout (sites can opt out).
    #[serde(default)]
    pub access_log: bool,
    /// The objects every viewer wants, kept in the proxy.
    #[serde(default)]
    pub hot_tier: HotTier,
    /// Refusing requests, newcomers first, when asked for more than the
    /// proxy can do.
    #[serde(default)]
    pub overload: Overload,
    /// File holding the bearer token for admin writes (purges of the hot
    /// tier), relative to this file. Without it, purging is disabled.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Trace export and sampling.
    #[serde(default)]
    pub telemetry: Telemetry,
}

impl ProxyFile {
    pub(crate) fn edge(&self) -> EdgeSettings {
        EdgeSettings {
            tls: self.tls.clone(),
            limits: self.limits.clone(),
            retries: self.retries.clone(),
            fail_open: self.fail_open.clone(),
            access_log: self.access_log,
            hot_tier: self.hot_tier.clone(),
            overload: self.overload.clone(),
        }
    }
}

/// A cache node as a proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheNodeRef {
    pub id: String,
    pub address: HostPort,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

pub(crate) fn default_weight() -> u32 {
    1
}

/// `kind: cache` as written.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheNodeFile {
    pub id: String,
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Bytes of response bodies and headers the node keeps in memory.
    #[serde(default = "default_capacity")]
    pub capacity: Size,
    /// Path of the cluster file, relative to this file (not with `control`).
    #[serde(default)]
    pub cluster: Option<PathBuf>,
    /// Take the cluster config (and purges) from a control plane.
    #[serde(default)]
    pub control: Option<ControlSource>,
    /// File holding the bearer token for admin writes (purges), relative to
    /// this file. Without it, purging is disabled.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// The other cache nodes of the cluster, as the proxies list them (not
    /// with `control`, which names them). A key the proxies spill here
    /// under load is filled from its owner among them rather than from the
    /// origin; without them it goes to the origin.
    #[serde(default)]
    pub peers: Vec<CacheNodeRef>,
    /// Origin requests this node has open at once; more wait their turn.
    #[serde(default = "default_max_origin_fetches")]
    pub max_origin_fetches: u32,
    /// A fixed send buffer for every client connection (`SO_SNDBUF`).
    /// Unset, connections whose handshake took at most 1 ms get 256 KiB
    /// and the rest the kernel's autotuning (see `validate_send_buffer`).
    #[serde(default)]
    pub send_buffer: Option<Size>,
    /// Trace export and sampling.
    #[serde(default)]
    pub telemetry: Telemetry,
}

pub(crate) fn default_max_origin_fetches() -> u32 {
    1024
}

pub(crate) fn validate_max_origin_fetches(n: u32, path: &str, v: &mut Validator) {
    if n == 0 || n > 100_000 {
        v.error(
            path,
            format!("{n} is out of range"),
            "1 to 100000 concurrent origin requests (default 1024)",
        );
    }
}

/// Where a fixed send buffer makes sense: from a few segments to what the
/// kernel allows by default (`net.core.wmem_max` caps larger requests
/// silently). The node already fixes 256 KiB on short paths by itself
/// (`fanout_server::socket_tuning`); a fixed buffer applies to every
/// client, far ones included, and caps each connection at about twice its
/// size per round trip.
pub(crate) fn validate_send_buffer(size: Option<Size>, path: &str, v: &mut Validator) {
    if let Some(size) = size {
        if !(16 * 1024..=64 * 1024 * 1024).contains(&size.bytes()) {
            v.error(
                path,
                format!("{size} is out of range"),
                "16KiB to 64MiB, or leave it out to have it chosen per connection",
            );
        }
    }
}

pub(crate) fn default_capacity() -> Size {
    Size::mib(256)
}

/// What a proxy runs on: its own settings and the cluster it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub id: String,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub cache_nodes: Vec<CacheNodeRef>,
    /// Empty (no sites) until the control plane's first answer when
    /// `control` is set.
    pub cluster: ClusterConfig,
    pub edge: EdgeSettings,
    /// Absolute (resolved) path of the admin token file.
    pub admin_token_file: Option<PathBuf>,
    pub control: Option<ControlSource>,
    pub telemetry: Telemetry,
}

/// What a cache node runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheNodeConfig {
    pub id: String,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub capacity: Size,
    pub cluster: ClusterConfig,
    /// Absolute (resolved) path of the admin token file.
    pub admin_token_file: Option<PathBuf>,
    pub max_origin_fetches: u32,
    /// `SO_SNDBUF` for client connections; `None`: chosen per connection.
    pub send_buffer: Option<Size>,
    /// The cluster's cache nodes (this one may be among them), which keys
    /// spilled here are filled from.
    pub peers: Vec<CacheNodeRef>,
    pub control: Option<ControlSource>,
    pub telemetry: Telemetry,
}

pub(crate) fn validate_id(id: &str, path: &str, v: &mut Validator) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        v.error(
            path,
            format!("invalid id {id:?}"),
            "1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
}

pub(crate) fn validate_weight(weight: u32, path: &str, v: &mut Validator) {
    if weight == 0 || weight > 1000 {
        v.error(
            path,
            format!("weight {weight} is out of range"),
            "1 to 1000 (relative share of keys; default 1)",
        );
    }
}

pub(crate) fn validate_capacity(capacity: Size, path: &str, v: &mut Validator) {
    if capacity.bytes() < 1024 * 1024 {
        v.error(
            path,
            format!("capacity {capacity} is below 1 MiB"),
            "at least 1MiB, such as 256MiB or 4GiB",
        );
    }
}

/// Every listener of one process or one `up` cluster must be distinct; an
/// unspecified address (0.0.0.0) clashes with every address on its port.
#[derive(Default)]
pub(crate) struct Listeners {
    seen: Vec<(SocketAddr, String)>,
}

impl Listeners {
    pub fn add(&mut self, addr: SocketAddr, path: &str, v: &mut Validator) {
        let clash = self.seen.iter().find(|(a, _)| {
            a.port() == addr.port()
                && addr.port() != 0
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
        });
        if let Some((a, first)) = clash {
            let first = first.clone();
            v.error(
                path,
                format!("{addr} is already used by {first} ({a})"),
                "a distinct address:port for every listener",
            );
        } else {
            self.seen.push((addr, path.to_string()));
        }
    }
}

impl ProxyFile {
    pub(crate) fn validate(&self, v: &mut Validator) {
        self.telemetry.validate("telemetry", v);
        validate_id(&self.id, "id", v);
        let mut l = Listeners::default();
        l.add(self.listen, "listen", v);
        if let Some(a) = self.admin_listen {
            l.add(a, "admin_listen", v);
        }
        if let Some(tls) = &self.tls {
            l.add(tls.listen, "tls.listen", v);
        }
        match &self.control {
            None => {
                if self.cluster.is_none() {
                    v.error(
                        "cluster",
                        "missing",
                        "the path of a kind: cluster file, or a control section",
                    );
                }
                validate_cache_refs(&self.cache_nodes, "cache_nodes", v);
            }
            Some(control) => {
                control.validate("control", v);
                if self.cluster.is_some() || !self.cache_nodes.is_empty() {
                    v.error(
                        "control",
                        "cluster and cache_nodes come from the control plane",
                        "either control, or cluster and cache_nodes",
                    );
                }
            }
        }
        self.edge().validate("", v);
    }
}

pub(crate) fn validate_cache_refs(nodes: &[CacheNodeRef], at: &str, v: &mut Validator) {
    if nodes.is_empty() {
        v.error(
            at,
            "no cache nodes",
            "at least one cache node with id and address",
        );
    }
    let mut ids = Vec::new();
    let mut addrs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let p = format!("{at}[{i}]");
        validate_id(&n.id, &format!("{p}.id"), v);
        v.unique(&mut ids, &n.id, &format!("{p}.id"), "cache node id");
        v.unique(
            &mut addrs,
            &n.address,
            &format!("{p}.address"),
            "cache node address",
        );
        validate_weight(n.weight, &format!("{p}.weight"), v);
    }
}

impl CacheNodeFile {
    pub(crate) fn validate(&self, v: &mut Validator) {
        self.telemetry.validate("telemetry", v);
        validate_id(&self.id, "id", v);
        validate_max_origin_fetches(self.max_origin_fetches, "max_origin_fetches", v);
        validate_send_buffer(self.send_buffer, "send_buffer", v);
        validate_capacity(self.capacity, "capacity", v);
        let mut l = Listeners::default();
        l.add(self.listen, "listen", v);
        if let Some(a) = self.admin_listen {
            l.add(a, "admin_listen", v);
        }
        match (&self.cluster, &self.control) {
            (None, None) => v.error(
                "cluster",
                "missing",
                "the path of a kind: cluster file, or a control section",
            ),
            (Some(_), Some(_)) => v.error(
                "control",
                "the cluster comes from the control plane",
                "either control or cluster",
            ),
            (None, Some(c)) => c.validate("control", v),
            (Some(_), None) => {}
        }
        if !self.peers.is_empty() {
            if self.control.is_some() {
                v.error(
                    "peers",
                    "the peers come from the control plane",
                    "either control or peers",
                );
            }
            validate_cache_refs(&self.peers, "peers", v);
        }
    }
}
