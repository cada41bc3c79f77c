//! The consistent-hash ring that maps a cache key to the cache node that
//! owns it.
//!
//! Each node gets `weight × vnodes` points on a 64-bit ring; a key belongs
//! to the first point clockwise of its hash. Removing one of M equal nodes
//! moves only that node's keys (about 1/M), and adding one takes about
//! 1/(M+1) from the others. The ring is built once per membership change
//! and read without locks; lookup is a binary search.
//!
//! Proxies route by it; cache nodes use the same ring to find the owner of
//! a segment they prefetch, so both must build it from the same members.

use crate::{CacheKey, CacheNodeRef};
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Clone)]
pub struct Ring {
    /// (point hash, index into `nodes`), sorted by hash.
    points: Vec<(u64, u32)>,
    nodes: Vec<CacheNodeRef>,
}

/// The hash a key is placed by; computed once per request. An LL-HLS
/// blocking reload (`_HLS_msn`, `_HLS_part`) is placed with the playlist
/// it asks a later version of, so the node that holds the playlist
/// answers it (RFC 8216bis §6.2.5.2).
pub fn key_hash(key: &CacheKey) -> u64 {
    let k = key.as_str();
    if !k.contains("_HLS_") {
        return xxh3_64(k.as_bytes());
    }
    let Some((path, query)) = k.split_once('?') else {
        return xxh3_64(k.as_bytes());
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("_HLS_msn=") && !p.starts_with("_HLS_part="))
        .collect();
    if kept.is_empty() {
        xxh3_64(path.as_bytes())
    } else {
        xxh3_64(format!("{path}?{}", kept.join("&")).as_bytes())
    }
}

impl Ring {
    pub fn new(nodes: &[CacheNodeRef], vnodes: u32) -> Ring {
        let mut points =
            Vec::with_capacity(nodes.iter().map(|n| (n.weight * vnodes) as usize).sum());
        for (i, node) in nodes.iter().enumerate() {
            for v in 0..node.weight * vnodes {
                // Points depend on the node id only, never on list order or
                // address, so every proxy builds the same ring.
                let point = xxh3_64(format!("{}#{v}", node.id).as_bytes());
                points.push((point, i as u32));
            }
        }
        points.sort_unstable();
        Ring {
            points,
            nodes: nodes.to_vec(),
        }
    }

    pub fn nodes(&self) -> &[CacheNodeRef] {
        &self.nodes
    }

    /// The node that owns `hash`, or `None` for an empty ring.
    pub fn owner(&self, hash: u64) -> Option<usize> {
        self.successors(hash).next()
    }

    /// Distinct nodes clockwise from `hash`: the owner first, then the nodes
    /// a request falls back to when the owner is down or full.
    pub fn successors(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let n = self.points.len();
        // Nodes already yielded: a bit per node, inline up to 128 nodes.
        let mut seen = Seen::new(self.nodes.len());
        let mut found = 0;
        (0..n)
            .map_while(move |i| {
                if found == self.nodes.len() {
                    return None;
                }
                let node = self.points[(start + i) % n].1 as usize;
                Some(seen.insert(node).then(|| {
                    found += 1;
                    node
                }))
            })
            .flatten()
    }
}

enum Seen {
    Small(u128),
    Large(Vec<bool>),
}

impl Seen {
    fn new(nodes: usize) -> Seen {
        if nodes <= 128 {
            Seen::Small(0)
        } else {
            Seen::Large(vec![false; nodes])
        }
    }

    /// Marks `node`; true if it was not marked before.
    fn insert(&mut self, node: usize) -> bool {
        match self {
            Seen::Small(bits) => {
                let fresh = *bits & (1 << node) == 0;
                *bits |= 1 << node;
                fresh
            }
            Seen::Large(v) => !std::mem::replace(&mut v[node], true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostPort;

    fn nodes(ids: &[(&str, u32)]) -> Vec<CacheNodeRef> {
        ids.iter()
            .enumerate()
            .map(|(i, (id, weight))| CacheNodeRef {
                id: id.to_string(),
                address: HostPort {
                    host: "127.0.0.1".into(),
                    port: 8000 + i as u16,
                },
                weight: *weight,
            })
            .collect()
    }

    fn owners(ring: &Ring, keys: usize) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let h = xxh3_64(format!("live:/live/main/720p/{k}.ts").as_bytes());
                ring.nodes()[ring.owner(h).unwrap()].id.clone()
            })
            .collect()
    }

