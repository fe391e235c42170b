//! The replicated cluster state: a deterministic `apply(index, command) -> response`.
//!
//! Owns: the cluster objects (nodes, services, tasks, overlay networks and their endpoints
//! with the address allocation; secret and config objects with their values sealed,
//! [`secrets`]), the commands that change them, and the versioned encoding of the whole state
//! (used for Raft snapshots and the state-machine record in redb).
//!
//! Does not own: storage, Raft, the network, clocks or randomness. Everything random (node
//! ids, cluster id) is chosen by the driver and carried inside the command, so every
//! replica computes the same state from the same log.
//!
//! ```text
//!   Raft log entry (index, Command) --> ClusterState::apply --> Response
//!                                           |
//!                     encode()/decode() <---+---> snapshot bytes (versioned)
//! ```

mod command;
mod migrate;
mod networks;
mod node;
mod secrets;
mod services;
mod settings;

use std::collections::{BTreeMap, BTreeSet};

use berth_orchestrator::{Service, Task};
use serde::{Deserialize, Serialize};

pub use command::{Command, InitNetworking, Rejection, Response};
pub use networks::{
    derived_ingress_id, is_dnsrr, mac_for_ip, predefined_network_id, publishes_ingress,
    service_network_targets, task_endpoint_id, AddressPools, EndpointOwner, Ipv4Net, Network,
    NetworkEndpoint, NetworkSpec, PredefinedNetwork, DEFAULT_MASK_LENGTH, DEFAULT_POOL, FIRST_VNI,
    INGRESS_NAME, INGRESS_VNI,
};
pub use node::{Availability, NodeDescription, NodeId, NodeRecord, NodeRole, NodeSpec, NodeUpdate};
pub use secrets::{spec_references, ObjectKind, SealedObject};
pub use services::{
    service_name, service_ports, spec_ports, ServicePort, ASSIGNED_MESSAGE, DYNAMIC_PORT_RANGE,
    PENDING_MESSAGE,
};
pub use settings::{ClusterSettings, DOWN_AFTER_HEARTBEATS, MIN_HEARTBEAT_PERIOD_NS};

use crate::error::ConsensusError;

/// Current encoding version of [`ClusterState`] (see [`ClusterState::encode`]); older ones
/// are migrated by [`ClusterState::decode`] (history in `migrate.rs`).
pub const STATE_FORMAT: u32 = 4;

/// Generations of the two join tokens; a token's secret is derived from its generation,
/// so rotating a token is bumping a number (the secret itself never enters the state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGenerations {
    /// Generation of the manager token.
    pub manager: u64,
    /// Generation of the worker token.
    pub worker: u64,
}

impl TokenGenerations {
    /// Generation of `role`'s token.
    pub fn get(&self, role: NodeRole) -> u64 {
        match role {
            NodeRole::Manager => self.manager,
            NodeRole::Worker => self.worker,
        }
    }
}

/// The whole replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Set by `InitCluster`.
    pub cluster_id: Option<String>,
    /// Log index of the last applied command (0 before any).
    pub last_index: u64,
    /// All nodes, by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Fingerprints of certificates of removed nodes: refused at the transport.
    pub revoked_certs: BTreeSet<String>,
    /// Join token generations.
    pub tokens: TokenGenerations,
    /// All services, by id.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// All tasks, by id.
    #[serde(default)]
    pub tasks: BTreeMap<String, Task>,
    /// Overlay networks, by id.
    pub networks: BTreeMap<String, Network>,
    /// Every address on an overlay network (containers, tasks, service VIPs, node
    /// sandboxes), by endpoint id.
    pub endpoints: BTreeMap<String, NetworkEndpoint>,
    /// The default address pools subnets are taken from.
    pub address_pools: AddressPools,
    /// The cluster settings (`docker swarm update`).
    pub settings: ClusterSettings,
    /// Secret objects (values sealed), by id.
    pub secrets: BTreeMap<String, SealedObject>,
    /// Config objects (values sealed), by id.
    pub configs: BTreeMap<String, SealedObject>,
}

