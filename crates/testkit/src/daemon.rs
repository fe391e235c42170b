//! A berthd under test: its own data root, exec root and socket in a temp directory,
//! driven with the real docker CLI. Stopped (by PID) and cleaned up on drop.

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
        let mut d = Berthd {
            child: None,
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
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; the daemon dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
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
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
