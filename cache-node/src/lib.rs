//! Fanout's cache node: an HTTP cache in front of the origins of every site
//! in the cluster config.
//!
//! Owns: fetching from origins (or, for a key the proxies spilled to it,
//! from the key's owning node: [`peer`]), what it does with each request
//! (answer from the store, join or lead a fill, revalidate, pass), and the
//! `Cache-Status` / `Age` it reports. The rules it follows and the store
//! itself are `fanout_http_cache`'s, shared with the proxies' hot tier.
//! Public surface: [`run`].
//!
//! Concurrent misses for one key collapse into one origin fetch whose body
//! streams to every waiter as it arrives; responses that may not be shared
//! go to each client alone (hit-for-pass).
//!
//! Stale copies are revalidated with the origin and served while that runs
//! or when it fails (RFC 5861), responses that vary are stored per variant,
//! ranges and conditionals are answered from the store, large objects may
//! be fetched and stored in slices ([`slices`]), the origin's 103 Early
//! Hints reach the requests waiting on a fill, and purges (by URL, prefix
//! or surrogate key) come through the admin listener or the control plane. Responses this node cannot serve correctly are passed through
//! unstored rather than served wrong.

mod control;
mod fill;
mod handler;
mod ll_hls;
mod metrics;
mod peer;
mod prefetch;
mod slices;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use fanout_config::{CacheNodeConfig, SiteTable};
use fanout_http_cache::purge::read_token;
use fanout_http_cache::Tier;
use fanout_server::in_process::InProcess;
use fanout_server::{bind, serve, serve_admin, AdminRoutes, Readiness, ServeOptions};
use tokio_util::sync::CancellationToken;

pub use fanout_server::origin::OriginSetupError;
pub use handler::HEALTH_PATH;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cache node {node}: admin token file {}", file.display())]
    Token {
        node: String,
        file: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cache node {node}")]
    Listen {
        node: String,
        source: std::io::Error,
    },
    #[error("cache node {node}: control plane: {message}")]
    Control { node: String, message: String },
    #[error("cache node {node}")]
    Origin {
        node: String,
        source: OriginSetupError,
    },
}

