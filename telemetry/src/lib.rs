//! Observability of every omnishard process: OpenTelemetry traces (exported
//! over OTLP when configured, always kept in an in-memory buffer), Prometheus
//! metrics with health endpoints on an HTTP side port, and structured logs
//! that carry the trace id.
//!
//! Layout:
//! * [`tracer`] — the tracer provider: sampler, resource, OTLP exporter.
//! * [`buffer`] — the in-memory span buffer behind `admin trace` and `admin slow`.
//! * [`propagation`] — W3C trace context in gRPC metadata.
//! * [`rpc`] — service, method and span names of a gRPC path.
//! * [`server`] — the tower layer of every gRPC server: spans, metrics, `x-trace-id`.
//! * [`client`] — the tower layer of the gateway's shard channels.
//! * [`metrics`] — the Prometheus registry and the shared metric families.
//! * [`http`] — `/metrics`, `/healthz`, `/readyz`.
//! * [`logs`] — text and JSON log lines.
//! * [`wire`] — buffer records as `admin trace` / `admin slow` messages.
//!
//! A process calls [`init`] once, early, inside its Tokio runtime; the rest
//! reaches the state through [`global`].

#![forbid(unsafe_code)]

pub mod buffer;
pub mod client;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod propagation;
pub mod rpc;
pub mod server;
pub mod tracer;
pub mod wire;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub use buffer::{BufferLimits, RequestRecord, SpanBuffer, SpanRecord};
pub use logs::LogFormat;
pub use metrics::Metrics;
pub use propagation::{record, TRACE_ID_HEADER};

/// The telemetry state of this process.
pub struct Telemetry {
    /// `gateway`, `shard`, or `client`.
    pub role: String,
    /// The process's id in the cluster (a shard id, `gateway`).
    pub id: String,
    pub buffer: SpanBuffer,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<http::Readiness>,
    provider: Mutex<Option<SdkTracerProvider>>,
}

static GLOBAL: OnceLock<Telemetry> = OnceLock::new();

/// What a process is, for [`init`].
#[derive(Debug, Clone)]
pub struct Options {
    pub role: String,
    pub id: String,
    /// Log level when `RUST_LOG` is unset.
    pub default_log_level: String,
    /// Whether to trace at all (client commands only log).
    pub tracing: bool,
    /// A request at least this long is slow: logged, counted, and its spans kept.
    pub slow_threshold: Duration,
}

impl Options {
    pub fn new(role: &str, id: &str) -> Options {
        Options {
            role: role.into(),
            id: id.into(),
            default_log_level: "info".into(),
            tracing: true,
            slow_threshold: BufferLimits::default().slow_threshold,
        }
    }
}

/// Sets up logs, traces and metrics for this process. The first call wins;
/// later calls (tests, the embedded dev cluster) return the existing state.
/// Must run inside a Tokio runtime when an OTLP endpoint is configured.
pub fn init(options: Options) -> &'static Telemetry {
    let mut created = false;
    let telemetry = GLOBAL.get_or_init(|| {
        created = true;
        state(&options)
    });
    if created {
        install_subscriber(telemetry, &options);
    }
    telemetry
}

/// The state set by [`init`], or a quiet default when nothing called it.
pub fn global() -> &'static Telemetry {
    GLOBAL.get_or_init(|| state(&Options::new("process", "")))
}

/// Exports what is still queued (call before the process exits).
pub fn shutdown() {
    let Some(telemetry) = GLOBAL.get() else { return };
    let provider = telemetry.provider.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(provider) = provider {
        if let Err(e) = provider.shutdown() {
            eprintln!("telemetry: flushing spans at exit: {e}");
        }
    }
}

fn state(options: &Options) -> Telemetry {
    Telemetry {
        role: options.role.clone(),
        id: options.id.clone(),
        buffer: SpanBuffer::new(BufferLimits { slow_threshold: options.slow_threshold, ..BufferLimits::default() }),
        metrics: Arc::new(Metrics::new(&options.role, &options.id)),
        readiness: Arc::default(),
        provider: Mutex::new(None),
    }
}

fn install_subscriber(telemetry: &Telemetry, options: &Options) {
    let logs = logs::layer(LogFormat::from_env(), &options.default_log_level);
    let registry = tracing_subscriber::registry().with(logs);
    if !options.tracing || tracer::disabled() {
        let _ = registry.try_init();
        return;
    }
    let attributes = vec![
        KeyValue::new("omnishard.role", options.role.clone()),
        KeyValue::new("service.instance.id", options.id.clone()),
    ];
    let provider = match tracer::provider(&format!("omnishard-{}", options.role), attributes, telemetry.buffer.clone())
    {
        Ok(provider) => provider,
        Err(e) => {
            let _ = registry.try_init();
            tracing::error!(error = %e, "cannot set up the OTLP exporter; tracing is off");
            return;
        }
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("omnishard"))
        .with_tracked_inactivity(false)
        // Parents come from tracing's own span stack; attaching an
        // OpenTelemetry context on every poll of every instrumented future
        // costs more than the rest of the span.
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_level(false)
        // Only omnishard's own spans become OpenTelemetry spans, not those of its libraries.
        .with_filter(Targets::new().with_target("omnishard", Level::INFO));
    *telemetry.provider.lock().unwrap_or_else(|p| p.into_inner()) = Some(provider);
    let _ = registry.with(otel).try_init();
}

/// `("KvService", "Get")` of `/omnishard.v1.KvService/Get`.
pub fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let service = service.rsplit('.').next().unwrap_or(service);
    (service, method)
}

/// Lower-case name of a gRPC code, as metrics and spans label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_path_drops_the_package() {
        assert_eq!(split_path("/omnishard.v1.KvService/Get"), ("KvService", "Get"));
        assert_eq!(split_path("/grpc.health.v1.Health/Check"), ("Health", "Check"));
        assert_eq!(split_path("garbage"), ("garbage", ""));
    }

    #[test]
    fn test_code_names_are_snake_case() {
        assert_eq!(code_name(tonic::Code::NotFound), "not_found");
        assert_eq!(code_name(tonic::Code::Ok), "ok");
    }
}
