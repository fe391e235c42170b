//! The overlay executor: reads this instance's links, FDB and neighbour entries over
//! rtnetlink, applies [`OverlayOp`]s, plugs container namespaces in, and applies nftables
//! transactions (`nft -f -`, in the host namespace or, through `nsenter --net=<path>`, in a
//! container's).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};
use tokio::io::AsyncWriteExt;

use super::{
    delete_host_table_script, plan_overlay, render_host_table, validate_desired, FdbEntry,
    HostPortRule, IngressRule, NeighEntry, ObservedOverlayLink, OverlayDesired, OverlayNames,
    OverlayObserved, OverlayOp, OverlaySpec, VXLAN_PORT,
};
use crate::error::{NetError, Result};
use crate::links::rtnetlink_exec::{errno, handle_in_netns};

/// Settings fixed at construction.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// Prefix of every device name and of the nftables tables of this berthd instance
    /// (1-4 characters of `[a-z0-9]`); two berthd on one host need different prefixes.
    pub prefix: String,
    /// VXLAN UDP destination port (and listening port), [`VXLAN_PORT`] by default.
    pub vxlan_port: u16,
    /// The `nft` binary.
    pub nft_binary: PathBuf,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            prefix: "bo".into(),
            vxlan_port: VXLAN_PORT,
            nft_binary: PathBuf::from("nft"),
        }
    }
}

/// Applies an nft script as one transaction, in the calling thread's namespace or in the
/// namespace file `netns` (through `nsenter --net=`).
pub(crate) async fn nft_apply(binary: &Path, netns: Option<&Path>, script: &str) -> Result<()> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg(binary);
            c
        }
        None => tokio::process::Command::new(binary),
    };
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| NetError::NftSpawn { source })?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(script.as_bytes())
            .await
            .map_err(|source| NetError::NftSpawn { source })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| NetError::NftSpawn { source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::NftFailed {
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn nl(op: impl std::fmt::Debug) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = format!("{op:?}");
    move |source| NetError::OverlayNetlink { op, source }
}

fn dump_err(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetError {
    move |source| NetError::NetlinkDump { what, source }
}

/// The overlay data plane of one node. Acts in the network namespace of the thread that
/// created it (the host's, for berthd). Keep one behind a `tokio::sync::Mutex`.
pub struct OverlayDriver {
    handle: Handle,
    names: OverlayNames,
    config: OverlayConfig,
    desired: OverlayDesired,
    ingress: Vec<IngressRule>,
    host_ports: Vec<HostPortRule>,
    applied_table: Option<String>,
}

impl std::fmt::Debug for OverlayDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayDriver")
            .field("config", &self.config)
            .field("networks", &self.desired.networks.len())
            .finish()
    }
}

