//! Read consistency, enforced in one place: a tower layer in front of the
//! shard's services.
//!
//! * Writes pass through: Raft sends a write on a follower back with a
//!   typed "not leader" rejection.
//! * Reads are linearizable by default: only the leader serves them, after
//!   confirming its leadership with a quorum (read index; concurrent reads
//!   share one round). A follower answers "not leader" with the leader's address.
//! * Follower reads on request: with `x-omnishard-read: follower` any
//!   replica serves the read from its own state, after it applied at least
//!   `x-omnishard-min-seq` (read-your-writes when the client passes the
//!   `seq` of its last write).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use omnishard_common::read_mode::ReadMode;
use tower::{BoxError, Layer, Service};

use crate::error::Error;
use crate::node::Shard;

/// Longest a follower read waits for `min_seq`.
pub const MIN_SEQ_WAIT: Duration = Duration::from_secs(2);

/// Methods that write (Raft decides where they run).
const WRITES: &[&str] = &[
    "Apply",
    "InstallTopology",
    "GraphApply",
    "SearchDefine",
    "SearchDrop",
    "SearchWrite",
    "ChunkPut",
    "ChunkClaim",
    "UploadControl",
    "ManifestCommit",
    "ManifestDelete",
    "GarbageForget",
    "MigrateBegin",
    "MigrateAck",
    "MigrateIngest",
    "MigrateDrop",
];

/// Methods about this process, served by any replica.
const LOCAL: &[&str] = &["Stats", "TraceSpans"];

/// Services whose other methods are reads of replicated data.
const DATA_SERVICES: &[&str] = &["/omnishard.v1.ShardService/", "/omnishard.v1.ShardFileService/"];

/// How a request must be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No check (writes, local methods, other services).
    Pass,
    /// Linearizable: the leader, after a quorum round.
    Leader,
    /// Any replica that applied at least this sequence.
    Follower(u64),
}

fn mode_of<B>(request: &http::Request<B>) -> Result<Mode, Error> {
    let path = request.uri().path();
    let Some(method) = DATA_SERVICES.iter().find_map(|prefix| path.strip_prefix(prefix)) else {
        return Ok(Mode::Pass);
    };
    if WRITES.contains(&method) || LOCAL.contains(&method) {
        return Ok(Mode::Pass);
    }
    match ReadMode::from_headers(request.headers()).map_err(Error::InvalidArgument)? {
        ReadMode::Linearizable => Ok(Mode::Leader),
        ReadMode::Follower { min_seq } => Ok(Mode::Follower(min_seq)),
    }
}

/// Waits until this replica may serve a read in `mode`.
async fn admit(shard: &Shard, mode: Mode) -> Result<(), Error> {
    match mode {
        Mode::Pass => Ok(()),
        Mode::Leader => shard.replication.linearizable().await,
        Mode::Follower(min_seq) => {
            let deadline = Instant::now() + MIN_SEQ_WAIT;
            while shard.applier.last_seq() < min_seq {
                if Instant::now() >= deadline {
                    return Err(Error::DeadlineExceeded(format!(
                        "this replica applied sequence {} and did not reach min_seq {min_seq} in {MIN_SEQ_WAIT:?}",
                        shard.applier.last_seq()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        }
    }
}

/// Adds the consistency check to a service.
#[derive(Clone)]
pub struct ConsistencyLayer {
    shard: Arc<Shard>,
}

impl ConsistencyLayer {
    pub fn new(shard: Arc<Shard>) -> ConsistencyLayer {
        ConsistencyLayer { shard }
    }
}

impl<S> Layer<S> for ConsistencyLayer {
    type Service = Consistent<S>;

    fn layer(&self, inner: S) -> Consistent<S> {
        Consistent { inner, shard: self.shard.clone() }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Consistent<S> {
    inner: S,
    shard: Arc<Shard>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for Consistent<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mode = mode_of(&request);
        if matches!(mode, Ok(Mode::Pass)) {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        }
        // The service polled ready is the one that must serve this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shard = self.shard.clone();
        Box::pin(async move {
            let admitted = match mode {
                Ok(mode) => admit(&shard, mode).await,
                Err(e) => Err(e),
            };
            match admitted {
                Ok(()) => inner.call(request).await.map_err(Into::into),
                Err(e) => Ok(e.to_status(shard.id()).into_http::<RB>()),
            }
        })
    }
}
