//! `kind: origin`: the synthetic origin that stands in for a video packager
//! and object store in demos and load tests.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::units::{Size, Span};
use crate::validate::Validator;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    pub listen: SocketAddr,
    /// Serve https with this certificate (PEM files, relative to this file).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Live HLS streams, served under `/live/{name}/`.
    #[serde(default)]
    pub live: Vec<LiveStream>,
    /// VOD titles, served under `/vod/{title}/`.
    #[serde(default)]
    pub vod: Option<VodLibrary>,
    /// Static objects, served under each group's prefix.
    #[serde(default)]
    pub objects: Vec<ObjectGroup>,
    /// Injected latency and errors, first matching rule wins.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// A certificate chain and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveStream {
    pub name: String,
    #[serde(default = "default_live_segment")]
    pub segment_duration: Span,
    /// Segments listed in each media playlist (the sliding window).
    #[serde(default = "default_window")]
    pub window: u32,
    /// Low-latency HLS (RFC 8216bis): publish each segment as parts of
    /// this duration, listed with `EXT-X-PART` and a preload hint for the
    /// next, and hold blocking playlist reloads (`_HLS_msn`, `_HLS_part`)
    /// and requests for the hinted part until they can be answered.
    /// Must divide `segment_duration` evenly. Default: no parts.
    #[serde(default)]
    pub part_duration: Option<Span>,
    pub renditions: Vec<Rendition>,
}

fn default_live_segment() -> Span {
    Span::from_secs(2)
}
fn default_window() -> u32 {
    6
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// Path segment and playlist name, such as `720p`.
    pub name: String,
    /// Bits per second, as advertised in the master playlist.
    pub bandwidth: u64,
    #[serde(default)]
    pub resolution: Option<String>,
    /// Bytes per segment; default: bandwidth × segment duration / 8.
    #[serde(default)]
    pub segment_size: Option<Size>,
}

