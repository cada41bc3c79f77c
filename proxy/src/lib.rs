//! Fanout's edge proxy: it matches each request to a site, computes its
//! cache key, answers the objects every viewer wants from its hot tier, and
//! forwards the rest to the cache node that owns the key on a
//! consistent-hash ring with bounded loads.
//!
//! Owns: the hot tier ([`hot_tier`], filled by `hot_fill`: a small cache of
//! what the cache nodes answered as fresh, kept no longer than they say),
//! the ring ([`ring`]) and the choice of node under the load bound
//! ([`balance`]), node health (active probes and passive ejection), retries
//! within a budget, failing open to the origin, edge TLS with certificates
//! by SNI, and the configuration snapshot that hot reload swaps whole
//! through `ArcSwap` so lookups take no lock. Nothing in it must survive a
//! restart. Public surface: [`run`], the ring and the balancer (for
//! benchmarks).

mod access_log;
mod admission;
pub mod balance;
mod control;
mod forward;
mod health;
mod hot_fill;
pub mod hot_tier;
mod node_client;
mod reload;
mod retry_budget;
/// The ring, shared with the cache nodes (which prefetch by it).
pub use fanout_config::ring;
mod snapshot;
mod tracked_body;

pub use health::Health;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_config::ProxyConfig;
use fanout_server::in_process::InProcess;
use fanout_server::tls::{SniCertificates, SniResolver, TlsError};
use fanout_server::{bind, serve, serve_admin, AdminRoutes, Readiness, ServeOptions};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("proxy {proxy}")]
    Listen {
        proxy: String,
        source: std::io::Error,
    },
    #[error("proxy {proxy}: edge TLS")]
    Tls { proxy: String, source: TlsError },
    #[error("proxy {proxy}: control plane: {message}")]
    Control { proxy: String, message: String },
    #[error("proxy {proxy}: admin token file {}", file.display())]
    Token {
        proxy: String,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("proxy {proxy}")]
    Origins {
        proxy: String,
        source: fanout_server::origin::OriginSetupError,
    },
}

/// `fanout_proxy_cache_node_up{proxy,node}`: 1 while this proxy sends the
/// node requests, 0 while its health holds the node out (of the current
/// configuration's nodes).
fn export_node_health(proxy: &str, routing: Arc<ArcSwap<snapshot::Snapshot>>) {
    let proxy = opentelemetry::KeyValue::new("proxy", proxy.to_string());
    opentelemetry::global::meter("fanout-proxy")
        .u64_observable_gauge("fanout_proxy_cache_node_up")
        .with_description(
            "Whether this proxy is sending the cache node requests (1) or holding it out (0)",
        )
        .with_callback(move |o| {
            let snapshot = routing.load();
            let now = std::time::Instant::now();
            for (i, node) in snapshot.node_attrs.iter().enumerate() {
                o.observe(
                    snapshot.health.is_up(i, now) as u64,
                    &[proxy.clone(), node.clone()],
                );
            }
        })
        .build();
}

fn serve_options(config: &ProxyConfig) -> ServeOptions {
    let l = &config.edge.limits;
    ServeOptions {
        max_connections: l.max_connections as usize,
        header_read_timeout: l.header_read_timeout.get(),
        idle_timeout: l.idle_timeout.get(),
        drain_timeout: l.drain_timeout.get(),
        max_header_bytes: l.max_header_size.bytes() as usize,
        max_body_bytes: l.max_body_size.bytes(),
        tls: None,
        send_buffer: None,
    }
}

