//! berthd's command line, with dockerd's flag names, and its configuration file in
//! dockerd's `daemon.json` format.
//!
//! The file (`--config-file`, default `/etc/berth/daemon.json`; a missing default file is
//! fine, a missing file given explicitly is an error) is one JSON object whose keys are
//! dockerd's names where dockerd has the option and the flag's name for berth-only flags:
//!
//! ```json
//! { "data-root": "/var/lib/berth", "exec-root": "/run/berth",
//!   "hosts": ["unix:///run/berth/berth.sock"], "pidfile": "/run/berth/berthd.pid",
//!   "insecure-registries": ["10.0.0.5:5000"], "registry-mirrors": ["http://10.0.0.2:5001"],
//!   "tlsverify": true, "tlscacert": "ca.pem", "tlscert": "cert.pem", "tlskey": "key.pem",
//!   "log-level": "info", "log-driver": "json-file", "log-opts": {"max-size": "10m"},
//!   "bip": "172.20.0.1/16",
//!   "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}],
//!   "mirror-addr": "127.0.0.1:5001", "mirror-size-cap": 10000000000, "mirror-tag-ttl": 300,
//!   "force-new-cluster": false, "labels": ["zone=a"] }
//! ```
//!
//! As with dockerd, an unknown key is an error, and so is a key given both in the file and
//! as a flag ("the following directives are specified both as a flag and in the
//! configuration file: ..."); otherwise the file's values apply as if given as flags.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_overlay_net::Ipv4Net;
use berth_runtime::log_config::LogConfig;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

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
    /// The daemon configuration file (dockerd's daemon.json format, see the module docs).
    #[arg(long = "config-file", default_value = DEFAULT_CONFIG_FILE)]
    pub config_file: PathBuf,
    /// Default logging driver of containers: json-file, local or none.
    #[arg(long = "log-driver", default_value = "json-file")]
    pub log_driver: String,
    /// Default logging driver option `KEY=VALUE` (e.g. max-size=10m). Repeatable.
    #[arg(long = "log-opt", value_parser = parse_key_value)]
    pub log_opts: Vec<(String, String)>,
    /// Address and prefix of the default bridge network's gateway (e.g. 172.20.0.1/16);
    /// without it the first free default address pool is used.
    #[arg(long = "bip", value_parser = parse_bip)]
    pub bip: Option<Bip>,
    /// Pool for networks created without a subnet: `base=CIDR,size=PREFIX` (the base is
    /// cut into subnets of that prefix length). Repeatable; replaces Docker's defaults.
    #[arg(long = "default-address-pool", value_parser = parse_address_pool)]
    pub default_address_pools: Vec<AddressPoolSpec>,
    /// An engine label `KEY=VALUE` (`docker info` Labels; Swarm's `engine.labels.KEY`
    /// placement constraints). Repeatable; `labels` (an array) in the configuration file.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

/// Where berthd looks for its configuration file when `--config-file` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

/// `--bip`: the default bridge's gateway address and its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bip {
    pub gateway: std::net::Ipv4Addr,
    pub subnet: Ipv4Net,
}

fn parse_bip(s: &str) -> Result<Bip, String> {
    let bad = || format!("invalid bip {s:?}: expected IPv4 address/prefix, e.g. 172.20.0.1/16");
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let gateway: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let subnet = Ipv4Net::new(gateway, prefix).map_err(|_| bad())?;
    if prefix > 30 || gateway == subnet.network() {
        return Err(bad());
    }
    Ok(Bip { gateway, subnet })
}

/// One `--default-address-pool`: `base` cut into subnets of prefix length `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPoolSpec {
    pub base: Ipv4Net,
    pub size: u8,
}

impl AddressPoolSpec {
    /// The subnets of the pool in order (at most 65536 of them).
    pub fn subnets(&self) -> Vec<Ipv4Net> {
        let step = 1u64 << (32 - u32::from(self.size));
        let count = 1u64 << (u32::from(self.size) - u32::from(self.base.prefix()));
        let start = u64::from(u32::from(self.base.network()));
        (0..count.min(65536))
            .filter_map(|i| {
                let addr = std::net::Ipv4Addr::from((start + i * step) as u32);
                Ipv4Net::new(addr, self.size).ok()
            })
            .collect()
    }
}