/// On-disk / on-wire envelope of the state as read. `format` selects the decoder; older
/// formats are migrated in [`ClusterState::decode`].
#[derive(Deserialize)]
struct StateEnvelope {
    format: u32,
    state: serde_json::Value,
}

impl ClusterState {
    /// Apply the command of log entry `index`. Deterministic: no clock, randomness or I/O.
    pub fn apply(&mut self, index: u64, command: &Command) -> Response {
        self.last_index = index;
        match self.apply_inner(index, command) {
            Ok(response) => response,
            Err(rejection) => Response::Rejected { rejection },
        }
    }

    /// Record that a Raft-internal entry (blank or membership change) was applied.
    pub fn apply_internal(&mut self, index: u64) -> Response {
        self.last_index = index;
        Response::Internal
    }

    fn apply_inner(&mut self, index: u64, command: &Command) -> Result<Response, Rejection> {
        if self.cluster_id.is_none() && !matches!(command, Command::InitCluster { .. }) {
            return Err(Rejection::NotInitialized);
        }
        match command {
            Command::InitCluster {
                cluster_id,
                first_node,
                networking,
            } => {
                if self.cluster_id.is_some() {
                    return Err(Rejection::AlreadyInitialized);
                }
                if let Some(n) = networking {
                    n.pools
                        .validate()
                        .map_err(|detail| Rejection::NetworkInvalid { detail })?;
                }
                self.cluster_id = Some(cluster_id.clone());
                self.settings = ClusterSettings {
                    version: index,
                    ..ClusterSettings::default()
                };
                let mut spec = first_node.clone();
                spec.role = NodeRole::Manager;
                self.insert_node(index, &spec)?;
                match networking {
                    Some(n) => {
                        self.address_pools = n.pools.clone();
                        self.create_ingress(index, &n.ingress_id, n.at);
                    }
                    None => {
                        self.address_pools = AddressPools::default();
                        self.create_ingress(index, &derived_ingress_id(cluster_id), 0);
                    }
                }
                Ok(Response::ClusterInitialized {
                    cluster_id: cluster_id.clone(),
                })
            }
            Command::AddNode(spec) => {
                let node = self.insert_node(index, spec)?;
                Ok(Response::Node { node })
            }
            Command::UpdateNode { id, update } => self.update_node(index, *id, update),
            Command::RemoveNode { id } => {
                let node = self
                    .nodes
                    .get(id)
                    .ok_or(Rejection::NodeNotFound { id: *id })?;
                if node.role == NodeRole::Manager {
                    return Err(Rejection::RemoveManager { id: *id });
                }
                let fingerprint = node.cert_fingerprint.clone();
                self.nodes.remove(id);
                self.drop_node_endpoints(*id);
                self.revoked_certs.insert(fingerprint);
                Ok(Response::NodeRemoved { id: *id })
            }
            Command::RotateJoinToken { role } => {
                let generation = match role {
                    NodeRole::Manager => &mut self.tokens.manager,
                    NodeRole::Worker => &mut self.tokens.worker,
                };
                *generation += 1;
                self.settings.version = index;
                Ok(Response::TokenRotated {
                    role: *role,
                    generation: *generation,
                })
            }
            Command::Batch { commands } => Ok(Response::Batch {
                responses: commands.iter().map(|c| self.apply(index, c)).collect(),
            }),
            Command::ForceNewCluster { survivor } => {
                if !self.nodes.contains_key(survivor) {
                    return Err(Rejection::NodeNotFound { id: *survivor });
                }
                let mut demoted = Vec::new();
                for node in self.nodes.values_mut() {
                    if node.id == *survivor {
                        if node.role != NodeRole::Manager {
                            node.role = NodeRole::Manager;
                            node.version = index;
                        }
                    } else if node.role == NodeRole::Manager {
                        node.role = NodeRole::Worker;
                        node.version = index;
                        demoted.push(node.id);
                    }
                }
                Ok(Response::ForcedNewCluster { demoted })
            }
            Command::CreateService { service } => self.create_service(index, service),
            Command::UpdateService {
                id,
                expected_version,
                spec,
                image,
                at,
                registry_auth,
            } => self.update_service(
                index,
                id,
                *expected_version,
                (spec, image, registry_auth.as_ref()),
                *at,
            ),
            Command::RemoveService { id } => self.remove_service(index, id),
            Command::RollbackService {
                id,
                expected_version,
                at,
            } => self.rollback_service(index, id, *expected_version, *at),
            Command::Orchestrate { changes, at } => Ok(self.orchestrate(index, changes, *at)),
            Command::UpdateTaskStatus {
                task_id,
                node_id,
                status,
            } => self.update_task_status(index, task_id, *node_id, status),
            Command::CreateNetwork { id, spec, at } => self.create_network(index, id, spec, *at),
            Command::RemoveNetwork {
                id,
                release_stopping,
            } => self.remove_network(id, *release_stopping),
            Command::AttachEndpoint {
                id,
                network,
                node_id,
                owner,
                requested_ip,
            } => self.attach_endpoint(id, network, *node_id, owner, *requested_ip),
            Command::DetachEndpoint { id, node_id } => self.detach_endpoint(id, *node_id),
            Command::SetNodeWgKey {
                id,
                public_key,
                listen_port,
            } => self.set_node_wg_key(index, *id, public_key, *listen_port),
            Command::UpdateClusterSettings {
                expected_version,
                settings,
            } => self.update_settings(index, *expected_version, settings),
            Command::CreateObject { kind, object } => self.create_object(index, *kind, object),
            Command::UpdateObject {
                kind,
                id,
                expected_version,
                labels,
                at,
            } => self.update_object(index, *kind, id, *expected_version, labels, *at),
            Command::RemoveObject { kind, id } => self.remove_object(*kind, id),
            Command::SetNodeDescription { id, description } => {
                let node = self
                    .nodes
                    .get_mut(id)
                    .ok_or(Rejection::NodeNotFound { id: *id })?;
                if node.description.as_ref() != Some(description) {
                    node.description = Some(description.clone());
                    node.version = index;
                }
                Ok(Response::Node { node: node.clone() })
            }
        }
    }

