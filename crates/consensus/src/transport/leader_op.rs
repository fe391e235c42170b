//! Operations that must run on the leader, and `ForwardRequest`/`ForwardResponse` <-> them.

use serde::{Deserialize, Serialize};

use super::join::{JoinApplication, JoinGrant};
use super::pb::{ForwardRequest, ForwardResponse};
use crate::error::ConsensusError;
use crate::pki::seal::Sealed;
use crate::state::{
    ClusterState, Command, NodeId, NodeRole, NodeUpdate, ObjectKind, Rejection, Response,
};

/// A secret or config value in plain text on the wire (inside the mTLS channel only):
/// base64 in the JSON body; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlainValue(pub String);

impl PlainValue {
    /// Wraps `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        PlainValue(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The bytes (a malformed value is a decode error).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ConsensusError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .map_err(|_| ConsensusError::Seal {
                reason: "malformed plain value on the wire",
            })
    }
}

impl std::fmt::Debug for PlainValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainValue(<redacted>)")
    }
}

/// The task on whose behalf a node asks for secret values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskCaller {
    /// The node running the task (checked against the caller's certificate).
    pub node_id: NodeId,
    /// The task.
    pub task_id: String,
}

/// Encoding of the forward envelope's body written by this build (JSON).
pub const FORWARD_FORMAT: u32 = 1;

/// An operation executed by the leader on behalf of any node. Externally tagged: serde's
/// internally tagged enums cannot carry maps with integer keys (node ids) through JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived request per forwarded RPC; boxing the command saves nothing that matters"
)]
pub enum LeaderRequest {
    /// Append a command to the log.
    Write {
        /// The command.
        command: Command,
    },
    /// Linearizable read of the whole state.
    Read,
    /// Admit a node (check the token secret, sign its certificate, record it).
    Join {
        /// The application.
        application: JoinApplication,
    },
    /// Make an admitted node a Raft member (learner, then voter if a manager).
    AddMember {
        /// The node.
        id: NodeId,
    },
    /// Update a node; role changes also change Raft membership.
    UpdateNode {
        /// The node.
        id: NodeId,
        /// Changes.
        update: NodeUpdate,
    },
    /// Remove a (worker) node from membership and state.
    RemoveNode {
        /// The node.
        id: NodeId,
    },
    /// Return the CA key to a manager that lacks it (after promotion).
    FetchCaKey,
    /// Return both join tokens (`SWMTKN-1-...`).
    JoinTokens,
    /// Rotate one join token.
    RotateJoinToken {
        /// Which.
        role: NodeRole,
    },
    /// `node_id` is alive (recorded in the leader's memory, not in Raft). Forwarded ones
    /// must come from that node's certificate.
    Heartbeat {
        /// The node.
        node_id: NodeId,
    },
    /// Seal a new object's value with the at-rest key (any cluster member may ask:
    /// sealing reveals nothing).
    Seal {
        /// Secret or config.
        kind: ObjectKind,
        /// The object's id (bound as associated data).
        id: String,
        /// The value.
        value: PlainValue,
    },
    /// Open objects' values. Configs: any member (Swarm shows a config's data in inspect).
    /// Secrets: only for `task`, from the task's node, when its service references them.
    Open {
        /// Secret or config.
        kind: ObjectKind,
        /// Object ids.
        ids: Vec<String>,
        /// The task asking (required for secrets).
        task: Option<TaskCaller>,
    },
}

/// The leader's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// `Written` carries a whole `Response` (a service or task object); replies are short-lived
// and boxing it would change the shape every caller matches on.
#[allow(clippy::large_enum_variant)]
pub enum LeaderReply {
    /// The command was committed and applied at `index`.
    Written {
        /// State machine response.
        response: Response,
        /// Log index.
        index: u64,
    },
    /// The leader's state after confirming leadership.
    State {
        /// The state.
        state: Box<ClusterState>,
    },
    /// Admission granted.
    Joined {
        /// The grant.
        grant: JoinGrant,
    },
    /// CA key (PKCS#8 DER).
    CaKey {
        /// Key.
        der: Vec<u8>,
    },
    /// Join tokens.
    Tokens {
        /// Manager token.
        manager: String,
        /// Worker token.
        worker: String,
    },
    /// A sealed value.
    Sealed {
        /// It.
        sealed: Sealed,
    },
    /// Opened values, in the order asked.
    Opened {
        /// (object id, value).
        values: Vec<(String, PlainValue)>,
    },
    /// Done, nothing to return.
    Done,
}

/// Why the leader did not do it, as sent over the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum RemoteError {
    /// Not (or no longer) the leader.
    NotLeader {
        /// Leader if known.
        leader: Option<NodeId>,
    },
    /// State machine refused.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
    /// Join refused (bad secret, bad CSR).
    JoinRefused {
        /// Explanation.
        reason: String,
    },
    /// The operation needs a manager and the caller or callee is not one.
    NotManager,
    /// The request named a node other than the caller's.
    NotCallerNode {
        /// The node named.
        node_id: NodeId,
    },
    /// Anything else (storage, raft); `retryable` tells the caller whether to try again.
    Failed {
        /// Display of the error.
        reason: String,
        /// Whether retrying may help.
        retryable: bool,
    },
}

