//! Purging stored responses: by URL (with all its variants), by path
//! prefix, or by surrogate key (`Surrogate-Key`, space-separated, or
//! `Cache-Tag`, comma-separated); hard (removed) or soft (marked expired
//! now, so the next request revalidates and stale-if-error still has a
//! copy).
//!
//! [`Purger::purge`] is the one entry: purges the control plane replicates
//! reach it through the node's agent (`control.rs`), and the admin route
//! `POST /purge` calls it after checking the bearer token.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use fanout_config::{CacheKey, SiteTable};
use fanout_server::{full, text, ResponseBody};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::store::{Store, StoredResponse};
use crate::vary::{VaryIndex, SEPARATOR};

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One URL (path and query) of the site serving `host`, every variant.
    Url { host: String, path: String },
    /// Every URL of the site serving `host` whose path starts with `prefix`.
    Prefix { host: String, prefix: String },
    /// Every response that names this surrogate key.
    Tag(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PurgeError {
    #[error("no site serves host {0:?}")]
    UnknownSite(String),
}

/// Whether a stored entry (by key and response) is to be purged.
type Matcher = Box<dyn Fn(&str, &StoredResponse) -> bool>;

pub struct Purger {
    store: Store,
    vary: VaryIndex,
    sites: Arc<ArcSwap<SiteTable>>,
    /// `None`: no token configured, so purging is disabled.
    token: Option<String>,
}

impl Purger {
    pub fn new(
        store: Store,
        vary: VaryIndex,
        sites: Arc<ArcSwap<SiteTable>>,
        token: Option<String>,
    ) -> Purger {
        Purger {
            store,
            vary,
            sites,
            token,
        }
    }

    /// Purges what `selector` names; returns how many entries it touched.
    pub fn purge(&self, selector: &Selector, soft: bool) -> Result<usize, PurgeError> {
        let sites = self.sites.load();
        let matches: Matcher = match selector {
            Selector::Url { host, path } => {
                let (path, query) = path
                    .split_once('?')
                    .map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
                let site = sites
                    .find(host, path)
                    .ok_or_else(|| PurgeError::UnknownSite(host.clone()))?;
                let primary = CacheKey::new(site, path, query).as_str().to_string();
                // A soft purge keeps the copies (stale) for revalidation.
                if !soft {
                    self.vary.forget(&primary);
                }
                let variants = format!("{primary}{SEPARATOR}");
                Box::new(move |key, _| key == primary || key.starts_with(&variants))
            }
            Selector::Prefix { host, prefix } => {
                let site = sites
                    .find(host, prefix)
                    .ok_or_else(|| PurgeError::UnknownSite(host.clone()))?;
                let key_prefix = CacheKey::new(site, prefix, None).as_str().to_string();
                Box::new(move |key, _| key.starts_with(&key_prefix))
            }
            Selector::Tag(tag) => {
                let tag = tag.clone();
                Box::new(move |_, stored| tags(stored).any(|t| t == tag))
            }
        };
        Ok(self
            .store
            .purge_matching(|k, v| matches(k, v), soft, Instant::now()))
    }

    /// `POST /purge?host=H&path=P` (or `prefix=P`, or `tag=T`), optionally
    /// with `soft=true`, and `Authorization: Bearer TOKEN`.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        if req.uri().path() != "/purge" {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        }
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                "purging is disabled: no admin_token_file is configured\n",
            );
        };
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !offered.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes())) {
            tracing::warn!(uri = %req.uri(), "purge refused: missing or wrong bearer token");
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let (selector, soft) = match parse_query(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        match self.purge(&selector, soft) {
            Ok(n) => {
                tracing::info!(?selector, soft, purged = n, "purge");
                let mut r = Response::new(full(format!("{{\"purged\":{n},\"soft\":{soft}}}\n")));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(PurgeError::UnknownSite(_)) => {
                text(StatusCode::NOT_FOUND, "no site serves this host\n")
            }
        }
    }
}

const USAGE: &str =
    "give host and path, host and prefix, or tag (and soft=true for a soft purge)\n";

fn parse_query(query: &str) -> Result<(Selector, bool), &'static str> {
    let (mut host, mut path, mut prefix, mut tag, mut soft) = (None, None, None, None, false);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "host" => host = Some(v.into_owned()),
            "path" => path = Some(v.into_owned()),
            "prefix" => prefix = Some(v.into_owned()),
            "tag" => tag = Some(v.into_owned()),
            "soft" => soft = matches!(v.as_ref(), "true" | "1" | "yes"),
            _ => return Err(USAGE),
        }
    }
    let selector = match (host, path, prefix, tag) {
        (Some(host), Some(path), None, None) if path.starts_with('/') => {
            Selector::Url { host, path }
        }
        (Some(host), None, Some(prefix), None) if prefix.starts_with('/') => {
            Selector::Prefix { host, prefix }
        }
        (None, None, None, Some(tag)) if !tag.is_empty() => Selector::Tag(tag),
        _ => return Err(USAGE),
    };
    Ok((selector, soft))
}

/// The surrogate keys a stored response names.
fn tags(stored: &StoredResponse) -> impl Iterator<Item = &str> {
    let surrogate = stored
        .headers
        .get_all("surrogate-key")
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split_whitespace());
    let cache_tag = stored
        .headers
        .get_all("cache-tag")
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    surrogate.chain(cache_tag)
}

/// Compares tokens in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_exactly_one_selector() {
        assert_eq!(
            parse_query("host=a.example&path=%2Fx%3Fy%3D1"),
            Ok((
                Selector::Url {
                    host: "a.example".into(),
                    path: "/x?y=1".into()
                },
                false
            ))
        );
        assert_eq!(
            parse_query("host=a&prefix=/live/&soft=true"),
            Ok((
                Selector::Prefix {
                    host: "a".into(),
                    prefix: "/live/".into()
                },
                true
            ))
        );
        assert_eq!(
            parse_query("tag=match-1"),
            Ok((Selector::Tag("match-1".into()), false))
        );
        assert_eq!(parse_query("host=a&path=/x&tag=t"), Err(USAGE));
        assert_eq!(parse_query("host=a&path=relative"), Err(USAGE));
        assert_eq!(parse_query("colour=red"), Err(USAGE));
        assert_eq!(parse_query(""), Err(USAGE));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
