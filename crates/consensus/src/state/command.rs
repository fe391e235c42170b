//! Commands (the Raft log's application payload) and their responses.
//!
//! Log entries outlive the code that wrote them, so variants are only ever *added*: a
//! changed shape becomes a new variant, and old variants stay decodable and applicable.

use serde::{Deserialize, Serialize};

use super::node::{NodeId, NodeRecord, NodeRole, NodeSpec, NodeUpdate};

/// A change to the cluster state. Applied by [`ClusterState::apply`](super::ClusterState::apply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// First command of a cluster: names it and records the first manager.
    InitCluster {
        /// Random id chosen by the initialising node.
        cluster_id: String,
        /// The first manager.
        first_node: NodeSpec,
    },
    /// Record a node admitted with a join token.
    AddNode(NodeSpec),
    /// Change a node's role, availability or labels.
    UpdateNode {
        /// Node to change.
        id: NodeId,
        /// Fields to change.
        update: NodeUpdate,
    },
    /// Forget a node and revoke its certificate. Managers must be demoted first.
    RemoveNode {
        /// Node to remove.
        id: NodeId,
    },
    /// Invalidate the current join token of one role.
    RotateJoinToken {
        /// Which token.
        role: NodeRole,
    },
    /// Several commands in one log entry (group commit of concurrent writes). Applied in
    /// order; each gets its own response, a rejected one does not stop the others.
    Batch {
        /// The commands.
        commands: Vec<Command>,
    },
    /// Make a single remaining manager the only manager after quorum loss: every other
    /// manager is demoted to worker in the state (they are no longer Raft voters).
    ForceNewCluster {
        /// The surviving manager.
        survivor: NodeId,
    },
}

/// Why `apply` refused a command. Rejections are deterministic results, identical on every
/// replica, not storage errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// `InitCluster` on an initialised state.
    #[error("the cluster is already initialised")]
    AlreadyInitialized,
    /// Any other command before `InitCluster`.
    #[error("the cluster is not initialised")]
    NotInitialized,
    /// A node with this id exists.
    #[error("node {id} already exists")]
    NodeExists {
        /// The id.
        id: NodeId,
    },
    /// No node with this id.
    #[error("node {id} not found")]
    NodeNotFound {
        /// The id.
        id: NodeId,
    },
    /// Optimistic concurrency check failed.
    #[error("node {id} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The id.
        id: NodeId,
        /// Version the caller expected.
        expected: u64,
        /// Version found.
        actual: u64,
    },
    /// The change would leave the cluster without a manager.
    #[error("node {id} is the last manager")]
    LastManager {
        /// The id.
        id: NodeId,
    },
    /// A manager must be demoted before it is removed.
    #[error("node {id} is a manager: demote it first")]
    RemoveManager {
        /// The id.
        id: NodeId,
    },
}

/// Result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// A Raft-internal entry (blank or membership) was applied.
    Internal,
    /// The cluster was initialised.
    ClusterInitialized {
        /// Its id.
        cluster_id: String,
    },
    /// The node record after the change (`AddNode`, `UpdateNode`).
    Node {
        /// The record.
        node: NodeRecord,
    },
    /// The node was removed.
    NodeRemoved {
        /// The id.
        id: NodeId,
    },
    /// The join token of `role` is now at `generation`.
    TokenRotated {
        /// Role.
        role: NodeRole,
        /// New generation.
        generation: u64,
    },
    /// Quorum-loss recovery recorded; the listed managers were demoted.
    ForcedNewCluster {
        /// Managers demoted to workers.
        demoted: Vec<NodeId>,
    },
    /// Responses of a `Batch`, in order.
    Batch {
        /// One per command.
        responses: Vec<Response>,
    },
    /// The command was refused; the state is unchanged.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}
