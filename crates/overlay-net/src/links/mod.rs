//! Links as plans: the netlink (and sysctl) steps that bring up a bridge network or a
//! container endpoint, as data, and the seam that executes them.
//!
//! Owns: [`LinkOp`] (one step), the plan builders ([`network_setup_plan`],
//! [`endpoint_setup_plan`] and their teardowns), the [`LinkExecutor`] seam, and
//! [`run_setup`] / [`run_teardown`] (stop-and-roll-back vs keep-going-and-collect).
//! The real executor is [`RtnetlinkExecutor`]; a recording fake is in `testing` (feature `testing`).
//!
//! Does not own: nftables (`firewall`), address choice (`ipam`).
//!
//! ```text
//!  Network / Endpoint (state) --plan fns (pure)--> Vec<LinkOp> --LinkExecutor--> kernel
//!                                                                 (rtnetlink, /proc/sys)
//! ```
//!
//! Every link berth creates gets the interface alias [`BERTH_ALIAS`], so start-up
//! reconciliation removes only links that are provably berth's, never another engine's
//! `br-*` bridge.

pub(crate) mod rtnetlink_exec;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::{NetError, Result};
use crate::ipam::Ipv4Net;
use crate::state::{Endpoint, Network};

pub use rtnetlink_exec::{link_names_in, RtnetlinkExecutor};

/// The `ifalias` berth puts on every link it creates.
pub const BERTH_ALIAS: &str = "berth";

/// Which network namespace a step acts in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Netns {
    /// The namespace the executor was created in (the host's).
    Host,
    /// A namespace file such as `/proc/<pid>/ns/net` or `/run/netns/<name>`.
    Path(PathBuf),
}

/// One step of a link plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    /// Create a bridge in the host namespace (no-op if a bridge of that name exists).
    CreateBridge {
        /// Device name.
        name: String,
        /// MTU; `None` keeps the kernel's default (1500).
        mtu: Option<u32>,
    },
    /// Create a veth pair: one end in the host namespace, the other created directly in
    /// another namespace under its final name (no temporary name, no later move: moving a
    /// link between namespaces costs a kernel synchronisation of about 20 ms).
    CreateVeth {
        /// Host end.
        host: String,
        /// Container end's name (`eth0`).
        peer: String,
        /// The namespace the container end is created in.
        peer_netns: PathBuf,
        /// The container end's MAC address (derived from its IPv4 address, as Docker
        /// does, so a re-created endpoint or a reused address keeps peers' ARP caches
        /// valid).
        peer_mac: [u8; 6],
        /// MTU of both ends; `None` keeps the kernel's default.
        mtu: Option<u32>,
    },
    /// Attach a host link to a bridge.
    SetMaster {
        /// The port.
        link: String,
        /// The bridge.
        bridge: String,
    },
    /// Turn on hairpin mode on a bridge port: a frame may leave by the port it came in. Routed
    /// traffic does not need it, but with `br_netfilter` loaded DNAT happens while bridging,
    /// and a container reaching its own published port then needs it (Docker sets it too
    /// when it runs without its userland proxy). With `isolated`, also the kernel's port
    /// isolation (`bridge link set ... isolated on`, Linux 4.18): the port exchanges frames
    /// with the bridge itself (the gateway) but with no other isolated port, which is how
    /// berth honours Docker's `com.docker.network.bridge.enable_icc=false`.
    SetHairpin {
        /// The port.
        link: String,
        /// Isolate it from the bridge's other isolated ports.
        isolated: bool,
    },
    /// Add an IPv4 address (replacing an identical one).
    AddAddress {
        /// Where the link is.
        netns: Netns,
        /// Link name.
        link: String,
        /// Address.
        address: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// Set a link up.
    SetUp {
        /// Where the link is.
        netns: Netns,
        /// Link name.
        link: String,
    },
    /// Add (or replace) the default route via a gateway.
    AddDefaultRoute {
        /// Where.
        netns: Netns,
        /// Gateway address.
        gateway: Ipv4Addr,
    },
    /// Delete a host link (absent counts as done; deleting one veth end removes both).
    DeleteLink {
        /// Link name.
        name: String,
    },
    /// Write a sysctl under /proc/sys in the host namespace.
    WriteSysctl {
        /// Path relative to /proc/sys, e.g. `net/ipv4/ip_forward`.
        key: String,
        /// Value to write.
        value: String,
    },
}

