//! Persistent network namespace files for containers (what `ip netns add/del` does).
//!
//! Owns: [`create_netns_file`] (a new, empty network namespace kept alive by a bind mount
//! on a file, e.g. `/run/berth/netns/<container id>`) and [`remove_netns_file`].
//!
//! Does not own: joining it (the OCI spec's `linux.namespaces` entry
//! `{"type": "network", "path": ...}` makes the runtime join it), links inside it
//! ([`crate::BridgeDriver::connect`]).
//!
//! Why berthd should use it: the namespace exists before the container, so networking is
//! configured before the container's process runs; its identity is stable (unlike
//! `/proc/<pid>/ns/net`, whose pid may be reused), so start-up reconciliation can re-create
//! a lost veth in it; and removing the file after the container ends makes the kernel
//! destroy the namespace and with it the container end of the veth pair.
//!
//! The bind mount lives in the mount namespace of the calling process.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{NetError, Result};

fn netns_err(path: &Path, source: io::Error) -> NetError {
    NetError::Netns {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a new network namespace and pins it on `path` (created, with its parent
/// directories). Fails if `path` exists.
pub fn create_netns_file(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| netns_err(path, e))?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| netns_err(path, e))?;
    let target: PathBuf = path.to_path_buf();
    // A short-lived thread enters a new namespace and pins it; the caller's threads never
    // change namespace.
    let result = std::thread::Builder::new()
        .name("berth-netns-new".into())
        .spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        })
        .map_err(|e| netns_err(path, e))?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")));
    if let Err(e) = result {
        let _ = std::fs::remove_file(path);
        return Err(netns_err(path, e));
    }
    Ok(())
}

/// Unpins and removes a namespace file made by [`create_netns_file`]. The kernel destroys
/// the namespace (and the links in it) once nothing else uses it. Absent or already
/// unmounted files are fine.
pub fn remove_netns_file(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(netns_err(path, e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(netns_err(path, e)),
    }
}
