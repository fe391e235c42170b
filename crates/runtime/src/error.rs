//! The one error type of berth-runtime.

use std::path::PathBuf;

use crate::lifecycle::{Action, Status};

/// Everything that can go wrong in the runtime. Variants carry the container id or path they
/// concern; [`RuntimeError::is_retryable`] tells transient failures from permanent ones.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no such container: {id}")]
    NotFound { id: String },
    /// `logs` of a container whose driver keeps nothing (`none`); dockerd's message.
    #[error("configured logging driver does not support reading")]
    LogsNotReadable { id: String },
    #[error("container {id} already exists")]
    AlreadyExists { id: String },
    #[error("invalid container id {id:?}")]
    InvalidId { id: String },
    #[error("cannot {action:?} container {id} while it is {status:?}")]
    InvalidTransition {
        id: String,
        action: Action,
        status: Status,
    },
    #[error("snapshot {chain_id} does not exist")]
    SnapshotMissing { chain_id: String },
    #[error("invalid chain id or digest {value:?}")]
    InvalidDigest { value: String },
    #[error("mount {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmount {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("encode/decode {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("OCI spec for {id}: {source}")]
    Spec {
        id: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Docker's (runc's) words.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    UnknownGroup { group: String },
    #[error("image config has neither Entrypoint nor Cmd and none was given")]
    NoCommand,
    /// A run option that cannot be honoured as given (e.g. a seccomp profile that does not
    /// parse); the message is the client's.
    #[error("{message}")]
    Invalid { message: String },
    #[error("libcontainer {op} for {id}: {source}")]
    Container {
        op: &'static str,
        id: String,
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("cgroup {op} for {id}: {message}")]
    Cgroup {
        op: &'static str,
        id: String,
        message: String,
    },
    #[error("system call {call}: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("shim of {id} failed to start: {message}")]
    ShimStart { id: String, message: String },
    #[error("shim of {id} is not reachable at {socket}: {source}")]
    ShimUnreachable {
        id: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim of {id} answered with an error: {message}")]
    ShimRequest { id: String, message: String },
    #[error("shim protocol violation: {detail}")]
    Protocol { detail: &'static str },
    #[error("no such exec {exec_id} in container {id}")]
    ExecNotFound { id: String, exec_id: String },
    #[error("teardown of {id} failed: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Teardown {
        id: String,
        errors: Vec<RuntimeError>,
    },
    #[error("timed out after {millis} ms waiting for {what}")]
    Timeout { what: &'static str, millis: u64 },
}

impl RuntimeError {
    /// True when retrying the same call later may succeed (a shim busy starting or stopping,
    /// a timeout); false for errors that will repeat.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RuntimeError::ShimUnreachable { .. } | RuntimeError::Timeout { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
