//! Logs and traces of every process, set up once by [`init`] at the top of each `main.rs`.
//!
//! **Logs** go to standard output through `tracing-subscriber`, filtered by `RUST_LOG` (default
//! `info`, with the chatty dependencies turned down). Lines are human-readable, coloured only when
//! standard output is a terminal and `NO_COLOR` is unset or empty, so log files hold no escape
//! codes; `LOG_FORMAT=json` writes one JSON object per line instead: the event's fields at the top
//! level, and the fields of the span it happened in under `span` (for a handled message:
//! `queue`, `message_id`, `message_type`, `saga_id`).
//!
//! **Traces** are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: OTLP over HTTP with protobuf, through a batch
//! processor on a thread of its own, under `OTEL_SERVICE_NAME` (default: the process name).
//! Without the variable there is no exporter, no batch thread and no OpenTelemetry layer; the
//! helpers of [`saga_trace`] return at once. The spans and how one order becomes one trace are
//! described there. [`Telemetry::shutdown`] (or dropping the guard) flushes what is queued.

pub mod requests;
pub mod saga_trace;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use saga_trace::{consumed, exporting, sent};

/// The filter of log lines when `RUST_LOG` is unset, and always the filter of exported spans (so
/// turning logs down does not thin out traces). `opentelemetry=warn`: the SDK's own notes (an
/// export that failed) but not its chatter.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn,opentelemetry=warn";

/// How long a stopping process waits for its last spans to be exported.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only if `ansi`.
    Text { ansi: bool },
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// From `LOG_FORMAT` and `NO_COLOR`, for standard output as it is now.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok();
        LogFormat::choose(var("LOG_FORMAT").as_deref(), var("NO_COLOR").as_deref(), std::io::stdout().is_terminal())
    }

    /// `LOG_FORMAT=json` (any case) is JSON; anything else is text, coloured only on a terminal
    /// and when `NO_COLOR` is unset or empty (<https://no-color.org>).
    pub fn choose(log_format: Option<&str>, no_color: Option<&str>, terminal: bool) -> Self {
        if log_format.is_some_and(|f| f.trim().eq_ignore_ascii_case("json")) {
            return LogFormat::Json;
        }
        LogFormat::Text { ansi: terminal && no_color.is_none_or(str::is_empty) }
    }
}

/// Why telemetry could not start: the trace exporter's configuration (`OTEL_EXPORTER_OTLP_*`).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter (check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_*): {0}")]
pub struct TelemetryError(#[from] opentelemetry_otlp::ExporterBuildError);

/// What [`init`] installed. Keep it until the process stops: [`Telemetry::shutdown`], or dropping
/// it, flushes the spans still queued and stops the export.
#[must_use = "dropping it stops trace export; keep it until the process stops"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether this process exports traces.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export what is queued (waiting at most [`FLUSH_TIMEOUT`]) and stop exporting.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Install the global subscriber for process `service` (`orchestrator`, `payment`, ...): log
/// lines as [`LogFormat::from_env`] says, and, if an OTLP endpoint is configured, span export.
/// Only the first call in a process installs anything (tests start many apps in one process);
/// later calls return a guard that holds nothing.
pub fn init(service: &str) -> Result<Telemetry, TelemetryError> {
    if tracing::dispatcher::has_been_set() {
        return Ok(Telemetry { provider: None });
    }
    let provider = if otlp_configured() { Some(provider(service)?) } else { None };
    let tracer = provider.as_ref().map(|p| p.tracer("infra"));
    let spans = tracer.clone().map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Spans are built when first needed, not when first entered, so that the request
            // span of `POST /orders` can still take the saga's trace id (see `saga_trace`).
            .with_context_activation(false)
            // Where a span was opened (always the same few lines of `infra`) says nothing.
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_filter(EnvFilter::new(DEFAULT_FILTER))
    });
    let installed = tracing_subscriber::registry().with(log_layer(LogFormat::from_env())).with(spans).try_init();
    match (installed, tracer) {
        (Ok(()), Some(tracer)) => {
            saga_trace::install(tracer);
            tracing::info!(service, "exporting traces over OTLP");
            Ok(Telemetry { provider })
        }
        (Ok(()), None) => Ok(Telemetry { provider: None }),
        // Another thread installed a subscriber first: this provider would never see a span.
        (Err(_), _) => {
            drop(Telemetry { provider });
            Ok(Telemetry { provider: None })
        }
    }
}

/// The log lines: filtered by `RUST_LOG`, written to standard output.
fn log_layer(format: LogFormat) -> impl Layer<Registry> + Send + Sync {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let lines = tracing_subscriber::fmt::layer().with_target(false);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text { ansi } => lines.with_ansi(ansi).boxed(),
        LogFormat::Json => {
            lines.json().with_ansi(false).flatten_event(true).with_current_span(true).with_span_list(false).boxed()
        }
    };
    lines.with_filter(filter)
}

/// Whether a trace endpoint is configured (and the SDK not disabled with `OTEL_SDK_DISABLED`).
fn otlp_configured() -> bool {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracer provider: OTLP/HTTP exporter (endpoint, headers, timeout from `OTEL_EXPORTER_OTLP_*`)
/// behind a batch processor (`OTEL_BSP_*`), ids from [`saga_trace::SagaIds`].
fn provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.trim().is_empty());
    let resource = Resource::builder()
        .with_service_name(name.unwrap_or_else(|| service.to_owned()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(saga_trace::SagaIds::default())
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_without_no_color() {
        assert_eq!(LogFormat::choose(None, None, true), LogFormat::Text { ansi: true });
        assert_eq!(LogFormat::choose(None, None, false), LogFormat::Text { ansi: false });
        assert_eq!(LogFormat::choose(None, Some("1"), true), LogFormat::Text { ansi: false });
        // no-color.org: an empty NO_COLOR does not count.
        assert_eq!(LogFormat::choose(None, Some(""), true), LogFormat::Text { ansi: true });
        assert_eq!(LogFormat::choose(Some("text"), None, false), LogFormat::Text { ansi: false });
    }

    #[test]
    fn json_whatever_the_case_and_never_coloured() {
        assert_eq!(LogFormat::choose(Some("json"), None, true), LogFormat::Json);
        assert_eq!(LogFormat::choose(Some(" JSON "), None, false), LogFormat::Json);
    }
}

#[cfg(test)]
mod trace_tests;
