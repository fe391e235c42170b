//! Networks on this node: the default `bridge` network and user-defined bridge networks,
//! through the overlay-net crate's driver, with its state persisted under the data root.
//! `host` and `none` need no driver: they are modes of the container's namespace.
//!
//! ```text
//!  containers ──connect/disconnect──> NetworkService ──> HostBridgeDriver (links, nftables)
//!                                        │  state.json (after every change)
//!                                        └─> DnsServers (one per user network, on its gateway)
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_overlay_net::{
    create_netns_file, remove_netns_file, render_hosts, render_resolv_conf, BindProbe,
    BridgeDriver, DnsServers, DriverConfig, Endpoint, EndpointRequest, Ipv4Net, NetError, NetState,
    Network, NetworkRequest, NftCli, PortRequest, ResolvConfOptions, RtnetlinkExecutor,
};
use tokio::sync::Mutex;

use crate::error::ServiceError;
use crate::service::overlay_plane::{OverlayAttachment, OverlayPlane};
use crate::service::volumes::random_hex64;

/// The name of Swarm's gateway bridge ([`NetworkService::ensure_gateway_bridge`]).
pub const GATEWAY_BRIDGE_NAME: &str = "docker_gwbridge";

/// IDs of the two namespace-mode networks, fixed so they are stable across restarts.
pub const HOST_NETWORK_ID: &str =
    "4a6f5f9b2c3d8e1f0a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f";
pub const NONE_NETWORK_ID: &str =
    "5b7e6a0c3d4e9f2a1b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a";

type Driver = BridgeDriver<RtnetlinkExecutor, NftCli, BindProbe>;

/// Maps network errors onto what the API reports.
pub fn net_error(e: NetError) -> ServiceError {
    match e {
        e @ (NetError::NetworkNotFound { .. } | NetError::EndpointNotFound { .. }) => {
            ServiceError::not_found(e.to_string())
        }
        e @ (NetError::NetworkExists { .. }
        | NetError::NetworkHasEndpoints { .. }
        | NetError::EndpointExists { .. }
        | NetError::AlreadyAttached { .. }
        | NetError::PortInUse { .. }
        | NetError::AddressInUse { .. }
        | NetError::SubnetOverlap { .. }) => ServiceError::conflict(e.to_string()),
        e @ (NetError::InvalidSubnet { .. }
        | NetError::InvalidPortSpec { .. }
        | NetError::AddressOutsideSubnet { .. }
        | NetError::HostAddressNotLocal { .. }) => ServiceError::invalid(e.to_string()),
        e => ServiceError::Network(Box::new(e)),
    }
}

/// What a client asked for when it created a network, and when: inspect and list show it
/// back exactly (the driver state only knows what it needs to wire the network). Persisted
/// in `<data-root>/network/meta.json`, keyed by network ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkMeta {
    /// Creation time, RFC 3339 with nanoseconds (dockerd's `Created`).
    pub created: String,
    /// Driver-specific options (`Options` of the create body), as sent.
    pub options: BTreeMap<String, String>,
    /// User labels, as sent.
    pub labels: BTreeMap<String, String>,
    /// `IPAM.Driver` (`default` when not sent).
    pub ipam_driver: String,
    /// `IPAM.Options`, as sent (`None` when not sent).
    pub ipam_options: Option<BTreeMap<String, String>>,
    /// `Attachable`, as sent.
    pub attachable: bool,
}

#[derive(Debug)]
struct Inner {
    driver: Mutex<Driver>,
    dns: Mutex<DnsServers>,
    /// Create-time metadata per network ID; written to `meta_path` after every change.
    meta: std::sync::Mutex<BTreeMap<String, NetworkMeta>>,
    meta_path: PathBuf,
    state_path: PathBuf,
    netns_dir: PathBuf,
    files_dir: PathBuf,
    upstreams: Vec<SocketAddr>,
    host_resolv: String,
    handle: tokio::runtime::Handle,
    /// The overlay data plane, once berthd has made it (cluster mode).
    overlay: std::sync::OnceLock<OverlayPlane>,
}

