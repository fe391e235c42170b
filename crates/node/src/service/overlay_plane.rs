//! The overlay data plane of this node, driven from the replicated cluster state: one
//! [`OverlayDriver`] per berthd, a reconcile task that realises
//! [`desired_overlays`](super::overlay::desired_overlays) after every applied change, the
//! attachment of plain containers to attachable overlays (`docker run --network`,
//! `docker network connect`), and the embedded DNS of each overlay realised here.
//!
//! ```text
//!  applied_watch ──> local ClusterState ──desired_overlays(me)──> OverlayDriver::reconcile
//!                                      └─ container endpoints ──> DnsServer per overlay (gateway:53)
//!  container create/connect ──AttachEndpoint (leader allocates IP/MAC)──> reconcile ──> attach(netns)
//!  container rm/disconnect  ──detach(netns)──> DetachEndpoint ──> reconcile
//! ```
//!
//! Instance isolation: the device prefix is `o` followed by 3 hex digits of a hash of the
//! data root, so two berthd on one host (different data roots) never touch each other's
//! links or nftables table. The VXLAN UDP port is the standard 4789 for every instance: two
//! berthd in the SAME network namespace that realise the same VNI would both bind
//! 4789 for it and the second VXLAN device fails to come up (EADDRINUSE); berthd instances
//! that share a host must run in their own network namespaces (as the tests do) or belong
//! to different clusters whose VNIs do not meet.
//!
//! DNS: like the bridge networks' (see `berth_overlay_net::dns`), a server on the overlay's
//! gateway address in the host namespace (the gateway is on the local overlay bridge of
//! every node that realises it), answering the names (container name, `name.network`,
//! `--network-alias` aliases, short id) of every container endpoint of that overlay in the
//! cluster. Internal overlays have no gateway address on the host, so no embedded DNS.
//!
//! Services: a task's container is plugged into the overlays its task has addresses on
//! ([`OverlayPlane::attach_task`], by the agent before the start; unplugged when it stops,
//! [`OverlayPlane::detach_all`]). Each reconcile programs the service VIPs of its overlays
//! in every local container and task namespace (an nftables DNAT table per namespace,
//! `berth_overlay_net::overlay::vip`, rewritten only when its rules change), and the
//! embedded DNS answers service names (VIP, or task addresses for `dnsrr`), their aliases,
//! `tasks.<service>` and task container names ([`service_names`]).
//!
//! Encrypted overlays (`--opt encrypted`): this node's WireGuard key pair lives in
//! `<data-root>/cluster/wg.key` (mode 0600, made at the first reconcile of a membership,
//! removed with the membership on leave), its public half in the node record with the
//! device's UDP port when it is not the default 51820 (`SetNodeWgKey`, written whenever the
//! replica's differs). While the node realises an
//! encrypted network, one WireGuard device `<prefix>wg` (kernel module where present,
//! boringtun in this process otherwise) carries them all: its address is the node's
//! tunnel address ([`tunnel_addresses`](super::overlay::tunnel_addresses), in
//! 169.254.64.0/18), its peers are the other nodes with keys (replaced on every reconcile,
//! so a removed node's peer goes). The VXLAN FDB entries of encrypted networks point at
//! the peers' tunnel addresses, and the host table drops their VXLAN off the tunnel.
//! A userspace device lives and dies with berthd: while berthd is down (a restart, a
//! crash), encrypted overlays carry nothing; the first reconcile after the start makes the
//! device again (same key, so peers accept the new handshake).
//!
//! The routing mesh ([`super::mesh`]): each reconcile commits or releases this node's
//! sandbox endpoint on `ingress`, sets the published ports' DNAT rules in the host table,
//! and programs the return path of the local running tasks on `ingress` when the set of
//! nodes changed ([`OverlayPlane::attach_task`] programs it first, before the start).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_consensus::state::{EndpointOwner, Network};
use berth_consensus::{ClusterState, Command, NodeId, Response};
use berth_orchestrator::TaskState;
use berth_overlay_net::dns::{DnsRecords, DnsServer};
use berth_overlay_net::overlay::{IngressReturn, OverlayConfig, OverlayDriver, VipRule};
use berth_overlay_net::wireguard::{
    PeerOp, WgBackend, WgConfig, WgDevice, WgError, WgKeyPair, WgPublicKey,
};
use tokio::sync::Mutex;

use super::cluster::{node_id_str, ClusterPhase, ClusterService};
use super::mesh;
use super::overlay::{desired_overlays, desired_wireguard, vip_rules, WgDesired};
use crate::error::ServiceError;

/// How long a node waits for its replica to catch up with a write it made.
const WAIT_FOR_REPLICA: Duration = Duration::from_secs(10);

/// One endpoint of a task on an overlay, as [`OverlayPlane::attach_task`] plugged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAttachment {
    /// The overlay network (its record in the cluster state).
    pub network: Network,
    /// The interface inside the task's namespace (`eth1`, `eth2`, ...).
    pub ifname: String,
    /// Its address on the overlay (allocated by the leader with the task's assignment).
    pub ip: Ipv4Addr,
    /// Its MAC (`02:42:` + address).
    pub mac: [u8; 6],
}

/// One container's endpoint on an overlay, as inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayAttachment {
    /// The overlay network (its record in the cluster state).
    pub network: Network,
    /// Endpoint id (64 hex).
    pub endpoint_id: String,
    /// Its address on the overlay.
    pub ip: Ipv4Addr,
    /// Its MAC (`02:42:` + address).
    pub mac: [u8; 6],
    /// `--network-alias` names.
    pub aliases: Vec<String>,
}

