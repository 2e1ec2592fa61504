//! The gateway's outer deadline: no request outlives it — except file
//! transfers, whose length grows with the file; they are bounded by their
//! own per-chunk shard deadlines and by the client's pace instead
//! (`files.header_timeout`, `files.idle_timeout`, `files.min_rate`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

/// gRPC path prefix of the methods the deadline skips.
const EXEMPT_PREFIX: &str = "/omnishard.v1.FileService/";

/// Applies [`Deadline`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer(pub Duration);

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner, limit: self.0 }
    }
}

/// Answers `DEADLINE_EXCEEDED` when a request runs longer than `limit`.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S, B, R> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let exempt = request.uri().path().starts_with(EXEMPT_PREFIX);
        let call = self.inner.call(request);
        if exempt {
            return Box::pin(call);
        }
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the gateway's {}s request deadline passed",
                    limit.as_secs()
                ))
                .into_http()),
            }
        })
    }
}
