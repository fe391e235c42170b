//! The real [`LinkExecutor`]: rtnetlink for links, addresses and routes; /proc/sys for
//! sysctls.
//!
//! Steps in a container's namespace get a netlink socket opened inside that namespace: a
//! short-lived thread enters the namespace (`setns`), creates the socket (a socket stays
//! bound to the namespace it was created in) and exits, so no runtime thread ever changes
//! namespace. The socket is closed after the step, so berth holds no reference that would
//! keep a dead container's namespace alive.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use nix::sched::CloneFlags;
use std::os::fd::AsRawFd;

use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use super::{LinkExecutor, LinkOp, Netns, ObservedLink, BERTH_ALIAS};
use crate::error::{NetError, Result};
use crate::ipam::Ipv4Net;

/// Kernel routing table id of the `local` table (skipped when listing routes).
const RT_TABLE_LOCAL: u8 = 255;

/// rtnetlink-backed executor, acting in the namespace of the thread that connected it.
#[derive(Clone)]
pub struct RtnetlinkExecutor {
    host: Handle,
}

impl std::fmt::Debug for RtnetlinkExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtnetlinkExecutor").finish_non_exhaustive()
    }
}

impl RtnetlinkExecutor {
    /// Opens a netlink socket in the calling thread's network namespace and spawns its
    /// connection task. Must be called inside a tokio runtime.
    pub fn connect() -> Result<Self> {
        let (conn, host, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| NetError::NetlinkSocket { source })?;
        tokio::spawn(conn);
        Ok(RtnetlinkExecutor { host })
    }

    async fn handle_in(&self, netns: &Netns) -> Result<Handle> {
        match netns {
            Netns::Host => Ok(self.host.clone()),
            Netns::Path(path) => handle_in_netns(path).await,
        }
    }
}

/// The names of the links in the namespace file `path` (a container's `lo`, `eth0`, ...),
/// which every driver plugging interfaces into it must avoid. Errors: the namespace
/// cannot be entered, the dump fails.
pub async fn link_names_in(path: &Path) -> Result<Vec<String>> {
    let msgs = dump_links(&handle_in_netns(path).await?).await?;
    Ok(link_names(&msgs).into_values().collect())
}

/// Every link of the namespace `handle` is in.
async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetError::NetlinkDump {
            what: "links",
            source,
        })
}

/// Link index to name, of the dumped links that carry one.
fn link_names(msgs: &[LinkMessage]) -> std::collections::HashMap<u32, String> {
    msgs.iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((m.header.index, n.clone())),
                _ => None,
            })
        })
        .collect()
}

/// Opens a netlink connection inside the namespace file `path`.
pub(crate) async fn handle_in_netns(path: &Path) -> Result<Handle> {
    let netns_err = |path: &Path, source: std::io::Error| NetError::Netns {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| netns_err(path, e))?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let owned: PathBuf = path.to_path_buf();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let result = (|| {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| netns_err(&owned, std::io::Error::from(e)))?;
                // Registering the socket with the reactor needs the runtime context.
                let _guard = runtime.enter();
                let (conn, handle, _unsolicited) = rtnetlink::new_connection()
                    .map_err(|source| NetError::NetlinkSocket { source })?;
                Ok((conn, handle))
            })();
            // The receiver only disappears if the caller was cancelled; nothing to do then.
            let _ = tx.send(result);
            // This thread's namespace is now the container's; it ends here.
        })
        .map_err(|source| NetError::NetlinkSocket { source })?;
    let (conn, handle) = rx.await.map_err(|_| NetError::NetlinkSocket {
        source: std::io::Error::other("netns helper thread died"),
    })??;
    // The task ends when `handle` (and its clones) are dropped.
    tokio::spawn(conn);
    Ok(handle)
}

pub(crate) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

fn netlink_err(op: &LinkOp) -> impl FnOnce(rtnetlink::Error) -> NetError + '_ {
    move |source| NetError::Netlink {
        op: Box::new(op.clone()),
        source,
    }
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn link_index(handle: &Handle, name: &str, op: &LinkOp) -> Result<u32> {
    match find_link(handle, name).await.map_err(netlink_err(op))? {
        Some(link) => Ok(link.header.index),
        None => Err(NetError::LinkNotFound {
            name: name.to_string(),
        }),
    }
}

async fn set_alias(handle: &Handle, index: u32, op: &LinkOp) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).alias(BERTH_ALIAS).build())
        .execute()
        .await
        .map_err(netlink_err(op))
}

