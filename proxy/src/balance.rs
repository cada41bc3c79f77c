//! Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
//! 2018): a key goes to the first usable node clockwise of its hash whose
//! in-flight requests are below `c ×` its weighted share of all in-flight
//! requests; a full node's keys spill to the next one.
//!
//! Why: with plain consistent hashing, a live segment that every viewer asks
//! for at once lands on one node and saturates it while its neighbours idle.
//! The bound keeps that node at most `c` times busier than average; the
//! spilled requests still go to the same few successors, so the origin sees
//! at most one fill per node that takes part.
//!
//! Owns: per-node in-flight counters and the choice of node. Counters are
//! plain atomics read without a lock; a momentary race can let a node go one
//! or two over its bound, which is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::health::Health;
use crate::ring::Ring;

/// In-flight requests per node, index-aligned with `Ring::nodes()`.
pub struct Loads {
    in_flight: Vec<AtomicU64>,
    total: AtomicU64,
}

impl Loads {
    pub fn new(nodes: usize) -> Loads {
        Loads {
            in_flight: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
        }
    }

    pub fn get(&self, node: usize) -> u64 {
        self.in_flight[node].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a request against `node` until the guard drops.
    pub fn start(self: &Arc<Self>, node: usize) -> InFlight {
        self.in_flight[node].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            loads: self.clone(),
            node,
        }
    }
}

/// One request's share of a node's load; held until its response body ends.
pub struct InFlight {
    loads: Arc<Loads>,
    node: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.loads.in_flight[self.node].fetch_sub(1, Ordering::Relaxed);
        self.loads.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The nodes to try, best first: the node chosen under the bound, then
    /// usable nodes after it on the ring (for a retry). Empty when no node
    /// is usable.
    pub nodes: Vec<usize>,
    /// The key's owner (its first usable node), when the bound passed it
    /// over: the node chosen instead fills from it, not from the origin.
    pub spilled_from: Option<usize>,
}

