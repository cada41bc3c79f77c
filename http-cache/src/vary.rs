//! Secondary cache keys (RFC 9111 §4.1): a response with `Vary` is stored
//! once per combination of the request header values it names.
//!
//! A lookup cannot know which headers a URL varies on until a response has
//! said so, so the node remembers, per primary key, the header names of the
//! last response stored for it. A response without `Vary` clears that, and
//! `Vary: *` is never stored at all (see `freshness`).

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderName};

/// Separates the primary key from the secondary one; cannot occur in either.
pub const SEPARATOR: char = '\u{1f}';

/// The header names a response varies on: lower-case, sorted, once each.
pub fn vary_names(response: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// The request's values of `names`, normalised as §4.1 allows (all field
/// lines joined, white space around commas removed).
pub fn secondary_key(names: &[HeaderName], request: &HeaderMap) -> String {
    let mut key = String::new();
    for name in names {
        key.push_str(name.as_str());
        key.push('=');
        let values = request
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for (i, v) in values.enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(v.trim());
        }
        key.push(';');
    }
    key
}

/// Where a response to `request` is stored, given what it varies on.
pub fn storage_key(primary: &str, names: &[HeaderName], request: &HeaderMap) -> String {
    if names.is_empty() {
        return primary.to_string();
    }
    format!("{primary}{SEPARATOR}{}", secondary_key(names, request))
}

/// Per primary key, the header names its stored responses vary on.
/// Clones share one index.
#[derive(Clone)]
pub struct VaryIndex {
    names: moka::sync::Cache<String, Arc<[HeaderName]>, foldhash::fast::RandomState>,
    /// Whether any response has ever varied: until one does, lookups skip
    /// the index (most live streams never vary).
    any: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for VaryIndex {
    fn default() -> Self {
        VaryIndex::new()
    }
}

impl VaryIndex {
    pub fn new() -> VaryIndex {
        // Bounded like the store it describes; an entry outliving its
        // responses only costs a lookup under a key that then misses.
        let names = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_idle(Duration::from_secs(3600))
            .build_with_hasher(foldhash::fast::RandomState::default());
        VaryIndex {
            names,
            any: Default::default(),
        }
    }

    /// The key to look `request` up under.
    pub fn lookup_key(&self, primary: &str, request: &HeaderMap) -> String {
        self.variant_key(primary, request)
            .unwrap_or_else(|| primary.to_string())
    }

    /// The key to look `request` up under when the URL varies; `None` when
    /// it is `primary` itself (no allocation on that common path).
    pub fn variant_key(&self, primary: &str, request: &HeaderMap) -> Option<String> {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let names = self.names.get(primary)?;
        Some(storage_key(primary, &names, request))
    }

    /// Forgets what `primary` varies on, once none of its responses is
    /// stored (a purge of the URL), so its next miss is a `uri-miss`.
    pub fn forget(&self, primary: &str) {
        self.names.invalidate(primary);
    }

    /// Whether responses for `primary` have been stored per variant.
    pub fn varies(&self, primary: &str) -> bool {
        self.names.contains_key(primary)
    }

    /// Records what the response just stored for `primary` varies on.
    pub fn record(&self, primary: &str, names: &[HeaderName]) {
        if names.is_empty() {
            if self.any.load(std::sync::atomic::Ordering::Relaxed) {
                self.names.invalidate(primary);
            }
        } else if self.names.get(primary).is_none_or(|known| *known != *names) {
            self.any.store(true, std::sync::atomic::Ordering::Relaxed);
            self.names.insert(primary.to_string(), names.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn names_are_normalised() {
        let names = vary_names(&headers(&[
            ("vary", "Accept-Language, accept-encoding"),
            ("vary", "accept-language"),
        ]));
        assert_eq!(names, ["accept-encoding", "accept-language"]);
    }

    #[test]
    fn secondary_keys_ignore_white_space_but_not_values() {
        let names = vary_names(&headers(&[("vary", "accept-language")]));
        let a = secondary_key(&names, &headers(&[("accept-language", "en, fr")]));
        let b = secondary_key(&names, &headers(&[("accept-language", "en,fr")]));
        let c = secondary_key(&names, &headers(&[("accept-language", "fr")]));
        let none = secondary_key(&names, &headers(&[]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(c, none);
    }

    #[test]
    fn the_index_follows_the_last_stored_response() {
        let index = VaryIndex::new();
        let fr = headers(&[("accept-language", "fr")]);
        assert_eq!(index.lookup_key("s:/a", &fr), "s:/a");
        index.record(
            "s:/a",
            &vary_names(&headers(&[("vary", "accept-language")])),
        );
        assert_eq!(
            index.lookup_key("s:/a", &fr),
            format!("s:/a{SEPARATOR}accept-language=fr;")
        );
        index.record("s:/a", &[]);
        assert_eq!(index.lookup_key("s:/a", &fr), "s:/a");
    }
}
