//! A berthd under test: its own data root, exec root and socket in a temp directory, and its
//! own network namespace (a "host" of its own: its bridge, veths and nftables table cannot
//! meet those of other daemons running at the same time), driven with the real docker CLI
//! over its unix socket. Stopped (by PID) and cleaned up on drop.
//!
//! The fixture registry listens on the real host's loopback; a forwarder listens on the
//! same `127.0.0.1:<port>` inside the daemon's namespace, so image references are the same
//! everywhere. Traffic stays on the two loopbacks.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The docker CLI the tests drive (`BERTH_DOCKER_CLI` overrides).
pub fn docker_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_DOCKER_CLI") {
        return p.into();
    }
    for p in ["/usr/local/bin/docker", "/usr/bin/docker"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "docker".into()
}

/// A binary of this workspace built next to the running test (target/<profile>/NAME).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test exe has no parent")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let p = dir.join(name);
    anyhow::ensure!(
        p.exists(),
        "{} not built: run `cargo build --bins` first (tests/run.sh does)",
        p.display()
    );
    Ok(p)
}

/// A running berthd owned by a test.
#[derive(Debug)]
pub struct Berthd {
    child: Option<Child>,
    netns: NetnsGuard,
    _forwarder: Option<crate::netns::Forwarder>,
    dir: tempfile::TempDir,
    /// Kept short: shim sockets live below it and unix socket paths are limited to 107 bytes.
    exec_dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl Berthd {
    /// Starts berthd with a fresh data root and waits until its socket answers.
    pub fn start(extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir()?;
        let exec_dir = tempfile::Builder::new()
            .prefix("bt")
            .rand_bytes(4)
            .tempdir_in("/run")?;
        let netns = NetnsGuard::create()?;
        let forwarder = match crate::Fixture::from_env() {
            Ok(fx) => Some(crate::netns::Forwarder::start(&netns.path(), &fx.registry)?),
            Err(_) => None,
        };
        let mut d = Berthd {
            child: None,
            netns,
            _forwarder: forwarder,
            dir,
            exec_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn()?;
        Ok(d)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_root(&self) -> PathBuf {
        self.root().join("data")
    }

    pub fn exec_root(&self) -> PathBuf {
        self.exec_dir.path().to_path_buf()
    }

    pub fn socket(&self) -> PathBuf {
        self.root().join("berth.sock")
    }

    /// `unix://...` for DOCKER_HOST.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = workspace_binary("berthd")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root().join("berthd.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("--host")
            .arg(self.host())
            .arg("--pidfile")
            .arg(self.root().join("berthd.pid"))
            .arg("--log-level")
            .arg("debug")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let ns = std::fs::File::open(self.netns.path())?;
        let ns_fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
        // SAFETY: prctl(PR_SET_PDEATHSIG) and setns(2) are async-signal-safe and touch no
        // memory of the parent; `ns` outlives the spawn, so its fd is valid in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().context("spawn berthd")?);
        self.wait_ready(Duration::from_secs(20))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("berthd exited early ({status}): {}", self.log());
                }
            }
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("berthd did not listen within {timeout:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's network namespace file (`/run/netns/<name>`).
    pub fn netns(&self) -> PathBuf {
        self.netns.path()
    }

    /// The name of the daemon's network namespace (for `ip -n`).
    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// A command that runs inside the daemon's network namespace (on its "host").
    pub fn in_netns(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.path().display()))
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// berthd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("berthd.log")).unwrap_or_default()
    }

    /// A docker CLI command aimed at this daemon.
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(docker_cli());
        c.args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.root().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    /// Runs the docker CLI against this daemon and returns its output.
    pub fn docker(&self, args: &[&str]) -> Result<Output> {
        self.docker_cmd(args)
            .output()
            .with_context(|| format!("run docker {}", args.join(" ")))
    }

    /// Runs the docker CLI and fails unless it exits 0; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.docker(args)?;
        if !out.status.success() {
            bail!(
                "docker {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// SIGKILLs the daemon (not its containers) and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Stops the daemon with SIGTERM (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child's PID.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts the daemon again on the same data root.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Starts the daemon again on the same data root with other extra arguments.
    pub fn restart_with(&mut self, extra_args: &[&str]) -> Result<()> {
        self.stop()?;
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.spawn()
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let _ = self.stop();
        // A test that failed half-way may leave container rootfs mounts: lazily detach
        // whatever is still mounted under this daemon's directories.
        let roots = [self.root().to_path_buf(), self.exec_root()];
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// A network namespace made with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// A new namespace with a unique name and `lo` up.
    pub fn create() -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "berth-t{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip").args(["netns", "add", &name]).status()?;
        anyhow::ensure!(ok.success(), "ip netns add {name} failed");
        let g = NetnsGuard { name };
        let ok = Command::new("ip")
            .args(["-n", &g.name, "link", "set", "lo", "up"])
            .status()?;
        anyhow::ensure!(ok.success(), "bringing lo up in {} failed", g.name);
        Ok(g)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A test's engine: the fixture and a berthd of its own, driven with the docker CLI. Every
/// container is removed on drop, so no shim, mount or cgroup outlives the test.
#[derive(Debug)]
pub struct DockerEnv {
    pub fx: crate::Fixture,
    pub d: Berthd,
}

impl DockerEnv {
    pub fn new() -> Result<Self> {
        Ok(DockerEnv {
            fx: crate::Fixture::from_env()?,
            d: Berthd::start(&[])?,
        })
    }

    /// The fixture registry's reference for `repo:tag`.
    pub fn img(&self, repo_tag: &str) -> String {
        self.fx.reference(repo_tag)
    }

    /// Runs the docker CLI and fails unless it exits 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        self.d.docker_ok(args)
    }

    /// `docker inspect --format FMT ID`, trimmed.
    pub fn inspect(&self, id: &str, fmt: &str) -> Result<String> {
        Ok(self
            .ok(&["inspect", "--format", fmt, id])?
            .trim()
            .to_string())
    }
}

impl Drop for DockerEnv {
    fn drop(&mut self) {
        if let Ok(ids) = self.d.docker_ok(&["ps", "-aq"]) {
            for id in ids.split_whitespace() {
                let _ = self.d.docker(&["rm", "-f", id]);
            }
        }
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