    fn insert_node(&mut self, index: u64, spec: &NodeSpec) -> Result<NodeRecord, Rejection> {
        if self.nodes.contains_key(&spec.id) {
            return Err(Rejection::NodeExists { id: spec.id });
        }
        let node = NodeRecord {
            id: spec.id,
            hostname: spec.hostname.clone(),
            addr: spec.addr.clone(),
            role: spec.role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            cert_fingerprint: spec.cert_fingerprint.clone(),
            created_index: index,
            version: index,
            description: None,
            wg_public_key: None,
            wg_listen_port: None,
        };
        self.nodes.insert(spec.id, node.clone());
        Ok(node)
    }

    fn update_node(
        &mut self,
        index: u64,
        id: NodeId,
        update: &NodeUpdate,
    ) -> Result<Response, Rejection> {
        let managers = self.managers().count();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(Rejection::NodeNotFound { id })?;
        if let Some(expected) = update.expected_version {
            if expected != node.version {
                return Err(Rejection::VersionMismatch {
                    id,
                    expected,
                    actual: node.version,
                });
            }
        }
        if update.role == Some(NodeRole::Worker) && node.role == NodeRole::Manager && managers <= 1
        {
            return Err(Rejection::LastManager { id });
        }
        if let Some(role) = update.role {
            node.role = role;
        }
        if let Some(availability) = update.availability {
            node.availability = availability;
        }
        if let Some(labels) = &update.labels {
            node.labels = labels.clone();
        }
        node.version = index;
        Ok(Response::Node { node: node.clone() })
    }

