//! Root integration tests: real busybox containers through the shim and libcontainer.
//! Run through the fixture: `cargo run -q -p berth-testkit --bin berth-fixture -- run --
//! cargo test -p berth-runtime`.

mod support;

use std::time::Duration;

use anyhow::Result;
use berth_runtime::logs::Stream;
use berth_runtime::Status;
use support::*;

#[test]
fn true_exits_zero() -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, exit) = t.run(&["/bin/true"], opts())?;
    assert_eq!(exit.code, 0);
    assert!(!exit.oom_killed);
    assert_eq!(t.rt.inspect(&id)?.status, Status::Exited);
    Ok(())
}

#[test]
fn exit_code_is_reported() -> Result<()> {
    let t = TestRuntime::new()?;
    let (_, exit) = t.run(&["sh", "-c", "exit 3"], opts())?;
    assert_eq!(exit.code, 3);
    Ok(())
}

#[test]
fn echo_logs_in_order_with_stderr_apart() -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, exit) = t.run(
        &[
            "sh",
            "-c",
            "echo one; echo two >&2; echo three; echo four >&2; printf partial",
        ],
        opts(),
    )?;
    assert_eq!(exit.code, 0);
    assert_eq!(t.output(&id, false)?, "one\nthree\npartial");
    assert_eq!(t.output(&id, true)?, "two\nfour\n");
    let all = t.logs(&id)?;
    let streams: Vec<Stream> = all.iter().map(|r| r.stream).collect();
    assert_eq!(streams.iter().filter(|s| **s == Stream::Stderr).count(), 2);
    assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
    let tail =
        t.rt.logs(
            &id,
            berth_runtime::LogOptions {
                stdout: true,
                tail: Some(1),
                ..Default::default()
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].log, b"partial");
    Ok(())
}

#[test]
fn pid1_own_hostname_and_only_lo() -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, exit) = t.run(
        &["sh", "-c", "echo pid=$$; hostname; ls /sys/class/net"],
        berth_runtime::spec::RunOptions {
            hostname: Some("boxhost".into()),
            ..opts()
        },
    )?;
    assert_eq!(exit.code, 0, "stderr: {}", t.output(&id, true)?);
    let out = t.output(&id, false)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["pid=1", "boxhost", "lo"]);
    Ok(())
}

#[test]
fn writes_land_in_upper_dir_and_go_with_delete() -> Result<()> {
    let t = TestRuntime::new()?;
    let layer = t.rt.snapshots().layer_dir(t.layers.last().unwrap())?;
    let before: Vec<_> = std::fs::read_dir(&layer)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let (id, exit) = t.run(
        &["sh", "-c", "echo hello > /written && rm /bin/true"],
        opts(),
    )?;
    assert_eq!(exit.code, 0, "stderr: {}", t.output(&id, true)?);
    let upper = t.rt.snapshots().upper_dir(&id);
    assert_eq!(std::fs::read_to_string(upper.join("written"))?, "hello\n");
    // The image's layer is unchanged: no new file, and the deleted file is still there.
    let after: Vec<_> = std::fs::read_dir(&layer)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after);
    assert!(!layer.join("written").exists());
    assert!(
        layer.join("bin/true").exists()
            || std::fs::symlink_metadata(layer.join("bin/true")).is_ok()
    );
    t.rt.delete(&id, false)?;
    assert!(!upper.exists());
    assert!(matches!(
        t.rt.inspect(&id),
        Err(berth_runtime::RuntimeError::NotFound { .. })
    ));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mountinfo.contains(&id));
    // The shim removed the container's cgroups in every hierarchy and libcontainer's state.
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        for dir in [h.path().join("berth").join(&id), h.path().join(&id)] {
            if dir.exists() {
                left.push(dir);
            }
        }
    }
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    assert!(!t.rt.config().exec_root.join("lc").join(&id).exists());
    // The container's directories went to the trash, which empties in the background.
    assert!(!t
        .rt
        .config()
        .data_root
        .join("containers")
        .join(&id)
        .exists());
    let trash = t.rt.config().data_root.join("trash");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some()) {
        assert!(std::time::Instant::now() < deadline, "trash not emptied");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn memory_hog_is_oom_killed() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.resources.memory = Some(32 << 20);
    if std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        o.resources.memory_swap = Some(32 << 20);
    }
    let (_, exit) = t.run(&["sh", "-c", "exec tail /dev/zero"], o)?;
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.code, 137);
    Ok(())
}

