//! Node-to-node transport: tonic gRPC over rustls with mutual TLS.
//!
//! Owns: the protobuf service definitions (`proto/consensus.proto`), the conversions
//! between protobuf messages and domain types (one file per message family), the openraft
//! `RaftNetworkFactory` implementation ([`network`]), and the gRPC server ([`server`]).
//!
//! Does not own: what a leader does with a forwarded request, or join policy (both in
//! [`crate::cluster`]); certificates and TLS configs ([`crate::pki`]).
//!
//! ```text
//!   openraft ──RaftNetwork──> network::NetworkClient ──RaftMessage(json)──> server::RaftRpc ──> Raft
//!   ClusterNode ──Forward(LeaderRequest)──────────────────────────────> server::ClusterRpc ──> leader
//!   joiner ──GetCaCertificate / Join (no client cert)─────────────────> server::ClusterRpc
//!   ClusterNode::task_logs ──Logs(TaskLogsRequest)──> server::TasksRpc ──> TaskLogSource
//!                          <──stream TaskLogsChunk──
//! ```
//!
//! Raft messages travel as openraft's serde types in a versioned envelope
//! ([`raft_message`]) rather than hand-mirrored protobuf: openraft owns their shape, and the
//! envelope's `format` lets a later build change the encoding.

pub mod join;
pub mod leader_op;
pub mod network;
pub mod raft_message;
pub mod server;
pub mod task_logs;

/// Generated protobuf and tonic code.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("berth.consensus.v1");
}

/// Largest gRPC message accepted (snapshots are chunked by openraft well below this).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
