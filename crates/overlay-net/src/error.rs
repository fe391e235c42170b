//! The crate's one error type.
//!
//! Variants carry structured context (ids, addresses, paths, the failed operation) so that
//! berthd can map them to Engine API status codes without parsing strings:
//! not-found variants map to 404, conflicts (`*Exists`, `*InUse`, `NetworkHasEndpoints`) to
//! 409, invalid input to 400, the rest to 500. [`NetError::is_retryable`] says whether the
//! same call may succeed later without a change of input.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::firewall::NFT_TABLE;
use crate::links::LinkOp;
use crate::ports::Protocol;

/// Who already holds a host port that a publish request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortHolder {
    /// Another berth endpoint published it.
    Endpoint {
        /// The endpoint id that holds the port.
        endpoint: String,
    },
    /// A socket on the host is bound to it (found by trying to bind).
    HostSocket,
}

impl std::fmt::Display for PortHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortHolder::Endpoint { endpoint } => write!(f, "endpoint {endpoint}"),
            PortHolder::HostSocket => f.write_str("a socket on the host"),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A CIDR string could not be parsed.
    #[error("invalid subnet {input:?}: {reason}")]
    InvalidSubnet {
        /// What the caller passed.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A `-p` port specification could not be parsed.
    #[error("invalid port specification {input:?}: {reason}")]
    InvalidPortSpec {
        /// What the caller passed.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A requested subnet overlaps another berth network.
    #[error("subnet {subnet} overlaps subnet {other_subnet} of network {other_network}")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: String,
        /// The network it overlaps.
        other_network: String,
        /// That network's subnet.
        other_subnet: String,
    },
    /// Every candidate pool overlaps a host route or another network.
    #[error("no free subnet: every default pool overlaps a host route or a berth network")]
    NoFreeSubnet,
    /// A gateway (or static address) is not a usable host address of the subnet.
    #[error("address {address} is not a usable host address in subnet {subnet}")]
    AddressOutsideSubnet {
        /// The address.
        address: Ipv4Addr,
        /// The subnet it should be in.
        subnet: String,
    },
    /// Every host address of a network's subnet is allocated.
    #[error("no free address left in network {network}")]
    AddressExhausted {
        /// Network id.
        network: String,
    },
    /// A static address is already allocated (or is the gateway).
    #[error("address {address} is already in use in network {network}")]
    AddressInUse {
        /// Network id.
        network: String,
        /// The address.
        address: Ipv4Addr,
    },
    /// No network with this id, id prefix or name.
    #[error("network {network} not found")]
    NetworkNotFound {
        /// What the caller asked for.
        network: String,
    },
    /// A network with this name or id exists already.
    #[error("network with name {network} already exists")]
    NetworkExists {
        /// The clashing name or id.
        network: String,
    },
    /// A network cannot be removed while endpoints are attached.
    #[error("network {network} has active endpoints: {endpoints:?}")]
    NetworkHasEndpoints {
        /// Network id.
        network: String,
        /// Attached endpoint ids.
        endpoints: Vec<String>,
    },
    /// An endpoint with this id exists already.
    #[error("endpoint {endpoint} already exists")]
    EndpointExists {
        /// Endpoint id.
        endpoint: String,
    },
    /// The container is already attached to this network.
    #[error("container {container} is already attached to network {network}")]
    AlreadyAttached {
        /// Container id.
        container: String,
        /// Network id.
        network: String,
    },
    /// No endpoint with this id.
    #[error("endpoint {endpoint} not found")]
    EndpointNotFound {
        /// Endpoint id.
        endpoint: String,
    },
    /// A host port asked for is taken.
    #[error("port is already allocated: {host_ip}:{host_port}/{protocol} is held by {holder}")]
    PortInUse {
        /// Host address (0.0.0.0 = all).
        host_ip: Ipv4Addr,
        /// Host port.
        host_port: u16,
        /// tcp or udp.
        protocol: Protocol,
        /// Who holds it.
        holder: PortHolder,
    },
    /// A port was to be published on a host address this host does not have.
    #[error("cannot publish on {address}: not an address of this host")]
    HostAddressNotLocal {
        /// The address.
        address: Ipv4Addr,
    },
    /// `-P` found no free port in the ephemeral range.
    #[error("no free host port for {protocol} in {first}..={last}")]
    NoFreePort {
        /// tcp or udp.
        protocol: Protocol,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// A link named in a plan does not exist.
    #[error("link {name} not found")]
    LinkNotFound {
        /// Interface name.
        name: String,
    },
    /// A link that should be one of berth's bridges exists and is something else.
    #[error("link {name} exists and is not a bridge (kind {kind:?})")]
    LinkNotABridge {
        /// Interface name.
        name: String,
        /// Its kind.
        kind: Option<String>,
    },
    /// A netlink request failed.
    #[error("netlink operation {op:?} failed: {source}")]
    Netlink {
        /// The plan step that failed.
        op: Box<LinkOp>,
        /// What the kernel (or rtnetlink) said.
        #[source]
        source: rtnetlink::Error,
    },
    /// A netlink dump (listing links or routes) failed.
    #[error("netlink dump of {what} failed: {source}")]
    NetlinkDump {
        /// `links` or `routes`.
        what: &'static str,
        /// What the kernel (or rtnetlink) said.
        #[source]
        source: rtnetlink::Error,
    },
    /// Opening a netlink socket failed.
    #[error("opening a netlink socket failed: {source}")]
    NetlinkSocket {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A network namespace file could not be opened or entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The netns file (e.g. `/proc/<pid>/ns/net` or `/run/netns/<name>`).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a sysctl failed.
    #[error("writing sysctl {key}: {source}")]
    Sysctl {
        /// Path under /proc/sys.
        key: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `nft` binary could not be run.
    #[error("running nft failed: {source}")]
    NftSpawn {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `nft -f -` exited non-zero; the transaction was not applied (nft is atomic).
    #[error("nft exited with {status:?} applying table {}: {stderr}", NFT_TABLE)]
    NftFailed {
        /// Exit code (None when killed by a signal).
        status: Option<i32>,
        /// What nft printed on stderr.
        stderr: String,
    },
    /// The embedded DNS server could not bind its address.
    #[error("embedded DNS cannot bind {addr}: {source}")]
    DnsBind {
        /// Address it tried.
        addr: std::net::SocketAddrV4,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The persisted state could not be decoded.
    #[error("decoding persisted network state: {source}")]
    StateDecode {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The persisted state has a version this build does not know.
    #[error("persisted network state has version {found}; this build reads up to {supported}")]
    UnsupportedStateVersion {
        /// Version found in the document.
        found: u32,
        /// Newest version this build understands.
        supported: u32,
    },
    /// The overlay driver's configuration or desired model is unusable.
    #[error("overlay: {reason}")]
    InvalidOverlayConfig {
        /// What is wrong.
        reason: String,
    },
    /// An overlay network is not realised on this node (reconcile with it first).
    #[error("overlay network {network} is not set up on this node")]
    OverlayNetworkNotHere {
        /// Network id.
        network: String,
    },
    /// A netlink request of the overlay driver failed.
    #[error("netlink: {op} failed: {source}")]
    OverlayNetlink {
        /// The step, as text.
        op: String,
        /// What the kernel (or rtnetlink) said.
        #[source]
        source: rtnetlink::Error,
    },
    /// A teardown step (or several) failed; every step was still attempted.
    #[error("teardown finished with {} error(s): {}", errors.len(), join_errors(errors))]
    Teardown {
        /// Every error, in the order the steps ran.
        errors: Vec<NetError>,
    },
}

fn join_errors(errors: &[NetError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl NetError {
    /// Whether the same call may succeed later with the same input (a transient kernel or
    /// process failure), as opposed to a refusal that needs different input.
    pub fn is_retryable(&self) -> bool {
        match self {
            NetError::Netlink { .. }
            | NetError::OverlayNetlink { .. }
            | NetError::NetlinkDump { .. }
            | NetError::NetlinkSocket { .. }
            | NetError::NftSpawn { .. }
            | NetError::NftFailed { .. }
            | NetError::Sysctl { .. } => true,
            NetError::Teardown { errors } => errors.iter().any(NetError::is_retryable),
            _ => false,
        }
    }

    /// Whether this error means "the thing is not there" (404 in the Engine API).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            NetError::NetworkNotFound { .. }
                | NetError::EndpointNotFound { .. }
                | NetError::LinkNotFound { .. }
        )
    }

    /// Whether this error is a conflict with existing state (409 in the Engine API).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            NetError::NetworkExists { .. }
                | NetError::EndpointExists { .. }
                | NetError::AlreadyAttached { .. }
                | NetError::NetworkHasEndpoints { .. }
                | NetError::PortInUse { .. }
                | NetError::AddressInUse { .. }
                | NetError::SubnetOverlap { .. }
        )
    }
}

/// Result with [`NetError`].
pub type Result<T, E = NetError> = std::result::Result<T, E>;
