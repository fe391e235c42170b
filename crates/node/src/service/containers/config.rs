//! What a container is asked to be: the create request of the Engine API, validated and
//! turned into typed options. Pure: no I/O, unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use berth_runtime::spec::{NetworkMode, Resources, Rlimit, RunOptions, TmpfsMount};
use bollard_stubs::models::ContainerCreateBody;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Where an `--add-host` name points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostTarget {
    Ip(IpAddr),
    /// `host-gateway`: the default bridge's gateway address, resolved at create.
    HostGateway,
}

/// One `--add-host name:address` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    pub target: HostTarget,
}

/// `--dns`, `--dns-search`, `--dns-option` and `--add-host`: what the container's
/// `/etc/resolv.conf` and `/etc/hosts` say beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameResolution {
    pub extra_hosts: Vec<ExtraHost>,
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

/// A validated create request.
///
/// `request` is the body exactly as the client sent it (every field of the API model,
/// normalised: `Cmd`/`Entrypoint` as lists); the other fields are what berth derived from
/// it. [`refuse_unsupported`] guarantees every non-default field of `request` is one berth
/// honours, so nothing the client asked for is silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The create body as received (see the type's doc).
    #[serde(default)]
    pub request: ContainerCreateBody,
    #[serde(default)]
    pub name_resolution: NameResolution,
    /// `--init`: run an init (tini) as PID 1. `run.init` holds its host path once created.
    #[serde(default)]
    pub init: bool,
    /// `--device`: host devices asked for; `run.devices` holds the nodes once created.
    #[serde(default)]
    pub devices: Vec<DeviceRequest>,
    /// `Config.Healthcheck` as asked for (merged with the image's at create).
    #[serde(default)]
    pub healthcheck: Option<super::health::Healthcheck>,
}

/// One `--device HOST[:CONTAINER[:PERMS]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub path_on_host: PathBuf,
    pub path_in_container: String,
    /// Subset of `rwm`.
    pub permissions: String,
}

/// Checks `HostConfig.Devices` entries: absolute paths, permissions within `rwm`.
fn parse_devices(
    list: &[bollard_stubs::models::DeviceMapping],
) -> Result<Vec<DeviceRequest>, ServiceError> {
    list.iter()
        .map(|d| {
            let host = d.path_on_host.clone().unwrap_or_default();
            let inside = d
                .path_in_container
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| host.clone());
            let perms = d
                .cgroup_permissions
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "rwm".into());
            if !host.starts_with('/') || !inside.starts_with('/') {
                return Err(ServiceError::invalid(format!(
                    "HostConfig.Devices: {host:?}:{inside:?}: paths must be absolute"
                )));
            }
            if !perms.chars().all(|c| "rwm".contains(c)) {
                return Err(ServiceError::invalid(format!(
                    "HostConfig.Devices: invalid cgroup permissions {perms:?} for {host}"
                )));
            }
            Ok(DeviceRequest {
                path_on_host: PathBuf::from(host),
                path_in_container: inside,
                permissions: perms,
            })
        })
        .collect()
}

/// Keys of the create body's `Config` part berth honours: applied, kept in the spec and
/// shown back by inspect. `Healthcheck` is run by the health checker; `OnBuild` and `Shell`
/// only matter to builds and commits and are kept and shown as dockerd does.
pub const CONFIG_HONOURED: &[&str] = &[
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "HostConfig",
    "NetworkingConfig",
];

/// Keys of `HostConfig` berth honours (values checked by [`parse_create`]). `LogConfig` is
/// the log driver's; `ContainerIDFile` is written by the client and only shown back.
pub const HOST_CONFIG_HONOURED: &[&str] = &[
    "Binds",
    "ContainerIDFile",
    "LogConfig",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "AutoRemove",
    "ConsoleSize",
    "Annotations",
    "CapAdd",
    "CapDrop",
    "CgroupnsMode",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "IpcMode",
    "OomScoreAdj",
    "PidMode",
    "Privileged",
    "PublishAllPorts",
    "ReadonlyRootfs",
    "SecurityOpt",
    "Tmpfs",
    "UsernsMode",
    "ShmSize",
    "Sysctls",
    "CpuShares",
    "Memory",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "NanoCpus",
    "OomKillDisable",
    "Init",
    "Devices",
    "PidsLimit",
    "Ulimits",
    "Mounts",
    "MaskedPaths",
    "ReadonlyPaths",
];

/// Keys of a `NetworkingConfig.EndpointsConfig` entry berth honours. The rest of the
/// model's keys are either refused or, for `NetworkID`, `EndpointID`, `Gateway`,
/// `IPAddress`, `IPPrefixLen`, `IPv6Gateway`, `GlobalIPv6Address`, `GlobalIPv6PrefixLen`
/// and `DNSNames`, read-only in the API (dockerd ignores them on create too).
pub const ENDPOINT_HONOURED: &[&str] = &[
    "Aliases",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "DNSNames",
];

/// Keys of a `HostConfig.Mounts` entry berth honours. `Consistency` is a Docker Desktop
/// hint that dockerd ignores on Linux too; `TmpfsOptions` (SizeBytes, Mode, Options) apply
/// to tmpfs mounts. `BindOptions` (propagation, non-recursive, ...), `VolumeOptions`
/// (nocopy, labels, driver, subpath) and `ImageOptions` are refused when set.
pub const MOUNT_HONOURED: &[&str] = &[
    "Target",
    "Source",
    "Type",
    "ReadOnly",
    "Consistency",
    "TmpfsOptions",
];

pub use berth_orchestrator::spec::is_unset;

/// The first key of `obj` set to a non-default value and not in `honoured`, for the error.
fn first_unsupported<'a>(
    obj: &'a serde_json::Map<String, Value>,
    honoured: &[&str],
    special_default: impl Fn(&str, &Value) -> bool,
) -> Option<&'a str> {
    obj.iter()
        .find(|(k, v)| !honoured.contains(&k.as_str()) && !is_unset(v) && !special_default(k, v))
        .map(|(k, _)| k.as_str())
}

fn unsupported(field: &str) -> ServiceError {
    ServiceError::invalid(format!(
        "{field} is not supported by berth: remove the option (or leave it at its default)"
    ))
}