struct Plane {
    cluster: ClusterService,
    driver: Mutex<OverlayDriver>,
    dns: Mutex<HashMap<String, DnsServer>>,
    upstreams: Vec<SocketAddr>,
    /// Whether the data plane is known to be empty (torn down with nothing realised).
    idle: AtomicBool,
    /// Local task namespaces on `ingress`, with the return path last programmed in each.
    ingress_tasks: Mutex<HashMap<PathBuf, IngressReturn>>,
    /// The VIP rules last programmed in each local namespace (by namespace file).
    vips: Mutex<HashMap<PathBuf, Vec<VipRule>>>,
    /// Where container namespace files live (`<netns_dir>/<container id>`).
    netns_dir: PathBuf,
    /// The WireGuard side of encrypted overlays.
    wg: Mutex<WgPlane>,
    /// `<data-root>/cluster/wg.key`.
    wg_key_path: PathBuf,
    /// The device name, `<prefix>wg`.
    wg_name: String,
}

/// This node's WireGuard key and device.
#[derive(Default)]
struct WgPlane {
    /// The key pair of the membership with this node id.
    key: Option<(NodeId, WgKeyPair)>,
    /// The running device and its tunnel address.
    device: Option<(WgDevice, Ipv4Addr)>,
    /// The UDP port the running device listens on (`WG_PORT` unless another process of
    /// this network namespace had it).
    port: u16,
    /// The node each configured peer stands for (for the logs).
    peers: BTreeMap<WgPublicKey, NodeId>,
    /// Whether no device of ours is known to exist (checked once after a stop, so the
    /// reconciles without encrypted networks do not list links every time).
    gone: bool,
}

/// This node's overlay data plane. Cheap to clone.
#[derive(Clone)]
pub struct OverlayPlane {
    inner: Arc<Plane>,
}

impl std::fmt::Debug for OverlayPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayPlane").finish_non_exhaustive()
    }
}

/// The device prefix of the berthd whose data root is `data_root`: `o` + 3 hex digits of
/// the path's FNV-1a hash (stable across berthd versions, so a restart finds its links).
pub fn instance_prefix(data_root: &Path) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in data_root.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("o{:03x}", h & 0xfff)
}

