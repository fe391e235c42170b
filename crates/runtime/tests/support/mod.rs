//! Root test support: a busybox rootfs from the fixture registry in a private snapshot store,
//! a `Runtime` with unique roots per test, and a guard that removes every container, mount,
//! cgroup and shim the test made, even when the test fails.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_runtime::logs::LogRecord;
use berth_runtime::spec::{ImageConfig, RunOptions};
use berth_runtime::{CreateRequest, ExitStatus, LogOptions, Runtime, RuntimeConfig};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The busybox image from the fixture: (layer blobs as (diff_id, gzip bytes), config).
struct Busybox {
    layers: Vec<(String, Vec<u8>)>,
    config: ImageConfig,
}

fn fetch(registry: &str, repo: &str, digest: &str) -> Result<Vec<u8>> {
    let url = format!("http://{registry}/v2/{repo}/blobs/{digest}");
    let resp = ureq::get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let mut buf = Vec::new();
    resp.into_reader().read_to_end(&mut buf)?;
    Ok(buf)
}

fn busybox() -> Result<&'static Busybox> {
    static CELL: OnceLock<Busybox> = OnceLock::new();
    if let Some(b) = CELL.get() {
        return Ok(b);
    }
    let fx = berth_testkit::Fixture::from_env()?;
    let img = fx.image("busybox:latest");
    let mut layers = Vec::new();
    for l in &img.layers {
        layers.push((
            l.diff_id.clone(),
            fetch(&fx.registry, "busybox", &l.digest)?,
        ));
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&fetch(&fx.registry, "busybox", &img.config_digest)?)?;
    let config: ImageConfig =
        serde_json::from_value(cfg.get("config").cloned().unwrap_or_default())
            .context("image config")?;
    Ok(CELL.get_or_init(|| Busybox { layers, config }))
}

/// Unique short name for this process and test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A runtime in throwaway roots; cleans up on drop.
pub struct TestRuntime {
    pub rt: Runtime,
    pub root: PathBuf,
    pub layers: Vec<String>,
    pub image: ImageConfig,
    ids: std::sync::Mutex<Vec<String>>,
    owner: bool,
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "berth-runtime integration tests must run as root"
    );
}

impl TestRuntime {
    pub fn new() -> Result<Self> {
        require_root();
        let root = PathBuf::from(format!("/tmp/{}", unique("brt")));
        Self::at(root, true)
    }

    /// A runtime over existing roots (live restore); `owner` decides who cleans up.
    pub fn at(root: PathBuf, owner: bool) -> Result<Self> {
        let cfg = RuntimeConfig {
            data_root: root.join("d"),
            exec_root: root.join("r"),
            shim_path: PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")),
        };
        let rt = Runtime::open(cfg)?;
        let bb = busybox()?;
        let mut parent: Option<String> = None;
        let mut layers = Vec::new();
        for (diff_id, gz) in &bb.layers {
            let chain = berth_runtime::snapshot::chain_id(parent.as_deref(), diff_id);
            if !rt.snapshots().has_layer(&chain)? {
                let dir = rt.snapshots().begin_layer()?;
                let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
                ar.set_preserve_permissions(true);
                ar.set_preserve_ownerships(true);
                ar.unpack(&dir).context("unpack busybox layer")?;
                rt.snapshots().commit_layer(&dir, &chain)?;
            }
            layers.push(chain.clone());
            parent = Some(chain);
        }
        Ok(TestRuntime {
            rt,
            root,
            layers,
            image: bb.config.clone(),
            ids: std::sync::Mutex::new(Vec::new()),
            owner,
        })
    }

    pub fn request(&self, id: &str, options: RunOptions) -> CreateRequest {
        CreateRequest {
            id: id.to_string(),
            layers: self.layers.clone(),
            image: self.image.clone(),
            options,
        }
    }

    /// Creates (and tracks for cleanup) a container.
    pub fn create(&self, options: RunOptions) -> Result<String> {
        let id = unique("c");
        self.ids.lock().unwrap().push(id.clone());
        self.rt.create(self.request(&id, options))?;
        Ok(id)
    }

    pub fn track(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// Creates, starts and waits for a container running `cmd`.
    pub fn run(&self, cmd: &[&str], mut options: RunOptions) -> Result<(String, ExitStatus)> {
        options.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        let id = self.create(options)?;
        self.rt.start(&id)?;
        let exit = self
            .rt
            .wait(&id, Some(Duration::from_secs(60)))?
            .context("container did not exit within 60 s")?;
        Ok((id, exit))
    }

    pub fn logs(&self, id: &str) -> Result<Vec<LogRecord>> {
        self.rt
            .logs(id, LogOptions::all())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(Into::into)
    }

    /// The concatenated text of one stream.
    pub fn output(&self, id: &str, stderr: bool) -> Result<String> {
        let opts = LogOptions {
            stdout: !stderr,
            stderr,
            ..Default::default()
        };
        Ok(self
            .rt
            .logs(id, opts)?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.log).into_owned())
            .collect())
    }
}

/// Best-effort removal of everything below `root` and of the containers' cgroups.
fn cleanup(rt: &Runtime, root: &Path, ids: &[String]) {
    for id in ids {
        // Shim diagnostics (panics, errors) help explain a failure.
        let diag = rt
            .config()
            .data_root
            .join("containers")
            .join(id)
            .join("shim.stderr");
        if let Ok(text) = std::fs::read_to_string(&diag) {
            if !text.is_empty() {
                eprintln!("shim of {id} wrote:\n{text}");
            }
        }
        let _ = rt.delete(id, true);
        for ctrl in [
            "memory",
            "cpu",
            "cpu,cpuacct",
            "cpuacct",
            "pids",
            "freezer",
            "devices",
            "blkio",
            "cpuset",
            "hugetlb",
            "net_cls",
            "net_prio",
            "perf_event",
            "rdma",
            "misc",
            "systemd",
            "unified",
        ] {
            let _ = std::fs::remove_dir(
                Path::new("/sys/fs/cgroup")
                    .join(ctrl)
                    .join("berth")
                    .join(id),
            );
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup/berth").join(id));
    }
    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        let prefix = root.display().to_string();
        let mut mounts: Vec<&str> = mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(root);
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        let ids = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        if self.owner {
            cleanup(&self.rt, &self.root, &ids);
        }
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn opts() -> RunOptions {
    RunOptions::default()
}

pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

pub fn fail(msg: &str) -> Result<()> {
    bail!("{msg}")
}

/// Reads output frames from an attach stream until `needle` shows up in the collected
/// output (or EOF / the 20 s read timeout); returns everything read.
pub fn read_until(
    s: &mut std::os::unix::net::UnixStream,
    dec: &mut berth_runtime::protocol::FrameDecoder,
    collected: &mut Vec<(u8, Vec<u8>)>,
    needle: Option<&str>,
) -> Result<String> {
    use std::io::Read as _;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let text = |c: &Vec<(u8, Vec<u8>)>| -> String {
        c.iter()
            .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    loop {
        while let Some(f) = dec.next_frame()? {
            collected.push(f);
        }
        if let Some(n) = needle {
            if text(collected).contains(n) {
                return Ok(text(collected));
            }
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).context("read attach stream")?;
        if n == 0 {
            if needle.is_some() {
                bail!("stream ended before {needle:?}; got {:?}", text(collected));
            }
            return Ok(text(collected));
        }
        dec.push(&buf[..n]);
    }
}

/// Writes one frame.
pub fn send(s: &mut std::os::unix::net::UnixStream, frame: Vec<u8>) -> Result<()> {
    use std::io::Write as _;
    s.write_all(&frame)?;
    Ok(())
}