/// What `HostConfig.SecurityOpt` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOpts {
    pub no_new_privileges: bool,
    pub seccomp_unconfined: bool,
    /// A custom profile (the JSON the docker CLI read from `seccomp=FILE`), checked.
    pub seccomp_profile: Option<String>,
    /// `apparmor=NAME` (`unconfined` included).
    pub apparmor_profile: Option<String>,
}

/// Where the kernel shows AppArmor when it is enabled (dockerd's `apparmor.HostSupports`).
pub const APPARMOR_SYSFS: &str = "/sys/kernel/security/apparmor";

/// Where the kernel shows SELinux when it is enabled.
pub const SELINUX_SYSFS: &str = "/sys/fs/selinux/enforce";

/// Parses `HostConfig.SecurityOpt` as dockerd's `parseSecurityOpt` does (`KEY=VALUE`, or the
/// deprecated `KEY:VALUE`):
/// - `no-new-privileges[=BOOL]`;
/// - `seccomp=unconfined`, `seccomp=builtin` (Docker's default profile), or
///   `seccomp=<profile JSON>` (the docker CLI sends the file's content), checked here:
///   a profile that does not parse is a 400 naming the fault;
/// - `apparmor=unconfined`, or `apparmor=NAME` where the host has AppArmor
///   ([`APPARMOR_SYSFS`]); otherwise refused with the reason;
/// - `label=...` (SELinux): `disable`, `user:`, `role:`, `type:`, `level:`, `filetype:`,
///   `nested` are accepted on a host without SELinux, where they mean nothing, as dockerd
///   accepts them there; refused on a host with SELinux, where berth would not apply them.
///
/// Anything else is refused by name, with dockerd's words (`invalid --security-opt 2`).
pub fn parse_security_opt(opts: &[String]) -> Result<SecurityOpts, ServiceError> {
    let mut out = SecurityOpts::default();
    for o in opts {
        if o == "no-new-privileges" {
            out.no_new_privileges = true;
            continue;
        }
        if o == "disable" {
            continue;
        }
        let split = if o.contains('=') {
            o.split_once('=')
        } else {
            o.split_once(':')
        };
        let Some((k, v)) = split else {
            return Err(ServiceError::invalid(format!(
                "invalid --security-opt 1: {o:?}"
            )));
        };
        match k {
            "no-new-privileges" => {
                out.no_new_privileges = match v {
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                    _ => {
                        return Err(ServiceError::invalid(format!(
                            "invalid --security-opt 2: {o:?}"
                        )))
                    }
                }
            }
            "seccomp" => match v {
                "unconfined" => {
                    out.seccomp_unconfined = true;
                    out.seccomp_profile = None;
                }
                "" | "builtin" => {
                    out.seccomp_unconfined = false;
                    out.seccomp_profile = None;
                }
                profile => {
                    berth_runtime::seccomp::Profile::parse(profile).map_err(|e| {
                        ServiceError::invalid(format!(
                            "HostConfig.SecurityOpt: invalid seccomp profile: {e}"
                        ))
                    })?;
                    out.seccomp_unconfined = false;
                    out.seccomp_profile = Some(profile.to_string());
                }
            },
            "apparmor" => {
                if v != "unconfined" && !std::path::Path::new(APPARMOR_SYSFS).exists() {
                    return Err(ServiceError::invalid(format!(
                        "HostConfig.SecurityOpt {o:?}: AppArmor is not enabled on this host ({APPARMOR_SYSFS} is absent): only apparmor=unconfined can be honoured"
                    )));
                }
                out.apparmor_profile = Some(v.to_string());
            }
            "label" => {
                let known = v == "disable"
                    || v == "nested"
                    || ["user:", "role:", "type:", "level:", "filetype:"]
                        .iter()
                        .any(|p| v.starts_with(p));
                if !known {
                    return Err(ServiceError::invalid(format!(
                        "HostConfig.SecurityOpt {o:?}: unknown SELinux label option (expected disable, nested, user:, role:, type:, level: or filetype:)"
                    )));
                }
                if v != "disable" && std::path::Path::new(SELINUX_SYSFS).exists() {
                    return Err(ServiceError::invalid(format!(
                        "HostConfig.SecurityOpt {o:?}: SELinux labels are not supported by berth (only label=disable)"
                    )));
                }
            }
            _ => {
                return Err(ServiceError::invalid(format!(
                    "invalid --security-opt 2: {o:?}"
                )))
            }
        }
    }
    Ok(out)
}

/// Refuses a create body that sets, to a non-default value, any field berth does not
/// honour; the error names the field (`HostConfig.Privileged`). Checks the keys of the
/// model as serialised, so a field added to the model is refused until it is implemented.
pub fn refuse_unsupported(body: &ContainerCreateBody) -> Result<(), ServiceError> {
    let v = serde_json::to_value(body).map_err(|e| ServiceError::invalid(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Ok(());
    };
    if let Some(k) = first_unsupported(obj, CONFIG_HONOURED, |_, _| false) {
        return Err(unsupported(k));
    }
    if let Some(hc) = obj.get("HostConfig").and_then(Value::as_object) {
        // -1 is the CLI's "unset" for swappiness.
        let special = |k: &str, v: &Value| k == "MemorySwappiness" && v.as_i64() == Some(-1);
        if let Some(k) = first_unsupported(hc, HOST_CONFIG_HONOURED, special) {
            return Err(unsupported(&format!("HostConfig.{k}")));
        }
    }
    if let Some(mounts) = obj
        .get("HostConfig")
        .and_then(|hc| hc.get("Mounts"))
        .and_then(Value::as_array)
    {
        for m in mounts.iter().filter_map(Value::as_object) {
            if let Some(k) = first_unsupported(m, MOUNT_HONOURED, |_, _| false) {
                return Err(unsupported(&format!("HostConfig.Mounts.{k}")));
            }
        }
    }
    if let Some(eps) = obj
        .get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object)
    {
        for ep in eps.values() {
            refuse_unsupported_endpoint(ep, "NetworkingConfig.EndpointsConfig")?;
        }
    }
    Ok(())
}

/// Refuses an endpoint settings object (`NetworkingConfig.EndpointsConfig.<net>` of a
/// container create, `EndpointConfig` of `POST /networks/{id}/connect`) that sets a key
/// berth does not honour ([`ENDPOINT_HONOURED`]: `IPAMConfig` (`--ip`), `Links`,
/// `MacAddress`, `DriverOpts`, ...); the error names `<section>.<Key>` (400).
pub fn refuse_unsupported_endpoint(ep: &Value, section: &str) -> Result<(), ServiceError> {
    if let Some(k) = ep
        .as_object()
        .and_then(|ep| first_unsupported(ep, ENDPOINT_HONOURED, |_, _| false))
    {
        return Err(unsupported(&format!("{section}.{k}")));
    }
    Ok(())
}

