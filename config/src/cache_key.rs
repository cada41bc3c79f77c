//! The primary cache key: site, normalized path and the query as the site's
//! policy keeps it. Proxies hash it onto the ring and cache nodes store
//! under it, so both must derive it from the same function: this one.
//!
//! A `CMCD` query parameter (Common Media Client Data, CTA-5004) is never
//! part of the key: players send their own buffer and bitrate figures
//! with every request, so it differs per viewer and request.

use std::fmt;

use crate::cluster::{QueryMode, Site};

/// The query parameter CMCD data travels in (CTA-5004 §2.2).
pub const CMCD_PARAM: &str = "CMCD";

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
            if policy.mode == QueryMode::Keep
                && policy.drop.is_empty()
                && !q.starts_with('&')
                && !q.ends_with('&')
                && !q.contains("&&")
                && !q.starts_with("CMCD=")
                && !q.contains("&CMCD=")
            {
                // Every parameter is kept as it came: nothing to split.
                key.push('?');
                key.push_str(q);
                return CacheKey(key);
            }
            let mut params: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    name != CMCD_PARAM && !policy.drop.iter().any(|d| d == name)
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
    if already_normal(path) {
        out.push_str(path);
    } else {
        push_normalized_slowly(out, path);
    }
}

fn push_normalized_slowly(out: &mut String, path: &str) {
    let start = out.len();
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
            let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                // A `%` that starts no encoding is itself encoded, so the
                // result reads the same when normalised again (`/%3%30`
                // would otherwise become `/%30`, then `/0`).
                decoded.push_str("%25");
                i += 1;
                continue;
            };
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
        if b.is_ascii() {
            decoded.push(b as char);
        } else {
            // Raw non-ASCII bytes and their percent-encoded form are one key.
            decoded.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    let mut segments: Vec<&str> = Vec::new();
    // A final dot segment leaves a directory: `/a/..` is `/`, `//.` is `//`
    // (§5.2.4, steps B and C). A final `/` already splits off an empty
    // last segment.
    let ends_in_dot = decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if ends_in_dot {
        segments.push("");
    }
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.len() == start {
        out.push('/');
    }
}

/// Whether `path` is its own normal form, which is what nearly every
/// request path is; the check is one pass with no allocation.
fn already_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => return false,
            b if !b.is_ascii() => return false,
            b'/' => {
                if is_dot_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    !is_dot_segment(&bytes[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
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
            prefetch: Default::default(),
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
    fn cmcd_data_is_never_part_of_the_key() {
        for mode in [QueryMode::Keep, QueryMode::Sort] {
            let s = site(mode, &[]);
            let plain = key(&s, "/seg/1.ts", Some("a=1"));
            assert_eq!(key(&s, "/seg/1.ts", Some("a=1&CMCD=bl%3D100")), plain);
            assert_eq!(key(&s, "/seg/1.ts", Some("CMCD=br%3D3200&a=1")), plain);
            assert_eq!(key(&s, "/seg/1.ts", Some("CMCD=")), "live:/seg/1.ts");
            // Only the parameter of that exact name.
            assert_ne!(key(&s, "/seg/1.ts", Some("a=1&cmcd=x")), plain);
        }
    }

    #[test]
    fn paths_are_normalized() {
        let s = site(QueryMode::Keep, &[]);
        assert_eq!(key(&s, "/a/./b/../%7Ec", None), "live:/a/~c");
        assert_eq!(key(&s, "/a/%2fb", None), "live:/a/%2Fb");
        assert_eq!(key(&s, "/../..", None), "live:/");
        assert_eq!(key(&s, "/dir/", None), "live:/dir/");
        assert_eq!(key(&s, "/dir/sub/..", None), "live:/dir/");
        assert_eq!(key(&s, "/x%4", None), "live:/x%254");
        // Found by config/tests/properties.rs: normalising twice changed it.
        assert_eq!(key(&s, "/%3%30", None), "live:/%2530");
        assert_eq!(key(&s, "/%2530", None), "live:/%2530");
        assert_eq!(key(&s, "/caf\u{e9}", None), key(&s, "/caf%c3%a9", None));
        // Found by config/tests/properties.rs against the url crate: an
        // empty segment before a final dot segment stays.
        assert_eq!(key(&s, "//.", None), "live://");
        assert_eq!(key(&s, "/a//..", None), "live:/a/");
    }

    #[test]
    fn the_shortcut_for_normal_paths_agrees_with_full_normalization() {
        let normal = [
            "/",
            "/a",
            "/a/",
            "//a//b/",
            "/live/seg-1.ts",
            "/.well-known/x",
            "/a/...",
            "/a..b/c.",
        ];
        let not_normal = [
            "/a/.",
            "/a/./b",
            "/a/..",
            "/../x",
            "/%7e",
            "/caf\u{e9}",
            "relative",
            "",
            "*",
        ];
        for path in normal {
            assert!(already_normal(path), "{path}");
            let mut slow = String::new();
            push_normalized_slowly(&mut slow, path);
            assert_eq!(slow, path);
        }
        for path in not_normal {
            assert!(!already_normal(path), "{path}");
        }
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
        let keep_all = site(QueryMode::Keep, &[]);
        assert_eq!(
            key(&keep_all, "/s.ts", Some("b=2&a=1")),
            "live:/s.ts?b=2&a=1"
        );
        assert_eq!(
            key(&keep_all, "/s.ts", Some("&b=2&&a=1&")),
            "live:/s.ts?b=2&a=1"
        );
    }
}
