//! Fanout's edge proxy: stateless, it matches each request to a site,
//! computes its cache key and forwards it to the cache node that owns the
//! key on a consistent-hash ring.
//!
//! Owns: the ring ([`ring`]), routing state swapped whole through `ArcSwap`
//! so lookups take no lock, and forwarding with streamed bodies. Public
//! surface: [`run`] and the ring.
//!
//! Today: a static node list from the config, HTTP/1.1 and h2c, and
//! passive health: a node that fails is skipped with back-off, and a GET or
//! HEAD that fails before an answer is retried once on the next node of the
//! ring. Active probes, bounded loads, a retry budget, fail-open to the
//! origin, TLS and hot reload come next.

mod forward;
mod health;
pub mod ring;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_config::{ProxyConfig, SiteTable};
use fanout_server::{bind, serve, serve_admin, Readiness, ServeOptions};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("proxy {proxy}")]
pub struct Error {
    proxy: String,
    source: std::io::Error,
}

/// `fanout_proxy_cache_node_up{proxy,node}`: 1 while this proxy sends the
/// node requests, 0 while its health holds the node out.
fn export_node_health(
    proxy: &str,
    nodes: &[fanout_config::CacheNodeRef],
    health: Arc<health::Health>,
) {
    let attrs: Vec<[opentelemetry::KeyValue; 2]> = nodes
        .iter()
        .map(|n| {
            [
                opentelemetry::KeyValue::new("proxy", proxy.to_string()),
                opentelemetry::KeyValue::new("node", n.id.clone()),
            ]
        })
        .collect();
    opentelemetry::global::meter("fanout-proxy")
        .u64_observable_gauge("fanout_proxy_cache_node_up")
        .with_description(
            "Whether this proxy is sending the cache node requests (1) or holding it out (0)",
        )
        .with_callback(move |o| {
            let now = std::time::Instant::now();
            for (i, attrs) in attrs.iter().enumerate() {
                o.observe(health.is_up(i, now) as u64, attrs);
            }
        })
        .build();
}

/// Serves as a proxy until `shutdown` is cancelled, then drains.
pub async fn run(config: ProxyConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let id = config.id.clone();
    let err = |source| Error {
        proxy: id.clone(),
        source,
    };
    let readiness = Readiness::default();
    let admin = match config.admin_listen {
        Some(addr) => Some(
            serve_admin(
                &format!("proxy {id}"),
                addr,
                readiness.clone(),
                shutdown.clone(),
                None,
            )
            .await
            .map_err(err)?,
        ),
        None => None,
    };
    let listener = bind("listener", config.listen).await.map_err(err)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(connector);
    // A cache node answers within the slowest origin's budget; past that it
    // is stuck, not slow.
    let upstream_timeout = config
        .cluster
        .sites
        .iter()
        .map(|s| s.origin.connect_timeout.get() + s.origin.response_timeout.get())
        .max()
        .unwrap_or(Duration::from_secs(10))
        + Duration::from_secs(1);
    let health = Arc::new(health::Health::new(config.cache_nodes.len()));
    let prober = tokio::spawn(health::probe(
        health.clone(),
        config.cache_nodes.clone(),
        config.cluster.health.clone(),
        shutdown.clone(),
    ));
    export_node_health(&id, &config.cache_nodes, health.clone());
    let proxy = Arc::new(forward::Proxy {
        routing: ArcSwap::from_pointee(forward::Routing {
            sites: SiteTable::new(&config.cluster),
            ring: ring::Ring::new(&config.cache_nodes, config.cluster.hashing.vnodes),
            health,
        }),
        client,
        upstream_timeout,
        metrics: forward::Metrics::new(&id),
    });
    tracing::info!(proxy = %id, listen = %config.listen, cache_nodes = config.cache_nodes.len(), "proxy serving");
    readiness.set(true);
    serve(
        listener,
        move |req, conn| proxy.clone().handle(req, conn),
        shutdown,
        ServeOptions::default(),
    )
    .await;
    let _ = prober.await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!(proxy = %id, "proxy stopped");
    Ok(())
}