/// What a container gets from joining its networks.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub netns: PathBuf,
    pub endpoints: Vec<(Network, Endpoint)>,
    /// Its endpoint on an attachable overlay network (`--network <overlay>`).
    pub overlay: Vec<OverlayAttachment>,
    /// `/etc/hosts` and `/etc/resolv.conf` files to bind into the container.
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

/// What a container's `/etc/hosts` and `/etc/resolv.conf` say beyond the defaults:
/// `--add-host` entries (addresses resolved) and `--dns`/`--dns-search`/`--dns-option`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameFiles {
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// Its `embedded_dns` is ignored: the network decides.
    pub resolv: ResolvConfOptions,
}

impl NameFiles {
    fn resolv_overridden(&self) -> bool {
        !(self.resolv.nameservers.is_empty()
            && self.resolv.search.is_empty()
            && self.resolv.options.is_empty())
    }
}

/// What a new container asks of its network.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    pub container_id: &'a str,
    pub container_name: &'a str,
    pub hostname: &'a str,
    pub domainname: &'a str,
    /// Network name or ID (`bridge` for the default one).
    pub network: &'a str,
    /// `--network-alias` names.
    pub aliases: Vec<String>,
    /// `-p` / `-P`.
    pub ports: Vec<PortRequest>,
    /// `--add-host`, `--dns*`.
    pub names: &'a NameFiles,
}

