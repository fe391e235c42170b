//! kill -9 chaos: berthd is killed with SIGKILL at a random moment while pulls, runs,
//! execs, builds and service scaling are in flight, then started again on the same data
//! root; after every restart the test checks what the daemon owns:
//!
//! - every stored blob (`**/blobs/sha256/<hex>`) re-verifies against its digest;
//! - every image record points at layers that exist (a container can be created from it),
//!   every container record can be inspected and its rootfs directories exist;
//! - the containers that were running still run, and the log of a ticker container keeps
//!   growing, complete and in order;
//! - the single-node swarm's service converges to its replica count again.
//!
//! At the end, with everything removed and the swarm left, nothing is leaked: no mount under
//! the daemon's roots, no cgroup of any container the test saw, no shim process, and the
//! daemon's network namespace holds the same links and nftables rules as before the test.
//!
//! `BERTH_CHAOS_CYCLES` sets the number of kill cycles (10 by default; bench/chaos.sh runs
//! 50), `BERTH_CHAOS_SEED` replays a run (the seed is printed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use berth_testkit::daemon::{retry, DockerEnv};
use sha2::Digest;

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The work in flight when the daemon is killed.
#[derive(Debug, Clone, Copy)]
enum Op {
    Pull,
    Run,
    Exec,
    Build,
    Scale,
}

const OPS: [Op; 5] = [Op::Pull, Op::Run, Op::Exec, Op::Build, Op::Scale];

