//! The OCI runtime spec of a container, computed from the image config and the run options.
//!
//! Pure: no file or process access. The caller reads the image's /etc/passwd and /etc/group
//! and the host's rlimit hard limits and passes them in ([`SpecInputs`]). Owns Docker's
//! defaults: capability set, masked and read-only /proc paths, the default mounts, the
//! seccomp filter (Docker's default profile, a custom one, or none: [`seccomp_for`], data and
//! rules in [`crate::seccomp`]) and `--privileged` (all of the daemon's capabilities, the
//! host's devices, writable /sys, no masked paths, no seccomp, AppArmor unconfined).
//!
//! ```text
//!  ImageConfig + RunOptions + HostFacts --build_spec()--> oci_spec::runtime::Spec (config.json)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Result, RuntimeError};

/// Docker's default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's masked paths.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an OCI image config that shape the process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (-1: unlimited swap).
    pub memory_swap: Option<i64>,
    /// CPUs in units of 1e-9 (Docker's NanoCPUs): quota = nano * period / 1e9.
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    /// CPUs the container may run on, cpuset syntax (`0-2,4`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use, cpuset syntax.
    #[serde(default)]
    pub cpuset_mems: Option<String>,
    /// Soft memory limit in bytes.
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    /// Swappiness, 0 to 100.
    #[serde(default)]
    pub memory_swappiness: Option<u64>,
    /// Do not kill the container's processes when it runs out of memory.
    #[serde(default)]
    pub oom_kill_disable: bool,
}

/// A tmpfs mounted into the container (`--tmpfs`, `--mount type=tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    pub destination: String,
    /// mount(8) options (`size=64m`, `mode=1777`, `noexec`...), after Docker's defaults
    /// `nosuid,nodev,noexec`, so the caller's win.
    pub options: Vec<String>,
}

/// A host device node made in the container (`--device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// `c` (character) or `b` (block).
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the node (as on the host).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device cgroup access, a subset of `rwm`.
    pub access: String,
}

/// The init process run as PID 1 in front of the command (`--init`).
pub const INIT_PATH_IN_CONTAINER: &str = "/sbin/docker-init";

/// One rlimit request, e.g. `RLIMIT_NOFILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_*` name.
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// A new, empty network namespace (only `lo`).
    #[default]
    Isolated,
    /// The host's network namespace.
    Host,
    /// An existing namespace (e.g. one prepared by overlay-net), by path.
    Join(PathBuf),
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What `docker run` options say about the container (everything optional overrides the
/// image).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=value`; overrides the image's value of the same key.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    /// Keep stdin open (`-i`).
    pub open_stdin: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub read_only_rootfs: bool,
    pub resources: Resources,
    pub rlimits: Vec<Rlimit>,
    pub network: NetworkMode,
    pub mounts: Vec<BindMount>,
    /// Signal for stop (default: image StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
    /// Seconds before SIGKILL on stop (default 10).
    pub stop_timeout: Option<u64>,
    /// tmpfs mounts, in order.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsMount>,
    /// `--init`: the host path of the init binary (tini) bind-mounted read-only at
    /// [`INIT_PATH_IN_CONTAINER`] and run as PID 1 with the command as its child.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// Namespaced kernel parameters (`--sysctl`), written at container start.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Size of `/dev/shm` in bytes (default 64 MiB).
    #[serde(default)]
    pub shm_size: Option<i64>,
    /// `--group-add`: extra groups of the process, by name (from the image's /etc/group) or
    /// number.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// `--oom-score-adj`, -1000 to 1000.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// `--pid host`: the host's PID namespace.
    #[serde(default)]
    pub pid_host: bool,
    /// `--ipc host`: the host's IPC namespace and /dev/shm.
    #[serde(default)]
    pub ipc_host: bool,
    /// Replaces Docker's masked paths when set (`--security-opt systempaths=unconfined`
    /// sends an empty list).
    #[serde(default)]
    pub masked_paths: Option<Vec<String>>,
    /// Replaces Docker's read-only paths when set.
    #[serde(default)]
    pub readonly_paths: Option<Vec<String>>,
    /// `--security-opt seccomp=unconfined`: no seccomp filter.
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// `--security-opt seccomp=<profile JSON>` (the docker CLI sends the file's content): a
    /// profile in Docker's format, checked by [`crate::seccomp::Profile::parse`], used
    /// instead of Docker's default one. Applied with `--privileged` too, as dockerd does.
    #[serde(default)]
    pub seccomp_profile: Option<String>,
    /// `--privileged` (Docker's `HostConfig.Privileged`): every capability the daemon holds
    /// (cap add/drop ignored), every host device node with an allow-all device cgroup,
    /// /sys and the cgroup mount writable, no masked or read-only paths, no seccomp filter
    /// unless a custom profile is given, AppArmor unconfined.
    #[serde(default)]
    pub privileged: bool,
    /// `--security-opt apparmor=NAME`: the AppArmor profile the process runs under (the
    /// caller checks that the host has AppArmor).
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// OCI annotations of the container.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `--device`: host device nodes made in the container and allowed in its cgroup.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
    /// `HostConfig.LogConfig`, validated (absent in records older than log drivers:
    /// json-file without options).
    #[serde(default)]
    pub log: crate::log_config::LogConfig,
}

