//! berth-consensus: the replicated cluster state.
//!
//! Owns: the deterministic state machine `apply(command) -> response` ([`state`]: nodes,
//! services and tasks), its
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

//!
//! # Using it from berthd
//!
//! ```no_run
//! use std::time::Duration;
//! use berth_consensus::cluster::ClusterConfig;
//! use berth_consensus::{ClusterNode, NodeRole, NodeUpdate, Availability, ReadConsistency};
//!
//! # async fn demo() -> Result<(), berth_consensus::ConsensusError> {
//! let dir = std::path::Path::new("/var/lib/berth/cluster");
//! let mut config = ClusterConfig::new(dir, "0.0.0.0:2377".parse().unwrap());
//! config.advertise_addr = Some("10.0.0.1:2377".to_string());
//! let node = if ClusterNode::is_member(dir) {
//!     ClusterNode::restart(config).await?                 // berthd start
//! } else {
//!     ClusterNode::init(config).await?                    // POST /swarm/init
//! };
//! // On another host: ClusterNode::join(config, "10.0.0.1:2377", &token).await?
//! let tokens = node.join_tokens().await?;                 // GET /swarm JoinTokens
//! println!("{} {}", tokens.manager, tokens.worker);       // SWMTKN-1-<fp>-<secret>
//! node.wait_for_leader(Duration::from_secs(10)).await?;
//! let nodes = node.nodes(ReadConsistency::Linearizable).await?; // GET /nodes
//! let id = nodes[0].id;
//! node.update_node(id, NodeUpdate {                       // POST /nodes/{id}/update
//!     availability: Some(Availability::Drain),
//!     role: Some(NodeRole::Manager),
//!     ..NodeUpdate::default()
//! }).await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod cluster;
pub mod error;
pub mod pki;
pub mod raft_types;
pub mod state;
pub mod store;
pub mod transport;

pub use cluster::{ClusterConfig, ClusterNode, JoinTokens, RaftTuning, ReadConsistency};
pub use error::ConsensusError;
pub use pki::JoinToken;
pub use state::{
    Availability, ClusterSettings, ClusterState, Command, NodeDescription, NodeId, NodeRecord,
    NodeRole, NodeUpdate, ObjectKind, Rejection, Response, SealedObject,
};
pub use store::StateView;
pub use transport::task_logs::{
    OutputStream, TaskLogLine, TaskLogQuery, TaskLogSource, TaskLogSourceError,
};
