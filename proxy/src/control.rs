//! A proxy run by the control plane: its cluster config and cache nodes
//! come from the control plane's watch (or, with the control plane down,
//! from the last state saved to disk), and each change is applied through
//! the same snapshot swap as a file reload.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fanout_config::{CacheNodeRef, ClusterConfig, ControlSource, HostPort, ProxyConfig};
use fanout_control_plane::agent::{self, Agent};
use fanout_control_plane::api::WatchSnapshot;
use fanout_control_plane::state::{MemberKind, MemberState};
use tokio_util::sync::CancellationToken;

use crate::hot_tier::HotTier;
use crate::snapshot::Snapshot;

/// The cluster config and active cache nodes a control-plane state names.
pub fn cluster_of(state: &WatchSnapshot) -> Result<(ClusterConfig, Vec<CacheNodeRef>), String> {
    let cluster = agent::cluster_config(state)?;
    // Draining and removed nodes take no new keys: they leave the ring.
    let nodes = state
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Cache && m.state == MemberState::Active)
        .map(|m| {
            Ok(CacheNodeRef {
                id: m.id.clone(),
                address: HostPort::try_from(m.address.clone())
                    .map_err(|e| format!("member {}: {e}", m.id))?,
                weight: m.weight.max(1),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((cluster, nodes))
}

pub fn agent(config: &ProxyConfig, source: &ControlSource) -> Result<Agent, String> {
    agent::for_part(source, &config.id, MemberKind::Proxy, config.listen)
}

/// Fills `config` from the control plane (or the saved state); returns the
/// state it came from.
pub async fn initial(config: &mut ProxyConfig, agent: &Agent) -> Result<WatchSnapshot, String> {
    let (state, from) = agent
        .initial(Duration::from_secs(5))
        .await
        .ok_or("the control plane gave no cluster config within 5 s and there is no saved state to start from")?;
    let (cluster, nodes) = cluster_of(&state)?;
    tracing::info!(
        from,
        revision = state.revision,
        config_version = state.config_version,
        cache_nodes = nodes.len(),
        "starting from control-plane state"
    );
    config.cluster = cluster;
    config.cache_nodes = nodes;
    Ok(state)
}

/// Registers and follows the control plane until `shutdown`: applies each
/// new state's config and nodes, and its purges to the hot tier.
pub async fn follow(
    agent: Agent,
    from: WatchSnapshot,
    routing: Arc<ArcSwap<Snapshot>>,
    apply_lock: Arc<std::sync::Mutex<()>>,
    hot: Option<Arc<HotTier>>,
    shutdown: CancellationToken,
) {
    // The tier started empty: purges before the first state are moot.
    if let Some(hot) = &hot {
        hot.purged_through(from.purge_seq);
    }
    agent.register(&shutdown).await;
    agent
        .watch(
            from,
            |state| {
                let (cluster, nodes) = cluster_of(state)?;
                let _applying = apply_lock.lock().unwrap_or_else(|p| p.into_inner());
                let current = routing.load_full();
                let mut config = current.config.clone();
                config.cluster = cluster;
                config.cache_nodes = nodes;
                let current = if config == current.config {
                    current
                } else {
                    let next = Arc::new(
                        Snapshot::build(config, Some(&current)).map_err(|e| e.to_string())?,
                    );
                    tracing::info!(
                        revision = state.revision,
                        config_version = state.config_version,
                        generation = next.generation,
                        "control-plane change applied"
                    );
                    routing.store(next.clone());
                    if let Some(hot) = &hot {
                        hot.config_changed(&current.config.cluster, &next.config.cluster);
                    }
                    next
                };
                if let Some(hot) = &hot {
                    apply_purges(hot, &current, state);
                }
                Ok(())
            },
            shutdown,
        )
        .await;
}

/// The state's sequence, then its purges in order: the agent reports the
/// state applied (which `fanout ctl purge` waits for) only after this.
///
/// The sequence goes first. A fill that starts once it is recorded asks
/// the node to vouch for these purges too, so the node will not let its
/// answer be kept until it has applied them; a fill that started before is
/// still in flight when the purges below detach it. Recorded last, a miss
/// between a purge and the record would fetch the purged copy from a node
/// not yet purged, with the node's word that it may be kept.
fn apply_purges(hot: &HotTier, snapshot: &Snapshot, state: &WatchSnapshot) {
    hot.purged_through(state.purge_seq);
    if state.purges_flush {
        let n = hot.tier.flush();
        tracing::warn!(
            entries = n,
            "behind the control plane's purge window; emptied the hot tier"
        );
    }
    for p in &state.purges {
        let selector = fanout_http_cache::purge::Selector::from(&p.rule);
        match hot.purge(&snapshot.sites, &selector, p.soft) {
            Ok(n) => tracing::info!(seq = p.seq, entries = n, "purge applied to the hot tier"),
            Err(e) => tracing::warn!(seq = p.seq, error = %e, "purge skipped"),
        }
    }
}
