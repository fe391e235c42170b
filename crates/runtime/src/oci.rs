//! Adapter to youki's libcontainer: create, start, exec, signal, pause, resume and delete a
//! container by id under a state root.
//!
//! Owns nothing but the calls. `create_init` and `exec` fork: call them only from a
//! single-threaded process (the shim), never from the daemon. The others do not fork.

use std::os::fd::OwnedFd;
use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;

use crate::error::{Result, RuntimeError};

/// The stdio fds handed to a container process (None when a console socket is used).
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn wrap<'a>(
    op: &'static str,
    id: &'a str,
) -> impl FnOnce(libcontainer::error::LibcontainerError) -> RuntimeError + 'a {
    move |e| RuntimeError::Container {
        op,
        id: id.to_string(),
        source: Box::new(e),
    }
}

fn builder(
    id: &str,
    root: &Path,
    stdio: Stdio,
    console: Option<&Path>,
) -> Result<ContainerBuilder> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .validate_id()
        .map_err(wrap("validate id", id))?
        .with_root_path(root)
        .map_err(wrap("root path", id))?
        .with_console_socket(console);
    if let Some(fd) = stdio.stdin {
        b = b.with_stdin(fd);
    }
    if let Some(fd) = stdio.stdout {
        b = b.with_stdout(fd);
    }
    if let Some(fd) = stdio.stderr {
        b = b.with_stderr(fd);
    }
    Ok(b)
}

/// Creates the container from `bundle` (its init waits for [`start`]); returns the init pid.
/// Forks.
pub fn create_init(
    id: &str,
    root: &Path,
    bundle: &Path,
    stdio: Stdio,
    console: Option<&Path>,
) -> Result<i32> {
    let c = builder(id, root, stdio, console)?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(wrap("create", id))?;
    c.pid().map(|p| p.as_raw()).ok_or(RuntimeError::Protocol {
        detail: "libcontainer created a container without a pid",
    })
}

fn load(id: &str, root: &Path) -> Result<Container> {
    Container::load(root.join(id)).map_err(wrap("load", id))
}

/// Lets a created container's init exec its process.
pub fn start(id: &str, root: &Path) -> Result<()> {
    load(id, root)?.start().map_err(wrap("start", id))
}

/// Runs an extra process (OCI process JSON at `process`) in the container; returns its pid.
/// Forks.
pub fn exec(
    id: &str,
    root: &Path,
    process: &Path,
    stdio: Stdio,
    console: Option<&Path>,
) -> Result<i32> {
    let pid = builder(id, root, stdio, console)?
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .build()
        .map_err(wrap("exec", id))?;
    Ok(pid.as_raw())
}

/// Sends `signal` to the init (or, with `all`, to every process of the container).
pub fn kill(id: &str, root: &Path, signal: i32, all: bool) -> Result<()> {
    let sig = Signal::try_from(signal).map_err(|source| RuntimeError::Sys {
        call: "signal number",
        source,
    })?;
    load(id, root)?.kill(sig, all).map_err(wrap("kill", id))
}

/// Freezes the container.
pub fn pause(id: &str, root: &Path) -> Result<()> {
    load(id, root)?.pause().map_err(wrap("pause", id))
}

/// Thaws the container.
pub fn resume(id: &str, root: &Path) -> Result<()> {
    load(id, root)?.resume().map_err(wrap("resume", id))
}

/// Whether libcontainer has the container paused.
pub fn is_paused(id: &str, root: &Path) -> Result<bool> {
    let mut c = load(id, root)?;
    c.refresh_status().map_err(wrap("status", id))?;
    Ok(c.status() == ContainerStatus::Paused)
}

/// Whether libcontainer has state for `id`.
pub fn exists(id: &str, root: &Path) -> bool {
    root.join(id).join("state.json").exists()
}

/// Deletes the container's libcontainer state and cgroups (`force`: kills what still runs).
pub fn delete(id: &str, root: &Path, force: bool) -> Result<()> {
    if !exists(id, root) {
        return Ok(());
    }
    load(id, root)?.delete(force).map_err(wrap("delete", id))
}
