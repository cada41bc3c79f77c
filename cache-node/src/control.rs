//! A cache node run by the control plane: it registers itself, takes the
//! cluster config from the control plane's watch (or the last state saved
//! to disk), swaps its sites and origin pools when the config changes, and
//! applies purges in sequence order, flushing everything when it has
//! fallen behind the control plane's purge window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use fanout_config::{CacheNodeConfig, ControlSource, SiteTable};
use fanout_control_plane::agent::{self, Agent};
use fanout_control_plane::api::WatchSnapshot;
use fanout_control_plane::state::{MemberKind, PurgeRule};
use fanout_server::origin::Origins;
use tokio_util::sync::CancellationToken;

use crate::purge::{Purger, Selector};
use crate::store::Store;

pub fn agent(config: &CacheNodeConfig, source: &ControlSource) -> Result<Agent, String> {
    agent::for_part(source, &config.id, MemberKind::Cache, config.listen)
}

pub async fn initial(config: &mut CacheNodeConfig, agent: &Agent) -> Result<WatchSnapshot, String> {
    let (state, from) = agent
        .initial(Duration::from_secs(5))
        .await
        .ok_or("the control plane gave no cluster config within 5 s and there is no saved state to start from")?;
    config.cluster = agent::cluster_config(&state)?;
    tracing::info!(
        from,
        revision = state.revision,
        config_version = state.config_version,
        "starting from control-plane state"
    );
    Ok(state)
}

/// What the follower changes in the running node.
pub struct Targets {
    pub sites: Arc<ArcSwap<SiteTable>>,
    pub origins: Arc<dyn Fn(Origins) + Send + Sync>,
    pub store: Store,
    pub purger: Arc<Purger>,
    pub max_origin_fetches: u32,
}

pub async fn follow(
    agent: Agent,
    from: WatchSnapshot,
    targets: Targets,
    shutdown: CancellationToken,
) {
    agent.register(&shutdown).await;
    let mut config_version = from.config_version;
    agent
        .watch(
            from,
            |state| {
                if state.config_version != config_version {
                    let cluster = agent::cluster_config(state)?;
                    let origins = Origins::new(&cluster, targets.max_origin_fetches)
                        .map_err(|e| e.to_string())?;
                    // Origins first: a site never appears without its pool.
                    (targets.origins)(origins);
                    targets.sites.store(Arc::new(SiteTable::new(&cluster)));
                    config_version = state.config_version;
                    tracing::info!(
                        config_version,
                        "cluster config from the control plane applied"
                    );
                }
                if state.purges_flush {
                    let n = targets
                        .store
                        .purge_matching(|_, _| true, false, Instant::now());
                    tracing::warn!(
                        entries = n,
                        "behind the control plane's purge window; flushed the cache"
                    );
                }
                for p in &state.purges {
                    let selector = match &p.rule {
                        PurgeRule::Url { host, path } => Selector::Url {
                            host: host.clone(),
                            path: path.clone(),
                        },
                        PurgeRule::Prefix { host, prefix } => Selector::Prefix {
                            host: host.clone(),
                            prefix: prefix.clone(),
                        },
                        PurgeRule::Tag(t) => Selector::Tag(t.clone()),
                    };
                    match targets.purger.purge(&selector, p.soft) {
                        Ok(n) => tracing::info!(seq = p.seq, entries = n, "purge applied"),
                        Err(e) => tracing::warn!(seq = p.seq, error = %e, "purge skipped"),
                    }
                }
                Ok(())
            },
            shutdown,
        )
        .await;
}
