//! IPAM: IPv4 subnets, per-network address pools, and the choice of a subnet that does not
//! collide with the host's routes.
//!
//! Owns: [`Ipv4Net`] (a CIDR value), [`AddressPool`] (allocation and release of host
//! addresses in one subnet, gateway reserved), [`choose_subnet`] (first free pool given the
//! host's routes and the subnets already used). All of it is pure: no sockets, no files.
//!
//! Does not own: reading the host's routes (the link executor does that), persisting pools
//! (they live inside [`crate::NetState`], which the caller persists).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// An IPv4 network in CIDR form; the address is always the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// A network from an address and a prefix length; host bits of `addr` are cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(NetError::InvalidSubnet {
                input: format!("{addr}/{prefix}"),
                reason: "prefix length above 32",
            });
        }
        let bits = u32::from(addr) & mask(prefix);
        Ok(Ipv4Net {
            addr: Ipv4Addr::from(bits),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.addr) & mask(p) == u32::from(other.addr) & mask(p)
    }

    /// Whether `ip` is a usable host address (not network or broadcast, for prefixes < 31).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.addr && ip != self.broadcast()))
    }

    /// The first usable host address (conventionally the gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        if self.prefix >= 31 {
            self.addr
        } else {
            Ipv4Addr::from(u32::from(self.addr) + 1)
        }
    }

    /// Number of usable host addresses.
    pub fn host_count(&self) -> u64 {
        let size = 1u64 << (32 - u32::from(self.prefix));
        if self.prefix >= 31 {
            size
        } else {
            size - 2
        }
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| NetError::InvalidSubnet {
            input: s.to_string(),
            reason,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("missing /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("prefix is not a number"))?;
        let net = Ipv4Net::new(addr, prefix).map_err(|_| invalid("prefix length above 32"))?;
        if net.addr != addr {
            return Err(invalid("host bits set (give the network address)"));
        }
        Ok(net)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The address pool of one network: its subnet, its gateway (never handed out) and which
/// address belongs to which endpoint.
///
/// Allocation walks forward from the last address handed out (wrapping), so a released
/// address is not reused at once (stale ARP entries in peers age out first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The gateway: the bridge's own address.
    pub gateway: Ipv4Addr,
    /// Allocated addresses and the endpoint id holding each.
    pub allocated: BTreeMap<Ipv4Addr, String>,
    /// The last address handed out by [`AddressPool::allocate`].
    pub last: Option<Ipv4Addr>,
}

impl AddressPool {
    /// A pool for `subnet`; the gateway defaults to the first host address.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Self> {
        if subnet.prefix() > 30 {
            return Err(NetError::InvalidSubnet {
                input: subnet.to_string(),
                reason: "a bridge subnet needs at least a /30",
            });
        }
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.is_host(gateway) {
            return Err(NetError::AddressOutsideSubnet {
                address: gateway,
                subnet: subnet.to_string(),
            });
        }
        Ok(AddressPool {
            subnet,
            gateway,
            allocated: BTreeMap::new(),
            last: None,
        })
    }

    fn is_free(&self, ip: Ipv4Addr) -> bool {
        self.subnet.is_host(ip) && ip != self.gateway && !self.allocated.contains_key(&ip)
    }

    /// Hands out the next free address to `owner`. `network` names the pool in errors.
    pub fn allocate(&mut self, network: &str, owner: &str) -> Result<Ipv4Addr> {
        let first = u32::from(self.subnet.first_host());
        let count = self.subnet.host_count() as u32;
        let start = match self.last {
            Some(last) if self.subnet.contains(last) => u32::from(last) + 1 - first,
            _ => 0,
        };
        for step in 0..count {
            let ip = Ipv4Addr::from(first + (start + step) % count);
            if self.is_free(ip) {
                self.allocated.insert(ip, owner.to_string());
                self.last = Some(ip);
                return Ok(ip);
            }
        }
        Err(NetError::AddressExhausted {
            network: network.to_string(),
        })
    }

    /// Reserves a specific address (`--ip`) for `owner`.
    pub fn reserve(&mut self, network: &str, ip: Ipv4Addr, owner: &str) -> Result<()> {
        if !self.subnet.is_host(ip) {
            return Err(NetError::AddressOutsideSubnet {
                address: ip,
                subnet: self.subnet.to_string(),
            });
        }
        if !self.is_free(ip) {
            return Err(NetError::AddressInUse {
                network: network.to_string(),
                address: ip,
            });
        }
        self.allocated.insert(ip, owner.to_string());
        Ok(())
    }

    /// Releases an address; returns whether it was allocated.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.allocated.remove(&ip).is_some()
    }
}

