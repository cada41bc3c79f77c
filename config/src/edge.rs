//! The proxy's own settings, written in a `kind: proxy` file or under each
//! of `up`'s `proxies`: edge TLS, client-side limits, the retry budget,
//! fail-open to the origin and the access log.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cluster::HostPattern;
use crate::units::{Size, Span};
use crate::validate::Validator;

/// HTTPS at the edge: a second listener that serves the same sites over
/// TLS 1.2 / 1.3, HTTP/2 or HTTP/1.1 by ALPN.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeTls {
    pub listen: SocketAddr,
    /// Chosen by the name the client asks for (SNI): an exact name first,
    /// then `*.example.com`; a client that names none of them, or no name
    /// at all, gets the certificate marked `default` (or the first one).
    pub certificates: Vec<EdgeCertificate>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeCertificate {
    /// PEM certificate chain, leaf first (relative to the file naming it).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Server names this certificate answers for.
    pub names: Vec<HostPattern>,
    /// Served when the client's name matches no certificate.
    #[serde(default)]
    pub default: bool,
}

/// What a client may send and how long it may take.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientLimits {
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Time to send complete request headers (431/close against slowloris).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Span,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with GOAWAY).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Span,
    /// Request line and headers (431 beyond).
    #[serde(default = "default_max_header_size")]
    pub max_header_size: Size,
    /// Declared request body (413 beyond).
    #[serde(default = "default_max_body_size")]
    pub max_body_size: Size,
    /// On shutdown, how long in-flight requests may finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Span,
}

fn default_max_connections() -> u32 {
    10_000
}
fn default_header_read_timeout() -> Span {
    Span::from_secs(10)
}
fn default_idle_timeout() -> Span {
    Span::from_secs(60)
}
fn default_max_header_size() -> Size {
    Size::kib(64)
}
fn default_max_body_size() -> Size {
    Size::mib(64)
}
fn default_drain_timeout() -> Span {
    Span::from_secs(10)
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_header_size: default_max_header_size(),
            max_body_size: default_max_body_size(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// Retries of GET and HEAD on the next cache node.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries allowed per request sent (0.2: one retry per five requests).
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// Retries allowed every second whatever the traffic.
    #[serde(default = "default_min_retries_per_second")]
    pub min_per_second: u32,
}

fn default_budget_ratio() -> f64 {
    0.2
}
fn default_min_retries_per_second() -> u32 {
    10
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget_ratio: default_budget_ratio(),
            min_per_second: default_min_retries_per_second(),
        }
    }
}

/// What the proxy does when no cache node is usable.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailOpen {
    /// `true`: send requests to the site's origin directly; `false`: 503.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Origin requests this proxy may have open at once when failing open;
    /// more get 503, so a dead cache tier does not flatten the origin.
    #[serde(default = "default_fail_open_requests")]
    pub max_origin_requests: u32,
}

fn yes() -> bool {
    true
}
fn default_fail_open_requests() -> u32 {
    64
}

impl Default for FailOpen {
    fn default() -> Self {
        FailOpen {
            enabled: true,
            max_origin_requests: default_fail_open_requests(),
        }
    }
}

/// The proxy's hot tier: the few objects every viewer wants at once (the
/// live window: each rendition's playlist and newest segments), kept in the
/// proxy itself so that their requests skip the hop to a cache node. A
/// copy is kept only for as long as the cache node that owns it says it is
/// fresh, and only when the node would serve it to anyone.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HotTier {
    /// Bytes of responses kept (bodies, headers and per-entry overhead);
    /// `0` turns the tier off.
    #[serde(default = "default_hot_capacity")]
    pub capacity: Size,
    /// Responses larger than this stream from the cache node unkept.
    #[serde(default = "default_hot_max_object_size")]
    pub max_object_size: Size,
}

fn default_hot_capacity() -> Size {
    // Ten renditions × (playlist + six 2 s segments at up to 3 MiB) is
    // about 200 MiB: one live window of a ladder, with room for a second.
    Size::mib(256)
}
fn default_hot_max_object_size() -> Size {
    Size::mib(16)
}

impl Default for HotTier {
    fn default() -> Self {
        HotTier {
            capacity: default_hot_capacity(),
            max_object_size: default_hot_max_object_size(),
        }
    }
}

impl HotTier {
    pub fn enabled(&self) -> bool {
        self.capacity.bytes() > 0
    }

