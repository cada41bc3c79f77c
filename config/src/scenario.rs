//! `kind: scenario`: a load test as a timeline of audience phases, a mix of
//! viewer behaviours, and fault steps. `fanout loadtest run` plays it
//! against any HTTP target.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::units::Span;
use crate::validate::Validator;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Every random choice (arrival times, renditions, titles, objects)
    /// follows from this, so two runs with one seed ask for the same things.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub target: Target,
    #[serde(default)]
    pub limits: Limits,
    pub phases: Vec<Phase>,
    /// Who arrives: one of these per arrival, by weight.
    pub mix: Vec<ViewerModel>,
    #[serde(default)]
    pub faults: Vec<FaultStep>,
}

fn default_seed() -> u64 {
    1
}

/// Where requests go. Overridable on the command line.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Viewers are spread over these addresses (viewer i uses i mod n), as
    /// a DNS round robin or a load balancer would spread them.
    pub addresses: Vec<SocketAddr>,
    /// The Host header every request carries.
    pub host: String,
    /// The synthetic origin, read for its request counters (origin offload
    /// and origin requests over time); leave out for a real origin.
    #[serde(default)]
    pub origin: Option<SocketAddr>,
    /// Admin listeners of Fanout cache nodes, whose `/metrics` the report
    /// reads prefetch counters from (started, used, wasted, dropped).
    #[serde(default)]
    pub metrics: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight at once across all viewers; more wait, and the
    /// wait counts in their latency.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Span,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Span,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: default_max_in_flight(),
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

fn default_max_in_flight() -> u32 {
    10_000
}
fn default_request_timeout() -> Span {
    Span::from_secs(10)
}
fn default_connect_timeout() -> Span {
    Span::from_secs(2)
}

/// A stretch of the event: viewers arrive at `arrival_rate` per second
/// (Poisson), rising linearly from `start_rate` when given (a ramp), while
/// fewer than `population` are watching. When more than `population` are
/// watching at the start (a drain), viewers leave evenly over the phase
/// until `population` remain.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub duration: Span,
    pub arrival_rate: f64,
    #[serde(default)]
    pub start_rate: Option<f64>,
    pub population: u64,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(tag = "viewer", rename_all = "snake_case", deny_unknown_fields)]
pub enum ViewerModel {
    /// A live HLS player: master playlist, a rendition, the media playlist
    /// every target duration, every new segment; down-switches when a
    /// segment takes more than `abr_down` of its duration, up-switches
    /// when it takes less than `abr_up`. On a low-latency stream (the
    /// playlist says `CAN-BLOCK-RELOAD=YES` and lists parts) it plays part
    /// by part, asking for each playlist with a blocking reload.
    Live {
        #[serde(default = "default_weight")]
        weight: u32,
        stream: String,
        #[serde(default = "default_abr_down")]
        abr_down: f64,
        #[serde(default = "default_abr_up")]
        abr_up: f64,
        /// Segments behind the live edge a player starts at (RFC 8216
        /// §6.3.3 asks for at least three target durations).
        #[serde(default = "default_live_offset")]
        start_behind: u32,
        /// Name the next segment or part in each request's CMCD
        /// (`CMCD=nor="…"`, CTA-5004), as players that send CMCD do.
        #[serde(default)]
        cmcd: bool,
    },
    /// A VOD player: a title by Zipf popularity, segments in order with a
    /// small read-ahead, sometimes a seek, leaving after `watch_segments`.
    Vod {
        #[serde(default = "default_weight")]
        weight: u32,
        titles: u32,
        #[serde(default = "default_zipf")]
        zipf: f64,
        #[serde(default = "default_seek")]
        seek_probability: f64,
        #[serde(default = "default_watch")]
        watch_segments: u32,
        /// Segments fetched ahead of playback before pacing to real time.
        #[serde(default = "default_read_ahead")]
        read_ahead: u32,
    },
    /// One request for a static object `{prefix}{n}`, n in [0, count) by
    /// Zipf popularity: page assets, thumbnails, API reads.
    Static {
        #[serde(default = "default_weight")]
        weight: u32,
        prefix: String,
        count: u32,
        #[serde(default = "default_zipf")]
        zipf: f64,
    },
}

fn default_weight() -> u32 {
    1
}
fn default_abr_down() -> f64 {
    0.8
}
fn default_abr_up() -> f64 {
    0.3
}
fn default_live_offset() -> u32 {
    3
}
fn default_zipf() -> f64 {
    1.0
}
fn default_seek() -> f64 {
    0.05
}
fn default_watch() -> u32 {
    30
}
fn default_read_ahead() -> u32 {
    3
}