/// The networks of this node.
#[derive(Debug, Clone)]
pub struct NetworkService {
    inner: Arc<Inner>,
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl NetworkService {
    /// Loads the persisted state, repairs what a crashed daemon left (links, the nftables
    /// table) and makes sure the default `bridge` network exists.
    /// `config`: the bridge driver's settings (berthd's `--bip`, `--default-address-pool`).
    pub async fn open(
        data_root: &Path,
        exec_root: &Path,
        config: DriverConfig,
    ) -> Result<Self, ServiceError> {
        let dir = data_root.join("network");
        std::fs::create_dir_all(&dir).map_err(|e| ServiceError::io("create", &dir, e))?;
        let state_path = dir.join("state.json");
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => NetState::from_json(&bytes).map_err(net_error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NetState::default(),
            Err(e) => return Err(ServiceError::io("read", &state_path, e)),
        };
        let links = RtnetlinkExecutor::connect().map_err(net_error)?;
        let mut driver = BridgeDriver::new(links, NftCli::default(), BindProbe, state, config);
        let report = driver.reconcile().await.map_err(net_error)?;
        for e in &report.errors {
            tracing::warn!(error = %e, "network reconcile");
        }
        for ep in &report.plan.orphaned_endpoints {
            if let Err(e) = driver.disconnect(ep).await {
                tracing::warn!(endpoint = %ep, error = %e, "removing orphaned endpoint");
            }
        }
        let default_id = driver
            .state()
            .find_network(berth_overlay_net::state::DEFAULT_NETWORK_NAME)
            .map(|n| n.id.clone())
            .unwrap_or_else(|_| random_hex64());
        driver
            .ensure_default_network(&default_id)
            .await
            .map_err(net_error)?;
        write_atomic(&state_path, &driver.state().to_json())
            .map_err(|e| ServiceError::io("write", &state_path, e))?;
        let meta_path = dir.join("meta.json");
        let mut meta: BTreeMap<String, NetworkMeta> = match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ServiceError::io("parse", &meta_path, e.into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(ServiceError::io("read", &meta_path, e)),
        };
        // Networks without metadata (the default bridge on first start, or state from an
        // older berthd) are dated now; entries of networks that are gone are dropped.
        let now = crate::api::now_rfc3339();
        meta.retain(|id, _| driver.state().networks.contains_key(id));
        for id in driver.state().networks.keys() {
            meta.entry(id.clone()).or_insert_with(|| NetworkMeta {
                created: now.clone(),
                ipam_driver: "default".into(),
                ..NetworkMeta::default()
            });
        }
        write_atomic(
            &meta_path,
            &serde_json::to_vec(&meta).expect("meta serialises"),
        )
        .map_err(|e| ServiceError::io("write", &meta_path, e))?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let upstreams: Vec<SocketAddr> =
            berth_overlay_net::netfiles::upstream_nameservers(&host_resolv)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 53))
                .collect();
        let mut dns = DnsServers::default();
        for e in dns.sync(driver.state(), &upstreams).await {
            tracing::warn!(error = %e, "embedded DNS");
        }
        let files_dir = data_root.join("netfiles");
        std::fs::create_dir_all(&files_dir)
            .map_err(|e| ServiceError::io("create", &files_dir, e))?;
        Ok(NetworkService {
            inner: Arc::new(Inner {
                driver: Mutex::new(driver),
                dns: Mutex::new(dns),
                meta: std::sync::Mutex::new(meta),
                meta_path,
                state_path,
                netns_dir: exec_root.join("netns"),
                files_dir,
                upstreams,
                host_resolv,
                handle: tokio::runtime::Handle::current(),
                overlay: std::sync::OnceLock::new(),
            }),
        })
    }

    async fn saved(&self, driver: &Driver) {
        if let Err(e) = write_atomic(&self.inner.state_path, &driver.state().to_json()) {
            tracing::error!(error = %e, "persisting network state");
        }
        let meta = {
            let mut meta = self.meta_lock();
            meta.retain(|id, _| driver.state().networks.contains_key(id));
            serde_json::to_vec(&*meta).expect("meta serialises")
        };
        if let Err(e) = write_atomic(&self.inner.meta_path, &meta) {
            tracing::error!(error = %e, "persisting network metadata");
        }
        let mut dns = self.inner.dns.lock().await;
        for e in dns.sync(driver.state(), &self.inner.upstreams).await {
            tracing::warn!(error = %e, "embedded DNS");
        }
    }

    /// A snapshot of the networks and endpoints.
    pub async fn state(&self) -> NetState {
        self.inner.driver.lock().await.state().clone()
    }

    /// Creates a bridge network; `meta` is kept for inspect (its `created` is set here).
    pub async fn create(
        &self,
        req: NetworkRequest,
        mut meta: NetworkMeta,
    ) -> Result<Network, ServiceError> {
        let mut d = self.inner.driver.lock().await;
        let r = d.create_network(req).await.map_err(net_error);
        if let Ok(net) = &r {
            meta.created = crate::api::now_rfc3339();
            self.meta_lock().insert(net.id.clone(), meta);
        }
        self.saved(&d).await;
        r
    }

    /// Swarm's gateway bridge (`docker_gwbridge`): the local network through which a task
    /// on overlay networks reaches the world and its host-mode published ports are
    /// reached, with inter-container communication off, so tasks of different overlays
    /// (and plain containers) cannot meet on it, as in Swarm. Made on first need from the
    /// local pool; one the user made beforehand (Docker's way to pick its subnet) is used
    /// as it is. Answers its name. Errors: the create's (pool exhausted: 400/500).
    pub async fn ensure_gateway_bridge(&self) -> Result<String, ServiceError> {
        if self.find_gateway_bridge().await {
            return Ok(GATEWAY_BRIDGE_NAME.to_string());
        }
        let req = NetworkRequest {
            id: random_hex64(),
            name: GATEWAY_BRIDGE_NAME.to_string(),
            subnet: None,
            gateway: None,
            internal: false,
            mtu: None,
            icc: false,
        };
        let meta = NetworkMeta {
            created: String::new(),
            // dockerd's options for it, but its device name (berth names every bridge
            // per instance).
            options: [
                ("com.docker.network.bridge.enable_icc", "false"),
                ("com.docker.network.bridge.enable_ip_masquerade", "true"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            labels: BTreeMap::new(),
            ipam_driver: "default".into(),
            ipam_options: None,
            attachable: false,
        };
        match self.create(req, meta).await {
            Ok(_) => Ok(GATEWAY_BRIDGE_NAME.to_string()),
            // Another task made it meanwhile.
            Err(_) if self.find_gateway_bridge().await => Ok(GATEWAY_BRIDGE_NAME.to_string()),
            Err(e) => Err(e),
        }
    }

    async fn find_gateway_bridge(&self) -> bool {
        self.inner
            .driver
            .lock()
            .await
            .state()
            .find_network(GATEWAY_BRIDGE_NAME)
            .is_ok()
    }

    fn meta_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NetworkMeta>> {
        self.inner.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Create-time metadata of every network, by ID.
    pub fn meta(&self) -> BTreeMap<String, NetworkMeta> {
        self.meta_lock().clone()
    }

    pub async fn remove(&self, id_or_name: &str) -> Result<Network, ServiceError> {
        let mut d = self.inner.driver.lock().await;
        let net = d
            .state()
            .find_network(id_or_name)
            .map_err(net_error)?
            .clone();
        if net.is_default {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "{} is a pre-defined network and cannot be removed",
                    net.name
                ),
            });
        }
        let r = d.remove_network(&net.id).await.map_err(net_error);
        self.saved(&d).await;
        r.map(|()| net)
    }

    /// Where container namespace files live.
    pub fn netns_dir(&self) -> &Path {
        &self.inner.netns_dir
    }

    /// The netns file of a container.
    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.inner.netns_dir.join(container_id)
    }

    fn files(&self, container_id: &str) -> (PathBuf, PathBuf) {
        let dir = self.inner.files_dir.join(container_id);
        (dir.join("hosts"), dir.join("resolv.conf"))
    }

    /// Writes the container's `/etc/hosts` and `/etc/resolv.conf`.
    fn write_files(
        &self,
        container_id: &str,
        hostname: &str,
        domainname: &str,
        endpoints: &[(Network, Endpoint)],
        host_mode: bool,
        names: &NameFiles,
    ) -> Result<(PathBuf, PathBuf), ServiceError> {
        let own: Vec<_> = endpoints.iter().map(|(_, e)| e.address).collect();
        // The DNS server of the first user-defined network with a way out, else of the
        // first internal one (it answers the network's names; dockerd's embedded DNS serves
        // internal networks too).
        let user = || endpoints.iter().filter(|(n, _)| !n.is_default);
        let embedded = user()
            .find(|(n, _)| !n.internal)
            .or_else(|| user().next())
            .map(|(n, _)| n.pool.gateway);
        self.write_name_files(
            container_id,
            hostname,
            domainname,
            &own,
            embedded,
            host_mode,
            names,
        )
    }

    /// Writes the container's `/etc/hosts` (its `own` addresses) and `/etc/resolv.conf`
    /// (pointing at the embedded DNS on `embedded`, when given).
    #[allow(clippy::too_many_arguments)]
    fn write_name_files(
        &self,
        container_id: &str,
        hostname: &str,
        domainname: &str,
        own: &[std::net::Ipv4Addr],
        embedded: Option<std::net::Ipv4Addr>,
        host_mode: bool,
        names: &NameFiles,
    ) -> Result<(PathBuf, PathBuf), ServiceError> {
        use std::fmt::Write as _;
        let (hosts, resolv) = self.files(container_id);
        let dir = hosts.parent().expect("files have a parent");
        std::fs::create_dir_all(dir).map_err(|e| ServiceError::io("create", dir, e))?;
        // As dockerd: the host's files in the host's namespace (`--add-host` entries
        // appended, `--dns*` rendered over the host's resolv.conf); otherwise Docker's
        // boilerplate, the extra hosts, then the container's own addresses.
        let hosts_text = if host_mode {
            let mut t = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            for (name, ip) in &names.extra_hosts {
                let _ = writeln!(t, "{ip}\t{name}");
            }
            t
        } else {
            render_hosts(hostname, Some(domainname), own, &names.extra_hosts)
        };
        let resolv_text = if host_mode && !names.resolv_overridden() {
            self.inner.host_resolv.clone()
        } else {
            render_resolv_conf(
                &self.inner.host_resolv,
                &ResolvConfOptions {
                    embedded_dns: embedded,
                    ..names.resolv.clone()
                },
            )
        };
        std::fs::write(&hosts, hosts_text).map_err(|e| ServiceError::io("write", &hosts, e))?;
        std::fs::write(&resolv, resolv_text).map_err(|e| ServiceError::io("write", &resolv, e))?;
        Ok((hosts, resolv))
    }

    /// Files for a container in the host's namespace.
    pub fn host_mode_files(
        &self,
        container_id: &str,
        hostname: &str,
        names: &NameFiles,
    ) -> Result<(PathBuf, PathBuf), ServiceError> {
        self.write_files(container_id, hostname, "", &[], true, names)
    }

    /// Files for a container with no network (`--network none`): dockerd writes them too,
    /// with no address of the container's own.
    pub fn no_network_files(
        &self,
        container_id: &str,
        hostname: &str,
        names: &NameFiles,
    ) -> Result<(PathBuf, PathBuf), ServiceError> {
        self.write_files(container_id, hostname, "", &[], false, names)
    }

    /// The default bridge's gateway: what `--add-host name:host-gateway` points to.
    pub fn host_gateway_blocking(&self) -> Result<IpAddr, ServiceError> {
        self.inner.handle.block_on(async {
            let d = self.inner.driver.lock().await;
            d.state()
                .find_network(berth_overlay_net::state::DEFAULT_NETWORK_NAME)
                .map(|n| IpAddr::V4(n.pool.gateway))
                .map_err(net_error)
        })
    }

    /// Gives a new container its namespace and joins it to its network (blocking; call
    /// from a blocking thread).
    pub fn attach_blocking(&self, req: AttachRequest<'_>) -> Result<Attachment, ServiceError> {
        let AttachRequest {
            container_id,
            container_name,
            hostname,
            domainname,
            network,
            aliases,
            ports,
            names,
        } = req;
        let netns = self.netns_path(container_id);
        let _ = remove_netns_file(&netns);
        create_netns_file(&netns).map_err(net_error)?;
        if let Some((plane, net)) = self.overlay_network_blocking(network) {
            let att = self.inner.handle.block_on(plane.attach(
                container_id,
                container_name,
                &net,
                aliases,
                &netns,
                "eth0",
                true,
            ));
            let att = match att {
                Ok(a) => a,
                Err(e) => {
                    let _ = remove_netns_file(&netns);
                    return Err(e);
                }
            };
            // The network's embedded DNS server (internal networks have one too).
            let embedded = Some(net.gateway);
            return match self.write_name_files(
                container_id,
                hostname,
                domainname,
                &[att.ip],
                embedded,
                false,
                names,
            ) {
                Ok((hosts, resolv_conf)) => Ok(Attachment {
                    netns,
                    endpoints: Vec::new(),
                    overlay: vec![att],
                    hosts,
                    resolv_conf,
                }),
                Err(e) => {
                    self.detach_blocking(container_id);
                    Err(e)
                }
            };
        }
        let result = self.inner.handle.block_on(self.join(EndpointRequest {
            endpoint_id: random_hex64(),
            container_id: container_id.to_string(),
            container_name: container_name.to_string(),
            aliases,
            network: network.to_string(),
            netns: netns.clone(),
            address: None,
            ports,
            dns_servers: names.resolv.nameservers.clone(),
            taken_ifnames: Vec::new(),
        }));
        let (net, ep) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = remove_netns_file(&netns);
                return Err(e);
            }
        };
        let endpoints = vec![(net, ep)];
        match self.write_files(container_id, hostname, domainname, &endpoints, false, names) {
            Ok((hosts, resolv_conf)) => Ok(Attachment {
                netns,
                endpoints,
                overlay: Vec::new(),
                hosts,
                resolv_conf,
            }),
            Err(e) => {
                self.detach_blocking(container_id);
                Err(e)
            }
        }
    }

    /// Connects the namespace of `req` to its network (a name, id or prefix, resolved here)
    /// and persists the state.
    async fn join(&self, mut req: EndpointRequest) -> Result<(Network, Endpoint), ServiceError> {
        let mut d = self.inner.driver.lock().await;
        let net = d
            .state()
            .find_network(&req.network)
            .map_err(net_error)?
            .clone();
        req.network = net.id.clone();
        let r = d.connect(req).await.map_err(net_error);
        self.saved(&d).await;
        r.map(|ep| (net, ep))
    }

    /// Joins a container that already has its namespace to another network.
    /// `dns_servers`: the container's `--dns` servers (its embedded-DNS upstreams there).
    pub async fn connect(
        &self,
        container_id: &str,
        container_name: &str,
        network: &str,
        aliases: Vec<String>,
        dns_servers: Vec<IpAddr>,
    ) -> Result<(Network, Endpoint), ServiceError> {
        let netns = self.netns_path(container_id);
        if !netns.exists() {
            return Err(ServiceError::conflict(format!(
                "container {container_id} has no network namespace of its own (host or none mode)"
            )));
        }
        // Its overlays' interfaces are not this driver's: it must not reuse their names.
        let taken_ifnames = berth_overlay_net::links::link_names_in(&netns)
            .await
            .map_err(net_error)?;
        self.join(EndpointRequest {
            endpoint_id: random_hex64(),
            container_id: container_id.to_string(),
            container_name: container_name.to_string(),
            aliases,
            network: network.to_string(),
            netns,
            address: None,
            ports: Vec::new(),
            dns_servers,
            taken_ifnames,
        })
        .await
    }

    /// Removes a container's endpoint on one network.
    pub async fn disconnect(&self, container_id: &str, network: &str) -> Result<(), ServiceError> {
        let mut d = self.inner.driver.lock().await;
        let net = d.state().find_network(network).map_err(net_error)?.clone();
        let ep = d
            .state()
            .endpoints
            .values()
            .find(|e| e.container_id == container_id && e.network_id == net.id)
            .map(|e| e.id.clone())
            .ok_or_else(|| {
                ServiceError::not_found(format!(
                    "container {container_id} is not connected to network {}",
                    net.name
                ))
            })?;
        let r = d.disconnect(&ep).await.map_err(net_error);
        self.saved(&d).await;
        r
    }

    /// Removes every endpoint of a container and its namespace (blocking). Keeps going on
    /// errors and logs each.
    pub fn detach_blocking(&self, container_id: &str) {
        self.inner.handle.block_on(async {
            let mut d = self.inner.driver.lock().await;
            let eps: Vec<String> = d
                .state()
                .endpoints
                .values()
                .filter(|e| e.container_id == container_id)
                .map(|e| e.id.clone())
                .collect();
            for ep in eps {
                if let Err(e) = d.disconnect(&ep).await {
                    tracing::warn!(container = %container_id, endpoint = %ep, error = %e, "disconnect");
                }
            }
            self.saved(&d).await;
            drop(d);
            if let Some(plane) = self.inner.overlay.get() {
                let netns = self.netns_path(container_id);
                plane.detach(container_id, None, &netns).await;
                // A task's endpoints (owned by its task, not the container).
                plane.detach_all(&netns).await;
            }
        });
        let netns = self.netns_path(container_id);
        if netns.exists() {
            if let Err(e) = remove_netns_file(&netns) {
                tracing::warn!(container = %container_id, error = %e, "remove netns");
            }
        }
        let dir = self.inner.files_dir.join(container_id);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Ids of every container this service holds something for: a namespace file under
    /// `<exec-root>/netns`, name files under `<data-root>/netfiles`, or an endpoint in the
    /// driver's state (blocking). Sorted, without duplicates.
    pub fn container_ids_with_state(&self) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        for dir in [&self.inner.netns_dir, &self.inner.files_dir] {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for ent in rd.flatten() {
                    ids.insert(ent.file_name().to_string_lossy().into_owned());
                }
            }
        }
        self.inner.handle.block_on(async {
            let d = self.inner.driver.lock().await;
            for e in d.state().endpoints.values() {
                if !e.container_id.is_empty() {
                    ids.insert(e.container_id.clone());
                }
            }
        });
        ids.into_iter().collect()
    }

    /// Points the container's `/etc/resolv.conf` at the embedded DNS `server` (an overlay's
    /// gateway): its `nameserver` lines become that one; `search` and `options` stay. Used
    /// for a task on an overlay, whose namespace was made on the node-local bridge.
    pub fn point_resolv_at(
        &self,
        container_id: &str,
        server: std::net::Ipv4Addr,
    ) -> Result<(), ServiceError> {
        let (_, resolv) = self.files(container_id);
        let old =
            std::fs::read_to_string(&resolv).map_err(|e| ServiceError::io("read", &resolv, e))?;
        // The first time, keep what it was (the host's resolvers of a container that
        // started on the default bridge), for `restore_resolv`.
        let saved = resolv.with_extension("conf.before");
        if !saved.exists() {
            std::fs::write(&saved, &old).map_err(|e| ServiceError::io("write", &saved, e))?;
        }
        std::fs::write(&resolv, resolv_with_nameserver(&old, server))
            .map_err(|e| ServiceError::io("write", &resolv, e))
    }

    /// After `docker network disconnect` took the container off its last network with
    /// embedded DNS: its resolv.conf as it was before [`NetworkService::point_resolv_at`]
    /// first changed it (the host's resolvers, its `--dns`), so it keeps resolving the
    /// world. Nothing to do when it never was changed.
    pub fn restore_resolv(&self, container_id: &str) -> Result<(), ServiceError> {
        let (_, resolv) = self.files(container_id);
        let saved = resolv.with_extension("conf.before");
        match std::fs::read_to_string(&saved) {
            Ok(text) => {
                std::fs::write(&resolv, text).map_err(|e| ServiceError::io("write", &resolv, e))?;
                std::fs::remove_file(&saved).map_err(|e| ServiceError::io("remove", &saved, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServiceError::io("read", &saved, e)),
        }
    }

    /// Hands over the overlay data plane (once, at start-up).
    pub fn set_overlay(&self, plane: OverlayPlane) {
        let _ = self.inner.overlay.set(plane);
    }

    /// The overlay data plane, when set.
    pub fn overlay(&self) -> Option<&OverlayPlane> {
        self.inner.overlay.get()
    }

    /// `network` as an overlay of the cluster, when it is not a local network.
    fn overlay_network_blocking(
        &self,
        network: &str,
    ) -> Option<(OverlayPlane, berth_consensus::state::Network)> {
        let plane = self.inner.overlay.get()?;
        let local = self.inner.handle.block_on(async {
            self.inner
                .driver
                .lock()
                .await
                .state()
                .find_network(network)
                .is_ok()
        });
        if local {
            return None;
        }
        plane.network(network).map(|n| (plane.clone(), n))
    }

    /// Joins a running or created container (its namespace exists) to an attachable
    /// overlay, as `eth<n>` after its other interfaces.
    pub async fn connect_overlay(
        &self,
        container_id: &str,
        container_name: &str,
        network: &berth_consensus::state::Network,
        aliases: Vec<String>,
    ) -> Result<OverlayAttachment, ServiceError> {
        let plane = self
            .inner
            .overlay
            .get()
            .ok_or_else(|| ServiceError::unavailable("this node is not part of a swarm"))?;
        let netns = self.netns_path(container_id);
        if !netns.exists() {
            return Err(ServiceError::conflict(format!(
                "container {container_id} has no network namespace of its own (host or none mode)"
            )));
        }
        let existing = plane.endpoints_of(container_id);
        if existing.iter().any(|a| a.network.id == network.id) {
            return Err(ServiceError::Forbidden {
                message: format!(
                    "endpoint with name {container_name} already exists in network {}",
                    network.spec.name
                ),
            });
        }
        // The first `ethN` free in its namespace (bridges and overlays number theirs
        // independently; a disconnect leaves a gap).
        let taken = berth_overlay_net::links::link_names_in(&netns)
            .await
            .map_err(net_error)?;
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !taken.contains(n))
            .expect("an unused ethN exists");
        plane
            .attach(
                container_id,
                container_name,
                network,
                aliases,
                &netns,
                &ifname,
                false,
            )
            .await
    }

    /// Removes a container's endpoint on an overlay.
    pub async fn disconnect_overlay(&self, container_id: &str, network_id: &str) {
        if let Some(plane) = self.inner.overlay.get() {
            plane
                .detach(
                    container_id,
                    Some(network_id),
                    &self.netns_path(container_id),
                )
                .await;
        }
    }

    /// When no container is left: removes every berth link and the nftables table.
    pub async fn teardown_if_idle(&self) {
        let mut d = self.inner.driver.lock().await;
        if !d.state().endpoints.is_empty() {
            return;
        }
        self.inner
            .dns
            .lock()
            .await
            .sync(&NetState::default(), &[])
            .await;
        if let Err(e) = d.teardown_host().await {
            tracing::warn!(error = %e, "network teardown");
        }
    }
}