impl OverlayPlane {
    /// Opens the driver (a netlink socket in berthd's namespace). Must run inside tokio.
    /// `netns_dir`: where container namespace files live (`<netns_dir>/<container id>`).
    pub fn new(
        cluster: ClusterService,
        data_root: &Path,
        netns_dir: PathBuf,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Self, ServiceError> {
        let driver = OverlayDriver::new(OverlayConfig {
            prefix: instance_prefix(data_root),
            ..OverlayConfig::default()
        })
        .map_err(|e| ServiceError::Network(Box::new(e)))?;
        let wg_name = driver.names().wireguard();
        Ok(OverlayPlane {
            inner: Arc::new(Plane {
                cluster,
                driver: Mutex::new(driver),
                dns: Mutex::new(HashMap::new()),
                upstreams,
                idle: AtomicBool::new(false),
                ingress_tasks: Mutex::new(HashMap::new()),
                vips: Mutex::new(HashMap::new()),
                netns_dir,
                wg: Mutex::new(WgPlane::default()),
                wg_key_path: data_root.join("cluster").join("wg.key"),
                wg_name,
            }),
        })
    }

    /// The overlay network `reference` (name, id or id prefix) of the cluster, when this
    /// node is a member and it exists.
    pub fn network(&self, reference: &str) -> Option<Network> {
        self.inner
            .cluster
            .local_cluster_state()?
            .network_by_ref(reference)
            .cloned()
    }

    /// Realises the current replica: links, FDB/neighbour entries, DNS servers and records.
    pub async fn reconcile(&self) -> Result<(), ServiceError> {
        let (Some(node), Some(state)) = (
            self.inner.cluster.node(),
            self.inner.cluster.local_cluster_state(),
        ) else {
            return Ok(());
        };
        self.sync_sandbox(&state, node.id()).await;
        let key = self.sync_wg_key(&state, node.id()).await;
        let Some(desired) = desired_overlays(&state, node.id()) else {
            return Ok(());
        };
        // The tunnel first, so the VXLAN entries of encrypted networks lead somewhere.
        let wg = desired_wireguard(&state, node.id(), &desired);
        if let (Some(want), Some(key)) = (&wg, &key) {
            if self.sync_wg(want, key).await? {
                // The port it got goes into the node record.
                self.sync_wg_key(&state, node.id()).await;
            }
        }
        let mut d = self.inner.driver.lock().await;
        if desired.networks.is_empty() {
            // Nothing realised here: no link and no host table either (once; also clears
            // what a crashed berthd left).
            drop(d);
            if !self.inner.idle.swap(true, Ordering::SeqCst) {
                self.teardown().await;
            }
            return Ok(());
        }
        self.inner.idle.store(false, Ordering::SeqCst);
        d.reconcile(&desired)
            .await
            .map_err(|e| ServiceError::Network(Box::new(e)))?;
        if wg.is_none() {
            self.stop_wg().await;
        }
        // The routing mesh's published ports, on a node that holds its ingress sandbox.
        let rules = if desired.networks.iter().any(|n| n.host_address.is_some()) {
            mesh::ingress_rules(&state)
        } else {
            Vec::new()
        };
        d.set_published(rules, Vec::new())
            .await
            .map_err(|e| ServiceError::Network(Box::new(e)))?;
        // Internal networks too (as dockerd's embedded DNS answers on them): their bridge
        // carries the gateway address for it, and the host table lets only DNS in.
        let wanted: Vec<&Network> = desired
            .networks
            .iter()
            .filter_map(|s| state.networks.get(&s.id))
            .collect();
        let mut records = dns_records_with_neighbours(&state, &wanted);
        let mut dns = self.inner.dns.lock().await;
        dns.retain(|id, _| wanted.iter().any(|n| &n.id == id));
        for n in wanted {
            if !dns.contains_key(&n.id) {
                match DnsServer::bind(
                    SocketAddrV4::new(n.gateway, 53),
                    self.inner.upstreams.clone(),
                )
                .await
                {
                    Ok(s) => {
                        dns.insert(n.id.clone(), s);
                    }
                    Err(e) => {
                        tracing::warn!(network = %n.spec.name, error = %e, "overlay embedded DNS");
                        continue;
                    }
                }
            }
            if let Some(r) = records.remove(&n.id) {
                dns[&n.id].set_records(r);
            }
        }
        drop(dns);
        let wanted = local_vip_rules(&state, node.id(), &self.inner.netns_dir);
        let mut vips = self.inner.vips.lock().await;
        vips.retain(|netns, _| wanted.contains_key(netns));
        for (netns, rules) in wanted {
            if vips.get(&netns) == Some(&rules) || !netns.exists() {
                continue;
            }
            match d.program_vips(&netns, &rules).await {
                Ok(()) => {
                    vips.insert(netns, rules);
                }
                // The container may be going away: the next reconcile tries again.
                Err(e) => {
                    tracing::debug!(netns = %netns.display(), error = %e, "programming service VIPs")
                }
            }
        }
        drop(vips);
        drop(d);
        self.sync_ingress_returns(&state, node.id()).await;
        Ok(())
    }

    /// Commits this node's routing-mesh sandbox endpoint on `ingress` when the mesh is
    /// wanted and the node has none, or releases it when no service publishes through the
    /// mesh any more ([`mesh::wants_sandbox`]). Failures are logged; the next reconcile
    /// (after every applied change, at least every 5 s) tries again.
    async fn sync_sandbox(&self, state: &ClusterState, me: NodeId) {
        let (want, have) = (mesh::wants_sandbox(state), mesh::sandbox_of(state, me));
        let command = match (want, have, state.ingress_network()) {
            (true, None, Some(ingress)) => Command::AttachEndpoint {
                id: crate::service::volumes::random_hex64(),
                network: ingress.id.clone(),
                node_id: me,
                owner: EndpointOwner::NodeSandbox,
                requested_ip: None,
            },
            (false, Some(id), _) => Command::DetachEndpoint { id, node_id: me },
            _ => return,
        };
        match self.inner.cluster.write(command).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "routing mesh sandbox"),
            Err(e) => tracing::warn!(error = %e, "routing mesh sandbox"),
        }
    }

    /// Programs the return path (replies through the node that forwarded each request) of
    /// the task namespace `netns`, on `ingress` as `ifname`, right when it is plugged in;
    /// every reconcile re-programs it when the set of nodes changes.
    pub async fn add_ingress_task(&self, netns: &Path, ifname: &str) -> Result<(), ServiceError> {
        let Some(state) = self.inner.cluster.local_cluster_state() else {
            return Ok(());
        };
        let ret = IngressReturn {
            ifname: ifname.to_string(),
            nodes: mesh::sandbox_addrs(&state),
        };
        self.inner
            .driver
            .lock()
            .await
            .program_ingress_return(netns, &ret)
            .await
            .map_err(|e| ServiceError::Network(Box::new(e)))?;
        self.inner
            .ingress_tasks
            .lock()
            .await
            .insert(netns.to_path_buf(), ret);
        Ok(())
    }

    /// Forgets the task namespace `netns` (its rules go with the namespace).
    pub async fn remove_ingress_task(&self, netns: &Path) {
        self.inner.ingress_tasks.lock().await.remove(netns);
    }

    /// Programs the return path of every local running task on `ingress` (from the
    /// replica: its container's namespace under `netns_dir`) whose programmed node set is
    /// not the current one; forgets namespaces that are no longer wanted.
    async fn sync_ingress_returns(&self, state: &ClusterState, me: NodeId) {
        let nodes = mesh::sandbox_addrs(state);
        let wanted = mesh::local_ingress_tasks(state, me, &self.inner.netns_dir);
        let mut tasks = self.inner.ingress_tasks.lock().await;
        tasks.retain(|netns, _| wanted.contains_key(netns));
        for (netns, ifname) in wanted {
            let ret = IngressReturn {
                ifname,
                nodes: nodes.clone(),
            };
            if tasks.get(&netns) == Some(&ret) || !netns.exists() {
                continue;
            }
            let r = self
                .inner
                .driver
                .lock()
                .await
                .program_ingress_return(&netns, &ret)
                .await;
            match r {
                Ok(()) => {
                    tasks.insert(netns, ret);
                }
                // The container may be going away: the next reconcile tries again.
                Err(e) => {
                    tracing::debug!(netns = %netns.display(), error = %e, "routing mesh return path")
                }
            }
        }
    }

    /// Removes every overlay link and the nftables table of this instance, and stops the
    /// overlay DNS servers (leave swarm, daemon stop).
    pub async fn teardown(&self) {
        self.inner.idle.store(true, Ordering::SeqCst);
        self.inner.dns.lock().await.clear();
        if let Err(e) = self.inner.driver.lock().await.teardown().await {
            tracing::warn!(error = %e, "overlay teardown");
        }
        self.stop_wg().await;
    }

    /// This node's WireGuard key pair (loaded from, or made and saved to,
    /// `<data-root>/cluster/wg.key`), published in its node record when the replica's
    /// differs. `None` (logged) when the key file cannot be read or written.
    async fn sync_wg_key(&self, state: &ClusterState, me: NodeId) -> Option<WgKeyPair> {
        let (key, running_port) = {
            let mut wg = self.inner.wg.lock().await;
            let running_port = wg.device.is_some().then_some(wg.port);
            let key = match &wg.key {
                Some((id, k)) if *id == me => k.clone(),
                _ => {
                    let path = &self.inner.wg_key_path;
                    let k = if path.exists() {
                        WgKeyPair::load(path)
                    } else {
                        let k = WgKeyPair::generate();
                        k.save(path).map(|()| k)
                    };
                    match k {
                        Ok(k) => {
                            wg.key = Some((me, k.clone()));
                            k
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "WireGuard key of this node");
                            return None;
                        }
                    }
                }
            };
            (key, running_port)
        };
        let public = key.public_key().to_string();
        let Some(record) = state.nodes.get(&me) else {
            return Some(key);
        };
        // The port to publish: the running device's (`None` for the default), else the one
        // already published.
        let port = match running_port {
            Some(p) if p != super::overlay::WG_PORT => Some(p),
            Some(_) => None,
            None => record.wg_listen_port,
        };
        if record.wg_public_key.as_deref() != Some(public.as_str()) || record.wg_listen_port != port
        {
            let command = Command::SetNodeWgKey {
                id: me,
                public_key: public,
                listen_port: port,
            };
            match self.inner.cluster.write(command).await {
                Ok(Ok(_)) => {
                    tracing::info!(key = %key.public_key(), port = port.unwrap_or(super::overlay::WG_PORT), "WireGuard public key published")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "publishing the WireGuard key"),
                Err(e) => tracing::warn!(error = %e, "publishing the WireGuard key"),
            }
        }
        Some(key)
    }

    /// Brings the WireGuard device to `want`: started (or restarted when the tunnel
    /// address moved) with `key`, its peers replaced by `want.peers`. The device listens on
    /// `WG_PORT`, or, when another process of this network namespace has that port (a
    /// second berthd), on a port the kernel picks, which the caller publishes in the node
    /// record (`sync_wg_key`) for the peers. Returns whether it started the device.
    async fn sync_wg(&self, want: &WgDesired, key: &WgKeyPair) -> Result<bool, ServiceError> {
        let wgerr = |e: WgError| ServiceError::WireGuard(Box::new(e));
        let mut wg = self.inner.wg.lock().await;
        if let Some((dev, addr)) = wg.device.take() {
            if addr == want.tunnel_addr && dev.public_key() == key.public_key() {
                wg.device = Some((dev, addr));
            } else if let Err(e) = dev.teardown().await {
                tracing::warn!(error = %e, "WireGuard device restart");
            }
        }
        let started = wg.device.is_none();
        if started {
            let mut config = WgConfig {
                name: self.inner.wg_name.clone(),
                listen_port: super::overlay::WG_PORT,
                tunnel_addr: want.tunnel_addr,
                prefix: super::overlay::TUNNEL_NET.1,
                mtu: berth_overlay_net::wireguard::DEFAULT_MTU,
                backend: WgBackend::Auto,
            };
            let dev = match WgDevice::start(&config, key).await {
                Err(e) if port_in_use(&e) => {
                    tracing::warn!(
                        port = config.listen_port,
                        "WireGuard port in use in this network namespace: listening on a port the kernel picks, published for the peers"
                    );
                    config.listen_port = 0;
                    WgDevice::start(&config, key).await.map_err(wgerr)?
                }
                r => r.map_err(wgerr)?,
            };
            let port = match dev.stats() {
                Ok(s) => s.listen_port.unwrap_or(config.listen_port),
                Err(e) => {
                    let _ = dev.teardown().await;
                    return Err(wgerr(e));
                }
            };
            tracing::info!(
                device = %config.name,
                backend = ?dev.backend(),
                tunnel = %want.tunnel_addr,
                port,
                "WireGuard device started"
            );
            wg.device = Some((dev, want.tunnel_addr));
            wg.port = port;
            wg.peers.clear();
            wg.gone = false;
        }
        let peers: Vec<_> = want.peers.iter().map(|(_, p)| p.clone()).collect();
        let nodes: BTreeMap<WgPublicKey, NodeId> = want
            .peers
            .iter()
            .map(|(id, p)| (p.public_key, *id))
            .collect();
        let Some((dev, _)) = wg.device.as_mut() else {
            return Ok(started);
        };
        let ops = dev.set_peers(&peers).map_err(wgerr)?;
        for op in &ops {
            match op {
                PeerOp::Remove(k) => tracing::info!(
                    node = %wg.peers.get(k).or(nodes.get(k)).map(|id| node_id_str(*id)).unwrap_or_default(),
                    key = %k,
                    "WireGuard peer removed"
                ),
                PeerOp::Add(p) => tracing::info!(
                    node = %nodes.get(&p.public_key).map(|id| node_id_str(*id)).unwrap_or_default(),
                    key = %p.public_key,
                    endpoint = %p.endpoint,
                    tunnel = %p.tunnel_ip,
                    "WireGuard peer added"
                ),
            }
        }
        wg.peers = nodes;
        Ok(started)
    }

    /// Stops the WireGuard device if one runs, and removes a link of its name left by an
    /// earlier berthd (a kernel device outlives its process).
    async fn stop_wg(&self) {
        let mut wg = self.inner.wg.lock().await;
        if wg.gone && wg.device.is_none() {
            return;
        }
        wg.peers.clear();
        if let Some((dev, _)) = wg.device.take() {
            match dev.teardown().await {
                Ok(()) => tracing::info!(device = %self.inner.wg_name, "WireGuard device stopped"),
                Err(e) => tracing::warn!(error = %e, "WireGuard device teardown"),
            }
        }
        match WgDevice::remove_stale(&self.inner.wg_name).await {
            Ok(_) => wg.gone = true,
            Err(e) => tracing::warn!(error = %e, "removing a leftover WireGuard device"),
        }
    }

    /// Whether this node hosts any endpoint in the replica (daemon stop keeps the data plane
    /// of running containers, as for bridge networks).
    pub fn has_local_endpoints(&self) -> bool {
        let (Some(node), Some(state)) = (
            self.inner.cluster.node(),
            self.inner.cluster.local_cluster_state(),
        ) else {
            return false;
        };
        state
            .endpoints
            .values()
            .any(|e| e.node_id == Some(node.id()))
    }

    /// Plugs the container namespace `netns` into overlay `network`: an endpoint committed
    /// through the cluster (the leader allocates its address), the network realised here,
    /// a veth `ifname` with the endpoint's MAC and address and a default route via the
    /// gateway when `default_route` (its first network). Errors: not attachable (403), not
    /// a member / no quorum (503), data plane failures (500; the endpoint is released).
    #[allow(clippy::too_many_arguments)]
    pub async fn attach(
        &self,
        container_id: &str,
        container_name: &str,
        network: &Network,
        aliases: Vec<String>,
        netns: &Path,
        ifname: &str,
        default_route: bool,
    ) -> Result<OverlayAttachment, ServiceError> {
        let me = self.inner.cluster.member()?.id();
        let endpoint_id = crate::service::volumes::random_hex64();
        let answer = self
            .inner
            .cluster
            .commit(Command::AttachEndpoint {
                id: endpoint_id.clone(),
                network: network.id.clone(),
                node_id: me,
                owner: EndpointOwner::Container {
                    id: container_id.to_string(),
                    name: container_name.to_string(),
                    aliases: aliases.clone(),
                },
                requested_ip: None,
            })
            .await?;
        let endpoint = match answer {
            Response::Endpoint { endpoint } => endpoint,
            other => {
                return Err(ServiceError::Cluster(format!(
                    "unexpected cluster answer {other:?}"
                )))
            }
        };
        let result = async {
            self.wait_for_replica(|s| s.endpoints.contains_key(&endpoint_id))
                .await?;
            self.reconcile().await?;
            let gateway = (default_route && !network.spec.internal).then_some(network.gateway);
            self.inner
                .driver
                .lock()
                .await
                .attach(
                    &network.id,
                    netns,
                    ifname,
                    endpoint.ip,
                    network.subnet_net().len,
                    endpoint.mac,
                    gateway,
                )
                .await
                .map_err(|e| ServiceError::Network(Box::new(e)))
        }
        .await;
        if let Err(e) = result {
            self.release(&endpoint_id).await;
            return Err(e);
        }
        Ok(OverlayAttachment {
            network: network.clone(),
            endpoint_id,
            ip: endpoint.ip,
            mac: endpoint.mac,
            aliases,
        })
    }

    /// Unplugs the container from overlay `network_id` (or from every overlay when `None`)
    /// and releases its endpoints in the cluster. Keeps going on errors, logging each.
    pub async fn detach(&self, container_id: &str, network_id: Option<&str>, netns: &Path) {
        let (Some(node), Some(state)) = (
            self.inner.cluster.node(),
            self.inner.cluster.local_cluster_state(),
        ) else {
            return;
        };
        let mine: Vec<(String, String)> = state
            .endpoints
            .values()
            .filter(|e| e.node_id == Some(node.id()))
            .filter(|e| network_id.is_none_or(|n| e.network_id == n))
            .filter(
                |e| matches!(&e.owner, EndpointOwner::Container { id, .. } if id == container_id),
            )
            .map(|e| (e.id.clone(), e.network_id.clone()))
            .collect();
        for (ep, net) in mine {
            if let Err(e) = self.inner.driver.lock().await.detach(&net, netns).await {
                tracing::warn!(container = %container_id, error = %e, "overlay detach");
            }
            self.release(&ep).await;
        }
    }

    /// Plugs the namespace `netns` of task `task_id`'s container into every network the
    /// replicated state gave the task an address on (its service's networks in
    /// `service_networks` order: `ingress` first when the service publishes through the
    /// routing mesh, then `TaskTemplate.Networks`), as `eth<first_if>`, `eth<first_if+1>`, ...
    /// with the endpoint's IP and MAC from the state. No default route is set: the task
    /// keeps the one of its node-local bridge (`eth0`, as Swarm's `docker_gwbridge`).
    /// Realises the networks on this node first. Idempotent: a second call replaces the
    /// veths (a retried start, an adopted task).
    ///
    /// Errors: the task or its service unknown to the replica, a network the task has no
    /// address on (it vanished or ran out of addresses), not a member (503), data plane
    /// failures (500). On error nothing stays plugged.
    pub async fn attach_task(
        &self,
        task_id: &str,
        netns: &Path,
        first_if: usize,
    ) -> Result<Vec<TaskAttachment>, ServiceError> {
        let state = self
            .inner
            .cluster
            .local_cluster_state()
            .ok_or_else(|| ServiceError::unavailable("this node is not part of a swarm"))?;
        let wanted = task_networks(&state, task_id)?;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.reconcile().await?;
        let mut done: Vec<TaskAttachment> = Vec::new();
        for (i, (network, ip, mac)) in wanted.into_iter().enumerate() {
            let ifname = format!("eth{}", first_if + i);
            let r = self
                .inner
                .driver
                .lock()
                .await
                .attach(
                    &network.id,
                    netns,
                    &ifname,
                    ip,
                    network.subnet_net().len,
                    mac,
                    None,
                )
                .await;
            if let Err(e) = r {
                self.unplug(
                    &done
                        .iter()
                        .map(|a| a.network.id.clone())
                        .collect::<Vec<_>>(),
                    netns,
                )
                .await;
                return Err(ServiceError::Network(Box::new(e)));
            }
            done.push(TaskAttachment {
                network,
                ifname,
                ip,
                mac,
            });
        }
        // The routing mesh's return path in a task on `ingress`.
        for a in done.iter().filter(|a| a.network.spec.ingress) {
            if let Err(e) = self.add_ingress_task(netns, &a.ifname).await {
                let ids: Vec<String> = done.iter().map(|a| a.network.id.clone()).collect();
                self.unplug(&ids, netns).await;
                return Err(e);
            }
        }
        // Its VIP table now, not at the next reconcile.
        self.inner.vips.lock().await.remove(netns);
        if let Err(e) = self.reconcile().await {
            tracing::warn!(task = %task_id, error = %e, "overlay reconcile after a task attach");
        }
        Ok(done)
    }

    /// Unplugs namespace `netns` from every overlay of the cluster (a task that stopped;
    /// any container being removed). The task's addresses stay in the state until its
    /// record is deleted. Absent links count as done; failures are logged.
    pub async fn detach_all(&self, netns: &Path) {
        let Some(state) = self.inner.cluster.local_cluster_state() else {
            return;
        };
        let ids: Vec<String> = state.networks.keys().cloned().collect();
        self.unplug(&ids, netns).await;
        self.inner.vips.lock().await.remove(netns);
        self.remove_ingress_task(netns).await;
    }

    async fn unplug(&self, network_ids: &[String], netns: &Path) {
        let mut d = self.inner.driver.lock().await;
        for id in network_ids {
            if let Err(e) = d.detach(id, netns).await {
                tracing::warn!(network = %id, netns = %netns.display(), error = %e, "overlay detach");
            }
        }
    }

    /// The overlay endpoints of a container on this node, from the replica.
    pub fn endpoints_of(&self, container_id: &str) -> Vec<OverlayAttachment> {
        let (Some(node), Some(state)) = (
            self.inner.cluster.node(),
            self.inner.cluster.local_cluster_state(),
        ) else {
            return Vec::new();
        };
        state
            .endpoints
            .values()
            .filter(|e| e.node_id == Some(node.id()))
            .filter_map(|e| match &e.owner {
                EndpointOwner::Container { id, aliases, .. } if id == container_id => Some((
                    e,
                    aliases.clone(),
                    state.networks.get(&e.network_id)?.clone(),
                )),
                _ => None,
            })
            .map(|(e, aliases, network)| OverlayAttachment {
                network,
                endpoint_id: e.id.clone(),
                ip: e.ip,
                mac: e.mac,
                aliases,
            })
            .collect()
    }

    /// Releases endpoint `endpoint_id` of this node through the cluster (logged, not
    /// returned, on failure; the next sweep tries again).
    pub async fn release_endpoint(&self, endpoint_id: &str) {
        self.release(endpoint_id).await
    }

    async fn release(&self, endpoint_id: &str) {
        let Some(node) = self.inner.cluster.node() else {
            return;
        };
        match self
            .inner
            .cluster
            .write(Command::DetachEndpoint {
                id: endpoint_id.to_string(),
                node_id: node.id(),
            })
            .await
        {
            Ok(Ok(_)) => {
                let _ = self
                    .wait_for_replica(|s| !s.endpoints.contains_key(endpoint_id))
                    .await;
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(error = %e, "overlay reconcile after detach");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %endpoint_id, error = %e, "releasing overlay endpoint")
            }
            Err(e) => {
                tracing::warn!(endpoint = %endpoint_id, error = %e, "releasing overlay endpoint")
            }
        }
    }

    async fn wait_for_replica(
        &self,
        done: impl Fn(&ClusterState) -> bool,
    ) -> Result<(), ServiceError> {
        let node = self.inner.cluster.member()?;
        let mut applied = node.applied_watch();
        let wait = async {
            loop {
                if node.state_view().read(|s: &ClusterState| done(s)) {
                    return;
                }
                if applied.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(WAIT_FOR_REPLICA, wait)
            .await
            .map_err(|_| {
                ServiceError::unavailable(
                    "this node's replica of the cluster state lags: try again",
                )
            })
    }
}

/// The networks task `task_id` joins, in its service's order, with its address and MAC on
/// each (from the replicated state).
fn task_networks(
    state: &ClusterState,
    task_id: &str,
) -> Result<Vec<(Network, Ipv4Addr, [u8; 6])>, ServiceError> {
    let task = state
        .tasks
        .get(task_id)
        .ok_or_else(|| ServiceError::not_found(format!("task {task_id} not found")))?;
    let service = state
        .services
        .get(&task.service_id)
        .ok_or_else(|| ServiceError::not_found(format!("service {} not found", task.service_id)))?;
    let nets = state
        .service_networks(&service.spec)
        .map_err(|r| ServiceError::not_found(r.to_string()))?;
    let mut out = Vec::new();
    for id in nets {
        let network = state
            .networks
            .get(&id)
            .ok_or_else(|| ServiceError::not_found(format!("network {id} not found")))?;
        let ep = state
            .task_endpoints(task_id)
            .find(|e| e.network_id == id)
            .ok_or_else(|| {
                ServiceError::unavailable(format!(
                    "task {task_id} has no address on network {}",
                    network.spec.name
                ))
            })?;
        out.push((network.clone(), ep.ip, ep.mac));
    }
    Ok(out)
}

/// The VIP rules each local namespace on an overlay must hold (by namespace file): every
/// service VIP of every overlay the namespace is on, to the service's running tasks there
/// ([`vip_rules`]). Namespaces: this node's attachable-overlay containers, and the
/// containers of its running tasks (from the task's reported container id).
pub fn local_vip_rules(
    state: &ClusterState,
    me: berth_consensus::NodeId,
    netns_dir: &Path,
) -> BTreeMap<PathBuf, Vec<VipRule>> {
    let mut nets: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
    for e in state.endpoints.values().filter(|e| e.node_id == Some(me)) {
        let container = match &e.owner {
            EndpointOwner::Container { id, .. } => id.as_str(),
            EndpointOwner::Task { id, .. } => match state.tasks.get(id) {
                Some(t) if t.status.state == TaskState::Running => {
                    match t.status.container_id.as_deref() {
                        Some(c) => c,
                        None => continue,
                    }
                }
                _ => continue,
            },
            _ => continue,
        };
        nets.entry(netns_dir.join(container))
            .or_default()
            .push(e.network_id.as_str());
    }
    nets.into_iter()
        .map(|(netns, ids)| {
            let rules = ids.iter().flat_map(|id| vip_rules(state, id)).collect();
            (netns, rules)
        })
        .collect()
}

/// [`dns_records`] of each of `nets`, each with its clients' other overlays' names (a
/// container or task on several overlays asks the server of one and resolves the names of
/// all: [`DnsRecords::neighbours`]), by network id.
fn dns_records_with_neighbours(
    state: &ClusterState,
    nets: &[&Network],
) -> BTreeMap<String, DnsRecords> {
    let own: BTreeMap<String, DnsRecords> = nets
        .iter()
        .map(|n| (n.id.clone(), dns_records(state, n)))
        .collect();
    fn owner_of(e: &berth_consensus::state::NetworkEndpoint) -> Option<&str> {
        match &e.owner {
            EndpointOwner::Container { id, .. } | EndpointOwner::Task { id, .. } => Some(id),
            _ => None,
        }
    }
    // Each container's or task's networks, gathered once.
    let mut networks_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in state.endpoints.values() {
        if let Some(owner) = owner_of(e) {
            networks_of
                .entry(owner)
                .or_default()
                .push(e.network_id.as_str());
        }
    }
    let mut out = BTreeMap::new();
    for n in nets {
        let mut r = own[&n.id].clone();
        r.add_neighbours(state.endpoints_of_network(&n.id).filter_map(|e| {
            let others = networks_of
                .get(owner_of(e)?)?
                .iter()
                .filter(|o| **o != n.id.as_str())
                .filter_map(|o| own.get(*o))
                .collect();
            Some((e.ip, others))
        }));
        out.insert(n.id.clone(), r);
    }
    out
}

/// The names overlay `n` answers: every container endpoint on it, anywhere in the cluster.
fn dns_records(state: &ClusterState, n: &Network) -> DnsRecords {
    let mut names: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut add = |name: &str, ip: Ipv4Addr| {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if key.is_empty() {
            return;
        }
        let ips = names.entry(key).or_default();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    };
    for e in state.endpoints_of_network(&n.id) {
        if let EndpointOwner::Container { id, name, aliases } = &e.owner {
            add(name, e.ip);
            add(&format!("{name}.{}", n.spec.name), e.ip);
            for a in aliases {
                add(a, e.ip);
            }
            add(&id[..id.len().min(12)], e.ip);
        }
    }
    // Services (not on `ingress`: Swarm has no service discovery there).
    if !n.spec.ingress {
        for (name, aliases, ips) in service_names(state, n) {
            for ip in ips {
                add(&name, ip);
                for a in &aliases {
                    add(a, ip);
                }
            }
        }
    }
    DnsRecords {
        names,
        clients: n.subnet.parse().ok(),
        ..DnsRecords::default()
    }
}

/// The service names overlay `n` answers, as Swarm's embedded DNS does: for each service
/// on it, `(name, aliases, addresses)` with its VIP on `n` (or, `--endpoint-mode dnsrr`,
/// the addresses of its running tasks), then `(tasks.<name>, [], running task addresses)`,
/// then each running task's container name (`<service>.<slot>.<task id>`) to its address.
/// Aliases are the service's `Networks[].Aliases` of the attachment naming `n`. Tasks
/// count while they serve ([`serves`](super::overlay::serves)).
pub fn service_names(
    state: &ClusterState,
    n: &Network,
) -> Vec<(String, Vec<String>, Vec<Ipv4Addr>)> {
    let mut out = Vec::new();
    for service in state.services.values() {
        let Ok(nets) = state.service_networks(&service.spec) else {
            continue;
        };
        if !nets.contains(&n.id) {
            continue;
        }
        let name = berth_consensus::state::service_name(&service.spec)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            continue;
        }
        let aliases: Vec<String> = crate::service::task_spec::service_attachments(&service.spec)
            .into_iter()
            .filter(|a| {
                state
                    .network_by_ref(&a.target)
                    .is_some_and(|t| t.id == n.id)
            })
            .flat_map(|a| a.aliases)
            .collect();
        let mut tasks: Vec<(Ipv4Addr, String)> = Vec::new();
        for e in state.endpoints_of_network(&n.id) {
            let EndpointOwner::Task { id, service_id } = &e.owner else {
                continue;
            };
            if service_id != &service.id {
                continue;
            }
            let Some(task) = state.tasks.get(id) else {
                continue;
            };
            if !super::overlay::serves(task) {
                continue;
            }
            let node = task
                .node_id
                .map(super::cluster::node_id_str)
                .unwrap_or_default();
            tasks.push((
                e.ip,
                crate::service::task_spec::task_container_name(service, task, &node),
            ));
        }
        let task_ips: Vec<Ipv4Addr> = tasks.iter().map(|(ip, _)| *ip).collect();
        let front: Vec<Ipv4Addr> = if berth_consensus::state::is_dnsrr(&service.spec) {
            task_ips.clone()
        } else {
            state
                .service_vips(&service.id)
                .filter(|v| v.network_id == n.id)
                .map(|v| v.ip)
                .collect()
        };
        // `tasks.<alias>` too, as libnetwork registers it for every service alias (a stack's
        // short service names are aliases on its networks).
        let task_aliases = aliases.iter().map(|a| format!("tasks.{a}")).collect();
        out.push((name.clone(), aliases, front));
        out.push((format!("tasks.{name}"), task_aliases, task_ips));
        for (ip, cname) in tasks {
            out.push((cname, Vec::new(), vec![ip]));
        }
    }
    out
}