impl Rendition {
    pub fn segment_bytes(&self, segment_duration: Span) -> u64 {
        match self.segment_size {
            Some(s) => s.bytes(),
            None => (self.bandwidth as f64 * segment_duration.get().as_secs_f64() / 8.0) as u64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VodLibrary {
    /// Titles are named `0` to `titles - 1`.
    pub titles: u32,
    pub segments: u32,
    #[serde(default = "default_vod_segment")]
    pub segment_duration: Span,
    pub renditions: Vec<Rendition>,
}

fn default_vod_segment() -> Span {
    Span::from_secs(4)
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectGroup {
    /// Objects are `{prefix}{0..count}`; the prefix starts and ends with `/`.
    pub prefix: String,
    pub count: u32,
    pub size: Size,
    #[serde(default = "default_object_cache_control")]
    pub cache_control: String,
    /// Request headers the objects vary on (`Vary`): each value gets its own
    /// bytes. `*` varies on everything, so nothing may be cached.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Extra response headers, such as `surrogate-key: "match sport"`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_object_cache_control() -> String {
    "public, max-age=300".to_string()
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Glob over the request path: `/live/*/*/*.ts`, `/static/**`.
    pub path: PathGlob,
    #[serde(default)]
    pub latency: Option<Span>,
    /// Share of matching requests answered with `error_status`, 0.0 to 1.0.
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    /// Body bytes per second: a slow origin, so fills take time.
    #[serde(default)]
    pub throughput: Option<Size>,
    /// Break the connection after this many body bytes (a crash mid-body).
    #[serde(default)]
    pub abort_after: Option<Size>,
}

fn default_error_status() -> u16 {
    503
}

/// A compiled path glob (`*` within a segment, `**` across segments).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct PathGlob {
    pub pattern: String,
    pub matcher: globset::GlobMatcher,
}

impl TryFrom<String> for PathGlob {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let glob = globset::GlobBuilder::new(&s)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid path glob {s:?} ({}); expected a pattern like /live/*/*/*.ts or /static/**", e.kind()))?;
        if !s.starts_with('/') {
            return Err(format!("path glob {s:?} must start with /"));
        }
        Ok(PathGlob {
            matcher: glob.compile_matcher(),
            pattern: s,
        })
    }
}

const RESERVED_PREFIXES: [&str; 3] = ["/live/", "/vod/", "/_origin/"];

fn validate_segment_name(name: &str, path: &str, v: &mut Validator) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        v.error(
            path,
            format!("invalid name {name:?}"),
            "1 to 64 letters, digits, '-' or '_' (it becomes a URL path segment)",
        );
    }
}

fn validate_renditions(rs: &[Rendition], duration: Span, at: &str, v: &mut Validator) {
    if rs.is_empty() {
        v.error(
            at,
            "no renditions",
            "at least one rendition with name and bandwidth",
        );
    }
    let mut names = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        let p = format!("{at}[{i}]");
        validate_segment_name(&r.name, &format!("{p}.name"), v);
        v.unique(&mut names, &r.name, &format!("{p}.name"), "rendition name");
        if r.bandwidth == 0 {
            v.error(
                &format!("{p}.bandwidth"),
                "bandwidth 0",
                "bits per second, such as 3000000",
            );
        }
        let bytes = r.segment_bytes(duration);
        if bytes == 0 || bytes > 1 << 30 {
            v.error(
                &format!("{p}.segment_size"),
                format!("segment size of {bytes} bytes is out of range"),
                "1 byte to 1GiB per segment",
            );
        }
    }
}

impl OriginConfig {
    pub(crate) fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(tls) = self.tls.as_mut() {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        let mut names = Vec::new();
        for (i, s) in self.live.iter().enumerate() {
            let p = v.join(at, &format!("live[{i}]"));
            validate_segment_name(&s.name, &v.join(&p, "name"), v);
            v.unique(&mut names, &s.name, &v.join(&p, "name"), "live stream name");
            if s.segment_duration.get() < std::time::Duration::from_millis(100) {
                v.error(
                    &v.join(&p, "segment_duration"),
                    format!("{} is too short", s.segment_duration),
                    "at least 100ms (2s to 6s is usual)",
                );
            }
            if let Some(part) = s.part_duration {
                let (part_ns, segment_ns) =
                    (part.get().as_nanos(), s.segment_duration.get().as_nanos());
                if part_ns < 50_000_000 || part_ns >= segment_ns || segment_ns % part_ns != 0 {
                    v.error(
                        &v.join(&p, "part_duration"),
                        format!(
                            "{part} does not divide the {} segments into parts",
                            s.segment_duration
                        ),
                        "at least 50ms, shorter than segment_duration and dividing it evenly (such as 500ms for 2s segments)",
                    );
                }
            }
            if s.window == 0 || s.window > 1000 {
                v.error(
                    &v.join(&p, "window"),
                    format!("window {} is out of range", s.window),
                    "1 to 1000 segments (3 to 10 is usual)",
                );
            }
            validate_renditions(
                &s.renditions,
                s.segment_duration,
                &v.join(&p, "renditions"),
                v,
            );
        }
        if let Some(vod) = &self.vod {
            let p = v.join(at, "vod");
            if vod.titles == 0 {
                v.error(&v.join(&p, "titles"), "no titles", "at least 1");
            }
            if vod.segments == 0 {
                v.error(
                    &v.join(&p, "segments"),
                    "no segments",
                    "at least 1 per title",
                );
            }
            if vod.segment_duration.get() < std::time::Duration::from_millis(100) {
                v.error(
                    &v.join(&p, "segment_duration"),
                    format!("{} is too short", vod.segment_duration),
                    "at least 100ms",
                );
            }
            validate_renditions(
                &vod.renditions,
                vod.segment_duration,
                &v.join(&p, "renditions"),
                v,
            );
        }
        let mut prefixes = Vec::new();
        for (i, g) in self.objects.iter().enumerate() {
            let p = v.join(at, &format!("objects[{i}]"));
            let pp = v.join(&p, "prefix");
            if !g.prefix.starts_with('/')
                || !g.prefix.ends_with('/')
                || g.prefix.len() < 2
                || g.prefix.contains(['?', '#', ' '])
            {
                v.error(
                    &pp,
                    format!("invalid prefix {:?}", g.prefix),
                    "a path that starts and ends with /, such as /static/",
                );
            } else if let Some(r) = RESERVED_PREFIXES
                .iter()
                .find(|r| g.prefix.starts_with(*r) || r.starts_with(&g.prefix))
            {
                v.error(
                    &pp,
                    format!("prefix {:?} overlaps the reserved {r}", g.prefix),
                    "a prefix outside /live/, /vod/ and /_origin/",
                );
            } else if let Some((q, _)) = prefixes.iter().find(|(q, _): &&(String, String)| {
                g.prefix.starts_with(q.as_str()) || q.starts_with(&g.prefix)
            }) {
                v.error(
                    &pp,
                    format!("prefix {:?} overlaps {q:?}", g.prefix),
                    "prefixes that do not contain each other",
                );
            } else {
                prefixes.push((g.prefix.clone(), pp.clone()));
            }
            if g.count == 0 {
                v.error(&v.join(&p, "count"), "count 0", "at least 1 object");
            }
            for (name, value) in &g.headers {
                let name_ok = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                if !name_ok || value.bytes().any(|b| b.is_ascii_control()) {
                    v.error(
                        &v.join(&p, &format!("headers.{name}")),
                        "invalid header",
                        "a token name (letters, digits, -) and a printable value",
                    );
                }
            }
            if g.size.bytes() == 0 || g.size.bytes() > 1 << 30 {
                v.error(
                    &v.join(&p, "size"),
                    format!("size {} is out of range", g.size),
                    "1 byte to 1GiB",
                );
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let p = v.join(at, &format!("faults[{i}]"));
            if !(0.0..=1.0).contains(&f.error_rate) {
                v.error(
                    &v.join(&p, "error_rate"),
                    format!("{} is out of range", f.error_rate),
                    "a share from 0.0 to 1.0",
                );
            }
            if !(400..=599).contains(&f.error_status) {
                v.error(
                    &v.join(&p, "error_status"),
                    format!("{} is not an error status", f.error_status),
                    "an HTTP status from 400 to 599",
                );
            }
            if f.throughput.is_some_and(|t| t.bytes() == 0) {
                v.error(
                    &v.join(&p, "throughput"),
                    "throughput 0 would never finish",
                    "bytes per second, such as 2MiB",
                );
            }
            if f.latency.is_none()
                && f.error_rate == 0.0
                && f.throughput.is_none()
                && f.abort_after.is_none()
            {
                v.error(
                    &p,
                    "this fault does nothing",
                    "set latency, error_rate, throughput or abort_after",
                );
            }
        }
        if self.live.is_empty() && self.vod.is_none() && self.objects.is_empty() {
            v.error(
                at,
                "the origin serves nothing",
                "at least one of live, vod or objects",
            );
        }
    }
}

crate::units::string_schema!(
    PathGlob,
    "A path glob starting with /: * within a segment, ** across segments, like /live/*/*/*.ts."
);