/// Candidate pools for networks created without `--subnet`, in the order they are tried:
/// 172.17.0.0/16 ..= 172.31.0.0/16, then 192.168.0.0/20 ..= 192.168.240.0/20 (Docker's
/// defaults).
pub fn default_pools() -> Vec<Ipv4Net> {
    let mut pools = Vec::new();
    for b in 17..=31u8 {
        pools.extend(Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    }
    for c in (0..=240u8).step_by(16) {
        pools.extend(Ipv4Net::new(Ipv4Addr::new(192, 168, c, 0), 20));
    }
    pools
}

/// The first pool in `pools` that overlaps neither a host route nor a subnet in use.
///
/// Default routes (`0.0.0.0/0`) are ignored: everything overlaps them, and a more specific
/// connected route wins over them anyway.
pub fn choose_subnet(
    pools: &[Ipv4Net],
    host_routes: &[Ipv4Net],
    in_use: &[Ipv4Net],
) -> Result<Ipv4Net> {
    pools
        .iter()
        .find(|pool| {
            !host_routes
                .iter()
                .filter(|r| r.prefix() > 0)
                .any(|r| r.overlaps(pool))
                && !in_use.iter().any(|u| u.overlaps(pool))
        })
        .copied()
        .ok_or(NetError::NoFreeSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_cidr() {
        assert_eq!(net("172.17.0.0/16").to_string(), "172.17.0.0/16");
        assert!("172.17.0.1/16".parse::<Ipv4Net>().is_err());
        assert!("172.17.0.0".parse::<Ipv4Net>().is_err());
        assert!("172.17.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("nope/8".parse::<Ipv4Net>().is_err());
        assert_eq!(net("0.0.0.0/0").broadcast(), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn overlap_and_contains() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.1.0.0/16")));
        assert!(net("10.1.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.1.0.0/16").overlaps(&net("10.2.0.0/16")));
        assert!(net("10.1.0.0/16").contains(Ipv4Addr::new(10, 1, 255, 255)));
        assert!(!net("10.1.0.0/16").is_host(Ipv4Addr::new(10, 1, 255, 255)));
        assert!(!net("10.1.0.0/16").is_host(Ipv4Addr::new(10, 1, 0, 0)));
    }

    #[test]
    fn allocation_skips_gateway_and_does_not_reuse_at_once() {
        let mut pool = AddressPool::new(net("10.9.0.0/29"), None).unwrap();
        assert_eq!(pool.gateway, Ipv4Addr::new(10, 9, 0, 1));
        let a = pool.allocate("n", "a").unwrap();
        let b = pool.allocate("n", "b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        assert!(pool.release(a));
        assert!(!pool.release(a));
        // .4, .5, .6 come before .2 is reused.
        let next: Vec<_> = (0..3)
            .map(|i| pool.allocate("n", &i.to_string()).unwrap())
            .collect();
        assert_eq!(next[0], Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(next[2], Ipv4Addr::new(10, 9, 0, 6));
        assert_eq!(pool.allocate("n", "x").unwrap(), a);
        match pool.allocate("n", "y") {
            Err(NetError::AddressExhausted { network }) => assert_eq!(network, "n"),
            other => panic!("expected exhaustion, got {other:?}"),
        }
    }

    #[test]
    fn reserve_refuses_gateway_taken_and_foreign_addresses() {
        let mut pool =
            AddressPool::new(net("10.9.0.0/24"), Some(Ipv4Addr::new(10, 9, 0, 254))).unwrap();
        assert!(matches!(
            pool.reserve("n", Ipv4Addr::new(10, 9, 0, 254), "a"),
            Err(NetError::AddressInUse { .. })
        ));
        pool.reserve("n", Ipv4Addr::new(10, 9, 0, 1), "a").unwrap();
        assert!(matches!(
            pool.reserve("n", Ipv4Addr::new(10, 9, 0, 1), "b"),
            Err(NetError::AddressInUse { .. })
        ));
        assert!(matches!(
            pool.reserve("n", Ipv4Addr::new(10, 8, 0, 1), "b"),
            Err(NetError::AddressOutsideSubnet { .. })
        ));
        assert!(matches!(
            pool.reserve("n", Ipv4Addr::new(10, 9, 0, 255), "b"),
            Err(NetError::AddressOutsideSubnet { .. })
        ));
        assert!(AddressPool::new(net("10.9.0.0/24"), Some(Ipv4Addr::new(10, 8, 0, 1))).is_err());
        assert!(AddressPool::new(net("10.9.0.0/31"), None).is_err());
    }

    #[test]
    fn default_subnet_avoids_host_routes_and_used_subnets() {
        let pools = default_pools();
        assert_eq!(
            choose_subnet(&pools, &[], &[]).unwrap(),
            net("172.17.0.0/16")
        );
        let routes = [net("0.0.0.0/0"), net("172.16.0.0/15"), net("172.18.5.0/24")];
        assert_eq!(
            choose_subnet(&pools, &routes, &[]).unwrap(),
            net("172.19.0.0/16")
        );
        assert_eq!(
            choose_subnet(&pools, &routes, &[net("172.19.0.0/16")]).unwrap(),
            net("172.20.0.0/16")
        );
        let all_172 = [net("172.16.0.0/12")];
        assert_eq!(
            choose_subnet(&pools, &all_172, &[net("192.168.0.0/20")]).unwrap(),
            net("192.168.16.0/20")
        );
        assert!(matches!(
            choose_subnet(&pools, &[net("172.16.0.0/12"), net("192.168.0.0/16")], &[]),
            Err(NetError::NoFreeSubnet)
        ));
    }
}
