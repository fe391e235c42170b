//! Feeds the node's registry mirror with the cluster: once this node is a cluster member,
//! the mirror gets a QUIC peer transport (the node's cluster certificate, UDP on the
//! cluster listen address and port) and, every second, the list of live members.
//!
//! Owns: translating the cluster view (node records, the prober's reachability) into the
//! mirror's [`Member`] list. Does not own: membership or liveness ([`ClusterService`]),
//! routing and transfer (`berth_registry_mirror::mirror::{peers, quic}`).
//!
//! ```text
//!  ClusterService::nodes() (records + reachable) --1 s--> PeerSet::set(live members)
//!  <data-root>/cluster/pki/{ca.crt,node.crt,node.key} --> PeerTransport (UDP <listen addr>)
//! ```
//!
//! Outside a cluster the mirror has no transport and fetches from the registry as before.
//! Leaving detaches and closes the transport; joining again (a new node id and
//! certificate) binds a new one.

use std::net::SocketAddr;
use std::time::Duration;

use berth_registry_mirror::mirror::peers::{Member, PeerSet};
use berth_registry_mirror::mirror::quic::{PeerIdentity, PeerTimeouts, PeerTransport};
use berth_registry_mirror::Mirror;

use super::cluster::{ClusterService, LocalState, NodeView};

/// How often the member list is refreshed (the prober runs at its own pace).
const REFRESH: Duration = Duration::from_secs(1);

/// The live members among `nodes`: reachable ones (this node always is) whose cluster
/// address is an `IP:port` (the peer transport uses the same port on UDP).
pub fn live_members(nodes: &[NodeView]) -> Vec<Member> {
    nodes
        .iter()
        .filter(|n| n.reachable)
        .filter_map(|n| {
            let addr: SocketAddr = n.record.addr.parse().ok()?;
            Some(Member {
                id: super::cluster::node_id_str(n.record.id),
                addr,
            })
        })
        .collect()
}

/// Runs for the life of the daemon: attaches the transport when this node is (or becomes)
/// a member and keeps the member list current.
pub async fn run(cluster: ClusterService, mirror: Mirror) {
    // The transport and the node id it was bound for.
    let mut transport: Option<(PeerTransport, String)> = None;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let LocalState::Active { node_id, .. } = cluster.local_state() else {
            if transport.take().is_some() {
                mirror.detach_peers();
                tracing::info!("mirror peer transport closed: not in a cluster");
            }
            continue;
        };
        if transport.as_ref().is_some_and(|(_, id)| *id != node_id) {
            // Left and joined again: a new identity.
            transport = None;
            mirror.detach_peers();
        }
        if transport.is_none() {
            // A socket just closed may take a moment to be released: retried next tick.
            match attach(&cluster, &mirror, node_id.clone()) {
                Ok(t) => transport = Some((t, node_id)),
                Err(e) => {
                    tracing::warn!(error = %e, "mirror peer transport not started; fetches go to the registry");
                    continue;
                }
            }
        }
        if let (Some((t, _)), Ok(nodes)) = (&transport, cluster.nodes()) {
            t.members().set(live_members(&nodes));
        }
    }
}

fn attach(
    cluster: &ClusterService,
    mirror: &Mirror,
    node_id: String,
) -> anyhow::Result<PeerTransport> {
    let id = berth_consensus::pki::NodeIdentity::load(cluster.cluster_dir())?;
    let identity = PeerIdentity {
        ca_cert_der: id.ca_cert_der,
        cert_der: id.cert_der,
        key_der: id.key_der,
        server_name: berth_consensus::pki::NODE_SERVER_NAME.to_string(),
    };
    let addr = cluster.listen_addr();
    let t = PeerTransport::bind(
        addr,
        &identity,
        PeerSet::new(node_id),
        PeerTimeouts::default(),
    )?;
    mirror.attach_peers(t.clone());
    tracing::info!(%addr, "mirror peer transport listening (QUIC, UDP)");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_consensus::NodeRecord;

    fn view(id: u64, addr: &str, reachable: bool) -> NodeView {
        let record = NodeRecord {
            id,
            hostname: format!("h{id}"),
            addr: addr.to_string(),
            role: berth_consensus::NodeRole::Worker,
            availability: berth_consensus::Availability::Active,
            labels: Default::default(),
            cert_fingerprint: String::new(),
            created_index: 1,
            version: 1,
            description: None,
            wg_public_key: None,
            wg_listen_port: None,
        };
        NodeView {
            record,
            reachable,
            leader: false,
            is_self: false,
        }
    }

    #[test]
    fn only_reachable_nodes_with_an_ip_address_are_members() {
        let nodes = [
            view(1, "10.0.0.1:2377", true),
            view(2, "10.0.0.2:2377", false),
            view(3, "node3.lan:2377", true),
        ];
        let m = live_members(&nodes);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].addr, "10.0.0.1:2377".parse::<SocketAddr>().unwrap());
        assert_eq!(m[0].id, super::super::cluster::node_id_str(1));
    }
}
