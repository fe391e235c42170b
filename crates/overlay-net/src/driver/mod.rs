//! The bridge network driver: what berthd calls.
//!
//! Owns: [`BridgeDriver`], which holds the desired [`NetState`] and the three seams, and
//! turns requests into state changes plus link and firewall plans (validate, then setup;
//! teardown keeps going and reports every error), and start-up reconciliation
//! ([`plan_reconcile`], pure; [`BridgeDriver::reconcile`] executes it).
//!
//! Does not own: persistence (the caller saves [`NetState::to_json`] after each mutating
//! call), container lifecycle, the Engine API.
//!
//! ```text
//!  berthd ── NetworkRequest / EndpointRequest ──> BridgeDriver
//!                                                   │ validate against NetState (pure)
//!                                                   │ ipam + ports (pure, PortProbe)
//!                                                   ├─ links plan ──> LinkExecutor (rtnetlink)
//!                                                   └─ Ruleset ─────> Firewall (nft -f -)
//!  berthd <── Network / Endpoint / NetError ───────┘  then berthd persists state().to_json()
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::{NetError, Result};
use crate::firewall::{delete_table_script, Firewall, Ruleset};
use crate::ipam::{choose_subnet, default_pools, AddressPool, Ipv4Net};
use crate::links::{
    endpoint_setup_plan, endpoint_teardown_plan, network_setup_plan, network_teardown_plan,
    run_setup, run_teardown, LinkExecutor, LinkOp, Netns, ObservedLink,
};
use crate::ports::{allocate_ports, PortProbe, PortRange, PortRequest};
use crate::state::{Endpoint, NetState, Network, DEFAULT_BRIDGE_DEVICE, DEFAULT_NETWORK_NAME};

/// Settings fixed at construction.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Where daemon-chosen host ports come from.
    pub port_range: PortRange,
    /// Candidate subnets for networks created without `--subnet`, in order.
    pub pools: Vec<Ipv4Net>,
    /// Subnet of the default network (`--bip`); `None` picks the first free pool.
    pub default_subnet: Option<Ipv4Net>,
    /// Gateway of the default network (`--bip`'s address); `None` is the subnet's first
    /// host address.
    pub default_gateway: Option<Ipv4Addr>,
    /// MTU for networks whose request gives none (berthd's `--mtu`); `None` is the
    /// kernel's default, 1500.
    pub mtu: Option<u32>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            port_range: PortRange::default(),
            pools: default_pools(),
            default_subnet: None,
            default_gateway: None,
            mtu: None,
        }
    }
}

/// `docker network create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// 64-hex id, chosen by the caller.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `--subnet`; `None` picks the first free pool.
    pub subnet: Option<Ipv4Net>,
    /// `--gateway`; `None` is the subnet's first host address.
    pub gateway: Option<Ipv4Addr>,
    /// `--internal`.
    pub internal: bool,
    /// `--opt com.docker.network.driver.mtu`; `None` uses [`DriverConfig::mtu`].
    pub mtu: Option<u32>,
    /// `--opt com.docker.network.bridge.enable_icc` (Docker's default, `true`): whether
    /// the network's containers reach each other; `false` isolates every port
    /// ([`Network::icc`]).
    pub icc: bool,
}

/// Attaching a container to a network (`docker run --network`, `docker network connect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRequest {
    /// Endpoint id (64 hex), chosen by the caller.
    pub endpoint_id: String,
    /// Container id.
    pub container_id: String,
    /// Container name (for /etc/hosts and DNS).
    pub container_name: String,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// Network id, unique id prefix or name.
    pub network: String,
    /// The container's network namespace file. Prefer a bind-mounted file (stable
    /// identity) over `/proc/<pid>/ns/net`.
    pub netns: PathBuf,
    /// `--ip`; `None` allocates.
    pub address: Option<Ipv4Addr>,
    /// `-p` / `-P` requests.
    pub ports: Vec<PortRequest>,
    /// `--dns`: see [`Endpoint::dns_servers`].
    pub dns_servers: Vec<std::net::IpAddr>,
    /// Interface names already in the namespace that this driver does not own (an
    /// overlay's `ethN`): the new interface takes none of them.
    pub taken_ifnames: Vec<String>,
}

