//! A reference dockerd under test: Debian's `docker.io` (dockerd 20.10, `/usr/sbin/dockerd`)
//! with everything of its own, so that berth's behaviour can be compared with Docker's
//! (tests/differential.rs).
//!
//! ```text
//!  test process (host netns, host mount ns)
//!    | nsenter-like setns(CLONE_NEWNET) in pre_exec
//!    v
//!  dockerd  --data-root  <tmp>/berth-dockerd-XXXX/data     (images, containers, volumes)
//!           --exec-root  /run/bdXXXX                        (short: shim socket paths)
//!           --pidfile, -H unix://<tmp>/.../docker.sock, --config-file <tmp>/.../daemon.json
//!           --cgroup-parent /berth-dockerd-<pid>-<n> (cgroupfs driver)
//!           --iptables=false --ip6tables=false, its own docker0 inside its own netns
//!    | starts and supervises its own containerd: root <data>/containerd/daemon,
//!    | state and socket under <exec-root>/containerd (dockerd does this itself when no
//!    | containerd socket exists at /run/containerd/containerd.sock; [`Dockerd::start`]
//!    | refuses to run when one does, since dockerd would then share the system's)
//!    v
//!  containerd -> containerd-shim-runc-v2 -> runc -> containers
//! ```
//!
//! The fixture registry (host loopback) is reachable at the same address inside the netns
//! through [`crate::netns::Forwarder`], exactly as for berthd, and is also passed as
//! `--insecure-registry`. The trust key that dockerd 20.10 would write to
//! `/etc/docker/key.json` goes to the temp dir instead (`deprecated-key-path` in the
//! daemon.json), so nothing is written outside the two temp dirs and the cgroup parent.
//!
//! On drop: SIGTERM to dockerd (SIGKILL after 20 s), then SIGKILL by PID to every process
//! left that names one of the two dirs in its command line (containerd, shims) or lives in
//! the cgroup parent (containers), lazy unmount of everything mounted below the two dirs
//! (overlay2 mounts, netns bind mounts, the data root's own shared bind mount), removal of
//! the cgroup parent in every hierarchy, of the two dirs and of the netns.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::daemon::{docker_cli, NetnsGuard};

/// The dockerd binary (`BERTH_DOCKERD` overrides; default Debian's `/usr/sbin/dockerd`).
pub fn dockerd_binary() -> PathBuf {
    std::env::var_os("BERTH_DOCKERD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/dockerd"))
}

/// The socket of a system containerd; dockerd 20.10 uses it instead of starting its own
/// whenever it exists.
const SYSTEM_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// A running reference dockerd owned by a test; everything it started is stopped on drop.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    /// Data root, socket, config, key and log.
    dir: tempfile::TempDir,
    /// Exec root: kept short, shim and containerd sockets live below it.
    exec_dir: tempfile::TempDir,
    /// Cgroup parent of the containers (relative to each hierarchy's root), e.g.
    /// `berth-dockerd-123-0`.
    cgroup_parent: String,
    _forwarder: Option<crate::netns::Forwarder>,
    netns: NetnsGuard,
}