    /// Managers in id order.
    pub fn managers(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| n.role == NodeRole::Manager)
    }

    /// The node holding a certificate with this fingerprint.
    pub fn node_by_fingerprint(&self, fingerprint: &str) -> Option<&NodeRecord> {
        self.nodes
            .values()
            .find(|n| n.cert_fingerprint == fingerprint)
    }

    /// Versioned encoding (JSON inside an envelope carrying [`STATE_FORMAT`]).
    pub fn encode(&self) -> Result<Vec<u8>, ConsensusError> {
        // Serialised straight from the structs, without an intermediate `Value` tree: the
        // state machine encodes the whole state after every applied batch.
        #[derive(Serialize)]
        struct EnvelopeRef<'a> {
            format: u32,
            state: &'a ClusterState,
        }
        serde_json::to_vec(&EnvelopeRef {
            format: STATE_FORMAT,
            state: self,
        })
        .map_err(|source| ConsensusError::Encode {
            what: "cluster state",
            source,
        })
    }

    /// Decode any known format, migrating older ones to the current shape.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConsensusError> {
        let envelope: StateEnvelope =
            serde_json::from_slice(bytes).map_err(|source| ConsensusError::Decode {
                what: "cluster state",
                source,
            })?;
        let decode_err = |source| ConsensusError::Decode {
            what: "cluster state",
            source,
        };
        match envelope.format {
            1 => serde_json::from_value(envelope.state)
                .map(migrate::migrate_v1)
                .map_err(decode_err),
            2 => serde_json::from_value(envelope.state)
                .map(migrate::migrate_v2)
                .map_err(decode_err),
            3 => serde_json::from_value(envelope.state)
                .map(migrate::migrate_v3)
                .map_err(decode_err),
            4 => serde_json::from_value(envelope.state).map_err(decode_err),
            found => Err(ConsensusError::UnknownFormat {
                what: "cluster state",
                found,
                supported: STATE_FORMAT,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: NodeId, role: NodeRole) -> NodeSpec {
        NodeSpec {
            id,
            hostname: format!("host{id}"),
            addr: format!("127.0.0.1:{}", 7000 + id),
            role,
            cert_fingerprint: format!("fp{id}"),
        }
    }

    fn initialised() -> ClusterState {
        let mut state = ClusterState::default();
        let r = state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c1".into(),
                first_node: spec(1, NodeRole::Manager),
                networking: None,
            },
        );
        assert_eq!(
            r,
            Response::ClusterInitialized {
                cluster_id: "c1".into()
            }
        );
        state
    }

    #[test]
    fn commands_before_init_are_rejected() {
        let mut state = ClusterState::default();
        let r = state.apply(1, &Command::AddNode(spec(2, NodeRole::Worker)));
        assert_eq!(
            r,
            Response::Rejected {
                rejection: Rejection::NotInitialized
            }
        );
        assert!(state.nodes.is_empty());
    }

    #[test]
    fn init_twice_is_rejected() {
        let mut state = initialised();
        let r = state.apply(
            2,
            &Command::InitCluster {
                cluster_id: "c2".into(),
                first_node: spec(9, NodeRole::Manager),
                networking: None,
            },
        );
        assert!(matches!(
            r,
            Response::Rejected {
                rejection: Rejection::AlreadyInitialized
            }
        ));
        assert_eq!(state.cluster_id.as_deref(), Some("c1"));
    }

    #[test]
    fn add_update_remove_node_versions_follow_log_index() {
        let mut state = initialised();
        let r = state.apply(2, &Command::AddNode(spec(2, NodeRole::Worker)));
        let Response::Node { node } = r else {
            panic!("unexpected {r:?}")
        };
        assert_eq!((node.version, node.created_index), (2, 2));
        assert_eq!(
            state.apply(3, &Command::AddNode(spec(2, NodeRole::Worker))),
            Response::Rejected {
                rejection: Rejection::NodeExists { id: 2 }
            }
        );
        let mut labels = BTreeMap::new();
        labels.insert("zone".to_string(), "a".to_string());
        let r = state.apply(
            4,
            &Command::UpdateNode {
                id: 2,
                update: NodeUpdate {
                    expected_version: Some(2),
                    availability: Some(Availability::Drain),
                    labels: Some(labels.clone()),
                    role: None,
                },
            },
        );
        let Response::Node { node } = r else {
            panic!("unexpected {r:?}")
        };
        assert_eq!(node.availability, Availability::Drain);
        assert_eq!(node.labels, labels);
        assert_eq!(node.version, 4);
        // Stale version is refused and changes nothing.
        let r = state.apply(
            5,
            &Command::UpdateNode {
                id: 2,
                update: NodeUpdate {
                    expected_version: Some(2),
                    availability: Some(Availability::Active),
                    ..NodeUpdate::default()
                },
            },
        );
        assert_eq!(
            r,
            Response::Rejected {
                rejection: Rejection::VersionMismatch {
                    id: 2,
                    expected: 2,
                    actual: 4
                }
            }
        );
        assert_eq!(state.nodes[&2].availability, Availability::Drain);
        assert_eq!(
            state.apply(6, &Command::RemoveNode { id: 2 }),
            Response::NodeRemoved { id: 2 }
        );
        assert!(!state.nodes.contains_key(&2));
        assert!(state.revoked_certs.contains("fp2"));
        assert_eq!(state.last_index, 6);
    }

    #[test]
    fn last_manager_cannot_be_demoted_and_managers_cannot_be_removed() {
        let mut state = initialised();
        let demote = Command::UpdateNode {
            id: 1,
            update: NodeUpdate {
                role: Some(NodeRole::Worker),
                ..NodeUpdate::default()
            },
        };
        assert_eq!(
            state.apply(2, &demote),
            Response::Rejected {
                rejection: Rejection::LastManager { id: 1 }
            }
        );
        assert_eq!(
            state.apply(3, &Command::RemoveNode { id: 1 }),
            Response::Rejected {
                rejection: Rejection::RemoveManager { id: 1 }
            }
        );
        state.apply(4, &Command::AddNode(spec(2, NodeRole::Manager)));
        assert!(matches!(state.apply(5, &demote), Response::Node { .. }));
        assert_eq!(state.nodes[&1].role, NodeRole::Worker);
    }

    #[test]
    fn token_rotation_bumps_one_generation() {
        let mut state = initialised();
        assert_eq!(
            state.apply(
                2,
                &Command::RotateJoinToken {
                    role: NodeRole::Worker
                }
            ),
            Response::TokenRotated {
                role: NodeRole::Worker,
                generation: 1
            }
        );
        assert_eq!(
            state.tokens,
            TokenGenerations {
                manager: 0,
                worker: 1
            }
        );
    }

    #[test]
    fn force_new_cluster_demotes_other_managers() {
        let mut state = initialised();
        state.apply(2, &Command::AddNode(spec(2, NodeRole::Manager)));
        state.apply(3, &Command::AddNode(spec(3, NodeRole::Manager)));
        state.apply(4, &Command::AddNode(spec(4, NodeRole::Worker)));
        assert_eq!(
            state.apply(5, &Command::ForceNewCluster { survivor: 3 }),
            Response::ForcedNewCluster {
                demoted: vec![1, 2]
            }
        );
        let managers: Vec<_> = state.managers().map(|n| n.id).collect();
        assert_eq!(managers, vec![3]);
        assert_eq!(state.nodes.len(), 4);
    }

    #[test]
    fn apply_is_deterministic_across_replicas() {
        let log = [
            Command::InitCluster {
                cluster_id: "c".into(),
                first_node: spec(1, NodeRole::Manager),
                networking: None,
            },
            Command::AddNode(spec(2, NodeRole::Worker)),
            Command::RotateJoinToken {
                role: NodeRole::Manager,
            },
            Command::RemoveNode { id: 2 },
        ];
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        let ra: Vec<_> = log
            .iter()
            .enumerate()
            .map(|(i, c)| a.apply(i as u64 + 1, c))
            .collect();
        let rb: Vec<_> = log
            .iter()
            .enumerate()
            .map(|(i, c)| b.apply(i as u64 + 1, c))
            .collect();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
    }

    #[test]
    fn batch_applies_each_command_and_keeps_going_after_a_rejection() {
        let mut state = initialised();
        let r = state.apply(
            2,
            &Command::Batch {
                commands: vec![
                    Command::AddNode(spec(2, NodeRole::Worker)),
                    Command::AddNode(spec(2, NodeRole::Worker)),
                    Command::AddNode(spec(3, NodeRole::Worker)),
                ],
            },
        );
        let Response::Batch { responses } = r else {
            panic!("unexpected {r:?}")
        };
        assert!(matches!(responses[0], Response::Node { .. }));
        assert_eq!(
            responses[1],
            Response::Rejected {
                rejection: Rejection::NodeExists { id: 2 }
            }
        );
        assert!(matches!(responses[2], Response::Node { .. }));
        assert_eq!(state.nodes.len(), 3);
        assert_eq!(state.last_index, 2);
    }

    /// A format-1 encoding as berth wrote it before services existed (captured from that
    /// code's `encode`), decoded by today's code: same nodes, no descriptions, no services,
    /// no tasks; encoding again writes the current format.
    #[test]
    fn format_1_is_migrated() {
        let v1 = r#"{"format":1,"state":{"cluster_id":"c1","last_index":7,"nodes":{"1":{"id":1,"hostname":"m1","addr":"127.0.0.1:7001","role":"manager","availability":"active","labels":{},"cert_fingerprint":"fp1","created_index":1,"version":1},"2":{"id":2,"hostname":"w1","addr":"127.0.0.1:7002","role":"worker","availability":"drain","labels":{"zone":"a"},"cert_fingerprint":"fp2","created_index":2,"version":5}},"revoked_certs":["fp9"],"tokens":{"manager":1,"worker":2}}}"#;
        let state = ClusterState::decode(v1.as_bytes()).unwrap();
        assert_eq!(state.cluster_id.as_deref(), Some("c1"));
        assert_eq!(state.last_index, 7);
        assert_eq!(state.nodes.len(), 2);
        let w1 = &state.nodes[&2];
        assert_eq!(
            (w1.role, w1.availability, w1.version, w1.created_index),
            (NodeRole::Worker, Availability::Drain, 5, 2)
        );
        assert_eq!(w1.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(w1.description, None);
        assert!(state.revoked_certs.contains("fp9"));
        assert_eq!(
            state.tokens,
            TokenGenerations {
                manager: 1,
                worker: 2
            }
        );
        assert!(state.services.is_empty() && state.tasks.is_empty());
        let again = state.encode().unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(envelope["format"], STATE_FORMAT);
        assert_eq!(ClusterState::decode(&again).unwrap(), state);
        // A format-1 body with fields format 1 never had is corrupt, not silently dropped.
        let odd = v1.replace(r#""last_index":7"#, r#""last_index":7,"services":{}"#);
        assert!(matches!(
            ClusterState::decode(odd.as_bytes()),
            Err(ConsensusError::Decode { .. })
        ));
    }

    /// A format-2 encoding as berth wrote it before networks existed: nodes (with a
    /// description) and a service come through; the cluster gains Swarm's default pool and
    /// its `ingress` network (10.0.0.0/24, VNI 4096), the same on every replica.
    #[test]
    fn format_2_is_migrated() {
        let v2 = r#"{"format":2,"state":{"cluster_id":"c2","last_index":9,"nodes":{"1":{"id":1,"hostname":"m1","addr":"127.0.0.1:7001","role":"manager","availability":"active","labels":{},"cert_fingerprint":"fp1","created_index":1,"version":3,"description":{"os":"linux","architecture":"x86_64","nano_cpus":2000000000,"memory_bytes":1024,"engine_version":"0.1","engine_labels":{}}}},"revoked_certs":[],"tokens":{"manager":0,"worker":0},"services":{"s1":{"id":"s1","spec":{"Name":"web"},"previous_spec":null,"image":"busybox","version":4,"created_at":1,"updated_at":1,"job_iteration":0,"template_version":4}},"tasks":{}}}"#;
        let state = ClusterState::decode(v2.as_bytes()).unwrap();
        assert_eq!(state.nodes[&1].description.as_ref().unwrap().os, "linux");
        assert_eq!(state.nodes[&1].wg_public_key, None);
        assert_eq!(state.services["s1"].version, 4);
        let ingress = state.ingress_network().unwrap();
        assert_eq!(ingress.id, derived_ingress_id("c2"));
        assert_eq!(
            (ingress.vni, ingress.subnet.as_str()),
            (INGRESS_VNI, "10.0.0.0/24")
        );
        assert_eq!(state.address_pools, AddressPools::default());
        assert_eq!(ClusterState::decode(v2.as_bytes()).unwrap(), state);
        let again = state.encode().unwrap();
        assert_eq!(ClusterState::decode(&again).unwrap(), state);
        let odd = v2.replace(r#""last_index":9"#, r#""last_index":9,"networks":{}"#);
        assert!(matches!(
            ClusterState::decode(odd.as_bytes()),
            Err(ConsensusError::Decode { .. })
        ));
    }

    /// A format-3 encoding (before cluster settings; `encode` of that code, field for
    /// field): a node with its WireGuard key, a custom pool, the `ingress` network, an
    /// overlay network with a task endpoint. Everything comes through; the cluster gets
    /// the default settings at its last index (and no secrets or configs).
    #[test]
    fn format_3_is_migrated() {
        let v3 = r#"{"format":3,"state":{"cluster_id":"c3","last_index":12,"nodes":{"1":{"id":1,"hostname":"m1","addr":"127.0.0.1:7001","role":"manager","availability":"active","labels":{},"cert_fingerprint":"fp1","created_index":1,"version":3,"description":null,"wg_public_key":"d2c="}},"revoked_certs":[],"tokens":{"manager":0,"worker":1},"services":{},"tasks":{},"networks":{"n1":{"id":"n1","spec":{"name":"back","attachable":true,"internal":false,"ingress":false,"labels":{"com.docker.stack.namespace":"s"},"options":{},"subnet":null,"gateway":null,"ip_range":null},"vni":4097,"subnet":"10.20.1.0/24","gateway":"10.20.1.1","created_at":5,"version":7}},"endpoints":{"e1":{"id":"e1","network_id":"n1","node_id":1,"owner":{"kind":"task","id":"t1","service_id":"s1"},"ip":"10.20.1.2","mac":[2,66,10,20,1,2]}},"address_pools":{"pools":["10.20.0.0/16"],"mask_length":24}}}"#;
        let state = ClusterState::decode(v3.as_bytes()).unwrap();
        assert_eq!(state.nodes[&1].wg_public_key.as_deref(), Some("d2c="));
        assert_eq!(state.tokens.worker, 1);
        assert_eq!(state.networks["n1"].vni, 4097);
        assert_eq!(
            state.networks["n1"].spec.labels["com.docker.stack.namespace"],
            "s"
        );
        assert_eq!(state.endpoints["e1"].ip.to_string(), "10.20.1.2");
        assert_eq!(state.address_pools.pools, vec!["10.20.0.0/16".to_string()]);
        assert_eq!(
            state.settings,
            ClusterSettings {
                version: 12,
                ..ClusterSettings::default()
            }
        );
        // Format 4 is format 3 plus `settings`, `secrets` and `configs`: the current
        // encoding without them is the captured body.
        let again = state.encode().unwrap();
        let mut envelope: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(envelope["format"], 4);
        let body = envelope["state"].as_object_mut().unwrap();
        for added in ["settings", "secrets", "configs"] {
            body.remove(added);
        }
        let captured: serde_json::Value = serde_json::from_str(v3).unwrap();
        assert_eq!(envelope["state"], captured["state"]);
        assert_eq!(ClusterState::decode(&again).unwrap(), state);
        let odd = v3.replace(r#""last_index":12"#, r#""last_index":12,"settings":{}"#);
        assert!(matches!(
            ClusterState::decode(odd.as_bytes()),
            Err(ConsensusError::Decode { .. })
        ));
    }

    /// A format-3 encoding as berth wrote it before secrets and configs existed (captured
    /// from that code's `encode`: a node with a WireGuard key, the ingress and an attachable
    /// network with a container's endpoint): everything comes through, with no secrets and
    /// no configs; encoding again writes the current format.
    #[test]
    fn format_3_is_migrated_with_no_secrets_or_configs() {
        let v3 = r#"{"format":3,"state":{"cluster_id":"c3","last_index":4,"nodes":{"1":{"id":1,"hostname":"m1","addr":"127.0.0.1:7001","role":"manager","availability":"active","labels":{},"cert_fingerprint":"fp1","created_index":1,"version":2,"description":null,"wg_public_key":"d2drZXk="}},"revoked_certs":[],"tokens":{"manager":0,"worker":0},"services":{},"tasks":{},"networks":{"i3c0000000000000000000000":{"id":"i3c0000000000000000000000","spec":{"name":"ingress","attachable":false,"internal":false,"ingress":true,"labels":{},"options":{},"subnet":null,"gateway":null,"ip_range":null},"vni":4096,"subnet":"10.0.0.0/24","gateway":"10.0.0.1","created_at":0,"version":1},"n1":{"id":"n1","spec":{"name":"backend","attachable":true,"internal":false,"ingress":false,"labels":{},"options":{},"subnet":null,"gateway":null,"ip_range":null},"vni":4097,"subnet":"10.0.1.0/24","gateway":"10.0.1.1","created_at":5,"version":3}},"endpoints":{"e1":{"id":"e1","network_id":"n1","node_id":1,"owner":{"kind":"container","id":"k1","name":"app","aliases":[]},"ip":"10.0.1.2","mac":[2,66,10,0,1,2]}},"address_pools":{"pools":["10.0.0.0/8"],"mask_length":24}}}"#;
        let state = ClusterState::decode(v3.as_bytes()).unwrap();
        assert_eq!(state.nodes[&1].wg_public_key.as_deref(), Some("d2drZXk="));
        assert_eq!(state.networks.len(), 2);
        assert_eq!(state.networks["n1"].vni, FIRST_VNI);
        assert_eq!(state.endpoints["e1"].ip.to_string(), "10.0.1.2");
        assert_eq!(state.address_pools, AddressPools::default());
        assert!(state.secrets.is_empty() && state.configs.is_empty());
        assert_eq!(state.last_index, 4);
        let again = state.encode().unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(envelope["format"], STATE_FORMAT);
        assert_eq!(ClusterState::decode(&again).unwrap(), state);
        let odd = v3.replace(r#""last_index":4"#, r#""last_index":4,"secrets":{}"#);
        assert!(matches!(
            ClusterState::decode(odd.as_bytes()),
            Err(ConsensusError::Decode { .. })
        ));
    }

    #[test]
    fn encoding_round_trips_and_refuses_unknown_formats() {
        let mut state = initialised();
        state.apply(2, &Command::AddNode(spec(2, NodeRole::Worker)));
        let bytes = state.encode().unwrap();
        assert_eq!(ClusterState::decode(&bytes).unwrap(), state);
        let future = br#"{"format":99,"state":{}}"#;
        assert!(matches!(
            ClusterState::decode(future),
            Err(ConsensusError::UnknownFormat { found: 99, .. })
        ));
    }
}
