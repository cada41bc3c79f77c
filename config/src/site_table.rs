//! Which site a request belongs to, by Host and path.
//!
//! Exact host names win over wildcards, a more specific wildcard over a less
//! specific one, and within a host the longest matching path prefix wins.
//! Prefixes match as plain string prefixes, as in NGINX `location`.

use std::sync::Arc;

use crate::cluster::{ClusterConfig, HostPattern, Site};

/// Host names come from clients; foldhash's per-table random seed keeps
/// them from choosing collisions, at a fraction of SipHash's cost on the
/// path every request takes.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone)]
pub struct SiteTable {
    sites: Vec<Arc<Site>>,
    /// host → (prefix, site index), longest prefix first.
    exact: HashMap<String, Vec<(String, usize)>>,
    /// `.example.com` → (prefix, site index), longest prefix first.
    wildcard: HashMap<String, Vec<(String, usize)>>,
    default: Option<usize>,
}

impl SiteTable {
    pub fn new(cluster: &ClusterConfig) -> SiteTable {
        let mut exact: HashMap<String, Vec<(String, usize)>> = HashMap::default();
        let mut wildcard: HashMap<String, Vec<(String, usize)>> = HashMap::default();
        for (i, site) in cluster.sites.iter().enumerate() {
            for host in &site.hosts {
                let (map, name) = match host {
                    HostPattern::Exact(h) => (&mut exact, h),
                    HostPattern::Wildcard(s) => (&mut wildcard, s),
                };
                let routes = map.entry(name.clone()).or_default();
                routes.extend(site.path_prefixes.iter().map(|p| (p.clone(), i)));
                routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
            }
        }
        let default = cluster
            .default_site
            .as_ref()
            .and_then(|d| cluster.sites.iter().position(|s| &s.name == d));
        SiteTable {
            sites: cluster.sites.iter().cloned().map(Arc::new).collect(),
            exact,
            wildcard,
            default,
        }
    }

    /// The site for a request's Host header (port and trailing dot ignored,
    /// any case) and path; `None` means no site and no default site.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Site>> {
        let host = normalize_host(host);
        let host = host.as_ref();
        if let Some(i) = self.exact.get(host).and_then(|r| longest_prefix(r, path)) {
            return Some(&self.sites[i]);
        }
        // Walk up the labels: a.b.example.com tries .b.example.com, then .example.com, ...
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            if let Some(i) = self
                .wildcard
                .get(suffix)
                .and_then(|r| longest_prefix(r, path))
            {
                return Some(&self.sites[i]);
            }
            rest = &rest[dot + 1..];
        }
        self.default.map(|i| &self.sites[i])
    }

    pub fn sites(&self) -> &[Arc<Site>] {
        &self.sites
    }
}

fn longest_prefix(routes: &[(String, usize)], path: &str) -> Option<usize> {
    routes
        .iter()
        .find(|(p, _)| path.starts_with(p.as_str()))
        .map(|(_, i)| *i)
}

fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_str, AnyConfig};

    fn table(yaml: &str) -> SiteTable {
        match load_str(std::path::Path::new("test.yaml"), yaml).unwrap() {
            AnyConfig::Cluster(c) => SiteTable::new(&c),
            _ => unreachable!(),
        }
    }

    const SITES: &str = "
kind: cluster
sites:
  - name: live
    hosts: [live.example.com]
    origin: { addresses: ['127.0.0.1:1'] }
  - name: live-api
    hosts: [live.example.com]
    path_prefixes: [/api/]
    origin: { addresses: ['127.0.0.1:2'] }
  - name: any-cdn
    hosts: ['*.cdn.example.com']
    origin: { addresses: ['127.0.0.1:3'] }
  - name: deep-cdn
    hosts: ['*.eu.cdn.example.com']
    origin: { addresses: ['127.0.0.1:4'] }
";

    fn name<'a>(t: &'a SiteTable, host: &str, path: &str) -> Option<&'a str> {
        t.find(host, path).map(|s| s.name.as_str())
    }

    #[test]
    fn exact_host_then_longest_prefix() {
        let t = table(SITES);
        assert_eq!(name(&t, "live.example.com", "/hls/a.ts"), Some("live"));
        assert_eq!(name(&t, "live.example.com", "/api/x"), Some("live-api"));
        assert_eq!(name(&t, "LIVE.Example.com:8080", "/"), Some("live"));
        assert_eq!(name(&t, "live.example.com.", "/"), Some("live"));
    }

    #[test]
    fn most_specific_wildcard_wins_and_apex_is_not_a_subdomain() {
        let t = table(SITES);
        assert_eq!(name(&t, "a.cdn.example.com", "/"), Some("any-cdn"));
        assert_eq!(name(&t, "x.eu.cdn.example.com", "/"), Some("deep-cdn"));
        assert_eq!(name(&t, "cdn.example.com", "/"), None);
        assert_eq!(name(&t, "other.org", "/"), None);
    }

    #[test]
    fn unknown_hosts_go_to_the_default_site_when_one_is_set() {
        let t = table(&format!("{SITES}default_site: any-cdn\n"));
        assert_eq!(name(&t, "other.org", "/x"), Some("any-cdn"));
    }
}