/// Every `<...>/blobs/sha256/<hex>` file under `root` (ingest directories excluded: they
/// hold partial downloads by design).
fn stored_blobs(root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for ent in rd {
        let ent = ent?;
        let ty = ent.file_type()?;
        let p = ent.path();
        if ty.is_dir() {
            if p.ends_with("ingest") {
                continue;
            }
            // Container root filesystems can be large trees of their own; blobs never live
            // below a mounted rootfs.
            if p.file_name()
                .is_some_and(|n| n == "merged" || n == "rootfs")
            {
                continue;
            }
            stored_blobs(&p, out)?;
        } else if ty.is_file()
            && p.parent().is_some_and(|d| d.ends_with("blobs/sha256"))
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn verify_blobs(data_root: &Path) -> Result<usize> {
    let mut blobs = Vec::new();
    stored_blobs(data_root, &mut blobs)?;
    for p in &blobs {
        let mut f = std::fs::File::open(p)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        let want = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        ensure!(got == want, "blob {} holds sha256:{got}", p.display());
    }
    Ok(blobs.len())
}

/// `docker <args>` lines, trimmed, empty ones dropped.
fn lines(e: &DockerEnv, args: &[&str]) -> Result<Vec<String>> {
    Ok(e.ok(args)?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The ticker's log lines must be `tick0, tick1, ...` with none missing; returns how many.
fn ticker_lines(e: &DockerEnv) -> Result<usize> {
    let logs = e.ok(&["logs", "ticker"])?;
    let got: Vec<&str> = logs.lines().collect();
    for (i, l) in got.iter().enumerate() {
        ensure!(
            *l == format!("tick{i}"),
            "ticker log line {i} is {l:?}: lost or out of order"
        );
    }
    Ok(got.len())
}

struct Chaos {
    e: DockerEnv,
    rng: Rng,
    bb: String,
    big: String,
    /// Every container id the test saw, for the cgroup leak check.
    seen: BTreeSet<String>,
    /// Containers (not service tasks) running at the last check, by id.
    running: BTreeSet<String>,
    ticks: usize,
    replicas: u64,
    seq: usize,
}

impl Chaos {
    /// Starts the in-flight work of `op` as docker CLI processes (not waited for).
    fn start(&mut self, op: Op) -> Result<Vec<Child>> {
        let d = &self.e.d;
        let spawn = |args: &[&str]| -> Result<Child> {
            Ok(d.docker_cmd(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?)
        };
        self.seq += 1;
        let n = self.seq;
        Ok(match op {
            Op::Pull => {
                // A fresh pull each time: the image goes first (unless a container uses it).
                let _ = d.docker(&["rmi", &self.big]);
                vec![spawn(&["pull", &self.big])?]
            }
            Op::Run => vec![
                spawn(&["run", "--rm", &self.bb, "sh", "-c", "echo hi; sleep 0.3"])?,
                spawn(&[
                    "run",
                    "-d",
                    "--name",
                    &format!("kept{n}"),
                    &self.bb,
                    "sleep",
                    "1000",
                ])?,
            ],
            Op::Exec => vec![
                spawn(&["exec", "ticker", "sh", "-c", "echo exec; sleep 0.5"])?,
                spawn(&["exec", "ticker", "true"])?,
            ],
            Op::Build => {
                let dir = self.e.d.root().join(format!("ctx{n}"));
                std::fs::create_dir_all(&dir)?;
                std::fs::write(
                    dir.join("Dockerfile"),
                    format!(
                        "FROM {}\nRUN echo {n} > /n && sleep 0.2\nRUN cat /n > /m\n",
                        self.bb
                    ),
                )?;
                let mut c = d.docker_cmd(&["build", "-q", "-t", &format!("chaos{n}")]);
                c.arg(&dir)
                    .env("DOCKER_BUILDKIT", "0")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                vec![c.spawn()?]
            }
            Op::Scale => {
                self.replicas = 1 + self.rng.below(4);
                vec![spawn(&[
                    "service",
                    "scale",
                    "-d",
                    &format!("web={}", self.replicas),
                ])?]
            }
        })
    }

    /// What must hold after every restart.
    fn check(&mut self, cycle: usize) -> Result<()> {
        let data_root = self.e.d.data_root();
        let blobs = verify_blobs(&data_root)?;

        // Every image can back a container (its layers exist).
        let images = lines(&self.e, &["image", "ls", "-q", "--no-trunc"])?;
        let images: BTreeSet<String> = images.into_iter().collect();
        for img in &images {
            let id = self
                .e
                .ok(&["create", "--entrypoint", "/bin/true", img])
                .with_context(|| format!("cycle {cycle}: image {img} cannot back a container"))?;
            self.e.ok(&["rm", id.trim()])?;
        }

        // Containers the runtime holds, with a daemon record or not (a create cut short
        // leaves no record: only the leak check at the end would see what it holds).
        self.seen.extend(runtime_containers(&data_root));

        // Every container record inspects, its rootfs directories exist.
        let all = lines(&self.e, &["ps", "-aq", "--no-trunc"])?;
        for id in &all {
            self.seen.insert(id.clone());
            let dirs = self
                .e
                .inspect(id, "{{range $k, $v := .GraphDriver.Data}}{{$v}}\n{{end}}")?;
            for d in dirs
                .lines()
                .flat_map(|l| l.split(':'))
                .filter(|d| !d.is_empty())
            {
                ensure!(
                    Path::new(d).exists(),
                    "cycle {cycle}: container {id} points at missing {d}"
                );
            }
        }

        // What ran before still runs (service tasks may be rescaled: left out).
        let now_running: BTreeSet<String> = lines(
            &self.e,
            &["ps", "-q", "--no-trunc", "--filter", "status=running"],
        )?
        .into_iter()
        .collect();
        let tasks: BTreeSet<String> = lines(
            &self.e,
            &[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                "label=com.docker.swarm.task.id",
            ],
        )?
        .into_iter()
        .collect();
        for id in &self.running {
            ensure!(
                now_running.contains(id) || tasks.contains(id),
                "cycle {cycle}: container {id} was running and is not after the restart"
            );
        }
        self.running = now_running.difference(&tasks).cloned().collect();

        // The ticker's log is complete and keeps growing.
        let before = self.ticks;
        self.ticks = retry(Duration::from_secs(10), || {
            let n = ticker_lines(&self.e)?;
            Ok((n > before).then_some(n))
        })
        .with_context(|| format!("cycle {cycle}: the ticker's log stopped growing at {before}"))?;

        // The service converges to the last scale that reached the daemon: the one asked,
        // or the one before if the kill came first; in any case running == desired.
        let converged = retry(Duration::from_secs(60), || {
            let r = self
                .e
                .ok(&["service", "ls", "--format", "{{.Replicas}}"])?
                .trim()
                .to_string();
            let (run, want) = r.split_once('/').unwrap_or(("", ""));
            Ok((run == want && !want.is_empty()).then_some(r))
        })
        .with_context(|| format!("cycle {cycle}: service web did not converge"))?;
        eprintln!(
            "cycle {cycle}: {blobs} blobs verified, {} images, {} containers, ticker at {} lines, web {converged}",
            images.len(),
            all.len(),
            self.ticks
        );
        Ok(())
    }
}

/// The container directories of the daemon's runtime (`<data-root>/runtime/containers`).
fn runtime_containers(data_root: &Path) -> Vec<String> {
    std::fs::read_dir(data_root.join("runtime").join("containers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line mentions `needle` (shims of this daemon's containers).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(ent.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// Links (name and kind) and the nftables ruleset (without counters and handles) of the
/// daemon's network namespace.
fn netns_view(e: &DockerEnv) -> Result<(BTreeMap<String, String>, String)> {
    let out = e.d.in_netns("ip", &["-d", "-o", "link", "show"]).output()?;
    let mut links = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = l.split(": ");
        let (Some(_), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name).to_string();
        let kind = ["veth", "vxlan", "bridge", "wireguard", "tun"]
            .into_iter()
            .find(|k| l.contains(&format!(" {k} ")))
            .unwrap_or("other");
        links.insert(name, kind.to_string());
    }
    let nft = e.d.in_netns("nft", &["-s", "list", "ruleset"]).output()?;
    Ok((links, String::from_utf8_lossy(&nft.stdout).into_owned()))
}

#[test]
fn kill9_during_pulls_runs_execs_builds_and_scaling_loses_and_leaks_nothing() -> Result<()> {
    let cycles: usize = std::env::var("BERTH_CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("BERTH_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("chaos: {cycles} cycles, BERTH_CHAOS_SEED={seed}");

    let e = DockerEnv::new()?;
    let baseline = netns_view(&e)?;
    let bb = e.img("busybox:latest");
    let big = e.img("big:latest");
    e.ok(&["pull", &bb])?;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        &bb,
        "sh",
        "-c",
        "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done",
    ])?;
    e.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    e.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        &bb,
        "sleep",
        "1000",
    ])?;
    let mut c = Chaos {
        e,
        rng: Rng(seed),
        bb,
        big,
        seen: BTreeSet::new(),
        running: BTreeSet::new(),
        ticks: 0,
        replicas: 2,
        seq: 0,
    };
    c.check(0)?;

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for cycle in 1..=cycles {
        let op = OPS[c.rng.below(OPS.len() as u64) as usize];
        *counts.entry(format!("{op:?}")).or_default() += 1;
        let delay = Duration::from_millis(c.rng.below(1500));
        eprintln!("cycle {cycle}: {op:?}, kill -9 after {delay:?}");
        let mut clients = c.start(op)?;
        std::thread::sleep(delay);
        c.e.d.kill9()?;
        // The clients lose their daemon; end them (our own children, by PID).
        for cl in &mut clients {
            let _ = cl.kill();
            let _ = cl.wait();
        }
        c.e.d.restart()?;
        c.check(cycle)
            .with_context(|| format!("after {op:?}, seed {seed}"))?;
    }
    eprintln!(
        "chaos: operations {counts:?}, wanted replicas at the end {}",
        c.replicas
    );

    // Remove everything; then nothing of it may be left.
    c.e.ok(&["service", "rm", "web"])?;
    retry(Duration::from_secs(30), || {
        let left = lines(
            &c.e,
            &[
                "ps",
                "-aq",
                "--filter",
                "label=com.docker.swarm.service.name=web",
            ],
        )?;
        Ok(left.is_empty().then_some(()))
    })
    .context("service tasks not removed")?;
    c.e.ok(&["swarm", "leave", "--force"])?;
    for id in lines(&c.e, &["ps", "-aq", "--no-trunc"])? {
        c.seen.insert(id.clone());
        c.e.ok(&["rm", "-f", &id])?;
    }
    for img in lines(&c.e, &["image", "ls", "-q", "--no-trunc"])? {
        c.e.ok(&["rmi", "-f", &img])?;
    }
    let exec_root = c.e.d.exec_root();
    let data_root = c.e.d.data_root();
    let roots = [data_root.clone(), exec_root.clone()];
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
        .collect();
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
    let shims = processes_mentioning(&exec_root.display().to_string());
    // berthd itself runs with --exec-root in its command line.
    let own = c.e.d.pid();
    let shims: Vec<_> = shims.into_iter().filter(|(p, _)| Some(*p) != own).collect();
    ensure!(shims.is_empty(), "processes left: {shims:?}");
    let left = runtime_containers(&data_root);
    ensure!(left.is_empty(), "runtime containers left: {left:?}");
    let mut cgroups = Vec::new();
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        for id in &c.seen {
            let p = ctrl.path().join("berth").join(id);
            if p.exists() {
                cgroups.push(p);
            }
        }
    }
    ensure!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let after = retry(Duration::from_secs(10), || {
        let v = netns_view(&c.e)?;
        Ok((v == baseline).then_some(v))
    });
    if after.is_err() {
        let now = netns_view(&c.e)?;
        bail!(
            "network namespace differs from before the test:\nlinks before {:?}\nlinks after {:?}\nnft before:\n{}\nnft after:\n{}",
            baseline.0,
            now.0,
            baseline.1,
            now.1
        );
    }
    Ok(())
}

/// What a create interrupted by kill -9 leaves before its record is written (a pinned
/// network namespace, name files) is released when the daemon starts again; a container
/// with a record keeps its own.
#[test]
fn a_restart_releases_the_namespace_of_a_container_without_record() -> Result<()> {
    let mut e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let kept = e
        .ok(&["run", "-d", &bb, "sleep", "300"])?
        .trim()
        .to_string();
    e.d.kill9()?;
    let orphan = "0f".repeat(32);
    let netns = e.d.exec_root().join("netns").join(&orphan);
    std::fs::write(&netns, b"")?;
    let pinned = std::process::Command::new("unshare")
        .arg(format!("--net={}", netns.display()))
        .arg("true")
        .status()?;
    ensure!(pinned.success(), "unshare --net={} failed", netns.display());
    let files = e.d.data_root().join("netfiles").join(&orphan);
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("hosts"), b"127.0.0.1 localhost\n")?;
    e.d.restart()?;
    let mounted = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&netns.display().to_string()));
    ensure!(!mounted, "the orphan's namespace is still pinned");
    ensure!(
        !netns.exists() && !files.exists(),
        "the orphan's files are left"
    );
    ensure!(
        e.d.exec_root().join("netns").join(&kept).exists(),
        "the running container lost its namespace"
    );
    assert_eq!(e.inspect(&kept, "{{.State.Running}}")?, "true");
    e.ok(&["exec", &kept, "true"])?;
    Ok(())
}

