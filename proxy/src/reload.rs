//! Hot reload of a proxy's configuration from its file: on SIGHUP, and
//! whenever the proxy file, the cluster file or a certificate changes.
//!
//! Files are re-read every second and compared with what is running,
//! rather than watched with inotify: polling also sees a file replaced by
//! rename or a symlink swap (how Kubernetes updates a ConfigMap), costs a
//! few hundred microseconds, and needs no platform code.
//!
//! A reload is all or nothing: a file that does not validate, a
//! certificate that does not load or an origin pool that cannot be set up
//! leaves the running snapshot in place and logs why. Settings that belong
//! to listeners (addresses, limits) need a restart; a reload that changes
//! them applies the rest and says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_config::{EdgeTls, ProxyConfig};
use fanout_server::tls::{CertSpec, SniCertificates, SniResolver, TlsError};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64;

use crate::hot_tier::HotTier;
use crate::snapshot::Snapshot;

const POLL: Duration = Duration::from_secs(1);

/// The certificate specs of an edge TLS section.
pub fn cert_specs(tls: &EdgeTls) -> Vec<CertSpec> {
    tls.certificates
        .iter()
        .map(|c| CertSpec {
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
            names: c.names.iter().map(ToString::to_string).collect(),
            default: c.default,
        })
        .collect()
}

/// A digest of the certificate and key files, so a renewed certificate
/// written over the old file is noticed without a config change.
fn cert_digest(tls: Option<&EdgeTls>) -> u64 {
    let Some(tls) = tls else { return 0 };
    let mut all = Vec::new();
    for c in &tls.certificates {
        for f in [&c.cert_file, &c.key_file] {
            all.extend_from_slice(&std::fs::read(f).unwrap_or_default());
            all.push(0);
        }
    }
    xxh3_64(&all)
}

pub struct Reloader {
    pub source: PathBuf,
    pub routing: Arc<ArcSwap<Snapshot>>,
    /// Held while a new snapshot is built and stored, so the file and the
    /// control plane never overwrite each other's change.
    pub apply_lock: Arc<std::sync::Mutex<()>>,
    pub tls: Option<Arc<SniResolver>>,
    /// Emptied of the sites whose cache policy a reload changes.
    pub hot: Option<Arc<HotTier>>,
    reloads: Counter<u64>,
    proxy: KeyValue,
}

impl Reloader {
    pub fn new(
        source: PathBuf,
        routing: Arc<ArcSwap<Snapshot>>,
        apply_lock: Arc<std::sync::Mutex<()>>,
        tls: Option<Arc<SniResolver>>,
        hot: Option<Arc<HotTier>>,
    ) -> Reloader {
        let proxy = KeyValue::new("proxy", routing.load().config.id.clone());
        Reloader {
            source,
            routing,
            apply_lock,
            tls,
            hot,
            reloads: opentelemetry::global::meter("fanout-proxy")
                .u64_counter("fanout_proxy_config_reloads")
                .with_description("Configuration reloads: applied, or rejected with the running configuration kept")
                .build(),
            proxy,
        }
    }

    /// Reloads on SIGHUP and on file changes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut digest = cert_digest(self.routing.load().config.edge.tls.as_ref());
        let mut last_error = String::new();
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            match self.check(forced, &mut digest) {
                Ok(()) => last_error.clear(),
                Err(e) => {
                    // A broken file stays broken between polls; say so once.
                    if forced || e != last_error {
                        tracing::error!(file = %self.source.display(), "configuration not reloaded; still serving the previous one:\n{e}");
                        self.reloads.add(
                            1,
                            &[self.proxy.clone(), KeyValue::new("result", "rejected")],
                        );
                    }
                    last_error = e;
                }
            }
        }
    }

    /// Loads the files and applies them if anything changed (or if
    /// `forced`).
    fn check(&self, forced: bool, digest: &mut u64) -> Result<(), String> {
        let mut config = fanout_config::load_proxy(&self.source).map_err(|e| e.to_string())?;
        let _applying = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.routing.load_full();
        if config.control.is_some() {
            // The cluster and the nodes come from the control plane; the
            // file has the rest.
            config.cluster = current.config.cluster.clone();
            config.cache_nodes = current.config.cache_nodes.clone();
        }
        let new_digest = cert_digest(config.edge.tls.as_ref());
        if !forced && config == current.config && new_digest == *digest {
            return Ok(());
        }
        let certificates = match (&self.tls, &config.edge.tls) {
            (Some(_), Some(tls)) => {
                Some(SniCertificates::load(&cert_specs(tls)).map_err(|e: TlsError| e.to_string())?)
            }
            _ => None,
        };
        let next = Snapshot::build(config, Some(&current)).map_err(|e| e.to_string())?;
        warn_about_restart(&current.config, &next.config, &self.source);
        let generation = next.generation;
        let next = Arc::new(next);
        self.routing.store(next.clone());
        if let Some(hot) = &self.hot {
            hot.config_changed(&current.config.cluster, &next.config.cluster);
        }
        if let (Some(resolver), Some(certificates)) = (&self.tls, certificates) {
            resolver.replace(certificates);
        }
        *digest = new_digest;
        self.reloads
            .add(1, &[self.proxy.clone(), KeyValue::new("result", "applied")]);
        tracing::info!(file = %self.source.display(), generation, forced, "configuration reloaded");
        Ok(())
    }
}

fn warn_about_restart(old: &ProxyConfig, new: &ProxyConfig, file: &Path) {
    let listeners = |c: &ProxyConfig| {
        (
            c.listen,
            c.admin_listen,
            c.edge.tls.as_ref().map(|t| t.listen),
            c.edge.limits.clone(),
            c.edge.access_log,
            c.edge.hot_tier.clone(),
            c.admin_token_file.clone(),
            c.id.clone(),
        )
    };
    if listeners(old) != listeners(new) {
        tracing::warn!(file = %file.display(), "id, listen addresses, limits, access_log, hot_tier, admin_token_file or enabling TLS changed: these apply after a restart; the rest is applied now");
    }
}
