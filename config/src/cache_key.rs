//! The primary cache key: site, normalized path and the query as the site's
//! policy keeps it. Proxies hash it onto the ring and cache nodes store
//! under it, so both must derive it from the same function: this one.

use std::fmt;

use crate::cluster::{QueryMode, Site};

/// `site:/normalized/path?kept=query`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn new(site: &Site, path: &str, query: Option<&str>) -> CacheKey {
        let mut key =
            String::with_capacity(site.name.len() + path.len() + query.map_or(0, str::len) + 2);
        key.push_str(&site.name);
        key.push(':');
        push_normalized_path(&mut key, path);
        let policy = &site.cache.query;
        if let Some(q) = query.filter(|q| !q.is_empty() && policy.mode != QueryMode::Ignore) {
            let mut params: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !policy.drop.iter().any(|d| d == name)
                })
                .collect();
            if policy.mode == QueryMode::Sort {
                params.sort_unstable();
            }
            for (i, p) in params.iter().enumerate() {
                key.push(if i == 0 { '?' } else { '&' });
                key.push_str(p);
            }
        }
        CacheKey(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3986 §6.2.2 normalization: percent-encodings of unreserved
/// characters decoded, other percent-encodings upper-cased, and dot
/// segments removed (§5.2.4), so `/a/./b/../%7Ec` and `/a/~c` are one key.
fn push_normalized_path(out: &mut String, path: &str) {
    let start = out.len();
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c as char);
                } else {
                    decoded.push('%');
                    decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                    decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        if b.is_ascii() {
            decoded.push(b as char);
        } else {
            // Raw non-ASCII bytes and their percent-encoded form are one key.
            decoded.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    let mut segments: Vec<&str> = Vec::new();
    let ends_in_dir = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if let Some(last) = segments.last() {
        if ends_in_dir && !last.is_empty() {
            segments.push("");
        }
    }
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.len() == start {
        out.push('/');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{CachePolicy, HostPort, OriginPool, QueryPolicy, Scheme};
    use crate::units::Span;

    fn site(mode: QueryMode, drop: &[&str]) -> Site {
        Site {
            access_log: true,
            access_log_sample: 1.0,
            name: "live".into(),
            hosts: vec![],
            path_prefixes: vec!["/".into()],
            origin: OriginPool {
                scheme: Scheme::Http,
                addresses: vec![HostPort {
                    host: "127.0.0.1".into(),
                    port: 1,
                }],
                host_header: None,
                connect_timeout: Span::from_secs(1),
                response_timeout: Span::from_secs(1),
                total_timeout: Span::from_secs(1),
                ca_file: None,
            },
            cache: CachePolicy {
                query: QueryPolicy {
                    mode,
                    drop: drop.iter().map(|s| s.to_string()).collect(),
                },
                ..CachePolicy::default()
            },
        }
    }

    fn key(s: &Site, path: &str, q: Option<&str>) -> String {
        CacheKey::new(s, path, q).as_str().to_string()
    }

    #[test]
    fn paths_are_normalized() {
        let s = site(QueryMode::Keep, &[]);
        assert_eq!(key(&s, "/a/./b/../%7Ec", None), "live:/a/~c");
        assert_eq!(key(&s, "/a/%2fb", None), "live:/a/%2Fb");
        assert_eq!(key(&s, "/../..", None), "live:/");
        assert_eq!(key(&s, "/dir/", None), "live:/dir/");
        assert_eq!(key(&s, "/dir/sub/..", None), "live:/dir/");
        assert_eq!(key(&s, "/x%4", None), "live:/x%4");
        assert_eq!(key(&s, "/caf\u{e9}", None), key(&s, "/caf%c3%a9", None));
    }

    #[test]
    fn query_follows_the_site_policy() {
        let keep = site(QueryMode::Keep, &["token"]);
        assert_eq!(
            key(&keep, "/s.ts", Some("b=2&token=x&a=1")),
            "live:/s.ts?b=2&a=1"
        );
        let sort = site(QueryMode::Sort, &[]);
        assert_eq!(
            key(&sort, "/s.ts", Some("b=2&a=1")),
            key(&sort, "/s.ts", Some("a=1&b=2"))
        );
        let ignore = site(QueryMode::Ignore, &[]);
        assert_eq!(key(&ignore, "/s.ts", Some("a=1")), "live:/s.ts");
        assert_eq!(key(&keep, "/s.ts", Some("")), "live:/s.ts");
    }
}
