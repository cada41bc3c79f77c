//! The cluster config: the sites Fanout serves and how it routes and checks
//! cache nodes. This is the state the control plane will distribute; until
//! then each proxy and cache node reads it from a file.

use std::fmt;

use serde::Deserialize;

use crate::units::{Size, Span};
use crate::validate::Validator;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Sites in match order (exact host before wildcard, longest path prefix
    /// first; the order here breaks no ties because ties are refused).
    pub sites: Vec<Site>,
    /// Name of the site that answers requests for hosts no site lists. Without
    /// it such requests get 404.
    #[serde(default)]
    pub default_site: Option<String>,
    #[serde(default)]
    pub hashing: Hashing,
    #[serde(default)]
    pub health: HealthCheck,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short name used in cache keys, metrics and logs.
    pub name: String,
    /// `example.com` or `*.example.com` (any subdomain, not the apex).
    pub hosts: Vec<HostPattern>,
    #[serde(default = "root_prefix")]
    pub path_prefixes: Vec<String>,
    pub origin: OriginPool,
    #[serde(default)]
    pub cache: CachePolicy,
    /// Whether proxies with an access log write lines for this site.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// The share of this site's requests that get a line (1: all).
    #[serde(default = "all")]
    pub access_log_sample: f64,
    /// Filling objects before viewers ask for them (off by default).
    #[serde(default)]
    pub prefetch: Prefetch,
}

/// Prefetch: the cache node that refreshes a live HLS media playlist from
/// the origin has every segment, part and preload hint the new version
/// lists (and the previous one did not) filled by the cache node that
/// owns it on the ring, so a new segment's first viewers find it stored.
/// Prefetches have their own budget per site and cache node, and are
/// dropped, counted, when it is spent.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prefetch {
    /// Prefetch what new versions of live HLS media playlists and DASH
    /// MPDs (`SegmentTemplate` with a `SegmentTimeline`, `SegmentList`)
    /// list.
    #[serde(default)]
    pub playlists: bool,
    /// Prefetch the object a player says it will ask for next: CMCD
    /// (CTA-5004) `nor` in the `CMCD` query parameter or the
    /// `CMCD-Request` header. The `CMCD` parameter is never part of the
    /// cache key, whatever this says.
    #[serde(default)]
    pub cmcd: bool,
    /// Prefetch what the origin names on its responses: `Link: <uri>;
    /// rel=preload` and `CDN-Origin-Assist-Prefetch-Path` (at most
    /// `max_per_playlist` per response).
    #[serde(default)]
    pub origin_hints: bool,
    /// Prefetches one cache node fills at once for this site; more are
    /// dropped.
    #[serde(default = "default_prefetch_concurrency")]
    pub max_concurrent: u32,
    /// Bytes a second one cache node may fetch for this site's
    /// prefetches, averaged over a second; past it, prefetches are
    /// dropped until the second's bytes drain. Unset: no byte budget.
    #[serde(default)]
    pub bandwidth: Option<Size>,
    /// URIs taken from one playlist version: a playlist that lists more
    /// new ones has the newest this many prefetched, the rest dropped.
    #[serde(default = "default_prefetch_per_playlist")]
    pub max_per_playlist: u32,
    /// How long a new playlist version is held back from viewers while the
    /// segments it adds are prefetched. Viewers then see a segment listed
    /// only once it is stored, so their first request for it is a hit; a
    /// viewer waits no longer for the segment than it would have waited
    /// for its fill. 0s: not held (viewers then often join the
    /// prefetch's fill rather than hit).
    #[serde(default = "default_prefetch_hold")]
    pub hold: Span,
}

fn default_prefetch_hold() -> Span {
    Span::from_secs(1)
}

fn default_prefetch_concurrency() -> u32 {
    16
}

fn default_prefetch_per_playlist() -> u32 {
    8
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            playlists: false,
            cmcd: false,
            origin_hints: false,
            max_concurrent: default_prefetch_concurrency(),
            bandwidth: None,
            max_per_playlist: default_prefetch_per_playlist(),
            hold: default_prefetch_hold(),
        }
    }
}

