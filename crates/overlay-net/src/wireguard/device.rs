//! The device driver: a WireGuard link on the kernel module or on boringtun, its tunnel
//! address, its peers. Thin: every decision about peers is [`super::plan_peers`].

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, UNIX_EPOCH};

use boringtun::device::{DeviceConfig, DeviceHandle};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkWireguard};

use super::uapi;
use super::{plan_peers, ObservedPeer, PeerOp, WgError, WgKeyPair, WgPeer, WgPublicKey};

/// Which WireGuard implementation serves a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WgBackend {
    /// The kernel module if the kernel has it (creating a `wireguard` link succeeds,
    /// autoloading the module), boringtun otherwise.
    Auto,
    /// The kernel module; [`WgError::KernelModuleMissing`] without it.
    Kernel,
    /// boringtun in this process.
    Userspace,
}

/// Whether the WireGuard module is loaded now (`/sys/module/wireguard`). [`WgBackend::Auto`]
/// does not rely on this alone: a module that is available but not loaded is loaded by
/// the kernel when the first `wireguard` link is created.
pub fn kernel_module_present() -> bool {
    std::path::Path::new("/sys/module/wireguard").exists()
}

/// How to start a node's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgConfig {
    /// Link name: the berthd instance's prefix and a suffix (e.g. `b1wg0`), 1 to 15 bytes.
    /// A link of that name found at start is taken as a leftover of this instance and
    /// removed first.
    pub name: String,
    /// UDP listen port on every underlay address (0: the device picks one; read it back
    /// from [`WgDevice::stats`]).
    pub listen_port: u16,
    /// This node's tunnel address.
    pub tunnel_addr: Ipv4Addr,
    /// Prefix length of the tunnel subnet (the kernel adds the connected route to it via
    /// the device).
    pub prefix: u8,
    /// Link MTU ([`super::DEFAULT_MTU`] on a 1500-byte underlay).
    pub mtu: u32,
    /// Which implementation to use.
    pub backend: WgBackend,
}

/// Statistics and configuration as the device reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgStats {
    /// The backend serving the device ([`WgBackend::Kernel`] or [`WgBackend::Userspace`]).
    pub backend: WgBackend,
    /// The UDP port the device listens on.
    pub listen_port: Option<u16>,
    /// Every configured peer.
    pub peers: Vec<WgPeerStats>,
}

/// One peer's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeerStats {
    /// Its public key.
    pub public_key: WgPublicKey,
    /// Its endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs (address, prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Whether a handshake with it has completed.
    pub handshake_completed: bool,
}

enum Inner {
    Userspace {
        handle: Option<DeviceHandle>,
        uapi: Option<UnixStream>,
    },
    Kernel {
        iface: wireguard_control::InterfaceName,
    },
}

/// A running WireGuard device of this node. Dropping it without [`WgDevice::teardown`]
/// still stops a userspace device (its threads exit and the TUN link vanishes) and deletes
/// a kernel link, but reports nothing.
pub struct WgDevice {
    name: String,
    public: WgPublicKey,
    inner: Inner,
}

