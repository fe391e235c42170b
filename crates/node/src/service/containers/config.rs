//! What a container is asked to be: the create request of the Engine API, validated and
//! turned into typed options. Pure: no I/O, unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use berth_runtime::spec::{NetworkMode, Resources, Rlimit, RunOptions};
use bollard_stubs::models::{ContainerCreateBody, RestartPolicyNameEnum};
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// When the daemon restarts a container that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    /// Restart on a non-zero exit, at most `max` times (0: no limit).
    OnFailure {
        max: u32,
    },
}

impl RestartPolicy {
    /// Docker's name of the policy.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure { .. } => "on-failure",
        }
    }

    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max } => *max,
            _ => 0,
        }
    }

    /// Whether a container that exited with `exit_code` after `restarts` restarts goes
    /// again. `stopped_by_user`: it exited because of `docker stop`/`kill`.
    pub fn should_restart(&self, exit_code: i64, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max } => exit_code != 0 && (*max == 0 || restarts < *max),
        }
    }

    /// Whether the container starts again when the daemon starts. `stopped_by_user`: it was
    /// last stopped explicitly.
    pub fn start_on_boot(&self, stopped_by_user: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !stopped_by_user,
            _ => false,
        }
    }

    /// Delay before restart number `restarts` (0-based): 100 ms doubling, capped at 60 s.
    pub fn backoff_ms(restarts: u32) -> u64 {
        100u64.saturating_mul(1u64 << restarts.min(10)).min(60_000)
    }
}

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A container port, `8080/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortProto {
    pub port: u16,
    pub proto: Protocol,
}

impl PortProto {
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let proto = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(ServiceError::invalid(format!(
                    "invalid proto {other:?} in port {s:?}"
                )))
            }
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ServiceError::invalid(format!("invalid port {s:?}")))?;
        Ok(PortProto { port, proto })
    }
}

impl std::fmt::Display for PortProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.as_str())
    }
}

/// One `-p` binding of a container port to a host address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub container: PortProto,
    pub host_ip: Option<IpAddr>,
    /// None: the daemon picks a free port.
    pub host_port: Option<u16>,
}

/// A mount asked for with `-v` or `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountRequest {
    /// A host path.
    Bind {
        source: PathBuf,
        destination: String,
        read_only: bool,
    },
    /// A named volume (created if missing) or, with no name, a new anonymous one.
    Volume {
        name: Option<String>,
        destination: String,
        read_only: bool,
    },
}

impl MountRequest {
    pub fn destination(&self) -> &str {
        match self {
            MountRequest::Bind { destination, .. } | MountRequest::Volume { destination, .. } => {
                destination
            }
        }
    }
}

/// Which network the container joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkChoice {
    /// `default`/`bridge`: the default bridge network.
    Bridge,
    /// A user-defined network by name or ID.
    Named(String),
    Host,
    None,
}

impl NetworkChoice {
    pub fn mode_name(&self) -> String {
        match self {
            NetworkChoice::Bridge => "bridge".into(),
            NetworkChoice::Named(n) => n.clone(),
            NetworkChoice::Host => "host".into(),
            NetworkChoice::None => "none".into(),
        }
    }
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image as the client named it.
    pub image: String,
    pub run: RunOptions,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    pub auto_remove: bool,
    pub mounts: Vec<MountRequest>,
    pub network: NetworkChoice,
    pub ports: Vec<PortBinding>,
    pub publish_all: bool,
    pub exposed: Vec<PortProto>,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub stdin_once: bool,
    pub domainname: String,
    /// `--network-alias`: extra DNS names on the container's network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `Config.Healthcheck` as asked for (merged with the image's at create).
    #[serde(default)]
    pub healthcheck: Option<super::health::Healthcheck>,
}

