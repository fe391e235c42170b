//! The pure plan of peer changes: desired peer set against the peers the device reports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{WgError, WgPublicKey};

/// One other node as this node's device must know it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WgPeer {
    /// The peer node's public key (`wg_public_key` of its node record).
    pub public_key: WgPublicKey,
    /// Its underlay address and WireGuard listen port.
    pub endpoint: SocketAddr,
    /// Its tunnel address. Becomes the peer's only allowed IP, `tunnel_ip/32`: the device
    /// routes packets to that address to this peer and accepts from this peer only packets
    /// from that address.
    pub tunnel_ip: Ipv4Addr,
}

/// A peer as the device reports it (UAPI `get=1` or the kernel's netlink dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPeer {
    /// Its public key.
    pub public_key: WgPublicKey,
    /// Its endpoint, if one is set or was learnt.
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs (address, prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

impl ObservedPeer {
    fn matches(&self, want: &WgPeer) -> bool {
        self.endpoint == Some(want.endpoint)
            && self.allowed_ips == [(IpAddr::V4(want.tunnel_ip), 32)]
    }
}

/// One change to a device's peers. A peer whose endpoint or tunnel address changed is
/// removed and added again (boringtun cannot modify a peer in place; the kernel gets the
/// same ops so the two backends behave alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    /// Drop the peer and its session.
    Remove(WgPublicKey),
    /// Add the peer: endpoint, allowed IP `tunnel_ip/32`.
    Add(WgPeer),
}

/// The ops that take the device's `observed` peers to exactly `desired` (peers not in
/// `desired` are removed). Removes come first, so a tunnel address can move from one key to
/// another in one plan. Deterministic: removes and adds each sorted by public key.
///
/// # Errors
/// [`WgError::InvalidPeers`] when `desired` holds a public key or a tunnel address twice,
/// the device's own key (`own`), or a tunnel address that is not IPv4 unicast.
pub fn plan_peers(
    own: &WgPublicKey,
    observed: &[ObservedPeer],
    desired: &[WgPeer],
) -> Result<Vec<PeerOp>, WgError> {
    let mut want: BTreeMap<WgPublicKey, &WgPeer> = BTreeMap::new();
    let mut ips = BTreeSet::new();
    for p in desired {
        if &p.public_key == own {
            return Err(WgError::InvalidPeers {
                reason: format!("peer {} is this device's own key", p.public_key),
            });
        }
        let ip = p.tunnel_ip;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(WgError::InvalidPeers {
                reason: format!(
                    "tunnel address {ip} of peer {} is not unicast",
                    p.public_key
                ),
            });
        }
        if want.insert(p.public_key, p).is_some() {
            return Err(WgError::InvalidPeers {
                reason: format!("public key {} appears twice", p.public_key),
            });
        }
        if !ips.insert(ip) {
            return Err(WgError::InvalidPeers {
                reason: format!("tunnel address {ip} appears twice"),
            });
        }
    }
    let have: BTreeMap<WgPublicKey, &ObservedPeer> =
        observed.iter().map(|p| (p.public_key, p)).collect();
    let mut ops = Vec::new();
    for (key, seen) in &have {
        match want.get(key) {
            Some(w) if seen.matches(w) => {}
            _ => ops.push(PeerOp::Remove(*key)),
        }
    }
    for (key, w) in &want {
        match have.get(key) {
            Some(seen) if seen.matches(w) => {}
            _ => ops.push(PeerOp::Add((*w).clone())),
        }
    }
    Ok(ops)
}