/// Serves as a proxy until `shutdown` is cancelled, then drains. With a
/// `source` file, reloads it on SIGHUP and when it changes.
pub async fn run(
    mut config: ProxyConfig,
    source: Option<PathBuf>,
    shutdown: CancellationToken,
    in_process: Option<InProcess>,
) -> Result<(), Error> {
    let id = config.id.clone();
    let control_err = |message| Error::Control {
        proxy: id.clone(),
        message,
    };
    let follow = match config.control.clone() {
        Some(c) => {
            let agent = control::agent(&config, &c).map_err(control_err)?;
            let state = control::initial(&mut config, &agent)
                .await
                .map_err(control_err)?;
            Some((agent, state))
        }
        None => None,
    };
    let listen_err = |source| Error::Listen {
        proxy: id.clone(),
        source,
    };
    let tls = match &config.edge.tls {
        Some(tls) => {
            let certificates =
                SniCertificates::load(&reload::cert_specs(tls)).map_err(|source| Error::Tls {
                    proxy: id.clone(),
                    source,
                })?;
            Some((tls.listen, SniResolver::new(certificates)))
        }
        None => None,
    };
    let options = serve_options(&config);
    let snapshot =
        snapshot::Snapshot::build(config.clone(), None).map_err(|source| Error::Origins {
            proxy: id.clone(),
            source,
        })?;
    let routing = Arc::new(ArcSwap::from_pointee(snapshot));
    let apply_lock = Arc::new(std::sync::Mutex::new(()));
    let hot = hot_tier::HotTier::new(&id, &config.edge.hot_tier);
    let token: Option<Arc<str>> = match &config.admin_token_file {
        Some(f) => Some(
            fanout_http_cache::purge::read_token(f)
                .map_err(|source| Error::Token {
                    proxy: id.clone(),
                    file: f.clone(),
                    source,
                })?
                .into(),
        ),
        None => None,
    };
    let traffic = Arc::new(fanout_control_plane::agent::Traffic::default());
    let stop = fanout_control_plane::agent::stop_after_leaving(
        follow.as_ref().map(|(agent, _)| agent.clone()),
        &shutdown,
    );
    let follower = follow.map(|(agent, state)| {
        tokio::spawn({
            let (agent, traffic, shutdown) = (agent.clone(), traffic.clone(), shutdown.clone());
            async move { agent.report(traffic, shutdown).await }
        });
        tokio::spawn(control::follow(
            agent,
            state,
            routing.clone(),
            apply_lock.clone(),
            hot.clone(),
            shutdown.clone(),
        ))
    });
    let readiness = Readiness::default();
    let admin = match config.admin_listen {
        Some(addr) => {
            let (status, hot) = (routing.clone(), hot.clone());
            let routes: AdminRoutes = Arc::new(move |req| {
                let (status, hot, token) = (status.clone(), hot.clone(), token.clone());
                Box::pin(async move {
                    admin_route(req, &status, hot.as_deref(), token.as_deref()).await
                })
            });
            Some(
                serve_admin(
                    &format!("proxy {id}"),
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
    let tls_listener = match &tls {
        Some((addr, _)) => Some(bind("TLS listener", *addr).await.map_err(listen_err)?),
        None => None,
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        .build(connector);
    // Shorter than a cache node's 60 s keep-alive, so the proxy is usually
    // the one to close an idle connection rather than find it closed.
    let nodes = node_client::NodeClient::new(Duration::from_secs(1), Duration::from_secs(45));
    let prober = tokio::spawn(health::probe(
        routing.clone(),
        health::Ejections::new(&id),
        in_process.clone(),
        shutdown.clone(),
    ));
    export_node_health(&id, routing.clone());
    let reloader = source.map(|source| {
        let r = reload::Reloader::new(
            source,
            routing.clone(),
            apply_lock.clone(),
            tls.as_ref().map(|t| t.1.clone()),
            hot.clone(),
        );
        tokio::spawn(r.run(shutdown.clone()))
    });
    let proxy = Arc::new(forward::Proxy {
        routing,
        hot,
        client,
        nodes,
        in_process,
        metrics: forward::Metrics::new(&id),
        access_log: access_log::AccessLog::new(config.edge.access_log),
        traffic,
        admission: admission::Admission::new(&id, &config.edge.overload, &shutdown),
    });
    tracing::info!(proxy = %id, listen = %config.listen, tls_listen = ?tls.as_ref().map(|t| t.0), cache_nodes = config.cache_nodes.len(), "proxy serving");
    readiness.set(true);
    let https = match (tls_listener, tls) {
        (Some(listener), Some((_, resolver))) => {
            let proxy = proxy.clone();
            let options = ServeOptions {
                tls: Some(SniResolver::server_config(&resolver)),
                ..options.clone()
            };
            Some(tokio::spawn(serve(
                listener,
                move |req, conn| proxy.clone().handle(req, conn),
                stop.clone(),
                options,
            )))
        }
        _ => None,
    };
    serve(
        listener,
        move |req, conn| proxy.clone().handle(req, conn),
        stop,
        options,
    )
    .await;
    if let Some(https) = https {
        let _ = https.await;
    }
    let _ = prober.await;
    if let Some(f) = follower {
        let _ = f.await;
    }
    if let Some(r) = reloader {
        let _ = r.await;
    }
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    tracing::info!(proxy = %id, "proxy stopped");
    Ok(())
}

/// The proxy's own admin routes: `GET /status`, the ring and each node's
/// health and load as JSON; `POST /purge`, the hot tier's purge (as a
/// cache node's, with the same bearer token).
async fn admin_route(
    req: http::Request<fanout_server::RequestBody>,
    routing: &ArcSwap<snapshot::Snapshot>,
    hot: Option<&hot_tier::HotTier>,
    token: Option<&str>,
) -> http::Response<fanout_server::ResponseBody> {
    use http::StatusCode;
    if req.uri().path() == "/purge" {
        let Some(hot) = hot else {
            return fanout_server::text(
                StatusCode::NOT_FOUND,
                "this proxy has no hot tier (hot_tier.capacity is 0)\n",
            );
        };
        let sites = routing.load();
        return fanout_http_cache::purge::handle(req, token, |selector, soft| {
            hot.purge(&sites.sites, selector, soft)
        })
        .await;
    }
    if req.uri().path() != "/status" {
        return fanout_server::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return fanout_server::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let body = serde_json::to_vec_pretty(&routing.load().status()).unwrap_or_default();
    let mut r = http::Response::new(fanout_server::full(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
