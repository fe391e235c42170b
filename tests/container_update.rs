//! `docker update` with the real docker CLI against a berthd this test starts: new limits
//! of a running container reach its cgroup files (v1 controllers, or cgroup2) and inspect,
//! Docker's refusals answer with Docker's messages, a `--rm` container's restart policy
//! stays, and an update of a stopped container applies at its next start.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_testkit::daemon::DockerEnv;

/// The first readable of a container's cgroup file in the v1 hierarchy `v1_ctrl` or,
/// on pure cgroup v2, the unified one (cgroups path `/berth/<id>`, as the runtime makes).
fn cgroup_file(id: &str, v1_ctrl: &str, v1_file: &str, v2_file: &str) -> Result<String> {
    let cands = [
        PathBuf::from("/sys/fs/cgroup")
            .join(v1_ctrl)
            .join("berth")
            .join(id)
            .join(v1_file),
        PathBuf::from("/sys/fs/cgroup/berth").join(id).join(v2_file),
    ];
    cands
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .with_context(|| format!("none of {cands:?}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn v1() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

/// Errors of a failing docker CLI run (stderr); fails when the command succeeded.
fn refused(e: &DockerEnv, args: &[&str]) -> Result<String> {
    let out = e.d.docker(args)?;
    anyhow::ensure!(!out.status.success(), "{args:?} succeeded");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Docker's default: `--memory` without `--memory-swap` limits memory + swap to twice the
/// memory (inspect shows it, and the cgroup holds it), not unlimited swap.
#[test]
fn memory_without_swap_gets_twice_the_memory() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let id = e
        .ok(&["run", "-d", "--memory", "32m", &bb, "sleep", "300"])?
        .trim()
        .to_string();
    let shown = e.inspect(&id, "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}")?;
    assert_eq!(shown, format!("{} {}", 32 << 20, 64 << 20));
    if v1() {
        let memsw = cgroup_file(
            &id,
            "memory",
            "memory.memsw.limit_in_bytes",
            "memory.swap.max",
        )?;
        assert_eq!(memsw, (64u64 << 20).to_string());
    } else {
        // cgroup2 counts swap apart from memory: swap.max = MemorySwap - Memory.
        let swap = cgroup_file(
            &id,
            "memory",
            "memory.memsw.limit_in_bytes",
            "memory.swap.max",
        )?;
        assert_eq!(swap, (32u64 << 20).to_string());
    }
    // Within the swap limit, memory alone can grow; above it, it is refused (Docker's rule).
    e.ok(&["update", "--memory", "48m", &id])?;
    let err = refused(&e, &["update", "--memory", "96m", &id])?;
    assert!(
        err.contains("Memory limit should be smaller than already set memoryswap limit"),
        "{err}"
    );
    e.ok(&["rm", "-f", &id])?;
    Ok(())
}

#[test]
fn update_running_stopped_and_refusals() -> Result<()> {
    let e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let id = e
        .ok(&["run", "-d", &bb, "sleep", "300"])?
        .trim()
        .to_string();

    // Docker's rule: no swap limit yet, so memory alone is refused.
    let err = refused(&e, &["update", "--memory", "64m", &id])?;
    assert!(
        err.contains(&format!("Cannot update container {id}: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time")),
        "{err}"
    );
    let err = refused(
        &e,
        &["update", "--memory", "4m", "--memory-swap", "8m", &id],
    )?;
    assert!(err.contains("Minimum memory limit allowed is 6MB"), "{err}");
    let err = refused(&e, &["update", "--blkio-weight", "300", &id])?;
    assert!(err.contains("BlkioWeight"), "{err}");

    let events_since = unix_now() - 1;
    e.ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--restart",
        "on-failure:3",
        &id,
    ])?;
    let shown = e.inspect(
        &id,
        "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
    )?;
    assert_eq!(
        shown,
        format!("{} {} 500000000 50 on-failure:3", 64 << 20, 128 << 20)
    );
    let mem = cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max")?;
    assert_eq!(mem, (64u64 << 20).to_string());
    if v1() {
        let memsw = cgroup_file(
            &id,
            "memory",
            "memory.memsw.limit_in_bytes",
            "memory.swap.max",
        )?;
        assert_eq!(memsw, (128u64 << 20).to_string());
        let quota = cgroup_file(&id, "cpu", "cpu.cfs_quota_us", "cpu.max")?;
        assert_eq!(quota, "50000");
    } else {
        let cpu = cgroup_file(&id, "cpu", "cpu.cfs_quota_us", "cpu.max")?;
        assert_eq!(cpu, "50000 100000");
    }
    assert_eq!(cgroup_file(&id, "pids", "pids.max", "pids.max")?, "50");
    // The update event.
    let ev = e.ok(&[
        "events",
        "--since",
        &events_since.to_string(),
        "--until",
        &(unix_now() + 1).to_string(),
        "--filter",
        "event=update",
        "--format",
        "{{.Actor.ID}}",
    ])?;
    assert!(ev.contains(&id), "update event: {ev:?}");

    // Now that a swap limit is set, memory alone within it passes.
    e.ok(&["update", "--memory", "96m", &id])?;
    assert_eq!(
        cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max")?,
        (96u64 << 20).to_string()
    );
    // A restart keeps the new limits.
    e.ok(&["restart", "-t", "0", &id])?;
    assert_eq!(
        cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max")?,
        (96u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(&id, "pids", "pids.max", "pids.max")?, "50");

    // --rm: the restart policy stays.
    let rm = e
        .ok(&["run", "-d", "--rm", &bb, "sleep", "300"])?
        .trim()
        .to_string();
    let err = refused(&e, &["update", "--restart", "always", &rm])?;
    assert!(
        err.contains(&format!("Cannot update container {rm}: Restart policy cannot be updated because AutoRemove is enabled for the container")),
        "{err}"
    );

    // A created container: kept, applied at start.
    let created = e.ok(&["create", &bb, "sleep", "300"])?.trim().to_string();
    e.ok(&[
        "update",
        "--memory",
        "48m",
        "--memory-swap",
        "-1",
        "--pids-limit",
        "20",
        &created,
    ])?;
    assert_eq!(
        e.inspect(&created, "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}")?,
        format!("{} 20", 48 << 20)
    );
    e.ok(&["start", &created])?;
    assert_eq!(
        cgroup_file(&created, "memory", "memory.limit_in_bytes", "memory.max")?,
        (48u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(&created, "pids", "pids.max", "pids.max")?, "20");
    Ok(())
}
