//! Runtime benchmark: create+start+wait+delete of `/bin/true` on one busybox bundle, through
//! berth's `Runtime` (shim + libcontainer + overlay rootfs), `runc run` and `crun run`.
//!
//! `runtime_bench [iterations] [runtimes]` prints a Markdown table (medians and ratios) on
//! stdout; `runtimes` is a comma-separated subset of `berth,runc,crun` (default: all three; the
//! ratio column needs crun), handy under `perf` or `strace` when only berth matters.
//! `BERTH_BENCH_DIR` sets the parent of the work dir (default `/tmp`).
//! crun refuses this host's hybrid cgroups; it runs in a private mount namespace with the
//! cgroup2 mount at /sys/fs/cgroup/unified unmounted (`crun-child` mode of this binary, started
//! under `unshare --mount --propagation private`). Run as root; `bench/run` is the entry point.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_runtime::spec::{self, HostFacts, ImageConfig, RunOptions, SpecInputs};
use berth_runtime::{CreateRequest, Runtime, RuntimeConfig};

const WARMUP: usize = 3;

fn busybox_rootfs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", dir.join("bin/true"))?;
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh"))?;
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

fn image() -> ImageConfig {
    ImageConfig {
        cmd: Some(vec!["/bin/true".into()]),
        ..Default::default()
    }
}

/// The same OCI spec berth generates, written as a plain bundle for runc and crun.
fn write_bundle(bundle: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let opts = RunOptions::default();
    let host = HostFacts {
        rlimit_hard: [("RLIMIT_NOFILE".to_string(), 20_000u64)].into(),
        passwd: String::new(),
        group: String::new(),
        ..Default::default()
    };
    let img = image();
    let spec = spec::build_spec(&SpecInputs {
        id: "berth-bench",
        rootfs,
        image: &img,
        options: &opts,
        host: &host,
        etc_files: vec![],
    })?;
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    Ok(())
}

fn time_ms(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn run_oci(bin: &str, root: &Path, bundle: &Path, id: &str) -> Result<()> {
    let st = Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("spawn {bin}"))?;
    if !st.success() {
        bail!("{bin} run {id}: {st}");
    }
    Ok(())
}

/// One runtime under test: `run` does one create+start+wait+delete and returns its ms.
trait Runner {
    fn run(&mut self) -> Result<f64>;
    /// berth's per-run phases, warm-up runs included.
    fn phases(&self) -> &[[f64; 4]] {
        &[]
    }
    /// Waits (untimed) for work the runtime left running in the background.
    fn settle(&self) {}
}

/// `runc run` (or `crun run`) on the shared bundle, state under the work dir.
struct Oci {
    bin: &'static str,
    root: PathBuf,
    bundle: PathBuf,
    seq: usize,
}

impl Oci {
    fn new(bin: &'static str, work: &Path, bundle: &Path) -> Result<Oci> {
        let root = work.join(format!("{bin}-state"));
        std::fs::create_dir_all(&root)?;
        Ok(Oci {
            bin,
            root,
            bundle: bundle.to_path_buf(),
            seq: 0,
        })
    }
}

impl Runner for Oci {
    fn run(&mut self) -> Result<f64> {
        self.seq += 1;
        let id = format!("bench-{}-{}-{}", self.bin, std::process::id(), self.seq);
        time_ms(|| run_oci(self.bin, &self.root, &self.bundle, &id))
    }
}

/// Per-run berth phases: create, start, wait, delete (ms).
type Phases = Vec<[f64; 4]>;

/// berth's whole `Runtime` path, one runtime opened for the whole benchmark (as berthd
/// does).
struct Berth {
    rt: Runtime,
    seq: usize,
    phases: Phases,
}

const BENCH_CHAIN: &str = "sha256:62656e6368000000000000000000000000000000000000000000000000000000";

impl Berth {
    fn new(work: &Path) -> Result<Berth> {
        let exe = std::env::current_exe()?;
        let shim = exe
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("berth-shim"))
            .filter(|p| p.is_file())
            .or_else(RuntimeConfig::shim_next_to_current_exe)
            .context("berth-shim binary not found next to the bench binary")?;
        let rt = Runtime::open(RuntimeConfig {
            data_root: work.join("berth-data"),
            exec_root: work.join("berth-run"),
            shim_path: shim,
        })?;
        if !rt.snapshots().has_layer(BENCH_CHAIN)? {
            let dir = rt.snapshots().begin_layer()?;
            busybox_rootfs(&dir)?;
            rt.snapshots().commit_layer(&dir, BENCH_CHAIN)?;
        }
        Ok(Berth {
            rt,
            seq: 0,
            phases: Phases::new(),
        })
    }
}

