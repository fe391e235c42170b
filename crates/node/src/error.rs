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
    /// The registry refused the client's credentials (401), e.g. a `docker login` a
    /// token server refused, or `/distribution` with wrong credentials.
    #[error("{message}")]
    Unauthorized { message: String },
    /// Not allowed for this object, e.g. removing a pre-defined network (403).
    #[error("{message}")]
    Forbidden { message: String },
    /// Networking failed (500).
    #[error(transparent)]
    Network(Box<berth_overlay_net::NetError>),
    /// The WireGuard device of encrypted overlays failed (500).
    #[error(transparent)]
    WireGuard(Box<berth_overlay_net::wireguard::WgError>),
    /// Not possible in this node's current state, or the cluster cannot be reached (503).
    #[error("{message}")]
    Unavailable { message: String },
    /// The cluster layer failed (500).
    #[error("{0}")]
    Cluster(String),
    /// The object cannot do this by its configuration, e.g. `logs` with the `none`
    /// logging driver (501).
    #[error("{message}")]
    NotImplemented { message: String },
    /// Nothing to do: already started, already stopped (304).
    #[error("{message}")]
    NotModified { message: String },
    /// The state database failed (500).
    #[error(transparent)]
    Store(Box<StoreError>),
    /// The image store or a registry failed (500, or what the registry said).
    #[error(transparent)]
    Image(Box<berth_registry_mirror::Error>),
    /// The container runtime failed (500).
    #[error(transparent)]
    Runtime(Box<berth_runtime::RuntimeError>),
    /// A filesystem operation failed (500).
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(Box::new(e))
    }
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
    pub fn unavailable(message: impl Into<String>) -> Self {
        ServiceError::Unavailable {
            message: message.into(),
        }
    }
    pub fn image(e: berth_registry_mirror::Error) -> Self {
        ServiceError::Image(Box::new(e))
    }
    /// Maps runtime failures onto what the client can act on.
    pub fn runtime(e: berth_runtime::RuntimeError) -> Self {
        use berth_runtime::RuntimeError as R;
        match e {
            R::NotFound { id } => ServiceError::not_found(format!("No such container: {id}")),
            R::ExecNotFound { exec_id, .. } => {
                ServiceError::not_found(format!("No such exec instance: {exec_id}"))
            }
            R::InvalidTransition { id, status, action } => {
                ServiceError::conflict(format!("container {id} is {status:?}: cannot {action:?}"))
            }
            e @ R::LogsNotReadable { .. } => ServiceError::NotImplemented {
                message: e.to_string(),
            },
            e @ (R::UnknownUser { .. }
            | R::UnknownGroup { .. }
            | R::NoCommand
            | R::Invalid { .. }) => ServiceError::invalid(e.to_string()),
            e => ServiceError::Runtime(Box::new(e)),
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