/// Runs the reconcile loop while the cluster is active (after every applied batch, and
/// every 5 s as a repair), and tears the data plane down when this node leaves.
pub fn spawn(plane: OverlayPlane) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut phase = plane.inner.cluster.phase_watch();
        loop {
            let current = phase.borrow_and_update().clone();
            match current {
                ClusterPhase::Active(_) => {
                    if let Some(node) = plane.inner.cluster.node() {
                        let mut applied = node.applied_watch();
                        drop(node);
                        loop {
                            if let Err(e) = plane.reconcile().await {
                                tracing::warn!(error = %e, "overlay reconcile");
                            }
                            tokio::select! {
                                r = phase.changed() => {
                                    if r.is_err() { return; }
                                    break;
                                }
                                r = applied.changed() => if r.is_err() {
                                    // The node stopped: wait for the phase change.
                                    if phase.changed().await.is_err() { return; }
                                    break;
                                },
                                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            }
                        }
                        continue;
                    }
                }
                ClusterPhase::Left { .. } => plane.teardown().await,
                ClusterPhase::Inactive => {}
            }
            if phase.changed().await.is_err() {
                return;
            }
        }
    })
}

/// The endpoints of node `me` owned by containers, as (endpoint id, container id). The
/// node's agent releases those whose container it does not know (neither one of the node
/// nor one being created): left when a `docker run` failed after its `AttachEndpoint` was
/// written but before the cluster confirmed it (no quorum for 10 s, committed later), they
/// would keep the network "in use" forever.
pub fn container_endpoints(state: &ClusterState, me: NodeId) -> Vec<(String, String)> {
    state
        .endpoints
        .values()
        .filter(|e| e.node_id == Some(me))
        .filter_map(|e| match &e.owner {
            EndpointOwner::Container { id, .. } => Some((e.id.clone(), id.clone())),
            _ => None,
        })
        .collect()
}

