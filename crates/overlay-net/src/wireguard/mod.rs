//! WireGuard between the nodes of a cluster: the encryption under `--opt encrypted`
//! overlay networks.
//!
//! Owns: the node key pair ([`WgKeyPair`], x25519, base64 as `wg genkey`/`wg pubkey` print
//! it), one WireGuard device per node ([`WgDevice`]: start, replace the peer set, read
//! statistics, tear down) on either backend ([`WgBackend`]), and the pure plan of peer
//! changes ([`plan_peers`]). Does not own: which nodes are peers and their keys (the
//! cluster state: `wg_public_key` on the node record, `SetNodeWgKey`), the VXLAN device of
//! an encrypted network (`overlay`: it uses the peers' TUNNEL addresses as FDB
//! destinations, so VXLAN's UDP rides inside WireGuard), where the key is persisted
//! (berthd, with [`WgKeyPair::save`] / [`WgKeyPair::load`]).
//!
//! ```text
//!  container ─ veth ─ bridge ─ vxlan (remote = peer tunnel IP, e.g. 10.255.0.2)
//!                                │ UDP 4789 to 10.255.0.2
//!                                v
//!                     <prefix>wg0 10.255.0.1/24   allowed-ip of peer = 10.255.0.2/32
//!                                │ encrypted, UDP 51820
//!                                v
//!                     underlay (peer endpoint 192.0.2.2:51820)
//! ```
//!
//! # Backends (decision)
//!
//! - **Kernel module** where present ([`WgBackend::Auto`] prefers it: it tries to create a
//!   link of kind `wireguard`, which also autoloads the module). Configured through
//!   `wireguard-control` 2.0.0 (`Backend::Kernel`, generic netlink); the link is created
//!   and removed with rtnetlink. This host has no module, so that path is exercised only
//!   where the module exists; the plan and the shapes are the same as userspace.
//! - **Userspace: boringtun 0.7.1** (Cloudflare, feature `device`): a TUN device served by
//!   boringtun's worker threads **inside berthd's process**, configured through the
//!   WireGuard cross-platform UAPI text protocol over a private `socketpair` (boringtun's
//!   `DeviceConfig::uapi_fd`), not over `/var/run/wireguard/<name>.sock`. Why:
//!   - no socket file at all, so nothing on disk to leak or to be reached by another
//!     process, and no stale file after a crash;
//!   - boringtun's socket-file mode installs SIGINT/SIGTERM handlers of its own, which
//!     would steal berthd's shutdown signals; the fd mode does not;
//!   - a crashed berthd takes the device with it: the threads die with the process, the
//!     TUN device is not persistent and disappears with its last file descriptor, and its
//!     address and routes go with the link. Nothing runs unsupervised.
//!
//!   `wireguard-control`'s userspace backend was not used for this: it only talks to
//!   `/var/run/wireguard/<name>.sock` and starts an external binary
//!   (`WG_USERSPACE_IMPLEMENTATION`) when the socket is missing, i.e. a process berthd
//!   would not supervise. `defguard_wireguard_rs` 0.12.4 runs a fork (`defguard_boringtun`)
//!   in-process too, but through the socket file, and brings DNS/resolvconf management
//!   berth does not want; upstream boringtun plus a 100-line UAPI codec ([`uapi`]) is
//!   smaller and keeps the key off the file system.
//! - boringtun panics when an existing peer is modified in place ("Modifying existing
//!   peers is not yet supported"), and its UAPI parser carries the `remove` flag over from
//!   one peer section to the next. So every change is its own UAPI request and a changed
//!   peer is removed and added again ([`PeerOp`]); the kernel backend gets the same ops.
//!
//! # Keys (decision)
//!
//! The private key lives in berthd's memory (x25519-dalek's `StaticSecret`, zeroized on
//! drop) and, if berthd persists it, only in berthd's data root through
//! [`WgKeyPair::save`], which writes a mode 0600 file and [`WgKeyPair::load`] refuses a
//! file readable by group or others. It is handed to the device over the private
//! socketpair (userspace) or netlink (kernel), never through a file or a command line.
//! `Debug` of a key pair prints only the public key.
//!
//! # How berthd uses it
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_overlay_net::wireguard::WgError> {
//! use berth_overlay_net::wireguard::*;
//! let key = WgKeyPair::generate();           // or WgKeyPair::load(data_root.join("wg.key"))
//! let mut dev = WgDevice::start(&WgConfig {
//!     name: "b1wg0".into(),                  // berthd instance prefix + "wg0", <= 15 bytes
//!     listen_port: 51820,
//!     tunnel_addr: "10.255.0.1".parse().unwrap(),
//!     prefix: 24,
//!     mtu: 1420,
//!     backend: WgBackend::Auto,
//! }, &key).await?;
//! let peer_key: WgPublicKey = "hXn4…".parse()?; // from the node record (wg_public_key)
//! dev.set_peers(&[WgPeer {
//!     public_key: peer_key,
//!     endpoint: "192.0.2.2:51820".parse().unwrap(),
//!     tunnel_ip: "10.255.0.2".parse().unwrap(),
//! }])?;
//! let _stats = dev.stats()?;
//! dev.teardown().await?;
//! # Ok(()) }
//! ```
//!
//! Every call acts in the network namespace of the calling thread: call them all from the
//! namespace the device was started in (berthd: the host's). [`WgDevice::set_peers`] and
//! [`WgDevice::stats`] are short blocking calls (a local socket or netlink round trip).

mod device;
mod error;
mod keys;
mod plan;
pub mod uapi;

pub use device::{
    kernel_module_present, WgBackend, WgConfig, WgDevice, WgPeerStats, WgStats,
    USERSPACE_UDP_RECEIVE_BUFFER,
};
pub use error::WgError;
pub use keys::{WgKeyPair, WgPublicKey};
pub use plan::{plan_peers, ObservedPeer, PeerOp, WgPeer};

/// The default WireGuard UDP port (the one `wg-quick` examples and Docker-less setups use).
pub const DEFAULT_LISTEN_PORT: u16 = 51820;

/// MTU of a WireGuard device on a 1500-byte underlay: 1500 - 80 bytes of WireGuard over
/// IPv6 overhead (the figure `wg-quick` uses). A VXLAN device inside it needs 50 less.
pub const DEFAULT_MTU: u32 = 1420;

#[cfg(test)]
mod tests;
