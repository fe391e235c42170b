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

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Availability, ClusterState, NodeId, NodeRecord, NodeRole, TokenGenerations};

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
    }
}
