//! In-memory fakes of the kernel seams, for unit tests here and in callers (feature
//! `testing`). Never used by production code paths.
//!
//! Owns: [`FakeLinks`] (a simulated host namespace with links, masters, aliases and
//! namespaces, recording every step and able to fail chosen steps), [`FakeFirewall`]
//! (records scripts, simulates the table's presence, can fail), [`FakePortProbe`], and
//! the [`conformance`] suite every link executor must pass.

pub mod conformance;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::error::{NetError, Result};
use crate::firewall::{Firewall, NFT_TABLE};
use crate::ipam::Ipv4Net;
use crate::links::{LinkExecutor, LinkOp, Netns, ObservedLink, BERTH_ALIAS};
use crate::ports::{PortProbe, PortStatus, Protocol};

/// A simulated link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Kind (`bridge`, `veth`, `dummy`).
    pub kind: String,
    /// Namespace it lives in.
    pub netns: Netns,
    /// Bridge it is attached to.
    pub master: Option<String>,
    /// Alias.
    pub alias: Option<String>,
    /// Up?
    pub up: bool,
    /// Hairpin mode on (bridge ports).
    pub hairpin: bool,
    /// Port isolation on (bridge ports).
    pub isolated: bool,
    /// MTU, if set.
    pub mtu: Option<u32>,
    /// Addresses.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// The other end of a veth (its id in the simulation).
    pub peer: Option<usize>,
}

#[derive(Debug, Default)]
struct LinksInner {
    // id -> (name, link); ids are stable across renames and moves.
    links: BTreeMap<usize, (String, FakeLink)>,
    next_id: usize,
    routes: Vec<Ipv4Net>,
    default_routes: BTreeMap<Netns, Ipv4Addr>,
    sysctls: BTreeMap<String, String>,
    applied: Vec<LinkOp>,
    fail: Vec<LinkOp>,
}

/// A simulated set of namespaces for [`LinkExecutor`].
#[derive(Debug, Default)]
pub struct FakeLinks {
    inner: Mutex<LinksInner>,
}

impl FakeLinks {
    /// Adds host routes that `list_routes` reports.
    pub fn with_routes(routes: Vec<Ipv4Net>) -> Self {
        let f = FakeLinks::default();
        f.inner.lock().unwrap().routes = routes;
        f
    }

    /// Makes every later `apply` of exactly this step fail.
    pub fn fail_on(&self, op: LinkOp) {
        self.inner.lock().unwrap().fail.push(op);
    }

    /// Stops failing steps.
    pub fn clear_failures(&self) {
        self.inner.lock().unwrap().fail.clear();
    }

    /// Every step applied successfully so far.
    pub fn applied(&self) -> Vec<LinkOp> {
        self.inner.lock().unwrap().applied.clone()
    }

    /// Forgets the recorded steps.
    pub fn clear_applied(&self) {
        self.inner.lock().unwrap().applied.clear();
    }

    /// The link named `name` in `netns`, if any.
    pub fn link(&self, netns: &Netns, name: &str) -> Option<FakeLink> {
        let inner = self.inner.lock().unwrap();
        inner
            .links
            .values()
            .find(|(n, l)| n == name && &l.netns == netns)
            .map(|(_, l)| l.clone())
    }

    /// Names of links in `netns`, sorted.
    pub fn names(&self, netns: &Netns) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut v: Vec<String> = inner
            .links
            .values()
            .filter(|(_, l)| &l.netns == netns)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// The default route's gateway in `netns`.
    pub fn default_route(&self, netns: &Netns) -> Option<Ipv4Addr> {
        self.inner
            .lock()
            .unwrap()
            .default_routes
            .get(netns)
            .copied()
    }

    /// A sysctl's value as last written.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.inner.lock().unwrap().sysctls.get(key).cloned()
    }

    /// Adds a link as if someone else (or a crashed daemon) created it.
    pub fn insert(&self, name: &str, kind: &str, master: Option<&str>, alias: Option<&str>) {
        let mut inner = self.inner.lock().unwrap();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.links.insert(
            id,
            (
                name.to_string(),
                FakeLink {
                    kind: kind.to_string(),
                    netns: Netns::Host,
                    master: master.map(str::to_string),
                    alias: alias.map(str::to_string),
                    up: true,
                    hairpin: false,
                    isolated: false,
                    mtu: None,
                    addresses: vec![],
                    peer: None,
                },
            ),
        );
    }

    /// Deletes a host link as if it vanished (e.g. a container's namespace died).
    pub fn remove(&self, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(id) = find(&inner, &Netns::Host, name) {
            remove_with_peer(&mut inner, id);
        }
    }
}

