//! `JoinRequest`/`JoinResponse` <-> [`JoinApplication`]/[`JoinGrant`].

use serde::{Deserialize, Serialize};

use super::pb::{JoinRequest, JoinResponse};
use crate::state::{NodeId, NodeRole};

/// A node asking to join, as the leader sees it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinApplication {
    /// Token secret.
    pub secret: String,
    /// Proposed node id.
    pub node_id: NodeId,
    /// Hostname (display).
    pub hostname: String,
    /// `host:port` to reach the node.
    pub advertise_addr: String,
    /// CSR for the node's key.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for JoinApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinApplication")
            .field("node_id", &self.node_id)
            .field("hostname", &self.hostname)
            .field("advertise_addr", &self.advertise_addr)
            .finish_non_exhaustive()
    }
}

/// What an admitted node receives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrant {
    /// Signed node certificate (DER).
    pub node_cert_der: Vec<u8>,
    /// Role granted by the token.
    pub role: NodeRole,
    /// CA key (PKCS#8 DER), managers only.
    pub ca_key_der: Option<Vec<u8>>,
    /// Cluster id.
    pub cluster_id: String,
}

impl std::fmt::Debug for JoinGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGrant")
            .field("role", &self.role)
            .field("cluster_id", &self.cluster_id)
            .field("has_ca_key", &self.ca_key_der.is_some())
            .finish_non_exhaustive()
    }
}

impl From<JoinRequest> for JoinApplication {
    fn from(r: JoinRequest) -> Self {
        JoinApplication {
            secret: r.secret,
            node_id: r.node_id,
            hostname: r.hostname,
            advertise_addr: r.advertise_addr,
            csr_der: r.csr_der,
        }
    }
}

impl From<JoinApplication> for JoinRequest {
    fn from(a: JoinApplication) -> Self {
        JoinRequest {
            secret: a.secret,
            node_id: a.node_id,
            hostname: a.hostname,
            advertise_addr: a.advertise_addr,
            csr_der: a.csr_der,
        }
    }
}

impl From<JoinGrant> for JoinResponse {
    fn from(g: JoinGrant) -> Self {
        JoinResponse {
            node_cert_der: g.node_cert_der,
            role: g.role.as_str().to_string(),
            ca_key_der: g.ca_key_der.unwrap_or_default(),
            cluster_id: g.cluster_id,
        }
    }
}

impl TryFrom<JoinResponse> for JoinGrant {
    type Error = tonic::Status;

    fn try_from(r: JoinResponse) -> Result<Self, Self::Error> {
        let role = match r.role.as_str() {
            "manager" => NodeRole::Manager,
            "worker" => NodeRole::Worker,
            _ => {
                return Err(tonic::Status::invalid_argument(
                    "unknown role in JoinResponse",
                ))
            }
        };
        Ok(JoinGrant {
            node_cert_der: r.node_cert_der,
            role,
            ca_key_der: (!r.ca_key_der.is_empty()).then_some(r.ca_key_der),
            cluster_id: r.cluster_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_round_trip_keeps_absent_ca_key_absent() {
        let grant = JoinGrant {
            node_cert_der: vec![1, 2],
            role: NodeRole::Worker,
            ca_key_der: None,
            cluster_id: "c".into(),
        };
        let back = JoinGrant::try_from(JoinResponse::from(grant.clone())).unwrap();
        assert_eq!(back, grant);
        let mut bad = JoinResponse::from(grant);
        bad.role = "boss".into();
        assert!(JoinGrant::try_from(bad).is_err());
    }
}
