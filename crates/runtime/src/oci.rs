//! Adapter to youki's libcontainer: create, start, exec, signal, pause, resume and delete a
//! container by id under a state root.
//!
//! Owns nothing but the calls. `create_init` and `exec` fork: call them only from a
//! single-threaded process (the shim), never from the daemon. The others do not fork.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
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
        .with_executor(DockerStyleExecutor)
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

/// The default executor (execvp of `args`), with the process's executable looked up before
/// the start as runc does (Go's `exec.LookPath`), so a start that cannot exec fails with
/// runc's words: `exec: "x": executable file not found in $PATH`, `exec: "/x": stat /x: no
/// such file or directory`, `exec: "/etc": permission denied`. Docker clients turn those
/// into exit codes 127 and 126.
#[derive(Clone)]
struct DockerStyleExecutor;

impl Executor for DockerStyleExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> std::result::Result<(), ExecutorError> {
        DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref();
        let Some(name) = process
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first())
        else {
            return Err(ExecutorValidationError::ArgValidationError(
                "no process arguments".into(),
            ));
        };
        let path_var = process
            .and_then(|p| p.env().as_ref())
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
            .unwrap_or("");
        look_path(name, path_var, &|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).map(|m| (m.is_dir(), m.permissions().mode()))
        })
        .map(|_| ())
        .map_err(ExecutorValidationError::ArgValidationError)
    }
}

/// Go's `exec.LookPath` as runc runs it: `name` itself when it has a slash, else the first
/// executable `dir/name` of `path_var`. `stat` answers (is a directory, mode bits). The
/// error is runc's message.
pub fn look_path(
    name: &str,
    path_var: &str,
    stat: &dyn Fn(&Path) -> std::io::Result<(bool, u32)>,
) -> std::result::Result<PathBuf, String> {
    let executable = |p: &Path| -> std::io::Result<bool> {
        let (dir, mode) = stat(p)?;
        Ok(!dir && mode & 0o111 != 0)
    };
    if name.contains('/') {
        return match executable(Path::new(name)) {
            Ok(true) => Ok(PathBuf::from(name)),
            Ok(false) => Err(format!("exec: {name:?}: permission denied")),
            Err(e) => Err(format!(
                "exec: {name:?}: stat {name}: {}",
                go_errno_text(&e)
            )),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(true) = executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

/// An I/O error as Go's `syscall.Errno` prints it (`no such file or directory`).
fn go_errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let desc = nix::errno::Errno::from_raw(code).desc();
            let mut chars = desc.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => String::new(),
            }
        }
        None => e.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(p: &Path) -> std::io::Result<(bool, u32)> {
        match p.to_str() {
            Some("/bin/sh") | Some("/usr/bin/env") => Ok((false, 0o755)),
            Some("/etc") => Ok((true, 0o755)),
            Some("/etc/passwd") => Ok((false, 0o644)),
            _ => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    #[test]
    fn look_path_says_what_runc_says() {
        assert_eq!(
            look_path("sh", "/usr/bin:/bin", &fake),
            Ok("/bin/sh".into())
        );
        assert_eq!(look_path("/bin/sh", "", &fake), Ok("/bin/sh".into()));
        assert_eq!(
            look_path("nosuchcmd", "/usr/bin:/bin", &fake).unwrap_err(),
            r#"exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert_eq!(
            look_path("/bin/topsy", "/bin", &fake).unwrap_err(),
            r#"exec: "/bin/topsy": stat /bin/topsy: no such file or directory"#
        );
        assert_eq!(
            look_path("/etc", "/bin", &fake).unwrap_err(),
            r#"exec: "/etc": permission denied"#
        );
        assert_eq!(
            look_path("/etc/passwd", "/bin", &fake).unwrap_err(),
            r#"exec: "/etc/passwd": permission denied"#
        );
        // A directory or a non-executable file on the PATH is skipped.
        assert!(look_path("etc", "/", &fake).is_err());
    }
}
