//! Process-wide telemetry setup, owned by the binary: `tracing` logs, the
//! OpenTelemetry metrics SDK, and span export over OTLP. Library crates
//! only use the `tracing` and `opentelemetry` APIs; this is where their
//! output is decided.

use std::io::IsTerminal;

use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init_logging(format: Option<LogFormat>, filter: Option<&str>) {
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        // The OpenTelemetry SDK announces itself at info, and openraft logs
        // every election step and shutdown there: noise to an operator.
        // openraft's errors for an unreachable peer repeat at every retry;
        // Fanout reports leadership changes itself.
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,opentelemetry=warn,openraft=warn")),
    };
    let json = matches!(format, Some(LogFormat::Json));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Installs the global meter provider. Metrics are collected into the
/// Prometheus default registry, which every admin listener's `/metrics`
/// renders, and, when the file's `telemetry.otlp_metrics_interval` is set
/// or `OTEL_METRICS_EXPORTER` names `otlp`, also pushed over OTLP/HTTP
/// (protobuf, cumulative) to the same collector as spans, every interval
/// (`OTEL_METRIC_EXPORT_INTERVAL` in ms, default 60 s, when the file gives
/// none). The push runs in its own task: a slow collector delays the next
/// push, never a request.
pub fn init_metrics(settings: &fanout_config::Telemetry) -> anyhow::Result<SdkMeterProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;

    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(prometheus::default_registry().clone())
        .build()?;
    let mut provider = SdkMeterProvider::builder()
        .with_reader(exporter)
        .with_resource(Resource::builder().with_service_name("fanout").build());
    let named_by_env = std::env::var("OTEL_METRICS_EXPORTER")
        .is_ok_and(|v| v.split(',').any(|e| e.trim() == "otlp"));
    if settings.otlp_metrics_interval.is_some() || named_by_env {
        let mut builder = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(otlp_http_client())
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = signal_url(settings, "metrics") {
            builder = builder.with_endpoint(url);
        }
        let mut reader =
            PeriodicReader::builder(builder.build()?, opentelemetry_sdk::runtime::Tokio);
        if let Some(every) = settings.otlp_metrics_interval {
            reader = reader.with_interval(every.get());
        }
        provider = provider.with_reader(reader.build());
        tracing::info!("pushing metrics over OTLP/HTTP");
    }
    let provider = provider.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    register_runtime_metrics();
    Ok(provider)
}

/// The process's async runtime, for the soak test and for operators: a
/// task count that keeps growing under a steady load is a leak.
fn register_runtime_metrics() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    opentelemetry::global::meter("fanout")
        .u64_observable_gauge("fanout_runtime_alive_tasks")
        .with_description("Tasks alive in the process's async runtime")
        .with_callback(move |o| o.observe(runtime.metrics().num_alive_tasks() as u64, &[]))
        .build();
}

/// Installs a tracer provider that exports spans over OTLP/HTTP (protobuf)
/// when the file's `telemetry.otlp_endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT`
/// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; returns `None` (and the
/// data path records nothing) otherwise.
///
/// Sampling: the file's `telemetry.sample_ratio` (parent-based), else
/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default:
/// parent-based, always on). Spans go through [`crate::span_queue`]: a
/// bounded queue exported from a background task, where a full queue drops
/// and counts spans rather than wait, so an unreachable or hung collector
/// cannot slow a request.
pub fn init_tracing(
    settings: &fanout_config::Telemetry,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};

    let configured = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    // The W3C propagator runs whether or not spans are exported: a hop
    // that records nothing still passes the context on unchanged.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    if settings.otlp_endpoint.is_none()
        && !configured("OTEL_EXPORTER_OTLP_ENDPOINT")
        && !configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    {
        return Ok(None);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(otlp_http_client())
        .with_protocol(Protocol::HttpBinary);
    if let Some(url) = signal_url(settings, "traces") {
        builder = builder.with_endpoint(url);
    }
    let processor = crate::span_queue::QueuedExport::start(builder.build()?);
    let mut provider = SdkTracerProvider::builder().with_span_processor(processor);
    if let Some(ratio) = settings.sample_ratio {
        use opentelemetry_sdk::trace::Sampler;
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    let provider = provider
        .with_resource(Resource::builder().with_service_name("fanout").build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    fanout_server::trace::enable();
    tracing::info!("exporting traces over OTLP/HTTP");
    Ok(Some(provider))
}

/// Exports the spans still queued, for at most five seconds.
pub async fn flush_traces(provider: SdkTracerProvider) {
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
    if tokio::time::timeout(std::time::Duration::from_secs(5), flushed)
        .await
        .is_err()
    {
        tracing::warn!("spans not exported within 5 s of stopping; dropped");
    }
}

/// Pushes the metrics one last time (when pushing is on), for at most five
/// seconds, so a stopping part's final counts reach the collector.
pub async fn flush_metrics(provider: SdkMeterProvider) {
    let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
    if tokio::time::timeout(std::time::Duration::from_secs(5), flushed)
        .await
        .is_err()
    {
        tracing::warn!("metrics not pushed within 5 s of stopping; dropped");
    }
}

/// The exporters' HTTP client: hyper on the process's tokio runtime, so
/// retries and back-off wait asynchronously instead of sleeping a worker.
fn otlp_http_client() -> opentelemetry_http::hyper::HyperClient {
    opentelemetry_http::hyper::HyperClient::with_default_connector(
        std::time::Duration::from_secs(10),
        None,
    )
}

/// The file's collector URL for one signal (`traces`, `metrics`): the file
/// names a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` does. `None` leaves
/// the exporter to the standard variables.
fn signal_url(settings: &fanout_config::Telemetry, signal: &str) -> Option<String> {
    let base = settings.otlp_endpoint.as_deref()?;
    Some(format!("{}/v1/{signal}", base.trim_end_matches('/')))
}
