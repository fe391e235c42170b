//! The desired networking state: networks (with their address pools) and endpoints (a
//! container attached to a network), and its versioned JSON encoding.
//!
//! Owns: [`NetState`], [`Network`], [`Endpoint`], device naming, and the persisted document
//! `{"version": N, "state": {...}}` with its migration path ([`NetState::from_json`]).
//!
//! Does not own: where the bytes live. The caller (berthd) persists
//! [`NetState::to_json`] after every mutating call of [`crate::BridgeDriver`] and hands the
//! decoded state back at start-up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::ipam::{AddressPool, Ipv4Net};
use crate::ports::PublishedPort;

/// The name of the default network, as Docker calls it.
pub const DEFAULT_NETWORK_NAME: &str = "bridge";
/// The bridge device of the default network.
pub const DEFAULT_BRIDGE_DEVICE: &str = "berth0";
/// Newest version of the persisted document this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// One bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64-hex id (Docker-style).
    pub id: String,
    /// User-visible name (unique).
    pub name: String,
    /// Bridge device name: `berth0` for the default network, `br-<12 hex of id>` otherwise.
    pub bridge: String,
    /// Addresses.
    pub pool: AddressPool,
    /// Whether this is the default `bridge` network (no name resolution, legacy links).
    pub is_default: bool,
    /// Internal networks get no outbound NAT and no published ports.
    #[serde(default)]
    pub internal: bool,
    /// MTU of the bridge and its veths (`--opt com.docker.network.driver.mtu`, or berthd's
    /// `--mtu`); `None` is the kernel's default, 1500.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Inter-container communication (Docker's `com.docker.network.bridge.enable_icc`,
    /// default on): off, every container port of the bridge is isolated
    /// ([`crate::links::LinkOp::SetHairpin`]), so its containers reach the gateway (and
    /// through it the world, and published ports) but not each other.
    #[serde(default = "icc_default")]
    pub icc: bool,
}

fn icc_default() -> bool {
    true
}

impl Network {
    /// The bridge device name for a user network id.
    pub fn bridge_name_for(id: &str) -> String {
        format!("br-{}", &id[..id.len().min(12)])
    }
}

/// One container attached to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id (64 hex, chosen by the caller).
    pub id: String,
    /// The container it belongs to.
    pub container_id: String,
    /// Container name (for /etc/hosts and DNS).
    pub container_name: String,
    /// Extra DNS names on this network (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Network id.
    pub network_id: String,
    /// The container's network namespace file.
    pub netns: PathBuf,
    /// Inode of that file when the endpoint was set up: reconciliation re-creates a
    /// missing veth only in the same namespace (a recycled pid is a different one).
    #[serde(default)]
    pub netns_inode: Option<u64>,
    /// Interface name inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// Whether this endpoint carries the container's default route (its first network).
    #[serde(default)]
    pub default_route: bool,
    /// Host end of the veth pair, attached to the bridge.
    pub host_veth: String,
    /// The container's address.
    pub address: Ipv4Addr,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// The container's own `--dns` servers: the embedded DNS relays this container's
    /// queries for names it does not know to them (port 53) instead of to the host's
    /// resolvers, as Docker's embedded DNS does. Empty: the host's.
    #[serde(default)]
    pub dns_servers: Vec<std::net::IpAddr>,
}

impl Endpoint {
    /// The container end's MAC address: `02:42` and the four octets of its IPv4 address
    /// (Docker's scheme; locally administered, unicast).
    pub fn mac_address(&self) -> [u8; 6] {
        let [a, b, c, d] = self.address.octets();
        [0x02, 0x42, a, b, c, d]
    }

    /// Host-side veth name for an endpoint id: `veth` + 11 hex (15 characters, the
    /// kernel's limit).
    pub fn host_veth_for(endpoint_id: &str) -> String {
        format!("veth{}", short_hex(endpoint_id, 11))
    }
}

fn fnv64(bytes: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn short_hex(id: &str, n: usize) -> String {
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).take(n).collect();
    if hex.len() == n {
        hex
    } else {
        // Ids that are not hex (tests, odd callers): derive a stable hex from the bytes.
        format!("{:016x}", fnv64(id.as_bytes(), 0))[..n].to_string()
    }
}

/// Everything berth's bridge networking should look like on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

#[derive(Serialize)]
struct DocumentOut<'a> {
    version: u32,
    state: &'a NetState,
}

#[derive(Deserialize)]
struct DocumentIn {
    version: u32,
    state: serde_json::Value,
}