/// Whether starting a WireGuard device failed because its UDP port is taken (boringtun's
/// UAPI answers `errno=EADDRINUSE`; the kernel module's configuration fails with it).
fn port_in_use(e: &WgError) -> bool {
    match e {
        WgError::UapiErrno { errno, .. } => *errno == libc::EADDRINUSE,
        WgError::Kernel { source, .. } => source.raw_os_error() == Some(libc::EADDRINUSE),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use berth_consensus::state::{NetworkSpec, NodeSpec};
    use berth_consensus::NodeRole;

    use super::*;

    #[test]
    fn prefixes_are_valid_device_prefixes_and_differ_per_data_root() {
        let a = instance_prefix(Path::new("/var/lib/berth"));
        let b = instance_prefix(Path::new("/tmp/other/data"));
        assert_eq!(a, instance_prefix(Path::new("/var/lib/berth")));
        assert_ne!(a, b);
        assert!(berth_overlay_net::overlay::OverlayNames::new(&a).is_ok());
    }

    #[test]
    fn an_overlay_answers_the_names_of_its_containers_only() {
        let mut state = ClusterState::default();
        state.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: NodeSpec {
                    id: 1,
                    hostname: "h1".into(),
                    addr: "10.77.0.1:2377".into(),
                    role: NodeRole::Manager,
                    cert_fingerprint: "fp".into(),
                },
                networking: None,
            },
        );
        for (i, name) in [(2, "a"), (3, "b")] {
            state.apply(
                i,
                &Command::CreateNetwork {
                    id: format!("n{name}"),
                    spec: NetworkSpec {
                        name: name.into(),
                        attachable: true,
                        ..NetworkSpec::default()
                    },
                    at: 0,
                },
            );
        }
        let attach = |state: &mut ClusterState, index, net: &str, cname: &str, aliases| {
            state.apply(
                index,
                &Command::AttachEndpoint {
                    id: format!("e{index}"),
                    network: net.into(),
                    node_id: 1,
                    owner: EndpointOwner::Container {
                        id: format!("{cname}0123456789abcdef"),
                        name: cname.into(),
                        aliases,
                    },
                    requested_ip: None,
                },
            )
        };
        attach(&mut state, 4, "a", "web", vec!["site".into()]);
        attach(&mut state, 5, "b", "other", vec![]);
        let na = state.network_by_ref("a").unwrap().clone();
        let r = dns_records(&state, &na);
        let ip = r.lookup("web").unwrap().to_vec();
        assert_eq!(ip.len(), 1);
        assert_eq!(r.lookup("WEB.a").unwrap(), ip.as_slice());
        assert_eq!(r.lookup("site").unwrap(), ip.as_slice());
        assert_eq!(r.lookup("web012345678").unwrap(), ip.as_slice());
        assert!(r.lookup("other").is_none());
        // The DNS server of `a` answers clients on `a` only.
        assert!(r.serves(ip[0].into()));
        assert!(!r.serves("192.0.2.1".parse().unwrap()));

        // An endpoint of a container the node does not know (its `docker run` failed after
        // the endpoint was written) is a phantom; known containers' are not, nor another
        // node's.
        let phantoms = |me, known: &dyn Fn(&str) -> bool| -> Vec<String> {
            container_endpoints(&state, me)
                .into_iter()
                .filter(|(_, cid)| !known(cid))
                .map(|(ep, _)| ep)
                .collect()
        };
        assert_eq!(
            phantoms(1, &|id| id.starts_with("web")),
            vec!["e5".to_string()]
        );
        assert!(phantoms(2, &|_| false).is_empty());
        assert!(phantoms(1, &|_| true).is_empty());
    }
}
