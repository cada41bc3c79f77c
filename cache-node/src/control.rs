//! A cache node run by the control plane: it registers itself, takes the
//! cluster config from the control plane's watch (or the last state saved
//! to disk), swaps its sites and origin pools when the config changes, and
//! applies purges in sequence order, flushing everything when it has
//! fallen behind the control plane's purge window. The other cache nodes
//! it learns from the membership are its peers (see `peer`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_config::{CacheNodeConfig, CacheNodeRef, ControlSource, HostPort, SiteTable};
use fanout_control_plane::agent::{self, Agent};
use fanout_control_plane::api::WatchSnapshot;
use fanout_control_plane::state::{MemberKind, MemberState};
use fanout_http_cache::purge::Selector;
use fanout_http_cache::Tier;
use fanout_server::origin::Origins;
use tokio_util::sync::CancellationToken;

use crate::peer::Peers;
use crate::prefetch::Prefetcher;

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
    pub tier: Arc<Tier>,
    /// The last purge applied, which proxies' fills are checked against.
    pub purge_seq: Arc<AtomicU64>,
    pub peers: Arc<Peers>,
    pub prefetch: Arc<Prefetcher>,
    pub max_origin_fetches: u32,
}

/// The active cache nodes a control-plane state names.
fn cache_nodes(state: &WatchSnapshot) -> Vec<CacheNodeRef> {
    state
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Cache && m.state == MemberState::Active)
        .filter_map(|m| {
            Some(CacheNodeRef {
                id: m.id.clone(),
                address: HostPort::try_from(m.address.clone()).ok()?,
                weight: m.weight.max(1),
            })
        })
        .collect()
}

pub async fn follow(
    agent: Agent,
    from: WatchSnapshot,
    targets: Targets,
    shutdown: CancellationToken,
) {
    agent.register(&shutdown).await;
    let mut config_version = from.config_version;
    let mut vnodes = agent::cluster_config(&from)
        .map(|c| c.hashing.vnodes)
        .unwrap_or(fanout_config::Hashing::default().vnodes);
    let nodes = cache_nodes(&from);
    targets.peers.set(&nodes);
    targets.prefetch.set_members(&nodes, vnodes);
    targets.purge_seq.store(from.purge_seq, Ordering::Release);
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
                    vnodes = cluster.hashing.vnodes;
                    config_version = state.config_version;
                    tracing::info!(
                        config_version,
                        "cluster config from the control plane applied"
                    );
                }
                let nodes = cache_nodes(state);
                targets.peers.set(&nodes);
                targets.prefetch.set_members(&nodes, vnodes);
                if state.purges_flush {
                    let n = targets.tier.flush();
                    tracing::warn!(
                        entries = n,
                        "behind the control plane's purge window; flushed the cache"
                    );
                }
                let sites = targets.sites.load();
                for p in &state.purges {
                    match targets.tier.purge(&sites, &Selector::from(&p.rule), p.soft) {
                        Ok(n) => tracing::info!(seq = p.seq, entries = n, "purge applied"),
                        Err(e) => tracing::warn!(seq = p.seq, error = %e, "purge skipped"),
                    }
                }
                // Only now: a proxy that has applied this purge stores what
                // this node answers once the node says it has too.
                targets.purge_seq.store(state.purge_seq, Ordering::Release);
                Ok(())
            },
            shutdown,
        )
        .await;
}