impl RemoteError {
    /// Convert a local error to its wire form.
    pub fn from_error(e: &ConsensusError) -> Self {
        match e {
            ConsensusError::NotLeader { leader } => RemoteError::NotLeader { leader: *leader },
            ConsensusError::Rejected(rejection) => RemoteError::Rejected {
                rejection: rejection.clone(),
            },
            ConsensusError::JoinRefused { message, .. } => RemoteError::JoinRefused {
                reason: message.clone(),
            },
            ConsensusError::NotManager { .. } => RemoteError::NotManager,
            ConsensusError::NotCallerNode { node_id } => {
                RemoteError::NotCallerNode { node_id: *node_id }
            }
            other => RemoteError::Failed {
                reason: error_chain(other),
                retryable: other.is_retryable(),
            },
        }
    }

    /// Convert the wire form to a local error; `addr` is the peer that answered.
    pub fn into_error(self, addr: &str) -> ConsensusError {
        match self {
            RemoteError::NotLeader { leader } => ConsensusError::NotLeader { leader },
            RemoteError::Rejected { rejection } => ConsensusError::Rejected(rejection),
            RemoteError::JoinRefused { reason } => ConsensusError::JoinRefused {
                addr: addr.to_string(),
                message: reason,
            },
            RemoteError::NotManager => ConsensusError::NotManager {
                op: "forwarded operation",
            },
            RemoteError::NotCallerNode { node_id } => ConsensusError::NotCallerNode { node_id },
            RemoteError::Failed { reason, retryable } => ConsensusError::Rpc {
                rpc: "Forward",
                addr: addr.to_string(),
                status: Box::new(if retryable {
                    tonic::Status::unavailable(reason)
                } else {
                    tonic::Status::internal(reason)
                }),
            },
        }
    }
}

/// `error: cause: cause` for display across the wire.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl TryFrom<&LeaderRequest> for ForwardRequest {
    type Error = ConsensusError;

    fn try_from(r: &LeaderRequest) -> Result<Self, Self::Error> {
        Ok(ForwardRequest {
            format: FORWARD_FORMAT,
            body: serde_json::to_vec(r).map_err(|source| ConsensusError::Encode {
                what: "leader request",
                source,
            })?,
        })
    }
}

impl TryFrom<&ForwardRequest> for LeaderRequest {
    type Error = ConsensusError;

    fn try_from(r: &ForwardRequest) -> Result<Self, Self::Error> {
        if r.format != FORWARD_FORMAT {
            return Err(ConsensusError::UnknownFormat {
                what: "leader request",
                found: r.format,
                supported: FORWARD_FORMAT,
            });
        }
        serde_json::from_slice(&r.body).map_err(|source| ConsensusError::Decode {
            what: "leader request",
            source,
        })
    }
}

impl TryFrom<&Result<LeaderReply, RemoteError>> for ForwardResponse {
    type Error = ConsensusError;

    fn try_from(r: &Result<LeaderReply, RemoteError>) -> Result<Self, Self::Error> {
        Ok(ForwardResponse {
            format: FORWARD_FORMAT,
            body: serde_json::to_vec(r).map_err(|source| ConsensusError::Encode {
                what: "leader reply",
                source,
            })?,
        })
    }
}

impl TryFrom<&ForwardResponse> for Result<LeaderReply, RemoteError> {
    type Error = ConsensusError;

    fn try_from(r: &ForwardResponse) -> Result<Self, Self::Error> {
        if r.format != FORWARD_FORMAT {
            return Err(ConsensusError::UnknownFormat {
                what: "leader reply",
                found: r.format,
                supported: FORWARD_FORMAT,
            });
        }
        serde_json::from_slice(&r.body).map_err(|source| ConsensusError::Decode {
            what: "leader reply",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_round_trip() {
        let req = LeaderRequest::RemoveNode { id: 5 };
        let wire = ForwardRequest::try_from(&req).unwrap();
        let back = LeaderRequest::try_from(&wire).unwrap();
        assert!(matches!(back, LeaderRequest::RemoveNode { id: 5 }));

        let reply: Result<LeaderReply, RemoteError> =
            Err(RemoteError::NotLeader { leader: Some(3) });
        let wire = ForwardResponse::try_from(&reply).unwrap();
        let back: Result<LeaderReply, RemoteError> = (&wire).try_into().unwrap();
        assert_eq!(
            back.unwrap_err(),
            RemoteError::NotLeader { leader: Some(3) }
        );
        assert!(RemoteError::NotLeader { leader: None }
            .into_error("x")
            .is_retryable());
    }
}
