//! Remembers the `x-trace-id` the gateway returns with every response, so a
//! caller can look a request up with `omnishard admin trace TRACE_ID`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The response header carrying the trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

static PRINT: AtomicBool = AtomicBool::new(false);

/// When on, every response's trace id is printed on stderr as `trace-id: ID`
/// (the CLI's `--trace`).
pub fn print_trace_ids(on: bool) {
    PRINT.store(on, Ordering::Relaxed);
}

/// A channel that notes the trace id of each response.
#[derive(Clone)]
pub struct TraceIds<S> {
    inner: S,
    last: Arc<Mutex<Option<String>>>,
}

impl<S> TraceIds<S> {
    pub(crate) fn new(inner: S) -> TraceIds<S> {
        TraceIds { inner, last: Arc::default() }
    }

    /// The trace id of the latest response on this channel (any clone).
    pub fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for TraceIds<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let last = self.last.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            if let Ok(response) = &result {
                let id = response.headers().get(TRACE_ID_HEADER).and_then(|v| v.to_str().ok());
                if let Some(id) = id {
                    if PRINT.load(Ordering::Relaxed) {
                        eprintln!("trace-id: {id}");
                    }
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
                }
            }
            result
        })
    }
}
