//! A container's shim killed with `kill -9`: the container's processes are killed by
//! berthd and the container is reported exited with the reason (`State.Error`), never left
//! running unsupervised; it can be started again. Through the real docker CLI.

use std::time::Duration;

use anyhow::{Context, Result};
use berth_testkit::daemon::{retry, DockerEnv};

fn ppid_and_comm(pid: i32) -> Option<(i32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let ppid = stat[close + 2..].split(' ').nth(1)?.parse().ok()?;
    Some((ppid, comm))
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 2..].starts_with(|c| c != 'Z' && c != 'X'))
        })
        .unwrap_or(false)
}

#[test]
fn a_shim_killed_with_sigkill_takes_its_container_down_and_says_why() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let id = e
        .ok(&["run", "-d", "--network", "none", &bb, "sleep", "100000"])?
        .trim()
        .to_string();
    let pid: i32 = e.inspect(&id, "{{.State.Pid}}")?.parse()?;
    assert!(alive(pid));
    // The container's init is the shim's child (libcontainer clones it with CLONE_PARENT).
    let (shim, _) = ppid_and_comm(pid).context("container init's parent")?;
    let (_, comm) = ppid_and_comm(shim).context("the shim")?;
    assert_eq!(comm, "berth-shim", "parent {shim} of {pid}");
    nix_kill(shim)?;
    let status = retry(Duration::from_secs(30), || {
        let s = e.inspect(&id, "{{.State.Status}}")?;
        Ok((s != "running").then_some(s))
    })?;
    assert_eq!(status, "exited");
    assert_eq!(e.inspect(&id, "{{.State.ExitCode}}")?, "137");
    let err = e.inspect(&id, "{{.State.Error}}")?;
    assert!(err.contains("shim died"), "{err}");
    assert!(
        !alive(pid),
        "container init {pid} still runs without its shim"
    );
    let ps = e.ok(&["ps", "-q", "--no-trunc"])?;
    assert!(!ps.contains(&id), "{ps}");
    // Startable again, with a new shim.
    e.ok(&["start", &id])?;
    assert_eq!(e.inspect(&id, "{{.State.Status}}")?, "running");
    assert_eq!(e.inspect(&id, "{{.State.Error}}")?, "");
    e.ok(&["rm", "-f", &id])?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mounts.contains(&id[..12]), "mount of {id} left");
    Ok(())
}

fn nix_kill(pid: i32) -> Result<()> {
    // SAFETY: kill(2) with a pid this test found as the container's shim.
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    anyhow::ensure!(r == 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
    Ok(())
}