impl ViewerModel {
    /// This viewer's share of arrivals, relative to the others'.
    pub fn weight(&self) -> u32 {
        match self {
            ViewerModel::Live { weight, .. }
            | ViewerModel::Vod { weight, .. }
            | ViewerModel::Static { weight, .. } => *weight,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ViewerModel::Live { .. } => "live",
            ViewerModel::Vod { .. } => "vod",
            ViewerModel::Static { .. } => "static",
        }
    }
}

/// Something done to the system under test at a point in the run: exactly
/// one of `http`, `signal` or `command`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultStep {
    /// Time from the start of the run.
    pub at: Span,
    #[serde(default)]
    pub name: Option<String>,
    /// An HTTP request, e.g. to an admin endpoint.
    #[serde(default)]
    pub http: Option<HttpFault>,
    /// A signal to a process id: `{ pid: 4242, signal: KILL }`.
    #[serde(default)]
    pub signal: Option<SignalFault>,
    /// A shell command, run with `sh -c`.
    #[serde(default)]
    pub command: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    pub url: String,
    #[serde(default = "default_fault_method")]
    pub method: String,
    /// `"Name: value"` lines.
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalFault {
    pub pid: u32,
    #[serde(default = "default_signal")]
    pub signal: String,
}

/// What a fault step does, once validated.
#[derive(Debug, Clone, Copy)]
pub enum FaultAction<'a> {
    Http(&'a HttpFault),
    Signal(&'a SignalFault),
    Command(&'a str),
}

fn default_fault_method() -> String {
    "POST".into()
}
fn default_signal() -> String {
    "TERM".into()
}

const SIGNALS: [&str; 8] = ["TERM", "KILL", "INT", "HUP", "STOP", "CONT", "USR1", "USR2"];

impl FaultStep {
    /// The action; validation guarantees there is exactly one.
    pub fn action(&self) -> FaultAction<'_> {
        match (&self.http, &self.signal, &self.command) {
            (Some(h), _, _) => FaultAction::Http(h),
            (None, Some(s), _) => FaultAction::Signal(s),
            (None, None, Some(c)) => FaultAction::Command(c),
            (None, None, None) => FaultAction::Command("true"),
        }
    }

    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match self.action() {
            FaultAction::Http(h) => format!("{} {}", h.method, h.url),
            FaultAction::Signal(s) => {
                format!("SIG{} to {}", s.signal.trim_start_matches("SIG"), s.pid)
            }
            FaultAction::Command(c) => c.to_string(),
        }
    }
}