/// What start-up reconciliation found and must do (pure output of [`plan_reconcile`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// berth links that nothing in the desired state wants (deleted).
    pub stale_links: Vec<String>,
    /// Networks whose bridge is missing (set up again; every network's setup is re-run
    /// anyway since it is idempotent).
    pub missing_bridges: Vec<String>,
    /// Endpoints whose veth exists but is not on its bridge (re-attached).
    pub detached_endpoints: Vec<String>,
    /// Endpoints whose veth is missing while their namespace lives (set up again).
    pub missing_endpoints: Vec<String>,
    /// Endpoints whose veth is missing and whose namespace is gone: the container died
    /// while berthd was down. Reported; berthd should call [`BridgeDriver::disconnect`].
    pub orphaned_endpoints: Vec<String>,
}

/// The outcome of [`BridgeDriver::reconcile`].
#[derive(Debug)]
pub struct ReconcileReport {
    /// What was found.
    pub plan: ReconcilePlan,
    /// Whether berth's nftables table was present before the rebuild.
    pub table_was_present: bool,
    /// Every step that failed (reconciliation keeps going).
    pub errors: Vec<NetError>,
}

/// Compares desired state with the observed host links (pure).
///
/// `netns_alive(endpoint)` says whether the endpoint's namespace still exists (and is the
/// same namespace).
pub fn plan_reconcile(
    state: &NetState,
    observed: &[ObservedLink],
    netns_alive: impl Fn(&Endpoint) -> bool,
) -> ReconcilePlan {
    let wanted: BTreeSet<&str> = state
        .networks
        .values()
        .map(|n| n.bridge.as_str())
        .chain(state.endpoints.values().map(|e| e.host_veth.as_str()))
        .collect();
    let by_name = |name: &str| observed.iter().find(|l| l.name == name);
    let mut plan = ReconcilePlan {
        stale_links: observed
            .iter()
            .filter(|l| l.is_berths() && !wanted.contains(l.name.as_str()))
            .map(|l| l.name.clone())
            .collect(),
        ..ReconcilePlan::default()
    };
    for net in state.networks.values() {
        if by_name(&net.bridge).is_none() {
            plan.missing_bridges.push(net.id.clone());
        }
    }
    for ep in state.endpoints.values() {
        let bridge = state
            .networks
            .get(&ep.network_id)
            .map(|n| n.bridge.as_str());
        match by_name(&ep.host_veth) {
            Some(link) if link.master.as_deref() == bridge => {}
            Some(_) => plan.detached_endpoints.push(ep.id.clone()),
            None if netns_alive(ep) => plan.missing_endpoints.push(ep.id.clone()),
            None => plan.orphaned_endpoints.push(ep.id.clone()),
        }
    }
    plan
}

