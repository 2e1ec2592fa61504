//! Admission by request class. Each class (point reads and writes, heavy
//! scans and queries, long file streams, replication, …) has its own
//! capacity; a request that finds its class full is shed at once with
//! `UNAVAILABLE` naming the class, so a client holding thousands of slow
//! streams can never take the slots other clients' point requests need.
//!
//! A request holds its slot, and counts as open on its connection (the
//! idle timeout of [`crate::connection`]), until its response is ready; in
//! a class of streams ([`Class::streams`]) until its response *body* ends
//! (a download streams long after its headers). On the way
//! out, `grpc-message` is bounded ([`crate::message`]) in headers and
//! trailers alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::connection::{ConnInfo, OpenRequest};
use crate::message;

/// One class of requests: a name for messages and metrics, its capacity,
/// and the gRPC paths it holds (a full path, or a prefix ending in `/` for
/// a whole service).
#[derive(Debug, Clone)]
pub struct Class {
    pub name: &'static str,
    pub capacity: usize,
    pub paths: &'static [&'static str],
    /// Whether a request holds its slot until its response body ends
    /// (streams with deadlines of their own) or only until its response
    /// is ready (everything else: a client that stops reading an answer
    /// must not keep the slot, nor keep its connection from idling out).
    pub streams: bool,
}

impl Class {
    /// A class of `capacity` requests on `paths`, each holding its slot
    /// until its response is ready.
    pub const fn new(name: &'static str, capacity: usize, paths: &'static [&'static str]) -> Class {
        Class { name, capacity, paths, streams: false }
    }

    /// A class of long streams, each holding its slot until its response
    /// body ends; the service must bound a stream whose client stalls.
    pub const fn streams(name: &'static str, capacity: usize, paths: &'static [&'static str]) -> Class {
        Class { name, capacity, paths, streams: true }
    }

    fn holds(&self, path: &str) -> bool {
        self.paths.iter().any(|p| if p.ends_with('/') { path.starts_with(p) } else { path == *p })
    }
}

/// Admits requests into classes; the first class whose paths match takes
/// a request, and the last class takes everything else.
#[derive(Clone)]
pub struct AdmissionLayer {
    classes: Arc<[(Class, Arc<Semaphore>)]>,
    /// Named in shed messages: "gateway", "shard".
    server: &'static str,
}

impl AdmissionLayer {
    /// `classes` must not be empty; the last one is the default.
    pub fn new(server: &'static str, classes: Vec<Class>) -> AdmissionLayer {
        assert!(!classes.is_empty(), "admission needs at least one class");
        let classes = classes.into_iter().map(|c| (c.clone(), Arc::new(Semaphore::new(c.capacity)))).collect();
        AdmissionLayer { classes, server }
    }

    /// The index of the class that takes `path`.
    fn class_of(&self, path: &str) -> usize {
        let last = self.classes.len() - 1;
        self.classes[..last].iter().position(|(c, _)| c.holds(path)).unwrap_or(last)
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission { inner, layer: self.clone() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Admission<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body + Default + Unpin + Send + 'static,
{
    type Response = http::Response<AdmittedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Capacity is per class, decided in `call`; the inner service (tonic's router) is always ready.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let open = request.extensions().get::<ConnInfo>().cloned().map(|info| {
            // Keep `Request::remote_addr` working for the services.
            request.extensions_mut().insert(info.tcp.clone());
            info.state.open_request()
        });
        let index = self.layer.class_of(request.uri().path());
        let (class, slots) = &self.layer.classes[index];
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            omnishard_telemetry::global().metrics.load_shed.inc();
            let status = tonic::Status::unavailable(format!(
                "load shed: {} {} requests in flight on this {}; retry with backoff",
                class.capacity, class.name, self.layer.server
            ));
            let response = status.into_http::<RB>().map(|body| AdmittedBody::new(body, None, open));
            return Box::pin(std::future::ready(Ok(response)));
        };
        let call = self.inner.call(request);
        let streams = class.streams;
        Box::pin(async move {
            let mut response = call.await?;
            message::bound_headers(response.headers_mut());
            if !streams {
                // The answer is ready: its slot and connection count are free.
                return Ok(response.map(|body| AdmittedBody::new(body, None, None)));
            }
            Ok(response.map(|body| AdmittedBody::new(body, Some(permit), open)))
        })
    }
}

/// A response body that holds its request's class slot and connection
/// count until it ends, and bounds `grpc-message` in its trailers.
pub struct AdmittedBody<B> {
    inner: B,
    held: Option<(Option<OwnedSemaphorePermit>, Option<OpenRequest>)>,
}

impl<B> AdmittedBody<B> {
    fn new(inner: B, permit: Option<OwnedSemaphorePermit>, open: Option<OpenRequest>) -> AdmittedBody<B> {
        AdmittedBody { inner, held: Some((permit, open)) }
    }
}

impl<B: Default> Default for AdmittedBody<B> {
    fn default() -> Self {
        AdmittedBody { inner: B::default(), held: None }
    }
}

impl<B: Body + Unpin> Body for AdmittedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        message::bound_headers(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                // The body ended: its slot and connection count are free.
                this.held = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: &[&str] = &["/omnishard.v1.FileService/Upload", "/omnishard.v1.SearchService/"];

    #[test]
    fn test_paths_pick_their_class_and_the_rest_default() {
        let layer = AdmissionLayer::new(
            "test",
            vec![
                Class::streams("stream", 1, &CLASSES[..1]),
                Class::new("heavy", 1, &CLASSES[1..]),
                Class::new("point", 1, &[]),
            ],
        );
        assert_eq!(layer.class_of("/omnishard.v1.FileService/Upload"), 0);
        assert_eq!(layer.class_of("/omnishard.v1.FileService/Uploads"), 2);
        assert_eq!(layer.class_of("/omnishard.v1.SearchService/Query"), 1);
        assert_eq!(layer.class_of("/omnishard.v1.KvService/Get"), 2);
    }

    #[tokio::test]
    async fn test_a_full_class_sheds_without_touching_the_others() {
        use std::convert::Infallible;
        // A service that never answers holds its slot for good.
        let pending = tower::service_fn(|_req: http::Request<()>| async {
            std::future::pending::<Result<http::Response<tonic::body::Body>, Infallible>>().await
        });
        let layer =
            AdmissionLayer::new("test", vec![Class::new("stream", 1, &CLASSES[..1]), Class::new("point", 8, &[])]);
        let mut svc = layer.layer(pending);
        let upload = |svc: &mut Admission<_>| {
            svc.call(http::Request::builder().uri("/omnishard.v1.FileService/Upload").body(()).unwrap())
        };
        let held = tokio::spawn(upload(&mut svc));
        tokio::task::yield_now().await;
        let shed = upload(&mut svc).await.unwrap();
        let status = tonic::Status::from_header_map(shed.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("1 stream requests in flight"), "{}", status.message());
        // A point request still gets in (it waits on the service, not on admission).
        let get = svc.call(http::Request::builder().uri("/omnishard.v1.KvService/Get").body(()).unwrap());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), get).await;
        assert!(waited.is_err(), "the point request was shed");
        held.abort();
    }
}
