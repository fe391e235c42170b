//! Older encodings of [`ClusterState`] and their migration to the current one.
//!
//! Each older format keeps a frozen copy of its shape here (never edited once released),
//! so the current structs can change freely: `decode` reads the old shape with its own
//! types and `migrate_vN` builds the current state from it.
//!
//! | format | shape |
//! |---|---|
//! | 1 | cluster id, last index, nodes (no description), revoked certs, token generations |
//! | 2 | format 1 + node `description`, `services`, `tasks` |
//! | 3 | format 2 + node `wg_public_key`, `networks`, `endpoints`, `address_pools` |
//! | 4 | format 3 + `settings` (`docker swarm update`), `secrets`, `configs` (sealed objects) |

use std::collections::{BTreeMap, BTreeSet};

use berth_orchestrator::{Service, Task};
use serde::Deserialize;

use super::networks::{derived_ingress_id, AddressPools, Network, NetworkEndpoint};
use super::{
    Availability, ClusterSettings, ClusterState, NodeDescription, NodeId, NodeRecord, NodeRole,
    TokenGenerations,
};

/// Format 1's `ClusterState`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateV1 {
    cluster_id: Option<String>,
    last_index: u64,
    nodes: BTreeMap<NodeId, NodeRecordV1>,
    revoked_certs: BTreeSet<String>,
    tokens: TokenGenerationsV1,
}

/// Format 1's `NodeRecord`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRecordV1 {
    id: NodeId,
    hostname: String,
    addr: String,
    role: NodeRole,
    availability: Availability,
    labels: BTreeMap<String, String>,
    cert_fingerprint: String,
    created_index: u64,
    version: u64,
}

/// Format 1's `TokenGenerations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenGenerationsV1 {
    manager: u64,
    worker: u64,
}

/// Format 1 to the current state: nodes have no description yet, there are no services
/// and no tasks.
pub(super) fn migrate_v1(v1: StateV1) -> ClusterState {
    ClusterState {
        cluster_id: v1.cluster_id,
        last_index: v1.last_index,
        nodes: v1
            .nodes
            .into_iter()
            .map(|(id, n)| {
                (
                    id,
                    NodeRecord {
                        id: n.id,
                        hostname: n.hostname,
                        addr: n.addr,
                        role: n.role,
                        availability: n.availability,
                        labels: n.labels,
                        cert_fingerprint: n.cert_fingerprint,
                        created_index: n.created_index,
                        version: n.version,
                        description: None,
                        wg_public_key: None,
                        wg_listen_port: None,
                    },
                )
            })
            .collect(),
        revoked_certs: v1.revoked_certs,
        tokens: TokenGenerations {
            manager: v1.tokens.manager,
            worker: v1.tokens.worker,
        },
        services: BTreeMap::new(),
        tasks: BTreeMap::new(),
        networks: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        address_pools: AddressPools::default(),
        settings: ClusterSettings::default(),
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
    .with_ingress()
    .with_settings_version()
}

/// Format 2's `ClusterState` (services and tasks are `berth_orchestrator`'s records, whose
/// own compatibility is kept by `#[serde(default)]` on their later fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateV2 {
    cluster_id: Option<String>,
    last_index: u64,
    nodes: BTreeMap<NodeId, NodeRecordV2>,
    revoked_certs: BTreeSet<String>,
    tokens: TokenGenerationsV1,
    #[serde(default)]
    services: BTreeMap<String, Service>,
    #[serde(default)]
    tasks: BTreeMap<String, Task>,
}

/// Format 2's `NodeRecord`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRecordV2 {
    id: NodeId,
    hostname: String,
    addr: String,
    role: NodeRole,
    availability: Availability,
    labels: BTreeMap<String, String>,
    cert_fingerprint: String,
    created_index: u64,
    version: u64,
    #[serde(default)]
    description: Option<NodeDescription>,
}

