//! Process-wide telemetry setup, owned by the binary: `tracing` logs and
//! the OpenTelemetry metrics SDK. Library crates only use the `tracing`
//! and `opentelemetry` APIs; this is where their output is decided.

use std::io::IsTerminal;

use opentelemetry_sdk::metrics::SdkMeterProvider;
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
/// renders.
pub fn init_metrics() -> anyhow::Result<SdkMeterProvider> {
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(prometheus::default_registry().clone())
        .build()?;
    let provider = SdkMeterProvider::builder()
        .with_reader(exporter)
        .with_resource(Resource::builder().with_service_name("fanout").build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());
    Ok(provider)
}
