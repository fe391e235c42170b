//! Overlay networks of the replicated state: networks, their endpoints and the address
//! allocation, all inside the deterministic `apply` (so the leader's log decides every
//! address and no two endpoints anywhere share one).
//!
//! Rules (Swarm's, as Docker 20.10 applies them, see "docker network create" and
//! "docker swarm init --default-addr-pool" in Docker's docs):
//! - a network without `--subnet` gets the first `/mask_length` of the cluster's default
//!   pools (`10.0.0.0/8` in `/24`s unless set at `swarm init`) that overlaps no other
//!   network; the `ingress` network, made with the cluster, takes the first one;
//! - VNIs: `ingress` 4096, every other network the lowest free from 4097;
//! - the gateway is `--gateway` or the subnet's first host, and is never given out;
//! - an endpoint gets the lowest free host address of `--ip-range` (or of the subnet);
//!   its MAC is libnetwork's `02:42:` followed by the four address bytes.
//!
//! Endpoints: a container attached to an attachable network (`AttachEndpoint`, written by
//! the container's node), a service's virtual IP on each of its networks (allocated with
//! the service in `CreateService`/`UpdateService`, unless `EndpointSpec.Mode` is `dnsrr`),
//! a task's address on each of its service's networks (allocated when the task is given a
//! node, released when the task record is deleted).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use berth_orchestrator::{Nanos, Service, Task, TaskState};
use serde::{Deserialize, Serialize};

use super::node::NodeId;
use super::{ClusterState, Rejection, Response};

/// VNI of the `ingress` network (Swarm's).
pub const INGRESS_VNI: u32 = 4096;
/// First VNI of other networks.
pub const FIRST_VNI: u32 = 4097;
/// Swarm's default address pool.
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
/// Swarm's default subnet size inside the pool.
pub const DEFAULT_MASK_LENGTH: u8 = 24;
/// Name of the routing-mesh network.
pub const INGRESS_NAME: &str = "ingress";

/// An IPv4 prefix (`10.0.1.0/24`): network address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n`; host bits must be zero (Docker refuses `10.0.1.5/24` as a
    /// subnet too).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s}"))?;
        if len > 32 {
            return Err(format!("invalid CIDR address: {s}"));
        }
        let net = Ipv4Net { addr, len };
        if net.network() != u32::from(addr) {
            return Err(format!("invalid CIDR address: {s}: host bits set"));
        }
        Ok(net)
    }

    fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }

    fn network(self) -> u32 {
        u32::from(self.addr) & self.mask()
    }

    fn last(self) -> u32 {
        self.network() | !self.mask()
    }

    /// Whether `ip` is inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(self, other: Ipv4Net) -> bool {
        self.network() <= other.last() && other.network() <= self.last()
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The cluster's default address pools (`swarm init --default-addr-pool`,
/// `--default-addr-pool-mask-length`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPools {
    /// Pools in CIDR notation, in the order subnets are taken from them.
    pub pools: Vec<String>,
    /// Size of each subnet taken from them.
    pub mask_length: u8,
}

impl Default for AddressPools {
    fn default() -> Self {
        AddressPools {
            pools: vec![DEFAULT_POOL.to_string()],
            mask_length: DEFAULT_MASK_LENGTH,
        }
    }
}

impl AddressPools {
    /// Checks the pools as `swarm init` does: each a valid CIDR, the mask length inside
    /// 1..=29 and not shorter than any pool's prefix. The error is Docker's wording.
    pub fn validate(&self) -> Result<(), String> {
        if self.pools.is_empty() {
            return Err("default address pool is empty".into());
        }
        if !(1..=29).contains(&self.mask_length) {
            return Err(format!(
                "invalid subnet size {}: must be between 1 and 29",
                self.mask_length
            ));
        }
        for p in &self.pools {
            let net = Ipv4Net::parse(p)?;
            if net.len > self.mask_length {
                return Err(format!(
                    "Invalid default address pool: subnet size {} is smaller than the pool {p}",
                    self.mask_length
                ));
            }
        }
        Ok(())
    }
}

