//! Purging stored responses: by URL (with all its variants), by path
//! prefix, or by surrogate key (`Surrogate-Key`, space-separated, or
//! `Cache-Tag`, comma-separated); hard (removed) or soft (marked expired
//! now, so the next request revalidates and stale-if-error still has a
//! copy).
//!
//! [`Tier::purge`](crate::Tier::purge) is the one entry: purges the control
//! plane replicates reach it through each part's agent, and the admin route
//! `POST /purge` ([`handle`]) calls it after checking the bearer token.

use std::sync::Arc;

use fanout_config::{CacheKey, SiteTable};
use fanout_server::{full, text, ResponseBody};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::store::StoredResponse;
use crate::vary::SEPARATOR;

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
pub(crate) type Matcher = Box<dyn Fn(&str, &StoredResponse) -> bool + Send + Sync>;

/// Whether a fill in flight (by key, and by its response's headers once
/// known) is to be detached.
pub(crate) type FillMatcher = Box<dyn Fn(&str, Option<&HeaderMap>) -> bool + Send + Sync>;

/// What a selector names, as tests on a stored entry and on a fill in
/// flight (by key, and by its response's headers once known).
pub(crate) struct Targets {
    pub stored: Matcher,
    pub in_flight: FillMatcher,
    /// The primary key of a URL purge, whose `Vary` names a hard purge forgets.
    pub url: Option<String>,
}

impl Selector {
    /// The entries this selector names under `sites`' keys.
    pub(crate) fn targets(&self, sites: &SiteTable) -> Result<Targets, PurgeError> {
        Ok(match self {
            Selector::Url { host, path } => {
                let (path, query) = path
                    .split_once('?')
                    .map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
                let site = sites
                    .find(host, path)
                    .ok_or_else(|| PurgeError::UnknownSite(host.clone()))?;
                let primary = CacheKey::new(site, path, query).as_str().to_string();
                let variants = format!("{primary}{SEPARATOR}");
                let url = Some(primary.clone());
                let of_url = move |key: &str| key == primary || key.starts_with(&variants);
                let of_url = Arc::new(of_url);
                let in_flight = of_url.clone();
                Targets {
                    url,
                    stored: Box::new(move |key, _| of_url(key)),
                    in_flight: Box::new(move |key, _| in_flight(key)),
                }
            }
            Selector::Prefix { host, prefix } => {
                let site = sites
                    .find(host, prefix)
                    .ok_or_else(|| PurgeError::UnknownSite(host.clone()))?;
                let key_prefix = CacheKey::new(site, prefix, None).as_str().to_string();
                let in_flight = key_prefix.clone();
                Targets {
                    url: None,
                    stored: Box::new(move |key, _| key.starts_with(&key_prefix)),
                    in_flight: Box::new(move |key, _| key.starts_with(&in_flight)),
                }
            }
            Selector::Tag(tag) => {
                let (tag, in_flight) = (tag.clone(), tag.clone());
                Targets {
                    url: None,
                    stored: Box::new(move |_, stored| {
                        surrogate_keys(&stored.headers).any(|t| t == tag)
                    }),
                    // A fill whose headers have not arrived may yet name the
                    // tag: it is detached too, at the cost of one more fetch.
                    in_flight: Box::new(move |_, headers| {
                        headers.is_none_or(|h| surrogate_keys(h).any(|t| t == in_flight))
                    }),
                }
            }
        })
    }
}

/// `POST /purge?host=H&path=P` (or `prefix=P`, or `tag=T`), optionally with
/// `soft=true`, and `Authorization: Bearer TOKEN`: the admin route of every
/// part that holds a cache tier. `apply` purges and says how many entries
/// it touched. Without a `token`, purging is disabled (403).
pub async fn handle<B>(
    req: Request<B>,
    token: Option<&str>,
    apply: impl FnOnce(&Selector, bool) -> Result<usize, PurgeError>,
) -> Response<ResponseBody> {
    if req.uri().path() != "/purge" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    }
    let Some(token) = token else {
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
    match apply(&selector, soft) {
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

/// Reads a bearer token: the file's content without surrounding space.
pub fn read_token(file: &std::path::Path) -> std::io::Result<String> {
    let token = std::fs::read_to_string(file)?.trim().to_string();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token file is empty",
        ));
    }
    Ok(token)
}

const USAGE: &str =
    "give host and path, host and prefix, or tag (and soft=true for a soft purge)\n";

pub fn parse_query(query: &str) -> Result<(Selector, bool), &'static str> {
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

/// The surrogate keys a response names: `Surrogate-Key` (space-separated)
/// then `Cache-Tag` (comma-separated).
pub fn surrogate_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let surrogate = headers
        .get_all("surrogate-key")
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split_whitespace());
    let cache_tag = headers
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