fn all() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

fn root_prefix() -> Vec<String> {
    vec!["/".to_string()]
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OriginPool {
    #[serde(default)]
    pub scheme: Scheme,
    /// `host:port` of each origin server; requests are spread across them.
    pub addresses: Vec<HostPort>,
    /// Host header sent to the origin; default: the client's Host.
    #[serde(default)]
    pub host_header: Option<String>,
    /// For https: a PEM file of CA certificates trusted in addition to the
    /// system's (relative to the file that names it). The certificate must
    /// match the host name in `addresses`.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Span,
    /// Time allowed for the origin's response headers.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Span,
    /// Time allowed for a whole fill, headers and body: past it the fill
    /// fails for every waiter instead of holding them on a stalled origin.
    #[serde(default = "default_total_timeout")]
    pub total_timeout: Span,
}

fn default_total_timeout() -> Span {
    Span::from_secs(60)
}

fn default_connect_timeout() -> Span {
    Span::from_secs(1)
}
fn default_response_timeout() -> Span {
    Span::from_secs(10)
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// Freshness lifetime for a 200 whose origin gives none; also the cap on
    /// the heuristic lifetime taken from Last-Modified.
    #[serde(default = "default_ttl")]
    pub default_ttl: Span,
    /// Lifetime of every storable 200, whatever the origin says (for an
    /// origin whose headers cannot be fixed).
    #[serde(default)]
    pub override_ttl: Option<Span>,
    /// Larger responses are passed through, not stored.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: Size,
    #[serde(default)]
    pub query: QueryPolicy,
    /// How long past its freshness a stored response may still be served
    /// when the origin fails (errors, times out or refuses), on top of any
    /// `stale-if-error` the origin grants. Never for `must-revalidate`.
    #[serde(default = "default_stale_on_error")]
    pub stale_on_error: Span,
    /// What to do with a response that sets a cookie.
    #[serde(default)]
    pub set_cookie: SetCookiePolicy,
    /// The content codings the site's responses may differ by. A request's
    /// `Accept-Encoding` is rewritten to those of these it accepts (in this
    /// order; `identity` when none) before it forms a `Vary` key or reaches
    /// the origin, so `gzip, deflate, br` and `br, gzip` share one entry.
    /// An empty list sends `identity` always.
    #[serde(default = "default_accept_encoding")]
    pub accept_encoding: Vec<String>,
    /// Targeted cache-control fields (RFC 9213) this site's caches obey in
    /// place of `Cache-Control` and `Expires`, in order of preference: the
    /// first present and valid one decides. Lower-case field names.
    #[serde(default = "default_targeted_fields")]
    pub targeted_fields: Vec<String>,
    /// Whether clients get the targeted fields too; by default they are
    /// removed from responses (proxies still receive them from nodes).
    #[serde(default)]
    pub forward_targeted_fields: bool,
    /// Fetch objects from the origin in aligned slices of this size (as
    /// NGINX's slice module does): each slice is one collapsed, stored
    /// range request, so a range request into a large file costs only
    /// the slices it covers and a full request streams slice after slice.
    /// Objects no larger than one slice are stored whole. Off by default.
    #[serde(default)]
    pub slice: Option<Size>,
}

/// Smaller slices would cost an origin request per few packets.
const MIN_SLICE: Size = Size::kib(64);

fn default_targeted_fields() -> Vec<String> {
    vec!["cdn-cache-control".to_string()]
}

fn default_accept_encoding() -> Vec<String> {
    ["zstd", "br", "gzip"].map(String::from).to_vec()
}

/// Whether a response with `Set-Cookie` may be stored.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SetCookiePolicy {
    /// Not stored: it goes to the client that asked alone, and the key is
    /// hit-for-pass for a while. A cookie is usually one viewer's.
    #[default]
    Pass,
    /// The `Set-Cookie` fields are removed from the origin's response, for
    /// every client, and what remains is cached as usual: for an origin
    /// that sets cookies nobody needs on otherwise cacheable responses.
    Strip,
}

