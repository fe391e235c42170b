//! berth-consensus: the replicated cluster state.
//!
//! Owns: the deterministic state machine `apply(command) -> response` ([`state`]), its
//! openraft integration with redb log and state-machine storage ([`store`]), snapshots,
//! membership, the cluster PKI and join tokens ([`pki`]), the raft and cluster RPCs between
//! nodes over mutual-TLS gRPC ([`transport`]), and the [`ClusterNode`] handle berthd drives.
//!
//! Does not own: the Docker API for swarm/nodes (`berth-node`), running tasks (the agent in
//! `berth-node`), networking (`berth-overlay-net`).
//!
//! ```text
//!   berthd ──> ClusterNode ──write/read──> openraft ──RaftLogStorage──> LogStore ─┐
//!                  │  (forward to leader)      │     ──RaftStateMachine─> SM store ─┤ redb
//!                  │                           │                         │ apply() │
//!                  └──── transport (tonic gRPC over rustls mTLS) <───────┘ pure    │
//!                              ▲ join: CA fingerprint + secret ──> signed node cert
//! ```

pub mod cluster;
pub mod error;
pub mod pki;
pub mod raft_types;
pub mod state;
pub mod store;
pub mod transport;

pub use cluster::{ClusterConfig, ClusterNode, ReadConsistency};
pub use error::ConsensusError;
pub use pki::JoinToken;
pub use state::{
    Availability, ClusterState, Command, NodeId, NodeRecord, NodeRole, NodeUpdate, Response,
};
