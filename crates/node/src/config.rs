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
    /// Log filter: error, warn, info, debug, trace (or a tracing directive).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
}

impl Config {
    /// The unix socket paths of `--host`. TCP needs TLS with client certificates, which
    /// berthd does not serve yet, so a `tcp://` host is refused rather than served in clear.
    pub fn unix_sockets(&self) -> Result<Vec<PathBuf>> {
        self.hosts
            .iter()
            .map(|h| match h.split_once("://") {
                Some(("unix", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
                Some(("tcp", _)) => {
                    bail!("--host {h}: TCP listeners require TLS client verification, which this build does not serve")
                }
                _ => bail!("--host {h}: expected unix:///path/to/socket"),
            })
            .collect()
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
            c.unix_sockets().unwrap(),
            vec![PathBuf::from("/run/berth/berth.sock")]
        );
    }

    #[test]
    fn hosts_repeat_and_tcp_is_refused() {
        let c = Config::parse_from(["berthd", "-H", "unix:///a.sock", "--host", "unix:///b.sock"]);
        assert_eq!(c.unix_sockets().unwrap().len(), 2);
        let c = Config::parse_from(["berthd", "-H", "tcp://0.0.0.0:2375"]);
        assert!(c.unix_sockets().is_err());
        let c = Config::parse_from(["berthd", "-H", "/no/scheme"]);
        assert!(c.unix_sockets().is_err());
    }
}
