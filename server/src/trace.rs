//! Distributed tracing on the data path. Each hop continues the W3C trace
//! context (`traceparent`, `tracestate`) it received, records its own span
//! through the OpenTelemetry API, and sends its span's context on to the
//! next hop, so one trace runs client → proxy → cache node → origin.
//!
//! The binary decides whether spans go anywhere (OTLP when configured).
//! Until it calls [`enable`], every function here returns at once and the
//! trace headers pass through untouched, so tracing costs nothing when off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{global, Context, KeyValue};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns span recording on, once a tracer provider is installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A span in progress, and the context that carries it.
#[derive(Clone)]
pub struct Span {
    cx: Context,
}

impl Span {
    /// A span for a request that arrived with `headers`, a child of the
    /// caller's span when they carry one. `None` when tracing is off.
    /// `attributes` are built only for a span that is sampled.
    pub fn server(
        name: &'static str,
        headers: &HeaderMap,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Span> {
        Span::from_headers(name, SpanKind::Server, headers, attributes)
    }

    /// A span under this one.
    pub fn child(
        &self,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        start(name, kind, &self.cx, attributes)
    }

    /// A span whose parent is the context in `headers` (those of a request
    /// that arrived, or of one about to be sent on its behalf). `None` when
    /// tracing is off.
    pub fn from_headers(
        name: &'static str,
        kind: SpanKind,
        headers: &HeaderMap,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<Span> {
        if !enabled() {
            return None;
        }
        let parent = global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        let caller = parent.span().span_context().clone();
        if caller.is_valid() && !caller.is_sampled() {
            // The trace was not sampled upstream: record nothing and leave
            // the caller's context in the headers for the next hop.
            return None;
        }
        Some(start(name, kind, &parent, attributes))
    }

    /// Writes this span's context into `headers` for the next hop,
    /// replacing what the caller sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        global::get_text_map_propagator(|p| p.inject_context(&self.cx, &mut HeadersMut(headers)));
    }

    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    pub fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Records the HTTP status; a 5xx marks the span as an error.
    pub fn status(&self, status: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("status {status}")));
        }
    }

    pub fn error(&self, what: String) {
        self.cx.span().set_status(Status::error(what));
    }

    pub fn end(self) {
        self.cx.span().end();
    }
}

fn start(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Span {
    // One tracer for the process: looking it up per span allocates.
    static TRACER: OnceLock<global::BoxedTracer> = OnceLock::new();
    let tracer = TRACER.get_or_init(|| global::tracer("fanout"));
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, parent);
    // Unsampled spans record nothing: do not build what they would drop.
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    Span {
        cx: parent.with_span(span),
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