/// Facts about the host and the image's files, read by the caller.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Current hard limit per `RLIMIT_*` name; requests are clamped to it.
    pub rlimit_hard: BTreeMap<String, u64>,
    /// Contents of the image's /etc/passwd and /etc/group (empty when absent).
    pub passwd: String,
    pub group: String,
    /// The running kernel's version, for the seccomp rules' `minKernel` (`None`: unknown).
    pub kernel: Option<crate::seccomp::KernelVersion>,
    /// Every capability the daemon may hand on (its bounding set, `CAP_*` names): what a
    /// `--privileged` container gets.
    pub all_caps: Vec<String>,
    /// The host's device nodes under /dev (read only for a `--privileged` container).
    pub devices: Vec<DeviceNode>,
}

/// Everything [`build_spec`] needs.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    pub id: &'a str,
    pub rootfs: PathBuf,
    pub image: &'a ImageConfig,
    pub options: &'a RunOptions,
    pub host: &'a HostFacts,
    /// Files the runtime wrote for this container (hostname, hosts), bind-mounted read-only.
    pub etc_files: Vec<(PathBuf, String)>,
}

/// Resolved user of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

/// The cgroups path of a container: always under the `berth` parent.
pub fn cgroups_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// Resolves Docker's `user[:group]` against passwd and group file contents.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<(UserIds, Vec<u32>)> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd_entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let group_entries: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let user = if user.is_empty() { "0" } else { user };
    let found = passwd_entries
        .iter()
        .find(|f| f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user));
    let (uid, mut gid, name) = match (found, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0]),
        ),
        (None, Ok(n)) => (n, 0, None),
        (None, Err(_)) => {
            return Err(RuntimeError::UnknownUser {
                user: user.to_string(),
            })
        }
    };
    if let Some(g) = grp {
        gid = match group_entries.iter().find(|f| f[0] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| RuntimeError::UnknownGroup {
                group: g.to_string(),
            })?,
        };
    }
    let mut extra: Vec<u32> = match name {
        Some(n) => group_entries
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    extra.sort_unstable();
    extra.dedup();
    Ok((UserIds { uid, gid }, extra))
}

/// Resolves a `--group-add` entry: a group name of the image's /etc/group, or a number.
pub fn resolve_group(name: &str, group: &str) -> Result<u32> {
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .or_else(|| name.parse().ok())
        .ok_or_else(|| RuntimeError::UnknownGroup {
            group: name.to_string(),
        })
}