    fn validate(&self, at: &str, v: &mut Validator) {
        let c = self.capacity.bytes();
        if c != 0 && c < 1024 * 1024 {
            v.error(
                &v.join(at, "capacity"),
                format!("{} is below 1 MiB", self.capacity),
                "0 (off) or at least 1MiB, such as 256MiB",
            );
        }
        // Above the capacity it changes nothing: no object that large is
        // kept (the tier clamps it), so it is not an error.
        if self.max_object_size.bytes() < 1024 {
            v.error(
                &v.join(at, "max_object_size"),
                format!("{} is too small", self.max_object_size),
                "at least 1KiB, such as 16MiB",
            );
        }
    }
}

/// What the proxy does when it is asked for more than it can do: it turns
/// requests away with a fast `503` and `Retry-After` instead of queueing
/// them without end, newcomers first, so that the audience already
/// watching keeps playing. Two signals decide: how late a task that
/// becomes ready gets a worker (the queue every request stands in), and
/// how many requests wait on a cache node or origin at once.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Off by default: on `ipl-final` against one core, one run with it
    /// stalled viewers a tenth as much as plain queueing and the next
    /// twice as much (docs/performance.md, "Overload shedding"). `false`:
    /// every request is admitted and waits as long as it must.
    #[serde(default)]
    pub enabled: bool,
    /// Scheduling delay (the minimum over 100 ms) above which a new
    /// viewer's first request is refused. Nothing else is refused for
    /// delay: a refused segment stalls a viewer already watching.
    #[serde(default = "default_max_delay")]
    pub max_delay: Span,
    /// Requests waiting on a cache node or origin at once. New viewers may
    /// fill 80 % of it, segments 95 %, playlists all. Default: 4096 per
    /// core of the machine.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// How long a viewer already watching waits for a slot among
    /// `max_in_flight` before its request is refused; new viewers do not
    /// wait.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: Span,
    /// What refused clients are told to wait (`Retry-After`, whole seconds).
    #[serde(default = "default_retry_after")]
    pub retry_after: Span,
    /// File names of the first request a new viewer makes (the HLS
    /// multivariant playlist); they are the first turned away.
    #[serde(default = "default_entry_files")]
    pub entry_files: Vec<String>,
}

fn default_max_delay() -> Span {
    Span::from_millis(5)
}
fn default_queue_timeout() -> Span {
    Span::from_millis(500)
}
fn default_retry_after() -> Span {
    Span::from_secs(1)
}
fn default_entry_files() -> Vec<String> {
    vec!["master.m3u8".to_string()]
}

impl Default for Overload {
    fn default() -> Self {
        Overload {
            enabled: false,
            max_delay: default_max_delay(),
            max_in_flight: None,
            queue_timeout: default_queue_timeout(),
            retry_after: default_retry_after(),
            entry_files: default_entry_files(),
        }
    }
}

impl Overload {
    /// `max_in_flight`, or its default for this machine.
    pub fn max_in_flight(&self) -> usize {
        match self.max_in_flight {
            Some(n) => n as usize,
            None => 4096 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    fn validate(&self, at: &str, v: &mut Validator) {
        if self.max_in_flight.is_some_and(|n| n == 0 || n > 10_000_000) {
            v.error(
                &v.join(at, "max_in_flight"),
                format!("{} is out of range", self.max_in_flight.unwrap_or(0)),
                "1 to 10000000, or leave it out for 4096 per core",
            );
        }
        if self.max_delay.get() < std::time::Duration::from_millis(1) {
            v.error(
                &v.join(at, "max_delay"),
                format!("{} is below 1ms", self.max_delay),
                "at least 1ms (the timer's resolution), such as 5ms",
            );
        }
        if self.retry_after.get() < std::time::Duration::from_secs(1) {
            v.error(
                &v.join(at, "retry_after"),
                format!("{} is below 1s", self.retry_after),
                "whole seconds, at least 1s",
            );
        }
        for (i, name) in self.entry_files.iter().enumerate() {
            if name.is_empty() || name.contains('/') {
                v.error(
                    &format!("{}[{i}]", v.join(at, "entry_files")),
                    format!("{name:?} is not a file name"),
                    "a file name without a slash, such as master.m3u8",
                );
            }
        }
    }
}

/// Where a proxy or cache node gets its cluster config and membership
/// when a control plane runs them, instead of from files.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlSource {
    /// Control-plane nodes, tried in turn.
    pub servers: Vec<crate::cluster::HostPort>,
    /// Bearer token (the write token: agents register themselves).
    pub token_file: PathBuf,
    /// The last good state from the control plane, written after each
    /// change; with every control-plane node down, a restart starts from it.
    pub state_file: PathBuf,
    /// Address other parts reach this one at; default: its listen address.
    #[serde(default)]
    pub advertise: Option<crate::cluster::HostPort>,
    #[serde(default)]
    pub zone: Option<String>,
}

impl ControlSource {
    pub(crate) fn resolve_paths(&mut self, base: &std::path::Path) {
        self.token_file = base.join(&self.token_file);
        self.state_file = base.join(&self.state_file);
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.servers.is_empty() {
            v.error(
                &v.join(at, "servers"),
                "no servers",
                "the host:port of at least one control-plane node",
            );
        }
    }
}

/// Everything a proxy process is configured with besides its cluster.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettings {
    #[serde(default)]
    pub tls: Option<EdgeTls>,
    #[serde(default)]
    pub limits: ClientLimits,
    #[serde(default)]
    pub retries: RetryPolicy,
    #[serde(default)]
    pub fail_open: FailOpen,
    /// One JSON line per request on stdout (sites can opt out).
    #[serde(default)]
    pub access_log: bool,
    #[serde(default)]
    pub hot_tier: HotTier,
    #[serde(default)]
    pub overload: Overload,
}

