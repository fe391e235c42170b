//! From the replicated cluster state to what this node's overlay data plane must hold
//! (`berth_overlay_net::overlay`): pure functions, fed by the state on every change.
//!
//! ```text
//!   ClusterState (networks, endpoints, nodes, tasks) --desired_overlays(me)--> OverlayDesired
//!                                                    --vip_rules(network)---> Vec<VipRule>
//! ```
//!
//! Rules: a network is realised on a node that hosts an endpoint of it (a container, a
//! task, or its routing-mesh sandbox on `ingress`); every endpoint of such a network that
//! lives on a node (service VIPs do not: they are load-balanced in the client's netns) is
//! listed with the underlay address of its node (the host part of the node record's
//! `addr`), so the driver programs FDB and neighbour entries for exactly the live remote
//! endpoints and drops those of a node that left (its endpoints leave the state with it).
//!
//! Wired by `service::overlay_plane` (reconcile loop, plain containers, tasks, DNS, and
//! `vip_rules` in every local container and task namespace on an overlay).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use berth_consensus::state::{EndpointOwner, Network};
use berth_consensus::{ClusterState, NodeId};
use berth_orchestrator::TaskState;
use berth_overlay_net::overlay::{OverlayDesired, OverlayEndpoint, OverlaySpec, VipRule};

/// The underlay IPv4 address of a node record's `addr` (`host:port`), if it is one.
pub fn node_underlay_addr(state: &ClusterState, id: NodeId) -> Option<Ipv4Addr> {
    let node = state.nodes.get(&id)?;
    let host = node
        .addr
        .rsplit_once(':')
        .map_or(node.addr.as_str(), |(h, _)| h);
    host.trim_matches(['[', ']']).parse().ok()
}

fn spec_of(n: &Network, host_address: Option<Ipv4Addr>) -> OverlaySpec {
    OverlaySpec {
        id: n.id.clone(),
        vni: n.vni,
        subnet: n.subnet.clone(),
        gateway: Some(n.gateway),
        mtu: 0,
        internal: n.spec.internal,
        host_address,
    }
}

/// What node `me` must realise; `None` when its own record or address is unknown.
pub fn desired_overlays(state: &ClusterState, me: NodeId) -> Option<OverlayDesired> {
    let local_addr = node_underlay_addr(state, me)?;
    let used: BTreeSet<&str> = state
        .endpoints
        .values()
        .filter(|e| e.node_id == Some(me))
        .map(|e| e.network_id.as_str())
        .collect();
    let mut networks = Vec::new();
    let mut endpoints = Vec::new();
    for n in state
        .networks
        .values()
        .filter(|n| used.contains(n.id.as_str()))
    {
        let mut host_address = None;
        for e in state.endpoints_of_network(&n.id) {
            let Some(node) = e.node_id else { continue };
            if node == me && e.owner == EndpointOwner::NodeSandbox {
                host_address = Some(e.ip);
                continue;
            }
            let Some(node_addr) = node_underlay_addr(state, node) else {
                continue;
            };
            endpoints.push(OverlayEndpoint {
                id: e.id.clone(),
                network_id: n.id.clone(),
                ip: e.ip,
                mac: e.mac,
                node_addr,
                local: node == me,
            });
        }
        networks.push(spec_of(n, host_address));
    }
    Some(OverlayDesired {
        local_addr,
        networks,
        endpoints,
    })
}

/// Whether a task is a backend of its service: it runs (observed state `Running`) and is
/// not being stopped (desired state still `Running`, or `Complete` for jobs), so a task on
/// its way out stops getting new connections before its container stops, as in Swarm.
pub fn serves(t: &berth_orchestrator::Task) -> bool {
    t.status.state == TaskState::Running
        && matches!(t.desired_state, TaskState::Running | TaskState::Complete)
}

/// The VIP rules of network `network_id`: each service's VIP on it, to the addresses on it
/// of the service's tasks that serve ([`serves`]).
pub fn vip_rules(state: &ClusterState, network_id: &str) -> Vec<VipRule> {
    state
        .endpoints_of_network(network_id)
        .filter_map(|vip| match &vip.owner {
            EndpointOwner::ServiceVip { service_id } => Some((vip, service_id)),
            _ => None,
        })
        .map(|(vip, service_id)| VipRule {
            network_id: network_id.to_string(),
            vip: vip.ip,
            backends: state
                .endpoints_of_network(network_id)
                .filter(|e| match &e.owner {
                    EndpointOwner::Task { id, service_id: s } => {
                        s == service_id && state.tasks.get(id).is_some_and(serves)
                    }
                    _ => false,
                })
                .map(|e| e.ip)
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use berth_consensus::state::{NetworkSpec, NodeSpec};
    use berth_consensus::{Command, NodeRole, Response};

    use super::*;

    fn node(id: NodeId) -> NodeSpec {
        NodeSpec {
            id,
            hostname: format!("h{id}"),
            addr: format!("10.77.0.{id}:2377"),
            role: if id == 1 {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            },
            cert_fingerprint: format!("fp{id}"),
        }
    }

    fn attach(state: &mut ClusterState, index: u64, id: &str, node_id: NodeId) -> Ipv4Addr {
        let r = state.apply(
            index,
            &Command::AttachEndpoint {
                id: id.into(),
                network: "app".into(),
                node_id,
                owner: EndpointOwner::Container {
                    id: format!("c{id}"),
                    name: id.into(),
                    aliases: vec![],
                },
                requested_ip: None,
            },
        );
        let Response::Endpoint { endpoint } = r else {
            panic!("{r:?}")
        };
        endpoint.ip
    }

    #[test]
    fn a_node_realises_the_networks_it_uses_with_every_endpoint_and_forgets_a_removed_node() {
        let mut state = ClusterState::default();
        state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: node(1),
                networking: None,
            },
        );
        state.apply(2, &Command::AddNode(node(2)));
        state.apply(3, &Command::AddNode(node(3)));
        state.apply(
            4,
            &Command::CreateNetwork {
                id: "n1".into(),
                spec: NetworkSpec {
                    name: "app".into(),
                    attachable: true,
                    ..NetworkSpec::default()
                },
                at: 0,
            },
        );
        let a = attach(&mut state, 5, "a", 1);
        let b = attach(&mut state, 6, "b", 3);
        // Node 2 hosts nothing: it realises nothing.
        let d2 = desired_overlays(&state, 2).unwrap();
        assert!(d2.networks.is_empty() && d2.endpoints.is_empty());
        assert_eq!(d2.local_addr, Ipv4Addr::new(10, 77, 0, 2));
        let d1 = desired_overlays(&state, 1).unwrap();
        assert_eq!(d1.networks.len(), 1);
        assert_eq!(
            (d1.networks[0].vni, d1.networks[0].subnet.as_str()),
            (4097, "10.0.1.0/24")
        );
        let eps: Vec<_> = d1
            .endpoints
            .iter()
            .map(|e| (e.ip, e.node_addr, e.local))
            .collect();
        assert_eq!(
            eps,
            vec![
                (a, Ipv4Addr::new(10, 77, 0, 1), true),
                (b, Ipv4Addr::new(10, 77, 0, 3), false)
            ]
        );
        // Node 3 leaves: node 1 keeps no endpoint pointing at it.
        state.apply(7, &Command::RemoveNode { id: 3 });
        let d1 = desired_overlays(&state, 1).unwrap();
        assert!(d1
            .endpoints
            .iter()
            .all(|e| e.node_addr != Ipv4Addr::new(10, 77, 0, 3)));
        assert_eq!(d1.endpoints.len(), 1);
        assert!(vip_rules(&state, "n1").is_empty());
    }
}
