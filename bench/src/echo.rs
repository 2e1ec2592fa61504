//! The RPC floor: a gRPC echo server, a relay that forwards each call to
//! another echo server over one more hop (as the gateway forwards to a
//! shard), and a client that measures either with the harness's recorder.
//! Same HTTP/2 stack, same payload size, no storage: what omnishard cannot
//! beat with any storage engine.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::kv::DriverResult;
use crate::stats::{Measurement, Recorder};

/// Generated code of `bench/proto/echo.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("omnishard.bench.v1");
}

use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};
use proto::EchoMessage;

/// Answers every call with its own payload.
struct Direct;

#[tonic::async_trait]
impl Echo for Direct {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// Forwards every call to the next server and returns its answer.
struct Relay {
    upstream: EchoClient<Channel>,
}

#[tonic::async_trait]
impl Echo for Relay {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        self.upstream.clone().echo(request.into_inner()).await
    }
}

/// Serves echo on `listener` until the process ends; with `upstream`, as a relay to it.
pub async fn serve(
    listener: TcpListener,
    upstream: Option<String>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Without TCP_NODELAY small replies wait for delayed ACKs (40 ms each),
    // as the gateway's and the shards' listeners know too.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = match upstream {
        None => Server::builder().add_service(EchoServer::new(Direct)),
        Some(url) => {
            let channel = Endpoint::from_shared(url)?.tcp_nodelay(true).connect().await?;
            Server::builder().add_service(EchoServer::new(Relay { upstream: EchoClient::new(channel) }))
        }
    };
    router.serve_with_incoming(incoming).await?;
    Ok(())
}

/// Calls the echo server at `url` from `clients` tasks over `connections`
/// connections for `duration` after `warmup`, with `payload_size`-byte payloads.
pub async fn measure(
    name: &str,
    url: &str,
    clients: usize,
    connections: usize,
    payload_size: usize,
    warmup: Duration,
    duration: Duration,
) -> DriverResult<Measurement> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|e| format!("echo url {url:?}: {e}"))?.tcp_nodelay(true);
        channels.push(endpoint.connect().await.map_err(|e| format!("connecting to {url}: {e}"))?);
    }
    let payload = Bytes::from(vec![7u8; payload_size]);
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|n| {
            let mut client = EchoClient::new(channels[n % channels.len()].clone());
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder::new();
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    let ok = client.echo(EchoMessage { payload: payload.clone() }).await.is_ok();
                    if t >= measure_from {
                        recorder.record("echo", t.elapsed(), ok);
                    }
                }
                recorder
            })
        })
        .collect();
    let mut recorder = Recorder::new();
    for task in tasks {
        recorder.merge(&task.await.map_err(|e| format!("echo client failed: {e}"))?);
    }
    Ok(Measurement::of(name, "echo (RPC floor)".into(), &recorder, duration, 1.0, "calls"))
}