/// What a link looks like from the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    /// Interface name.
    pub name: String,
    /// `bridge`, `veth`, ... (the rtnetlink info kind), if any.
    pub kind: Option<String>,
    /// The bridge it is attached to, by name.
    pub master: Option<String>,
    /// Its `ifalias`.
    pub alias: Option<String>,
    /// Its MTU.
    pub mtu: Option<u32>,
}

impl ObservedLink {
    /// Whether berth created this link.
    pub fn is_berths(&self) -> bool {
        self.alias.as_deref() == Some(BERTH_ALIAS)
    }
}

/// The kernel seam for links, addresses, routes and the few sysctls bridges need.
///
/// Acts in the network namespace of the thread that created it (the host's, for berthd).
pub trait LinkExecutor: Send + Sync {
    /// Executes one step.
    fn apply(&self, op: &LinkOp) -> impl Future<Output = Result<()>> + Send;
    /// Lists the host namespace's links.
    fn list_links(&self) -> impl Future<Output = Result<Vec<ObservedLink>>> + Send;
    /// Lists the destinations of the host's IPv4 routes (main table), for subnet choice.
    fn list_routes(&self) -> impl Future<Output = Result<Vec<Ipv4Net>>> + Send;
}

/// Steps that bring up a network's bridge: the device, the gateway address, up, IPv4
/// forwarding, and `route_localnet` on the bridge (so DNAT of 127.0.0.1 may leave through
/// it, see `firewall`).
pub fn network_setup_plan(net: &Network) -> Vec<LinkOp> {
    vec![
        LinkOp::CreateBridge {
            name: net.bridge.clone(),
            mtu: net.mtu,
        },
        LinkOp::AddAddress {
            netns: Netns::Host,
            link: net.bridge.clone(),
            address: net.pool.gateway,
            prefix: net.pool.subnet.prefix(),
        },
        LinkOp::SetUp {
            netns: Netns::Host,
            link: net.bridge.clone(),
        },
        LinkOp::WriteSysctl {
            key: "net/ipv4/ip_forward".into(),
            value: "1".into(),
        },
        LinkOp::WriteSysctl {
            key: format!("net/ipv4/conf/{}/route_localnet", net.bridge),
            value: "1".into(),
        },
    ]
}

/// Steps that remove a network's bridge (its sysctls go with the device).
pub fn network_teardown_plan(net: &Network) -> Vec<LinkOp> {
    vec![LinkOp::DeleteLink {
        name: net.bridge.clone(),
    }]
}

/// Steps that attach an endpoint: a veth pair whose container end is created inside the
/// container's namespace as `eth<N>`, the host end on the bridge (hairpin on) and up, the
/// container end addressed and up, `lo` up, and (for the container's first network) the
/// default route via the gateway.
pub fn endpoint_setup_plan(ep: &Endpoint, net: &Network) -> Vec<LinkOp> {
    let ns = Netns::Path(ep.netns.clone());
    let mut plan = vec![
        LinkOp::CreateVeth {
            host: ep.host_veth.clone(),
            peer: ep.ifname.clone(),
            peer_netns: ep.netns.clone(),
            peer_mac: ep.mac_address(),
            mtu: net.mtu,
        },
        LinkOp::SetMaster {
            link: ep.host_veth.clone(),
            bridge: net.bridge.clone(),
        },
        LinkOp::SetHairpin {
            link: ep.host_veth.clone(),
            isolated: !net.icc,
        },
        LinkOp::SetUp {
            netns: Netns::Host,
            link: ep.host_veth.clone(),
        },
        LinkOp::AddAddress {
            netns: ns.clone(),
            link: ep.ifname.clone(),
            address: ep.address,
            prefix: net.pool.subnet.prefix(),
        },
        LinkOp::SetUp {
            netns: ns.clone(),
            link: ep.ifname.clone(),
        },
        LinkOp::SetUp {
            netns: ns.clone(),
            link: "lo".into(),
        },
    ];
    if ep.default_route {
        plan.push(LinkOp::AddDefaultRoute {
            netns: ns,
            gateway: net.pool.gateway,
        });
    }
    plan
}

/// Steps that detach an endpoint: deleting the host end removes the pair, wherever the
/// other end is (and if the container's namespace is gone, the pair is gone already).
pub fn endpoint_teardown_plan(ep: &Endpoint) -> Vec<LinkOp> {
    vec![LinkOp::DeleteLink {
        name: ep.host_veth.clone(),
    }]
}