fn default_stale_on_error() -> Span {
    Span::from_secs(10)
}

fn default_ttl() -> Span {
    Span::from_secs(10)
}
fn default_max_object_size() -> Size {
    Size::mib(64)
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            default_ttl: default_ttl(),
            override_ttl: None,
            max_object_size: default_max_object_size(),
            query: QueryPolicy::default(),
            stale_on_error: default_stale_on_error(),
            set_cookie: SetCookiePolicy::default(),
            accept_encoding: default_accept_encoding(),
            targeted_fields: default_targeted_fields(),
            forward_targeted_fields: false,
            slice: None,
        }
    }
}

/// How the query string takes part in the cache key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryPolicy {
    #[serde(default)]
    pub mode: QueryMode,
    /// Parameters removed from the key first (tracking ids, session tokens).
    #[serde(default)]
    pub drop: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// The query as sent, in its order.
    #[default]
    Keep,
    /// Parameters sorted, so `?a=1&b=2` and `?b=2&a=1` share an entry.
    Sort,
    /// No query in the key at all.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hashing {
    /// Points on the ring per unit of node weight.
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    /// Bounded-load factor c: a node takes at most c × the average in-flight
    /// load before keys spill to the next node.
    #[serde(default = "default_load_factor")]
    pub load_factor: f64,
}

fn default_vnodes() -> u32 {
    160
}
fn default_load_factor() -> f64 {
    1.25
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            vnodes: default_vnodes(),
            load_factor: default_load_factor(),
        }
    }
}

/// Active health probes of cache nodes by each proxy.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_interval")]
    pub interval: Span,
    #[serde(default = "default_probe_timeout")]
    pub timeout: Span,
    /// Consecutive good probes before a down node is used again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed probes before a node is marked down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_interval() -> Span {
    Span::from_secs(1)
}
fn default_probe_timeout() -> Span {
    Span::from_millis(500)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: default_interval(),
            timeout: default_probe_timeout(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

/// A host name (`live.example.com`) or a wildcard for its subdomains
/// (`*.example.com`), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum HostPattern {
    Exact(String),
    /// Holds the suffix with its leading dot: `.example.com`.
    Wildcard(String),
}

const HOST_ALLOWED: &str = "a host name like live.example.com, or *.example.com for its subdomains";

impl TryFrom<String> for HostPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "invalid host pattern {s:?}; expected {HOST_ALLOWED}"
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// `host:port` where host is a name or an IP address (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!("invalid address {s:?}; expected host:port, like 127.0.0.1:9000, origin.internal:80 or [::1]:80")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || port == 0 || host.contains(['/', ' ']) {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl ClusterConfig {
    /// Makes file paths named in the config relative to `base`, the
    /// directory of the file they were written in.
    pub(crate) fn resolve_paths(&mut self, base: &std::path::Path) {
        for site in &mut self.sites {
            if let Some(ca) = site.origin.ca_file.as_mut() {
                *ca = base.join(&*ca);
            }
        }
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.sites.is_empty() {
            v.error(
                &v.join(at, "sites"),
                "no sites",
                "at least one site with hosts and an origin",
            );
        }
        let mut names: Vec<(String, String)> = Vec::new();
        let mut routes: Vec<(String, String, String)> = Vec::new();
        for (i, site) in self.sites.iter().enumerate() {
            let sp = v.join(at, &format!("sites[{i}]"));
            site.validate(&sp, v);
            v.unique(&mut names, &site.name, &v.join(&sp, "name"), "site name");
            for (h, host) in site.hosts.iter().enumerate() {
                for prefix in &site.path_prefixes {
                    let route = (host.to_string(), prefix.clone());
                    if let Some((_, _, first)) = routes
                        .iter()
                        .find(|(h2, p2, _)| (h2, p2) == (&route.0, &route.1))
                    {
                        v.error(
                            &v.join(&sp, &format!("hosts[{h}]")),
                            format!("host {host} with path prefix {prefix:?} is already routed by {first}"),
                            "each host and path prefix pair in one site only",
                        );
                    } else {
                        routes.push((route.0, route.1, sp.clone()));
                    }
                }
            }
        }
        if let Some(d) = &self.default_site {
            if !self.sites.iter().any(|s| &s.name == d) {
                let known: Vec<&str> = self.sites.iter().map(|s| s.name.as_str()).collect();
                v.error(
                    &v.join(at, "default_site"),
                    format!("no site is named {d:?}"),
                    format!("one of the site names: {}", known.join(", ")),
                );
            }
        }
        let hp = v.join(at, "hashing");
        if self.hashing.vnodes == 0 || self.hashing.vnodes > 4096 {
            v.error(
                &v.join(&hp, "vnodes"),
                format!("{} is out of range", self.hashing.vnodes),
                "1 to 4096 (default 160)",
            );
        }
        if !(self.hashing.load_factor >= 1.0 && self.hashing.load_factor <= 100.0) {
            v.error(
                &v.join(&hp, "load_factor"),
                format!("{} is out of range", self.hashing.load_factor),
                "a number from 1.0 (perfectly even) to 100 (default 1.25)",
            );
        }
        let h = &self.health;
        let hp = v.join(at, "health");
        if h.interval.get().is_zero() {
            v.error(
                &v.join(&hp, "interval"),
                "interval is zero",
                "a positive duration such as 1s",
            );
        }
        if h.timeout.get().is_zero() || h.timeout >= h.interval {
            v.error(
                &v.join(&hp, "timeout"),
                format!(
                    "timeout {} must be positive and shorter than interval {}",
                    h.timeout, h.interval
                ),
                "a duration between 0 and the probe interval",
            );
        }
        for (name, n) in [("rise", h.rise), ("fall", h.fall)] {
            if n == 0 || n > 100 {
                v.error(
                    &v.join(&hp, name),
                    format!("{n} is out of range"),
                    "1 to 100 consecutive probes",
                );
            }
        }
    }
}

