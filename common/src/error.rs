//! Errors of the shared building blocks: bad input and bad topology files.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a shared check failed. Messages name the field and the limit.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller sent something that can never succeed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The topology file or message is unusable.
    #[error("topology: {0}")]
    Topology(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { field, reason: reason.into() }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(err.to_string()),
            Error::Topology(_) => tonic::Status::failed_precondition(err.to_string()),
        }
    }
}
