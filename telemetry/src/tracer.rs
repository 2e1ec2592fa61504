//! The OpenTelemetry tracer provider: every span goes to the in-memory
//! [`SpanBuffer`]; spans the export sampler picks also go to an OTLP
//! collector when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
//! variable) is set. Sampler, service name and batching come from the
//! standard `OTEL_*` variables, read by the SDK itself.

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Config, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample};
use opentelemetry_sdk::Resource;

use crate::buffer::SpanBuffer;

/// Whether an OTLP endpoint is configured.
pub fn export_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// `OTEL_SDK_DISABLED=true` turns tracing off altogether (no spans, no buffer).
pub fn disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Builds the provider for a process called `default_name` (unless
/// `OTEL_SERVICE_NAME` names it) with `attributes` on its resource.
pub fn provider(
    default_name: &str,
    attributes: Vec<KeyValue>,
    buffer: SpanBuffer,
) -> Result<SdkTracerProvider, Box<dyn std::error::Error + Send + Sync>> {
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(default_name.to_string());
    }
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(KeepInMemory(Config::default().sampler))
        .with_resource(resource.with_attributes(attributes).build())
        .with_span_processor(buffer);
    if export_configured() {
        // Needs a Tokio runtime: tonic's channel spawns its worker on it.
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The sampler of `OTEL_TRACES_SAMPLER`, except that a span it drops is still
/// recorded (not exported): the batch exporter only sends sampled spans, and
/// the in-memory buffer sees every request, so `admin trace` and `admin
/// slow` work whatever the export sampling ratio.
#[derive(Debug, Clone)]
struct KeepInMemory(Box<dyn ShouldSample>);

impl ShouldSample for KeepInMemory {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let mut result = self.0.should_sample(parent_context, trace_id, name, span_kind, attributes, links);
        if result.decision == SamplingDecision::Drop {
            result.decision = SamplingDecision::RecordOnly;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::Sampler;

    #[test]
    fn test_dropped_spans_are_still_recorded() {
        let sampler = KeepInMemory(Box::new(Sampler::AlwaysOff));
        let result = sampler.should_sample(None, TraceId::from(7), "x", &SpanKind::Server, &[], &[]);
        assert_eq!(result.decision, SamplingDecision::RecordOnly);
        let sampler = KeepInMemory(Box::new(Sampler::AlwaysOn));
        let result = sampler.should_sample(None, TraceId::from(7), "x", &SpanKind::Server, &[], &[]);
        assert_eq!(result.decision, SamplingDecision::RecordAndSample);
    }
}