/// Format 2 to the current state: nodes have no WireGuard key yet; the cluster gets
/// Swarm's default address pool and its `ingress` network (id derived from the cluster
/// id, so every replica migrating the same snapshot agrees). Services keep running
/// without VIPs or task addresses: they had no networks.
pub(super) fn migrate_v2(v2: StateV2) -> ClusterState {
    ClusterState {
        cluster_id: v2.cluster_id,
        last_index: v2.last_index,
        nodes: v2
            .nodes
            .into_iter()
            .map(|(id, n)| {
                (
                    id,
                    NodeRecord {
                        id: n.id,
                        hostname: n.hostname,
                        addr: n.addr,
                        role: n.role,
                        availability: n.availability,
                        labels: n.labels,
                        cert_fingerprint: n.cert_fingerprint,
                        created_index: n.created_index,
                        version: n.version,
                        description: n.description,
                        wg_public_key: None,
                        wg_listen_port: None,
                    },
                )
            })
            .collect(),
        revoked_certs: v2.revoked_certs,
        tokens: TokenGenerations {
            manager: v2.tokens.manager,
            worker: v2.tokens.worker,
        },
        services: v2.services,
        tasks: v2.tasks,
        networks: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        address_pools: AddressPools::default(),
        settings: ClusterSettings::default(),
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
    .with_ingress()
    .with_settings_version()
}

/// Format 3's `ClusterState` (networks, endpoints and pools are the current types, which
/// format 4 did not change).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateV3 {
    cluster_id: Option<String>,
    last_index: u64,
    nodes: BTreeMap<NodeId, NodeRecordV3>,
    revoked_certs: BTreeSet<String>,
    tokens: TokenGenerationsV1,
    #[serde(default)]
    services: BTreeMap<String, Service>,
    #[serde(default)]
    tasks: BTreeMap<String, Task>,
    networks: BTreeMap<String, Network>,
    endpoints: BTreeMap<String, NetworkEndpoint>,
    address_pools: AddressPools,
}

/// Format 3's `NodeRecord`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRecordV3 {
    id: NodeId,
    hostname: String,
    addr: String,
    role: NodeRole,
    availability: Availability,
    labels: BTreeMap<String, String>,
    cert_fingerprint: String,
    created_index: u64,
    version: u64,
    #[serde(default)]
    description: Option<NodeDescription>,
    #[serde(default)]
    wg_public_key: Option<String>,
}

/// Format 3 to the current state: the cluster gets berth's default settings, at the
/// version of the last applied entry (the CLI reads it before `swarm update`), and no
/// secrets and no configs.
pub(super) fn migrate_v3(v3: StateV3) -> ClusterState {
    let settings = ClusterSettings {
        version: if v3.cluster_id.is_some() {
            v3.last_index
        } else {
            0
        },
        ..ClusterSettings::default()
    };
    ClusterState {
        cluster_id: v3.cluster_id,
        last_index: v3.last_index,
        nodes: v3
            .nodes
            .into_iter()
            .map(|(id, n)| {
                (
                    id,
                    NodeRecord {
                        id: n.id,
                        hostname: n.hostname,
                        addr: n.addr,
                        role: n.role,
                        availability: n.availability,
                        labels: n.labels,
                        cert_fingerprint: n.cert_fingerprint,
                        created_index: n.created_index,
                        version: n.version,
                        description: n.description,
                        wg_public_key: n.wg_public_key,
                        wg_listen_port: None,
                    },
                )
            })
            .collect(),
        revoked_certs: v3.revoked_certs,
        tokens: TokenGenerations {
            manager: v3.tokens.manager,
            worker: v3.tokens.worker,
        },
        services: v3.services,
        tasks: v3.tasks,
        networks: v3.networks,
        endpoints: v3.endpoints,
        address_pools: v3.address_pools,
        settings,
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
}

impl ClusterState {
    /// Adds the `ingress` network of an initialised cluster that has none (migrations).
    fn with_ingress(mut self) -> Self {
        if let Some(cluster_id) = self.cluster_id.clone() {
            if self.ingress_network().is_none() {
                let index = self.last_index;
                self.create_ingress(index, &derived_ingress_id(&cluster_id), 0);
            }
        }
        self
    }

    /// The settings version of a migrated initialised cluster: its last index.
    fn with_settings_version(mut self) -> Self {
        if self.cluster_id.is_some() {
            self.settings.version = self.last_index;
        }
        self
    }
}