fn netns_inode(path: &std::path::Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether an endpoint's namespace file still exists and is the namespace it was set up in.
fn netns_alive(ep: &Endpoint) -> bool {
    let now = netns_inode(&ep.netns);
    now.is_some() && (ep.netns_inode.is_none() || now == ep.netns_inode)
}

/// Bridge networking for one host. Methods that change anything are `async` and take
/// `&mut self`; berthd keeps one driver behind a `tokio::sync::Mutex` and persists
/// [`BridgeDriver::state`] after each successful or failed mutating call.
///
/// The driver acts in the network namespace of the threads that run it (the host's, for
/// berthd).
#[derive(Debug)]
pub struct BridgeDriver<L, F, P> {
    links: L,
    firewall: F,
    probe: P,
    state: NetState,
    config: DriverConfig,
    /// The ruleset last applied successfully by this driver, if known.
    applied: Option<Ruleset>,
}

impl<L: LinkExecutor, F: Firewall, P: PortProbe> BridgeDriver<L, F, P> {
    /// A driver over the given seams, starting from `state` (decoded from what the caller
    /// persisted, or `NetState::default()`). Call [`BridgeDriver::reconcile`] next.
    pub fn new(links: L, firewall: F, probe: P, state: NetState, config: DriverConfig) -> Self {
        BridgeDriver {
            links,
            firewall,
            probe,
            state,
            config,
            applied: None,
        }
    }

    /// The desired state, to persist and to answer `network ls/inspect`.
    pub fn state(&self) -> &NetState {
        &self.state
    }

    /// The link seam (tests inspect fakes through it).
    pub fn links(&self) -> &L {
        &self.links
    }

    /// The firewall seam.
    pub fn firewall(&self) -> &F {
        &self.firewall
    }

    /// Rebuilds berth's nftables table from the desired state (one atomic transaction),
    /// whatever was applied before.
    pub async fn sync_firewall(&mut self) -> Result<()> {
        let ruleset = Ruleset::from_state(&self.state);
        self.applied = None;
        self.firewall.apply(&ruleset.render()).await?;
        self.applied = Some(ruleset);
        Ok(())
    }

    /// Like [`BridgeDriver::sync_firewall`], but skips the transaction when the ruleset
    /// equals the one this driver last applied (attaching a container without published
    /// ports then costs no `nft` run, about 10 ms). Someone else changing berth's table in
    /// between goes unnoticed until the next change or [`BridgeDriver::reconcile`].
    async fn refresh_firewall(&mut self) -> Result<()> {
        if self.applied.as_ref() == Some(&Ruleset::from_state(&self.state)) {
            return Ok(());
        }
        self.sync_firewall().await
    }

    /// Checks a network request against the state and picks its subnet (no side effects
    /// beyond reading the host's routes when no subnet was given).
    pub async fn validate_network(&self, req: &NetworkRequest, bridge: &str) -> Result<Network> {
        // Docker's predefined networks: `host` and `none` are berthd's, not bridges.
        let reserved = ["host", "none"];
        if reserved.contains(&req.name.as_str())
            || (req.name == DEFAULT_NETWORK_NAME && bridge != DEFAULT_BRIDGE_DEVICE)
        {
            return Err(NetError::NetworkExists {
                network: req.name.clone(),
            });
        }
        for n in self.state.networks.values() {
            if n.name == req.name || n.id == req.id {
                return Err(NetError::NetworkExists {
                    network: req.name.clone(),
                });
            }
            if n.bridge == bridge {
                return Err(NetError::NetworkExists {
                    network: bridge.to_string(),
                });
            }
        }
        let subnet = match req.subnet {
            Some(subnet) => {
                if let Some(other) = self
                    .state
                    .networks
                    .values()
                    .find(|n| n.pool.subnet.overlaps(&subnet))
                {
                    return Err(NetError::SubnetOverlap {
                        subnet: subnet.to_string(),
                        other_network: other.name.clone(),
                        other_subnet: other.pool.subnet.to_string(),
                    });
                }
                subnet
            }
            None => {
                let routes = self.links.list_routes().await?;
                choose_subnet(&self.config.pools, &routes, &self.state.subnets())?
            }
        };
        Ok(Network {
            id: req.id.clone(),
            name: req.name.clone(),
            bridge: bridge.to_string(),
            pool: AddressPool::new(subnet, req.gateway)?,
            is_default: false,
            internal: req.internal,
            mtu: req.mtu.or(self.config.mtu),
            icc: req.icc,
        })
    }

    async fn add_network(&mut self, net: Network) -> Result<Network> {
        run_setup(
            &self.links,
            &network_setup_plan(&net),
            &network_teardown_plan(&net),
        )
        .await?;
        self.state.networks.insert(net.id.clone(), net.clone());
        if let Err(err) = self.refresh_firewall().await {
            self.state.networks.remove(&net.id);
            for e in run_teardown(&self.links, &network_teardown_plan(&net)).await {
                tracing::warn!(error = %e, "rollback of network setup failed");
            }
            return Err(err);
        }
        Ok(net)
    }

    /// Creates the default `bridge` network (device `berth0`) if the state has none, on the
    /// configured subnet or the first pool free of host routes. Returns it either way.
    pub async fn ensure_default_network(&mut self, id: &str) -> Result<Network> {
        if let Some(n) = self.state.networks.values().find(|n| n.is_default) {
            return Ok(n.clone());
        }
        let req = NetworkRequest {
            id: id.to_string(),
            name: DEFAULT_NETWORK_NAME.to_string(),
            subnet: self.config.default_subnet,
            gateway: self.config.default_gateway,
            internal: false,
            mtu: None,
            icc: true,
        };
        let mut net = self.validate_network(&req, DEFAULT_BRIDGE_DEVICE).await?;
        net.is_default = true;
        self.add_network(net).await
    }

    /// `docker network create`: validates, creates the bridge `br-<12 hex>`, updates the
    /// firewall. On failure nothing is left behind.
    pub async fn create_network(&mut self, req: NetworkRequest) -> Result<Network> {
        let net = self
            .validate_network(&req, &Network::bridge_name_for(&req.id))
            .await?;
        self.add_network(net).await
    }

    /// `docker network rm`: refused while endpoints are attached. Removes the bridge and
    /// its rules; the network leaves the state even if a step fails (the errors are
    /// returned together; reconciliation removes leftovers).
    pub async fn remove_network(&mut self, id_or_name: &str) -> Result<()> {
        let net = self.state.find_network(id_or_name)?.clone();
        let attached: Vec<String> = self
            .state
            .endpoints_of(&net.id)
            .map(|e| e.id.clone())
            .collect();
        if !attached.is_empty() {
            return Err(NetError::NetworkHasEndpoints {
                network: net.id,
                endpoints: attached,
            });
        }
        self.state.networks.remove(&net.id);
        let mut errors = Vec::new();
        if let Err(e) = self.refresh_firewall().await {
            errors.push(e);
        }
        errors.extend(run_teardown(&self.links, &network_teardown_plan(&net)).await);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetError::Teardown { errors })
        }
    }

    /// Attaches a container: allocates its address and host ports, creates the veth pair
    /// (container end `eth<N>` in `req.netns` with address, `lo` up and, for its first
    /// network, the default route), and publishes the ports. On failure nothing is left.
    pub async fn connect(&mut self, req: EndpointRequest) -> Result<Endpoint> {
        if self.state.endpoints.contains_key(&req.endpoint_id) {
            return Err(NetError::EndpointExists {
                endpoint: req.endpoint_id,
            });
        }
        let net = self.state.find_network(&req.network)?.clone();
        let siblings: Vec<&Endpoint> = self
            .state
            .endpoints
            .values()
            .filter(|e| e.container_id == req.container_id)
            .collect();
        if siblings.iter().any(|e| e.network_id == net.id) {
            return Err(NetError::AlreadyAttached {
                container: req.container_id,
                network: net.id,
            });
        }
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|name| {
                !siblings.iter().any(|e| &e.ifname == name) && !req.taken_ifnames.contains(name)
            })
            .expect("an unused ethN exists");
        let default_route = siblings.is_empty();

        let mut pool = net.pool.clone();
        let address = match req.address {
            Some(ip) => {
                pool.reserve(&net.id, ip, &req.endpoint_id)?;
                ip
            }
            None => pool.allocate(&net.id, &req.endpoint_id)?,
        };
        let ports = allocate_ports(
            &req.ports,
            &req.endpoint_id,
            &self.state.published_ports(),
            &self.probe,
            self.config.port_range,
        )?;
        let inode = netns_inode(&req.netns).ok_or_else(|| NetError::Netns {
            path: req.netns.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let ep = Endpoint {
            host_veth: self.state.unique_host_veth(&req.endpoint_id),
            id: req.endpoint_id,
            container_id: req.container_id,
            container_name: req.container_name,
            aliases: req.aliases,
            network_id: net.id.clone(),
            netns: req.netns,
            netns_inode: Some(inode),
            default_route,
            ifname,
            address,
            ports,
            dns_servers: req.dns_servers,
        };
        let teardown = endpoint_teardown_plan(&ep);
        run_setup(&self.links, &endpoint_setup_plan(&ep, &net), &teardown).await?;
        let old_pool = std::mem::replace(
            &mut self
                .state
                .networks
                .get_mut(&net.id)
                .expect("network found above")
                .pool,
            pool,
        );
        self.state.endpoints.insert(ep.id.clone(), ep.clone());
        if let Err(err) = self.refresh_firewall().await {
            self.state.endpoints.remove(&ep.id);
            if let Some(n) = self.state.networks.get_mut(&net.id) {
                n.pool = old_pool;
            }
            for e in run_teardown(&self.links, &teardown).await {
                tracing::warn!(error = %e, "rollback of endpoint setup failed");
            }
            return Err(err);
        }
        Ok(ep)
    }

    /// Detaches an endpoint: deletes its veth pair, releases its address and ports, updates
    /// the firewall. Every step runs; the endpoint leaves the state whatever fails, and all
    /// errors come back together in [`NetError::Teardown`].
    pub async fn disconnect(&mut self, endpoint_id: &str) -> Result<()> {
        let ep =
            self.state
                .endpoints
                .remove(endpoint_id)
                .ok_or_else(|| NetError::EndpointNotFound {
                    endpoint: endpoint_id.to_string(),
                })?;
        if let Some(net) = self.state.networks.get_mut(&ep.network_id) {
            net.pool.release(ep.address);
        }
        let mut errors = Vec::new();
        // Firewall first: the DNAT rules stop pointing at the address before it is freed.
        if let Err(e) = self.refresh_firewall().await {
            errors.push(e);
        }
        errors.extend(run_teardown(&self.links, &endpoint_teardown_plan(&ep)).await);
        // The container's default route went with this endpoint: hand it to another of its
        // endpoints (the lowest interface), as Docker does.
        if ep.default_route {
            if let Err(e) = self.move_default_route(&ep.container_id).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetError::Teardown { errors })
        }
    }

    async fn move_default_route(&mut self, container_id: &str) -> Result<()> {
        let Some(next) = self
            .state
            .endpoints
            .values()
            .filter(|e| {
                e.container_id == container_id
                    && !self
                        .state
                        .networks
                        .get(&e.network_id)
                        .is_some_and(|n| n.internal)
            })
            .min_by_key(|e| (e.ifname.len(), e.ifname.clone()))
        else {
            return Ok(());
        };
        let Some(net) = self.state.networks.get(&next.network_id) else {
            return Ok(());
        };
        if !netns_alive(next) {
            // The container is gone; nothing to route.
            return Ok(());
        }
        let op = LinkOp::AddDefaultRoute {
            netns: Netns::Path(next.netns.clone()),
            gateway: net.pool.gateway,
        };
        let id = next.id.clone();
        self.links.apply(&op).await?;
        if let Some(e) = self.state.endpoints.get_mut(&id) {
            e.default_route = true;
        }
        Ok(())
    }

    /// Start-up reconciliation after a crash or restart: observes the host's links and
    /// berth's table, deletes berth links nothing wants, re-creates missing bridges,
    /// re-attaches detached veths, re-creates endpoints whose namespace still lives, and
    /// rebuilds the nftables table from the desired state in one transaction (so no rule is
    /// ever duplicated). Keeps going past failures; they are in the report.
    pub async fn reconcile(&mut self) -> Result<ReconcileReport> {
        let observed = self.links.list_links().await?;
        let table_was_present = self.firewall.table_present().await?;
        let plan = plan_reconcile(&self.state, &observed, netns_alive);
        let mut errors = Vec::new();
        // Veths before bridges: a bridge deletion would detach, not delete, its ports.
        let (bridges, others): (Vec<&String>, Vec<&String>) =
            plan.stale_links.iter().partition(|name| {
                observed
                    .iter()
                    .any(|l| &&l.name == name && l.kind.as_deref() == Some("bridge"))
            });
        let deletes: Vec<LinkOp> = others
            .into_iter()
            .chain(bridges)
            .map(|name| LinkOp::DeleteLink { name: name.clone() })
            .collect();
        errors.extend(run_teardown(&self.links, &deletes).await);
        for net in self.state.networks.values() {
            for op in network_setup_plan(net) {
                if let Err(e) = self.links.apply(&op).await {
                    errors.push(e);
                }
            }
        }
        for id in &plan.detached_endpoints {
            let ep = &self.state.endpoints[id];
            let Some(net) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            for op in [
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
            ] {
                if let Err(e) = self.links.apply(&op).await {
                    errors.push(e);
                }
            }
        }
        for id in &plan.missing_endpoints {
            let ep = &self.state.endpoints[id];
            let Some(net) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            let teardown = endpoint_teardown_plan(ep);
            if let Err(e) = run_setup(&self.links, &endpoint_setup_plan(ep, net), &teardown).await {
                errors.push(e);
            }
        }
        if let Err(e) = self.sync_firewall().await {
            errors.push(e);
        }
        Ok(ReconcileReport {
            plan,
            table_was_present,
            errors,
        })
    }

    /// Removes everything berth created on the host: every link carrying berth's alias
    /// (veths first, then bridges) and berth's nftables table. The state is left as is (a
    /// later [`BridgeDriver::reconcile`] rebuilds from it). For berthd's shutdown when no
    /// container is left running, and for tests. Every step runs; all errors are returned.
    pub async fn teardown_host(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        self.applied = None;
        if let Err(e) = self.firewall.apply(&delete_table_script()).await {
            errors.push(e);
        }
        match self.links.list_links().await {
            Ok(observed) => {
                let mut ours: Vec<&ObservedLink> =
                    observed.iter().filter(|l| l.is_berths()).collect();
                ours.sort_by_key(|l| l.kind.as_deref() == Some("bridge"));
                let deletes: Vec<LinkOp> = ours
                    .into_iter()
                    .map(|l| LinkOp::DeleteLink {
                        name: l.name.clone(),
                    })
                    .collect();
                errors.extend(run_teardown(&self.links, &deletes).await);
            }
            Err(e) => errors.push(e),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetError::Teardown { errors })
        }
    }
}

#[cfg(test)]
mod tests;
