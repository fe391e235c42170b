//! Errors of the WireGuard module.
//!
//! A type of its own rather than variants of [`crate::NetError`]: the module is used on its
//! own (berthd's overlay path) and its failures carry WireGuard context (device name, UAPI
//! errno). Invalid input (`InvalidKey`, `InvalidName`, `InvalidPeers`, `KeyFilePermissions`)
//! maps to 400 at the API, the rest to 500.

use std::path::PathBuf;

/// Everything that can go wrong in [`crate::wireguard`].
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// A key is not 32 bytes of standard base64 (44 characters).
    #[error("invalid WireGuard key: {reason}")]
    InvalidKey {
        /// Why it was refused.
        reason: &'static str,
    },
    /// A device name the kernel would refuse (1 to 15 bytes, no `/`, no whitespace).
    #[error("invalid WireGuard device name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The desired peer set is inconsistent (a key or tunnel address twice, the device's
    /// own key, a tunnel address outside IPv4 unicast).
    #[error("invalid WireGuard peer set: {reason}")]
    InvalidPeers {
        /// Why it was refused.
        reason: String,
    },
    /// The kernel backend was asked for but the kernel has no WireGuard module.
    #[error("the kernel has no WireGuard module (ask for WgBackend::Auto or Userspace)")]
    KernelModuleMissing,
    /// The userspace device (boringtun) could not be created.
    #[error("cannot start userspace WireGuard device {name}: {message}")]
    UserspaceStart {
        /// Device name.
        name: String,
        /// boringtun's error, rendered (its error type is not `std::error::Error` stable API).
        message: String,
    },
    /// A UAPI request failed at the socket level.
    #[error("WireGuard UAPI of {name}: {source}")]
    Uapi {
        /// Device name.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The device answered a UAPI request with a non-zero errno (e.g. EADDRINUSE for a
    /// listen port in use).
    #[error("WireGuard device {name} refused {request}: errno {errno}")]
    UapiErrno {
        /// Device name.
        name: String,
        /// What was asked (`set listen_port`, `add peer <key>`, ...).
        request: String,
        /// The errno the device returned.
        errno: i32,
    },
    /// The UAPI answer could not be parsed.
    #[error("malformed WireGuard UAPI answer from {name}: {line:?}")]
    UapiProtocol {
        /// Device name.
        name: String,
        /// The offending line.
        line: String,
    },
    /// A kernel backend call (wireguard-control, generic netlink) failed.
    #[error("kernel WireGuard {op} on {name}: {source}")]
    Kernel {
        /// What was done.
        op: &'static str,
        /// Device name.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An rtnetlink call (link, address, MTU) failed.
    #[error("netlink {op} on {name}: {source}")]
    Netlink {
        /// What was done.
        op: &'static str,
        /// Device name.
        name: String,
        /// The rtnetlink error.
        source: rtnetlink::Error,
    },
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {source}")]
    NetlinkSocket {
        /// The I/O error.
        source: std::io::Error,
    },
    /// A device worker thread panicked (found when joining it at teardown).
    #[error("a worker thread of WireGuard device {name} panicked")]
    WorkerPanicked {
        /// Device name.
        name: String,
    },
    /// The key file could not be read or written.
    #[error("WireGuard key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is readable or writable by group or others.
    #[error("WireGuard key file {path} has mode {mode:o}; at most 0600 is accepted")]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Teardown kept going past failures; every one is listed.
    #[error("WireGuard teardown of {name} failed: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Teardown {
        /// Device name.
        name: String,
        /// Every failure, in order.
        errors: Vec<WgError>,
    },
}

impl WgError {
    /// Whether the same call may succeed later with the same input (a busy port, a
    /// transient netlink or socket failure), as opposed to bad input or a missing module.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WgError::Uapi { .. }
                | WgError::UapiErrno { .. }
                | WgError::Netlink { .. }
                | WgError::NetlinkSocket { .. }
                | WgError::Kernel { .. }
        )
    }
}
