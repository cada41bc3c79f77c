//! `kind: up`: a whole local cluster in one file, for `fanout up`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cluster::{ClusterConfig, HostPort};
use crate::edge::{ClientLimits, EdgeSettings, EdgeTls, FailOpen, HotTier, Overload, RetryPolicy};
use crate::origin::OriginConfig;
use crate::process::{
    default_capacity, default_max_origin_fetches, default_weight, validate_capacity, validate_id,
    validate_max_origin_fetches, validate_send_buffer, validate_weight, CacheNodeConfig,
    CacheNodeRef, Listeners, ProxyConfig,
};
use crate::units::Size;
use crate::validate::Validator;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpConfig {
    /// The synthetic origin; leave it out to put the cluster in front of a
    /// real origin named in the sites.
    #[serde(default)]
    pub origin: Option<OriginConfig>,
    pub cluster: ClusterConfig,
    pub cache_nodes: Vec<UpCacheNode>,
    pub proxies: Vec<UpProxy>,
    #[serde(default)]
    pub demo: Demo,
    /// Bearer token file for every part's admin writes (purges), relative
    /// to this file. Without it, purging is disabled.
    #[serde(default)]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Run a control plane too: the cluster config is applied to it, and
    /// proxies and cache nodes register with it and follow it.
    #[serde(default)]
    pub control_plane: Option<UpControlPlane>,
    /// Trace export and sampling for every part.
    #[serde(default)]
    pub telemetry: crate::telemetry::Telemetry,
    /// The `cluster` section as written, with `kind: cluster`: what `up`
    /// applies to its control plane.
    #[serde(skip)]
    pub cluster_yaml: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpControlPlane {
    /// Where each control node listens (1, 3 or 5 of them).
    pub nodes: Vec<SocketAddr>,
    /// Raft data, tokens and the parts' saved state (relative to this
    /// file); default: a fresh temporary directory for each run.
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpCacheNode {
    pub id: String,
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default = "default_capacity")]
    pub capacity: Size,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Origin requests this node has open at once; more wait their turn.
    #[serde(default = "default_max_origin_fetches")]
    pub max_origin_fetches: u32,
    /// A fixed `SO_SNDBUF` per client connection (see the cache file's).
    #[serde(default)]
    pub send_buffer: Option<Size>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpProxy {
    pub id: String,
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
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
}

impl UpProxy {
    // The edge fields are repeated here and in `ProxyFile` rather than
    // flattened from one struct: `#[serde(flatten)]` turns off
    // `deny_unknown_fields` and the field paths errors are reported by.
    fn edge(&self) -> EdgeSettings {
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

/// What `fanout up --demo` runs against the proxies once the cluster is up.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Demo {
    /// A `kind: scenario` file, relative to this file; default: the built-in
    /// quickstart scenario (loadtest/scenarios/quickstart.yaml). Its target
    /// is replaced by this cluster's proxies, host and origin.
    #[serde(default)]
    pub scenario: Option<PathBuf>,
    /// Host header to send; default: the first site's first exact host.
    #[serde(default)]
    pub host: Option<String>,
}

impl UpConfig {
    pub(crate) fn validate(&self, v: &mut Validator) {
        self.telemetry.validate("telemetry", v);
        self.cluster.validate("cluster", v);
        let mut listeners = Listeners::default();
        if let Some(o) = &self.origin {
            o.validate("origin", v);
            listeners.add(o.listen, "origin.listen", v);
        }
        if self.cache_nodes.is_empty() {
            v.error(
                "cache_nodes",
                "no cache nodes",
                "at least one cache node with id and listen",
            );
        }
        if self.proxies.is_empty() {
            v.error(
                "proxies",
                "no proxies",
                "at least one proxy with id and listen",
            );
        }
        let mut ids = Vec::new();
        let nodes = self
            .cache_nodes
            .iter()
            .map(|n| (&n.id, n.listen, n.admin_listen, "cache_nodes"));
        let proxies = self
            .proxies
            .iter()
            .map(|p| (&p.id, p.listen, p.admin_listen, "proxies"));
        let mut counts = std::collections::HashMap::new();
        for (id, listen, admin, list) in nodes.chain(proxies) {
            let i = counts.entry(list).or_insert(0usize);
            let p = format!("{list}[{i}]");
            *i += 1;
            validate_id(id, &format!("{p}.id"), v);
            v.unique(&mut ids, id, &format!("{p}.id"), "id");
            if listen.port() == 0 {
                v.error(
                    &format!("{p}.listen"),
                    "port 0",
                    "a fixed port: the other parts of the cluster must know where to connect",
                );
            }
            listeners.add(listen, &format!("{p}.listen"), v);
            if let Some(a) = admin {
                listeners.add(a, &format!("{p}.admin_listen"), v);
            }
        }
        if let Some(cp) = &self.control_plane {
            if !matches!(cp.nodes.len(), 1 | 3 | 5) {
                v.error(
                    "control_plane.nodes",
                    format!("{} nodes", cp.nodes.len()),
                    "1, 3 or 5 control nodes (a majority must stay up)",
                );
            }
            for (i, a) in cp.nodes.iter().enumerate() {
                let p = format!("control_plane.nodes[{i}]");
                if a.port() == 0 {
                    v.error(
                        &p,
                        "port 0",
                        "a fixed port: the parts must know where to connect",
                    );
                }
                listeners.add(*a, &p, v);
            }
        }
        for (i, p) in self.proxies.iter().enumerate() {
            let at = format!("proxies[{i}]");
            if let Some(tls) = &p.tls {
                listeners.add(tls.listen, &format!("{at}.tls.listen"), v);
            }
            p.edge().validate(&at, v);
        }
        for (i, n) in self.cache_nodes.iter().enumerate() {
            validate_capacity(n.capacity, &format!("cache_nodes[{i}].capacity"), v);
            validate_weight(n.weight, &format!("cache_nodes[{i}].weight"), v);
            validate_max_origin_fetches(
                n.max_origin_fetches,
                &format!("cache_nodes[{i}].max_origin_fetches"),
                v,
            );
            validate_send_buffer(n.send_buffer, &format!("cache_nodes[{i}].send_buffer"), v);
        }
    }

    /// The cache nodes as every proxy of this cluster addresses them.
    pub fn cache_node_refs(&self) -> Vec<CacheNodeRef> {
        self.cache_nodes
            .iter()
            .map(|n| CacheNodeRef {
                id: n.id.clone(),
                address: HostPort {
                    host: n.listen.ip().to_string(),
                    port: n.listen.port(),
                },
                weight: n.weight,
            })
            .collect()
    }

    pub fn proxy_configs(&self) -> Vec<ProxyConfig> {
        let nodes = self.cache_node_refs();
        self.proxies
            .iter()
            .map(|p| ProxyConfig {
                id: p.id.clone(),
                listen: p.listen,
                admin_listen: p.admin_listen,
                cache_nodes: nodes.clone(),
                cluster: self.cluster.clone(),
                edge: p.edge(),
                admin_token_file: self.admin_token_file.clone(),
                control: None,
                telemetry: self.telemetry.clone(),
            })
            .collect()
    }

    pub fn cache_node_configs(&self) -> Vec<CacheNodeConfig> {
        self.cache_nodes
            .iter()
            .map(|n| CacheNodeConfig {
                id: n.id.clone(),
                listen: n.listen,
                admin_listen: n.admin_listen,
                capacity: n.capacity,
                cluster: self.cluster.clone(),
                admin_token_file: self.admin_token_file.clone(),
                max_origin_fetches: n.max_origin_fetches,
                send_buffer: n.send_buffer,
                peers: self.cache_node_refs(),
                control: None,
                telemetry: self.telemetry.clone(),
            })
            .collect()
    }
}