impl std::fmt::Debug for WgDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgDevice")
            .field("name", &self.name)
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Worker threads of a userspace device (boringtun's default is 4; berth's hosts are
/// small and the device shares them with containers).
const USERSPACE_THREADS: usize = 2;

/// Receive buffer of a userspace device's UDP sockets, in bytes (the kernel reports twice
/// this, its bookkeeping share included). The default (`net.core.rmem_default`, 208 KiB on
/// Debian) overflows under one TCP stream: boringtun's threads read more slowly than the
/// kernel delivers, and on 2026-12-02 19% of the datagrams of a transfer were dropped
/// (`RcvbufErrors`), TCP resent 30% more bytes and carried 0.35 Gbit/s; with 8 MiB nothing
/// was dropped and it carried 0.55 Gbit/s (bench/README.md, Overlay).
pub const USERSPACE_UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// Bound on one UAPI round trip: a device whose threads died must not hang berthd.
const UAPI_TIMEOUT: Duration = Duration::from_secs(10);

const EOPNOTSUPP: i32 = 95;
const ENODEV: i32 = 19;

fn validate_name(name: &str) -> Result<(), WgError> {
    let bad = |reason| {
        Err(WgError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 15 {
        return bad("must be 1 to 15 bytes");
    }
    if name == "." || name == ".." || name.contains('/') || name.contains(char::is_whitespace) {
        return bad("must not be . or .. nor contain / or whitespace");
    }
    Ok(())
}

fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn connect() -> Result<Handle, WgError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|source| WgError::NetlinkSocket { source })?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn find_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, WgError> {
    let mut links = h.link().get().execute();
    loop {
        match links.try_next().await {
            Ok(Some(link)) => {
                if link
                    .attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
                {
                    return Ok(Some(link));
                }
            }
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(WgError::Netlink {
                    op: "list links",
                    name: name.to_string(),
                    source,
                })
            }
        }
    }
}

async fn delete_link(h: &Handle, name: &str) -> Result<(), WgError> {
    let Some(link) = find_link(h, name).await? else {
        return Ok(());
    };
    match h.link().del(link.header.index).execute().await {
        Err(e) if netlink_errno(&e) == Some(ENODEV) => Ok(()),
        r => r.map_err(|source| WgError::Netlink {
            op: "delete link",
            name: name.to_string(),
            source,
        }),
    }
}

impl WgDevice {
    /// Starts the device: creates the link (kernel) or the TUN device and its threads
    /// (userspace, in this process and in the calling thread's network namespace), sets the
    /// private key and listen port, the MTU and `tunnel_addr/prefix`, and brings it up with
    /// no peers. A leftover link of the same name is deleted first.
    ///
    /// # Errors
    /// [`WgError::InvalidName`], [`WgError::KernelModuleMissing`] (backend `Kernel` only),
    /// [`WgError::UserspaceStart`], [`WgError::UapiErrno`] (e.g. EADDRINUSE for the
    /// port), [`WgError::Kernel`], [`WgError::Netlink`]. On error nothing is left behind.
    pub async fn start(config: &WgConfig, key: &WgKeyPair) -> Result<WgDevice, WgError> {
        validate_name(&config.name)?;
        if config.prefix > 32 {
            return Err(WgError::InvalidPeers {
                reason: format!("tunnel prefix /{} is longer than 32", config.prefix),
            });
        }
        let h = connect()?;
        delete_link(&h, &config.name).await?;
        let kernel = match config.backend {
            WgBackend::Userspace => false,
            WgBackend::Kernel | WgBackend::Auto => {
                match h
                    .link()
                    .add(LinkWireguard::new(&config.name).build())
                    .execute()
                    .await
                {
                    Ok(()) => true,
                    Err(e) if netlink_errno(&e) == Some(EOPNOTSUPP) => {
                        if config.backend == WgBackend::Kernel {
                            return Err(WgError::KernelModuleMissing);
                        }
                        false
                    }
                    Err(source) => {
                        return Err(WgError::Netlink {
                            op: "create wireguard link",
                            name: config.name.clone(),
                            source,
                        })
                    }
                }
            }
        };
        let mut dev = if kernel {
            let iface: wireguard_control::InterfaceName =
                config.name.parse().map_err(|_| WgError::InvalidName {
                    name: config.name.clone(),
                    reason: "refused by wireguard-control",
                })?;
            WgDevice {
                name: config.name.clone(),
                public: key.public_key(),
                inner: Inner::Kernel { iface },
            }
        } else {
            Self::start_userspace(&config.name, key)?
        };
        match dev.configure(&h, config, key).await {
            Ok(()) => Ok(dev),
            Err(e) => {
                // Nothing left behind: stop threads / delete the link; the first error wins.
                let _ = std::mem::replace(
                    &mut dev.inner,
                    Inner::Userspace {
                        handle: None,
                        uapi: None,
                    },
                );
                let _ = delete_link(&h, &config.name).await;
                Err(e)
            }
        }
    }

    fn start_userspace(name: &str, key: &WgKeyPair) -> Result<WgDevice, WgError> {
        let (ours, theirs) = UnixStream::pair().map_err(|source| WgError::Uapi {
            name: name.to_string(),
            source,
        })?;
        ours.set_read_timeout(Some(UAPI_TIMEOUT))
            .and_then(|()| ours.set_write_timeout(Some(UAPI_TIMEOUT)))
            .map_err(|source| WgError::Uapi {
                name: name.to_string(),
                source,
            })?;
        let handle = DeviceHandle::new(
            name,
            DeviceConfig {
                n_threads: USERSPACE_THREADS,
                // Every peer's datagrams arrive on the listen sockets, whose receive buffer
                // `enlarge_receive_buffers` sets; a per-peer connected socket, opened after a
                // handshake, would have the kernel's default again.
                use_connected_socket: false,
                use_multi_queue: true,
                // boringtun owns this end from here on (it closes it when it exits).
                uapi_fd: theirs.into_raw_fd(),
            },
        )
        .map_err(|e| WgError::UserspaceStart {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        Ok(WgDevice {
            name: name.to_string(),
            public: key.public_key(),
            inner: Inner::Userspace {
                handle: Some(handle),
                uapi: Some(ours),
            },
        })
    }

    async fn configure(
        &mut self,
        h: &Handle,
        config: &WgConfig,
        key: &WgKeyPair,
    ) -> Result<(), WgError> {
        match &self.inner {
            Inner::Userspace { .. } => {
                self.uapi(
                    &uapi::device_request(key.private_bytes(), config.listen_port),
                    "set private_key and listen_port",
                )?;
                let port = match config.listen_port {
                    0 => self.stats()?.listen_port.unwrap_or(0),
                    port => port,
                };
                match enlarge_receive_buffers(port, USERSPACE_UDP_RECEIVE_BUFFER) {
                    Ok(0) => tracing::warn!(
                        device = %self.name,
                        port,
                        "no UDP socket of the WireGuard device found: receive buffers left at the kernel default"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        device = %self.name,
                        port,
                        error = %e,
                        "could not enlarge the WireGuard device's receive buffers"
                    ),
                }
            }
            Inner::Kernel { iface } => {
                wireguard_control::DeviceUpdate::new()
                    .set_private_key(wireguard_control::Key(*key.private_bytes()))
                    .set_listen_port(config.listen_port)
                    .replace_peers()
                    .apply(iface, wireguard_control::Backend::Kernel)
                    .map_err(|source| WgError::Kernel {
                        op: "set private key and listen port",
                        name: self.name.clone(),
                        source,
                    })?;
            }
        }
        let netlink = |op| {
            let name = self.name.clone();
            move |source| WgError::Netlink { op, name, source }
        };
        let index = find_link(h, &self.name)
            .await?
            .ok_or_else(|| WgError::UserspaceStart {
                name: self.name.clone(),
                message: "the link vanished right after creation".into(),
            })?
            .header
            .index;
        h.link()
            .set(LinkUnspec::new_with_index(index).mtu(config.mtu).build())
            .execute()
            .await
            .map_err(netlink("set mtu"))?;
        h.address()
            .add(index, IpAddr::V4(config.tunnel_addr), config.prefix)
            .replace()
            .execute()
            .await
            .map_err(netlink("add tunnel address"))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink("set up"))
    }

    /// Deletes a leftover link named `name` (a kernel device of a berthd that crashed or
    /// was stopped while its node left the swarm; a userspace device never outlives its
    /// process). For berthd's start-up reconciliation when no device is wanted. Returns
    /// whether one was there.
    ///
    /// # Errors
    /// [`WgError::InvalidName`], [`WgError::Netlink`], [`WgError::NetlinkSocket`].
    pub async fn remove_stale(name: &str) -> Result<bool, WgError> {
        validate_name(name)?;
        let h = connect()?;
        let present = find_link(&h, name).await?.is_some();
        delete_link(&h, name).await?;
        Ok(present)
    }

    /// The link name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This device's public key.
    pub fn public_key(&self) -> WgPublicKey {
        self.public
    }

    /// The backend serving the device.
    pub fn backend(&self) -> WgBackend {
        match self.inner {
            Inner::Userspace { .. } => WgBackend::Userspace,
            Inner::Kernel { .. } => WgBackend::Kernel,
        }
    }

    /// One UAPI round trip; returns the answer's body (lines before `errno=`).
    fn uapi(&self, request: &str, what: &str) -> Result<String, WgError> {
        let Inner::Userspace {
            uapi: Some(sock), ..
        } = &self.inner
        else {
            return Err(WgError::Uapi {
                name: self.name.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotConnected),
            });
        };
        let io = |source| WgError::Uapi {
            name: self.name.clone(),
            source,
        };
        (&*sock).write_all(request.as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(sock);
        let mut body = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            if let Some(errno) = uapi::parse_errno(&line) {
                // The answer ends with an empty line after errno.
                let mut end = String::new();
                reader.read_line(&mut end).map_err(io)?;
                if errno != 0 {
                    return Err(WgError::UapiErrno {
                        name: self.name.clone(),
                        request: what.to_string(),
                        errno,
                    });
                }
                return Ok(body);
            }
            if line.starts_with("errno") {
                return Err(WgError::UapiProtocol {
                    name: self.name.clone(),
                    line,
                });
            }
            body.push_str(&line);
        }
    }

    /// Reads the device's configuration and counters.
    ///
    /// # Errors
    /// [`WgError::Uapi`], [`WgError::UapiProtocol`] (userspace), [`WgError::Kernel`].
    pub fn stats(&self) -> Result<WgStats, WgError> {
        match &self.inner {
            Inner::Userspace { .. } => {
                let body = self.uapi(uapi::GET_REQUEST, "get")?;
                let dev = uapi::parse_get(&body).map_err(|line| WgError::UapiProtocol {
                    name: self.name.clone(),
                    line,
                })?;
                Ok(WgStats {
                    backend: WgBackend::Userspace,
                    listen_port: dev.listen_port,
                    peers: dev
                        .peers
                        .into_iter()
                        .filter_map(|p| {
                            Some(WgPeerStats {
                                public_key: p.public_key?,
                                endpoint: p.endpoint,
                                allowed_ips: p.allowed_ips,
                                rx_bytes: p.rx_bytes,
                                tx_bytes: p.tx_bytes,
                                handshake_completed: p.last_handshake.is_some(),
                            })
                        })
                        .collect(),
                })
            }
            Inner::Kernel { iface } => {
                let dev = wireguard_control::Device::get(iface, wireguard_control::Backend::Kernel)
                    .map_err(|source| WgError::Kernel {
                        op: "get device",
                        name: self.name.clone(),
                        source,
                    })?;
                Ok(WgStats {
                    backend: WgBackend::Kernel,
                    listen_port: dev.listen_port,
                    peers: dev
                        .peers
                        .into_iter()
                        .map(|p| WgPeerStats {
                            public_key: WgPublicKey(p.config.public_key.0),
                            endpoint: p.config.endpoint,
                            allowed_ips: p
                                .config
                                .allowed_ips
                                .iter()
                                .map(|a| (a.address, a.cidr))
                                .collect(),
                            rx_bytes: p.stats.rx_bytes,
                            tx_bytes: p.stats.tx_bytes,
                            handshake_completed: p
                                .stats
                                .last_handshake_time
                                .is_some_and(|t| t > UNIX_EPOCH),
                        })
                        .collect(),
                })
            }
        }
    }

    /// Makes the device's peers exactly `peers` (others are dropped with their sessions):
    /// reads the peers from the device, plans with [`plan_peers`], applies the ops one by
    /// one. Returns the ops applied (empty when nothing changed).
    ///
    /// # Errors
    /// [`WgError::InvalidPeers`] (nothing applied), and the errors of [`WgDevice::stats`];
    /// a failing op stops the call (the next call re-plans from what the device has).
    pub fn set_peers(&mut self, peers: &[WgPeer]) -> Result<Vec<PeerOp>, WgError> {
        let observed: Vec<ObservedPeer> = self
            .stats()?
            .peers
            .into_iter()
            .map(|p| ObservedPeer {
                public_key: p.public_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
            })
            .collect();
        let ops = plan_peers(&self.public, &observed, peers)?;
        for op in &ops {
            self.apply(op)?;
        }
        Ok(ops)
    }

    fn apply(&self, op: &PeerOp) -> Result<(), WgError> {
        let what = match op {
            PeerOp::Remove(k) => format!("remove peer {k}"),
            PeerOp::Add(p) => format!("add peer {}", p.public_key),
        };
        match &self.inner {
            Inner::Userspace { .. } => self.uapi(&uapi::peer_request(op), &what).map(|_| ()),
            Inner::Kernel { iface } => {
                let update = match op {
                    PeerOp::Remove(k) => wireguard_control::DeviceUpdate::new()
                        .remove_peer_by_key(&wireguard_control::Key(k.0)),
                    PeerOp::Add(p) => wireguard_control::DeviceUpdate::new().add_peer(
                        wireguard_control::PeerConfigBuilder::new(&wireguard_control::Key(
                            p.public_key.0,
                        ))
                        .set_endpoint(p.endpoint)
                        .replace_allowed_ips()
                        .add_allowed_ip(IpAddr::V4(p.tunnel_ip), 32),
                    ),
                };
                update
                    .apply(iface, wireguard_control::Backend::Kernel)
                    .map_err(|source| WgError::Kernel {
                        op: "update peers",
                        name: self.name.clone(),
                        source,
                    })
            }
        }
    }

    /// Stops the device and waits until it is gone: userspace, closes the UAPI socket
    /// (boringtun's threads exit on it) and joins every worker thread, which closes the TUN
    /// device (its address and routes go with it); kernel, deletes the link. Then makes sure
    /// no link of the name is left. Keeps going past failures.
    ///
    /// # Errors
    /// [`WgError::Teardown`] listing every failure.
    pub async fn teardown(mut self) -> Result<(), WgError> {
        let mut errors = Vec::new();
        if let Inner::Userspace { handle, uapi } = &mut self.inner {
            drop(uapi.take());
            if let Some(mut handle) = handle.take() {
                // The threads exit as soon as one of them sees the socket closed; joining
                // them is short and blocking.
                let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle.wait();
                    drop(handle);
                }));
                if joined.is_err() {
                    errors.push(WgError::WorkerPanicked {
                        name: self.name.clone(),
                    });
                }
            }
        }
        match connect() {
            Ok(h) => {
                if let Err(e) = delete_link(&h, &self.name).await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        // Nothing left for Drop to do.
        self.inner = Inner::Userspace {
            handle: None,
            uapi: None,
        };
        if errors.is_empty() {
            Ok(())
        } else {
            Err(WgError::Teardown {
                name: self.name.clone(),
                errors,
            })
        }
    }
}