/// What a client asked for in `POST /networks/create` (driver `overlay`), as the state
/// keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Name (unique in the cluster).
    pub name: String,
    /// `--attachable`: plain containers may join.
    pub attachable: bool,
    /// `--internal`: no route out.
    pub internal: bool,
    /// The routing-mesh network (`--ingress`); only one exists.
    pub ingress: bool,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--opt`s (driver options, `encrypted` among them).
    pub options: BTreeMap<String, String>,
    /// `--subnet`.
    pub subnet: Option<String>,
    /// `--gateway`.
    pub gateway: Option<String>,
    /// `--ip-range`.
    pub ip_range: Option<String>,
}

impl NetworkSpec {
    /// `--opt encrypted` (any value, as Docker: the key's presence).
    pub fn encrypted(&self) -> bool {
        self.options.contains_key("encrypted")
    }
}

/// An overlay network in the cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 25 lowercase base-36 characters, as swarmkit's ids (chosen by the driver).
    pub id: String,
    /// As asked for.
    pub spec: NetworkSpec,
    /// VXLAN network identifier.
    pub vni: u32,
    /// The subnet (given or taken from the pools).
    pub subnet: String,
    /// The gateway address (reserved, never given to an endpoint).
    pub gateway: Ipv4Addr,
    /// When it was created (unix ns, chosen by the driver).
    pub created_at: Nanos,
    /// Log index of its creation (Docker's `Version.Index`).
    pub version: u64,
}

impl Network {
    /// The subnet as a prefix (always valid: checked at creation).
    pub fn subnet_net(&self) -> Ipv4Net {
        Ipv4Net::parse(&self.subnet).expect("subnet checked at creation")
    }

    /// The prefix addresses are taken from: `--ip-range`, else the subnet.
    fn range_net(&self) -> Ipv4Net {
        self.spec
            .ip_range
            .as_deref()
            .and_then(|r| Ipv4Net::parse(r).ok())
            .unwrap_or_else(|| self.subnet_net())
    }
}

/// Who an endpoint belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EndpointOwner {
    /// A plain container (`docker run --network`, `docker network connect`).
    Container {
        /// Container id.
        id: String,
        /// Container name (without `/`), answered by the embedded DNS.
        name: String,
        /// Further DNS names (`--network-alias`).
        aliases: Vec<String>,
    },
    /// A task of a service.
    Task {
        /// Task id.
        id: String,
        /// Its service.
        service_id: String,
    },
    /// A service's virtual IP on the network.
    ServiceVip {
        /// Service id.
        service_id: String,
    },
    /// A node's own address on the `ingress` network (the routing mesh's sandbox).
    NodeSandbox,
}

/// One address on an overlay network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEndpoint {
    /// Unique id (chosen by the driver for containers; derived for tasks and VIPs).
    pub id: String,
    /// The network.
    pub network_id: String,
    /// The node that hosts it (`None` for a virtual IP, present on every node).
    pub node_id: Option<NodeId>,
    /// Who it belongs to.
    pub owner: EndpointOwner,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC (libnetwork's `02:42:` + the address).
    pub mac: [u8; 6],
}

/// libnetwork's MAC for an overlay address: `02:42:` followed by the four address bytes.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Networks a service's tasks join: `TaskTemplate.Networks[].Target` (or the deprecated
/// top-level `Networks`), each a network id or name, in order; plus `ingress` first when
/// a port is published in ingress mode (the default).
pub fn service_network_targets(spec: &serde_json::Value) -> Vec<String> {
    let list = spec
        .pointer("/TaskTemplate/Networks")
        .or_else(|| spec.get("Networks"))
        .and_then(|v| v.as_array());
    list.into_iter()
        .flatten()
        .filter_map(|n| n.get("Target").and_then(|t| t.as_str()))
        .map(str::to_string)
        .collect()
}

/// Whether the service publishes a port through the routing mesh (`PublishMode` absent
/// or `ingress`).
pub fn publishes_ingress(spec: &serde_json::Value) -> bool {
    spec.pointer("/EndpointSpec/Ports")
        .and_then(|p| p.as_array())
        .is_some_and(|ports| {
            ports.iter().any(|p| {
                p.get("PublishMode")
                    .and_then(|m| m.as_str())
                    .is_none_or(|m| m.is_empty() || m == "ingress")
            })
        })
}

/// Whether the service resolves by DNS round-robin (`EndpointSpec.Mode` = `dnsrr`): no VIP.
pub fn is_dnsrr(spec: &serde_json::Value) -> bool {
    spec.pointer("/EndpointSpec/Mode").and_then(|m| m.as_str()) == Some("dnsrr")
}

impl ClusterState {
    /// The network with this id, or else this name, or else the unique id prefix.
    pub fn network_by_ref(&self, r: &str) -> Option<&Network> {
        if let Some(n) = self.networks.get(r) {
            return Some(n);
        }
        if let Some(n) = self.networks.values().find(|n| n.spec.name == r) {
            return Some(n);
        }
        let mut prefixed = self.networks.values().filter(|n| n.id.starts_with(r));
        match (prefixed.next(), prefixed.next()) {
            (Some(n), None) if !r.is_empty() => Some(n),
            _ => None,
        }
    }

    /// The `ingress` network, if the cluster has one.
    pub fn ingress_network(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.ingress)
    }

    /// The endpoints on network `id`, by endpoint id.
    pub fn endpoints_of_network<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Iterator<Item = &'a NetworkEndpoint> {
        self.endpoints.values().filter(move |e| e.network_id == id)
    }

    /// The swarm's predefined network (`host` or `bridge`) that `r` names: its name, or
    /// its id ([`predefined_network_id`]), when no swarm network of that name or id exists
    /// (those come first, as in [`ClusterState::network_by_ref`]). `None` before the cluster
    /// is initialised.
    pub fn predefined_network(&self, r: &str) -> Option<(PredefinedNetwork, String)> {
        if self.network_by_ref(r).is_some() {
            return None;
        }
        self.predefined_by_ref(r)
    }

    /// [`ClusterState::predefined_network`] without the look at the swarm's own networks
    /// (for a caller that made it).
    fn predefined_by_ref(&self, r: &str) -> Option<(PredefinedNetwork, String)> {
        let cluster_id = self.cluster_id.as_deref()?;
        [PredefinedNetwork::Host, PredefinedNetwork::Bridge]
            .into_iter()
            .map(|p| (p, predefined_network_id(cluster_id, p)))
            .find(|(p, id)| r == p.name() || r == id)
    }

    /// The predefined networks a service's spec names (`--network host` / `bridge`), in
    /// the spec's order, with their ids.
    pub fn service_predefined_networks(
        &self,
        spec: &serde_json::Value,
    ) -> Vec<(PredefinedNetwork, String)> {
        service_network_targets(spec)
            .iter()
            .filter_map(|t| self.predefined_network(t))
            .collect()
    }

    /// Whether the service's tasks run in their node's network namespace (`--network
    /// host`).
    pub fn service_uses_host_network(&self, spec: &serde_json::Value) -> bool {
        self.service_predefined_networks(spec)
            .iter()
            .any(|(p, _)| *p == PredefinedNetwork::Host)
    }

    /// The overlay networks of a service (resolved targets, `ingress` first when it
    /// publishes through the mesh); the predefined `host` and `bridge` networks are not
    /// among them (they are the node's own, nothing is allocated on them). Errors with the
    /// first target that names no network, and for `host` next to any other network or
    /// with a port published through the mesh: a task in its node's namespace can join no
    /// other network (dockerd's executor rejects such a task with "container sharing
    /// network namespace with another container or host cannot be connected to any other
    /// network"; berth refuses the spec instead of failing every task).
    pub fn service_networks(&self, spec: &serde_json::Value) -> Result<Vec<String>, Rejection> {
        // Each target looked up once: a swarm network, else a predefined one.
        let targets: Vec<(String, Option<&Network>, Option<PredefinedNetwork>)> =
            service_network_targets(spec)
                .into_iter()
                .map(|t| match self.network_by_ref(&t) {
                    Some(n) => (t, Some(n), None),
                    None => {
                        let p = self.predefined_by_ref(&t).map(|(p, _)| p);
                        (t, None, p)
                    }
                })
                .collect();
        if targets
            .iter()
            .any(|(_, _, p)| *p == Some(PredefinedNetwork::Host))
        {
            if targets.len() > 1 {
                return Err(Rejection::NetworkInvalid {
                    detail: "a service on the host network cannot be connected to any other network: a container sharing the network namespace of its host cannot be connected to any other network".into(),
                });
            }
            if publishes_ingress(spec) {
                return Err(Rejection::NetworkInvalid {
                    detail: "a service on the host network cannot publish ports through the routing mesh (ingress mode): publish them with mode=host".into(),
                });
            }
            // Its tasks listen on the node's ports themselves: nothing maps one port to
            // another (dockerd discards such a mapping; berth says so instead).
            if let Some(p) = super::spec_ports(spec)
                .into_iter()
                .find(|p| p.published != p.target)
            {
                return Err(Rejection::NetworkInvalid {
                    detail: format!(
                        "a service on the host network listens on its target ports itself: published port {} must equal target port {}",
                        p.published, p.target
                    ),
                });
            }
        }
        let mut out = Vec::new();
        if publishes_ingress(spec) {
            if let Some(ingress) = self.ingress_network() {
                out.push(ingress.id.clone());
            }
        }
        for (target, net, predefined) in targets {
            if predefined.is_some() {
                continue;
            }
            let net = net.ok_or(Rejection::NetworkNotFound { id: target })?;
            if net.spec.ingress {
                return Err(Rejection::NetworkInvalid {
                    detail:
                        "service cannot be explicitly attached to the ingress network \"ingress\""
                            .into(),
                });
            }
            if !out.contains(&net.id) {
                out.push(net.id.clone());
            }
        }
        Ok(out)
    }

    pub(super) fn create_network(
        &mut self,
        index: u64,
        id: &str,
        spec: &NetworkSpec,
        at: Nanos,
    ) -> Result<Response, Rejection> {
        let network = self.allocate_network(index, id, spec, at)?;
        self.networks.insert(id.to_string(), network.clone());
        Ok(Response::Network { network })
    }

    fn allocate_network(
        &self,
        index: u64,
        id: &str,
        spec: &NetworkSpec,
        at: Nanos,
    ) -> Result<Network, Rejection> {
        if self.networks.contains_key(id) {
            return Err(Rejection::NetworkExists { id: id.to_string() });
        }
        if spec.name.is_empty() {
            return Err(Rejection::NetworkInvalid {
                detail: "network name is missing".into(),
            });
        }
        if self.networks.values().any(|n| n.spec.name == spec.name) {
            return Err(Rejection::NetworkNameConflict {
                name: spec.name.clone(),
            });
        }
        if spec.ingress && self.ingress_network().is_some() {
            return Err(Rejection::NetworkInvalid {
                detail: "ingress network already present".into(),
            });
        }
        let invalid = |detail: String| Rejection::NetworkInvalid { detail };
        let taken: Vec<Ipv4Net> = self.networks.values().map(|n| n.subnet_net()).collect();
        let subnet = match &spec.subnet {
            Some(s) => {
                let net = Ipv4Net::parse(s).map_err(invalid)?;
                if net.len > 30 {
                    return Err(invalid(format!("subnet {s} is too small")));
                }
                if taken.iter().any(|t| t.overlaps(net)) {
                    return Err(invalid(
                        "invalid pool request: Pool overlaps with other one on this address space"
                            .into(),
                    ));
                }
                net
            }
            None => {
                if spec.gateway.is_some() || spec.ip_range.is_some() {
                    return Err(invalid(
                        "ipam: a gateway or ip-range needs a subnet (--subnet)".into(),
                    ));
                }
                self.next_pool_subnet(&taken)
                    .ok_or(Rejection::PoolExhausted)?
            }
        };
        let gateway = match &spec.gateway {
            Some(g) => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| invalid(format!("invalid gateway address {g}")))?;
                if !subnet.contains(ip) {
                    return Err(invalid(format!(
                        "gateway {g} is not inside the subnet {subnet}"
                    )));
                }
                ip
            }
            None => Ipv4Addr::from(subnet.network() + 1),
        };
        if let Some(r) = &spec.ip_range {
            let range = Ipv4Net::parse(r).map_err(invalid)?;
            if !(subnet.contains(range.addr) && range.len >= subnet.len) {
                return Err(invalid(format!(
                    "ip-range {r} is not inside the subnet {subnet}"
                )));
            }
        }
        let vni = if spec.ingress {
            INGRESS_VNI
        } else {
            let used: BTreeSet<u32> = self.networks.values().map(|n| n.vni).collect();
            (FIRST_VNI..=0x00ff_ffff)
                .find(|v| !used.contains(v))
                .ok_or(Rejection::PoolExhausted)?
        };
        Ok(Network {
            id: id.to_string(),
            spec: spec.clone(),
            vni,
            subnet: subnet.to_string(),
            gateway,
            created_at: at,
            version: index,
        })
    }

    fn next_pool_subnet(&self, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
        let len = self.address_pools.mask_length;
        for pool in &self.address_pools.pools {
            let Ok(pool) = Ipv4Net::parse(pool) else {
                continue;
            };
            if pool.len > len {
                continue;
            }
            let step = 1u64 << (32 - len);
            let mut at = u64::from(pool.network());
            while at <= u64::from(pool.last()) {
                let cand = Ipv4Net {
                    addr: Ipv4Addr::from(at as u32),
                    len,
                };
                if !taken.iter().any(|t| t.overlaps(cand)) {
                    return Some(cand);
                }
                at += step;
            }
        }
        None
    }

    pub(super) fn remove_network(
        &mut self,
        id: &str,
        release_stopping: bool,
    ) -> Result<Response, Rejection> {
        let net = self
            .networks
            .get(id)
            .ok_or_else(|| Rejection::NetworkNotFound { id: id.to_string() })?;
        let name = net.spec.name.clone();
        if let Some(service) = self.services.values().find(|s| {
            self.service_networks(&s.spec)
                .is_ok_and(|nets| nets.iter().any(|n| n == id))
        }) {
            return Err(Rejection::NetworkInUse {
                id: id.to_string(),
                name,
                by: format!(
                    "service {}",
                    super::service_name(&service.spec).unwrap_or("")
                ),
            });
        }
        let holds = |e: &&NetworkEndpoint| match &e.owner {
            EndpointOwner::Task { id, .. } if release_stopping => {
                self.tasks.get(id).is_some_and(|t| {
                    t.desired_state <= TaskState::Running && t.status.state <= TaskState::Running
                })
            }
            _ => true,
        };
        if let Some(e) = self.endpoints_of_network(id).find(holds) {
            let by = match &e.owner {
                EndpointOwner::Container { name, .. } => format!("container {name}"),
                EndpointOwner::Task { id, .. } => format!("task {id}"),
                EndpointOwner::ServiceVip { service_id } => format!("service {service_id}"),
                EndpointOwner::NodeSandbox => "the routing mesh".to_string(),
            };
            return Err(Rejection::NetworkInUse {
                id: id.to_string(),
                name,
                by,
            });
        }
        self.endpoints.retain(|_, e| e.network_id != id);
        self.networks.remove(id);
        Ok(Response::NetworkRemoved { id: id.to_string() })
    }

    /// Lowest free host address of the network's range (not the network or broadcast
    /// address, not the gateway, not held by an endpoint), or `requested` if free.
    fn allocate_ip(
        &self,
        network: &Network,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, Rejection> {
        let subnet = network.subnet_net();
        let used: BTreeSet<Ipv4Addr> = self
            .endpoints_of_network(&network.id)
            .map(|e| e.ip)
            .chain([network.gateway])
            .collect();
        let reserved = |ip: u32| ip == subnet.network() || ip == subnet.last();
        if let Some(ip) = requested {
            if !subnet.contains(ip) || reserved(u32::from(ip)) {
                return Err(Rejection::NetworkInvalid {
                    detail: format!(
                        "invalid address {ip}: it is not in the subnet {subnet} of network {}",
                        network.spec.name
                    ),
                });
            }
            if used.contains(&ip) {
                return Err(Rejection::AddressInUse {
                    ip: ip.to_string(),
                    network: network.spec.name.clone(),
                });
            }
            return Ok(ip);
        }
        let range = network.range_net();
        (range.network()..=range.last())
            .filter(|ip| !reserved(*ip))
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| Rejection::AddressesExhausted {
                network: network.spec.name.clone(),
            })
    }

    fn insert_endpoint(
        &mut self,
        id: String,
        network_id: &str,
        node_id: Option<NodeId>,
        owner: EndpointOwner,
        requested: Option<Ipv4Addr>,
    ) -> Result<NetworkEndpoint, Rejection> {
        let network = self
            .networks
            .get(network_id)
            .ok_or_else(|| Rejection::NetworkNotFound {
                id: network_id.to_string(),
            })?;
        let ip = self.allocate_ip(network, requested)?;
        let endpoint = NetworkEndpoint {
            id: id.clone(),
            network_id: network_id.to_string(),
            node_id,
            owner,
            ip,
            mac: mac_for_ip(ip),
        };
        self.endpoints.insert(id, endpoint.clone());
        Ok(endpoint)
    }

    pub(super) fn attach_endpoint(
        &mut self,
        id: &str,
        network: &str,
        node_id: NodeId,
        owner: &EndpointOwner,
        requested_ip: Option<Ipv4Addr>,
    ) -> Result<Response, Rejection> {
        if self.endpoints.contains_key(id) {
            return Err(Rejection::EndpointExists { id: id.to_string() });
        }
        if !self.nodes.contains_key(&node_id) {
            return Err(Rejection::NodeNotFound { id: node_id });
        }
        let net = self
            .network_by_ref(network)
            .ok_or_else(|| Rejection::NetworkNotFound {
                id: network.to_string(),
            })?;
        match owner {
            EndpointOwner::Container { .. } if !net.spec.attachable => {
                return Err(Rejection::NotAttachable {
                    name: net.spec.name.clone(),
                })
            }
            EndpointOwner::NodeSandbox if !net.spec.ingress => {
                return Err(Rejection::NetworkInvalid {
                    detail: "a node sandbox joins only the ingress network".into(),
                })
            }
            EndpointOwner::Task { .. } | EndpointOwner::ServiceVip { .. } => {
                return Err(Rejection::NetworkInvalid {
                    detail: "service and task endpoints are allocated with them".into(),
                })
            }
            _ => {}
        }
        if let EndpointOwner::NodeSandbox = owner {
            if let Some(existing) = self.endpoints.values().find(|e| {
                e.network_id == net.id
                    && e.node_id == Some(node_id)
                    && e.owner == EndpointOwner::NodeSandbox
            }) {
                // One sandbox address per node: restating it is not an error.
                return Ok(Response::Endpoint {
                    endpoint: existing.clone(),
                });
            }
        }
        let net_id = net.id.clone();
        let endpoint = self.insert_endpoint(
            id.to_string(),
            &net_id,
            Some(node_id),
            owner.clone(),
            requested_ip,
        )?;
        Ok(Response::Endpoint { endpoint })
    }

    pub(super) fn detach_endpoint(
        &mut self,
        id: &str,
        node_id: NodeId,
    ) -> Result<Response, Rejection> {
        let e = self
            .endpoints
            .get(id)
            .ok_or_else(|| Rejection::EndpointNotFound { id: id.to_string() })?;
        if e.node_id != Some(node_id)
            || matches!(
                e.owner,
                EndpointOwner::Task { .. } | EndpointOwner::ServiceVip { .. }
            )
        {
            return Err(Rejection::EndpointNotFound { id: id.to_string() });
        }
        self.endpoints.remove(id);
        Ok(Response::EndpointRemoved { id: id.to_string() })
    }

    /// Makes the service's VIP endpoints match its networks (one per network, none for
    /// `dnsrr`). Called after the service record changed; the networks were checked.
    pub(super) fn sync_service_vips(&mut self, service: &Service) -> Result<(), Rejection> {
        let nets = if is_dnsrr(&service.spec) {
            Vec::new()
        } else {
            self.service_networks(&service.spec)?
        };
        let stale: Vec<String> = self
            .endpoints
            .values()
            .filter(|e| {
                matches!(&e.owner, EndpointOwner::ServiceVip { service_id } if *service_id == service.id)
                    && !nets.contains(&e.network_id)
            })
            .map(|e| e.id.clone())
            .collect();
        for id in stale {
            self.endpoints.remove(&id);
        }
        for net in nets {
            let id = format!("vip-{}-{}", service.id, net);
            if !self.endpoints.contains_key(&id) {
                self.insert_endpoint(
                    id,
                    &net,
                    None,
                    EndpointOwner::ServiceVip {
                        service_id: service.id.clone(),
                    },
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Drops every VIP of a removed service.
    pub(super) fn drop_service_vips(&mut self, service_id: &str) {
        self.endpoints.retain(|_, e| {
            !matches!(&e.owner, EndpointOwner::ServiceVip { service_id: s } if s == service_id)
        });
    }

    /// Gives an assigned task an address on each of its service's networks. A network
    /// that vanished or ran out of addresses leaves the task without that endpoint (its
    /// container then fails to start with that reason; the assignment itself stands).
    pub(super) fn allocate_task_endpoints(&mut self, task: &Task) {
        let Some(node_id) = task.node_id else { return };
        let Some(service) = self.services.get(&task.service_id) else {
            return;
        };
        let Ok(nets) = self.service_networks(&service.spec) else {
            return;
        };
        for net in nets {
            let id = task_endpoint_id(&task.id, &net);
            if self.endpoints.contains_key(&id) {
                continue;
            }
            let _ = self.insert_endpoint(
                id,
                &net,
                Some(node_id),
                EndpointOwner::Task {
                    id: task.id.clone(),
                    service_id: task.service_id.clone(),
                },
                None,
            );
        }
    }

    /// Releases a deleted task's addresses.
    pub(super) fn drop_task_endpoints(&mut self, task_id: &str) {
        self.endpoints
            .retain(|_, e| !matches!(&e.owner, EndpointOwner::Task { id, .. } if id == task_id));
    }

    /// Releases every endpoint a removed node hosted (its containers and tasks are gone
    /// with it; the peers drop their FDB and neighbour entries to it).
    pub(super) fn drop_node_endpoints(&mut self, node_id: NodeId) {
        self.endpoints.retain(|_, e| e.node_id != Some(node_id));
    }

    /// The endpoints of a task, by network id.
    pub fn task_endpoints<'a>(
        &'a self,
        task_id: &'a str,
    ) -> impl Iterator<Item = &'a NetworkEndpoint> {
        self.endpoints
            .values()
            .filter(move |e| matches!(&e.owner, EndpointOwner::Task { id, .. } if id == task_id))
    }

    /// The virtual IPs of a service.
    pub fn service_vips<'a>(
        &'a self,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a NetworkEndpoint> {
        self.endpoints.values().filter(
            move |e| matches!(&e.owner, EndpointOwner::ServiceVip { service_id: s } if s == service_id),
        )
    }

    pub(super) fn set_node_wg_key(
        &mut self,
        index: u64,
        id: NodeId,
        public_key: &str,
        listen_port: Option<u16>,
    ) -> Result<Response, Rejection> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(Rejection::NodeNotFound { id })?;
        if node.wg_public_key.as_deref() != Some(public_key) || node.wg_listen_port != listen_port {
            node.wg_public_key = Some(public_key.to_string());
            node.wg_listen_port = listen_port;
            node.version = index;
        }
        Ok(Response::Node { node: node.clone() })
    }

    /// Creates the `ingress` network at cluster creation (or migration): the first subnet
    /// of the pools, VNI 4096, like Swarm's.
    pub(super) fn create_ingress(&mut self, index: u64, id: &str, at: Nanos) {
        let spec = NetworkSpec {
            name: INGRESS_NAME.to_string(),
            ingress: true,
            ..NetworkSpec::default()
        };
        if let Ok(network) = self.allocate_network(index, id, &spec, at) {
            self.networks.insert(id.to_string(), network);
        }
    }
}

