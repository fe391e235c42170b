//! The crate's one error type. [`ConsensusError::is_retryable`] separates transient
//! conditions (no leader yet, leader moved, peer unreachable) from fatal ones.

use std::path::PathBuf;

use crate::state::{NodeId, Rejection};

/// Boxed error from a dependency whose error type is generic or private (openraft).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in berth-consensus.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// Serialising a value failed.
    #[error("encoding {what}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Deserialising a value failed (corrupt or foreign data).
    #[error("decoding {what}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A persisted record carries a format this build does not know (written by a newer
    /// berth). Fatal: never guess.
    #[error("{what} has format {found}, this build reads up to {supported}")]
    UnknownFormat {
        /// What was decoded.
        what: &'static str,
        /// Format found.
        found: u32,
        /// Newest format this build knows.
        supported: u32,
    },
    /// Filesystem I/O failed.
    #[error("I/O on {}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The redb database failed.
    #[error("redb: {op}")]
    Db {
        /// Operation.
        op: &'static str,
        /// Cause (boxed: `redb::Error` is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// An openraft operation failed with an error other than "not leader".
    #[error("raft: {op}")]
    Raft {
        /// Operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// This node is not the leader (retryable: forward to `leader` or wait for one).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Current leader, if known.
        leader: Option<NodeId>,
    },
    /// No leader is known, or the leader did not answer in time (retryable).
    #[error("no leader available after {attempts} attempts")]
    NoLeader {
        /// How many times the operation was tried.
        attempts: u32,
    },
    /// The state machine refused the command (deterministic; retrying will not help).
    #[error("command rejected: {0}")]
    Rejected(#[from] Rejection),
    /// Certificate generation, parsing or signing failed.
    #[error("certificate: {op}")]
    Certificate {
        /// Operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM or DER blob could not be read as a certificate or key.
    #[error("invalid {what} in {}", path.display())]
    InvalidPem {
        /// What was expected.
        what: &'static str,
        /// Where.
        path: PathBuf,
    },
    /// Building a TLS configuration failed.
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    /// Building a certificate verifier failed.
    #[error("TLS certificate verifier")]
    TlsVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The join token is malformed.
    #[error("malformed join token: {reason}")]
    MalformedToken {
        /// What is wrong.
        reason: &'static str,
    },
    /// The remote CA does not match the fingerprint in the join token.
    #[error("remote CA fingerprint {actual} does not match the join token's {expected}")]
    CaFingerprintMismatch {
        /// From the token.
        expected: String,
        /// Of the certificate the remote sent.
        actual: String,
    },
    /// The remote refused the join (wrong or rotated secret, unknown node).
    #[error("join refused by {addr}: {message}")]
    JoinRefused {
        /// Remote address.
        addr: String,
        /// Remote's explanation.
        message: String,
    },
    /// Connecting to a peer failed (retryable).
    #[error("connecting to {addr}")]
    Connect {
        /// Peer address.
        addr: String,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// A gRPC call failed. Retryable when the status is `Unavailable` or `DeadlineExceeded`.
    #[error("rpc {rpc} to {addr}: {status}")]
    Rpc {
        /// RPC name.
        rpc: &'static str,
        /// Peer address.
        addr: String,
        /// Status returned (boxed: `Status` is large).
        status: Box<tonic::Status>,
    },
    /// Binding the listen address failed.
    #[error("binding {addr}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory already holds a cluster (init/join refused).
    #[error("{} already holds cluster state", dir.display())]
    AlreadyMember {
        /// Data directory.
        dir: PathBuf,
    },
    /// The data directory holds no cluster state (restart refused).
    #[error("{} holds no cluster state", dir.display())]
    NotMember {
        /// Data directory.
        dir: PathBuf,
    },
    /// The operation needs a manager (and its CA key), this node is a worker.
    #[error("{op} needs a manager node")]
    NotManager {
        /// Operation.
        op: &'static str,
    },
    /// A forwarded request spoke for a node whose certificate the caller does not hold:
    /// a node reports only its own task status, description and heartbeat. Fatal.
    #[error("the caller is not node {node_id}: a node reports only its own task status, description and heartbeat")]
    NotCallerNode {
        /// The node the request named.
        node_id: NodeId,
    },
    /// A secret or config value could not be sealed or opened (wrong key, altered value).
    #[error("secret store: {reason}")]
    Seal {
        /// What failed.
        reason: &'static str,
    },
    /// The node was shut down.
    #[error("the node is shut down")]
    Shutdown,
}

impl ConsensusError {
    /// True when the same operation may succeed later without any change by the caller
    /// (leader election in progress, peer briefly unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            ConsensusError::NotLeader { .. }
            | ConsensusError::NoLeader { .. }
            | ConsensusError::Connect { .. } => true,
            ConsensusError::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted
            ),
            _ => false,
        }
    }

    pub(crate) fn db(op: &'static str, source: impl Into<redb::Error>) -> Self {
        ConsensusError::Db {
            op,
            source: Box::new(source.into()),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConsensusError::Io {
            path: path.into(),
            source,
        }
    }
}
