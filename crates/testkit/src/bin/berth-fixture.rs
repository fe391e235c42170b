//! berth-fixture: runs a command with the test fixture up.
//!
//! `berth-fixture run -- CMD ARGS...` starts a real registry on a free loopback port, pushes
//! the fixture images, exports `BERTH_TEST_FIXTURE` (and `BERTH_TEST_REGISTRY`), runs the
//! command, then stops the registry and removes its data, whatever the command's outcome,
//! and exits with the command's status. SIGINT/SIGTERM/SIGHUP are forwarded to the command.
//!
//! `berth-fixture serve` keeps the fixture up until interrupted and prints the variables.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_testkit::{start_fixture_registry, FIXTURE_ENV};

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-fixture: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn signals() -> Result<Arc<AtomicUsize>> {
    let last = Arc::new(AtomicUsize::new(0));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(sig, last.clone(), sig as usize)?;
    }
    Ok(last)
}

fn real_main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = args
        .split_first()
        .context("usage: berth-fixture run -- CMD... | serve")?;
    let pending = signals()?;
    let dir = tempfile::Builder::new()
        .prefix("berth-fixture-")
        .tempdir()?;
    let (mut registry, fixture) = start_fixture_registry()?;
    let path = dir.path().join("fixture.json");
    fixture.save(&path)?;
    eprintln!(
        "berth-fixture: registry {} serving {} images",
        fixture.registry,
        fixture.images.len()
    );
    let code = match mode.as_str() {
        "run" => {
            let cmd: Vec<&String> = rest.iter().skip_while(|a| *a == "--").collect();
            let (prog, cmd_args) = cmd.split_first().context("run: no command given")?;
            let mut child = Command::new(prog)
                .args(cmd_args)
                .env(FIXTURE_ENV, &path)
                .env("BERTH_TEST_REGISTRY", &fixture.registry)
                .spawn()
                .with_context(|| format!("spawn {prog}"))?;
            loop {
                if let Some(status) = child.try_wait()? {
                    break match status.code() {
                        Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
                        None => ExitCode::from(1),
                    };
                }
                let sig = pending.swap(0, Ordering::SeqCst);
                if sig != 0 {
                    // SAFETY: kill(2) on our own unreaped child's PID.
                    unsafe { libc::kill(child.id() as libc::pid_t, sig as libc::c_int) };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "serve" => {
            println!("export {FIXTURE_ENV}={}", path.display());
            println!("export BERTH_TEST_REGISTRY={}", fixture.registry);
            while pending.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            ExitCode::SUCCESS
        }
        other => bail!("unknown mode {other:?}: use run or serve"),
    };
    registry.stop();
    drop(registry);
    drop(dir);
    if mode == "run" {
        remove_empty_cgroup_parents();
    }
    Ok(code)
}

/// The engine keeps a `berth` parent cgroup in every hierarchy (as dockerd keeps `docker`);
/// after a test run it is removed where it is empty, so the run leaves nothing behind. A
/// parent that still has children (a berthd of the user's running) is left alone: rmdir of a
/// non-empty cgroup fails.
fn remove_empty_cgroup_parents() {
    let mut candidates = vec![std::path::PathBuf::from("/sys/fs/cgroup/berth")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        candidates.extend(rd.flatten().map(|e| e.path().join("berth")));
    }
    for c in candidates {
        if c.is_dir() {
            let _ = std::fs::remove_dir(&c);
        }
    }
}
