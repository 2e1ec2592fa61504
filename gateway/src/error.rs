//! The gateway's error enum and its single mapping to gRPC status codes.

/// Result alias of the gateway crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a gateway request can fail with. Cloneable so one failed
/// coalesced shard call can fail every request that rode on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad input: names the field and the limit.
    #[error(transparent)]
    InvalidArgument(#[from] omnishard_common::Error),
    /// A key, vertex or edge does not exist (or has expired).
    #[error("{what} not found")]
    NotFound { what: String },
    /// What the request would create exists already (a shard id or address).
    #[error("{0}")]
    AlreadyExists(String),
    /// A traversal budget was exceeded.
    #[error("traversal stopped by budget {budget}: {detail}")]
    Budget { budget: &'static str, detail: String },
    /// A byte range outside the file.
    #[error("{0}")]
    OutOfRange(String),
    /// A capacity limit of the gateway is reached; says which.
    #[error("{0}")]
    Exhausted(String),
    /// The request's own deadline passed.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// A shard cannot be reached, its circuit is open, or it is stopping.
    #[error("shard {shard_id} unavailable at {addr}: {reason}")]
    ShardUnavailable { shard_id: String, addr: String, reason: String },
    /// The replica asked does not lead its shard's group (and none was found in time).
    #[error("{message}")]
    NotLeader { shard_id: String, leader: Option<String>, message: String },
    /// A shard did not answer in time.
    #[error("shard {shard_id} timed out: {message}")]
    ShardTimeout { shard_id: String, message: String },
    /// A shard refused the request: the gateway's ring is not the shard's.
    #[error("{message}")]
    Misrouted { shard_id: String, wrong_epoch: bool, shard_epoch: u64, message: String },
    /// The key's range is in the short fence before it changes owner; retried.
    #[error("{message}")]
    Moving { shard_id: String, message: String },
    /// A shard answered with an error; its code is kept.
    #[error("{message}")]
    Shard { shard_id: String, code: tonic::Code, message: String },
    /// A multi-shard write failed on some shards after others committed.
    #[error("write partially applied: shards [{}] committed; {failed}", committed.join(", "))]
    PartialWrite { committed: Vec<String>, failed: Box<Error> },
    /// The operator aborted the migration a step belonged to; it rolls back.
    #[error("migration {migration} was aborted by the operator; rolling back")]
    Aborted { migration: u64 },
}

impl Error {
    /// The gRPC code of this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidArgument(e) => match e {
                omnishard_common::Error::InvalidArgument { .. } => Code::InvalidArgument,
                omnishard_common::Error::Topology(_) => Code::FailedPrecondition,
            },
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Budget { .. } | Error::Exhausted(_) => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::ShardUnavailable { .. } | Error::NotLeader { .. } => Code::Unavailable,
            Error::ShardTimeout { .. } | Error::Deadline(_) => Code::DeadlineExceeded,
            // The caller did nothing wrong; the gateway needs a newer ring.
            Error::Misrouted { .. } | Error::Moving { .. } => Code::Unavailable,
            Error::Shard { code, .. } => *code,
            Error::PartialWrite { failed, .. } => failed.code(),
            Error::Aborted { .. } => Code::Aborted,
        }
    }

    /// The one place gateway errors become gRPC statuses.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.code(), self.to_string())
    }

    /// Whether retrying an idempotent read could help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ShardUnavailable { .. } | Error::ShardTimeout { .. } | Error::NotLeader { .. })
    }

    /// Whether a shard refused the request before applying it because the
    /// key lives elsewhere or is fenced while it moves.
    pub fn is_redirect(&self) -> bool {
        matches!(self, Error::Misrouted { .. } | Error::Moving { .. })
    }
}