fn find(inner: &LinksInner, netns: &Netns, name: &str) -> Option<usize> {
    inner
        .links
        .iter()
        .find(|(_, (n, l))| n == name && &l.netns == netns)
        .map(|(id, _)| *id)
}

fn remove_with_peer(inner: &mut LinksInner, id: usize) {
    if let Some((name, link)) = inner.links.remove(&id) {
        if let Some(peer) = link.peer {
            inner.links.remove(&peer);
        }
        if link.kind == "bridge" {
            for (_, l) in inner.links.values_mut() {
                if l.master.as_deref() == Some(name.as_str()) {
                    l.master = None;
                }
            }
        }
    }
}

fn not_found(name: &str) -> NetError {
    NetError::LinkNotFound {
        name: name.to_string(),
    }
}

impl LinkExecutor for FakeLinks {
    async fn apply(&self, op: &LinkOp) -> Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if inner.fail.contains(op) {
            return Err(NetError::Netlink {
                op: Box::new(op.clone()),
                source: rtnetlink::Error::RequestFailed,
            });
        }
        let new_link = |kind: &str, alias: Option<&str>| FakeLink {
            kind: kind.to_string(),
            netns: Netns::Host,
            master: None,
            alias: alias.map(str::to_string),
            up: false,
            hairpin: false,
            isolated: false,
            mtu: None,
            addresses: vec![],
            peer: None,
        };
        match op {
            LinkOp::CreateBridge { name, mtu } => {
                if let Some(id) = find(&inner, &Netns::Host, name) {
                    let link = &mut inner.links.get_mut(&id).unwrap().1;
                    if link.kind != "bridge" {
                        return Err(NetError::LinkNotABridge {
                            name: name.clone(),
                            kind: Some(link.kind.clone()),
                        });
                    }
                    link.alias = Some(BERTH_ALIAS.into());
                } else {
                    let id = inner.next_id;
                    inner.next_id += 1;
                    let mut bridge = new_link("bridge", Some(BERTH_ALIAS));
                    bridge.mtu = *mtu;
                    inner.links.insert(id, (name.clone(), bridge));
                }
            }
            LinkOp::CreateVeth {
                host,
                peer,
                peer_netns,
                peer_mac: _,
                mtu,
            } => {
                let inside = Netns::Path(peer_netns.clone());
                if find(&inner, &Netns::Host, host).is_some()
                    || find(&inner, &inside, peer).is_some()
                {
                    return Err(NetError::Netlink {
                        op: Box::new(op.clone()),
                        source: rtnetlink::Error::RequestFailed,
                    });
                }
                let a = inner.next_id;
                let b = a + 1;
                inner.next_id += 2;
                let mut host_end = new_link("veth", Some(BERTH_ALIAS));
                host_end.peer = Some(b);
                host_end.mtu = *mtu;
                let mut peer_end = new_link("veth", None);
                peer_end.peer = Some(a);
                peer_end.netns = inside;
                peer_end.mtu = *mtu;
                inner.links.insert(a, (host.clone(), host_end));
                inner.links.insert(b, (peer.clone(), peer_end));
            }
            LinkOp::SetMaster { link, bridge } => {
                find(&inner, &Netns::Host, bridge).ok_or_else(|| not_found(bridge))?;
                let id = find(&inner, &Netns::Host, link).ok_or_else(|| not_found(link))?;
                inner.links.get_mut(&id).unwrap().1.master = Some(bridge.clone());
            }
            LinkOp::SetHairpin { link, isolated } => {
                let id = find(&inner, &Netns::Host, link).ok_or_else(|| not_found(link))?;
                let l = &mut inner.links.get_mut(&id).unwrap().1;
                if l.master.is_none() {
                    return Err(NetError::Netlink {
                        op: Box::new(op.clone()),
                        source: rtnetlink::Error::RequestFailed,
                    });
                }
                l.hairpin = true;
                l.isolated = *isolated;
            }
            LinkOp::AddAddress {
                netns,
                link,
                address,
                prefix,
            } => {
                let id = find(&inner, netns, link).ok_or_else(|| not_found(link))?;
                let l = &mut inner.links.get_mut(&id).unwrap().1;
                if !l.addresses.contains(&(*address, *prefix)) {
                    l.addresses.push((*address, *prefix));
                }
            }
            LinkOp::SetUp { netns, link } => {
                if link == "lo" && find(&inner, netns, "lo").is_none() {
                    // Every namespace has a loopback device.
                    let id = inner.next_id;
                    inner.next_id += 1;
                    let mut lo = new_link("loopback", None);
                    lo.netns = netns.clone();
                    inner.links.insert(id, ("lo".into(), lo));
                }
                let id = find(&inner, netns, link).ok_or_else(|| not_found(link))?;
                inner.links.get_mut(&id).unwrap().1.up = true;
            }
            LinkOp::AddDefaultRoute { netns, gateway } => {
                inner.default_routes.insert(netns.clone(), *gateway);
            }
            LinkOp::DeleteLink { name } => {
                if let Some(id) = find(&inner, &Netns::Host, name) {
                    remove_with_peer(&mut inner, id);
                }
            }
            LinkOp::WriteSysctl { key, value } => {
                inner.sysctls.insert(key.clone(), value.clone());
            }
        }
        inner.applied.push(op.clone());
        Ok(())
    }

    async fn list_links(&self) -> Result<Vec<ObservedLink>> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .links
            .values()
            .filter(|(_, l)| l.netns == Netns::Host)
            .map(|(name, l)| ObservedLink {
                name: name.clone(),
                kind: Some(l.kind.clone()),
                master: l.master.clone(),
                alias: l.alias.clone(),
                mtu: l.mtu,
            })
            .collect())
    }

    async fn list_routes(&self) -> Result<Vec<Ipv4Net>> {
        Ok(self.inner.lock().unwrap().routes.clone())
    }
}