/// Chooses the nodes a request for the key hashed to `hash` should try.
pub fn choose(
    ring: &Ring,
    hash: u64,
    health: &Health,
    loads: &Loads,
    load_factor: f64,
    now: Instant,
    want: usize,
) -> Choice {
    let nodes = ring.nodes();
    let clock = health.clock(now);
    let total_weight: u64 = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| health.is_up_at(*i, clock))
        .map(|(_, n)| n.weight as u64)
        .sum();
    // Nodes held out get no new requests, so their few stragglers barely
    // move the total; one counter beats summing every node per request.
    let total_load = loads.total();
    if total_weight == 0 {
        return Choice {
            nodes: Vec::new(),
            spilled_from: None,
        };
    }
    // The bound counts the request being placed, so an idle cluster still
    // admits it: ceil(c × (L + 1) × w / W).
    let bound = |i: usize| {
        let share = (total_load + 1) as f64 * nodes[i].weight as f64 / total_weight as f64;
        (load_factor * share).ceil() as u64
    };
    let mut usable = ring.successors(hash).filter(|&i| health.is_up_at(i, clock));
    let mut picked = Vec::with_capacity(want);
    let mut passed_over = Vec::new();
    for i in usable.by_ref() {
        if loads.get(i) < bound(i) {
            picked.push(i);
            break;
        }
        passed_over.push(i);
    }
    // With c ≥ 1 some node is always under its bound; if racing counters say
    // otherwise, the owner takes it rather than nobody.
    if picked.is_empty() {
        picked.extend(passed_over.first().copied());
        passed_over.clear();
    }
    let spilled_from = passed_over.first().copied();
    // Fallbacks: the rest of the ring after the chosen node, then the full
    // nodes passed over on the way (a retry beats an error even over the bound).
    picked.extend(usable.chain(passed_over).take(want.saturating_sub(1)));
    picked.truncate(want);
    Choice {
        nodes: picked,
        spilled_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_config::{CacheNodeRef, HostPort};
    use xxhash_rust::xxh3::xxh3_64;

    fn ring(n: usize) -> Ring {
        let nodes: Vec<CacheNodeRef> = (0..n)
            .map(|i| CacheNodeRef {
                id: format!("cache-{i}"),
                address: HostPort {
                    host: "127.0.0.1".into(),
                    port: 9000 + i as u16,
                },
                weight: 1,
            })
            .collect();
        Ring::new(&nodes, 160)
    }

    /// Places `requests` concurrent requests for a skewed key set (a few hot
    /// live segments, as in a stream's first seconds) and returns the
    /// busiest node's share relative to the average.
    fn peak_over_average(load_factor: f64) -> f64 {
        let ring = ring(5);
        let health = Health::new(5);
        let loads = Arc::new(Loads::new(5));
        let now = Instant::now();
        let mut held = Vec::new();
        for r in 0..2000u64 {
            // Half the requests ask for one segment, the rest for 50 others.
            let key = if r % 2 == 0 { 0 } else { 1 + r % 50 };
            let hash = xxh3_64(format!("live:/seg/{key}.ts").as_bytes());
            let chosen = choose(&ring, hash, &health, &loads, load_factor, now, 1);
            held.push(loads.start(chosen.nodes[0]));
        }
        let max = (0..5).map(|i| loads.get(i)).max().unwrap() as f64;
        max / (2000.0 / 5.0)
    }

    #[test]
    fn the_bound_caps_a_hot_key_near_c_times_the_average() {
        let unbounded = peak_over_average(100.0);
        let bounded = peak_over_average(1.25);
        assert!(
            unbounded > 2.0,
            "the workload should overload one node without the bound (got {unbounded:.2}×)"
        );
        assert!(
            bounded <= 1.26,
            "with c = 1.25 the busiest node should stay within 1.25× (got {bounded:.2}×)"
        );
    }

    #[test]
    fn an_idle_cluster_sends_a_key_to_its_ring_owner_and_spills_clockwise() {
        let ring = ring(4);
        let health = Health::new(4);
        let loads = Arc::new(Loads::new(4));
        let now = Instant::now();
        let hash = 0xdead_beef;
        let order: Vec<usize> = ring.successors(hash).collect();
        assert_eq!(
            choose(&ring, hash, &health, &loads, 1.25, now, 2),
            Choice {
                nodes: order[..2].to_vec(),
                spilled_from: None
            }
        );
        // Load the owner past its bound: the key moves to the next node,
        // which is told to fill from the owner.
        let _held: Vec<_> = (0..10).map(|_| loads.start(order[0])).collect();
        assert_eq!(
            choose(&ring, hash, &health, &loads, 1.25, now, 2),
            Choice {
                nodes: vec![order[1], order[2]],
                spilled_from: Some(order[0])
            }
        );
    }

    #[test]
    fn down_nodes_are_skipped_and_nothing_usable_means_no_choice() {
        let ring = ring(3);
        let health = Health::new(3);
        let loads = Arc::new(Loads::new(3));
        let now = Instant::now();
        let hash = 42;
        let order: Vec<usize> = ring.successors(hash).collect();
        health.failed(order[0], now);
        // A node that is down is not the key's owner to fill from.
        assert_eq!(
            choose(&ring, hash, &health, &loads, 1.25, now, 3),
            Choice {
                nodes: vec![order[1], order[2]],
                spilled_from: None
            }
        );
        health.failed(order[1], now);
        health.failed(order[2], now);
        assert!(choose(&ring, hash, &health, &loads, 1.25, now, 3)
            .nodes
            .is_empty());
    }

    #[test]
    fn guards_release_their_load() {
        let loads = Arc::new(Loads::new(2));
        let a = loads.start(1);
        let b = loads.start(1);
        assert_eq!(loads.get(1), 2);
        drop(a);
        drop(b);
        assert_eq!(loads.get(1), 0);
    }
}
