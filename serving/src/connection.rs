//! Accepted connections that cannot be held open for nothing.
//!
//! * **Handshake deadline** — a connection that opens no request within
//!   `handshake_timeout` of being accepted is closed.
//! * **Idle timeout** — a connection with no request open for
//!   `idle_timeout` is closed (optional: internal ports keep long-lived
//!   connections from their gateways).
//! * **Keep-alive** — HTTP/2 pings every `keepalive_interval`; a peer that
//!   does not answer within `keepalive_timeout` is gone (half-open TCP), and
//!   its connection is closed. TCP keep-alive backs this up.
//! * **Streams per connection** — at most `max_streams_per_connection`
//!   concurrent requests on one connection.
//!
//! The connection's open-request count lives in [`ConnInfo`], which tonic
//! puts in every request's extensions; the admission layer
//! ([`crate::admission`]) counts a request from its arrival until its
//! response body ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::Server;

/// How a server treats its connections. Every field has a default that a
/// production server can run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Longest wait for a new connection's first request (default 10 s).
    pub handshake_timeout: Duration,
    /// Close a connection with no open request for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 ping interval (default 20 s).
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed (default 20 s).
    pub keepalive_timeout: Duration,
    /// Most concurrent requests (HTTP/2 streams) on one connection.
    pub max_streams_per_connection: u32,
}

impl ConnectionSettings {
    /// The public gateway port: idle connections close after 5 minutes,
    /// 1,024 streams per connection.
    pub fn public() -> ConnectionSettings {
        ConnectionSettings {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            max_streams_per_connection: 1024,
        }
    }

    /// Internal ports (shards, replicas): gateways multiplex every call to
    /// a shard over a few long-lived connections, so those are never closed
    /// for idleness and carry many streams; dead peers still go.
    pub fn internal() -> ConnectionSettings {
        ConnectionSettings { idle_timeout: None, max_streams_per_connection: 8192, ..ConnectionSettings::public() }
    }

    /// Applies the HTTP/2 part of these settings to a tonic server builder.
    pub fn apply<L>(&self, server: Server<L>) -> Server<L> {
        server
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(self.max_streams_per_connection)
    }
}

/// The connections accepted on `listener`, guarded by `settings`, with
/// Nagle's algorithm off (small RPCs must not wait for delayed ACKs) and
/// TCP keep-alive on.
pub fn incoming(
    listener: TcpListener,
    settings: ConnectionSettings,
) -> impl Stream<Item = io::Result<Guarded>> + Send + 'static {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
        .map(move |accepted| accepted.map(|stream| Guarded::new(stream, settings)))
}

/// What a connection shares with the requests it carries.
#[derive(Debug)]
pub struct ConnState {
    open: AtomicUsize,
    /// A request has arrived: the handshake deadline no longer applies.
    greeted: AtomicBool,
    /// When the last request ended, in ms since the connection's start.
    idle_since_ms: AtomicU64,
    started: Instant,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            open: AtomicUsize::new(0),
            greeted: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Counts a request as open until the returned guard drops.
    pub fn open_request(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.greeted.store(true, Ordering::Release);
        OpenRequest { state: self.clone() }
    }

    /// Requests open on this connection.
    pub fn open_requests(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open request of a connection (see [`ConnState::open_request`]).
#[derive(Debug)]
pub struct OpenRequest {
    state: Arc<ConnState>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let now = self.state.started.elapsed().as_millis() as u64;
        self.state.idle_since_ms.store(now, Ordering::Release);
        self.state.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection info tonic attaches to each request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub state: Arc<ConnState>,
}

/// A TCP connection with the deadlines of [`ConnectionSettings`].
pub struct Guarded {
    io: TcpStream,
    state: Arc<ConnState>,
    settings: ConnectionSettings,
    /// Fires at or before the next deadline; re-armed when it fires.
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl Guarded {
    fn new(io: TcpStream, settings: ConnectionSettings) -> Guarded {
        let state = Arc::new(ConnState::new());
        let timer = Box::pin(tokio::time::sleep_until(state.started + settings.handshake_timeout));
        Guarded { io, state, settings, timer, armed: true }
    }

    /// Why the connection must close now, or when to look again.
    fn check(&self, now: Instant) -> Result<Instant, &'static str> {
        // Until a first request arrives (not merely a first byte: one byte
        // must not buy a connection the idle timeout).
        if !self.state.greeted.load(Ordering::Acquire) {
            let deadline = self.state.started + self.settings.handshake_timeout;
            return if now >= deadline { Err("no request within the handshake timeout") } else { Ok(deadline) };
        }
        let Some(idle) = self.settings.idle_timeout else {
            // Nothing to enforce; look again rarely (idle settings never change).
            return Ok(now + Duration::from_secs(3600));
        };
        if self.state.open_requests() > 0 {
            // Busy: the idle clock starts when the last request ends.
            return Ok(now + idle);
        }
        let idle_since = self.state.started + Duration::from_millis(self.state.idle_since_ms.load(Ordering::Acquire));
        let deadline = idle_since + idle;
        if now >= deadline {
            Err("idle for longer than the idle timeout")
        } else {
            Ok(deadline)
        }
    }

    /// Polls the deadline timer; `Err` when the connection must close.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.armed && self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            match self.check(Instant::now()) {
                Ok(next) => {
                    self.timer.as_mut().reset(next);
                    self.armed = true;
                }
                Err(reason) => return Err(io::Error::new(io::ErrorKind::TimedOut, reason)),
            }
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo { tcp: self.io.connect_info(), state: self.state.clone() }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => Poll::Ready(result),
            // The server always has a read waiting, so this is where a
            // connection's deadlines are watched.
            Poll::Pending => match this.poll_deadline(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn pair(settings: ConnectionSettings) -> (Guarded, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut accepted = Box::pin(incoming(listener, settings));
        let server = accepted.next().await.unwrap().unwrap();
        (server, client)
    }

    fn quick() -> ConnectionSettings {
        ConnectionSettings {
            handshake_timeout: Duration::from_millis(100),
            idle_timeout: Some(Duration::from_millis(200)),
            ..ConnectionSettings::public()
        }
    }

    #[tokio::test]
    async fn test_a_silent_connection_is_closed_after_the_handshake_timeout() {
        let (mut server, _client) = pair(quick()).await;
        let mut buf = [0u8; 16];
        let started = std::time::Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(90), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn test_bytes_without_a_request_do_not_stop_the_handshake_clock() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = pair(quick()).await;
        client.write_all(b"P").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn test_idle_closes_only_without_open_requests() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = pair(quick()).await;
        client.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
        // A request is open: the connection outlives the handshake and idle timeouts.
        let open = server.state.open_request();
        let waited = tokio::time::timeout(Duration::from_millis(500), server.read(&mut buf)).await;
        assert!(waited.is_err(), "closed while a request was open: {waited:?}");
        drop(open);
        let started = std::time::Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn test_internal_connections_do_not_idle_out() {
        use tokio::io::AsyncWriteExt;
        let settings = ConnectionSettings { idle_timeout: None, ..quick() };
        let (mut server, mut client) = pair(settings).await;
        client.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
        drop(server.state.open_request());
        let waited = tokio::time::timeout(Duration::from_millis(400), server.read(&mut buf)).await;
        assert!(waited.is_err(), "an internal connection was closed: {waited:?}");
    }
}