#[test]
fn pids_limit_contains_a_fork_bomb() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.resources.pids_limit = Some(32);
    // The inner shell forks until the limit stops it; the outer one (PID 1) then reports and
    // execs (no fork needed) so the container stays up for the checks.
    o.cmd = Some(sh(
        "sh -c 'i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done'; echo spawned; exec sleep 60",
    ));
    let id = t.create(o)?;
    t.rt.start(&id)?;
    assert!(
        eventually(Duration::from_secs(20), || t
            .output(&id, false)
            .map(|s| s.contains("spawned"))
            .unwrap_or(false)),
        "loop did not finish"
    );
    let stats = t.rt.stats(&id)?;
    assert_eq!(stats.pids_limit, 32);
    assert!(stats.pids_current <= 32, "{stats:?}");
    assert!(stats.pids_current >= 30, "{stats:?}");
    let err = t.output(&id, true)?;
    assert!(err.contains("fork"), "stderr: {err}");
    t.rt.stop(&id, Some(Duration::from_secs(1)))?;
    Ok(())
}

#[test]
fn half_a_cpu_is_throttled() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.resources.nano_cpus = Some(500_000_000);
    o.cmd = Some(sh("while :; do :; done"));
    let id = t.create(o)?;
    t.rt.start(&id)?;
    std::thread::sleep(Duration::from_millis(1500));
    let s = t.rt.stats(&id)?;
    assert!(s.cpu_periods > 5, "{s:?}");
    assert!(s.cpu_throttled_periods > 0, "{s:?}");
    assert!(s.cpu_throttled_ns > 0, "{s:?}");
    // Half a CPU over ~1.5 s: well under one full CPU-second.
    assert!(s.cpu_total_ns < 1_200_000_000, "{s:?}");
    let exit = t.rt.stop(&id, Some(Duration::from_secs(1)))?.unwrap();
    assert_eq!(
        exit.signal,
        Some(libc::SIGTERM)
            .filter(|_| exit.code == 143)
            .or(exit.signal)
    );
    Ok(())
}

#[test]
fn security_defaults_hold_inside() -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, exit) = t.run(
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; \
             mkdir -p /mnt/x; if mount -t tmpfs none /mnt/x; then echo MOUNT=ok; else echo MOUNT=failed; fi; \
             echo KCORE=$(cat /proc/kcore | wc -c); \
             if echo x > /proc/sys/kernel/domainname; then echo SYSCTL=ok; else echo SYSCTL=failed; fi",
        ],
        opts(),
    )?;
    assert_eq!(exit.code, 0);
    let out = t.output(&id, false)?;
    let lines: Vec<&str> = out.lines().collect();
    // Docker's default capability set.
    assert_eq!(
        lines[0].split_whitespace().nth(1),
        Some("00000000a80425fb"),
        "{out}"
    );
    assert!(lines.contains(&"MOUNT=failed"), "{out}");
    assert!(lines.contains(&"KCORE=0"), "{out}");
    assert!(lines.contains(&"SYSCTL=failed"), "{out}");
    Ok(())
}

#[test]
fn httpd_ignores_sigterm_so_stop_kills() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.cmd = Some(vec![
        "httpd".into(),
        "-f".into(),
        "-p".into(),
        "8080".into(),
    ]);
    let id = t.create(o)?;
    t.rt.start(&id)?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.rt.inspect(&id)?.status, Status::Running);
    let started = std::time::Instant::now();
    let exit = t.rt.stop(&id, Some(Duration::from_secs(1)))?.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "stopped after {took:?}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    assert_eq!(exit.code, 137);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(t.rt.inspect(&id)?.status, Status::Exited);
    Ok(())
}

