//! Overlay networks across hosts: VXLAN without learning or flooding, static forwarding
//! and neighbour entries computed from the cluster's endpoint set, service VIPs and the
//! routing mesh in nftables.
//!
//! Owns: the desired model of one node ([`OverlayDesired`]: networks, every endpoint of
//! them anywhere in the cluster), the observed model ([`OverlayObserved`], read from the
//! kernel), the pure plan between them ([`plan_overlay`] -> [`OverlayOp`]s), the host's
//! overlay nftables table ([`render_host_table`]: outbound NAT, isolation, the routing
//! mesh's DNAT, `mode=host` DNAT), and the executor [`OverlayDriver`] (rtnetlink, `nft -f -`).
//! VIP load balancing inside client containers is in [`vip`]; the return path of the
//! routing mesh inside task containers is in [`ingress`].
//!
//! Does not own: the cluster state (addresses, VNIs, VIPs are allocated by the leader in
//! `berth-consensus`), DNS, WireGuard (for an encrypted network the caller puts the peer's
//! tunnel address in [`OverlayEndpoint::node_addr`]).
//!
//! ```text
//!  cluster state ──caller──> OverlayDesired ─┐
//!                                            ├─ plan_overlay (pure) ─> Vec<OverlayOp> ─> rtnetlink
//!  kernel ── OverlayDriver::observe ─> OverlayObserved ─┘
//!  OverlayDesired + IngressRule/HostPortRule ─ render_host_table (pure) ─> nft -f - (one transaction)
//! ```
//!
//! # Data plane, per overlay network on a node
//! The model is libnetwork's overlay driver (`drivers/overlay`: `peerAdd` programs a
//! neighbour and an FDB entry per remote endpoint on the VXLAN device, which is created with
//! `proxy` so it answers ARP itself), minus gossip: the peers come from the replicated
//! state, given by the caller.
//! - a Linux bridge `<prefix>b<vni, 6 hex>` carrying, when wanted, an address in the host
//!   namespace: [`OverlaySpec::host_address`] (the node's own address on the network, e.g. on
//!   the ingress network, with MAC [`mac_for_ip`] of it), else the network's gateway when the
//!   network is not internal (an "anycast" gateway present on every node: ARP for it never
//!   leaves the node, because nothing floods);
//! - a VXLAN device `<prefix>x<vni>` (VNI, UDP port 4789 by default, `nolearning`, `proxy`)
//!   enslaved to the bridge;
//! - for every endpoint on another node: an FDB entry (its MAC -> that node's underlay
//!   address) and a permanent neighbour entry (its IP -> its MAC) on the VXLAN device. There
//!   is no all-zeros FDB entry, so unknown destinations and broadcasts are dropped, not
//!   flooded; ARP is answered by the VXLAN device from its neighbour table.
//! - containers are plugged in by [`OverlayDriver::attach`]: a veth `<prefix>v<8 hex>` on
//!   the bridge, its peer inside the container under the caller's name, with the endpoint's
//!   MAC and address.
//!
//! A node that leaves or changes address: its endpoints leave the desired set (or carry the
//! new address), and the next reconcile deletes (or replaces) every entry that pointed at it.
//! Observation reads only links carrying this instance's `ifalias`
//! (`berth-ovl:<prefix>`), so two berthd on one host (different prefixes) never touch each
//! other's links, and the bridge driver (alias `berth`) never touches these.

