//! berthd's command line, with dockerd's flag names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth daemon: a Docker-compatible container engine"
)]
pub struct Config {
    /// Root of persistent state (images, containers, volumes).
    #[arg(long = "data-root", default_value = "/var/lib/berth")]
    pub data_root: PathBuf,
    /// Root of runtime state (shim sockets, container state).
    #[arg(long = "exec-root", default_value = "/run/berth")]
    pub exec_root: PathBuf,
    /// Sockets to listen on; `unix://PATH`. Repeatable.
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/berth/berth.sock"
    )]
    pub hosts: Vec<String>,
    /// Where to write the daemon's PID.
    #[arg(short = 'p', long = "pidfile", default_value = "/run/berth/berthd.pid")]
    pub pidfile: PathBuf,
    /// Registries reachable over plain HTTP besides loopback ones. Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Pull through this registry mirror (another node's berth mirror, or any pull-through
    /// cache speaking the OCI distribution API) before this node's own mirror and the
    /// registry itself. `http://HOST:PORT` or `https://...`. Repeatable.
    #[arg(long = "registry-mirror", value_parser = parse_mirror_url)]
    pub registry_mirrors: Vec<String>,
    /// Where this node's pull-through registry mirror listens (`IP:PORT`), or `none`.
    /// berthd pulls through it, so every image the node has is cached there; other nodes
    /// use it with `--registry-mirror http://IP:PORT`.
    #[arg(long = "mirror-addr", default_value = "127.0.0.1:5001")]
    pub mirror_addr: String,
    /// Evict the mirror's least recently used blobs above this many bytes in the store
    /// (blobs of local images are never evicted).
    #[arg(long = "mirror-size-cap")]
    pub mirror_size_cap: Option<u64>,
    /// How long the mirror serves a tag's digest without asking the registry again; after
    /// that a registry that cannot be reached still gets the last known digest served.
    #[arg(long = "mirror-tag-ttl", default_value_t = 300)]
    pub mirror_tag_ttl_secs: u64,
    /// Serve TCP hosts with TLS and require client certificates signed by --tlscacert.
    #[arg(long = "tlsverify")]
    pub tls_verify: bool,
    /// CA that client certificates must chain to.
    #[arg(long = "tlscacert")]
    pub tls_ca_cert: Option<PathBuf>,
    /// The server's certificate (PEM).
    #[arg(long = "tlscert")]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long = "tlskey")]
    pub tls_key: Option<PathBuf>,
    /// Quorum-loss recovery: restart this manager as the only manager of its cluster,
    /// keeping all cluster state (the other managers must leave and join again).
    #[arg(long = "force-new-cluster")]
    pub force_new_cluster: bool,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// The init binary `docker run --init` runs as PID 1 (tini). Default: `docker-init`
    /// on PATH, else Debian's `/usr/bin/tini-static` (package `tini`).
    #[arg(long = "init-path")]
    pub init_path: Option<PathBuf>,
}

/// Where berthd looks for an init binary when `--init-path` is not given, after
/// `docker-init` on PATH. The static build first: it runs in any image.
pub const INIT_CANDIDATES: [&str; 2] = ["/usr/bin/tini-static", "/usr/libexec/docker/docker-init"];

fn parse_mirror_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid mirror URL {s:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "invalid mirror URL {s:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        ));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(format!(
            "invalid mirror URL {s:?}: a mirror URL has no path"
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// The URL berthd itself uses for its own mirror bound at `addr` (a wildcard address is
/// reached over loopback).
pub fn own_mirror_url(mut addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    /// TCP with TLS and client-certificate verification (never plain text).
    Tls(std::net::SocketAddr),
}

/// The files of `--tlsverify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// The init binary for `--init`: `--init-path`, else `docker-init` on PATH, else the
    /// first of [`INIT_CANDIDATES`] that exists. None: `--init` is refused.
    pub fn init_binary(&self) -> Option<PathBuf> {
        if let Some(p) = &self.init_path {
            return Some(p.clone());
        }
        let on_path = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("docker-init"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain(INIT_CANDIDATES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
    }

    /// The listeners of `--host`. A `tcp://` host needs `--tlsverify` with a CA, a
    /// certificate and a key: the API is root on this host, so it is never served in clear
    /// or to unauthenticated clients.
    pub fn listeners(&self) -> Result<Vec<Listen>> {
        self.hosts
            .iter()
            .map(|h| match h.split_once("://") {
                Some(("unix", path)) if !path.is_empty() => Ok(Listen::Unix(PathBuf::from(path))),
                Some(("tcp", addr)) => {
                    if self.tls_files().is_none() {
                        bail!("--host {h}: a TCP host requires --tlsverify with --tlscacert, --tlscert and --tlskey");
                    }
                    let addr = addr.trim_end_matches('/');
                    let sa = addr
                        .parse::<std::net::SocketAddr>()
                        .with_context(|| format!("--host {h}: expected tcp://IP:PORT"))?;
                    Ok(Listen::Tls(sa))
                }
                _ => bail!("--host {h}: expected unix:///path/to/socket or tcp://IP:PORT"),
            })
            .collect()
    }

    /// The address of this node's mirror, `None` for `--mirror-addr none`.
    pub fn mirror_listen(&self) -> Result<Option<std::net::SocketAddr>> {
        if self.mirror_addr == "none" {
            return Ok(None);
        }
        self.mirror_addr.parse().map(Some).with_context(|| {
            format!(
                "--mirror-addr {}: expected IP:PORT or none",
                self.mirror_addr
            )
        })
    }

    /// The TLS files, when `--tlsverify` and all three are given.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        if !self.tls_verify {
            return None;
        }
        Some(TlsFiles {
            ca: self.tls_ca_cert.clone()?,
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }
}

/// The pidfile; refuses to start when another live berthd owns it, removed on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
                let ours = pid == std::process::id() as i32;
                if alive && !ours && is_berthd(pid) {
                    bail!("pidfile {} names running berthd {pid}", path.display());
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("write pidfile {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

fn is_berthd(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "berthd")
        .unwrap_or(false)
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::parse_from(["berthd"]);
        assert_eq!(c.data_root, PathBuf::from("/var/lib/berth"));
        assert_eq!(
            c.listeners().unwrap(),
            vec![Listen::Unix(PathBuf::from("/run/berth/berth.sock"))]
        );
    }

    #[test]
    fn hosts_repeat_and_tcp_is_refused() {
        let c = Config::parse_from(["berthd", "-H", "unix:///a.sock", "--host", "unix:///b.sock"]);
        assert_eq!(c.listeners().unwrap().len(), 2);
        let c = Config::parse_from(["berthd", "-H", "tcp://0.0.0.0:2375"]);
        assert!(c.listeners().is_err(), "plain TCP is refused");
        let c = Config::parse_from([
            "berthd",
            "-H",
            "tcp://127.0.0.1:2376",
            "--tlsverify",
            "--tlscacert",
            "ca.pem",
            "--tlscert",
            "cert.pem",
            "--tlskey",
            "key.pem",
        ]);
        assert_eq!(
            c.listeners().unwrap(),
            vec![Listen::Tls("127.0.0.1:2376".parse().unwrap())]
        );
        let c = Config::parse_from(["berthd", "-H", "/no/scheme"]);
        assert!(c.listeners().is_err());
    }
}