fn parse_address_pool(s: &str) -> Result<AddressPoolSpec, String> {
    let bad = |why: &str| format!("invalid default address pool {s:?}: {why}");
    let (mut base, mut size) = (None, None);
    for part in s.split(',') {
        match part.split_once('=') {
            Some(("base", v)) => {
                base = Some(v.parse::<Ipv4Net>().map_err(|e| bad(&e.to_string()))?)
            }
            Some(("size", v)) => size = Some(v.parse::<u8>().map_err(|_| bad("size"))?),
            _ => return Err(bad("expected base=CIDR,size=PREFIX")),
        }
    }
    let (Some(base), Some(size)) = (base, size) else {
        return Err(bad("expected base=CIDR,size=PREFIX"));
    };
    if size < base.prefix() || size > 30 {
        return Err(bad("size must be between the base's prefix length and 30"));
    }
    Ok(AddressPoolSpec { base, size })
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("invalid log opt {s:?}: expected KEY=VALUE"))
}

/// An engine label, `KEY=VALUE` (dockerd's wording when malformed).
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("bad attribute format: {s}")),
    }
}

/// How a key of the configuration file becomes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileValue {
    /// A string (or number): `--flag VALUE`.
    Scalar,
    /// `true` gives `--flag`, `false` nothing.
    Bool,
    /// An array of strings: the flag repeated.
    List,
    /// An object of strings (`log-opts`): `--flag KEY=VALUE` repeated.
    Map,
    /// `default-address-pools`: `[{"base": CIDR, "size": N}]`.
    Pools,
}

/// The keys of the configuration file: (key, clap argument id, flag, kind).
const FILE_KEYS: &[(&str, &str, &str, FileValue)] = &[
    ("data-root", "data_root", "data-root", FileValue::Scalar),
    ("exec-root", "exec_root", "exec-root", FileValue::Scalar),
    ("hosts", "hosts", "host", FileValue::List),
    ("pidfile", "pidfile", "pidfile", FileValue::Scalar),
    (
        "insecure-registries",
        "insecure_registries",
        "insecure-registry",
        FileValue::List,
    ),
    (
        "registry-mirrors",
        "registry_mirrors",
        "registry-mirror",
        FileValue::List,
    ),
    (
        "mirror-addr",
        "mirror_addr",
        "mirror-addr",
        FileValue::Scalar,
    ),
    (
        "mirror-size-cap",
        "mirror_size_cap",
        "mirror-size-cap",
        FileValue::Scalar,
    ),
    (
        "mirror-tag-ttl",
        "mirror_tag_ttl_secs",
        "mirror-tag-ttl",
        FileValue::Scalar,
    ),
    ("tlsverify", "tls_verify", "tlsverify", FileValue::Bool),
    ("tlscacert", "tls_ca_cert", "tlscacert", FileValue::Scalar),
    ("tlscert", "tls_cert", "tlscert", FileValue::Scalar),
    ("tlskey", "tls_key", "tlskey", FileValue::Scalar),
    (
        "force-new-cluster",
        "force_new_cluster",
        "force-new-cluster",
        FileValue::Bool,
    ),
    ("log-level", "log_level", "log-level", FileValue::Scalar),
    ("log-driver", "log_driver", "log-driver", FileValue::Scalar),
    ("init-path", "init_path", "init-path", FileValue::Scalar),
    ("log-opts", "log_opts", "log-opt", FileValue::Map),
    ("bip", "bip", "bip", FileValue::Scalar),
    (
        "default-address-pools",
        "default_address_pools",
        "default-address-pool",
        FileValue::Pools,
    ),
    ("labels", "labels", "label", FileValue::List),
];