/// Refuses a JSON request body that sets one of the model's `refused` keys to a non-default
/// value; the error names the field (`section.Key`, or `Key` when `section` is empty). Keys
/// outside the model are ignored, as dockerd ignores them (compose sends `CheckDuplicate`).
/// For bodies berth reads with its own narrower types (exec, volume, network create); the
/// unit tests check that `refused` and the honoured keys cover the whole model.
pub fn refuse_fields(body: &Value, section: &str, refused: &[&str]) -> Result<(), ServiceError> {
    let Some(obj) = body.as_object() else {
        return Err(ServiceError::invalid(
            "the request body must be a JSON object",
        ));
    };
    match obj
        .iter()
        .find(|(k, v)| refused.contains(&k.as_str()) && !is_unset(v))
    {
        None => Ok(()),
        Some((k, _)) if section.is_empty() => Err(unsupported(k)),
        Some((k, _)) => Err(unsupported(&format!("{section}.{k}"))),
    }
}

/// Keys of the exec create body (`ExecConfig`) berth refuses. The rest are honoured:
/// `ConsoleSize` is the tty's first size, set right after the exec starts.
pub const EXEC_REFUSED: &[&str] = &["DetachKeys", "Privileged"];

/// Keys of the volume create body (`VolumeCreateOptions`) berth refuses; the volume
/// service checks the driver and its options.
pub const VOLUME_REFUSED: &[&str] = &["ClusterVolumeSpec"];

/// Keys of the network create body (`NetworkCreateRequest`) berth refuses when set; `Scope`,
/// `EnableIPv4` and `IPAM` are checked by [`refuse_network_fields`], the rest honoured.
/// `Attachable` is what every local network is (compose 1.29 sends `true` on API >= 1.24).
pub const NETWORK_REFUSED: &[&str] = &["Ingress", "ConfigOnly", "ConfigFrom"];

/// Keys of `IPAM` berth refuses when set (`Driver` other than `default` is refused too).
pub const IPAM_REFUSED: &[&str] = &["Options"];

/// Keys of an `IPAM.Config` entry berth refuses when set.
pub const IPAM_CONFIG_REFUSED: &[&str] = &["IPRange", "AuxiliaryAddresses"];

/// Refuses a network create body that asks for what berth's bridge networks cannot give,
/// naming the field. Unknown keys (compose's `CheckDuplicate`) are ignored as by dockerd.
pub fn refuse_network_fields(body: &Value) -> Result<(), ServiceError> {
    refuse_fields(body, "", NETWORK_REFUSED)?;
    match body.get("Scope").and_then(Value::as_str) {
        None | Some("") | Some("local") => {}
        Some(other) => {
            return Err(ServiceError::invalid(format!(
                "Scope {other:?} is not supported by berth (supported: local)"
            )))
        }
    }
    if body.get("EnableIPv4") == Some(&Value::Bool(false)) {
        return Err(unsupported("EnableIPv4=false"));
    }
    if let Some(ipam) = body.get("IPAM").filter(|v| !v.is_null()) {
        refuse_fields(ipam, "IPAM", IPAM_REFUSED)?;
        match ipam.get("Driver").and_then(Value::as_str) {
            None | Some("") | Some("default") => {}
            Some(other) => {
                return Err(ServiceError::invalid(format!(
                    "IPAM.Driver {other:?} is not supported by berth (supported: default)"
                )))
            }
        }
        for c in ipam
            .get("Config")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            refuse_fields(c, "IPAM.Config", IPAM_CONFIG_REFUSED)?;
        }
    }
    Ok(())
}

/// Reads a create body. `Cmd` and `Entrypoint` may be a string (docker-py sends one) or a
/// list, as dockerd's `strslice` accepts: a string is a one-element list.
pub fn create_body_from_json(mut v: Value) -> Result<ContainerCreateBody, ServiceError> {
    if let Some(obj) = v.as_object_mut() {
        for key in ["Cmd", "Entrypoint"] {
            if let Some(Value::String(s)) = obj.get(key) {
                let one = Value::Array(vec![Value::String(s.clone())]);
                obj.insert(key.to_string(), one);
            }
        }
    }
    serde_json::from_value(v).map_err(|e| ServiceError::invalid(format!("invalid JSON: {e}")))
}

/// Parses `--add-host` entries: `name:address` (or `name=address`); the address may be
/// IPv6 (the first separator splits) or `host-gateway`.
pub fn parse_extra_host(entry: &str) -> Result<ExtraHost, ServiceError> {
    let bad = || ServiceError::invalid(format!("invalid IP address in add-host: {entry:?}"));
    let (name, addr) = entry
        .split_once('=')
        .or_else(|| entry.split_once(':'))
        .ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    let target = match addr {
        "host-gateway" => HostTarget::HostGateway,
        a => HostTarget::Ip(
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad())?,
        ),
    };
    Ok(ExtraHost {
        name: name.to_string(),
        target,
    })
}

/// Docker's tmpfs option syntax (`size=64m,mode=1777,noexec`) checked loosely: comma
/// separated, no empty item. The kernel judges the values at mount.
fn tmpfs_options(dest: &str, opts: &str) -> Result<Vec<String>, ServiceError> {
    if !dest.starts_with('/') || dest == "/" {
        return Err(ServiceError::invalid(format!(
            "invalid tmpfs mount {dest:?}: the destination must be an absolute path other than /"
        )));
    }
    opts.split(',')
        .filter(|o| !o.is_empty())
        .map(|o| {
            if o.contains(char::is_whitespace) {
                Err(ServiceError::invalid(format!(
                    "invalid tmpfs option {o:?} for {dest}"
                )))
            } else {
                Ok(o.to_string())
            }
        })
        .collect()
}