/// A removal cut short by kill -9 after the runtime's part (state directory, rootfs
/// snapshot, both moved to the trash) and before the record was deleted: the restarted
/// daemon finishes it, so no container record points at data that no longer exists and
/// the name is free again.
#[test]
fn a_restart_finishes_a_removal_cut_short() -> Result<()> {
    let mut e = DockerEnv::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", &bb])?;
    let name = format!("cut-{}", std::process::id());
    let cut = e
        .ok(&["run", "--name", &name, &bb, "true"])
        .and_then(|_| e.ok(&["inspect", "-f", "{{.Id}}", &name]))?
        .trim()
        .to_string();
    let kept = e.ok(&["create", &bb, "true"])?.trim().to_string();
    e.d.kill9()?;
    // What `Runtime::delete` does before the daemon deletes the record.
    let runtime = e.d.data_root().join("runtime");
    let trash = runtime.join("trash");
    std::fs::create_dir_all(&trash)?;
    for (dir, tag) in [
        (runtime.join("containers").join(&cut), "state"),
        (runtime.join("snapshots").join("active").join(&cut), "upper"),
    ] {
        ensure!(dir.is_dir(), "{} does not exist", dir.display());
        std::fs::rename(&dir, trash.join(format!("{cut}.{tag}")))?;
    }
    e.d.restart()?;
    let all = lines(&e, &["ps", "-aq", "--no-trunc"])?;
    ensure!(
        !all.contains(&cut),
        "the half-removed container is still listed: {all:?}"
    );
    ensure!(all.contains(&kept), "the other container is gone: {all:?}");
    let out = e.d.docker(&["inspect", &cut])?;
    ensure!(
        !out.status.success(),
        "inspect of the removed container worked"
    );
    e.ok(&["run", "--rm", "--name", &name, &bb, "true"])
        .context("the name of the removed container is not free")?;
    e.ok(&["rm", &kept])?;
    Ok(())
}
