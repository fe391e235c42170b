//! berth-overlay-net: container networking for one host (bridge networks) — the overlay
//! across hosts comes later.
//!
//! Owns: IPAM ([`ipam`]), the desired networking state and its versioned encoding
//! ([`state`]), link plans and their rtnetlink executor ([`links`]), berth's nftables table
//! (NAT, published ports, isolation; [`firewall`]), published-port parsing and host-port
//! choice ([`ports`]), `/etc/hosts` and `/etc/resolv.conf` contents ([`netfiles`]), the
//! embedded DNS server of user-defined networks ([`dns`]), and the driver berthd calls
//! ([`BridgeDriver`]), including start-up reconciliation.
//!
//! Does not own: container namespaces and lifecycle (`berth-runtime` creates the netns and
//! writes the files), where the state is persisted (berthd), cluster state
//! (`berth-consensus`), the Engine API (`berth-node`), and the `host` and `none` network
//! modes (berthd simply does not call this crate for them: `host` shares the host's
//! namespace, `none` leaves the container's namespace with only `lo`).
//!
//! ```text
//!            berthd
//!              │  NetworkRequest / EndpointRequest / reconcile()
//!              v
//!        BridgeDriver ── state: NetState (berthd persists to_json())
//!         │    │    └── PortProbe  (BindProbe: try bind)
//!  pure:  │    ├── ipam, ports, firewall::Ruleset, links::*_plan   (data)
//!         │    v
//!         │  LinkExecutor (RtnetlinkExecutor) ──> links, addresses, routes, sysctls
//!         └─ Firewall (NftCli: nft -f -)     ──> table ip berth, one transaction
//! ```
//!
//! Usage from berthd (inside a tokio runtime, in the host network namespace):
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_overlay_net::NetError> {
//! use berth_overlay_net::*;
//! let state = NetState::default(); // or NetState::from_json(&saved)?
//! let mut driver = BridgeDriver::new(
//!     RtnetlinkExecutor::connect()?, NftCli::default(), BindProbe, state, DriverConfig::default());
//! let report = driver.reconcile().await?;          // repair what a crash left
//! driver.ensure_default_network(&"0".repeat(64)).await?;
//! let ep = driver.connect(EndpointRequest {
//!     endpoint_id: "1".repeat(64), container_id: "c".repeat(64),
//!     container_name: "web".into(), aliases: vec![], network: "bridge".into(),
//!     netns: "/run/berth/netns/cccc".into(), address: None,
//!     ports: vec![PortRequest::parse("18080:8080")?],
//! }).await?;
//! let _saved = driver.state().to_json();            // persist after every change
//! driver.disconnect(&ep.id).await?;
//! # let _ = report; Ok(()) }
//! ```

pub mod dns;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod ipam;
pub mod links;
pub mod netfiles;
pub mod ports;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use dns::{DnsRecords, DnsServer, DnsServers};
pub use driver::{
    plan_reconcile, BridgeDriver, DriverConfig, EndpointRequest, NetworkRequest, ReconcilePlan,
    ReconcileReport,
};
pub use error::{NetError, PortHolder};
pub use firewall::{Firewall, NftCli, Ruleset, NFT_TABLE};
pub use ipam::{AddressPool, Ipv4Net};
pub use links::{LinkExecutor, LinkOp, Netns, ObservedLink, RtnetlinkExecutor};
pub use netfiles::{render_hosts, render_resolv_conf, ResolvConfOptions};
pub use ports::{BindProbe, PortProbe, PortRange, PortRequest, Protocol, PublishedPort};
pub use state::{Endpoint, NetState, Network};

/// The real driver berthd uses.
pub type HostBridgeDriver = BridgeDriver<RtnetlinkExecutor, NftCli, BindProbe>;
