//! Node objects of the replicated state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Raft node id. Chosen at random by the joining node; `apply` rejects duplicates.
pub type NodeId = u64;

/// A node's role: managers are Raft voters, workers are Raft learners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Raft voter; can sign certificates and hold the CA key.
    Manager,
    /// Raft learner; holds a replica of the state but never votes.
    Worker,
}

impl NodeRole {
    /// Lowercase name, as the Docker API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

/// Scheduling availability of a node (Docker `Spec.Availability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Accepts new tasks.
    #[default]
    Active,
    /// Keeps its tasks, accepts no new ones.
    Pause,
    /// Its tasks are moved elsewhere.
    Drain,
}

impl Availability {
    /// Lowercase name, as the Docker API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

/// What a joining node asks to be recorded as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Raft node id.
    pub id: NodeId,
    /// Hostname the node reported (display only).
    pub hostname: String,
    /// `host:port` other nodes use to reach this node's gRPC endpoint.
    pub addr: String,
    /// Role granted by the join token that was used.
    pub role: NodeRole,
    /// Lowercase hex SHA-256 of the DER certificate issued to the node.
    pub cert_fingerprint: String,
}

/// A node as recorded in the cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Raft node id.
    pub id: NodeId,
    /// Hostname the node reported.
    pub hostname: String,
    /// `host:port` of its gRPC endpoint.
    pub addr: String,
    /// Manager (voter) or worker (learner).
    pub role: NodeRole,
    /// Scheduling availability.
    pub availability: Availability,
    /// User labels (`docker node update --label-add`).
    pub labels: BTreeMap<String, String>,
    /// Lowercase hex SHA-256 of its current certificate.
    pub cert_fingerprint: String,
    /// Log index of the command that created the record.
    pub created_index: u64,
    /// Log index of the last command that changed the record (Docker's `Version.Index`).
    pub version: u64,
    /// What the node reported about itself (`SetNodeDescription`, written by its agent at
    /// start); `None` until it has.
    #[serde(default)]
    pub description: Option<NodeDescription>,
    /// Its WireGuard public key (base64), set by `SetNodeWgKey`; `None` until it has.
    #[serde(default)]
    pub wg_public_key: Option<String>,
    /// The UDP port its WireGuard device listens on, set by `SetNodeWgKey`; `None`: the
    /// default, 51820 (the node's device got it, or the record predates the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wg_listen_port: Option<u16>,
}

/// What a node reports about itself (Docker's `Node.Description`): platform, capacity and
/// engine. Written only by the node itself (`Command::SetNodeDescription`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    /// `linux`.
    pub os: String,
    /// As Docker's API reports it for nodes (`x86_64`, `aarch64`).
    pub architecture: String,
    /// CPUs in units of 10^-9 CPUs.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// The engine's version (`Engine.EngineVersion`).
    pub engine_version: String,
    /// The daemon's `--label`s (`Engine.Labels`; `engine.labels.*` constraints).
    pub engine_labels: BTreeMap<String, String>,
}

/// A partial update of a node; `None` leaves a field unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpdate {
    /// If set, the update is rejected unless the record's `version` equals it.
    pub expected_version: Option<u64>,
    /// New role.
    pub role: Option<NodeRole>,
    /// New availability.
    pub availability: Option<Availability>,
    /// Replacement label set.
    pub labels: Option<BTreeMap<String, String>>,
}
