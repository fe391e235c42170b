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
//! Encrypted networks (`--opt encrypted`): every node has a WireGuard tunnel address
//! ([`tunnel_addresses`], link-local, derived from the node id); the endpoints of an
//! encrypted network are listed with the TUNNEL address of their node, so the VXLAN FDB
//! entries send into the WireGuard device, and only for nodes that published a key
//! (`wg_public_key`): a node without one is not reached at all rather than in plain text.
//! [`desired_wireguard`] gives this node's device: its address and its peers.
//!
//! Wired by `service::overlay_plane` (reconcile loop, plain containers, tasks, DNS, and
//! `vip_rules` in every local container and task namespace on an overlay).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use berth_consensus::state::{EndpointOwner, Network};
use berth_consensus::{ClusterState, NodeId};
use berth_orchestrator::TaskState;
use berth_overlay_net::overlay::{OverlayDesired, OverlayEndpoint, OverlaySpec, VipRule};
use berth_overlay_net::wireguard::{WgPeer, WgPublicKey};

/// The subnet of WireGuard tunnel addresses: 169.254.64.0/18 (link-local, RFC 3927: never
/// routed off the link, so it cannot meet an overlay subnet from the address pools).
pub const TUNNEL_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(169, 254, 64, 0), 18);

/// The UDP port of a node's WireGuard device (the one `wg-quick` examples use). When another
/// process of the node's network namespace has it (a second berthd), the device listens on
/// a port the kernel picks and the node record carries it (`wg_listen_port`); peers send to
/// the port of the record.
pub const WG_PORT: u16 = berth_overlay_net::wireguard::DEFAULT_LISTEN_PORT;

/// MTU of an encrypted overlay network: the WireGuard device's 1420 minus 50 bytes of VXLAN.
pub const ENCRYPTED_MTU: u32 = berth_overlay_net::wireguard::DEFAULT_MTU - 50;

/// Every node's WireGuard tunnel address, deterministic from the replicated node records:
/// host part `id mod 16382 + 1` in [`TUNNEL_NET`] (node ids are random 64-bit numbers);
/// on a collision, nodes in order of their record's creation keep theirs and a later one
/// takes the next free host part. Pure: every node computes the same map.
pub fn tunnel_addresses(state: &ClusterState) -> BTreeMap<NodeId, Ipv4Addr> {
    let hosts: u32 = (1 << (32 - TUNNEL_NET.1)) - 2;
    let base = u32::from(TUNNEL_NET.0);
    let mut nodes: Vec<(u64, NodeId)> = state
        .nodes
        .values()
        .map(|n| (n.created_index, n.id))
        .collect();
    nodes.sort_unstable();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (_, id) in nodes {
        // `hosts` addresses for at most `hosts` nodes; beyond that a node gets none.
        let mut h = u32::try_from(id % u64::from(hosts)).unwrap_or(0) + 1;
        let mut tries = 0;
        while taken.contains(&h) && tries < hosts {
            h = h % hosts + 1;
            tries += 1;
        }
        if taken.insert(h) {
            out.insert(id, Ipv4Addr::from(base + h));
        }
    }
    out
}

/// What this node's WireGuard device must be: its tunnel address and one peer per other
/// node that published a valid key and has an IPv4 underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgDesired {
    /// This node's tunnel address (in [`TUNNEL_NET`]).
    pub tunnel_addr: Ipv4Addr,
    /// The peers, with the node each stands for.
    pub peers: Vec<(NodeId, WgPeer)>,
}

/// This node's device, when it realises an encrypted network (`desired` from
/// [`desired_overlays`]); `None` when no device is wanted.
pub fn desired_wireguard(
    state: &ClusterState,
    me: NodeId,
    desired: &OverlayDesired,
) -> Option<WgDesired> {
    if !desired.networks.iter().any(|n| n.encrypted) {
        return None;
    }
    let tunnels = tunnel_addresses(state);
    let tunnel_addr = *tunnels.get(&me)?;
    let peers = state
        .nodes
        .values()
        .filter(|n| n.id != me)
        .filter_map(|n| {
            let public_key: WgPublicKey = n.wg_public_key.as_deref()?.parse().ok()?;
            let addr = node_underlay_addr(state, n.id)?;
            Some((
                n.id,
                WgPeer {
                    public_key,
                    endpoint: std::net::SocketAddr::new(
                        addr.into(),
                        n.wg_listen_port.unwrap_or(WG_PORT),
                    ),
                    tunnel_ip: *tunnels.get(&n.id)?,
                },
            ))
        })
        .collect();
    Some(WgDesired { tunnel_addr, peers })
}

/// The underlay IPv4 address of a node record's `addr` (`host:port`), if it is one.
pub fn node_underlay_addr(state: &ClusterState, id: NodeId) -> Option<Ipv4Addr> {
    let node = state.nodes.get(&id)?;
    let host = node
        .addr
        .rsplit_once(':')
        .map_or(node.addr.as_str(), |(h, _)| h);
    host.trim_matches(['[', ']']).parse().ok()
}

/// A network's `com.docker.network.driver.mtu` option (bridge and overlay networks): the
/// MTU of its bridge, VXLAN device and container interfaces (68 bytes, IPv4's minimum, to
/// 65535); `None` when it is not such a number.
pub fn mtu_option(v: &str) -> Option<u32> {
    v.parse::<u32>().ok().filter(|m| (68..=65535).contains(m))
}