/// Docker's rule: `--entrypoint` resets the image Cmd unless a command is given too.
pub fn process_args(image: &ImageConfig, options: &RunOptions) -> Result<Vec<String>> {
    let entry = options
        .entrypoint
        .clone()
        .or_else(|| image.entrypoint.clone())
        .unwrap_or_default();
    let cmd = match (&options.cmd, &options.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    Ok(args)
}

/// Image env overridden key by key by the run env; PATH defaulted, HOSTNAME and (with a tty)
/// TERM added as Docker does. A run entry without `=` (`-e FOO` with FOO unset in the
/// client's environment) removes the key, as dockerd does: the process does not get it.
pub fn merge_env(image: &ImageConfig, options: &RunOptions, hostname: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut vals: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |kv: &str| {
        let (k, _) = kv.split_once('=').unwrap_or((kv, ""));
        if !vals.contains_key(k) {
            keys.push(k.to_string());
        }
        vals.insert(k.to_string(), kv.to_string());
    };
    if !image
        .env
        .iter()
        .flatten()
        .chain(options.env.iter())
        .any(|e| e.starts_with("PATH="))
    {
        put(&format!("PATH={DEFAULT_PATH}"));
    }
    put(&format!("HOSTNAME={hostname}"));
    if options.tty {
        put("TERM=xterm");
    }
    for e in image.env.iter().flatten() {
        put(e);
    }
    for e in &options.env {
        put(e);
    }
    keys.into_iter()
        .filter_map(|k| vals.remove(&k))
        .filter(|kv| kv.contains('='))
        .collect()
}

/// The capability set: Docker's default, plus `cap_add`, minus `cap_drop`. `ALL` in
/// `cap_drop` starts from nothing; `ALL` in `cap_add` starts from `all` (every capability
/// the daemon holds), as dockerd's `TweakCapabilities` does.
pub fn capabilities(options: &RunOptions, all: &[String]) -> Vec<String> {
    let norm = |c: &String| {
        let c = c.to_ascii_uppercase();
        if c.starts_with("CAP_") || c == "ALL" {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let drop: Vec<String> = options.cap_drop.iter().map(norm).collect();
    let add: Vec<String> = options.cap_add.iter().map(norm).collect();
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all.iter().filter(|c| !drop.contains(c)).cloned().collect()
    } else if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for c in add {
        if c == "ALL" {
            continue;
        }
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    caps
}

/// Clamps rlimits to the host's current hard limits (no CAP_SYS_RESOURCE: a raise would fail).
/// Adds Docker's default `RLIMIT_NOFILE` (1048576) when none was requested.
pub fn clamp_rlimits(requested: &[Rlimit], host_hard: &BTreeMap<String, u64>) -> Vec<Rlimit> {
    let mut list = requested.to_vec();
    if !list.iter().any(|r| r.name == "RLIMIT_NOFILE") {
        list.push(Rlimit {
            name: "RLIMIT_NOFILE".into(),
            soft: 1_048_576,
            hard: 1_048_576,
        });
    }
    list.into_iter()
        .map(|r| {
            let cap = host_hard.get(&r.name).copied().unwrap_or(u64::MAX);
            let hard = r.hard.min(cap);
            Rlimit {
                soft: r.soft.min(hard),
                hard,
                name: r.name,
            }
        })
        .collect()
}

/// The `linux.seccomp` object of the spec, or `None` for no filter: none with
/// `seccomp=unconfined`, none with `--privileged` unless a custom profile is given (as dockerd
/// does), the custom profile when given, else Docker's default profile; rules are kept or
/// dropped for the container's bounding set `caps` on this host (see [`crate::seccomp`]).
///
/// Errors: a custom profile that does not parse ([`RuntimeError::Invalid`]).
pub fn seccomp_for(opts: &RunOptions, caps: &[String], host: &HostFacts) -> Result<Option<Value>> {
    use crate::seccomp::{Host, Profile};
    if opts.seccomp_unconfined {
        return Ok(None);
    }
    let profile = match &opts.seccomp_profile {
        Some(text) => Profile::parse(text).map_err(|e| RuntimeError::Invalid {
            message: format!("seccomp profile: {e}"),
        })?,
        None if opts.privileged => return Ok(None),
        None => Profile::docker_default(),
    };
    Ok(profile
        .to_oci(caps, &Host::native(host.kernel))
        .map(crate::seccomp::for_libcontainer))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": typ, "source": source, "options": options})
}

/// Builds the OCI runtime spec.
pub fn build_spec(input: &SpecInputs<'_>) -> Result<Spec> {
    let opts = input.options;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| input.id.chars().take(12).collect());
    let mut args = process_args(input.image, opts)?;
    if opts.init.is_some() {
        args.splice(0..0, [INIT_PATH_IN_CONTAINER.to_string(), "--".to_string()]);
    }
    let env = merge_env(input.image, opts, &hostname);
    let user_spec = opts
        .user
        .clone()
        .or_else(|| input.image.user.clone())
        .unwrap_or_default();
    let (ids, mut extra_gids) = resolve_user(&user_spec, &input.host.passwd, &input.host.group)?;
    for g in &opts.group_add {
        let gid = resolve_group(g, &input.host.group)?;
        if !extra_gids.contains(&gid) {
            extra_gids.push(gid);
        }
    }
    let cwd = opts
        .working_dir
        .clone()
        .or_else(|| input.image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let caps = if opts.privileged {
        input.host.all_caps.clone()
    } else {
        capabilities(opts, &input.host.all_caps)
    };
    let rlimits: Vec<Value> = clamp_rlimits(&opts.rlimits, &input.host.rlimit_hard)
        .into_iter()
        .map(|r| json!({"type": r.name, "soft": r.soft, "hard": r.hard}))
        .collect();

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        // `--privileged`: /sys and the cgroup mount writable (dockerd's WithMounts).
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                if opts.privileged { "rw" } else { "ro" },
            ],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "relatime",
                if opts.privileged { "rw" } else { "ro" },
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
    ];
    if opts.ipc_host {
        mounts.push(json!({
            "destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
            "options": ["rbind", "rprivate"]
        }));
    } else {
        let size = format!("size={}", opts.shm_size.unwrap_or(67_108_864));
        mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &size],
        ));
    }
    for (src, dest) in &input.etc_files {
        mounts.push(json!({
            "destination": dest, "type": "bind", "source": src,
            "options": ["rbind", "rprivate", "ro"]
        }));
    }
    for m in &opts.mounts {
        let mut o = vec!["rbind", "rprivate"];
        if m.read_only {
            o.push("ro");
        }
        mounts.push(json!({
            "destination": m.destination, "type": "bind", "source": m.source, "options": o
        }));
    }

    for t in &opts.tmpfs {
        let mut o: Vec<&str> = vec!["nosuid", "nodev", "noexec"];
        o.extend(t.options.iter().map(String::as_str));
        mounts.push(mount(&t.destination, "tmpfs", "tmpfs", &o));
    }
    if let Some(init) = &opts.init {
        mounts.push(json!({
            "destination": INIT_PATH_IN_CONTAINER, "type": "bind", "source": init,
            "options": ["bind", "rprivate", "ro"]
        }));
    }

    let mut namespaces = vec![json!({"type": "uts"}), json!({"type": "mount"})];
    if !opts.pid_host {
        namespaces.push(json!({"type": "pid"}));
    }
    if !opts.ipc_host {
        namespaces.push(json!({"type": "ipc"}));
    }
    match &opts.network {
        NetworkMode::Isolated => namespaces.push(json!({"type": "network"})),
        NetworkMode::Host => {}
        NetworkMode::Join(p) => namespaces.push(json!({"type": "network", "path": p})),
    }

    let r = &opts.resources;
    let mut device_rules = vec![json!({"allow": false, "access": "rwm"})];
    let mut devices = Vec::new();
    // `--privileged`: every host device node, and an allow-all device cgroup (dockerd's
    // WithDevices); `--device` entries at a path of their own come on top.
    let host_devices = if opts.privileged {
        input.host.devices.as_slice()
    } else {
        &[]
    };
    for d in host_devices {
        devices.push(json!({
            "path": d.path, "type": d.kind.to_string(), "major": d.major, "minor": d.minor,
            "fileMode": d.file_mode, "uid": d.uid, "gid": d.gid,
        }));
    }
    if opts.privileged {
        device_rules = vec![json!({"allow": true, "access": "rwm"})];
    }
    for d in &opts.devices {
        if opts.privileged && host_devices.iter().any(|h| h.path == d.path) {
            continue;
        }
        let kind = d.kind.to_string();
        devices.push(json!({
            "path": d.path, "type": kind, "major": d.major, "minor": d.minor,
            "fileMode": d.file_mode, "uid": d.uid, "gid": d.gid,
        }));
        if !opts.privileged {
            device_rules.push(json!({
                "allow": true, "type": kind, "major": d.major, "minor": d.minor, "access": d.access,
            }));
        }
    }
    let mut resources = limits_json(r);
    resources["devices"] = json!(device_rules);

    let (masked_paths, readonly_paths) = if opts.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            opts.masked_paths
                .clone()
                .unwrap_or_else(|| MASKED_PATHS.map(String::from).to_vec()),
            opts.readonly_paths
                .clone()
                .unwrap_or_else(|| READONLY_PATHS.map(String::from).to_vec()),
        )
    };
    let seccomp = seccomp_for(opts, &caps, input.host)?;

    let spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": input.rootfs, "readonly": opts.read_only_rootfs},
        "hostname": hostname,
        "process": {
            "terminal": opts.tty,
            "user": {"uid": ids.uid, "gid": ids.gid, "additionalGids": extra_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": rlimits,
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path(input.id),
            "resources": resources,
            "maskedPaths": masked_paths,
            "readonlyPaths": readonly_paths,
            "sysctl": opts.sysctls,
            "devices": devices,
        },
        "annotations": opts.annotations,
    });
    // Only ever `true` or absent: libcontainer 0.7 loads seccomp before dropping capabilities
    // only when the field is absent, and an explicit `false` makes the load fail.
    let mut spec = spec;
    if let Some(seccomp) = seccomp {
        spec["linux"]["seccomp"] = seccomp;
    }
    // `--privileged` runs unconfined (nothing to write); a named profile only where the
    // caller checked the host has AppArmor.
    if let Some(profile) = &opts.apparmor_profile {
        if profile != "unconfined" {
            spec["process"]["apparmorProfile"] = json!(profile);
        }
    }
    if let Some(adj) = opts.oom_score_adj {
        spec["process"]["oomScoreAdj"] = json!(adj);
    }
    if opts.no_new_privileges {
        spec["process"]["noNewPrivileges"] = json!(true);
    }
    serde_json::from_value(spec).map_err(|source| RuntimeError::Json {
        what: "OCI runtime spec",
        source,
    })
}