/// Docker's rule for `--sysctl`: only namespaced parameters; `net.*` not with the host's
/// network, IPC ones not with the host's IPC namespace.
fn check_sysctl(key: &str, net_host: bool, ipc_host: bool) -> Result<(), ServiceError> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let ipc = IPC.contains(&key) || key.starts_with("fs.mqueue.");
    let net = key.starts_with("net.");
    if ipc && ipc_host {
        return Err(ServiceError::invalid(format!(
            "sysctl {key:?} is not allowed in host IPC namespace"
        )));
    }
    if net && net_host {
        return Err(ServiceError::invalid(format!(
            "sysctl {key:?} not allowed in host network namespace"
        )));
    }
    if ipc || net {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "sysctl {key:?} is not whitelisted"
        )))
    }
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
    refuse_unsupported(&body)?;
    let request = body.clone();
    let image = body.image.filter(|i| !i.is_empty()).ok_or_else(|| {
        ServiceError::invalid("config cannot be empty in order to create a container")
    })?;
    let hc = body.host_config.unwrap_or_default();
    let healthcheck = body
        .healthcheck
        .as_ref()
        .map(super::health::Healthcheck::from_api)
        .transpose()?;

    let restart = match &hc.restart_policy {
        Some(p) => parse_restart_policy(p)?.unwrap_or(RestartPolicy::No),
        None => RestartPolicy::No,
    };
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
    let mut tmpfs = Vec::new();
    for (dest, opts) in hc.tmpfs.clone().unwrap_or_default() {
        tmpfs.push(TmpfsMount {
            options: tmpfs_options(&dest, &opts)?,
            destination: dest,
        });
    }
    tmpfs.sort_by(|a, b| a.destination.cmp(&b.destination));
    for m in hc.mounts.unwrap_or_default() {
        use bollard_stubs::models::MountTypeEnum;
        if m.typ == Some(MountTypeEnum::TMPFS) {
            let dest = m.target.clone().unwrap_or_default();
            if m.source.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(ServiceError::invalid(
                    "invalid mount config for type \"tmpfs\": source must not be specified",
                ));
            }
            let mut o = tmpfs_options(&dest, "")?;
            if m.read_only.unwrap_or(false) {
                o.push("ro".into());
            }
            if let Some(t) = &m.tmpfs_options {
                if let Some(size) = t.size_bytes.filter(|s| *s != 0) {
                    if size < 0 {
                        return Err(ServiceError::invalid(format!(
                            "invalid mount config for type \"tmpfs\": SizeBytes {size} must not be negative"
                        )));
                    }
                    o.push(format!("size={size}"));
                }
                if let Some(mode) = t.mode.filter(|m| *m != 0) {
                    o.push(format!("mode={mode:o}"));
                }
                for kv in t.options.iter().flatten() {
                    match kv.as_slice() {
                        [k] => o.push(k.clone()),
                        [k, v] => o.push(format!("{k}={v}")),
                        _ => {
                            return Err(ServiceError::invalid(format!(
                                "invalid mount config for type \"tmpfs\": option {kv:?} must have one or two items"
                            )))
                        }
                    }
                }
            }
            tmpfs.push(TmpfsMount {
                destination: dest,
                options: o,
            });
            continue;
        }
        let dst = m
            .target
            .clone()
            .filter(|t| t.starts_with('/'))
            .ok_or_else(|| {
                ServiceError::invalid("invalid mount config: Target must be an absolute path")
            })?;
        let ro = m.read_only.unwrap_or(false);
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
    let dests = mounts
        .iter()
        .map(MountRequest::destination)
        .chain(tmpfs.iter().map(|t| t.destination.as_str()));
    for d in dests {
        if !seen.insert(d.to_string()) {
            return Err(ServiceError::invalid(format!("Duplicate mount point: {d}")));
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
    // Docker's default (daemon/daemon_unix.go, adaptContainerSettings): a memory limit
    // without a swap limit gets memory + swap = twice the memory limit.
    let memory_swap = match (memory, memory_swap) {
        (Some(m), None) => Some(m.saturating_mul(2)),
        (_, s) => s,
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
    if hc.cpu_period.unwrap_or(0) > 0 && hc.cpu_quota.unwrap_or(0) <= 0 {
        return Err(ServiceError::invalid(
            "HostConfig.CpuPeriod without HostConfig.CpuQuota is not supported by berth",
        ));
    }
    let nano_cpus = match (nano_cpus, hc.cpu_quota.filter(|q| *q > 0)) {
        (Some(n), _) => Some(n),
        (None, Some(q)) => {
            let period = hc.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
            // In i128: a large quota overflowed i64 here (found by fuzz/api_create); the
            // saturated result is then refused by the CPU range check below.
            let n = i128::from(q) * 1_000_000_000 / i128::from(period);
            Some(i64::try_from(n).unwrap_or(i64::MAX))
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
    let security = parse_security_opt(hc.security_opt.as_deref().unwrap_or_default())?;
    let net_host = network == NetworkChoice::Host;
    let pid_host = match hc.pid_mode.as_deref().unwrap_or("") {
        "" => false,
        "host" => true,
        other => {
            return Err(ServiceError::invalid(format!(
                "HostConfig.PidMode {other:?} is not supported by berth (supported: host)"
            )))
        }
    };
    let ipc_host = match hc.ipc_mode.as_deref().unwrap_or("") {
        "" | "private" | "shareable" => false,
        "host" => true,
        other => {
            return Err(ServiceError::invalid(format!(
                "HostConfig.IpcMode {other:?} is not supported by berth (supported: private, shareable, host)"
            )))
        }
    };
    match hc.cgroupns_mode.map(|m| m.to_string()).as_deref() {
        None | Some("") | Some("host") => {}
        Some(other) => {
            return Err(ServiceError::invalid(format!(
                "HostConfig.CgroupnsMode {other:?} is not supported by berth (supported: host)"
            )))
        }
    }
    match hc.userns_mode.as_deref().unwrap_or("") {
        "" | "host" => {}
        other => {
            return Err(ServiceError::invalid(format!(
                "HostConfig.UsernsMode {other:?} is not supported by berth (supported: host)"
            )))
        }
    }
    let mut sysctls = BTreeMap::new();
    for (k, v) in hc.sysctls.clone().unwrap_or_default() {
        check_sysctl(&k, net_host, ipc_host)?;
        sysctls.insert(k, v);
    }
    let shm_size = match hc.shm_size {
        Some(s) if s < 0 => return Err(ServiceError::invalid("SHM size can not be less than 0")),
        Some(0) | None => None,
        Some(s) => Some(s),
    };
    let oom_score_adj = match hc.oom_score_adj {
        Some(0) | None => None,
        Some(a) if (-1000..=1000).contains(&a) => Some(a as i32),
        Some(a) => {
            return Err(ServiceError::invalid(format!(
                "Invalid value {a}, range for oom score adj is [-1000, 1000]"
            )))
        }
    };
    let memory_swappiness = match hc.memory_swappiness {
        None | Some(-1) => None,
        Some(s) if (0..=100).contains(&s) => Some(s as u64),
        Some(s) => {
            return Err(ServiceError::invalid(format!(
                "Invalid value: {s}, valid memory swappiness range is 0-100"
            )))
        }
    };
    let memory_reservation = non_negative(hc.memory_reservation, "memory reservation")?;
    let cpuset = |v: Option<String>, what: &str| -> Result<Option<String>, ServiceError> {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let ok = v.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            ends.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        if ok {
            Ok(Some(v))
        } else {
            Err(ServiceError::invalid(format!(
                "Invalid value {v} for {what}"
            )))
        }
    };
    let cpuset_cpus = cpuset(hc.cpuset_cpus.clone(), "cpuset cpus")?;
    let cpuset_mems = cpuset(hc.cpuset_mems.clone(), "cpuset mems")?;
    let devices = parse_devices(hc.devices.as_deref().unwrap_or_default())?;
    let mut name_resolution = NameResolution::default();
    for e in hc.extra_hosts.clone().unwrap_or_default() {
        name_resolution.extra_hosts.push(parse_extra_host(&e)?);
    }
    for d in hc.dns.clone().unwrap_or_default() {
        name_resolution.dns.push(
            d.parse()
                .map_err(|_| ServiceError::invalid(format!("{d} is not an ip address")))?,
        );
    }
    name_resolution.dns_search = hc.dns_search.clone().unwrap_or_default();
    name_resolution.dns_options = hc.dns_options.clone().unwrap_or_default();
    if let Some(size) = &hc.console_size {
        if size.len() != 2 {
            return Err(ServiceError::invalid(
                "HostConfig.ConsoleSize must be [height, width]",
            ));
        }
    }

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
        no_new_privileges: security.no_new_privileges,
        read_only_rootfs: hc.readonly_rootfs.unwrap_or(false),
        resources: Resources {
            memory,
            memory_swap,
            nano_cpus,
            cpu_shares,
            pids_limit,
            cpuset_cpus,
            cpuset_mems,
            memory_reservation,
            memory_swappiness,
            oom_kill_disable: hc.oom_kill_disable.unwrap_or(false),
        },
        rlimits,
        network: match network {
            NetworkChoice::Host => NetworkMode::Host,
            _ => NetworkMode::Isolated,
        },
        mounts: Vec::new(),
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout,
        tmpfs,
        // The host path is the daemon's: filled in at create.
        init: None,
        sysctls,
        shm_size,
        group_add: hc.group_add.clone().unwrap_or_default(),
        oom_score_adj,
        pid_host,
        ipc_host,
        masked_paths: hc.masked_paths.clone(),
        readonly_paths: hc.readonly_paths.clone(),
        seccomp_unconfined: security.seccomp_unconfined,
        seccomp_profile: security.seccomp_profile,
        privileged: hc.privileged.unwrap_or(false),
        apparmor_profile: security.apparmor_profile,
        // Device numbers are the host's: read at create.
        devices: Vec::new(),
        annotations: hc
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        // HostConfig.LogConfig needs the daemon's default: resolved by the service.
        log: Default::default(),
    };
    for e in &run.env {
        if e.is_empty() || e.starts_with('=') || e.contains('\0') {
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
        request,
        name_resolution,
        init: hc.init.unwrap_or(false),
        devices,
        healthcheck,
    })
}

/// A Docker `HostConfig.RestartPolicy` as berth's, for create and update alike; `None` when
/// it names no policy (no name, or ""). Errors are dockerd's (moby
/// `runconfig.validateRestartPolicy`): a negative retry count, or a retry count with a policy
/// other than `on-failure`.
pub fn parse_restart_policy(
    p: &bollard_stubs::models::RestartPolicy,
) -> Result<Option<RestartPolicy>, ServiceError> {
    use bollard_stubs::models::RestartPolicyNameEnum as N;
    let max = p.maximum_retry_count.unwrap_or(0);
    let policy = match p.name {
        None | Some(N::EMPTY) => None,
        Some(N::NO) => Some(RestartPolicy::No),
        Some(N::ALWAYS) => Some(RestartPolicy::Always),
        Some(N::UNLESS_STOPPED) => Some(RestartPolicy::UnlessStopped),
        Some(N::ON_FAILURE) => {
            if max < 0 {
                return Err(ServiceError::invalid(
                    "invalid restart policy: maximum retry count cannot be negative",
                ));
            }
            Some(RestartPolicy::OnFailure {
                max: u32::try_from(max).unwrap_or(u32::MAX),
            })
        }
    };
    if !matches!(policy, Some(RestartPolicy::OnFailure { .. })) && max != 0 {
        return Err(ServiceError::invalid(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::{EndpointSettings, HostConfig};
    use serde_json::json;

    /// A serde Deserializer that records the field names a struct's `Deserialize` asks for:
    /// the keys of the API model, straight from bollard's types.
    struct KeyGrab<'a>(&'a mut Vec<&'static str>);

    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }

    impl std::error::Error for Stop {}

    impl serde::de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for KeyGrab<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    fn model_keys<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
        let mut keys = Vec::new();
        let _ = T::deserialize(KeyGrab(&mut keys));
        assert!(!keys.is_empty(), "no keys captured");
        keys
    }

    /// A non-default value for every `HostConfig` key of the model. A key missing here
    /// fails the walk, so a field added to the model must be classified.
    fn host_config_sample(key: &str) -> Option<Value> {
        Some(match key {
            "CpuShares" => json!(512),
            "Memory" => json!(10_000_000),
            "CgroupParent" => json!("elsewhere"),
            "BlkioWeight" => json!(300),
            "BlkioWeightDevice" => json!([{"Path": "/dev/sda", "Weight": 300}]),
            "BlkioDeviceReadBps"
            | "BlkioDeviceWriteBps"
            | "BlkioDeviceReadIOps"
            | "BlkioDeviceWriteIOps" => json!([{"Path": "/dev/sda", "Rate": 1}]),
            "CpuPeriod" => json!(50_000),
            "CpuQuota" => json!(50_000),
            "CpuRealtimePeriod" | "CpuRealtimeRuntime" => json!(1000),
            "CpusetCpus" | "CpusetMems" => json!("0"),
            "Devices" => {
                json!([{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n", "CgroupPermissions": "rwm"}])
            }
            "DeviceCgroupRules" => json!(["c 1:3 rwm"]),
            "DeviceRequests" => json!([{"Count": 1}]),
            "KernelMemory" | "KernelMemoryTCP" => json!(1_000_000),
            "MemoryReservation" => json!(10_000_000),
            "MemorySwap" => json!(-1),
            "MemorySwappiness" => json!(10),
            "NanoCpus" => json!(500_000_000),
            "OomKillDisable" => json!(true),
            "Init" => json!(true),
            "PidsLimit" => json!(10),
            "Ulimits" => json!([{"Name": "nofile", "Soft": 10, "Hard": 20}]),
            "CpuCount" | "CpuPercent" | "IOMaximumIOps" | "IOMaximumBandwidth" => json!(1),
            "Binds" => json!(["/a:/b"]),
            "ContainerIDFile" => json!("/tmp/cid"),
            "LogConfig" => json!({"Type": "json-file"}),
            "NetworkMode" => json!("host"),
            "PortBindings" => json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
            "RestartPolicy" => json!({"Name": "always"}),
            "AutoRemove" => json!(true),
            "VolumeDriver" => json!("other"),
            "VolumesFrom" => json!(["c1"]),
            "Mounts" => json!([{"Type": "volume", "Target": "/v"}]),
            "ConsoleSize" => json!([24, 80]),
            "Annotations" => json!({"a": "b"}),
            "CapAdd" => json!(["NET_ADMIN"]),
            "CapDrop" => json!(["NET_RAW"]),
            "CgroupnsMode" => json!("host"),
            "Dns" => json!(["1.1.1.1"]),
            "DnsOptions" => json!(["ndots:2"]),
            "DnsSearch" => json!(["ex.com"]),
            "ExtraHosts" => json!(["a:1.2.3.4"]),
            "GroupAdd" => json!(["10"]),
            "IpcMode" => json!("host"),
            "Cgroup" => json!("x"),
            "Links" => json!(["a:b"]),
            "OomScoreAdj" => json!(5),
            "PidMode" => json!("host"),
            "Privileged" => json!(true),
            "PublishAllPorts" => json!(true),
            "ReadonlyRootfs" => json!(true),
            "SecurityOpt" => json!(["no-new-privileges"]),
            "StorageOpt" => json!({"size": "1G"}),
            "Tmpfs" => json!({"/t": "size=1m"}),
            "UTSMode" => json!("host"),
            "UsernsMode" => json!("host"),
            "ShmSize" => json!(1_000_000),
            "Sysctls" => json!({"net.ipv4.ip_forward": "1"}),
            "Runtime" => json!("runc"),
            "Isolation" => json!("hyperv"),
            "MaskedPaths" => json!(["/proc/kcore"]),
            "ReadonlyPaths" => json!(["/proc/sys"]),
            _ => return None,
        })
    }

    /// A non-default value for every key of `Config` (the create body minus HostConfig and
    /// NetworkingConfig).
    fn config_sample(key: &str) -> Option<Value> {
        Some(match key {
            "Hostname" => json!("h1"),
            "Domainname" => json!("example.com"),
            "User" => json!("nobody"),
            "AttachStdin" | "AttachStdout" | "AttachStderr" | "Tty" | "OpenStdin" | "StdinOnce"
            | "NetworkDisabled" | "ArgsEscaped" => json!(true),
            "ExposedPorts" => json!({"80/tcp": {}}),
            "Env" => json!(["A=1"]),
            "Cmd" => json!(["run"]),
            "Healthcheck" => json!({"Test": ["CMD", "true"]}),
            "Image" => json!("img"),
            "Volumes" => json!({"/v": {}}),
            "WorkingDir" => json!("/w"),
            "Entrypoint" => json!(["/e"]),
            "MacAddress" => json!("02:42:ac:11:00:02"),
            "OnBuild" => json!(["RUN x"]),
            "Labels" => json!({"a": "b"}),
            "StopSignal" => json!("SIGINT"),
            "StopTimeout" => json!(5),
            "Shell" => json!(["/bin/sh", "-c"]),
            _ => return None,
        })
    }

    fn endpoint_sample(key: &str) -> Option<Value> {
        Some(match key {
            "IPAMConfig" => json!({"IPv4Address": "10.0.0.5"}),
            "Links" | "Aliases" | "DNSNames" => json!(["a"]),
            "MacAddress" => json!("02:42:ac:11:00:02"),
            "DriverOpts" => json!({"a": "b"}),
            "GwPriority" => json!(1),
            "NetworkID" | "EndpointID" | "Gateway" | "IPAddress" | "IPv6Gateway"
            | "GlobalIPv6Address" => json!("x"),
            "IPPrefixLen" | "GlobalIPv6PrefixLen" => json!(24),
            _ => return None,
        })
    }

    /// The record create would build from `spec`, for inspect.
    fn record_of(spec: ContainerSpec) -> super::super::record::ContainerRecord {
        super::super::record::ContainerRecord {
            id: "0".repeat(64),
            name: "c".into(),
            created: String::new(),
            image_id: String::new(),
            path: String::new(),
            args: Vec::new(),
            env: spec.run.env.clone(),
            working_dir: spec.run.working_dir.clone().unwrap_or_default(),
            user: spec.run.user.clone().unwrap_or_default(),
            hostname: spec.run.hostname.clone().unwrap_or_default(),
            labels: spec.labels.clone(),
            exposed: spec.exposed.clone(),
            mounts: Vec::new(),
            ports: Vec::new(),
            endpoints: Vec::new(),
            log_path: String::new(),
            state: Default::default(),
            healthcheck: spec.healthcheck.clone(),
            shell: Vec::new(),
            spec,
        }
    }

    /// Whether inspect's `shown` value carries everything of `sent`.
    fn shows(shown: &Value, sent: &Value) -> bool {
        match (shown, sent) {
            (Value::Object(a), Value::Object(b)) => {
                b.iter().all(|(k, v)| a.get(k).is_some_and(|x| shows(x, v)))
            }
            _ => shown == sent,
        }
    }

    /// Walks every key of the model: honoured ones are accepted and shown back by inspect,
    /// the rest are refused with an error naming the field.
    #[test]
    fn every_model_field_is_honoured_or_refused_by_name() {
        let mut refused = Vec::new();
        for key in model_keys::<HostConfig>() {
            let sample = host_config_sample(key)
                .unwrap_or_else(|| panic!("HostConfig.{key}: new field; classify it"));
            assert!(!is_unset(&sample), "{key}");
            let mut b = json!({"Image": "img", "HostConfig": {key: sample}});
            // A period alone says nothing: it goes with a quota.
            if key == "CpuPeriod" {
                b["HostConfig"]["CpuQuota"] = json!(25_000);
            }
            let got = parse_create(serde_json::from_value(b).unwrap());
            if HOST_CONFIG_HONOURED.contains(&key) {
                let spec = got.unwrap_or_else(|e| panic!("HostConfig.{key}: {e}"));
                let v = record_of(spec).inspect();
                assert!(
                    shows(&v["HostConfig"][key], &sample),
                    "HostConfig.{key}: inspect shows {} for {sample}",
                    v["HostConfig"][key]
                );
            } else {
                let e = got.expect_err(key).to_string();
                assert!(e.contains(&format!("HostConfig.{key}")), "{key}: {e}");
                refused.push(key);
            }
        }
        assert!(refused.contains(&"Runtime"), "{refused:?}");
        for key in model_keys::<ContainerCreateBody>() {
            if key == "HostConfig" || key == "NetworkingConfig" {
                continue;
            }
            let sample = config_sample(key)
                .unwrap_or_else(|| panic!("Config.{key}: new field; classify it"));
            let mut b = json!({"Image": "img"});
            b[key] = sample.clone();
            let got = parse_create(serde_json::from_value(b).unwrap());
            if CONFIG_HONOURED.contains(&key) {
                let spec = got.unwrap_or_else(|e| panic!("Config.{key}: {e}"));
                let v = record_of(spec).inspect();
                // Volumes show the mounts resolved at create (an anonymous volume each).
                if key != "Volumes" {
                    assert!(
                        shows(&v["Config"][key], &sample),
                        "Config.{key}: inspect shows {} for {sample}",
                        v["Config"][key]
                    );
                }
            } else {
                let e = got.expect_err(key).to_string();
                assert!(e.contains(key), "{key}: {e}");
            }
        }
        for key in model_keys::<EndpointSettings>() {
            let sample = endpoint_sample(key)
                .unwrap_or_else(|| panic!("EndpointSettings.{key}: new field; classify it"));
            let b = json!({"Image": "img", "HostConfig": {"NetworkMode": "n1"},
                           "NetworkingConfig": {"EndpointsConfig": {"n1": {key: sample}}}});
            let got = parse_create(serde_json::from_value(b).unwrap());
            if ENDPOINT_HONOURED.contains(&key) {
                got.unwrap_or_else(|e| panic!("EndpointSettings.{key}: {e}"));
            } else {
                let e = got.expect_err(key).to_string();
                assert!(
                    e.contains(&format!("NetworkingConfig.EndpointsConfig.{key}")),
                    "{key}: {e}"
                );
            }
        }
    }

    /// Every key of the exec and volume create models is honoured or refused by name.
    #[test]
    fn exec_and_volume_bodies_walk_their_models() {
        use bollard_stubs::models::{ExecConfig, VolumeCreateOptions};
        for key in model_keys::<ExecConfig>() {
            let sample = match key {
                "AttachStdin" | "AttachStdout" | "AttachStderr" | "Tty" | "Privileged" => {
                    json!(true)
                }
                "ConsoleSize" => json!([24, 80]),
                "DetachKeys" => json!("ctrl-x"),
                "Env" | "Cmd" => json!(["A=1"]),
                "User" | "WorkingDir" => json!("x"),
                _ => panic!("ExecConfig.{key}: new field; classify it"),
            };
            let got = refuse_fields(&json!({key: sample}), "", EXEC_REFUSED);
            match (!EXEC_REFUSED.contains(&key), got) {
                (true, Ok(())) => {}
                (false, Err(e)) => assert!(e.to_string().contains(key), "{e}"),
                (h, g) => panic!("ExecConfig.{key}: honoured {h}, got {g:?}"),
            }
            assert!(refuse_fields(&json!({key: Value::Null}), "", EXEC_REFUSED).is_ok());
        }
        for key in model_keys::<VolumeCreateOptions>() {
            let sample = match key {
                "Name" | "Driver" => json!("x"),
                "DriverOpts" | "Labels" => json!({"a": "b"}),
                "ClusterVolumeSpec" => json!({"Group": "g"}),
                _ => panic!("VolumeCreateOptions.{key}: new field; classify it"),
            };
            let got = refuse_fields(&json!({key: sample}), "", VOLUME_REFUSED);
            match (!VOLUME_REFUSED.contains(&key), got) {
                (true, Ok(())) => {}
                (false, Err(e)) => assert!(e.to_string().contains(key), "{e}"),
                (h, g) => panic!("VolumeCreateOptions.{key}: honoured {h}, got {g:?}"),
            }
        }
    }

    /// Every key of the network create model (and its IPAM parts) is honoured or refused.
    #[test]
    fn network_bodies_walk_their_model() {
        use bollard_stubs::models::{Ipam, IpamConfig, NetworkCreateRequest};
        let check = |body: Value, key: &str, refused: bool| {
            let got = refuse_network_fields(&body);
            match (refused, got) {
                (false, Ok(())) => {}
                (true, Err(e)) => assert!(e.to_string().contains(key), "{key}: {e}"),
                (r, g) => panic!("{key}: refused {r}, got {g:?}"),
            }
        };
        for key in model_keys::<NetworkCreateRequest>() {
            let (sample, refused) = match key {
                "Name" | "Driver" | "Id" | "Warning" => (json!("x"), false),
                "Internal" | "EnableIPv6" => (json!(true), false),
                "Options" | "Labels" => (json!({"a": "b"}), false),
                "IPAM" => (json!({"Config": [{"Subnet": "10.9.0.0/24"}]}), false),
                "Scope" => (json!("swarm"), true),
                "EnableIPv4" => (json!(false), true),
                "Attachable" => (json!(true), false),
                "Ingress" | "ConfigOnly" => (json!(true), true),
                "ConfigFrom" => (json!({"Network": "n"}), true),
                _ => panic!("NetworkCreateRequest.{key}: new field; classify it"),
            };
            check(json!({"Name": "n", key: sample}), key, refused);
        }
        for key in model_keys::<Ipam>() {
            let (sample, refused) = match key {
                "Driver" => (json!("other"), true),
                "Config" => (json!([{"Subnet": "10.9.0.0/24"}]), false),
                "Options" => (json!({"a": "b"}), true),
                _ => panic!("Ipam.{key}: new field; classify it"),
            };
            check(json!({"Name": "n", "IPAM": {key: sample}}), key, refused);
        }
        for key in model_keys::<IpamConfig>() {
            let (sample, refused) = match key {
                "Subnet" | "Gateway" => (json!("10.9.0.1"), false),
                "IPRange" => (json!("10.9.0.128/25"), true),
                "AuxiliaryAddresses" => (json!({"a": "10.9.0.5"}), true),
                _ => panic!("IpamConfig.{key}: new field; classify it"),
            };
            check(
                json!({"Name": "n", "IPAM": {"Config": [{key: sample}]}}),
                key,
                refused,
            );
        }
        // What the CLI and compose send by default.
        check(
            json!({"Name": "n", "CheckDuplicate": true, "Driver": "bridge", "Scope": "local",
                   "Attachable": false, "Ingress": false, "ConfigOnly": false, "ConfigFrom": null,
                   "EnableIPv4": true, "IPAM": {"Driver": "default", "Options": {}, "Config": []}}),
            "",
            false,
        );
    }

    #[test]
    fn mount_options_berth_does_not_apply_are_refused_by_name() {
        let with = |extra: Value| {
            let mut m = json!({"Type": "bind", "Source": "/srv", "Target": "/srv"});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse_create(body(json!({"Image": "img", "HostConfig": {"Mounts": [m]}})))
        };
        let err = with(json!({"BindOptions": {"Propagation": "rshared"}})).unwrap_err();
        assert!(
            err.to_string().contains("HostConfig.Mounts.BindOptions"),
            "{err}"
        );
        let err = with(json!({"VolumeOptions": {"NoCopy": true}})).unwrap_err();
        assert!(
            err.to_string().contains("HostConfig.Mounts.VolumeOptions"),
            "{err}"
        );
        // Empty option objects, as clients send them, and the honoured keys pass.
        with(json!({"BindOptions": {}, "ReadOnly": true, "Consistency": "cached"})).unwrap();
    }

    #[test]
    fn zero_values_as_the_cli_sends_them_are_not_refused() {
        // The HostConfig of `docker run` with no options (docker-run-transcript.txt).
        let b: Value = serde_json::from_str(
            r#"{"Image": "img", "Hostname":"","Domainname":"","User":"","Env":null,"Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}"#,
        )
        .unwrap();
        parse_create(serde_json::from_value(b).unwrap()).unwrap();
    }

    #[test]
    fn cmd_and_entrypoint_may_be_strings() {
        let b = create_body_from_json(json!({"Image": "i", "Cmd": "echo hi", "Entrypoint": "/e"}))
            .unwrap();
        assert_eq!(b.cmd, Some(vec!["echo hi".to_string()]));
        assert_eq!(b.entrypoint, Some(vec!["/e".to_string()]));
        assert!(create_body_from_json(json!({"Image": "i", "Cmd": 5})).is_err());
    }

    #[test]
    fn extra_hosts_tmpfs_and_sysctls_parse() {
        assert_eq!(
            parse_extra_host("foo:1.2.3.4").unwrap(),
            ExtraHost {
                name: "foo".into(),
                target: HostTarget::Ip("1.2.3.4".parse().unwrap())
            }
        );
        assert_eq!(
            parse_extra_host("six:::1").unwrap().target,
            HostTarget::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            parse_extra_host("gw:host-gateway").unwrap().target,
            HostTarget::HostGateway
        );
        assert!(parse_extra_host("nocolon").is_err());
        assert!(parse_extra_host("a:notanip").is_err());
        let s = parse_create(body(json!({"Image": "i", "HostConfig": {
            "Tmpfs": {"/tmp": "size=1m,mode=1777"},
            "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 2097152, "Mode": 448}}],
        }})))
        .unwrap();
        assert_eq!(
            s.run.tmpfs,
            vec![
                TmpfsMount {
                    destination: "/tmp".into(),
                    options: vec!["size=1m".into(), "mode=1777".into()]
                },
                TmpfsMount {
                    destination: "/t".into(),
                    options: vec!["size=2097152".into(), "mode=700".into()]
                },
            ]
        );
        let bad =
            |hc: Value| parse_create(body(json!({"Image": "i", "HostConfig": hc}))).unwrap_err();
        bad(json!({"Sysctls": {"kernel.hostname": "x"}}));
        bad(json!({"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}}));
        bad(json!({"IpcMode": "host", "Sysctls": {"kernel.shmmax": "1"}}));
        bad(json!({"Tmpfs": {"relative": ""}}));
        bad(json!({"Mounts": [{"Type": "tmpfs", "Target": "/t", "Source": "/x"}]}));
        bad(json!({"PidMode": "container:x"}));
        bad(json!({"OomScoreAdj": 1001}));
        bad(json!({"CpuPeriod": 50000}));
        bad(json!({"SecurityOpt": ["seccomp=/some/profile.json"]}));
        bad(json!({"SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_NOPE\"}"]}));
        bad(json!({"SecurityOpt": ["writable-cgroups=true"]}));
        bad(json!({"SecurityOpt": ["label=bogus"]}));
        bad(json!({"SecurityOpt": ["nonsense"]}));
    }

    fn body(json: serde_json::Value) -> ContainerCreateBody {
        serde_json::from_value(json).unwrap()
    }

    /// Regression (fuzz/api_create): a CpuQuota whose nanoseconds overflow i64 is the CPU
    /// range error, not an overflow panic (or, in release builds, a wrapped limit).
    #[test]
    fn huge_cpu_quota_is_refused_not_overflowed() {
        for hc in [
            serde_json::json!({"CpuQuota": 10_000_000_000i64}),
            serde_json::json!({"CpuQuota": i64::MAX, "CpuPeriod": 1000}),
        ] {
            let err = parse_create(body(
                serde_json::json!({"Image": "busybox", "HostConfig": hc}),
            ))
            .unwrap_err();
            assert!(err.to_string().contains("range of CPUs"), "{err}");
        }
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