    const KEYS: usize = 10_000;

    #[test]
    fn removing_one_of_m_nodes_moves_only_its_keys_about_one_mth() {
        let all = nodes(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]);
        let before = owners(&Ring::new(&all, 160), KEYS);
        let after = owners(&Ring::new(&all[..4], 160), KEYS);
        let moved: Vec<usize> = (0..KEYS).filter(|&i| before[i] != after[i]).collect();
        assert!(
            moved.iter().all(|&i| before[i] == "e"),
            "only keys of the removed node may move"
        );
        let share = moved.len() as f64 / KEYS as f64;
        assert!(
            (0.15..=0.25).contains(&share),
            "moved {share:.3} of keys, expected about 1/5"
        );
    }

    #[test]
    fn adding_a_node_takes_about_one_m_plus_first_and_only_for_itself() {
        let all = nodes(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]);
        let before = owners(&Ring::new(&all[..4], 160), KEYS);
        let after = owners(&Ring::new(&all, 160), KEYS);
        let moved: Vec<usize> = (0..KEYS).filter(|&i| before[i] != after[i]).collect();
        assert!(
            moved.iter().all(|&i| after[i] == "e"),
            "keys may only move to the new node"
        );
        let share = moved.len() as f64 / KEYS as f64;
        assert!(
            (0.15..=0.25).contains(&share),
            "moved {share:.3} of keys, expected about 1/5"
        );
    }

    #[test]
    fn load_spreads_evenly_and_follows_weight() {
        let all = nodes(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 2)]);
        let owners = owners(&Ring::new(&all, 160), 60_000);
        let count = |id: &str| owners.iter().filter(|o| *o == id).count() as f64;
        let unit = 60_000.0 / 6.0;
        for id in ["a", "b", "c", "d"] {
            let ratio = count(id) / unit;
            assert!(
                (0.8..=1.2).contains(&ratio),
                "{id} got {ratio:.3} of its fair share"
            );
        }
        let ratio = count("e") / (2.0 * unit);
        assert!(
            (0.8..=1.2).contains(&ratio),
            "weight-2 node got {ratio:.3} of its fair share"
        );
    }

    #[test]
    fn a_blocking_reload_is_placed_with_its_playlist() {
        let site: crate::Site = serde_yaml::from_str(
            "name: live\nhosts: [a.example]\norigin: { addresses: ['127.0.0.1:1'] }\n",
        )
        .unwrap();
        let key = |q: Option<&str>| key_hash(&CacheKey::new(&site, "/l/index.m3u8", q));
        assert_eq!(key(Some("_HLS_msn=12&_HLS_part=1")), key(None));
        assert_eq!(key(Some("t=1&_HLS_msn=12")), key(Some("t=1")));
        assert_ne!(
            key(Some("_HLS_skip=YES")),
            key(None),
            "a delta update is its own"
        );
        assert_ne!(key(Some("t=2")), key(Some("t=1")));
    }

    #[test]
    fn ring_does_not_depend_on_node_order_and_successors_are_distinct() {
        let all = nodes(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            owners(&Ring::new(&all, 64), 2000),
            owners(&Ring::new(&reversed, 64), 2000)
        );
        let ring = Ring::new(&all, 64);
        let order: Vec<usize> = ring.successors(12345).collect();
        assert_eq!(order.len(), 3);
        assert_eq!(order[0], ring.owner(12345).unwrap());
        assert!(Ring::new(&[], 64).owner(1).is_none());
    }

    #[test]
    fn successors_cover_every_node_once_on_large_rings_too() {
        for n in [1usize, 128, 200] {
            let ids: Vec<(String, u32)> = (0..n).map(|i| (format!("n{i}"), 1)).collect();
            let refs: Vec<(&str, u32)> = ids.iter().map(|(s, w)| (s.as_str(), *w)).collect();
            let ring = Ring::new(&nodes(&refs), 8);
            let mut all: Vec<usize> = ring.successors(987_654_321).collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "{n} nodes");
        }
    }
}