/// Serves as a cache node until `shutdown` is cancelled, then drains.
/// With `in_process`, components of this process (proxies started by
/// `fanout up`) reach it through that registry rather than its socket.
pub async fn run(
    mut config: CacheNodeConfig,
    shutdown: CancellationToken,
    in_process: Option<InProcess>,
) -> Result<(), Error> {
    let node = config.id.clone();
    let follow = match config.control.clone() {
        Some(source) => {
            let control_err = |message| Error::Control {
                node: node.clone(),
                message,
            };
            let agent = control::agent(&config, &source).map_err(control_err)?;
            let state = control::initial(&mut config, &agent)
                .await
                .map_err(control_err)?;
            Some((agent, state))
        }
        None => None,
    };
    let listen_err = |source| Error::Listen {
        node: node.clone(),
        source,
    };
    let token = match &config.admin_token_file {
        Some(f) => Some(read_token(f).map_err(|source| Error::Token {
            node: node.clone(),
            file: f.clone(),
            source,
        })?),
        None => None,
    };
    let tier = Arc::new(Tier::new(fanout_http_cache::store::Store::new(
        config.capacity.bytes(),
    )));
    let sites = Arc::new(ArcSwap::from_pointee(SiteTable::new(&config.cluster)));
    let readiness = Readiness::default();
    let token: Option<Arc<str>> = token.map(Arc::from);
    let admin = match config.admin_listen {
        Some(addr) => {
            let (tier, sites) = (tier.clone(), sites.clone());
            let routes: AdminRoutes = Arc::new(move |req| {
                let (tier, sites, token) = (tier.clone(), sites.clone(), token.clone());
                Box::pin(async move {
                    fanout_http_cache::purge::handle(req, token.as_deref(), |selector, soft| {
                        tier.purge(&sites.load(), selector, soft)
                    })
                    .await
                })
            });
            let what = format!("cache node {node}");
            Some(
                serve_admin(
                    &what,
                    addr,
                    readiness.clone(),
                    shutdown.clone(),
                    Some(routes),
                )
                .await
                .map_err(listen_err)?,
            )
        }
        None => None,
    };
    let listener = bind("listener", config.listen).await.map_err(listen_err)?;
    let origins = fanout_server::origin::Origins::new(&config.cluster, config.max_origin_fetches)
        .map_err(|source| Error::Origin {
        node: node.clone(),
        source,
    })?;
    let metrics = metrics::Metrics::new(&node, &tier.store);
    let prefetch = Arc::new(prefetch::Prefetcher::new(Arc::new(
        metrics.prefetch_wasted(),
    )));
    prefetch.set_members(
        &ring_members(&config.peers, &node, &config.listen),
        config.cluster.hashing.vnodes,
    );
    let state = Arc::new(handler::CacheNode {
        name: format!("fanout-{node}"),
        id: node.clone(),
        sites,
        metrics,
        tier,
        origins: ArcSwap::from_pointee(origins),
        hit_for_pass: handler::hit_for_pass_marks(),
        purge_seq: Arc::new(AtomicU64::new(0)),
        peers: peer::Peers::new(&config.peers, in_process.clone()),
        prefetch,
        reloads: Default::default(),
        anomalies_logged: handler::anomaly_log_marks(),
    });
    let state_for_follower = state.clone();
    let stop = fanout_control_plane::agent::stop_after_leaving(
        follow.as_ref().map(|(agent, _)| agent.clone()),
        &shutdown,
    );
    let follower = follow.map(|(agent, state)| {
        tokio::spawn({
            let (agent, traffic, shutdown) = (
                agent.clone(),
                state_for_follower.metrics.traffic(),
                shutdown.clone(),
            );
            async move { agent.report(traffic, shutdown).await }
        });
        let node_state = state_for_follower.clone();
        tokio::spawn(control::follow(
            agent,
            state,
            control::Targets {
                sites: node_state.sites.clone(),
                tier: node_state.tier.clone(),
                origins: {
                    let node_state = node_state.clone();
                    Arc::new(move |o| node_state.origins.store(Arc::new(o)))
                },
                purge_seq: node_state.purge_seq.clone(),
                peers: node_state.peers.clone(),
                prefetch: node_state.prefetch.clone(),
                max_origin_fetches: config.max_origin_fetches,
            },
            shutdown.clone(),
        ))
    });
    tracing::info!(node = %node, listen = %config.listen, capacity = %config.capacity, "cache node serving");
    let registration = in_process.map(|registry| {
        let state = state.clone();
        registry.register(
            listener.local_addr().unwrap_or(config.listen),
            Arc::new(move |req| Box::pin(state.clone().handle(req))),
        )
    });
    readiness.set(true);
    serve(
        listener,
        move |req, _| state.clone().handle(req),
        stop,
        ServeOptions {
            send_buffer: config.send_buffer.map(|s| s.bytes() as usize),
            ..ServeOptions::default()
        },
    )
    .await;
    drop(registration);
    if let Some(f) = follower {
        let _ = f.await;
    }
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!(node = %node, "cache node stopped");
    Ok(())
}

/// The cache nodes on the ring the proxies route by: the peers as the
/// proxies list them, with this node added if they leave it out.
fn ring_members(
    peers: &[fanout_config::CacheNodeRef],
    id: &str,
    listen: &std::net::SocketAddr,
) -> Vec<fanout_config::CacheNodeRef> {
    let mut members = peers.to_vec();
    if !members.iter().any(|n| n.id == id) {
        members.push(fanout_config::CacheNodeRef {
            id: id.to_string(),
            address: fanout_config::HostPort {
                host: listen.ip().to_string(),
                port: listen.port(),
            },
            weight: 1,
        });
    }
    members
}