/// The flags a configuration file's keys stand for, checked against the flags given on the
/// command line (`cli`): unknown keys, then keys also given as flags, are errors with
/// dockerd's messages.
fn file_args(
    file: &serde_json::Map<String, serde_json::Value>,
    cli: &ArgMatches,
) -> Result<Vec<OsString>, String> {
    let unknown: Vec<&str> = file
        .keys()
        .filter(|k| !FILE_KEYS.iter().any(|(key, ..)| key == k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "the following directives don't match any configuration option: {}",
            unknown.join(", ")
        ));
    }
    let mut conflicts = Vec::new();
    let mut args = Vec::new();
    for (key, id, flag, kind) in FILE_KEYS {
        let Some(value) = file.get(*key) else {
            continue;
        };
        if cli.value_source(id) == Some(ValueSource::CommandLine) {
            let given: Vec<String> = cli
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let given = match given.as_slice() {
                [one] => one.clone(),
                [] => "true".into(),
                many => format!("[{}]", many.join(" ")),
            };
            conflicts.push(format!("{key}: (from flag: {given}, from file: {value})"));
            continue;
        }
        let bad = |what: &str| format!("invalid value for {key:?}: expected {what}, got {value}");
        let flag = format!("--{flag}");
        match kind {
            FileValue::Scalar => match value {
                serde_json::Value::String(v) => args.extend([flag, v.clone()]),
                serde_json::Value::Number(n) => args.extend([flag, n.to_string()]),
                _ => return Err(bad("a string")),
            },
            FileValue::Bool => match value {
                serde_json::Value::Bool(true) => args.push(flag),
                serde_json::Value::Bool(false) => {}
                _ => return Err(bad("true or false")),
            },
            FileValue::List => {
                let items = value.as_array().ok_or_else(|| bad("an array of strings"))?;
                for v in items {
                    let v = v.as_str().ok_or_else(|| bad("an array of strings"))?;
                    args.extend([flag.clone(), v.to_string()]);
                }
            }
            FileValue::Map => {
                let items = value
                    .as_object()
                    .ok_or_else(|| bad("an object of strings"))?;
                for (k, v) in items {
                    let v = v.as_str().ok_or_else(|| bad("an object of strings"))?;
                    args.extend([flag.clone(), format!("{k}={v}")]);
                }
            }
            FileValue::Pools => {
                let items = value
                    .as_array()
                    .ok_or_else(|| bad(r#"[{"base": CIDR, "size": N}]"#))?;
                for p in items {
                    let (Some(base), Some(size)) = (
                        p.get("base").and_then(|b| b.as_str()),
                        p.get("size").and_then(|s| s.as_u64()),
                    ) else {
                        return Err(bad(r#"[{"base": CIDR, "size": N}]"#));
                    };
                    args.extend([flag.clone(), format!("base={base},size={size}")]);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "the following directives are specified both as a flag and in the configuration file: {}",
            conflicts.join(", ")
        ));
    }
    Ok(args.into_iter().map(OsString::from).collect())
}

impl Config {
    /// The configuration from the process's arguments and the configuration file. Exits
    /// (as clap does) on a command-line error, `--help` or `--version`.
    pub fn load() -> Result<Self> {
        Self::load_from(std::env::args_os().collect())
    }

    /// [`Config::load`] with explicit arguments (the first is the program name).
    pub fn load_from(args: Vec<OsString>) -> Result<Self> {
        let cli = Config::command().get_matches_from(args.clone());
        let cfg = Config::from_arg_matches(&cli)?;
        let explicit = cli.value_source("config_file") == Some(ValueSource::CommandLine);
        let path = &cfg.config_file;
        let failed = |why: String| {
            anyhow::anyhow!(
                "unable to configure the berth daemon with file {}: {why}",
                path.display()
            )
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(cfg),
            Err(e) => return Err(failed(format!("open {}: {e}", path.display()))),
        };
        let file: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
        let extra = file_args(&file, &cli).map_err(failed)?;
        let mut merged = args;
        let program = if merged.is_empty() {
            OsString::from("berthd")
        } else {
            merged.remove(0)
        };
        let all: Vec<OsString> = std::iter::once(program)
            .chain(extra)
            .chain(merged)
            .collect();
        let m = Config::command()
            .try_get_matches_from(all)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Config::from_arg_matches(&m)?)
    }

    /// The containers' default logging configuration (`--log-driver`, `--log-opt`),
    /// validated as a container's is.
    pub fn log_default(&self) -> Result<LogConfig> {
        let opts: BTreeMap<String, String> = self.log_opts.iter().cloned().collect();
        LogConfig::new(&self.log_driver, opts).with_context(|| {
            format!(
                "invalid default log configuration (--log-driver {} --log-opt)",
                self.log_driver
            )
        })
    }

    /// Settings of the bridge driver from `--bip` and `--default-address-pool`.
    pub fn network_driver(&self) -> berth_overlay_net::DriverConfig {
        let mut d = berth_overlay_net::DriverConfig::default();
        if !self.default_address_pools.is_empty() {
            d.pools = self
                .default_address_pools
                .iter()
                .flat_map(AddressPoolSpec::subnets)
                .collect();
        }
        if let Some(b) = self.bip {
            d.default_subnet = Some(b.subnet);
            d.default_gateway = Some(b.gateway);
        }
        d
    }
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

    fn file(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    fn cli(args: &[&str]) -> ArgMatches {
        Config::command().get_matches_from(std::iter::once("berthd").chain(args.iter().copied()))
    }

    #[test]
    fn file_keys_become_flags() {
        let f = file(
            r#"{"data-root": "/d", "hosts": ["unix:///a.sock", "unix:///b.sock"],
                "tlsverify": true, "force-new-cluster": false, "mirror-tag-ttl": 5,
                "log-opts": {"max-size": "1k"}, "bip": "10.9.0.1/24",
                "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]}"#,
        );
        let args = file_args(&f, &cli(&[])).unwrap();
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--data-root",
                "/d",
                "--host",
                "unix:///a.sock",
                "--host",
                "unix:///b.sock",
                "--mirror-tag-ttl",
                "5",
                "--tlsverify",
                "--log-opt",
                "max-size=1k",
                "--bip",
                "10.9.0.1/24",
                "--default-address-pool",
                "base=10.10.0.0/16,size=24",
            ]
        );
    }

    #[test]
    fn unknown_keys_then_conflicts_are_refused_as_dockerd_does() {
        let e = file_args(
            &file(r#"{"bogus": 1, "data-root": "/x"}"#),
            &cli(&["--data-root", "/y"]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "the following directives don't match any configuration option: bogus"
        );
        let e = file_args(
            &file(r#"{"log-driver": "local", "hosts": ["unix:///x"]}"#),
            &cli(&[
                "--log-driver",
                "json-file",
                "-H",
                "unix:///a",
                "-H",
                "unix:///b",
            ]),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "the following directives are specified both as a flag and in the configuration file: \
             hosts: (from flag: [unix:///a unix:///b], from file: [\"unix:///x\"]), \
             log-driver: (from flag: json-file, from file: \"local\")"
        );
        // A default value is not a flag given.
        assert!(file_args(&file(r#"{"log-driver": "local"}"#), &cli(&[])).is_ok());
        let e = file_args(&file(r#"{"hosts": "unix:///x"}"#), &cli(&[])).unwrap_err();
        assert!(e.contains("invalid value for \"hosts\""), "{e}");
    }

    #[test]
    fn config_file_merges_with_flags_and_a_missing_explicit_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        std::fs::write(
            &path,
            r#"{"log-driver": "local", "log-opts": {"max-file": "3"}, "registry-mirrors": ["http://10.0.0.2:5001"]}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let args = |a: &[&str]| -> Vec<OsString> {
            std::iter::once("berthd")
                .chain(a.iter().copied())
                .map(OsString::from)
                .collect()
        };
        let c = Config::load_from(args(&["--config-file", p, "--data-root", "/d"])).unwrap();
        assert_eq!(c.data_root, PathBuf::from("/d"));
        assert_eq!(c.log_driver, "local");
        assert_eq!(c.log_opts, [("max-file".to_string(), "3".to_string())]);
        assert_eq!(c.registry_mirrors, ["http://10.0.0.2:5001"]);
        assert_eq!(
            c.log_default().unwrap().driver,
            berth_runtime::log_config::LogDriver::Local
        );
        // File values go through the flags' own checks.
        std::fs::write(&path, r#"{"registry-mirrors": ["ftp://x"]}"#).unwrap();
        assert!(Config::load_from(args(&["--config-file", p])).is_err());
        let missing = dir.path().join("missing.json");
        let e = Config::load_from(args(&["--config-file", missing.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unable to configure the berth daemon with file"),
            "{e}"
        );
    }

    #[test]
    fn engine_labels_come_from_flags_or_the_file() {
        let c = Config::parse_from(["berthd", "--label", "zone=a", "--label", "disk=ssd=fast"]);
        assert_eq!(
            c.labels,
            [
                ("zone".to_string(), "a".to_string()),
                ("disk".to_string(), "ssd=fast".to_string())
            ]
        );
        let e = Config::try_parse_from(["berthd", "--label", "novalue"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad attribute format: novalue"), "{e}");
        let args = file_args(&file(r#"{"labels": ["zone=b"]}"#), &cli(&[])).unwrap();
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["--label", "zone=b"]);
    }

    #[test]
    fn bip_and_address_pools_configure_the_bridge_driver() {
        let c = Config::parse_from([
            "berthd",
            "--bip",
            "10.9.0.1/24",
            "--default-address-pool",
            "base=10.10.0.0/16,size=24",
        ]);
        let d = c.network_driver();
        assert_eq!(d.default_subnet, Some("10.9.0.0/24".parse().unwrap()));
        assert_eq!(d.default_gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(d.pools.len(), 256);
        assert_eq!(d.pools[1], "10.10.1.0/24".parse().unwrap());
        assert!(
            parse_bip("10.9.0.0/24").is_err(),
            "the network address is no gateway"
        );
        assert!(parse_address_pool("base=10.10.0.0/16,size=8").is_err());
    }
}