fn spec_of(n: &Network, host_address: Option<Ipv4Addr>) -> OverlaySpec {
    let encrypted = n.spec.encrypted();
    // The create checked the option (a number, no more than an encrypted overlay allows).
    let chosen = n
        .spec
        .options
        .get("com.docker.network.driver.mtu")
        .and_then(|v| mtu_option(v));
    OverlaySpec {
        id: n.id.clone(),
        vni: n.vni,
        subnet: n.subnet.clone(),
        gateway: Some(n.gateway),
        mtu: chosen.unwrap_or(if encrypted { ENCRYPTED_MTU } else { 0 }),
        internal: n.spec.internal,
        host_address,
        encrypted,
    }
}

/// Whether `owner` is a task whose observed state is terminal (complete, shutdown,
/// failed, rejected, orphaned, removed).
fn ended_task(state: &ClusterState, owner: &EndpointOwner) -> bool {
    match owner {
        EndpointOwner::Task { id, .. } => state
            .tasks
            .get(id)
            .is_some_and(|t| t.status.state.is_terminal()),
        _ => false,
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
    let tunnels = tunnel_addresses(state);
    for n in state
        .networks
        .values()
        .filter(|n| used.contains(n.id.as_str()))
    {
        let encrypted = n.spec.encrypted();
        let mut host_address = None;
        for e in state.endpoints_of_network(&n.id) {
            let Some(node) = e.node_id else { continue };
            if node == me && e.owner == EndpointOwner::NodeSandbox {
                host_address = Some(e.ip);
                continue;
            }
            // A remote task that has ended keeps its address until its record goes (task
            // history), but nothing answers there any more: no FDB or neighbour entry for it
            // (swarmkit frees a dead task's attachments; an entry left to a node for an
            // address nobody holds is the stale state this plane exists to avoid).
            if node != me && ended_task(state, &e.owner) {
                continue;
            }
            let node_addr = if encrypted && node != me {
                // Through the tunnel, to a node that can decrypt it; else not at all.
                let has_key = state
                    .nodes
                    .get(&node)
                    .is_some_and(|r| r.wg_public_key.is_some());
                match tunnels.get(&node) {
                    Some(t) if has_key => *t,
                    _ => continue,
                }
            } else {
                match node_underlay_addr(state, node) {
                    Some(a) => a,
                    None => continue,
                }
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

    #[test]
    fn encrypted_networks_go_through_the_tunnels_of_nodes_with_keys_only() {
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
                    options: [("encrypted".to_string(), String::new())].into(),
                    ..NetworkSpec::default()
                },
                at: 0,
            },
        );
        let keys: Vec<String> = (0..3)
            .map(|_| {
                berth_overlay_net::wireguard::WgKeyPair::generate()
                    .public_key()
                    .to_string()
            })
            .collect();
        for (i, id) in [1u64, 2].into_iter().enumerate() {
            state.apply(
                5 + i as u64,
                &Command::SetNodeWgKey {
                    id,
                    public_key: keys[i].clone(),
                    listen_port: None,
                },
            );
        }
        attach(&mut state, 7, "a", 1);
        let b = attach(&mut state, 8, "b", 2);
        attach(&mut state, 9, "c", 3);
        let tunnels = tunnel_addresses(&state);
        assert_eq!(tunnels.len(), 3);
        for t in tunnels.values() {
            assert_eq!(t.octets()[..2], [169, 254]);
            assert!((64..128).contains(&t.octets()[2]), "{t}");
        }
        let d1 = desired_overlays(&state, 1).unwrap();
        assert!(d1.networks[0].encrypted);
        assert_eq!(d1.networks[0].mtu, ENCRYPTED_MTU);
        // Node 2's endpoint through its tunnel address; node 3 has no key: not reached.
        let remote: Vec<_> = d1
            .endpoints
            .iter()
            .filter(|e| !e.local)
            .map(|e| (e.ip, e.node_addr))
            .collect();
        assert_eq!(remote, vec![(b, tunnels[&2])]);
        let wg = desired_wireguard(&state, 1, &d1).unwrap();
        assert_eq!(wg.tunnel_addr, tunnels[&1]);
        assert_eq!(wg.peers.len(), 1);
        let (id, peer) = &wg.peers[0];
        assert_eq!(*id, 2);
        assert_eq!(peer.public_key.to_string(), keys[1]);
        assert_eq!(peer.endpoint, "10.77.0.2:51820".parse().unwrap());
        assert_eq!(peer.tunnel_ip, tunnels[&2]);
        // Node 2's device got another port (51820 was taken in its namespace): the peer's
        // endpoint follows its record.
        state.apply(
            10,
            &Command::SetNodeWgKey {
                id: 2,
                public_key: keys[1].clone(),
                listen_port: Some(40123),
            },
        );
        let wg = desired_wireguard(&state, 1, &desired_overlays(&state, 1).unwrap()).unwrap();
        assert_eq!(wg.peers[0].1.endpoint, "10.77.0.2:40123".parse().unwrap());
        // Node 2 is removed: node 1's device drops its peer.
        state.apply(11, &Command::RemoveNode { id: 2 });
        let d1 = desired_overlays(&state, 1).unwrap();
        assert!(desired_wireguard(&state, 1, &d1).unwrap().peers.is_empty());
        assert!(d1.endpoints.iter().all(|e| e.local));
    }

    #[test]
    fn tunnel_addresses_are_unique_and_older_nodes_keep_theirs() {
        let mut state = ClusterState::default();
        // 16382 host parts: ids 5 and 16387 collide on host part 6.
        state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: node(16387),
                networking: None,
            },
        );
        state.apply(2, &Command::AddNode(node(5)));
        let t = tunnel_addresses(&state);
        assert_eq!(t[&16387], Ipv4Addr::new(169, 254, 64, 6));
        assert_eq!(t[&5], Ipv4Addr::new(169, 254, 64, 7));
        // A plain network needs no device.
        let d = desired_overlays(&state, 5).unwrap();
        assert!(desired_wireguard(&state, 5, &d).is_none());
    }
}
