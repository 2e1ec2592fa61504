//! Log lines on stderr: readable text by default, one JSON object per line
//! with `--log-format json` (`OMNISHARD_LOG_FORMAT=json`). Inside a request
//! every line carries the OpenTelemetry trace id and span id, so a log line
//! leads to its waterfall (`omnishard admin trace TRACE_ID`).

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `OMNISHARD_LOG_FORMAT` (`json` or `text`); text when unset or unknown.
    pub fn from_env() -> LogFormat {
        match std::env::var("OMNISHARD_LOG_FORMAT") {
            Ok(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The stderr log layer for `format`, filtered by `RUST_LOG` (default `default_level`).
pub fn layer<S>(format: LogFormat, default_level: &str) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let levels = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    match format {
        // json-subscriber finds the trace ids through the spans it sees, so
        // omnishard's spans stay visible to it whatever the level.
        LogFormat::Json => json_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_current_span(false)
            .with_span_list(false)
            .with_opentelemetry_ids(true)
            .with_filter(levels().or(filter_fn(|meta| meta.is_span() && meta.target().starts_with("omnishard"))))
            .boxed(),
        // Text lines get their ids from the current span directly; the layer
        // sees no spans at all, which saves formatting every span's fields on
        // the request path.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(WithTraceIds(tracing_subscriber::fmt::format().compact().with_ansi(false)))
            .with_filter(levels().and(filter_fn(|meta| !meta.is_span())))
            .boxed(),
    }
}

/// Appends `trace_id=… span_id=…` to a text line emitted inside a traced span.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some((trace_id, span_id)) = current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writeln!(writer, "{} trace_id={trace_id} span_id={span_id}", line.trim_end())
    }
}

/// Trace and span id of the current span, if it is traced.
fn current_ids() -> Option<(String, String)> {
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
}