impl NetState {
    /// Encodes as the current versioned document.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&DocumentOut {
            version: STATE_VERSION,
            state: self,
        })
        .expect("NetState serializes: maps have string keys")
    }

    /// Decodes any known version, migrating older ones to the current shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let doc: DocumentIn =
            serde_json::from_slice(bytes).map_err(|source| NetError::StateDecode { source })?;
        match doc.version {
            // Version 1 is the first; a future version 2 adds an arm that converts a v1
            // value into v2 here.
            1 => {
                serde_json::from_value(doc.state).map_err(|source| NetError::StateDecode { source })
            }
            found => Err(NetError::UnsupportedStateVersion {
                found,
                supported: STATE_VERSION,
            }),
        }
    }

    /// Finds a network by exact id, exact name, or unique id prefix (Docker's rules).
    pub fn find_network(&self, id_or_name: &str) -> Result<&Network> {
        if let Some(n) = self.networks.get(id_or_name) {
            return Ok(n);
        }
        if let Some(n) = self.networks.values().find(|n| n.name == id_or_name) {
            return Ok(n);
        }
        let mut by_prefix = self
            .networks
            .values()
            .filter(|n| !id_or_name.is_empty() && n.id.starts_with(id_or_name));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(n), None) => Ok(n),
            _ => Err(NetError::NetworkNotFound {
                network: id_or_name.to_string(),
            }),
        }
    }

    /// Endpoints attached to a network.
    pub fn endpoints_of<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .values()
            .filter(move |e| e.network_id == network_id)
    }

    /// A host veth name for a new endpoint that no endpoint in the state uses:
    /// [`Endpoint::host_veth_for`], or, if two ids share their first 11 hex digits, a name
    /// derived from a hash of the whole id.
    pub fn unique_host_veth(&self, endpoint_id: &str) -> String {
        let taken = |name: &str| self.endpoints.values().any(|e| e.host_veth == name);
        let first = Endpoint::host_veth_for(endpoint_id);
        if !taken(&first) {
            return first;
        }
        (1u64..)
            .map(|salt| format!("veth{:011x}", fnv64(endpoint_id.as_bytes(), salt) >> 20))
            .find(|name| !taken(name))
            .expect("a free name exists")
    }

    /// Subnets in use by berth networks.
    pub fn subnets(&self) -> Vec<Ipv4Net> {
        self.networks.values().map(|n| n.pool.subnet).collect()
    }

    /// Every published port with its endpoint id.
    pub fn published_ports(&self) -> Vec<(String, PublishedPort)> {
        self.endpoints
            .values()
            .flat_map(|e| e.ports.iter().map(move |p| (e.id.clone(), *p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetState {
        let mut s = NetState::default();
        let pool = AddressPool::new("172.17.0.0/16".parse().unwrap(), None).unwrap();
        s.networks.insert(
            "a".repeat(64),
            Network {
                id: "a".repeat(64),
                name: "bridge".into(),
                bridge: DEFAULT_BRIDGE_DEVICE.into(),
                pool,
                is_default: true,
                internal: false,
                mtu: None,
                icc: true,
            },
        );
        s.networks.insert(
            "ab".repeat(32),
            Network {
                id: "ab".repeat(32),
                name: "web".into(),
                bridge: Network::bridge_name_for(&"ab".repeat(32)),
                pool: AddressPool::new("172.18.0.0/16".parse().unwrap(), None).unwrap(),
                is_default: false,
                internal: false,
                mtu: Some(1400),
                icc: true,
            },
        );
        s
    }

    #[test]
    fn round_trips_as_versioned_json() {
        let s = sample();
        let bytes = s.to_json();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(NetState::from_json(&bytes).unwrap(), s);
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        let err = NetState::from_json(br#"{"version": 9, "state": {}}"#).unwrap_err();
        assert!(matches!(
            err,
            NetError::UnsupportedStateVersion {
                found: 9,
                supported: 1
            }
        ));
        assert!(matches!(
            NetState::from_json(b"{"),
            Err(NetError::StateDecode { .. })
        ));
    }

    #[test]
    fn finds_networks_by_id_name_and_unique_prefix() {
        let s = sample();
        assert_eq!(s.find_network("web").unwrap().name, "web");
        assert_eq!(s.find_network("bridge").unwrap().bridge, "berth0");
        assert_eq!(s.find_network("aba").unwrap().name, "web");
        // "a" prefixes both ids: ambiguous.
        assert!(s.find_network("a").is_err());
        assert!(s.find_network("").is_err());
        assert_eq!(s.find_network(&"a".repeat(64)).unwrap().name, "bridge");
    }

    #[test]
    fn device_names_fit_the_kernel_limit() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(Network::bridge_name_for(&id), "br-0123456789ab");
        assert_eq!(Endpoint::host_veth_for(&id), "veth0123456789a");
        let odd = Endpoint::host_veth_for("not-hex!");
        assert_eq!(odd.len(), 15);
        assert_eq!(odd, Endpoint::host_veth_for("not-hex!"));
    }

    #[test]
    fn host_veth_names_stay_unique_when_id_prefixes_collide() {
        let mut s = NetState::default();
        let a = format!("{:064x}", 1);
        let b = format!("{:064x}", 2);
        let name_a = s.unique_host_veth(&a);
        assert_eq!(name_a, "veth00000000000");
        s.endpoints.insert(
            a.clone(),
            Endpoint {
                id: a.clone(),
                container_id: a.clone(),
                container_name: "a".into(),
                aliases: vec![],
                network_id: "n".into(),
                netns: "/x".into(),
                netns_inode: None,
                ifname: "eth0".into(),
                default_route: true,
                host_veth: name_a.clone(),
                address: Ipv4Addr::new(10, 0, 0, 2),
                ports: vec![],
                dns_servers: vec![],
            },
        );
        let name_b = s.unique_host_veth(&b);
        assert_ne!(name_b, name_a);
        assert_eq!(name_b.len(), 15);
        assert!(name_b.starts_with("veth"));
        assert_eq!(name_b, s.unique_host_veth(&b), "deterministic");
    }
}
