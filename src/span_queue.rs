//! The span processor between the data path and the OTLP exporter: a
//! bounded queue drained by one background task that exports in batches.
//!
//! Owns the guarantee that tracing never slows a request: ending a span is
//! one `try_send`. When the queue is full (a slow or hung collector), the
//! span is dropped and counted in `fanout_trace_spans_dropped_total`
//! (`reason="queue_full"`); a batch the collector refuses or does not take
//! in time is counted with `reason="export_failed"`. The SDK's own batch
//! processor drops the same way but only logs a total at shutdown, which an
//! operator cannot alert on.
//!
//! Sizes follow the standard variables: `OTEL_BSP_MAX_QUEUE_SIZE` (2048),
//! `OTEL_BSP_SCHEDULE_DELAY` (5000 ms), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
//! (512), `OTEL_BSP_EXPORT_TIMEOUT` (30000 ms).

use std::time::Duration;

use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;

enum Control {
    Resource(Resource),
    /// Export everything queued, then acknowledge.
    Flush(std::sync::mpsc::Sender<()>),
    /// Export everything queued, shut the exporter down, acknowledge, stop.
    Shutdown(std::sync::mpsc::Sender<()>),
}

#[derive(Debug)]
pub struct QueuedExport {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    dropped: Counter<u64>,
    queue_full: [KeyValue; 1],
}

struct Settings {
    queue: usize,
    delay: Duration,
    batch: usize,
    timeout: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        Settings {
            queue: number("OTEL_BSP_MAX_QUEUE_SIZE", 2048) as usize,
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize,
            timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 30_000)),
        }
    }
}

impl QueuedExport {
    /// Starts the export task on the current tokio runtime.
    pub fn start<E: SpanExporter + 'static>(exporter: E) -> QueuedExport {
        let settings = Settings::from_env();
        let (spans, queued) = mpsc::channel(settings.queue.max(1));
        let (control, orders) = mpsc::unbounded_channel();
        let dropped = opentelemetry::global::meter("fanout-telemetry")
            .u64_counter("fanout_trace_spans_dropped")
            .with_description("Spans not exported: the queue was full (reason=queue_full) or the collector refused or did not take the batch in time (reason=export_failed)")
            .build();
        tokio::spawn(export_loop(
            exporter,
            queued,
            orders,
            settings,
            dropped.clone(),
        ));
        QueuedExport {
            spans,
            control,
            dropped,
            queue_full: [KeyValue::new("reason", "queue_full")],
        }
    }

    /// Sends `order` to the task and waits (this thread) for it, at most
    /// `timeout`.
    fn order(
        &self,
        order: impl FnOnce(std::sync::mpsc::Sender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done, wait) = std::sync::mpsc::channel();
        self.control
            .send(order(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueuedExport {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.dropped.add(1, &self.queue_full);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.order(Control::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.order(Control::Shutdown, timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.send(Control::Resource(resource.clone()));
    }
}

async fn export_loop<E: SpanExporter>(
    mut exporter: E,
    mut queued: mpsc::Receiver<SpanData>,
    mut orders: mpsc::UnboundedReceiver<Control>,
    settings: Settings,
    dropped: Counter<u64>,
) {
    let mut batch = Vec::with_capacity(settings.batch);
    let mut tick = tokio::time::interval(settings.delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = settings.batch.saturating_sub(batch.len()).max(1);
        tokio::select! {
            biased;
            order = orders.recv() => {
                let Some(order) = order else { return };
                let (done, stop) = match order {
                    Control::Resource(r) => {
                        exporter.set_resource(&r);
                        continue;
                    }
                    Control::Flush(done) => (done, false),
                    Control::Shutdown(done) => (done, true),
                };
                while let Ok(span) = queued.try_recv() {
                    batch.push(span);
                    if batch.len() >= settings.batch {
                        send(&exporter, std::mem::take(&mut batch), settings.timeout, &dropped).await;
                    }
                }
                if !batch.is_empty() {
                    send(&exporter, std::mem::take(&mut batch), settings.timeout, &dropped).await;
                }
                let _ = exporter.force_flush();
                if stop {
                    let _ = exporter.shutdown();
                    let _ = done.send(());
                    return;
                }
                let _ = done.send(());
            }
            received = queued.recv_many(&mut batch, room) => {
                if received == 0 {
                    // Every processor handle is gone: send what is left.
                    if !batch.is_empty() {
                        send(&exporter, std::mem::take(&mut batch), settings.timeout, &dropped).await;
                    }
                    return;
                }
                if batch.len() >= settings.batch {
                    send(&exporter, std::mem::take(&mut batch), settings.timeout, &dropped).await;
                }
            }
            _ = tick.tick() => {
                if !batch.is_empty() {
                    send(&exporter, std::mem::take(&mut batch), settings.timeout, &dropped).await;
                }
            }
        }
    }
}

/// Exports one batch; counts it as dropped if the collector refuses it or
/// does not take it within `timeout`.
async fn send<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    timeout: Duration,
    dropped: &Counter<u64>,
) {
    let n = batch.len() as u64;
    let error = match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {timeout:?}"),
    };
    tracing::debug!(%error, spans = n, "span export failed");
    dropped.add(n, &[KeyValue::new("reason", "export_failed")]);
}