impl Drop for WgDevice {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Userspace { handle, uapi } => {
                // Closing the UAPI socket makes the threads exit; dropping the handle
                // signals them too. They are not joined here.
                drop(uapi.take());
                drop(handle.take());
            }
            Inner::Kernel { iface } => {
                let _ = wireguard_control::Device::get(iface, wireguard_control::Backend::Kernel)
                    .and_then(|d| d.delete());
            }
        }
    }
}

/// Sets the receive buffer of every UDP socket of this process bound to `port` (a
/// userspace device's IPv4 and IPv6 listen sockets, which boringtun opens without a way to
/// size them) to `bytes`, with `SO_RCVBUFFORCE` (CAP_NET_ADMIN; not capped by
/// `net.core.rmem_max`), else `SO_RCVBUF` (capped). Returns how many sockets it set.
///
/// The sockets are found through `/proc/self/fd`: sockets of type `SOCK_DGRAM` whose local
/// address has that port. Sockets of other devices of this process on the same port (other
/// network namespaces) are set too, which they want as well.
///
/// # Errors
/// `/proc/self/fd` unreadable, or a matching socket refused both options.
fn enlarge_receive_buffers(port: u16, bytes: usize) -> std::io::Result<usize> {
    use nix::sys::socket::{
        getsockname, getsockopt, setsockopt, sockopt, SockType, SockaddrStorage,
    };
    use std::os::fd::BorrowedFd;
    let mut set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<std::os::fd::RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for the calls below; if another thread
        // closed it meanwhile, the calls fail (EBADF) or act on a socket that matches the
        // same test, which is harmless.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        if getsockopt(&borrowed, sockopt::SockType) != Ok(SockType::Datagram) {
            continue;
        }
        let Ok(local) = getsockname::<SockaddrStorage>(fd) else {
            continue;
        };
        let local_port = local
            .as_sockaddr_in()
            .map(|a| a.port())
            .or_else(|| local.as_sockaddr_in6().map(|a| a.port()));
        if local_port != Some(port) || port == 0 {
            continue;
        }
        setsockopt(&borrowed, sockopt::RcvBufForce, &bytes)
            .or_else(|_| setsockopt(&borrowed, sockopt::RcvBuf, &bytes))
            .map_err(std::io::Error::from)?;
        set += 1;
    }
    Ok(set)
}