/// The id of task `task_id`'s endpoint on network `network_id` (the leader allocates it
/// with the task's assignment).
pub fn task_endpoint_id(task_id: &str, network_id: &str) -> String {
    format!("task-{task_id}-{network_id}")
}

/// Swarm's predefined networks: the node-local `host` and `bridge` networks, which a
/// service may name (`docker service create --network host`). swarmkit keeps them as
/// networks labelled `com.docker.swarm.predefined` with swarm ids; berth keeps no record
/// and derives their ids from the cluster id ([`predefined_network_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredefinedNetwork {
    /// The node's own network namespace.
    Host,
    /// The node's default bridge (`docker0`'s equivalent).
    Bridge,
}

impl PredefinedNetwork {
    /// `host` or `bridge`: the network's name, and also its driver's.
    pub fn name(self) -> &'static str {
        match self {
            PredefinedNetwork::Host => "host",
            PredefinedNetwork::Bridge => "bridge",
        }
    }
}

/// The swarm id of a predefined network in the cluster `cluster_id`: 25 lowercase base-36
/// characters like every swarm id, the same on every replica.
pub fn predefined_network_id(cluster_id: &str, network: PredefinedNetwork) -> String {
    let mut id = derived_ingress_id(cluster_id);
    id.replace_range(
        0..1,
        match network {
            PredefinedNetwork::Host => "h",
            PredefinedNetwork::Bridge => "b",
        },
    );
    id
}

