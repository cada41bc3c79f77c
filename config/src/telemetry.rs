//! The `telemetry:` section of proxy, cache and up files: where spans go,
//! how many traces are kept, and whether metrics are pushed over OTLP as
//! well as served at `/metrics`. The standard `OTEL_EXPORTER_OTLP_*`,
//! `OTEL_TRACES_SAMPLER_ARG` and `OTEL_METRICS_EXPORTER` variables apply
//! where the file says nothing.

use serde::Deserialize;

use crate::units::Span;
use crate::validate::Validator;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// OTLP/HTTP collector base URL (`/v1/traces` is appended), e.g.
    /// `http://otel-collector:4318`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0 to 1; a trace whose caller sampled
    /// it is always continued (parent-based sampling).
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// Push every metric over OTLP (to `otlp_endpoint`, `/v1/metrics`) this
    /// often, besides serving them at `/metrics`. Unset: no push, unless
    /// `OTEL_METRICS_EXPORTER` names `otlp`.
    #[serde(default)]
    pub otlp_metrics_interval: Option<Span>,
}

impl Telemetry {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(e) = &self.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10 {
                v.error(
                    &v.join(at, "otlp_endpoint"),
                    format!("{e:?} is not an http(s) URL"),
                    "a collector's OTLP/HTTP base URL, like http://otel-collector:4318",
                );
            }
        }
        if let Some(i) = self.otlp_metrics_interval {
            if i.get() < std::time::Duration::from_millis(100)
                || i.get() > std::time::Duration::from_secs(3600)
            {
                v.error(
                    &v.join(at, "otlp_metrics_interval"),
                    format!("{i} is out of range"),
                    "100ms to 1h (collectors commonly expect 10s to 60s)",
                );
            }
        }
        if let Some(r) = self.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                v.error(
                    &v.join(at, "sample_ratio"),
                    format!("{r} is not a share"),
                    "a number from 0 (no new traces) to 1 (every request)",
                );
            }
        }
    }
}
