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

/// Rewrites a request's `Accept-Encoding` to the codings of `distinguished`
/// it accepts, in that order (`identity` when it accepts none of them),
/// so that requests whose answers cannot differ share one `Vary` entry
/// and the origin never picks a coding another sharer cannot decode. A
/// request without the field keeps it absent. `*` accepts every coding it
/// does not name; `q=0` refuses one (RFC 9110 §12.5.3).
pub fn normalise_accept_encoding(distinguished: &[String], request: &mut HeaderMap) {
    if !request.contains_key(header::ACCEPT_ENCODING) {
        return;
    }
    // The config allows at most 32 codings: one bit each.
    let (mut named, mut accepted, mut star) = (0u32, 0u32, false);
    let items = request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for item in items {
        let mut params = item.split(';');
        let coding = params.next().unwrap_or("").trim();
        let wanted = params
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| value.trim().parse::<f32>().is_ok_and(|q| q > 0.0))
            })
            .next()
            .unwrap_or(true);
        if coding == "*" {
            star = wanted;
        } else if let Some(i) = distinguished
            .iter()
            .take(32)
            .position(|d| d.eq_ignore_ascii_case(coding))
        {
            named |= 1 << i;
            if wanted {
                accepted |= 1 << i;
            }
        }
    }
    if star {
        accepted |= !named;
    }
    let value: Vec<&str> = distinguished
        .iter()
        .take(32)
        .enumerate()
        .filter(|(i, _)| accepted & (1 << i) != 0)
        .map(|(_, d)| d.as_str())
        .collect();
    let value = if value.is_empty() {
        http::HeaderValue::from_static("identity")
    } else {
        match http::HeaderValue::from_str(&value.join(", ")) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    request.insert(header::ACCEPT_ENCODING, value);
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

    #[test]
    fn accept_encoding_is_reduced_to_the_distinguished_codings_accepted() {
        let site: Vec<String> = ["zstd", "br", "gzip"].map(String::from).to_vec();
        let normalised = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            }
            normalise_accept_encoding(&site, &mut h);
            h.get(header::ACCEPT_ENCODING)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let br_gzip = Some("br, gzip".to_string());
        assert_eq!(normalised(&["gzip, deflate, br"]), br_gzip);
        assert_eq!(normalised(&["br, gzip"]), br_gzip);
        assert_eq!(normalised(&["BR;q=0.5", "GZip ; q=1"]), br_gzip);
        assert_eq!(normalised(&["*, zstd;q=0"]), br_gzip);
        assert_eq!(normalised(&["gzip, br, zstd;q=0.000"]), br_gzip);
        assert_eq!(normalised(&["deflate"]), Some("identity".to_string()));
        assert_eq!(normalised(&["*;q=0"]), Some("identity".to_string()));
        assert_eq!(normalised(&["*"]), Some("zstd, br, gzip".to_string()));
        assert_eq!(normalised(&[]), None, "absent stays absent");
        // Idempotent: a normalised value normalises to itself.
        assert_eq!(normalised(&["br, gzip"]), normalised(&["br, gzip"]));
    }

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