//! # How berthd uses it
//! Keep one [`OverlayDriver`] (behind a `tokio::sync::Mutex`), made with a prefix unique to
//! the berthd instance. Whenever the cluster state changes (networks, endpoints, nodes):
//! build the [`OverlayDesired`] of this node and call [`OverlayDriver::reconcile`] (also at
//! start-up: it repairs what a crash left, and deletes what is no longer wanted). Then:
//! - container or task start on an overlay: [`OverlayDriver::attach`] with its netns file,
//!   address and [`mac_for_ip`]; stop: [`OverlayDriver::detach`] (removing the netns also
//!   removes the veth);
//! - service VIPs: [`OverlayDriver::program_vips`] in every client container's netns with the
//!   VIPs of its networks, again whenever a backend set changes;
//! - routing mesh: every node has an address on the ingress network
//!   ([`OverlaySpec::host_address`]; other nodes' as endpoints); [`OverlayDriver::set_published`]
//!   with an [`IngressRule`] per published port on every node (and [`HostPortRule`]s for
//!   `mode=host` on the nodes running the task); in every task on the ingress network
//!   [`OverlayDriver::program_ingress_return`] with all nodes' ingress addresses;
//! - leave swarm, daemon stop: [`OverlayDriver::teardown`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_overlay_net::NetError> {
//! use berth_overlay_net::overlay::*;
//! let mut driver = OverlayDriver::new(OverlayConfig { prefix: "bo".into(), ..OverlayConfig::default() })?;
//! let ip = "10.0.1.2".parse().unwrap();
//! let desired = OverlayDesired {
//!     local_addr: "192.168.1.10".parse().unwrap(),
//!     networks: vec![OverlaySpec { id: "n1".into(), vni: 4097, subnet: "10.0.1.0/24".into(),
//!         gateway: Some("10.0.1.1".parse().unwrap()), ..OverlaySpec::default() }],
//!     endpoints: vec![OverlayEndpoint { id: "c1".into(), network_id: "n1".into(), ip,
//!         mac: mac_for_ip(ip), node_addr: "192.168.1.10".parse().unwrap(), local: true }],
//! };
//! driver.reconcile(&desired).await?;
//! driver.attach("n1", std::path::Path::new("/run/berth/netns/c1"), "eth0", ip, 24,
//!     mac_for_ip(ip), Some("10.0.1.1".parse().unwrap())).await?;
//! # Ok(()) }
//! ```

pub mod exec;
pub mod ingress;
pub mod vip;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::{NetError, Result};
use crate::ipam::Ipv4Net;
use crate::ports::Protocol;

pub use exec::{OverlayConfig, OverlayDriver};
pub use ingress::{render_task_return_table, IngressReturn};
pub use vip::{render_vip_table, VipRule};

/// The UDP port of VXLAN (IANA, RFC 7348 §5), used when the config gives none.
pub const VXLAN_PORT: u16 = 4789;
/// Default MTU of an overlay network: 1500 minus the 50 bytes of VXLAN over IPv4.
pub const DEFAULT_OVERLAY_MTU: u32 = 1450;

/// One overlay network as this node must realise it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlaySpec {
    /// Network id (64 hex in the cluster state; any string works).
    pub id: String,
    /// VXLAN network identifier, 1..=16777215.
    pub vni: u32,
    /// IPv4 subnet, `"10.0.1.0/24"`.
    pub subnet: String,
    /// The network's gateway. Put on the local bridge (on every node) unless
    /// [`OverlaySpec::host_address`] is set: containers' way out (not for `internal`
    /// networks) and the address of the network's embedded DNS server.
    pub gateway: Option<Ipv4Addr>,
    /// MTU of the bridge, VXLAN device and veths; 0 means [`DEFAULT_OVERLAY_MTU`].
    pub mtu: u32,
    /// `--internal`: no outbound NAT, no forwarding to or from other interfaces, and from
    /// the bridge the host answers DNS (UDP/TCP 53, the embedded server on the gateway
    /// address) and nothing else (the host table's `internal_in` chain).
    pub internal: bool,
    /// This node's own address on this network (the routing mesh's per-node address on the
    /// ingress network, like Swarm's `ingress-sbox`); other nodes' addresses must appear as
    /// ordinary endpoints (MAC [`mac_for_ip`]) so they get FDB/neighbour entries.
    pub host_address: Option<Ipv4Addr>,
    /// `--opt encrypted`: the caller gives remote endpoints the WireGuard tunnel address
    /// of their node as [`OverlayEndpoint::node_addr`] (so VXLAN's UDP rides inside the
    /// instance's WireGuard device [`OverlayNames::wireguard`]), and the host table drops
    /// VXLAN packets of this VNI that arrive from, or would leave through, any other
    /// interface ([`render_host_table`]): never plain text on the underlay.
    pub encrypted: bool,
}