impl LinkExecutor for RtnetlinkExecutor {
    async fn apply(&self, op: &LinkOp) -> Result<()> {
        match op {
            LinkOp::CreateBridge { name, mtu } => {
                let h = &self.host;
                let mut bridge = LinkBridge::new(name);
                if let Some(mtu) = mtu {
                    bridge = bridge.mtu(*mtu);
                }
                match find_link(h, name).await.map_err(netlink_err(op))? {
                    None => match h.link().add(bridge.build()).execute().await {
                        Err(e) if errno(&e) != Some(libc::EEXIST) => {
                            return Err(netlink_err(op)(e))
                        }
                        _ => {}
                    },
                    Some(link) if link_kind(&link).as_deref() != Some("bridge") => {
                        return Err(NetError::LinkNotABridge {
                            name: name.clone(),
                            kind: link_kind(&link),
                        })
                    }
                    Some(_) => {}
                }
                let index = link_index(h, name, op).await?;
                set_alias(h, index, op).await
            }
            LinkOp::CreateVeth {
                host,
                peer,
                peer_netns,
                peer_mac,
                mtu,
            } => {
                let h = &self.host;
                let file = File::open(peer_netns).map_err(|source| NetError::Netns {
                    path: peer_netns.clone(),
                    source,
                })?;
                let mut peer_msg = LinkUnspec::new_with_name(peer)
                    .address(peer_mac.to_vec())
                    .setns_by_fd(file.as_raw_fd());
                let mut msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(host.clone());
                if let Some(mtu) = mtu {
                    peer_msg = peer_msg.mtu(*mtu);
                    msg = msg.mtu(*mtu);
                }
                let msg = msg
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
                    .build();
                // `file` stays open until the kernel has taken the namespace reference.
                let added = h.link().add(msg).execute().await.map_err(netlink_err(op));
                drop(file);
                added?;
                let index = link_index(h, host, op).await?;
                set_alias(h, index, op).await
            }
            LinkOp::SetMaster { link, bridge } => {
                let h = &self.host;
                let index = link_index(h, link, op).await?;
                let master = link_index(h, bridge, op).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(index).controller(master).build())
                    .execute()
                    .await
                    .map_err(netlink_err(op))
            }
            LinkOp::SetHairpin { link, isolated } => {
                let h = &self.host;
                let index = link_index(h, link, op).await?;
                h.link()
                    .set_port(
                        LinkBridgePort::new(index)
                            .hairpin(true)
                            .isolated(*isolated)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(netlink_err(op))
            }
            LinkOp::AddAddress {
                netns,
                link,
                address,
                prefix,
            } => {
                let h = self.handle_in(netns).await?;
                let index = link_index(&h, link, op).await?;
                h.address()
                    .add(index, IpAddr::V4(*address), *prefix)
                    .replace()
                    .execute()
                    .await
                    .map_err(netlink_err(op))
            }
            LinkOp::SetUp { netns, link } => {
                let h = self.handle_in(netns).await?;
                let index = link_index(&h, link, op).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .map_err(netlink_err(op))
            }
            LinkOp::AddDefaultRoute { netns, gateway } => {
                let h = self.handle_in(netns).await?;
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(*gateway)
                    .build();
                h.route()
                    .add(route)
                    .replace()
                    .execute()
                    .await
                    .map_err(netlink_err(op))
            }
            LinkOp::DeleteLink { name } => {
                let h = &self.host;
                let Some(link) = find_link(h, name).await.map_err(netlink_err(op))? else {
                    return Ok(());
                };
                match h.link().del(link.header.index).execute().await {
                    // Gone in between (e.g. the peer's namespace died): done.
                    Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
                    other => other.map_err(netlink_err(op)),
                }
            }
            LinkOp::WriteSysctl { key, value } => {
                let path = Path::new("/proc/sys").join(key);
                std::fs::write(&path, value).map_err(|source| NetError::Sysctl {
                    key: key.clone(),
                    source,
                })
            }
        }
    }

    async fn list_links(&self) -> Result<Vec<ObservedLink>> {
        let msgs = dump_links(&self.host).await?;
        let names = link_names(&msgs);
        Ok(msgs
            .iter()
            .map(|m| {
                let mut link = ObservedLink {
                    name: names.get(&m.header.index).cloned().unwrap_or_default(),
                    kind: None,
                    master: None,
                    alias: None,
                    mtu: None,
                };
                for attr in &m.attributes {
                    match attr {
                        LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                        LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
                        LinkAttribute::Controller(i) => link.master = names.get(i).cloned(),
                        LinkAttribute::LinkInfo(_) => link.kind = link_kind(m),
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    async fn list_routes(&self) -> Result<Vec<Ipv4Net>> {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<_> = self
            .host
            .route()
            .get(req)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetError::NetlinkDump {
                what: "routes",
                source,
            })?;
        Ok(routes
            .iter()
            .filter(|r| r.header.table != RT_TABLE_LOCAL)
            .filter_map(|r| {
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                });
                let prefix = r.header.destination_prefix_length;
                Ipv4Net::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), prefix).ok()
            })
            .collect())
    }
}

fn link_kind(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind_name(kind)),
            _ => None,
        }),
        _ => None,
    })
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}
