//! Errors of berthd's service layer, by what the caller can do about them. The API maps
//! each kind to one HTTP status (api/error.rs); nothing else decides status codes.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The named object does not exist (404).
    #[error("{message}")]
    NotFound { message: String },
    /// The request conflicts with current state: name in use, object in use (409).
    #[error("{message}")]
    Conflict { message: String },
    /// The request is malformed or asks for something unsupported (400).
    #[error("{message}")]
    InvalidArgument { message: String },
    /// Nothing to do: already started, already stopped (304).
    #[error("{message}")]
    NotModified { message: String },
    /// The state database failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A filesystem operation failed (500).
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServiceError {
    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::NotFound {
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ServiceError::Conflict {
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError::InvalidArgument {
            message: message.into(),
        }
    }
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ServiceError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}
