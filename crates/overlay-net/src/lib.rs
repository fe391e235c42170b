//! berth-overlay-net: container networking for one host (bridge networks) and the data
//! plane of overlay networks across hosts (VXLAN, service VIPs, routing mesh: [`overlay`]).
//!
//! Owns: IPAM ([`ipam`]), the desired networking state and its versioned encoding
//! ([`state`]), link plans and their rtnetlink executor ([`links`]), berth's nftables table
//! (NAT, published ports, isolation; [`firewall`]), published-port parsing and host-port
//! choice ([`ports`]), `/etc/hosts` and `/etc/resolv.conf` contents ([`netfiles`]), the
//! embedded DNS server of user-defined networks ([`dns`]), pinned network namespace files
//! ([`netns`]), and the driver berthd calls ([`BridgeDriver`]), including start-up
//! reconciliation. Fakes of the kernel seams and the link executor conformance suite are in
//! `testing` (feature `testing`).
//!
//! Does not own: container lifecycle and writing files into containers (`berth-runtime`,
//! berthd), where the state is persisted (berthd), WireGuard encryption (later), IPv6
//! (not yet), cluster state
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
//! # How berthd uses it
//!
//! All calls are `async` and run in berthd's tokio runtime, in the host's network namespace
//! (the driver acts in the namespace of the threads running it). Keep one
//! [`HostBridgeDriver`] behind a `tokio::sync::Mutex`; its futures are `Send`.
//!
//! - **Start-up:** decode the persisted state ([`NetState::from_json`]; empty state:
//!   `NetState::default()`), build the driver, call [`BridgeDriver::reconcile`] (removes
//!   berth links nothing wants, re-creates bridges and missing veths, rebuilds the nftables
//!   table in one transaction; report lists orphaned endpoints whose container died: call
//!   [`BridgeDriver::disconnect`] for them), then [`BridgeDriver::ensure_default_network`].
//! - **Persistence:** berthd owns it. After every mutating call (success or error), save
//!   [`NetState::to_json`] (versioned JSON: `{"version": 1, "state": ...}`).
//! - **`docker network create/rm/ls/inspect`:** [`BridgeDriver::create_network`],
//!   [`BridgeDriver::remove_network`], [`BridgeDriver::state`] (`networks`, `endpoints_of`,
//!   `find_network` by id, name or id prefix). `host` and `none` need no call.
//! - **Container start:** create its network namespace with [`create_netns_file`] (e.g.
//!   `/run/berth/netns/<id>`; the OCI spec joins it by path), then
//!   [`BridgeDriver::connect`] with an [`EndpointRequest`] per network (ports from
//!   [`PortRequest::parse`] or [`PortRequest::publish_all`] for `-P`); the returned
//!   [`Endpoint`] has the address, `eth<N>` and the decided host ports. Then write the
//!   container's files from [`render_hosts`] and [`render_resolv_conf`] (on user networks
//!   with `embedded_dns: Some(gateway)`), and call [`DnsServers::sync`] with the state.
//! - **`docker network connect/disconnect`, container stop/removal:**
//!   [`BridgeDriver::connect`] / [`BridgeDriver::disconnect`] (the latter keeps going and
//!   returns every failure in [`NetError::Teardown`]; the endpoint leaves the state anyway),
//!   then [`remove_netns_file`]. A `/proc/<pid>/ns/net` path works as well.
//! - **Daemon stop with no containers left:** [`BridgeDriver::teardown_host`] removes every
//!   berth link and the `ip berth` table.
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
//!     ports: vec![PortRequest::parse("18080:8080")?], dns_servers: vec![],
//!     taken_ifnames: vec![],
//! }).await?;
//! let _saved = driver.state().to_json();            // persist after every change
//! driver.disconnect(&ep.id).await?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! Host-wide effects, all undone by deleting what berth created except the first:
//! `net.ipv4.ip_forward=1` (needed for routing and NAT; Docker sets it too), berth's
//! bridges (`berth0`, `br-<12 hex>`, with `route_localnet=1` on them only), `veth*` host
//! ends (all carrying the ifalias `berth`), and the nftables table `ip berth`.
//!
//! Encryption between hosts (`docker network create -d overlay --opt encrypted`):
//! [`wireguard`] owns the node key pair and one WireGuard device per node whose peers are
//! the other nodes (allowed IP = the peer's tunnel address /32); an encrypted overlay's
//! VXLAN uses the peers' tunnel addresses as FDB destinations, so it rides inside
//! WireGuard. Crates chosen (see that module for why): boringtun 0.7.1 (feature `device`,
//! in berthd's process, configured over a private UAPI socketpair: no socket file, no key
//! on disk) where the kernel has no WireGuard module, wireguard-control 2.0.0 (kernel
//! backend, generic netlink) where it has one; keys are x25519 through boringtun's
//! re-export of x25519-dalek 2.

pub mod dns;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod ipam;
pub mod links;
pub mod netfiles;
pub mod netns;
pub mod overlay;
pub mod ports;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wireguard;

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
pub use netns::{create_netns_file, remove_netns_file};
pub use ports::{
    BindProbe, PortProbe, PortRange, PortRequest, PortStatus, Protocol, PublishedPort,
};
pub use state::{Endpoint, NetState, Network};

/// The real driver berthd uses.
pub type HostBridgeDriver = BridgeDriver<RtnetlinkExecutor, NftCli, BindProbe>;