impl Runner for Berth {
    fn run(&mut self) -> Result<f64> {
        self.seq += 1;
        let id = format!("bench-{}-{}", std::process::id(), self.seq);
        let req = CreateRequest {
            id: id.clone(),
            layers: vec![BENCH_CHAIN.to_string()],
            image: image(),
            options: RunOptions::default(),
        };
        let rt = &self.rt;
        let mut marks = [0f64; 4];
        let ms = time_ms(|| {
            let t = Instant::now();
            rt.create(req)?;
            marks[0] = t.elapsed().as_secs_f64() * 1000.0;
            rt.start(&id)?;
            marks[1] = t.elapsed().as_secs_f64() * 1000.0;
            let exit = rt
                .wait(&id, Some(Duration::from_secs(30)))?
                .context("no exit")?;
            marks[2] = t.elapsed().as_secs_f64() * 1000.0;
            if exit.code != 0 {
                bail!("/bin/true exited {}", exit.code);
            }
            rt.delete(&id, false)?;
            marks[3] = t.elapsed().as_secs_f64() * 1000.0;
            Ok(())
        })?;
        self.phases.push([
            marks[0],
            marks[1] - marks[0],
            marks[2] - marks[1],
            marks[3] - marks[2],
        ]);
        Ok(ms)
    }

    fn phases(&self) -> &[[f64; 4]] {
        &self.phases
    }

    fn settle(&self) {
        self.rt.settle(Duration::from_secs(30));
    }
}

/// In a private mount namespace: hide the cgroup2 mount, then run crun once per line read
/// from stdin and print each time.
fn crun_child(work: &Path, bundle: &Path) -> Result<()> {
    nix::mount::umount2("/sys/fs/cgroup/unified", nix::mount::MntFlags::MNT_DETACH)
        .context("umount /sys/fs/cgroup/unified")?;
    let mut crun = Oci::new("crun", work, bundle)?;
    let mut out = std::io::stdout();
    for line in std::io::stdin().lines() {
        line?;
        writeln!(out, "{}", crun.run()?)?;
        out.flush()?;
    }
    Ok(())
}

/// crun, through a `crun-child` of this binary started under `unshare --mount`.
struct Crun {
    child: std::process::Child,
    to: Option<std::process::ChildStdin>,
    from: std::io::BufReader<std::process::ChildStdout>,
}

impl Crun {
    fn new(work: &Path, bundle: &Path) -> Result<Crun> {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(std::env::current_exe()?)
            .arg("crun-child")
            .arg(work)
            .arg(bundle)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let to = child.stdin.take().context("crun child stdin")?;
        let from = std::io::BufReader::new(child.stdout.take().context("crun child stdout")?);
        Ok(Crun {
            child,
            to: Some(to),
            from,
        })
    }
}

impl Runner for Crun {
    fn run(&mut self) -> Result<f64> {
        use std::io::BufRead;
        let to = self.to.as_mut().context("crun child closed")?;
        writeln!(to, "run")?;
        to.flush()?;
        let mut line = String::new();
        if self.from.read_line(&mut line)? == 0 {
            bail!("crun child ended: {:?}", self.child.try_wait()?);
        }
        line.trim().parse::<f64>().context("crun child output")
    }
}