impl Dockerd {
    /// Starts dockerd in a new network namespace and waits until it answers `docker version`
    /// (at most 60 s). `extra_args` go on dockerd's command line.
    ///
    /// Errors: dockerd missing (install Debian's `docker.io`, tests/run.sh does), a system
    /// containerd running (dockerd would share it), dockerd exiting or not answering.
    pub fn start(extra_args: &[&str]) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = dockerd_binary();
        anyhow::ensure!(
            bin.exists(),
            "{} not found: install Debian's docker.io (tests/run.sh does)",
            bin.display()
        );
        anyhow::ensure!(
            !Path::new(SYSTEM_CONTAINERD_SOCKET).exists(),
            "{SYSTEM_CONTAINERD_SOCKET} exists: dockerd 20.10 would use that containerd \
             instead of a private one; stop the system containerd to run this test"
        );
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir()?;
        let exec_dir = tempfile::Builder::new()
            .prefix("bd")
            .rand_bytes(4)
            .tempdir_in("/run")?;
        let netns = NetnsGuard::create()?;
        let fixture = crate::Fixture::from_env().ok();
        let forwarder = match &fixture {
            Some(fx) => Some(crate::netns::Forwarder::start(&netns.path(), &fx.registry)?),
            None => None,
        };
        let cgroup_parent = format!(
            "berth-dockerd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut d = Dockerd {
            child: None,
            dir,
            exec_dir,
            cgroup_parent,
            _forwarder: forwarder,
            netns,
        };
        let config = serde_json::json!({
            // dockerd 20.10 otherwise writes its libtrust key to /etc/docker/key.json.
            "deprecated-key-path": d.root().join("key.json"),
        });
        std::fs::write(d.root().join("daemon.json"), serde_json::to_vec(&config)?)?;
        let log = std::fs::File::create(d.root().join("dockerd.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--data-root")
            .arg(d.data_root())
            .arg("--exec-root")
            .arg(d.exec_root())
            .arg("--pidfile")
            .arg(d.root().join("dockerd.pid"))
            .arg("--host")
            .arg(d.host())
            .arg("--config-file")
            .arg(d.root().join("daemon.json"))
            .args(["--iptables=false", "--ip6tables=false"])
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .arg("--cgroup-parent")
            .arg(format!("/{}", d.cgroup_parent))
            .args(
                fixture
                    .iter()
                    .flat_map(|fx| ["--insecure-registry", &fx.registry]),
            )
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let ns = std::fs::File::open(d.netns.path())?;
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
        d.child = Some(cmd.spawn().context("spawn dockerd")?);
        drop(ns);
        d.wait_ready(Duration::from_secs(60))?;
        Ok(d)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("dockerd exited early ({status}): {}", self.log());
                }
            }
            // The socket listens before the daemon is initialised; `version` needs both.
            if self.socket().exists() {
                let out = self.docker(&["version", "--format", "{{.Server.Version}}"])?;
                if out.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("dockerd did not answer within {timeout:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The directory holding the data root, socket, config and log.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `--data-root`.
    pub fn data_root(&self) -> PathBuf {
        self.root().join("data")
    }

    /// `--exec-root` (containerd's state and socket are below it, in `containerd/`).
    pub fn exec_root(&self) -> PathBuf {
        self.exec_dir.path().to_path_buf()
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.root().join("docker.sock")
    }

    /// `unix://...` for DOCKER_HOST.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// dockerd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The name of dockerd's network namespace (for `ip -n`).
    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// The containers' cgroup parent, relative to each hierarchy's root.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// dockerd's log so far (containerd's lines included: dockerd forwards them).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("dockerd.log")).unwrap_or_default()
    }

    /// A docker CLI command aimed at this daemon (stdin null, own DOCKER_CONFIG).
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

    /// Stops dockerd with SIGTERM (it stops its containers and its containerd), SIGKILL
    /// after 20 s, and reaps it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child's PID.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// PIDs of the processes this daemon left: those naming one of its dirs on their
    /// command line (containerd, shims) and those in its cgroup parent (containers).
    pub fn leftover_pids(&self) -> Vec<i32> {
        let dirs = [
            self.root().display().to_string(),
            self.exec_root().display().to_string(),
        ];
        let cgroup = format!("/{}/", self.cgroup_parent);
        let me = std::process::id() as i32;
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let cgroups = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            if dirs.iter().any(|d| cmdline.contains(d.as_str()))
                || cgroups.lines().any(|l| l.contains(&cgroup))
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Mount points below this daemon's dirs still in the test's mount table.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let roots = [self.root().to_path_buf(), self.exec_root()];
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
            .map(str::to_string)
            .collect()
    }

    /// The cgroup parent's directory in every mounted hierarchy where it exists.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(&self.cgroup_parent))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Mount points of every cgroup hierarchy (v1 controllers, the v2 unified tree).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (point, fstype) = (f.nth(1)?, f.next()?);
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Removes a cgroup directory and its children, deepest first (cgroup dirs are removed with
/// rmdir, their files cannot be unlinked).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.stop();
        // Whatever dockerd did not stop (it was killed, or a shim outlived containerd).
        for _ in 0..50 {
            let pids = self.leftover_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) with a PID read from /proc just now; the process names our
                // private dirs or lives in our private cgroup, so it is one this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut points = self.leftover_mounts();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for cg in self.leftover_cgroups() {
            remove_cgroup_tree(&cg);
        }
        // Fields drop next: the forwarder, the temp dirs, the netns.
    }
}
