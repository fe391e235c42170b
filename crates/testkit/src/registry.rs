//! A real registry for tests: Debian's `docker-registry` (CNCF Distribution 2.8) on a free
//! loopback port with its own data directory, stopped (by PID) and removed on drop.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::image::{Blob, TaggedManifest};

/// The registry binary, overridable with `BERTH_REGISTRY_BIN`.
pub fn registry_binary() -> PathBuf {
    std::env::var_os("BERTH_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

/// A running `docker-registry` process owned by this value.
#[derive(Debug)]
pub struct RegistryProcess {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_loopback_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn write_config(dir: &Path, addr: SocketAddr, auth: Option<&str>) -> Result<PathBuf> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let conf = dir.join("config.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             cache:\n    blobdescriptor: inmemory\n\
             http:\n  addr: {addr}\n{}",
            data.display(),
            auth.unwrap_or_default()
        ),
    )?;
    Ok(conf)
}

impl RegistryProcess {
    /// Starts a registry on a free loopback port with a fresh data directory under the
    /// system temp directory. Retries with another port if the chosen one was taken.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// Starts a registry that demands HTTP Basic credentials checked against the
    /// htpasswd file at `htpasswd` (bcrypt entries: `htpasswd -B`), the Distribution
    /// registry's `auth: htpasswd` configuration.
    pub fn start_with_htpasswd(htpasswd: &Path) -> Result<Self> {
        Self::start_with(Some(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test-realm\n    path: {}\n",
            htpasswd.display()
        )))
    }

    /// Starts a registry that demands bearer tokens from the token server at `realm`
    /// (the Distribution registry's `auth: token` configuration): tokens for `service`,
    /// issued by `issuer`, signed by a key whose certificate chains to `root_cert` (PEM).
    pub fn start_with_token_auth(
        realm: &str,
        service: &str,
        issuer: &str,
        root_cert: &Path,
    ) -> Result<Self> {
        Self::start_with(Some(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            root_cert.display()
        )))
    }

    fn start_with(auth: Option<&str>) -> Result<Self> {
        let bin = registry_binary();
        anyhow::ensure!(
            bin.exists(),
            "{} not found: install Debian's docker-registry package (tests/run.sh does)",
            bin.display()
        );
        let mut last_err = None;
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("berth-registry-")
                .tempdir()
                .context("registry temp dir")?;
            let addr = free_loopback_port()?;
            let conf = write_config(dir.path(), addr, auth)?;
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
            // the parent; it makes the registry die with the process that started it.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("spawn {}", bin.display()))?;
            let mut reg = RegistryProcess { child, addr, dir };
            match reg.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return Ok(reg),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("http://{}/v2/", self.addr);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("registry exited early ({status}): {}", self.log_tail());
            }
            match ureq::get(&url).timeout(Duration::from_secs(1)).call() {
                Ok(resp) if resp.status() == 200 => return Ok(()),
                // A registry with auth answers /v2/ with its challenge once it serves.
                Err(ureq::Error::Status(401, _)) => return Ok(()),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "registry at {} did not answer: {}",
                    self.addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry's storage root (for tests that tamper with stored blobs).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's log, including its access log (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(2000);
        log[start..].to_string()
    }

    /// Stops the registry (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own unreaped child: it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pushes blobs and manifests over the distribution API (plain HTTP).
#[derive(Debug, Clone)]
pub struct Pusher {
    base: String,
}

impl Pusher {
    pub fn new(addr: &str) -> Self {
        Pusher {
            base: format!("http://{addr}"),
        }
    }

    fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        match ureq::head(&format!("{}/v2/{repo}/blobs/{digest}", self.base)).call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(e) => Err(e).context("HEAD blob"),
        }
    }

    /// Uploads `blob` to `repo` unless the registry already has it.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        if self.blob_exists(repo, &blob.digest)? {
            return Ok(());
        }
        let resp = ureq::post(&format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .call()
            .context("start upload")?;
        let location = resp
            .header("Location")
            .context("upload has no Location")?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        ureq::put(&format!("{location}{sep}digest={}", blob.digest))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(&blob.data)
            .with_context(|| format!("upload {}", blob.digest))?;
        Ok(())
    }

    /// PUTs a manifest under `reference` (a tag or its digest).
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        m: &Blob,
    ) -> Result<()> {
        let resp = ureq::put(&format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .set("Content-Type", media_type)
            .send_bytes(&m.data)
            .with_context(|| format!("put manifest {repo}:{reference}"))?;
        let got = resp.header("Docker-Content-Digest").unwrap_or_default();
        anyhow::ensure!(
            got == m.digest,
            "registry stored {repo}:{reference} as {got}, expected {}",
            m.digest
        );
        Ok(())
    }

    /// Pushes a tagged image (its blobs, child manifests, then the manifest).
    pub fn push_image(&self, image: &TaggedManifest) -> Result<()> {
        for blob in &image.blobs {
            self.push_blob(&image.repo, blob)?;
        }
        for (mt, child) in &image.children {
            self.push_manifest(&image.repo, &child.digest, mt, child)?;
        }
        self.push_manifest(&image.repo, &image.tag, &image.media_type, &image.manifest)
    }

    /// GETs a URL path on the registry and returns the body, for tests.
    pub fn get(&self, path: &str, accept: &str) -> Result<(Vec<u8>, Option<String>)> {
        let resp = ureq::get(&format!("{}{path}", self.base))
            .set("Accept", accept)
            .call()
            .with_context(|| format!("GET {path}"))?;
        let digest = resp.header("Docker-Content-Digest").map(str::to_owned);
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body)?;
        Ok((body, digest))
    }
}