impl ScenarioConfig {
    /// The run's length: the phases end to end.
    pub fn duration(&self) -> std::time::Duration {
        self.phases.iter().map(|p| p.duration.get()).sum()
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        if self.name.trim().is_empty() {
            v.error("name", "empty name", "a short name for reports");
        }
        if self.target.addresses.is_empty() {
            v.error(
                "target.addresses",
                "no addresses",
                "one or more ip:port to send requests to",
            );
        }
        if self.target.host.is_empty() || self.target.host.contains(char::is_whitespace) {
            v.error(
                "target.host",
                format!("invalid Host {:?}", self.target.host),
                "a host name such as localhost or live.example.com",
            );
        }
        if self.limits.max_in_flight == 0 {
            v.error(
                "limits.max_in_flight",
                "must be at least 1",
                "a positive number of requests",
            );
        }
        if self.limits.request_timeout.get().is_zero() {
            v.error(
                "limits.request_timeout",
                "must be longer than zero",
                "a duration like 10s",
            );
        }
        if self.phases.is_empty() {
            v.error(
                "phases",
                "no phases",
                "one or more phases with name, duration, arrival_rate and population",
            );
        }
        for (i, p) in self.phases.iter().enumerate() {
            let at = format!("phases[{i}]");
            if p.duration.get().is_zero() {
                v.error(
                    &format!("{at}.duration"),
                    "must be longer than zero",
                    "a duration like 30s or 5m",
                );
            }
            for (field, rate) in [
                ("arrival_rate", Some(p.arrival_rate)),
                ("start_rate", p.start_rate),
            ] {
                if let Some(r) = rate {
                    if !r.is_finite() || r < 0.0 {
                        v.error(
                            &format!("{at}.{field}"),
                            format!("invalid rate {r}"),
                            "viewers per second, zero or more",
                        );
                    }
                }
            }
        }
        if self.mix.is_empty() {
            v.error(
                "mix",
                "no viewers",
                "one or more of viewer: live, vod or static",
            );
        }
        if self.mix.iter().all(|m| m.weight() == 0) && !self.mix.is_empty() {
            v.error(
                "mix",
                "every weight is zero",
                "at least one weight above zero",
            );
        }
        for (i, m) in self.mix.iter().enumerate() {
            let at = format!("mix[{i}]");
            match m {
                ViewerModel::Live {
                    stream,
                    abr_down,
                    abr_up,
                    ..
                } => {
                    if stream.is_empty() || stream.contains('/') {
                        v.error(
                            &format!("{at}.stream"),
                            format!("invalid stream name {stream:?}"),
                            "the name of a stream served under /live/{name}/",
                        );
                    }
                    if !(*abr_up > 0.0 && abr_up < abr_down && *abr_down <= 10.0) {
                        v.error(
                            &format!("{at}.abr_down"),
                            format!("abr_up {abr_up} and abr_down {abr_down} do not make a band"),
                            "0 < abr_up < abr_down, as fractions of a segment's duration",
                        );
                    }
                }
                ViewerModel::Vod {
                    titles,
                    zipf,
                    seek_probability,
                    watch_segments,
                    ..
                } => {
                    if *titles == 0 {
                        v.error(
                            &format!("{at}.titles"),
                            "must be at least 1",
                            "the number of titles under /vod/",
                        );
                    }
                    check_zipf(v, &format!("{at}.zipf"), *zipf);
                    if !(0.0..=1.0).contains(seek_probability) {
                        v.error(
                            &format!("{at}.seek_probability"),
                            format!("{seek_probability} is not a probability"),
                            "a number from 0 to 1",
                        );
                    }
                    if *watch_segments == 0 {
                        v.error(
                            &format!("{at}.watch_segments"),
                            "must be at least 1",
                            "segments watched before leaving",
                        );
                    }
                }
                ViewerModel::Static {
                    prefix,
                    count,
                    zipf,
                    ..
                } => {
                    if !prefix.starts_with('/') {
                        v.error(
                            &format!("{at}.prefix"),
                            format!("{prefix:?} does not start with /"),
                            "a path prefix such as /static/",
                        );
                    }
                    if *count == 0 {
                        v.error(
                            &format!("{at}.count"),
                            "must be at least 1",
                            "the number of objects under the prefix",
                        );
                    }
                    check_zipf(v, &format!("{at}.zipf"), *zipf);
                }
            }
        }
        let total = self.duration();
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults[{i}]");
            if f.at.get() > total {
                v.error(
                    &format!("{at}.at"),
                    format!("{} is after the run ends ({})", f.at, Span(total)),
                    "a time within the phases' total duration",
                );
            }
            let given = [f.http.is_some(), f.signal.is_some(), f.command.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                v.error(
                    &at,
                    "a fault step does exactly one thing",
                    "one of http: {url, method}, signal: {pid, signal} or command: \"...\"",
                );
                continue;
            }
            match f.action() {
                FaultAction::Http(h) => {
                    if !h.url.starts_with("http://") {
                        v.error(
                            &format!("{at}.http.url"),
                            format!("{:?} is not an http:// URL", h.url),
                            "http://host:port/path",
                        );
                    }
                    if h.method.is_empty() || !h.method.bytes().all(|b| b.is_ascii_uppercase()) {
                        v.error(
                            &format!("{at}.http.method"),
                            format!("invalid method {:?}", h.method),
                            "GET, POST, PUT, DELETE, ...",
                        );
                    }
                    for (j, line) in h.headers.iter().enumerate() {
                        if line
                            .split_once(':')
                            .is_none_or(|(n, _)| n.trim().is_empty())
                        {
                            v.error(
                                &format!("{at}.http.headers[{j}]"),
                                format!("{line:?} is not a header"),
                                "\"Name: value\"",
                            );
                        }
                    }
                }
                FaultAction::Signal(s) => {
                    if s.pid <= 1 {
                        v.error(
                            &format!("{at}.signal.pid"),
                            format!("refusing to signal pid {}", s.pid),
                            "the pid of a process under test",
                        );
                    }
                    if !SIGNALS.contains(&s.signal.trim_start_matches("SIG")) {
                        v.error(
                            &format!("{at}.signal.signal"),
                            format!("unknown signal {:?}", s.signal),
                            SIGNALS.join(", "),
                        );
                    }
                }
                FaultAction::Command(c) => {
                    if c.trim().is_empty() {
                        v.error(&format!("{at}.command"), "empty command", "a shell command");
                    }
                }
            }
        }
    }
}

fn check_zipf(v: &mut Validator, at: &str, s: f64) {
    if !(s.is_finite() && (0.0..=5.0).contains(&s)) {
        v.error(
            at,
            format!("Zipf exponent {s} out of range"),
            "0 (uniform) to 5; about 1 for typical popularity",
        );
    }
}