impl Drop for Crun {
    fn drop(&mut self) {
        // Closing its stdin ends the child.
        self.to.take();
        let _ = self.child.wait();
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn p90(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[(s.len() * 9 / 10).min(s.len() - 1)]
}

fn print_table(rows: &[(&str, Vec<f64>)]) {
    let crun = rows
        .iter()
        .find(|(name, _)| name.starts_with("crun"))
        .map(|(_, v)| median(v))
        .unwrap_or(f64::NAN);
    println!("| runtime | median ms | p90 ms | median / crun |");
    println!("|---|---|---|---|");
    for (name, v) in rows {
        let ratio = if crun.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}x", median(v) / crun)
        };
        println!("| {name} | {:.1} | {:.1} | {ratio} |", median(v), p90(v));
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("crun-child") {
        let work = PathBuf::from(&args[2]);
        let bundle = PathBuf::from(&args[3]);
        return crun_child(&work, &bundle);
    }
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let only: Vec<&str> = args
        .get(2)
        .map(|s| s.split(',').collect())
        .unwrap_or_else(|| vec!["berth", "runc", "crun"]);
    let enabled = |name: &str| only.contains(&name);
    // The work dir (bundle, state, berth's data and exec roots) goes under $BERTH_BENCH_DIR,
    // default /tmp. On an ext4 without a journal (this VM's root fs) creating an inode costs
    // more the more inodes were deleted in the same block group in the last minutes, and /tmp
    // is where tests churn: the parent dir changes every runtime's figures.
    let parent =
        std::env::var_os("BERTH_BENCH_DIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let work = parent.join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let bundle = work.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    write_bundle(&bundle)?;

    // The runtimes take turns run by run (the first of each turn rotating), so that load
    // from other work on the machine, which comes and goes within seconds on a shared VM,
    // falls on every runtime alike.
    let mut phases = Phases::new();
    type Rows<'a> = Vec<(&'a str, Vec<f64>)>;
    let result = (|| -> Result<(Rows<'_>, Rows<'_>)> {
        let mut runners: Vec<(&str, Box<dyn Runner>)> = Vec::new();
        if enabled("berth") {
            runners.push((
                "berth (Runtime: overlay + shim + libcontainer)",
                Box::new(Berth::new(&work)?),
            ));
        }
        if enabled("runc") {
            runners.push(("runc run", Box::new(Oci::new("runc", &work, &bundle)?)));
        }
        if enabled("crun") {
            runners.push((
                "crun run (private mount ns, cgroup2 unmounted)",
                Box::new(Crun::new(&work, &bundle)?),
            ));
        }
        for (_, r) in runners.iter_mut() {
            for _ in 0..WARMUP {
                r.run()?;
            }
            r.settle();
        }
        let k = runners.len();
        let mut turns: Vec<Vec<f64>> = vec![Vec::new(); k];
        for i in 0..n {
            for j in 0..k {
                let idx = (i + j) % k;
                turns[idx].push(runners[idx].1.run()?);
                // berth's background work (trash, next standby shim) must not fall on the
                // next runtime's run.
                runners[idx].1.settle();
            }
        }
        for (_, r) in &runners {
            phases.extend(r.phases().iter().skip(WARMUP));
        }
        // Back to back: blocks of BLOCK runs of one runtime, the runtimes still taking turns
        // block by block; the first run of each block (right after another runtime's) is not
        // counted. A start right after one of its own kind can find the kernel's cgroup state
        // (and caches) as that one left them.
        const BLOCK: usize = 5;
        let mut alone: Vec<Vec<f64>> = vec![Vec::new(); k];
        for i in 0..n.div_ceil(BLOCK - 1) {
            for j in 0..k {
                let idx = (i + j) % k;
                for b in 0..BLOCK {
                    let ms = runners[idx].1.run()?;
                    if b > 0 {
                        alone[idx].push(ms);
                    }
                }
                runners[idx].1.settle();
            }
        }
        let names: Vec<&str> = runners.iter().map(|(name, _)| *name).collect();
        drop(runners);
        Ok((
            names.iter().copied().zip(turns).collect(),
            names.iter().copied().zip(alone).collect(),
        ))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let (turns, alone) = result?;
    println!(
        "create+start+wait+delete of `/bin/true`, busybox bundle, {n} runs each, the runtimes \
         taking turns run by run (after {WARMUP} warm-up runs each; berth's background work, \
         trash removal and its next standby shim, done before the next run and not timed):\n"
    );
    print_table(&turns);
    println!(
        "\nBack to back: blocks of 5 runs of one runtime, the runtimes taking turns block by \
         block, the first run of each block not counted ({} runs each; berth's background work \
         competes with its next run):\n",
        alone.first().map_or(0, |r| r.1.len())
    );
    print_table(&alone);
    if phases.is_empty() {
        return Ok(());
    }
    let col = |i: usize| median(&phases.iter().map(|p| p[i]).collect::<Vec<_>>());
    println!(
        "\nberth phases (runs taking turns), median ms: create {:.1} (records, spec), start {:.1} (shim spawn, overlay \
         mount in the shim's mount namespace, libcontainer create+start), wait {:.1} (run, reap, \
         cgroup removal, exit record), delete {:.1} (remove dirs).",
        col(0),
        col(1),
        col(2),
        col(3)
    );
    Ok(())
}
