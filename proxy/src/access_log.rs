//! The access log: one JSON object per line on stdout for each request,
//! written when its response body has been sent (or abandoned), so the
//! line carries the bytes sent and the full duration.
//!
//! Fields: `time` (RFC 3339, UTC), `peer`, `method`, `host`, `path`,
//! `proto`, `status`, `site`, `node` (the cache node id, `origin` when the
//! proxy failed open, empty when nothing was forwarded or the hot tier
//! answered), `tier` (`proxy` for the hot tier, `node`, `origin`, or empty),
//! `cache_status` (every cache's `Cache-Status` entry, the node's before
//! the hot tier's), `bytes`, `complete` (false when the
//! client or upstream went away mid-body), `ttfb_ms`, `duration_ms`, and
//! `trace_id` (the W3C trace id, when the request had or got one; null
//! otherwise). A site's `access_log: false` turns its lines off and
//! `access_log_sample` keeps that share of them.

use std::io::Write;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fanout_server::ConnInfo;
use http::{header, Request, Response};
use serde::Serialize;

/// Cloned into every logged response; writes go through one lock so lines
/// never interleave.
#[derive(Clone)]
pub struct AccessLog {
    enabled: bool,
    out: Arc<std::sync::Mutex<std::io::Stdout>>,
}

impl AccessLog {
    pub fn new(enabled: bool) -> AccessLog {
        AccessLog {
            enabled,
            out: Arc::new(std::sync::Mutex::new(std::io::stdout())),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn write(&self, line: Line) {
        let Ok(mut json) = serde_json::to_vec(&line) else {
            return;
        };
        json.push(b'\n');
        let out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.lock().write_all(&json);
    }
}

/// A request whose line is not written yet.
pub struct Entry {
    line: Line,
    started: Option<Instant>,
}

#[derive(Serialize)]
pub struct Line {
    time: String,
    peer: String,
    method: String,
    host: String,
    path: String,
    proto: &'static str,
    status: u16,
    site: Option<String>,
    node: String,
    /// Which tier answered: `proxy` (the hot tier), `node`, `origin`.
    tier: &'static str,
    cache_status: Option<String>,
    bytes: u64,
    complete: bool,
    ttfb_ms: f64,
    duration_ms: f64,
    trace_id: Option<String>,
}

impl Entry {
    pub fn start<B>(req: &Request<B>, conn: &ConnInfo) -> Entry {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or("")
            .to_string();
        Entry {
            line: Line {
                time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                peer: conn.peer.ip().to_canonical().to_string(),
                method: req.method().to_string(),
                host,
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
                proto: match req.version() {
                    http::Version::HTTP_2 => "HTTP/2",
                    http::Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                status: 0,
                site: None,
                node: String::new(),
                tier: "",
                cache_status: None,
                bytes: 0,
                complete: false,
                ttfb_ms: 0.0,
                duration_ms: 0.0,
                trace_id: req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split('-').nth(1))
                    .filter(|id| id.len() == 32)
                    .map(str::to_string),
            },
            started: None,
        }
    }

    /// The trace this request belongs to, when this proxy started or
    /// continued one.
    pub fn traced(mut self, trace_id: String) -> Entry {
        self.line.trace_id = Some(trace_id);
        self
    }

    /// Records the response headers as they leave.
    pub fn answered<B>(
        mut self,
        resp: &Response<B>,
        site: Option<String>,
        node: String,
        tier: &'static str,
        started: Instant,
    ) -> Entry {
        self.line.status = resp.status().as_u16();
        self.line.site = site;
        self.line.node = node;
        self.line.tier = tier;
        // Every cache's entry, the node's and the hot tier's, as one list.
        let statuses: Vec<&str> = resp
            .headers()
            .get_all("cache-status")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        self.line.cache_status = (!statuses.is_empty()).then(|| statuses.join(", "));
        self.line.ttfb_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.started = Some(started);
        self
    }

    pub fn finished(mut self, bytes: u64, complete: bool) -> Line {
        self.line.bytes = bytes;
        self.line.complete = complete;
        self.line.duration_ms = self
            .started
            .map_or(0.0, |s| s.elapsed().as_secs_f64() * 1000.0);
        self.line
    }
}
