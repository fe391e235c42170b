//! kill -9 of berthd at random moments during pulls, runs and execs, then a restart, for
//! CHAOS_CYCLES cycles (default 10; bench: 50). After every restart: every stored blob
//! re-hashes to its name, every image and container record inspects, the long-running
//! container still runs and its log still grows. At the end everything is removed and no
//! mount is left under the daemon's directories. (Issue #19; builds and service scaling
//! are not in the workload yet.)

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_testkit::daemon::{retry, DockerEnv};
use sha2::{Digest, Sha256};

/// Every file named by 64 hex digits in a `sha256` directory under `root` (the blob
/// store's committed blobs) hashes to its name; returns how many were checked.
fn verify_blobs(root: &Path) -> Result<usize> {
    let mut checked = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd {
            let entry = entry?;
            let ft = entry.file_type()?;
            let path = entry.path();
            if ft.is_dir() {
                // Container root filesystems are not blobs; skip the big trees.
                if !path.ends_with("rootfs") && !path.ends_with("diff") {
                    stack.push(path);
                }
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let in_sha256 = dir.file_name().is_some_and(|n| n == "sha256");
            if ft.is_file()
                && in_sha256
                && name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
            {
                let data = std::fs::read(&path)?;
                let got = hex::encode(Sha256::digest(&data));
                if got != name {
                    bail!("blob {} hashes to {got}", path.display());
                }
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// A small deterministic generator (xorshift), seeded from the clock and printed so a
/// failing run can be replayed with CHAOS_SEED.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn spawn_quiet(e: &DockerEnv, args: &[&str]) -> Result<Child> {
    let mut c = e.d.docker_cmd(args);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    Ok(c.spawn()?)
}

fn log_lines(e: &DockerEnv, name: &str) -> Result<usize> {
    Ok(e.ok(&["logs", name])?.lines().count())
}

#[test]
fn kill9_during_pulls_runs_and_execs_loses_and_leaks_nothing() -> Result<()> {
    let cycles: usize = std::env::var("CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("chaos: {cycles} cycles, CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let mut e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let pullable: Vec<String> =
        e.fx.images
            .keys()
            .filter(|k| k.as_str() != "busybox:latest")
            .map(|k| e.img(k))
            .collect();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        &bb,
        "sh",
        "-c",
        "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done",
    ])?;
    for cycle in 0..cycles {
        let pull = &pullable[(rng.next() as usize) % pullable.len()];
        let name = format!("c{cycle}");
        let mut work = vec![
            spawn_quiet(&e, &["pull", "-q", pull])?,
            spawn_quiet(&e, &["run", "--rm", &bb, "echo", "hi"])?,
            spawn_quiet(&e, &["run", "-d", "--name", &name, &bb, "sleep", "1000"])?,
            spawn_quiet(&e, &["exec", "ticker", "echo", "exec"])?,
        ];
        std::thread::sleep(Duration::from_millis(rng.next() % 1500));
        e.d.kill9()?;
        for c in &mut work {
            // The CLI fails once its daemon is gone; a stuck one is ended by its PID.
            if retry(Duration::from_secs(20), || Ok(c.try_wait()?.map(|_| ()))).is_err() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        e.d.restart()?;

        let blobs = verify_blobs(&e.d.data_root()).context("blob store")?;
        for id in e.ok(&["images", "-q", "--no-trunc"])?.split_whitespace() {
            e.ok(&["image", "inspect", id])
                .with_context(|| format!("cycle {cycle}: image {id} after restart"))?;
        }
        for id in e.ok(&["ps", "-aq", "--no-trunc"])?.split_whitespace() {
            e.ok(&["inspect", id])
                .with_context(|| format!("cycle {cycle}: container {id} after restart"))?;
        }
        assert_eq!(
            e.inspect("ticker", "{{.State.Running}}")?,
            "true",
            "cycle {cycle}"
        );
        let before = log_lines(&e, "ticker")?;
        retry(Duration::from_secs(30), || {
            Ok((log_lines(&e, "ticker")? > before).then_some(()))
        })
        .with_context(|| format!("cycle {cycle}: ticker's log stopped growing\n{}", e.d.log()))?;
        eprintln!("chaos: cycle {cycle} ok ({blobs} blobs verified)");
    }
    // A container still starts after all that.
    assert_eq!(
        e.ok(&["run", "--rm", &bb, "echo", "after"])?.trim(),
        "after"
    );
    for id in e.ok(&["ps", "-aq"])?.split_whitespace() {
        e.ok(&["rm", "-f", id])?;
    }
    let roots = [e.d.root().to_path_buf(), e.d.exec_root()];
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let leaked: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
        .collect();
    assert!(leaked.is_empty(), "mounts left after rm -f: {leaked:?}");
    Ok(())
}