#[derive(Debug, Default)]
struct FirewallInner {
    scripts: Vec<String>,
    present: bool,
    fail: bool,
}

/// Records nft scripts; the table counts as present after a script that ends by defining
/// it, absent after one that ends by deleting it.
#[derive(Debug, Default)]
pub struct FakeFirewall {
    inner: Mutex<FirewallInner>,
}

impl FakeFirewall {
    /// Every script applied successfully.
    pub fn scripts(&self) -> Vec<String> {
        self.inner.lock().unwrap().scripts.clone()
    }

    /// The last script applied.
    pub fn last(&self) -> Option<String> {
        self.inner.lock().unwrap().scripts.last().cloned()
    }

    /// Makes `apply` fail (or succeed again).
    pub fn set_failing(&self, fail: bool) {
        self.inner.lock().unwrap().fail = fail;
    }

    /// Pretends a table exists (left by a crashed daemon).
    pub fn set_present(&self, present: bool) {
        self.inner.lock().unwrap().present = present;
    }
}

impl Firewall for FakeFirewall {
    async fn apply(&self, script: &str) -> Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if inner.fail {
            return Err(NetError::NftFailed {
                status: Some(1),
                stderr: "fake failure".into(),
            });
        }
        let last_def = script.rfind(&format!("table {NFT_TABLE} {{"));
        let last_del = script.rfind(&format!("delete table {NFT_TABLE}"));
        inner.present = last_def > last_del;
        inner.scripts.push(script.to_string());
        Ok(())
    }

    async fn table_present(&self) -> Result<bool> {
        Ok(self.inner.lock().unwrap().present)
    }
}

/// A port probe with a settable set of held ports (any address) and of addresses that are
/// not local.
#[derive(Debug, Default)]
pub struct FakePortProbe {
    held: Mutex<BTreeSet<(u16, Protocol)>>,
    foreign: Mutex<BTreeSet<Ipv4Addr>>,
}

impl FakePortProbe {
    /// Marks a port as held by a host socket.
    pub fn hold(&self, port: u16, protocol: Protocol) {
        self.held.lock().unwrap().insert((port, protocol));
    }
}

impl FakePortProbe {
    /// Marks an address as not belonging to the host.
    pub fn not_local(&self, ip: Ipv4Addr) {
        self.foreign.lock().unwrap().insert(ip);
    }
}

impl PortProbe for FakePortProbe {
    fn probe(&self, ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> PortStatus {
        if ip.is_some_and(|ip| self.foreign.lock().unwrap().contains(&ip)) {
            PortStatus::AddressNotLocal
        } else if self.held.lock().unwrap().contains(&(port, protocol)) {
            PortStatus::InUse
        } else {
            PortStatus::Free
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_links_pass_the_conformance_suite() {
        let fake = FakeLinks::default();
        conformance::link_executor_suite(&fake, std::path::Path::new("/run/netns/fake")).await;
        let inside = Netns::Path("/run/netns/fake".into());
        assert_eq!(
            fake.default_route(&inside),
            Some(Ipv4Addr::new(10, 199, 0, 1))
        );
    }
}