impl OverlaySpec {
    /// The MTU to use (0 -> [`DEFAULT_OVERLAY_MTU`]).
    pub fn effective_mtu(&self) -> u32 {
        if self.mtu == 0 {
            DEFAULT_OVERLAY_MTU
        } else {
            self.mtu
        }
    }

    /// The parsed subnet.
    pub fn net(&self) -> Result<Ipv4Net> {
        self.subnet.parse()
    }

    /// The address the local bridge carries, if any (see the field docs).
    pub fn bridge_address(&self) -> Option<Ipv4Addr> {
        self.host_address.or(self.gateway)
    }
}

/// An endpoint anywhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayEndpoint {
    /// Endpoint id (container or task id, or any unique string).
    pub id: String,
    /// The network it is on ([`OverlaySpec::id`]).
    pub network_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC (normally [`mac_for_ip`] of `ip`).
    pub mac: [u8; 6],
    /// The underlay address of the node that hosts it (for an encrypted network: that
    /// node's WireGuard tunnel address).
    pub node_addr: Ipv4Addr,
    /// Whether it is on this node (no FDB/neighbour entry: the bridge reaches it directly).
    pub local: bool,
}

/// Everything this node must have: networks with at least one local endpoint (or that are
/// the ingress network), all endpoints of those networks, this node's underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDesired {
    /// This node's underlay address: endpoints whose `node_addr` is this one are local too.
    pub local_addr: Ipv4Addr,
    /// Networks to realise here.
    pub networks: Vec<OverlaySpec>,
    /// Every endpoint of those networks, local or remote (endpoints of other networks are
    /// ignored).
    pub endpoints: Vec<OverlayEndpoint>,
}

impl Default for OverlayDesired {
    fn default() -> Self {
        OverlayDesired {
            local_addr: Ipv4Addr::UNSPECIFIED,
            networks: Vec::new(),
            endpoints: Vec::new(),
        }
    }
}

/// MAC of an overlay endpoint from its IP, as libnetwork does (`GenerateMACFromIP`:
/// `02:42:<ip bytes>`, a locally administered unicast address).
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Device names of one berthd instance: every name starts with the instance prefix
/// (1-4 characters of `[a-z0-9]`) and fits Linux's 15-character limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayNames {
    prefix: String,
}