/// Parses `--subnet` / `--gateway` for `docker network create`.
/// The options dockerd reports for its default `bridge` network (set by the daemon, not
/// by a client).
pub fn default_bridge_options(net: &Network) -> BTreeMap<String, String> {
    let mtu = net.mtu.unwrap_or(1500).to_string();
    [
        ("com.docker.network.bridge.default_bridge", "true"),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
        ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
        ("com.docker.network.bridge.name", net.bridge.as_str()),
        ("com.docker.network.driver.mtu", mtu.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn parse_subnet(s: &str) -> Result<Ipv4Net, ServiceError> {
    s.parse::<Ipv4Net>()
        .map_err(|_| ServiceError::invalid(format!("invalid subnet {s:?}: IPv4 CIDR expected")))
}

/// Parses an IPv4 gateway address.
pub fn parse_gateway(s: &str) -> Result<std::net::Ipv4Addr, ServiceError> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(a),
        _ => Err(ServiceError::invalid(format!(
            "invalid gateway {s:?}: IPv4 address expected"
        ))),
    }
}

/// `resolv.conf` text `old` with its `nameserver` lines replaced by one for `server`
/// (placed where the first one was, else after `search`), `search`/`options` kept.
fn resolv_with_nameserver(old: &str, server: std::net::Ipv4Addr) -> String {
    let mut out = String::new();
    let mut placed = false;
    let mut options = false;
    let line_for = format!("nameserver {server}\n");
    for line in old.lines() {
        let t = line.trim_start();
        if t.starts_with("nameserver") && t[10..].starts_with([' ', '\t']) {
            if !placed {
                out.push_str(&line_for);
                placed = true;
            }
            continue;
        }
        if t.starts_with("options") {
            if !placed {
                out.push_str(&line_for);
                placed = true;
            }
            options = true;
            // The embedded DNS's `ndots:0` (libnetwork's rule) unless one is given.
            out.push_str(line);
            if !t.split_whitespace().any(|o| o.starts_with("ndots:")) {
                out.push_str(" ndots:0");
            }
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str(&line_for);
    }
    if !options {
        out.push_str("options ndots:0\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gets_one_nameserver_and_keeps_search_and_options() {
        let ip = "10.0.1.1".parse().unwrap();
        assert_eq!(
            resolv_with_nameserver(
                "search a b\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:2\n",
                ip
            ),
            "search a b\nnameserver 10.0.1.1\noptions ndots:2\n"
        );
        assert_eq!(
            resolv_with_nameserver("options ndots:0\n", ip),
            "nameserver 10.0.1.1\noptions ndots:0\n"
        );
        assert_eq!(
            resolv_with_nameserver("", ip),
            "nameserver 10.0.1.1\noptions ndots:0\n"
        );
        assert_eq!(
            resolv_with_nameserver("search s\nnameserver 1.1.1.1\noptions edns0\n", ip),
            "search s\nnameserver 10.0.1.1\noptions edns0 ndots:0\n"
        );
    }
}