/// The `ingress` network's id for a cluster that did not choose one (log entries and
/// snapshots written before networks existed): derived from the cluster id, so every
/// replica computes the same.
pub fn derived_ingress_id(cluster_id: &str) -> String {
    let mut id: String = cluster_id
        .chars()
        .rev()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(24)
        .collect();
    id.insert(0, 'i');
    while id.len() < 25 {
        id.push('0');
    }
    id
}

#[cfg(test)]
mod tests {
    use berth_orchestrator::{TaskChange, TaskStatus};
    use serde_json::json;

    use super::*;
    use crate::state::{Command, InitNetworking, NodeRole, NodeSpec};

    fn node_spec(id: NodeId) -> NodeSpec {
        NodeSpec {
            id,
            hostname: format!("h{id}"),
            addr: format!("127.0.0.1:{}", 7000 + id),
            role: if id == 1 {
                NodeRole::Manager
            } else {
                NodeRole::Worker
            },
            cert_fingerprint: format!("fp{id}"),
        }
    }

    fn cluster(pools: Option<AddressPools>) -> ClusterState {
        let mut state = ClusterState::default();
        let r = state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: node_spec(1),
                networking: pools.map(|pools| InitNetworking {
                    ingress_id: "ing".into(),
                    pools,
                    at: 5,
                }),
            },
        );
        assert!(matches!(r, Response::ClusterInitialized { .. }), "{r:?}");
        state.apply(2, &Command::AddNode(node_spec(2)));
        state.apply(3, &Command::AddNode(node_spec(3)));
        state
    }

    fn create(state: &mut ClusterState, index: u64, id: &str, spec: NetworkSpec) -> Response {
        state.apply(
            index,
            &Command::CreateNetwork {
                id: id.into(),
                spec,
                at: 9,
            },
        )
    }

    fn named(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            attachable: true,
            ..NetworkSpec::default()
        }
    }

    fn rejected(r: Response) -> Rejection {
        match r {
            Response::Rejected { rejection } => rejection,
            other => panic!("not rejected: {other:?}"),
        }
    }

    fn attach(state: &mut ClusterState, index: u64, id: &str, net: &str, node: NodeId) -> Response {
        state.apply(
            index,
            &Command::AttachEndpoint {
                id: id.into(),
                network: net.into(),
                node_id: node,
                owner: EndpointOwner::Container {
                    id: format!("c-{id}"),
                    name: id.into(),
                    aliases: vec![],
                },
                requested_ip: None,
            },
        )
    }

    fn ip_of(r: Response) -> Ipv4Addr {
        match r {
            Response::Endpoint { endpoint } => endpoint.ip,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_cluster_starts_with_swarms_ingress_and_pool() {
        let state = cluster(None);
        let ingress = state.ingress_network().unwrap();
        assert_eq!(ingress.id, derived_ingress_id("c"));
        assert_eq!(
            (ingress.vni, ingress.subnet.as_str(), ingress.gateway),
            (INGRESS_VNI, "10.0.0.0/24", Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(ingress.spec.name, "ingress");
        assert_eq!(state.address_pools, AddressPools::default());
    }

    #[test]
    fn subnets_and_vnis_come_from_the_pool_in_order_and_never_overlap() {
        let mut state = cluster(None);
        let Response::Network { network: a } = create(&mut state, 4, "a", named("a")) else {
            panic!()
        };
        assert_eq!((a.vni, a.subnet.as_str()), (FIRST_VNI, "10.0.1.0/24"));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 0, 1, 1));
        // A user subnet inside the pool is skipped by later pool allocations.
        let mut b = named("b");
        b.subnet = Some("10.0.2.0/23".into());
        b.gateway = Some("10.0.3.254".into());
        let Response::Network { network: b } = create(&mut state, 5, "b", b) else {
            panic!()
        };
        assert_eq!(
            (b.vni, b.gateway),
            (FIRST_VNI + 1, Ipv4Addr::new(10, 0, 3, 254))
        );
        let Response::Network { network: c } = create(&mut state, 6, "c", named("c")) else {
            panic!()
        };
        assert_eq!(c.subnet, "10.0.4.0/24");
        // Freed VNIs and subnets are reused, lowest first.
        state.apply(
            7,
            &Command::RemoveNetwork {
                id: "a".into(),
                release_stopping: false,
            },
        );
        let Response::Network { network: d } = create(&mut state, 8, "d", named("d")) else {
            panic!()
        };
        assert_eq!((d.vni, d.subnet.as_str()), (FIRST_VNI, "10.0.1.0/24"));
        // Refusals change nothing.
        assert_eq!(
            rejected(create(&mut state, 9, "e", named("d"))),
            Rejection::NetworkNameConflict { name: "d".into() }
        );
        let mut overlap = named("o");
        overlap.subnet = Some("10.0.4.128/25".into());
        assert!(matches!(
            rejected(create(&mut state, 10, "o", overlap)),
            Rejection::NetworkInvalid { .. }
        ));
        let mut gw = named("g");
        gw.subnet = Some("192.168.9.0/24".into());
        gw.gateway = Some("192.168.10.1".into());
        assert!(matches!(
            rejected(create(&mut state, 11, "g", gw)),
            Rejection::NetworkInvalid { .. }
        ));
        assert_eq!(state.networks.len(), 4);
    }

    #[test]
    fn init_pools_are_honoured_and_checked() {
        let pools = AddressPools {
            pools: vec!["172.30.0.0/16".into(), "172.31.0.0/28".into()],
            mask_length: 28,
        };
        let mut state = cluster(Some(pools.clone()));
        assert_eq!(state.address_pools, pools);
        let ingress = state.ingress_network().unwrap();
        assert_eq!(
            (ingress.id.as_str(), ingress.subnet.as_str()),
            ("ing", "172.30.0.0/28")
        );
        let Response::Network { network } = create(&mut state, 4, "a", named("a")) else {
            panic!()
        };
        assert_eq!(network.subnet, "172.30.0.16/28");
        let mut bad = ClusterState::default();
        let r = bad.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: node_spec(1),
                networking: Some(InitNetworking {
                    ingress_id: "i".into(),
                    pools: AddressPools {
                        pools: vec!["10.0.0.0/8".into()],
                        mask_length: 31,
                    },
                    at: 0,
                }),
            },
        );
        assert!(matches!(rejected(r), Rejection::NetworkInvalid { .. }));
        assert!(bad.cluster_id.is_none());
    }

    #[test]
    fn endpoints_get_the_lowest_free_address_and_the_gateway_is_never_given() {
        let mut state = cluster(None);
        let mut spec = named("n");
        spec.subnet = Some("192.168.50.0/29".into());
        create(&mut state, 4, "n", spec);
        assert_eq!(
            ip_of(attach(&mut state, 5, "e1", "n", 2)),
            Ipv4Addr::new(192, 168, 50, 2)
        );
        assert_eq!(
            ip_of(attach(&mut state, 6, "e2", "n", 3)),
            Ipv4Addr::new(192, 168, 50, 3)
        );
        let e2 = &state.endpoints["e2"];
        assert_eq!(e2.mac, [0x02, 0x42, 192, 168, 50, 3]);
        assert_eq!(e2.node_id, Some(3));
        // Detach frees the address; only the endpoint's own node may detach it.
        assert_eq!(
            rejected(state.apply(
                7,
                &Command::DetachEndpoint {
                    id: "e1".into(),
                    node_id: 3
                }
            )),
            Rejection::EndpointNotFound { id: "e1".into() }
        );
        state.apply(
            8,
            &Command::DetachEndpoint {
                id: "e1".into(),
                node_id: 2,
            },
        );
        assert_eq!(
            ip_of(attach(&mut state, 9, "e3", "n", 1)),
            Ipv4Addr::new(192, 168, 50, 2)
        );
        for (i, id) in ["e4", "e5", "e6"].iter().enumerate() {
            attach(&mut state, 10 + i as u64, id, "n", 1);
        }
        // .2..=.6 used, .7 is broadcast: full.
        assert_eq!(
            rejected(attach(&mut state, 20, "e7", "n", 1)),
            Rejection::AddressesExhausted {
                network: "n".into()
            }
        );
        // A requested address that is taken is refused.
        let r = state.apply(
            21,
            &Command::AttachEndpoint {
                id: "e8".into(),
                network: "n".into(),
                node_id: 1,
                owner: EndpointOwner::NodeSandbox,
                requested_ip: None,
            },
        );
        assert!(matches!(rejected(r), Rejection::NetworkInvalid { .. }));
    }

    #[test]
    fn ip_range_bounds_allocation() {
        let mut state = cluster(None);
        let mut spec = named("r");
        spec.subnet = Some("10.50.0.0/16".into());
        spec.ip_range = Some("10.50.7.0/24".into());
        create(&mut state, 4, "r", spec);
        assert_eq!(
            ip_of(attach(&mut state, 5, "e", "r", 1)),
            Ipv4Addr::new(10, 50, 7, 0)
        );
    }

    #[test]
    fn non_attachable_networks_refuse_containers_and_in_use_networks_are_kept() {
        let mut state = cluster(None);
        let mut spec = named("svc");
        spec.attachable = false;
        create(&mut state, 4, "s", spec);
        assert_eq!(
            rejected(attach(&mut state, 5, "e", "svc", 1)),
            Rejection::NotAttachable { name: "svc".into() }
        );
        create(&mut state, 6, "a", named("att"));
        attach(&mut state, 7, "e", "att", 2);
        assert!(matches!(
            rejected(state.apply(
                8,
                &Command::RemoveNetwork {
                    id: "a".into(),
                    release_stopping: false,
                }
            )),
            Rejection::NetworkInUse { .. }
        ));
        // Removing the node releases its endpoints; then the network can go.
        state.apply(9, &Command::RemoveNode { id: 2 });
        assert!(state.endpoints.is_empty());
        assert_eq!(
            state.apply(
                10,
                &Command::RemoveNetwork {
                    id: "a".into(),
                    release_stopping: false,
                }
            ),
            Response::NetworkRemoved { id: "a".into() }
        );
    }

    fn service(id: &str, spec: serde_json::Value) -> Service {
        Service {
            id: id.into(),
            spec,
            previous_spec: None,
            image: "busybox".into(),
            version: 0,
            created_at: 0,
            updated_at: 0,
            job_iteration: 0,
            template_version: 0,
            registry_auth: None,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        }
    }

    #[test]
    fn services_get_a_vip_per_network_and_tasks_an_address_when_assigned() {
        let mut state = cluster(None);
        create(&mut state, 4, "n1", named("front"));
        let spec = json!({
            "Name": "web",
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "front"}]},
            "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 8080}]}
        });
        let r = state.apply(
            5,
            &Command::CreateService {
                service: service("s1", spec),
            },
        );
        assert!(matches!(r, Response::Service { .. }), "{r:?}");
        let vips: Vec<_> = state
            .service_vips("s1")
            .map(|e| (e.network_id.clone(), e.ip))
            .collect();
        assert_eq!(
            vips,
            vec![
                (derived_ingress_id("c"), Ipv4Addr::new(10, 0, 0, 2)),
                ("n1".to_string(), Ipv4Addr::new(10, 0, 1, 2)),
            ]
        );
        // The network cannot go while the service uses it.
        assert!(matches!(
            rejected(state.apply(
                6,
                &Command::RemoveNetwork {
                    id: "n1".into(),
                    release_stopping: true
                }
            )),
            Rejection::NetworkInUse { by, .. } if by == "service web"
        ));
        let task = berth_orchestrator::Task {
            id: "t1".into(),
            service_id: "s1".into(),
            slot: 1,
            node_id: None,
            service_version: 5,
            image: "busybox".into(),
            job_iteration: 0,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::New, 0, "created"),
            created_at: 0,
            version: 0,
            restart_times: Vec::new(),
            template_version: 5,
            running_at: None,
        };
        state.apply(
            7,
            &Command::Orchestrate {
                changes: vec![TaskChange::Create { task }],
                at: 1,
            },
        );
        assert_eq!(state.task_endpoints("t1").count(), 0);
        state.apply(
            8,
            &Command::Orchestrate {
                changes: vec![TaskChange::Assign {
                    task_id: "t1".into(),
                    node_id: 3,
                }],
                at: 2,
            },
        );
        let eps: Vec<_> = state
            .task_endpoints("t1")
            .map(|e| (e.ip, e.node_id))
            .collect();
        assert_eq!(
            eps,
            vec![
                (Ipv4Addr::new(10, 0, 0, 3), Some(3)),
                (Ipv4Addr::new(10, 0, 1, 3), Some(3))
            ]
        );
        // Removing the service drops its VIPs; the task's address goes with its record.
        state.apply(9, &Command::RemoveService { id: "s1".into() });
        assert_eq!(state.service_vips("s1").count(), 0);
        assert_eq!(state.task_endpoints("t1").count(), 2);
        // Until then, its endpoint holds the network by the old rule, not by swarmkit's
        // (the task is to be removed): the network goes with the stopping task's address.
        let remove = |release_stopping| Command::RemoveNetwork {
            id: "n1".into(),
            release_stopping,
        };
        let mut swarmkit = state.clone();
        assert!(matches!(
            rejected(state.apply(10, &remove(false))),
            Rejection::NetworkInUse { by, .. } if by == "task t1"
        ));
        assert_eq!(
            swarmkit.apply(10, &remove(true)),
            Response::NetworkRemoved { id: "n1".into() }
        );
        let left: Vec<_> = swarmkit
            .task_endpoints("t1")
            .map(|e| e.network_id.clone())
            .collect();
        assert_eq!(left, vec![derived_ingress_id("c")]);
        let t = state.tasks.get_mut("t1").unwrap();
        t.status = TaskStatus::new(TaskState::Shutdown, 3, "shutdown");
        state.apply(
            11,
            &Command::Orchestrate {
                changes: vec![TaskChange::Delete {
                    task_id: "t1".into(),
                }],
                at: 3,
            },
        );
        assert_eq!(state.task_endpoints("t1").count(), 0);
        assert_eq!(
            state.apply(12, &remove(false)),
            Response::NetworkRemoved { id: "n1".into() }
        );
    }

    #[test]
    fn dnsrr_services_have_no_vip_and_unknown_networks_are_refused() {
        let mut state = cluster(None);
        create(&mut state, 4, "n1", named("front"));
        let spec = json!({
            "Name": "db",
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "n1"}]},
            "EndpointSpec": {"Mode": "dnsrr"}
        });
        assert!(matches!(
            state.apply(
                5,
                &Command::CreateService {
                    service: service("s1", spec)
                }
            ),
            Response::Service { .. }
        ));
        assert_eq!(state.service_vips("s1").count(), 0);
        let spec = json!({
            "Name": "x",
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "nope"}]}
        });
        assert_eq!(
            rejected(state.apply(
                6,
                &Command::CreateService {
                    service: service("s2", spec)
                }
            )),
            Rejection::NetworkNotFound { id: "nope".into() }
        );
        assert!(!state.services.contains_key("s2"));
    }

    #[test]
    fn services_may_name_the_predefined_host_and_bridge_networks() {
        let mut state = cluster(None);
        create(&mut state, 4, "n1", named("front"));
        let host = predefined_network_id("c", PredefinedNetwork::Host);
        let bridge = predefined_network_id("c", PredefinedNetwork::Bridge);
        assert_eq!((host.len(), bridge.len()), (25, 25));
        assert_ne!(host, bridge);
        assert_eq!(
            state.predefined_network("host"),
            Some((PredefinedNetwork::Host, host.clone()))
        );
        assert_eq!(
            state.predefined_network(&bridge),
            Some((PredefinedNetwork::Bridge, bridge.clone()))
        );
        assert_eq!(state.predefined_network("none"), None);
        assert_eq!(state.predefined_network("front"), None);
        let spec = |nets: serde_json::Value, ports: serde_json::Value| {
            json!({
                "Name": "w",
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": nets},
                "EndpointSpec": {"Ports": ports}
            })
        };
        // Host alone (and with host-mode ports): nothing allocated, no VIP.
        let on_host = spec(
            json!([{"Target": host}]),
            json!([{"TargetPort": 80, "PublishedPort": 80, "PublishMode": "host"}]),
        );
        assert_eq!(state.service_networks(&on_host), Ok(Vec::new()));
        assert!(state.service_uses_host_network(&on_host));
        let r = state.apply(
            5,
            &Command::CreateService {
                service: service("s1", on_host),
            },
        );
        assert!(matches!(r, Response::Service { .. }), "{r:?}");
        assert_eq!(state.service_vips("s1").count(), 0);
        state.apply(6, &Command::RemoveService { id: "s1".into() });
        // Bridge next to an overlay: only the overlay is the cluster's.
        let both = spec(json!([{"Target": bridge}, {"Target": "n1"}]), json!([]));
        assert_eq!(state.service_networks(&both), Ok(vec!["n1".to_string()]));
        assert!(!state.service_uses_host_network(&both));
        // Host with another network, or with a mesh port: refused.
        for bad in [
            spec(json!([{"Target": host}, {"Target": "n1"}]), json!([])),
            spec(json!([{"Target": "host"}]), json!([{"TargetPort": 80}])),
            spec(
                json!([{"Target": "host"}]),
                json!([{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]),
            ),
        ] {
            let r = rejected(state.apply(
                7,
                &Command::CreateService {
                    service: service("s2", bad),
                },
            ));
            assert!(matches!(r, Rejection::NetworkInvalid { .. }), "{r:?}");
            assert!(!state.services.contains_key("s2"));
        }
    }

    #[test]
    fn wg_keys_are_recorded_on_the_node() {
        let mut state = cluster(None);
        state.apply(
            4,
            &Command::SetNodeWgKey {
                id: 2,
                public_key: "k2".into(),
                listen_port: None,
            },
        );
        assert_eq!(state.nodes[&2].wg_public_key.as_deref(), Some("k2"));
        assert_eq!(state.nodes[&2].wg_listen_port, None);
        assert_eq!(state.nodes[&2].version, 4);
        // The same key on another port (51820 was taken in the node's namespace).
        state.apply(
            5,
            &Command::SetNodeWgKey {
                id: 2,
                public_key: "k2".into(),
                listen_port: Some(40123),
            },
        );
        assert_eq!(state.nodes[&2].wg_listen_port, Some(40123));
        assert_eq!(state.nodes[&2].version, 5);
        // A command written before the field existed still reads (default port).
        let old: Command =
            serde_json::from_str(r#"{"type":"set_node_wg_key","id":2,"public_key":"k3"}"#).unwrap();
        state.apply(6, &old);
        assert_eq!(state.nodes[&2].wg_public_key.as_deref(), Some("k3"));
        assert_eq!(state.nodes[&2].wg_listen_port, None);
    }
}