/// Stop signal number from a name such as `SIGTERM`, `TERM` or `15`.
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The memory, cpu and pids parts of an OCI `linux.resources` object for `r` (no
/// `devices`): what create writes into `config.json` and `docker update` rewrites.
pub fn limits_json(r: &Resources) -> serde_json::Value {
    let mut resources = json!({});
    if r.memory.is_some()
        || r.memory_swap.is_some()
        || r.memory_reservation.is_some()
        || r.memory_swappiness.is_some()
        || r.oom_kill_disable
    {
        let mut m = json!({});
        if let Some(v) = r.memory_reservation {
            m["reservation"] = json!(v);
        }
        if let Some(v) = r.memory_swappiness {
            m["swappiness"] = json!(v);
        }
        if r.oom_kill_disable {
            m["disableOOMKiller"] = json!(true);
        }
        if let Some(v) = r.memory {
            m["limit"] = json!(v);
        }
        if let Some(v) = r.memory_swap {
            m["swap"] = json!(v);
        }
        resources["memory"] = m;
    }
    if r.nano_cpus.is_some()
        || r.cpu_shares.is_some()
        || r.cpuset_cpus.is_some()
        || r.cpuset_mems.is_some()
    {
        let mut c = json!({});
        if let Some(v) = &r.cpuset_cpus {
            c["cpus"] = json!(v);
        }
        if let Some(v) = &r.cpuset_mems {
            c["mems"] = json!(v);
        }
        if let Some(n) = r.nano_cpus {
            let period: u64 = 100_000;
            c["period"] = json!(period);
            c["quota"] = json!(n.saturating_mul(period as i64) / 1_000_000_000);
        }
        if let Some(s) = r.cpu_shares {
            c["shares"] = json!(s);
        }
        resources["cpu"] = c;
    }
    if let Some(p) = r.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwww:x:33:\nalice:x:1000:\nwheel:x:10:alice\naudio:x:29:alice,www\n";

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            working_dir: Some("/srv".into()),
            user: None,
            stop_signal: None,
        }
    }

    fn inputs<'a>(
        img: &'a ImageConfig,
        opts: &'a RunOptions,
        host: &'a HostFacts,
    ) -> SpecInputs<'a> {
        SpecInputs {
            id: "abcdef0123456789",
            rootfs: PathBuf::from("/r"),
            image: img,
            options: opts,
            host,
            etc_files: vec![],
        }
    }

    #[test]
    fn user_resolution() {
        let (ids, extra) = resolve_user("alice", PASSWD, GROUP).unwrap();
        assert_eq!(
            ids,
            UserIds {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(extra, vec![10, 29]);
        let (ids, _) = resolve_user("www:alice", PASSWD, GROUP).unwrap();
        assert_eq!(ids, UserIds { uid: 33, gid: 1000 });
        let (ids, extra) = resolve_user("4242:7", PASSWD, GROUP).unwrap();
        assert_eq!(ids, UserIds { uid: 4242, gid: 7 });
        assert!(extra.is_empty());
        let (ids, _) = resolve_user("", PASSWD, GROUP).unwrap();
        assert_eq!(ids, UserIds::default());
        assert!(matches!(
            resolve_user("nobody", PASSWD, GROUP),
            Err(RuntimeError::UnknownUser { .. })
        ));
        assert!(matches!(
            resolve_user("alice:nogroup", PASSWD, GROUP),
            Err(RuntimeError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn entrypoint_and_cmd_rules() {
        let mut img = image();
        img.entrypoint = Some(vec!["/init".into()]);
        let mut o = RunOptions::default();
        assert_eq!(process_args(&img, &o).unwrap(), ["/init", "sh"]);
        o.cmd = Some(vec!["x".into()]);
        assert_eq!(process_args(&img, &o).unwrap(), ["/init", "x"]);
        o.cmd = None;
        o.entrypoint = Some(vec!["/other".into()]);
        assert_eq!(process_args(&img, &o).unwrap(), ["/other"]);
        let empty = ImageConfig::default();
        assert!(matches!(
            process_args(&empty, &RunOptions::default()),
            Err(RuntimeError::NoCommand)
        ));
    }

    #[test]
    fn env_overrides_keep_order() {
        let o = RunOptions {
            env: vec!["A=2".into(), "B=3".into()],
            tty: true,
            ..Default::default()
        };
        let env = merge_env(&image(), &o, "h");
        assert_eq!(env, ["HOSTNAME=h", "TERM=xterm", "PATH=/bin", "A=2", "B=3"]);
        let env = merge_env(&ImageConfig::default(), &RunOptions::default(), "h");
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn caps_add_and_drop() {
        let o = RunOptions {
            cap_add: vec!["sys_admin".into()],
            cap_drop: vec!["NET_RAW".into()],
            ..Default::default()
        };
        let caps = capabilities(&o, &[]);
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        assert_eq!(caps.len(), 14);
        let none = capabilities(
            &RunOptions {
                cap_drop: vec!["ALL".into()],
                ..Default::default()
            },
            &[],
        );
        assert!(none.is_empty());
        let all = ["CAP_CHOWN".to_string(), "CAP_BPF".to_string()];
        let o = RunOptions {
            cap_add: vec!["ALL".into()],
            cap_drop: vec!["chown".into()],
            ..Default::default()
        };
        assert_eq!(capabilities(&o, &all), ["CAP_BPF"]);
    }

    #[test]
    fn rlimits_never_exceed_host_hard_limit() {
        let host: BTreeMap<String, u64> = [("RLIMIT_NOFILE".to_string(), 20_000)].into();
        let out = clamp_rlimits(&[], &host);
        assert_eq!(
            out,
            [Rlimit {
                name: "RLIMIT_NOFILE".into(),
                soft: 20_000,
                hard: 20_000
            }]
        );
        let out = clamp_rlimits(
            &[Rlimit {
                name: "RLIMIT_NOFILE".into(),
                soft: 100,
                hard: 50_000,
            }],
            &host,
        );
        assert_eq!((out[0].soft, out[0].hard), (100, 20_000));
    }

    #[test]
    fn seccomp_default_custom_unconfined_and_privileged() {
        let img = image();
        let host = HostFacts {
            kernel: Some(crate::seccomp::KernelVersion(6, 1)),
            all_caps: vec!["CAP_CHOWN".into(), "CAP_SYS_ADMIN".into()],
            devices: vec![DeviceNode {
                path: "/dev/null".into(),
                kind: 'c',
                major: 1,
                minor: 3,
                file_mode: 0o666,
                uid: 0,
                gid: 0,
                access: "rwm".into(),
            }],
            ..Default::default()
        };
        let spec = |o: &RunOptions| {
            serde_json::to_value(build_spec(&inputs(&img, o, &host)).unwrap()).unwrap()
        };
        let names = |v: &Value| -> Vec<String> {
            v["linux"]["seccomp"]["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["names"].as_array().unwrap().clone())
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        };
        // Default: Docker's allow-list, mount only with CAP_SYS_ADMIN.
        let v = spec(&RunOptions::default());
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["linux"]["seccomp"]["defaultErrnoRet"], 1);
        assert!(!names(&v).contains(&"mount".to_string()));
        assert!(names(&v).contains(&"chroot".to_string()));
        let v = spec(&RunOptions {
            cap_add: vec!["SYS_ADMIN".into()],
            ..Default::default()
        });
        assert!(names(&v).contains(&"mount".to_string()));
        // Custom profile.
        let custom = RunOptions {
            seccomp_profile: Some(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#
                    .into(),
            ),
            ..Default::default()
        };
        let v = spec(&custom);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(names(&v), ["mkdir"]);
        let bad = RunOptions {
            seccomp_profile: Some("{\"defaultAction\":1}".into()),
            ..Default::default()
        };
        assert!(matches!(
            build_spec(&inputs(&img, &bad, &host)),
            Err(RuntimeError::Invalid { .. })
        ));
        // Privileged: no seccomp (unless custom), all caps, host devices, rw /sys, no masks.
        let p = RunOptions {
            privileged: true,
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        let v = spec(&p);
        assert!(v["linux"]["seccomp"].is_null());
        let mut bounding: Vec<String> =
            serde_json::from_value(v["process"]["capabilities"]["bounding"].clone()).unwrap();
        bounding.sort();
        assert_eq!(bounding, ["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        assert_eq!(v["linux"]["devices"][0]["path"], "/dev/null");
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(v["linux"]["readonlyPaths"], json!([]));
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(!sys["options"].as_array().unwrap().contains(&json!("ro")));
        let v = spec(&RunOptions {
            privileged: true,
            ..custom.clone()
        });
        assert_eq!(names(&v), ["mkdir"]);
    }

    #[test]
    fn full_spec_has_docker_defaults() {
        let img = image();
        let host = HostFacts {
            passwd: PASSWD.into(),
            group: GROUP.into(),
            ..Default::default()
        };
        let opts = RunOptions {
            user: Some("alice".into()),
            resources: Resources {
                memory: Some(32 << 20),
                nano_cpus: Some(500_000_000),
                pids_limit: Some(32),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = build_spec(&inputs(&img, &opts, &host)).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["hostname"], "abcdef012345");
        assert_eq!(v["process"]["args"], json!(["sh"]));
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/abcdef0123456789");
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 32);
        assert_eq!(
            v["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert!(v["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        assert!(v["linux"]["readonlyPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/sys")));
        let ns: Vec<_> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect();
        assert!(ns.contains(&"network".to_string()));
        let dests: Vec<_> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(dests.contains(&d.to_string()), "missing {d}");
        }
    }

    #[test]
    fn host_network_has_no_netns() {
        let img = image();
        let host = HostFacts::default();
        let opts = RunOptions {
            network: NetworkMode::Host,
            ..Default::default()
        };
        let v = serde_json::to_value(build_spec(&inputs(&img, &opts, &host)).unwrap()).unwrap();
        assert!(!v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn run_options_reach_the_spec() {
        let img = image();
        let host = HostFacts {
            passwd: PASSWD.into(),
            group: GROUP.into(),
            ..Default::default()
        };
        let opts = RunOptions {
            tmpfs: vec![TmpfsMount {
                destination: "/tmp".into(),
                options: vec!["size=1m".into()],
            }],
            init: Some(PathBuf::from("/usr/bin/tini-static")),
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            shm_size: Some(1 << 27),
            group_add: vec!["audio".into(), "4242".into()],
            oom_score_adj: Some(100),
            pid_host: true,
            seccomp_unconfined: true,
            resources: Resources {
                cpuset_cpus: Some("0".into()),
                memory_reservation: Some(1 << 24),
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(build_spec(&inputs(&img, &opts, &host)).unwrap()).unwrap();
        assert_eq!(
            v["process"]["args"],
            json!([INIT_PATH_IN_CONTAINER, "--", "sh"])
        );
        let mounts = v["mounts"].as_array().unwrap();
        let at = |d: &str| {
            mounts
                .iter()
                .find(|m| m["destination"] == d)
                .unwrap()
                .clone()
        };
        assert_eq!(
            at("/tmp")["options"],
            json!(["nosuid", "nodev", "noexec", "size=1m"])
        );
        assert_eq!(at(INIT_PATH_IN_CONTAINER)["source"], "/usr/bin/tini-static");
        assert!(at("/dev/shm")["options"]
            .as_array()
            .unwrap()
            .contains(&json!("size=134217728")));
        assert_eq!(v["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert_eq!(v["process"]["user"]["additionalGids"], json!([29, 4242]));
        assert_eq!(v["process"]["oomScoreAdj"], 100);
        assert!(v["linux"]["seccomp"].is_null());
        assert_eq!(v["linux"]["resources"]["cpu"]["cpus"], "0");
        assert_eq!(v["linux"]["resources"]["memory"]["reservation"], 1 << 24);
        assert!(!v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "pid"));
        let bad = RunOptions {
            group_add: vec!["nosuchgroup".into()],
            ..Default::default()
        };
        assert!(matches!(
            build_spec(&inputs(&img, &bad, &host)),
            Err(RuntimeError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn a_bare_env_key_removes_the_variable() {
        let o = RunOptions {
            env: vec!["A".into(), "FOO".into(), "B=2".into()],
            ..Default::default()
        };
        let env = merge_env(&image(), &o, "h");
        assert_eq!(env, ["HOSTNAME=h", "PATH=/bin", "B=2"]);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("kill"), Some(9));
        assert_eq!(signal_number("2"), Some(2));
        assert_eq!(signal_number("SIGBOGUS"), None);
    }
}