/// Runs a setup plan in order, stopping at the first failure. If a step after the first
/// fails, runs `rollback` (collecting, not stopping) and returns the setup error; rollback
/// errors are logged. If the first step (the creation) fails, nothing was made, and the
/// rollback is not run: it would delete whatever already had that name.
pub async fn run_setup<L: LinkExecutor>(
    links: &L,
    plan: &[LinkOp],
    rollback: &[LinkOp],
) -> Result<()> {
    for (i, op) in plan.iter().enumerate() {
        if let Err(err) = links.apply(op).await {
            if i > 0 {
                for rb in run_teardown(links, rollback).await {
                    tracing::warn!(error = %rb, "rollback step failed");
                }
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Runs every step of a teardown plan, whatever fails, and returns every error.
pub async fn run_teardown<L: LinkExecutor>(links: &L, plan: &[LinkOp]) -> Vec<NetError> {
    let mut errors = Vec::new();
    for op in plan {
        if let Err(err) = links.apply(op).await {
            errors.push(err);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::AddressPool;

    fn net() -> Network {
        Network {
            id: "f".repeat(64),
            name: "web".into(),
            bridge: "br-ffffffffffff".into(),
            pool: AddressPool::new("10.77.0.0/24".parse().unwrap(), None).unwrap(),
            is_default: false,
            internal: false,
            mtu: Some(1450),
            icc: true,
        }
    }

    fn ep() -> Endpoint {
        Endpoint {
            id: "1".repeat(64),
            container_id: "c".repeat(64),
            container_name: "c1".into(),
            aliases: vec![],
            network_id: "f".repeat(64),
            netns: "/run/netns/x".into(),
            netns_inode: None,
            default_route: true,
            ifname: "eth0".into(),
            host_veth: Endpoint::host_veth_for(&"1".repeat(64)),
            address: Ipv4Addr::new(10, 77, 0, 2),
            ports: vec![],
            dns_servers: vec![],
        }
    }

    #[test]
    fn network_plan_addresses_bridge_with_gateway_and_enables_localnet() {
        let plan = network_setup_plan(&net());
        assert_eq!(
            plan[0],
            LinkOp::CreateBridge {
                name: "br-ffffffffffff".into(),
                mtu: Some(1450)
            }
        );
        assert!(plan.contains(&LinkOp::AddAddress {
            netns: Netns::Host,
            link: "br-ffffffffffff".into(),
            address: Ipv4Addr::new(10, 77, 0, 1),
            prefix: 24
        }));
        assert!(plan.contains(&LinkOp::WriteSysctl {
            key: "net/ipv4/conf/br-ffffffffffff/route_localnet".into(),
            value: "1".into()
        }));
    }

    #[test]
    fn endpoint_plan_creates_the_peer_inside_then_configures_it() {
        let plan = endpoint_setup_plan(&ep(), &net());
        assert_eq!(
            plan[0],
            LinkOp::CreateVeth {
                host: ep().host_veth,
                peer: "eth0".into(),
                peer_netns: "/run/netns/x".into(),
                peer_mac: [0x02, 0x42, 10, 77, 0, 2],
                mtu: Some(1450),
            }
        );
        let pos = |pred: &dyn Fn(&LinkOp) -> bool| plan.iter().position(pred).unwrap();
        let addr = pos(&|op| matches!(op, LinkOp::AddAddress { link, .. } if link == "eth0"));
        let up = pos(&|op| matches!(op, LinkOp::SetUp { link, .. } if link == "eth0"));
        let route = pos(
            &|op| matches!(op, LinkOp::AddDefaultRoute { gateway, .. } if *gateway == Ipv4Addr::new(10, 77, 0, 1)),
        );
        assert!(
            addr < up && up < route,
            "the route needs the address and the link up"
        );
        assert!(plan.contains(&LinkOp::SetUp {
            netns: Netns::Path("/run/netns/x".into()),
            link: "lo".into()
        }));
        assert!(plan.contains(&LinkOp::SetMaster {
            link: ep().host_veth,
            bridge: "br-ffffffffffff".into()
        }));
        assert!(plan.contains(&LinkOp::SetHairpin {
            link: ep().host_veth,
            isolated: false,
        }));
        let second = endpoint_setup_plan(
            &Endpoint {
                default_route: false,
                ..ep()
            },
            &net(),
        );
        assert!(!second
            .iter()
            .any(|op| matches!(op, LinkOp::AddDefaultRoute { .. })));
    }

    #[test]
    fn teardown_deletes_the_host_end() {
        assert_eq!(
            endpoint_teardown_plan(&ep()),
            vec![LinkOp::DeleteLink {
                name: ep().host_veth
            }]
        );
    }
}