#[test]
fn pause_unpause_restart_and_top() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut o = opts();
    o.cmd = Some(sh("while :; do echo tick; sleep 0.1; done"));
    let id = t.create(o)?;
    t.rt.start(&id)?;
    // As with runc, start returns once the init was told to go, which is just before its
    // execve: until then the process still shows the shim's command line.
    assert!(
        eventually(Duration::from_secs(5), || t
            .rt
            .top(&id)
            .map(|top| top.processes.iter().any(|p| p[3].starts_with("sh -c")))
            .unwrap_or(false)),
        "{:?}",
        t.rt.top(&id)
    );
    t.rt.pause(&id)?;
    assert_eq!(t.rt.inspect(&id)?.status, Status::Paused);
    let n = t.logs(&id)?.len();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(t.logs(&id)?.len(), n, "a paused container wrote output");
    t.rt.unpause(&id)?;
    assert!(eventually(Duration::from_secs(5), || t
        .logs(&id)
        .map(|l| l.len() > n)
        .unwrap_or(false)));
    let info = t.rt.restart(&id, Some(Duration::from_secs(2)))?;
    assert_eq!(info.status, Status::Running);
    assert_eq!(info.restart_count, 1);
    assert!(matches!(
        t.rt.delete(&id, false),
        Err(berth_runtime::RuntimeError::InvalidTransition { .. })
    ));
    t.rt.delete(&id, true)?;
    Ok(())
}

#[test]
fn user_caps_and_no_new_privileges_follow_run_options() -> Result<()> {
    let t = TestRuntime::new()?;
    let o = berth_runtime::spec::RunOptions {
        user: Some("1234:5678".into()),
        no_new_privileges: true,
        ..opts()
    };
    let (id, exit) = t.run(
        &[
            "sh",
            "-c",
            "id -u; id -g; grep NoNewPrivs /proc/self/status",
        ],
        o,
    )?;
    assert_eq!(exit.code, 0, "stderr: {}", t.output(&id, true)?);
    let out = t.output(&id, false)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1234");
    assert_eq!(lines[1], "5678");
    assert_eq!(lines[2].split_whitespace().nth(1), Some("1"), "{out}");

    // With CAP_SYS_ADMIN added, the default seccomp profile lets mount through (Docker's
    // capability-gated rules) and CapEff gains bit 21.
    let o = berth_runtime::spec::RunOptions {
        cap_add: vec!["SYS_ADMIN".into()],
        ..opts()
    };
    let (id, exit) = t.run(
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; mkdir -p /mnt/x && mount -t tmpfs none /mnt/x && echo MOUNT=ok",
        ],
        o,
    )?;
    let out = t.output(&id, false)?;
    assert_eq!(exit.code, 0, "{out} {}", t.output(&id, true)?);
    assert!(out.contains("00000000a82425fb"), "{out}");
    assert!(out.contains("MOUNT=ok"), "{out}");
    Ok(())
}

/// Pids of this process's children running `berth-shim --standby`.
fn standby_shims() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": the ppid follows the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .unwrap_or("");
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == me && cmdline.split(|b| *b == 0).any(|a| a == b"--standby") {
            out.push(pid);
        }
    }
    out
}

fn wait_for_standby(not: Option<i32>) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<i32> = standby_shims()
            .into_iter()
            .filter(|p| Some(*p) != not)
            .collect();
        if let [pid] = found[..] {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected one standby shim, found {found:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_standby_shim_serves_the_next_start_and_goes_with_the_runtime() -> Result<()> {
    let t = TestRuntime::new()?;
    // One shim waits ahead of need; a start hands it the container and a new one follows.
    let first = wait_for_standby(None);
    let (_, exit) = t.run(&["/bin/true"], opts())?;
    assert_eq!(exit.code, 0);
    assert!(
        !standby_shims().contains(&first),
        "the standby was not used"
    );
    let second = wait_for_standby(Some(first));
    // A standby that died is replaced by a fresh shim for that start.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let (id, exit) = t.run(&["sh", "-c", "exit 4"], opts())?;
    assert_eq!(exit.code, 4, "stderr: {}", t.output(&id, true)?);
    // The runtime's end retires its standby: nothing of it is left running.
    drop(t);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !standby_shims().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "standby shims left: {:?}",
            standby_shims()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A create cut short before its record was written leaves a directory without one:
/// `ids` still names it, a plain delete says NotFound, a forced delete removes what is
/// there (rootfs mount, upper dir, the directory).
#[test]
fn forced_delete_removes_a_container_whose_record_is_missing() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = t.create(opts())?;
    let dir = t.root.join("d").join("containers").join(&id);
    std::fs::remove_file(dir.join("container.json"))?;
    assert!(t.rt.ids()?.contains(&id));
    assert!(matches!(
        t.rt.delete(&id, false),
        Err(berth_runtime::RuntimeError::NotFound { .. })
    ));
    t.rt.delete(&id, true)?;
    assert!(!dir.exists());
    assert!(!t.rt.ids()?.contains(&id));
    assert!(!t.rt.snapshots().upper_dir(&id).exists());
    Ok(())
}
