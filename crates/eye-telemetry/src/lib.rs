//! Logs, traces and metrics for every Eye binary, set up in one call each.
//!
//! [`init`] installs a `tracing` subscriber: JSON lines by default (`pretty` for humans), filtered
//! by `RUST_LOG` or the configured filter, and, when an OTLP endpoint is configured (setting
//! `telemetry.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), an OpenTelemetry
//! layer exporting spans over OTLP/gRPC. Keep the returned [`Guard`] alive: dropping it flushes
//! the exporter, with a timeout. [`init_with_provider`] does the same with a tracer provider of
//! the caller's (tests export to memory).
//!
//! # Layout
//! - [`propagation`]: W3C trace context in and out of gRPC metadata and outbox row headers, so
//!   one trace follows a request from the client through ingest, the validator and the writer.
//! - [`metrics`]: every Prometheus metric family of the services, defined once, and the
//!   `/metrics` HTTP endpoint.
//!
//! Never log API keys or payload contents, and never put them in span fields or metric labels:
//! use ids, counts and codes.

pub mod metrics;
pub mod propagation;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// How logs are written (setting `telemetry.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

/// The `telemetry` section of the settings (`EYE__TELEMETRY__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter, used when `RUST_LOG` is unset.
    pub log_filter: String,
    /// OTLP/gRPC endpoint for traces; `OTEL_EXPORTER_OTLP_ENDPOINT` also enables export.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, log_filter: "info".into(), otlp_endpoint: None }
    }
}

/// Flushes telemetry when dropped.
#[must_use = "dropping the guard flushes and stops trace export"]
#[derive(Debug)]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// Installs logging (and trace export, if configured) for `service`. Idempotent enough for tests:
/// a second call leaves the first subscriber in place.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> Guard {
    let endpoint = settings
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|endpoint| !endpoint.is_empty());
    let provider = endpoint.and_then(|endpoint| match tracer_provider(service, &endpoint) {
        Ok(provider) => Some(provider),
        Err(error) => {
            eprintln!("otlp export disabled: {error}");
            None
        }
    });
    install(service, settings, provider)
}

/// [`init`] with spans going to `provider` instead of OTLP: for tests (an in-memory exporter) or
/// embedders with their own export pipeline. Dropping the guard shuts `provider` down.
pub fn init_with_provider(
    service: &'static str,
    settings: &TelemetrySettings,
    provider: SdkTracerProvider,
) -> Guard {
    install(service, settings, Some(provider))
}

fn install(
    service: &'static str,
    settings: &TelemetrySettings,
    provider: Option<SdkTracerProvider>,
) -> Guard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_filter));
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // Logs go to stderr: stdout belongs to programs' output (the CLI prints keys there), and
    // container runtimes collect both streams.
    let _ = match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
    };
    Guard { provider }
}

fn tracer_provider(
    service: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
