//! What the cache nodes did for the run, read from their `/metrics`
//! (Prometheus text) before and after it: prefetches started, used by a
//! viewer, wasted and dropped (`fanout_cache_prefetches_total`). The
//! generator still speaks only HTTP to the system under test; a target
//! that exposes no such counters just has no prefetch line.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const PREFETCHES: &str = "fanout_cache_prefetches_total";

/// The counters, by their full label set: nodes of one process (`fanout
/// up`) each show all of them, so scraping several is not counting twice.
#[derive(Debug, Default, Clone)]
pub struct Snapshot(HashMap<Vec<(String, String)>, f64>);

/// Prefetches during the run, summed over every node scraped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PrefetchFigures {
    /// Fills a node began for a prefetch.
    pub started: u64,
    /// Prefetched objects a viewer's request found.
    pub used: u64,
    /// Prefetched objects no viewer asked for within a minute.
    pub wasted: u64,
    /// Not prefetched for lack of budget, by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl PrefetchFigures {
    /// Started but neither used nor wasted yet: the objects of the run's
    /// last seconds that viewers had not reached, mostly.
    pub fn unclaimed(&self) -> u64 {
        self.started.saturating_sub(self.used + self.wasted)
    }

    pub fn merge(&mut self, other: &PrefetchFigures) {
        self.started += other.started;
        self.used += other.used;
        self.wasted += other.wasted;
        for (reason, n) in &other.dropped {
            *self.dropped.entry(reason.clone()).or_default() += n;
        }
    }
}

/// Reads every address's `/metrics`; addresses that do not answer are
/// left out.
pub async fn scrape(admins: &[SocketAddr]) -> Snapshot {
    let client = crate::client::client();
    let mut out = Snapshot::default();
    for &admin in admins {
        let Ok((status, body)) = crate::client::get_body(
            &client,
            admin,
            "metrics",
            "/metrics",
            Duration::from_secs(5),
        )
        .await
        else {
            continue;
        };
        if status.is_success() {
            out.add(&String::from_utf8_lossy(&body));
        }
    }
    out
}

impl Snapshot {
    fn add(&mut self, text: &str) {
        let lines = text
            .lines()
            .filter(|l| l.contains(PREFETCHES))
            .map(|l| Ok(l.to_string()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
            return;
        };
        for sample in scrape.samples {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            if sample.metric != PREFETCHES {
                continue;
            }
            let mut labels: Vec<(String, String)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            self.0.insert(labels, value);
        }
    }

    /// What happened between `before` and this snapshot; `None` when no
    /// node showed prefetch counters.
    pub fn since(&self, before: &Snapshot) -> Option<PrefetchFigures> {
        if self.0.is_empty() {
            return None;
        }
        let mut f = PrefetchFigures::default();
        for (labels, after) in &self.0 {
            let delta = (after - before.0.get(labels).copied().unwrap_or(0.0)).max(0.0) as u64;
            let label = |name: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or("", |(_, v)| v.as_str())
            };
            match label("result") {
                "started" => f.started += delta,
                "used" => f.used += delta,
                "wasted" => f.wasted += delta,
                "dropped" if delta > 0 => {
                    *f.dropped.entry(label("reason").to_string()).or_default() += delta
                }
                _ => {}
            }
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(texts: &[&str]) -> Snapshot {
        let mut s = Snapshot::default();
        for t in texts {
            s.add(t);
        }
        s
    }

    #[test]
    fn deltas_by_result_counted_once_however_many_nodes_show_them() {
        let before = snapshot(&[
            "fanout_cache_prefetches_total{node=\"c1\",reason=\"\",result=\"started\",site=\"live\"} 10\n",
        ]);
        let all = "# TYPE fanout_cache_prefetches_total counter\n\
            fanout_cache_prefetches_total{node=\"c1\",reason=\"\",result=\"started\",site=\"live\"} 25\n\
            fanout_cache_prefetches_total{node=\"c2\",reason=\"\",result=\"started\",site=\"live\"} 5\n\
            fanout_cache_prefetches_total{node=\"c1\",reason=\"\",result=\"used\",site=\"live\"} 18\n\
            fanout_cache_prefetches_total{node=\"c2\",reason=\"\",result=\"wasted\",site=\"live\"} 1\n\
            fanout_cache_prefetches_total{node=\"c2\",reason=\"concurrency\",result=\"dropped\",site=\"live\"} 3\n\
            fanout_cache_requests_total{node=\"c1\"} 99\n";
        // Two admin listeners of one process: the same lines twice.
        let after = snapshot(&[all, all]);
        let f = after.since(&before).unwrap();
        assert_eq!((f.started, f.used, f.wasted), (20, 18, 1));
        assert_eq!(f.dropped.get("concurrency"), Some(&3));
        assert_eq!(f.unclaimed(), 1);
        assert_eq!(snapshot(&["nothing here\n"]).since(&before), None);
    }
}