impl EdgeSettings {
    pub(crate) fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(tls) = self.tls.as_mut() {
            for c in &mut tls.certificates {
                c.cert_file = base.join(&c.cert_file);
                c.key_file = base.join(&c.key_file);
            }
        }
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(tls) = &self.tls {
            let tp = v.join(at, "tls");
            if tls.certificates.is_empty() {
                v.error(
                    &v.join(&tp, "certificates"),
                    "no certificates",
                    "at least one entry with cert_file, key_file and names",
                );
            }
            let mut names = Vec::new();
            for (i, c) in tls.certificates.iter().enumerate() {
                let cp = format!("{}[{i}]", v.join(&tp, "certificates"));
                if c.names.is_empty() {
                    v.error(
                        &format!("{cp}.names"),
                        "no names",
                        "server names such as live.example.com or *.example.com",
                    );
                }
                for (j, n) in c.names.iter().enumerate() {
                    v.unique(
                        &mut names,
                        &n.to_string(),
                        &format!("{cp}.names[{j}]"),
                        "certificate name",
                    );
                }
            }
            if tls.certificates.iter().filter(|c| c.default).count() > 1 {
                v.error(
                    &v.join(&tp, "certificates"),
                    "more than one certificate is marked default",
                    "default: true on at most one certificate",
                );
            }
        }
        let lp = v.join(at, "limits");
        let l = &self.limits;
        if l.max_connections == 0 || l.max_connections > 1_000_000 {
            v.error(
                &v.join(&lp, "max_connections"),
                format!("{} is out of range", l.max_connections),
                "1 to 1000000",
            );
        }
        if l.max_header_size.bytes() < 8 * 1024 || l.max_header_size.bytes() > 1024 * 1024 {
            v.error(
                &v.join(&lp, "max_header_size"),
                format!("{} is out of range", l.max_header_size),
                "8KiB to 1MiB",
            );
        }
        for (name, span) in [
            ("header_read_timeout", l.header_read_timeout),
            ("idle_timeout", l.idle_timeout),
        ] {
            if span.get().is_zero() {
                v.error(
                    &v.join(&lp, name),
                    "must not be zero",
                    "a duration such as 10s",
                );
            }
        }
        let rp = v.join(at, "retries");
        if !(0.0..=1.0).contains(&self.retries.budget_ratio) {
            v.error(
                &v.join(&rp, "budget_ratio"),
                format!("{} is out of range", self.retries.budget_ratio),
                "0.0 (no retries beyond the floor) to 1.0 (one retry per request)",
            );
        }
        self.hot_tier.validate(&v.join(at, "hot_tier"), v);
        self.overload.validate(&v.join(at, "overload"), v);
        let fp = v.join(at, "fail_open");
        if self.fail_open.max_origin_requests == 0 || self.fail_open.max_origin_requests > 100_000 {
            v.error(
                &v.join(&fp, "max_origin_requests"),
                format!("{} is out of range", self.fail_open.max_origin_requests),
                "1 to 100000",
            );
        }
    }
}