impl Site {
    fn validate(&self, at: &str, v: &mut Validator) {
        if !(0.0..=1.0).contains(&self.access_log_sample) {
            v.error(
                &v.join(at, "access_log_sample"),
                format!("{} is not a share", self.access_log_sample),
                "a number from 0 (no lines) to 1 (every request)",
            );
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            v.error(
                &v.join(at, "name"),
                format!("invalid site name {:?}", self.name),
                "1 to 64 letters, digits, '-' or '_'",
            );
        }
        if self.hosts.is_empty() {
            v.error(
                &v.join(at, "hosts"),
                "no hosts",
                "at least one host name or *.wildcard",
            );
        }
        if self.path_prefixes.is_empty() {
            v.error(
                &v.join(at, "path_prefixes"),
                "no path prefixes",
                "leave it out for \"/\", or list prefixes starting with /",
            );
        }
        for (i, p) in self.path_prefixes.iter().enumerate() {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                v.error(
                    &v.join(at, &format!("path_prefixes[{i}]")),
                    format!("invalid path prefix {p:?}"),
                    "a path that starts with / and has no query, fragment or spaces",
                );
            }
        }
        let op = v.join(at, "origin");
        if self.origin.ca_file.is_some() && self.origin.scheme != Scheme::Https {
            v.error(
                &v.join(&op, "ca_file"),
                "ca_file with scheme http",
                "scheme: https, or no ca_file",
            );
        }
        if self.origin.addresses.is_empty() {
            v.error(
                &v.join(&op, "addresses"),
                "empty origin pool",
                "at least one origin address as host:port",
            );
        }
        for (name, t) in [
            ("connect_timeout", self.origin.connect_timeout),
            ("response_timeout", self.origin.response_timeout),
            ("total_timeout", self.origin.total_timeout),
        ] {
            if t.get().is_zero() {
                v.error(
                    &v.join(&op, name),
                    "timeout is zero",
                    "a positive duration such as 2s",
                );
            }
        }
        if self.origin.total_timeout < self.origin.response_timeout {
            v.error(
                &v.join(&op, "total_timeout"),
                format!(
                    "{} is shorter than response_timeout {}",
                    self.origin.total_timeout, self.origin.response_timeout
                ),
                "a total at least as long as the wait for response headers",
            );
        }
        let pp = v.join(at, "prefetch");
        if !(1..=4096).contains(&self.prefetch.max_concurrent) {
            v.error(
                &v.join(&pp, "max_concurrent"),
                format!("{} is out of range", self.prefetch.max_concurrent),
                "1 to 4096 prefetches at once",
            );
        }
        if !(1..=1024).contains(&self.prefetch.max_per_playlist) {
            v.error(
                &v.join(&pp, "max_per_playlist"),
                format!("{} is out of range", self.prefetch.max_per_playlist),
                "1 to 1024 URIs per playlist version",
            );
        }
        if self.prefetch.hold.get() > std::time::Duration::from_secs(10) {
            v.error(
                &v.join(&pp, "hold"),
                format!("{} would keep viewers from the live edge", self.prefetch.hold),
                "at most 10s, and well under the stream's segment duration (such as 1s), or 0s not to hold",
            );
        }
        if self.prefetch.bandwidth.is_some_and(|b| b.bytes() < 1024) {
            v.error(
                &v.join(&pp, "bandwidth"),
                "less than 1KiB a second would prefetch nothing",
                "bytes a second such as 50MiB, or leave it out for no byte budget",
            );
        }
        let cp = v.join(at, "cache");
        if self.cache.max_object_size.bytes() == 0 {
            v.error(
                &v.join(&cp, "max_object_size"),
                "0 bytes would store nothing",
                "a positive size such as 64MiB",
            );
        }
        if let Some(slice) = self.cache.slice {
            if slice < MIN_SLICE || slice > self.cache.max_object_size {
                v.error(
                    &v.join(&cp, "slice"),
                    format!(
                        "{slice} is outside {MIN_SLICE}..=max_object_size ({})",
                        self.cache.max_object_size
                    ),
                    "a slice size such as 4MiB, at least 64KiB and no larger than max_object_size",
                );
            }
        }
        for (i, field) in self.cache.targeted_fields.iter().enumerate() {
            let name = !field.is_empty()
                && field
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name || field == "cache-control" {
                v.error(
                    &format!("{}[{i}]", v.join(&cp, "targeted_fields")),
                    format!("{field:?} is not a targeted field name"),
                    "lower-case field names such as cdn-cache-control (not cache-control itself)",
                );
            }
        }
        if self.cache.accept_encoding.len() > 32 {
            v.error(
                &v.join(&cp, "accept_encoding"),
                format!("{} codings", self.cache.accept_encoding.len()),
                "at most 32 content codings",
            );
        }
        for (i, coding) in self.cache.accept_encoding.iter().enumerate() {
            let token = !coding.is_empty()
                && coding
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.+".contains(&b));
            if !token || coding == "identity" {
                v.error(
                    &format!("{}[{i}]", v.join(&cp, "accept_encoding")),
                    format!("{coding:?} is not a content coding"),
                    "lower-case coding names such as zstd, br, gzip, deflate (identity is implied)",
                );
            }
        }
        if self.cache.query.mode == QueryMode::Ignore && !self.cache.query.drop.is_empty() {
            v.error(
                &v.join(&cp, "query.drop"),
                "drop has no effect when mode is ignore",
                "remove drop, or use mode keep or sort",
            );
        }
    }
}

crate::units::string_schema!(
    HostPattern,
    "A host name like live.example.com, or *.example.com for its subdomains."
);

crate::units::string_schema!(HostPort, "host:port, where host is a name or an IP address (IPv6 in brackets), like origin.internal:8080.");