/// Docker's rule for container names: `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<String, ServiceError> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut bytes = n.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && n.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(n.to_string())
    } else {
        Err(ServiceError::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// Parses `-v` syntax: `name:/dst[:ro]`, `/src:/dst[:ro|rw]`, `/dst` (anonymous volume).
pub fn parse_bind(spec: &str) -> Result<MountRequest, ServiceError> {
    let bad =
        |why: &str| ServiceError::invalid(format!("invalid volume specification: '{spec}': {why}"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] if dst.starts_with('/') => (Some(*src), *dst, ""),
        [dst, mode] => (None, *dst, *mode),
        [src, dst, mode] => (Some(*src), *dst, *mode),
        _ => return Err(bad("too many colons")),
    };
    if !dst.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    if dst == "/" {
        return Err(bad("the destination cannot be /"));
    }
    let mut read_only = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "nocopy" => {}
            other => return Err(bad(&format!("unknown mode {other:?}"))),
        }
    }
    Ok(match src {
        Some(s) if s.starts_with('/') => MountRequest::Bind {
            source: PathBuf::from(s),
            destination: dst.to_string(),
            read_only,
        },
        Some("") => return Err(bad("empty source")),
        Some(name) => {
            if !crate::service::volumes::valid_volume_name(name) {
                return Err(ServiceError::invalid(format!(
                    "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                )));
            }
            MountRequest::Volume {
                name: Some(name.to_string()),
                destination: dst.to_string(),
                read_only,
            }
        }
        None => MountRequest::Volume {
            name: None,
            destination: dst.to_string(),
            read_only,
        },
    })
}

fn non_negative(v: Option<i64>, what: &str) -> Result<Option<i64>, ServiceError> {
    match v {
        Some(x) if x < 0 && x != -1 => Err(ServiceError::invalid(format!(
            "invalid {what}: {x} must not be negative"
        ))),
        Some(0) | None => Ok(None),
        Some(x) => Ok(Some(x)),
    }
}

/// Validates a create request.
pub fn parse_create(body: ContainerCreateBody) -> Result<ContainerSpec, ServiceError> {
    let image = body.image.filter(|i| !i.is_empty()).ok_or_else(|| {
        ServiceError::invalid("config cannot be empty in order to create a container")
    })?;
    let hc = body.host_config.unwrap_or_default();
    let healthcheck = body
        .healthcheck
        .as_ref()
        .map(super::health::Healthcheck::from_api)
        .transpose()?;

    let retry_count = hc
        .restart_policy
        .as_ref()
        .and_then(|p| p.maximum_retry_count)
        .unwrap_or(0);
    let restart = match hc.restart_policy.clone() {
        None => RestartPolicy::No,
        Some(p) => {
            let max = p.maximum_retry_count.unwrap_or(0);
            match p.name {
                None | Some(RestartPolicyNameEnum::EMPTY) | Some(RestartPolicyNameEnum::NO) => {
                    RestartPolicy::No
                }
                Some(RestartPolicyNameEnum::ALWAYS) => RestartPolicy::Always,
                Some(RestartPolicyNameEnum::UNLESS_STOPPED) => RestartPolicy::UnlessStopped,
                Some(RestartPolicyNameEnum::ON_FAILURE) => {
                    if max < 0 {
                        return Err(ServiceError::invalid(
                            "invalid restart policy: maximum retry count cannot be negative",
                        ));
                    }
                    RestartPolicy::OnFailure {
                        max: u32::try_from(max).unwrap_or(u32::MAX),
                    }
                }
            }
        }
    };
    if !matches!(restart, RestartPolicy::OnFailure { .. }) && retry_count != 0 {
        return Err(ServiceError::invalid(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ));
    }
    let auto_remove = hc.auto_remove.unwrap_or(false);
    if auto_remove && restart != RestartPolicy::No {
        return Err(ServiceError::invalid(
            "conflicting options: cannot specify both --restart and --rm",
        ));
    }

    let mut mounts = Vec::new();
    for b in hc.binds.unwrap_or_default() {
        mounts.push(parse_bind(&b)?);
    }
    for dst in body.volumes.unwrap_or_default() {
        if !mounts.iter().any(|m| m.destination() == dst) {
            mounts.push(parse_bind(&dst)?);
        }
    }
    for m in hc.mounts.unwrap_or_default() {
        let dst = m
            .target
            .clone()
            .filter(|t| t.starts_with('/'))
            .ok_or_else(|| {
                ServiceError::invalid("invalid mount config: Target must be an absolute path")
            })?;
        let ro = m.read_only.unwrap_or(false);
        use bollard_stubs::models::MountTypeEnum;
        mounts.push(match m.typ {
            Some(MountTypeEnum::BIND) => MountRequest::Bind {
                source: m
                    .source
                    .filter(|s| s.starts_with('/'))
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        ServiceError::invalid("invalid mount config for type \"bind\": source must be an absolute path")
                    })?,
                destination: dst,
                read_only: ro,
            },
            Some(MountTypeEnum::VOLUME) | None => MountRequest::Volume {
                name: m.source.filter(|s| !s.is_empty()),
                destination: dst,
                read_only: ro,
            },
            Some(other) => {
                return Err(ServiceError::invalid(format!(
                    "invalid mount config: mount type {other} is not supported"
                )))
            }
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &mounts {
        if !seen.insert(m.destination().to_string()) {
            return Err(ServiceError::invalid(format!(
                "Duplicate mount point: {}",
                m.destination()
            )));
        }
    }

    let network = match hc.network_mode.as_deref() {
        None | Some("") | Some("default") | Some("bridge") => NetworkChoice::Bridge,
        Some("host") => NetworkChoice::Host,
        Some("none") => NetworkChoice::None,
        Some(m) if m.starts_with("container:") => {
            return Err(ServiceError::invalid(format!(
                "network mode {m:?} is not supported by berth"
            )))
        }
        Some(other) => NetworkChoice::Named(other.to_string()),
    };
    let aliases: Vec<String> = body
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
        .map(|eps| {
            eps.values()
                .flat_map(|e| e.aliases.clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let network = if body.network_disabled.unwrap_or(false) {
        NetworkChoice::None
    } else {
        network
    };

    let mut ports = Vec::new();
    for (cport, bindings) in hc.port_bindings.unwrap_or_default() {
        let container = PortProto::parse(&cport)?;
        for b in bindings.unwrap_or_default() {
            let host_ip = match b.host_ip.as_deref() {
                None | Some("") => None,
                Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
                    ServiceError::invalid(format!("invalid host IP {ip:?} for port {cport}"))
                })?),
            };
            let host_port = match b.host_port.as_deref() {
                None | Some("") | Some("0") => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| {
                    ServiceError::invalid(format!("invalid host port {p:?} for port {cport}"))
                })?),
            };
            ports.push(PortBinding {
                container,
                host_ip,
                host_port,
            });
        }
    }
    ports.sort_by_key(|p| (p.container, p.host_port));
    let mut exposed: Vec<PortProto> = body
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .map(|p| PortProto::parse(p))
        .collect::<Result<_, _>>()?;
    exposed.sort();
    exposed.dedup();

    let memory = non_negative(hc.memory, "memory")?;
    if let Some(m) = memory {
        if m < 6 * 1024 * 1024 {
            return Err(ServiceError::invalid("Minimum memory limit allowed is 6MB"));
        }
    }
    let memory_swap = match hc.memory_swap {
        Some(-1) => Some(-1),
        other => non_negative(other, "memory swap")?,
    };
    if let (Some(m), Some(s)) = (memory, memory_swap) {
        if s != -1 && s < m {
            return Err(ServiceError::invalid(
                "Minimum memoryswap limit should be larger than memory limit, see usage",
            ));
        }
    }
    let nano_cpus = non_negative(hc.nano_cpus, "NanoCpus")?;
    if nano_cpus.is_some() && (hc.cpu_quota.unwrap_or(0) > 0 || hc.cpu_period.unwrap_or(0) > 0) {
        return Err(ServiceError::invalid(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    let nano_cpus = match (nano_cpus, hc.cpu_quota.filter(|q| *q > 0)) {
        (Some(n), _) => Some(n),
        (None, Some(q)) => {
            let period = hc.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
            Some(q * 1_000_000_000 / period)
        }
        (None, None) => None,
    };
    let cpus_available = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    if let Some(n) = nano_cpus {
        if n > cpus_available * 1_000_000_000 {
            return Err(ServiceError::invalid(format!(
                "range of CPUs is from 0.01 to {cpus_available}.00, as there are only {cpus_available} CPUs available"
            )));
        }
    }
    let pids_limit = match hc.pids_limit {
        Some(p) if p > 0 => Some(p),
        _ => None,
    };
    let cpu_shares = match hc.cpu_shares {
        Some(s) if s < 0 => {
            return Err(ServiceError::invalid(
                "invalid CPU shares: must not be negative",
            ))
        }
        Some(0) | None => None,
        Some(s) => Some(s as u64),
    };

    let mut rlimits = Vec::new();
    for u in hc.ulimits.unwrap_or_default() {
        let name = u.name.unwrap_or_default();
        let (soft, hard) = (u.soft.unwrap_or(0), u.hard.unwrap_or(0));
        if soft < 0 || hard < 0 || soft > hard {
            return Err(ServiceError::invalid(format!(
                "invalid ulimit {name}: soft {soft} must be <= hard {hard}"
            )));
        }
        rlimits.push(Rlimit {
            name: format!("RLIMIT_{}", name.to_uppercase()),
            soft: soft as u64,
            hard: hard as u64,
        });
    }
    let no_new_privileges = hc.security_opt.unwrap_or_default().iter().any(|o| {
        matches!(
            o.as_str(),
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
        )
    });

    let hostname = body.hostname.filter(|h| !h.is_empty());
    if let Some(h) = &hostname {
        if h.len() > 63 || h.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(ServiceError::invalid(format!("invalid hostname {h:?}")));
        }
    }
    let stop_timeout = match body.stop_timeout {
        Some(t) if t < 0 => None,
        Some(t) => Some(t as u64),
        None => None,
    };

    let run = RunOptions {
        // `--entrypoint ""` arrives as `[""]`: it clears the image's entrypoint.
        entrypoint: body
            .entrypoint
            .map(|e| if e == [""] { Vec::new() } else { e }),
        cmd: body.cmd.filter(|c| !c.is_empty()),
        env: body.env.unwrap_or_default(),
        working_dir: body.working_dir.filter(|w| !w.is_empty()),
        user: body.user.filter(|u| !u.is_empty()),
        hostname,
        tty: body.tty.unwrap_or(false),
        open_stdin: body.open_stdin.unwrap_or(false),
        cap_add: hc.cap_add.unwrap_or_default(),
        cap_drop: hc.cap_drop.unwrap_or_default(),
        no_new_privileges,
        read_only_rootfs: hc.readonly_rootfs.unwrap_or(false),
        resources: Resources {
            memory,
            memory_swap,
            nano_cpus,
            cpu_shares,
            pids_limit,
        },
        rlimits,
        network: match network {
            NetworkChoice::Host => NetworkMode::Host,
            _ => NetworkMode::Isolated,
        },
        mounts: Vec::new(),
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout,
    };
    for e in &run.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(ServiceError::invalid(format!(
                "invalid environment variable: {e:?}"
            )));
        }
    }

    Ok(ContainerSpec {
        image,
        run,
        labels: body.labels.unwrap_or_default().into_iter().collect(),
        restart,
        auto_remove,
        mounts,
        network,
        ports,
        publish_all: hc.publish_all_ports.unwrap_or(false),
        exposed,
        attach_stdin: body.attach_stdin.unwrap_or(false),
        attach_stdout: body.attach_stdout.unwrap_or(false),
        attach_stderr: body.attach_stderr.unwrap_or(false),
        stdin_once: body.stdin_once.unwrap_or(false),
        domainname: body.domainname.unwrap_or_default(),
        aliases,
        healthcheck,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> ContainerCreateBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_clis_run_request_parses() {
        // The body `docker run --rm busybox echo hi` sends (docker-run-transcript.txt).
        let b = body(serde_json::json!({
            "Hostname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,
            "Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["echo","hi"],
            "Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"Labels":{},
            "HostConfig":{"Binds":null,"NetworkMode":"default","PortBindings":{},
              "RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,
              "Memory":0,"NanoCpus":0,"PidsLimit":0,"CpuShares":0,"MemorySwap":0,"Ulimits":[]}
        }));
        let s = parse_create(b).unwrap();
        assert_eq!(s.image, "busybox");
        assert_eq!(s.run.cmd, Some(vec!["echo".into(), "hi".into()]));
        assert!(s.auto_remove && s.attach_stdout && s.attach_stderr && !s.attach_stdin);
        assert_eq!(s.restart, RestartPolicy::No);
        assert_eq!(s.network, NetworkChoice::Bridge);
        assert_eq!(s.run.resources, Resources::default());
    }

    #[test]
    fn limits_ports_mounts_and_restart_parse() {
        let b = body(serde_json::json!({
            "Image": "web", "ExposedPorts": {"8080/tcp": {}},
            "HostConfig": {
                "Memory": 33554432, "NanoCpus": 500000000, "PidsLimit": 32,
                "Binds": ["data:/data", "/srv:/srv:ro"],
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}, {"HostIp":"","HostPort":""}]},
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
                "NetworkMode": "none"
            }
        }));
        let s = parse_create(b).unwrap();
        assert_eq!(s.run.resources.memory, Some(32 << 20));
        assert_eq!(s.run.resources.nano_cpus, Some(500_000_000));
        assert_eq!(s.run.resources.pids_limit, Some(32));
        assert_eq!(s.restart, RestartPolicy::OnFailure { max: 2 });
        assert_eq!(s.network, NetworkChoice::None);
        assert_eq!(
            s.exposed,
            vec![PortProto {
                port: 8080,
                proto: Protocol::Tcp
            }]
        );
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[0].host_port, None);
        assert_eq!(s.ports[1].host_port, Some(18080));
        assert_eq!(
            s.mounts,
            vec![
                MountRequest::Volume {
                    name: Some("data".into()),
                    destination: "/data".into(),
                    read_only: false
                },
                MountRequest::Bind {
                    source: "/srv".into(),
                    destination: "/srv".into(),
                    read_only: true
                },
            ]
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let bad = |j: serde_json::Value| parse_create(body(j)).unwrap_err();
        assert!(matches!(
            bad(serde_json::json!({})),
            ServiceError::InvalidArgument { .. }
        ));
        bad(serde_json::json!({"Image":"x","HostConfig":{"Memory": 1024}}));
        bad(
            serde_json::json!({"Image":"x","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}),
        );
        bad(serde_json::json!({"Image":"x","HostConfig":{"Binds":["rel/path:/x"]}}));
        bad(serde_json::json!({"Image":"x","HostConfig":{"Binds":["/a:relative"]}}));
        bad(serde_json::json!({"Image":"x","HostConfig":{"Binds":["/a:/x","/b:/x"]}}));
        bad(serde_json::json!({"Image":"x","HostConfig":{"PortBindings":{"99999/tcp":[]}}}));
        bad(serde_json::json!({"Image":"x","HostConfig":{"PortBindings":{"80/sctp":[]}}}));
        bad(
            serde_json::json!({"Image":"x","HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":3}}}),
        );
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert_eq!(validate_name("/web").unwrap(), "web");
        assert_eq!(validate_name("a.b_c-1").unwrap(), "a.b_c-1");
        assert!(validate_name("x").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn restart_decisions() {
        let p = RestartPolicy::OnFailure { max: 2 };
        assert!(p.should_restart(1, 0, false));
        assert!(p.should_restart(1, 1, false));
        assert!(!p.should_restart(1, 2, false));
        assert!(!p.should_restart(0, 0, false));
        assert!(RestartPolicy::Always.should_restart(0, 100, false));
        assert!(!RestartPolicy::Always.should_restart(1, 0, true));
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
        assert!(RestartPolicy::UnlessStopped.start_on_boot(false));
        assert!(!RestartPolicy::UnlessStopped.start_on_boot(true));
        assert!(RestartPolicy::Always.start_on_boot(true));
        assert_eq!(RestartPolicy::backoff_ms(0), 100);
        assert_eq!(RestartPolicy::backoff_ms(3), 800);
        assert_eq!(RestartPolicy::backoff_ms(30), 60_000);
    }
}
