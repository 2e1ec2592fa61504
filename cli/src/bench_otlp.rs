//! `omnishard bench otlp-sink`: a local OTLP trace collector for the tracing
//! overhead benchmark. It receives and decodes every export like a real
//! collector's receiver, counts the spans, and prints the count each second;
//! it stores nothing, so the benchmark measures what omnishard pays to
//! export, not a backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

use crate::args::OtlpSinkArgs;
use crate::roles::{bind, shutdown_signal};

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize =
            request.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

pub async fn run(args: OtlpSinkArgs) -> anyhow::Result<()> {
    let listener = bind(&args.listen).await?;
    let sink = Sink::default();
    println!("omnishard otlp-sink listening on {}", listener.local_addr()?);
    let counter = sink.spans.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = counter.load(Ordering::Relaxed);
            if now != last {
                println!("spans received: {now} (+{}/s)", now - last);
                last = now;
            }
        }
    });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await?;
    println!("spans received: {}", sink.spans.load(Ordering::Relaxed));
    Ok(())
}