impl OverlayNames {
    /// Checks the prefix.
    pub fn new(prefix: &str) -> Result<Self> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 4
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(NetError::InvalidOverlayConfig {
                reason: format!("device prefix {prefix:?} must be 1-4 characters of [a-z0-9]"),
            });
        }
        Ok(OverlayNames {
            prefix: prefix.to_string(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The `ifalias` on every link of this instance.
    pub fn alias(&self) -> String {
        format!("berth-ovl:{}", self.prefix)
    }

    /// Bridge of the network with this VNI.
    pub fn bridge(&self, vni: u32) -> String {
        format!("{}b{vni:06x}", self.prefix)
    }

    /// VXLAN device of the network with this VNI.
    pub fn vxlan(&self, vni: u32) -> String {
        format!("{}x{vni:06x}", self.prefix)
    }

    /// Whether `name` is a VXLAN device name of this instance.
    pub fn is_vxlan(&self, name: &str) -> bool {
        name.strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('x'))
            .is_some_and(|hex| hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Host end of the veth of a container namespace on a network (stable: detach computes
    /// it again from the same inputs).
    pub fn veth(&self, network_id: &str, netns: &std::path::Path) -> String {
        let mut h: u32 = 0x811c_9dc5; // FNV-1a, 32 bit
        for b in network_id
            .as_bytes()
            .iter()
            .chain(&[0u8])
            .chain(netns.as_os_str().as_encoded_bytes())
        {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        format!("{}v{h:08x}", self.prefix)
    }

    /// The instance's WireGuard device (one per node, carrying every encrypted network):
    /// `<prefix>wg`. It carries no instance alias: the VXLAN plan never sees it.
    pub fn wireguard(&self) -> String {
        format!("{}wg", self.prefix)
    }

    /// nftables table (family `ip`) of this instance in the host namespace.
    pub fn host_table(&self) -> String {
        format!("berth_ovl_{}", self.prefix)
    }
}

/// A link of this instance as read from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedOverlayLink {
    /// Name.
    pub name: String,
    /// `bridge`, `vxlan`, `veth`, ...
    pub kind: Option<String>,
    /// The bridge it is enslaved to, by name.
    pub master: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// MAC.
    pub mac: Option<[u8; 6]>,
    /// For VXLAN: VNI.
    pub vni: Option<u32>,
    /// For VXLAN: UDP destination port.
    pub port: Option<u16>,
    /// For VXLAN: whether learning is on.
    pub learning: Option<bool>,
    /// For VXLAN: whether ARP proxying is on.
    pub proxy: Option<bool>,
    /// IPv4 addresses (with prefix length).
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// A static FDB entry on a VXLAN device: frames to `mac` go to `dst` (UDP port of the
/// device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    /// Destination MAC.
    pub mac: [u8; 6],
    /// Remote node's address.
    pub dst: Ipv4Addr,
}

/// A neighbour entry on a VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: [u8; 6],
}

/// What this instance has in the kernel (only its own links and their entries), and the
/// instance's naming scheme and VXLAN port (so a plan needs nothing else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayObserved {
    /// The instance's device names.
    pub names: OverlayNames,
    /// The instance's VXLAN UDP port.
    pub vxlan_port: u16,
    /// Links carrying this instance's alias.
    pub links: Vec<ObservedOverlayLink>,
    /// Static FDB entries (with a remote destination), by VXLAN device name.
    pub fdb: BTreeMap<String, BTreeSet<FdbEntry>>,
    /// Permanent neighbour entries, by VXLAN device name.
    pub neighbours: BTreeMap<String, BTreeSet<NeighEntry>>,
}

/// One step of an overlay plan (host namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayOp {
    /// Delete a link (absent counts as done).
    DeleteLink {
        /// Name.
        name: String,
    },
    /// Create a bridge with the instance alias.
    CreateBridge {
        /// Name.
        name: String,
        /// MTU.
        mtu: u32,
    },
    /// Create a VXLAN device (`nolearning`, `proxy`, no default remote) with the alias.
    CreateVxlan {
        /// Name.
        name: String,
        /// VNI.
        vni: u32,
        /// UDP destination port.
        port: u16,
        /// MTU.
        mtu: u32,
    },
    /// Set a link's MTU.
    SetMtu {
        /// Link.
        link: String,
        /// MTU.
        mtu: u32,
    },
    /// Set a link's MAC.
    SetMac {
        /// Link.
        link: String,
        /// MAC.
        mac: [u8; 6],
    },
    /// Enslave a link to a bridge.
    SetMaster {
        /// Port.
        link: String,
        /// Bridge.
        bridge: String,
    },
    /// Set a link up.
    SetUp {
        /// Link.
        link: String,
    },
    /// Add an IPv4 address to a link.
    AddAddress {
        /// Link.
        link: String,
        /// Address.
        ip: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// Remove an IPv4 address from a link.
    DelAddress {
        /// Link.
        link: String,
        /// Address.
        ip: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// `bridge fdb replace <mac> dev <vxlan> dst <dst> self permanent`.
    AddFdb {
        /// VXLAN device.
        vxlan: String,
        /// Entry.
        entry: FdbEntry,
    },
    /// `bridge fdb del <mac> dev <vxlan> dst <dst> self`.
    DelFdb {
        /// VXLAN device.
        vxlan: String,
        /// Entry.
        entry: FdbEntry,
    },
    /// `ip neigh replace <ip> lladdr <mac> dev <vxlan> nud permanent`.
    AddNeigh {
        /// VXLAN device.
        vxlan: String,
        /// Entry.
        entry: NeighEntry,
    },
    /// `ip neigh del <ip> dev <vxlan>`.
    DelNeigh {
        /// VXLAN device.
        vxlan: String,
        /// Entry.
        entry: NeighEntry,
    },
}

/// Checks the desired model: VNIs in range and unique, subnets parse, endpoints' addresses
/// inside their network's subnet.
pub fn validate_desired(desired: &OverlayDesired) -> Result<()> {
    let bad = |reason: String| Err(NetError::InvalidOverlayConfig { reason });
    let mut vnis = BTreeSet::new();
    let mut subnets = BTreeMap::new();
    for n in &desired.networks {
        if n.vni == 0 || n.vni > 0x00ff_ffff {
            return bad(format!(
                "network {}: VNI {} is not in 1..=16777215",
                n.id, n.vni
            ));
        }
        if !vnis.insert(n.vni) {
            return bad(format!("VNI {} is used by two networks", n.vni));
        }
        let net = n.net()?;
        if let Some(a) = n.host_address.or(n.gateway) {
            if !net.contains(a) {
                return bad(format!("network {}: {a} is outside {net}", n.id));
            }
        }
        subnets.insert(n.id.as_str(), net);
    }
    for e in &desired.endpoints {
        if let Some(net) = subnets.get(e.network_id.as_str()) {
            if !net.contains(e.ip) {
                return bad(format!("endpoint {}: {} is outside {net}", e.id, e.ip));
            }
        }
    }
    Ok(())
}

impl Default for OverlayObserved {
    /// Nothing in the kernel, for the default instance (prefix `bo`, port 4789).
    fn default() -> Self {
        OverlayObserved {
            names: OverlayNames {
                prefix: "bo".into(),
            },
            vxlan_port: VXLAN_PORT,
            links: Vec::new(),
            fdb: BTreeMap::new(),
            neighbours: BTreeMap::new(),
        }
    }
}

/// The operations that take `observed` to `desired` (pure). Order: stale links go first,
/// then stale FDB/neighbour entries, then creation, configuration and new entries.
///
/// An invalid `desired` (see [`validate_desired`]) yields the plan for its valid part:
/// networks whose subnet does not parse get no address. The driver validates first.
pub fn plan_overlay(desired: &OverlayDesired, observed: &OverlayObserved) -> Vec<OverlayOp> {
    let names = &observed.names;
    let port = observed.vxlan_port;
    let mut deletes = Vec::new();
    let mut entry_dels = Vec::new();
    let mut setup = Vec::new();
    let link = |name: &str| observed.links.iter().find(|l| l.name == name);

    let mut wanted_bridges = BTreeSet::new();
    let mut wanted_vxlans = BTreeSet::new();
    for n in &desired.networks {
        wanted_bridges.insert(names.bridge(n.vni));
        wanted_vxlans.insert(names.vxlan(n.vni));
    }
    for l in &observed.links {
        let stale = if wanted_bridges.contains(&l.name) {
            l.kind.as_deref() != Some("bridge")
        } else if wanted_vxlans.contains(&l.name) {
            false // checked below, with its parameters
        } else if l.kind.as_deref() == Some("veth") {
            // A container's veth stays while its bridge is wanted.
            !l.master
                .as_ref()
                .is_some_and(|m| wanted_bridges.contains(m))
        } else {
            true
        };
        if stale {
            deletes.push(OverlayOp::DeleteLink {
                name: l.name.clone(),
            });
        }
    }

    for n in &desired.networks {
        let mtu = n.effective_mtu();
        let (br, vx) = (names.bridge(n.vni), names.vxlan(n.vni));
        // Bridge.
        let obs_br = link(&br).filter(|l| l.kind.as_deref() == Some("bridge"));
        if obs_br.is_none() {
            setup.push(OverlayOp::CreateBridge {
                name: br.clone(),
                mtu,
            });
        } else if obs_br.and_then(|l| l.mtu) != Some(mtu) {
            setup.push(OverlayOp::SetMtu {
                link: br.clone(),
                mtu,
            });
        }
        if let Some(mac) = n.host_address.map(mac_for_ip) {
            if obs_br.and_then(|l| l.mac) != Some(mac) {
                setup.push(OverlayOp::SetMac {
                    link: br.clone(),
                    mac,
                });
            }
        }
        let want_addr: BTreeSet<(Ipv4Addr, u8)> = match (n.bridge_address(), n.net()) {
            (Some(a), Ok(net)) => [(a, net.prefix())].into(),
            _ => BTreeSet::new(),
        };
        let have_addr: BTreeSet<(Ipv4Addr, u8)> = obs_br
            .map(|l| l.addresses.iter().copied().collect())
            .unwrap_or_default();
        for (ip, prefix) in have_addr.difference(&want_addr) {
            setup.push(OverlayOp::DelAddress {
                link: br.clone(),
                ip: *ip,
                prefix: *prefix,
            });
        }
        for (ip, prefix) in want_addr.difference(&have_addr) {
            setup.push(OverlayOp::AddAddress {
                link: br.clone(),
                ip: *ip,
                prefix: *prefix,
            });
        }
        if !obs_br.is_some_and(|l| l.up) {
            setup.push(OverlayOp::SetUp { link: br.clone() });
        }

        // VXLAN device.
        let obs_vx = link(&vx).filter(|l| {
            l.kind.as_deref() == Some("vxlan")
                && l.vni == Some(n.vni)
                && l.port == Some(port)
                && l.learning == Some(false)
                && l.proxy == Some(true)
        });
        if obs_vx.is_none() {
            if link(&vx).is_some() {
                deletes.push(OverlayOp::DeleteLink { name: vx.clone() });
            }
            setup.push(OverlayOp::CreateVxlan {
                name: vx.clone(),
                vni: n.vni,
                port,
                mtu,
            });
        } else if obs_vx.and_then(|l| l.mtu) != Some(mtu) {
            setup.push(OverlayOp::SetMtu {
                link: vx.clone(),
                mtu,
            });
        }
        if obs_vx.and_then(|l| l.master.as_deref()) != Some(br.as_str()) {
            setup.push(OverlayOp::SetMaster {
                link: vx.clone(),
                bridge: br.clone(),
            });
        }
        if !obs_vx.is_some_and(|l| l.up) {
            setup.push(OverlayOp::SetUp { link: vx.clone() });
        }

        // Entries for remote endpoints.
        let remote = desired
            .endpoints
            .iter()
            .filter(|e| e.network_id == n.id && !e.local && e.node_addr != desired.local_addr);
        let want_fdb: BTreeSet<FdbEntry> = remote
            .clone()
            .map(|e| FdbEntry {
                mac: e.mac,
                dst: e.node_addr,
            })
            .collect();
        let want_neigh: BTreeSet<NeighEntry> = remote
            .map(|e| NeighEntry {
                ip: e.ip,
                mac: e.mac,
            })
            .collect();
        // A re-created device starts empty.
        let (have_fdb, have_neigh) = if obs_vx.is_some() {
            (
                observed.fdb.get(&vx).cloned().unwrap_or_default(),
                observed.neighbours.get(&vx).cloned().unwrap_or_default(),
            )
        } else {
            Default::default()
        };
        for entry in have_fdb.difference(&want_fdb) {
            entry_dels.push(OverlayOp::DelFdb {
                vxlan: vx.clone(),
                entry: *entry,
            });
        }
        for entry in have_neigh.difference(&want_neigh) {
            entry_dels.push(OverlayOp::DelNeigh {
                vxlan: vx.clone(),
                entry: *entry,
            });
        }
        for entry in want_fdb.difference(&have_fdb) {
            setup.push(OverlayOp::AddFdb {
                vxlan: vx.clone(),
                entry: *entry,
            });
        }
        for entry in want_neigh.difference(&have_neigh) {
            setup.push(OverlayOp::AddNeigh {
                vxlan: vx.clone(),
                entry: *entry,
            });
        }
    }
    deletes.extend(entry_dels);
    deletes.extend(setup);
    deletes
}

/// The routing mesh on one node: traffic to `published` on any local address is DNATed to
/// one of `backends` (task addresses on the ingress network, on any node) port
/// `target_port`, without SNAT: the task sees the client's own address; its replies come
/// back through this node because of [`ingress`]'s return path in the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    /// Published port on every node.
    pub published: u16,
    /// tcp or udp.
    pub protocol: Protocol,
    /// Port inside the task.
    pub target_port: u16,
    /// Task addresses on the ingress network. Empty: no rule (the port is not answered).
    pub backends: Vec<Ipv4Addr>,
}

/// `--publish mode=host`: a plain DNAT on the node that runs the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortRule {
    /// Port on the node's addresses.
    pub published: u16,
    /// tcp or udp.
    pub protocol: Protocol,
    /// The task's address (on a network whose bridge is on this node).
    pub target: Ipv4Addr,
    /// Port inside the task.
    pub target_port: u16,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// `numgen random mod N map { 0 : a, 1 : b }`: one backend per new connection, evenly at
/// random; conntrack keeps every later packet of the flow on the same backend.
pub(crate) fn numgen_map(backends: &[Ipv4Addr]) -> String {
    let elems: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect();
    format!(
        "numgen random mod {} map {{ {} }}",
        backends.len(),
        elems.join(", ")
    )
}

/// The host's overlay table as one `nft -f -` transaction that replaces the previous one
/// (pure): outbound masquerade of non-internal overlay subnets, isolation between overlay
/// bridges and of internal ones, the routing mesh and `mode=host` DNATs. Traffic that was
/// DNATed (mesh, host ports) is never masqueraded, so tasks see client addresses.
///
/// With encrypted networks ([`OverlaySpec::encrypted`]): chains `tunnel_in` and `tunnel_out`
/// (filter hooks input and output) drop
/// VXLAN packets (UDP `vxlan_port`) whose VNI (RFC 7348 §5: the 24 bits after the first 4
/// bytes of the VXLAN header, i.e. bits 96..120 after the start of the UDP header) is an
/// encrypted network's, unless they come in from or go out through the WireGuard device
/// [`OverlayNames::wireguard`]: a plain VXLAN packet of an encrypted network crafted on
/// the underlay never reaches its bridge, and a stale entry never sends one out.
pub fn render_host_table(
    desired: &OverlayDesired,
    names: &OverlayNames,
    vxlan_port: u16,
    ingress: &[IngressRule],
    host_ports: &[HostPortRule],
) -> String {
    let t = names.host_table();
    let mut s = format!("table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
    let mut nets: Vec<&OverlaySpec> = desired.networks.iter().collect();
    nets.sort_by_key(|n| n.vni);

    s.push_str("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tfib daddr type local jump published\n\t}\n");
    // Local clients too, 127.0.0.1 included (`curl localhost:8080` on a node, as Docker's
    // mesh answers it): the reply path needs the masquerade below and `route_localnet` on
    // the ingress bridge (set by the executor).
    let meshed = nets.iter().any(|n| n.host_address.is_some());
    if meshed {
        s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tfib daddr type local jump published\n\t}\n");
    } else {
        s.push_str("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tip daddr != 127.0.0.0/8 fib daddr type local jump published\n\t}\n");
    }
    s.push_str("\tchain published {\n");
    let mut ingress: Vec<&IngressRule> =
        ingress.iter().filter(|r| !r.backends.is_empty()).collect();
    ingress.sort_by_key(|r| (r.published, proto(r.protocol)));
    for r in ingress {
        let _ = writeln!(
            s,
            "\t\t{} dport {} dnat to {} : {}",
            proto(r.protocol),
            r.published,
            numgen_map(&r.backends),
            r.target_port
        );
    }
    for r in host_ports {
        let _ = writeln!(
            s,
            "\t\t{} dport {} dnat to {}:{}",
            proto(r.protocol),
            r.published,
            r.target,
            r.target_port
        );
    }
    s.push_str("\t}\n");

    s.push_str(
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    // A local client of the mesh on 127.0.0.1: its DNATed packets leave through the ingress
    // bridge with the node's ingress address, so the task's reply comes back here.
    for n in nets.iter().filter(|n| n.host_address.is_some()) {
        let _ = writeln!(
            s,
            "\t\toifname \"{}\" ip saddr 127.0.0.0/8 masquerade",
            names.bridge(n.vni)
        );
    }
    for n in &nets {
        if n.internal || n.bridge_address().is_none() {
            continue;
        }
        if let Ok(net) = n.net() {
            let _ = writeln!(
                s,
                "\t\tip saddr {net} oifname != \"{}\" ct status != dnat masquerade",
                names.bridge(n.vni)
            );
        }
    }
    s.push_str("\t}\n");

    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct status dnat accept\n");
    for n in &nets {
        let br = names.bridge(n.vni);
        if n.internal {
            let _ = writeln!(s, "\t\tiifname \"{br}\" oifname != \"{br}\" drop");
            let _ = writeln!(s, "\t\toifname \"{br}\" iifname != \"{br}\" drop");
        } else {
            // Nothing enters an overlay from elsewhere on the node (another overlay, a
            // local bridge, the gateway bridge, the LAN routing through the node) but
            // answers to its own containers' connections and the DNAT'd traffic above
            // (the routing mesh, published ports): as isolated as Swarm's overlays, which
            // live in namespaces of their own.
            let _ = writeln!(
                s,
                "\t\toifname \"{br}\" iifname != \"{br}\" ct state established,related accept"
            );
            let _ = writeln!(s, "\t\toifname \"{br}\" iifname != \"{br}\" drop");
        }
    }
    if nets.len() > 1 {
        let all: Vec<String> = nets
            .iter()
            .map(|n| format!("\"{}\"", names.bridge(n.vni)))
            .collect();
        for n in &nets {
            let br = names.bridge(n.vni);
            let others: Vec<&String> = all.iter().filter(|o| **o != format!("\"{br}\"")).collect();
            let others: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
            let _ = writeln!(
                s,
                "\t\tiifname \"{br}\" oifname {{ {} }} drop",
                others.join(", ")
            );
        }
    }
    s.push_str("\t}\n");

    let internal: Vec<String> = nets
        .iter()
        .filter(|n| n.internal)
        .map(|n| format!("\"{}\"", names.bridge(n.vni)))
        .collect();
    if !internal.is_empty() {
        let brs = internal.join(", ");
        let _ = write!(
            s,
            "\tchain internal_in {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\t\
             iifname {{ {brs} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n\t\t\
             iifname {{ {brs} }} ct state established,related accept\n\t\t\
             iifname {{ {brs} }} drop\n\t}}\n"
        );
    }

    let encrypted: Vec<String> = nets
        .iter()
        .filter(|n| n.encrypted)
        .map(|n| n.vni.to_string())
        .collect();
    if !encrypted.is_empty() {
        let wg = names.wireguard();
        let vnis = encrypted.join(", ");
        let _ = write!(
            s,
            "\tchain tunnel_in {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\t\
             iifname != \"{wg}\" udp dport {vxlan_port} @th,96,24 {{ {vnis} }} counter drop\n\t}}\n\
             \tchain tunnel_out {{\n\t\ttype filter hook output priority filter; policy accept;\n\t\t\
             oifname != \"{wg}\" udp dport {vxlan_port} @th,96,24 {{ {vnis} }} counter drop\n\t}}\n"
        );
    }
    s.push_str("}\n");
    s
}

/// A transaction that removes the host table if present.
pub fn delete_host_table_script(names: &OverlayNames) -> String {
    let t = names.host_table();
    format!("table ip {t}\ndelete table ip {t}\n")
}

#[cfg(test)]
mod tests;