impl OverlayDriver {
    /// Opens a netlink socket in the current namespace. Must run inside a tokio runtime.
    /// Errors: a bad prefix ([`NetError::InvalidOverlayConfig`]), no netlink socket.
    pub fn new(config: OverlayConfig) -> Result<Self> {
        let names = OverlayNames::new(&config.prefix)?;
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetError::NetlinkSocket { source })?;
        tokio::spawn(conn);
        Ok(OverlayDriver {
            handle,
            names,
            config,
            desired: OverlayDesired::default(),
            ingress: Vec::new(),
            host_ports: Vec::new(),
            applied_table: None,
        })
    }

    /// The naming scheme of this instance.
    pub fn names(&self) -> &OverlayNames {
        &self.names
    }

    pub(crate) fn nft_binary(&self) -> &Path {
        &self.config.nft_binary
    }

    /// The desired model last reconciled.
    pub fn desired(&self) -> &OverlayDesired {
        &self.desired
    }

    /// Brings the kernel to `desired`: links, addresses, FDB and neighbour entries (the
    /// plan from [`plan_overlay`]), then the host table if it changed. Stops at the first
    /// failing step (the next reconcile starts from what is there).
    pub async fn reconcile(&mut self, desired: &OverlayDesired) -> Result<()> {
        validate_desired(desired)?;
        let observed = self.observe().await?;
        let plan = plan_overlay(desired, &observed);
        tracing::debug!(steps = plan.len(), "overlay reconcile");
        for op in &plan {
            self.apply(op).await?;
        }
        for n in desired.networks.iter().filter(|n| n.host_address.is_some()) {
            // The routing mesh's local clients on 127.0.0.1: their DNATed packets leave by
            // this bridge (masqueraded by the host table), which the kernel refuses for a
            // loopback source unless `route_localnet` is on, here only (as on berth's
            // bridges, see `links`). Written in the calling thread's namespace.
            let key = format!("net/ipv4/conf/{}/route_localnet", self.names.bridge(n.vni));
            std::fs::write(format!("/proc/sys/{key}"), "1")
                .map_err(|source| NetError::Sysctl { key, source })?;
        }
        if desired
            .networks
            .iter()
            .any(|n| n.bridge_address().is_some())
        {
            // Routing between the underlay and the overlays (gateway, routing mesh); Docker
            // sets it too. Written in the namespace of the calling thread.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| {
                NetError::Sysctl {
                    key: "net/ipv4/ip_forward".into(),
                    source,
                }
            })?;
        }
        self.desired = desired.clone();
        self.sync_table(false).await
    }

    /// Sets the routing mesh's rules and the `mode=host` published ports of this node, and
    /// applies the host table (one transaction).
    pub async fn set_published(
        &mut self,
        ingress: Vec<IngressRule>,
        host_ports: Vec<HostPortRule>,
    ) -> Result<()> {
        self.ingress = ingress;
        self.host_ports = host_ports;
        self.sync_table(false).await
    }

    async fn sync_table(&mut self, force: bool) -> Result<()> {
        let script = render_host_table(
            &self.desired,
            &self.names,
            self.config.vxlan_port,
            &self.ingress,
            &self.host_ports,
        );
        if !force && self.applied_table.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        self.applied_table = None;
        nft_apply(&self.config.nft_binary, None, &script).await?;
        self.applied_table = Some(script);
        Ok(())
    }

    fn spec(&self, network_id: &str) -> Result<&OverlaySpec> {
        self.desired
            .networks
            .iter()
            .find(|n| n.id == network_id)
            .ok_or_else(|| NetError::OverlayNetworkNotHere {
                network: network_id.to_string(),
            })
    }

    /// Plugs a container netns (path) into the local bridge of `network_id`: a veth whose
    /// container end is `ifname` with `mac` and `ip/prefix`, `lo` up, and a default route via
    /// `gateway` only if given. The network must have been reconciled here. A previous
    /// attachment of the same namespace to the same network is replaced (so a retried start
    /// works). On failure nothing is left behind.
    #[allow(clippy::too_many_arguments)]
    pub async fn attach(
        &mut self,
        network_id: &str,
        netns: &Path,
        ifname: &str,
        ip: Ipv4Addr,
        prefix: u8,
        mac: [u8; 6],
        gateway: Option<Ipv4Addr>,
    ) -> Result<()> {
        let spec = self.spec(network_id)?;
        let mtu = spec.effective_mtu();
        let bridge = self.names.bridge(spec.vni);
        let host = self.names.veth(network_id, netns);
        self.delete_link(&host).await?;
        let h = self.handle.clone();
        let file = File::open(netns).map_err(|source| NetError::Netns {
            path: netns.to_path_buf(),
            source,
        })?;
        let peer = LinkUnspec::new_with_name(ifname)
            .address(mac.to_vec())
            .mtu(mtu)
            .setns_by_fd(file.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.clone())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let added = h
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("create veth {host} -> {ifname}")));
        drop(file);
        added?;
        let rest = async {
            let index = self.index(&host).await?;
            self.set_link(
                index,
                LinkUnspec::new_with_index(index).alias(self.names.alias()),
                "alias",
            )
            .await?;
            let master = self.index(&bridge).await?;
            self.set_link(
                index,
                LinkUnspec::new_with_index(index).controller(master),
                "master",
            )
            .await?;
            self.set_link(index, LinkUnspec::new_with_index(index).up(), "up")
                .await?;
            let ch = handle_in_netns(netns).await?;
            let inner = link_index(&ch, ifname).await?;
            ch.address()
                .add(inner, IpAddr::V4(ip), prefix)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("address {ip}/{prefix} on {ifname}")))?;
            ch.link()
                .set(LinkUnspec::new_with_index(inner).up().build())
                .execute()
                .await
                .map_err(nl(format!("up {ifname}")))?;
            let lo = link_index(&ch, "lo").await?;
            ch.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .map_err(nl("up lo"))?;
            if let Some(gw) = gateway {
                ch.route()
                    .add(RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build())
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(format!("default via {gw}")))?;
            }
            Ok::<(), NetError>(())
        }
        .await;
        if let Err(e) = rest {
            if let Err(undo) = self.delete_link(&host).await {
                tracing::warn!(error = %undo, link = %host, "overlay attach rollback");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Unplugs the container namespace `netns` from `network_id` (deletes the veth pair;
    /// absent counts as done).
    pub async fn detach(&mut self, network_id: &str, netns: &Path) -> Result<()> {
        let host = self.names.veth(network_id, netns);
        self.delete_link(&host).await
    }

    /// Removes every link of this instance and its host table (leave swarm, daemon stop).
    /// Keeps going and reports every failure in [`NetError::Teardown`].
    pub async fn teardown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        match self.observe_links().await {
            Ok(links) => {
                // Veths first, then VXLAN devices, then bridges.
                let rank = |l: &ObservedOverlayLink| match l.kind.as_deref() {
                    Some("veth") => 0,
                    Some("vxlan") => 1,
                    _ => 2,
                };
                let mut links = links;
                links.sort_by_key(rank);
                for l in links {
                    if let Err(e) = self.delete_link(&l.name).await {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if let Err(e) = nft_apply(
            &self.config.nft_binary,
            None,
            &delete_host_table_script(&self.names),
        )
        .await
        {
            errors.push(e);
        }
        self.desired = OverlayDesired::default();
        self.ingress.clear();
        self.host_ports.clear();
        self.applied_table = None;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetError::Teardown { errors })
        }
    }

    async fn index(&self, name: &str) -> Result<u32> {
        link_index(&self.handle, name).await
    }

    async fn set_link(
        &self,
        index: u32,
        builder: LinkMessageBuilder<LinkUnspec>,
        what: &str,
    ) -> Result<()> {
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(nl(format!("set {what} on link #{index}")))
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(link) = find_link(&self.handle, name).await? else {
            return Ok(());
        };
        match self.handle.link().del(link.header.index).execute().await {
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            other => other.map_err(nl(format!("delete {name}"))),
        }
    }

    /// Applies one step.
    pub async fn apply(&self, op: &OverlayOp) -> Result<()> {
        let h = &self.handle;
        match op {
            OverlayOp::DeleteLink { name } => self.delete_link(name).await,
            OverlayOp::CreateBridge { name, mtu } => {
                match h
                    .link()
                    .add(LinkBridge::new(name).mtu(*mtu).build())
                    .execute()
                    .await
                {
                    Err(e) if errno(&e) != Some(libc::EEXIST) => return Err(nl(op)(e)),
                    _ => {}
                }
                let i = self.index(name).await?;
                self.set_link(
                    i,
                    LinkUnspec::new_with_index(i).alias(self.names.alias()),
                    "alias",
                )
                .await
            }
            OverlayOp::CreateVxlan {
                name,
                vni,
                port,
                mtu,
            } => {
                let msg = LinkVxlan::new(name, *vni)
                    .port(*port)
                    .learning(false)
                    .proxy(true)
                    .mtu(*mtu)
                    .build();
                h.link().add(msg).execute().await.map_err(nl(op))?;
                let i = self.index(name).await?;
                self.set_link(
                    i,
                    LinkUnspec::new_with_index(i).alias(self.names.alias()),
                    "alias",
                )
                .await
            }
            OverlayOp::SetMtu { link, mtu } => {
                let i = self.index(link).await?;
                self.set_link(i, LinkUnspec::new_with_index(i).mtu(*mtu), "mtu")
                    .await
            }
            OverlayOp::SetMac { link, mac } => {
                let i = self.index(link).await?;
                self.set_link(
                    i,
                    LinkUnspec::new_with_index(i).address(mac.to_vec()),
                    "mac",
                )
                .await
            }
            OverlayOp::SetMaster { link, bridge } => {
                let i = self.index(link).await?;
                let m = self.index(bridge).await?;
                self.set_link(i, LinkUnspec::new_with_index(i).controller(m), "master")
                    .await?;
                if self.names.is_vxlan(link) {
                    // The bridge must not learn remote MACs on the VXLAN port either: a
                    // learned entry would outlive the endpoint (until aging, 300 s) and
                    // point at a node that may have gone. Remote MACs are known only from
                    // the static FDB entries on the VXLAN device.
                    h.link()
                        .set_port(LinkBridgePort::new(i).learning(false).build())
                        .execute()
                        .await
                        .map_err(nl(format!("bridge port learning off on {link}")))?;
                }
                Ok(())
            }
            OverlayOp::SetUp { link } => {
                let i = self.index(link).await?;
                self.set_link(i, LinkUnspec::new_with_index(i).up(), "up")
                    .await
            }
            OverlayOp::AddAddress { link, ip, prefix } => {
                let i = self.index(link).await?;
                h.address()
                    .add(i, IpAddr::V4(*ip), *prefix)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(op))
            }
            OverlayOp::DelAddress { link, ip, prefix } => {
                let i = self.index(link).await?;
                let msgs: Vec<AddressMessage> = h
                    .address()
                    .get()
                    .set_link_index_filter(i)
                    .execute()
                    .try_collect()
                    .await
                    .map_err(dump_err("addresses"))?;
                for m in msgs {
                    if address_of(&m) == Some(*ip) && m.header.prefix_len == *prefix {
                        h.address().del(m).execute().await.map_err(nl(op))?;
                    }
                }
                Ok(())
            }
            OverlayOp::AddFdb { vxlan, entry } => {
                let i = self.index(vxlan).await?;
                h.neighbours()
                    .add_bridge(i, &entry.mac)
                    .flags(NeighbourFlags::Own)
                    .destination(IpAddr::V4(entry.dst))
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(op))
            }
            OverlayOp::DelFdb { vxlan, entry } => {
                let i = self.index(vxlan).await?;
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = i;
                m.header.flags = NeighbourFlags::Own;
                m.header.state = NeighbourState::Permanent;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
                m.attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                        entry.dst,
                    )));
                match h.neighbours().del(m).execute().await {
                    Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
                    other => other.map_err(nl(op)),
                }
            }
            OverlayOp::AddNeigh { vxlan, entry } => {
                let i = self.index(vxlan).await?;
                h.neighbours()
                    .add(i, IpAddr::V4(entry.ip))
                    .link_layer_address(&entry.mac)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(op))
            }
            OverlayOp::DelNeigh { vxlan, entry } => {
                let i = self.index(vxlan).await?;
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Inet;
                m.header.ifindex = i;
                m.attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                        entry.ip,
                    )));
                match h.neighbours().del(m).execute().await {
                    Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
                    other => other.map_err(nl(op)),
                }
            }
        }
    }

    async fn observe_links(&self) -> Result<Vec<ObservedOverlayLink>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(dump_err("links"))?;
        let names: HashMap<u32, String> = msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some((m.header.index, n.clone())),
                    _ => None,
                })
            })
            .collect();
        let alias = self.names.alias();
        let mut out = Vec::new();
        for m in &msgs {
            let mine = m
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfAlias(x) if *x == alias));
            if !mine {
                continue;
            }
            let mut l = ObservedOverlayLink {
                name: names.get(&m.header.index).cloned().unwrap_or_default(),
                up: m.header.flags.contains(LinkFlags::Up),
                ..Default::default()
            };
            for a in &m.attributes {
                match a {
                    LinkAttribute::Mtu(v) => l.mtu = Some(*v),
                    LinkAttribute::Controller(i) => l.master = names.get(i).cloned(),
                    LinkAttribute::Address(mac) if mac.len() == 6 => {
                        let mut b = [0u8; 6];
                        b.copy_from_slice(mac);
                        l.mac = Some(b);
                    }
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            match i {
                                LinkInfo::Kind(k) => {
                                    l.kind = Some(match k {
                                        InfoKind::Bridge => "bridge".into(),
                                        InfoKind::Veth => "veth".into(),
                                        InfoKind::Vxlan => "vxlan".into(),
                                        other => format!("{other:?}").to_lowercase(),
                                    })
                                }
                                LinkInfo::Data(InfoData::Vxlan(vx)) => {
                                    for v in vx {
                                        match v {
                                            InfoVxlan::Id(x) => l.vni = Some(*x),
                                            InfoVxlan::Port(p) => l.port = Some(*p),
                                            InfoVxlan::Learning(b) => l.learning = Some(*b),
                                            InfoVxlan::Proxy(b) => l.proxy = Some(*b),
                                            _ => {}
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            out.push((m.header.index, l));
        }
        // Addresses of bridges.
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(dump_err("addresses"))?;
        for a in &addrs {
            if let (Some(ip), Some((_, l))) = (
                address_of(a),
                out.iter_mut().find(|(i, _)| *i == a.header.index),
            ) {
                l.addresses.push((ip, a.header.prefix_len));
            }
        }
        Ok(out.into_iter().map(|(_, l)| l).collect())
    }

    /// Reads this instance's links with their addresses, and the static FDB and permanent
    /// neighbour entries of its VXLAN devices.
    pub async fn observe(&self) -> Result<OverlayObserved> {
        let links = self.observe_links().await?;
        let mut vxlans: HashMap<u32, String> = HashMap::new();
        for l in links.iter().filter(|l| l.kind.as_deref() == Some("vxlan")) {
            if let Some(i) = find_link(&self.handle, &l.name)
                .await?
                .map(|m| m.header.index)
            {
                vxlans.insert(i, l.name.clone());
            }
        }
        let mut fdb: BTreeMap<String, BTreeSet<FdbEntry>> = BTreeMap::new();
        let mut neighbours: BTreeMap<String, BTreeSet<NeighEntry>> = BTreeMap::new();
        if !vxlans.is_empty() {
            let msgs: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Bridge)
                .execute()
                .try_collect()
                .await
                .map_err(dump_err("fdb"))?;
            for m in &msgs {
                let Some(dev) = vxlans.get(&m.header.ifindex) else {
                    continue;
                };
                if let (Some(mac), Some(IpAddr::V4(dst))) = (lladdr(m), neigh_dst(m)) {
                    if !dst.is_unspecified() {
                        fdb.entry(dev.clone())
                            .or_default()
                            .insert(FdbEntry { mac, dst });
                    }
                }
            }
            let msgs: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
                .try_collect()
                .await
                .map_err(dump_err("neighbours"))?;
            for m in &msgs {
                let Some(dev) = vxlans.get(&m.header.ifindex) else {
                    continue;
                };
                if let (Some(mac), Some(IpAddr::V4(ip))) = (lladdr(m), neigh_dst(m)) {
                    neighbours
                        .entry(dev.clone())
                        .or_default()
                        .insert(NeighEntry { ip, mac });
                }
            }
        }
        Ok(OverlayObserved {
            names: self.names.clone(),
            vxlan_port: self.config.vxlan_port,
            links,
            fdb,
            neighbours,
        })
    }
}

fn address_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    let pick = |local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) if local => Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) if !local => Some(*ip),
            _ => None,
        })
    };
    pick(true).or_else(|| pick(false))
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) if v.len() == 6 => {
            let mut b = [0u8; 6];
            b.copy_from_slice(v);
            Some(b)
        }
        _ => None,
    })
}

fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        // AF_BRIDGE entries (FDB) carry the remote's address undecoded.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        _ => None,
    })
}

pub(crate) async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(dump_err("links")(e)),
    }
}

pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<u32> {
    match find_link(handle, name).await? {
        Some(l) => Ok(l.header.index),
        None => Err(NetError::LinkNotFound {
            name: name.to_string(),
        }),
    }
}
