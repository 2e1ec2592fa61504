//! The shard's error enum and its single mapping to gRPC status codes.

use omnishard_common::rejection::Rejection;

/// Result alias of the shard crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside a shard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: names the field and the limit.
    #[error(transparent)]
    InvalidArgument(#[from] omnishard_common::Error),
    /// Compare-and-set failed; `actual` 0 means the key does not exist.
    #[error("version conflict on key {key:?}: expected version {expected}, current version {actual} (0 = absent)")]
    VersionConflict { key: String, expected: u64, actual: u64 },
    /// A vertex or edge that must exist does not.
    #[error("{what} not found")]
    NotFound { what: String },
    /// A vertex that must not exist does.
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// The request is valid but the state does not allow it (unsafe schema change).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A deadline passed before the work was done.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Routed with the wrong ring epoch or to the wrong shard.
    #[error("{0:?}")]
    Rejected(Rejection),
    /// RocksDB failed; nothing of the failed batch was applied.
    #[error("storage error: {0}")]
    Storage(#[from] rocksdb::Error),
    /// A local failure outside RocksDB (threads, files).
    #[error("internal error: {0}")]
    Internal(String),
    /// Stored bytes that cannot be decoded.
    #[error("corrupt value for key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
    /// A bounded queue is full; the caller should back off.
    #[error("shard overloaded: {0}")]
    Overloaded(&'static str),
    /// The shard is stopping.
    #[error("shard is shutting down")]
    ShuttingDown,
    /// The replica cannot reach a majority of its group.
    #[error("no quorum: {0}")]
    NoQuorum(String),
}

impl Error {
    /// The one place shard errors become gRPC statuses.
    pub fn to_status(&self, shard_id: &str) -> tonic::Status {
        use tonic::Status;
        match self {
            Error::InvalidArgument(e) => Status::invalid_argument(e.to_string()),
            Error::VersionConflict { .. } => Status::failed_precondition(self.to_string()),
            Error::Rejected(r) => r.to_status(shard_id),
            Error::FailedPrecondition(_) => Status::failed_precondition(self.to_string()),
            Error::DeadlineExceeded(_) => Status::deadline_exceeded(format!("shard {shard_id}: {self}")),
            Error::NotFound { .. } => Status::not_found(self.to_string()),
            Error::AlreadyExists { .. } => Status::already_exists(self.to_string()),
            Error::Storage(_) | Error::Internal(_) => Status::internal(format!("shard {shard_id}: {self}")),
            Error::Corrupt { .. } => Status::data_loss(format!("shard {shard_id}: {self}")),
            Error::Overloaded(_) => Status::resource_exhausted(format!("shard {shard_id}: {self}")),
            Error::ShuttingDown => Status::unavailable(format!("shard {shard_id} is shutting down")),
            Error::NoQuorum(_) => Status::unavailable(format!("shard {shard_id}: {self}")),
        }
    }
}

impl Error {
    /// A copy for each request of a failed proposal (the enum is not `Clone`:
    /// RocksDB's error is not); kinds that callers act on keep their kind.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Rejected(r) => Error::Rejected(r.clone()),
            Error::NoQuorum(s) => Error::NoQuorum(s.clone()),
            Error::ShuttingDown => Error::ShuttingDown,
            Error::Overloaded(s) => Error::Overloaded(s),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Renders a user key for messages: UTF-8 when it is, escaped otherwise, cut at 128 bytes.
pub fn show_key(key: &[u8]) -> String {
    let cut = &key[..key.len().min(128)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if key.len() > 128 {
        text.push('…');
    }
    text
}
