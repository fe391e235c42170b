//! The `Runtime`: the API berthd calls for one host's containers.
//!
//! Owns the on-disk layout of containers and their shims, and sequences the other modules:
//! snapshots and the spec at create, a shim per start and per exec, the lifecycle checks
//! before every action, and teardown at delete. Does not pull images or set up networks.
//!
//! Every method is **blocking** (file I/O, unix sockets, waiting for processes) and takes
//! `&self`: an async daemon shares one `Arc<Runtime>` and calls methods inside
//! `tokio::task::spawn_blocking`. `create`, `start`, `pause`, `kill`, `inspect`, `list`,
//! `stats` and `top` return quickly (milliseconds); `stop`, `wait`, `exec_wait`, `restart`
//! and following [`LogStream`]s block for as long as the process runs. Nothing here forks
//! except spawning `berth-shim` (fork+exec through `std::process::Command`, safe from a
//! multi-threaded process); libcontainer's own forks happen inside the shim.
//!
//! ```text
//!  <data_root>/snapshots/...                  SnapshotStore
//!  <data_root>/trash/                         rootfs mountpoints being removed
//!  <data_root>/containers/<id>/container.json ContainerRecord (versioned)
//!                             /bundle/config.json, rootfs/ (overlay mount), hostname, hosts
//!                             /container.log[.N[.gz]] (json-file), exit.json, shim.json
//!                             /local-logs/container.log[.N[.gz]] (local driver)
//!                             /execs/<exec-id>/process.json, shim.json, exit.json
//!  <exec_root>/<id>/shim.sock, shim.pid, <exec-id>.sock, <exec-id>.pid
//!  <exec_root>/lc/<id>/                       libcontainer state
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::background::Background;
use crate::cgroups;
use crate::error::{Result, RuntimeError};
use crate::lifecycle::{self, Action, Status};
use crate::log_config::LogDriver;
use crate::logs::{self, LogRecord};
use crate::oci;
use crate::protocol::{
    self, ExitRecord, Ready, Request, Response, ShimConfig, ShimTask, StandbyOrder,
};
use crate::rotate::LogReader;
use crate::snapshot::{MountPlan, Mounter, SnapshotStore, SysMounter};
use crate::spare::{Launched, Spares};
use crate::spec::{self, DeviceNode, HostFacts, ImageConfig, RunOptions, SpecInputs};

pub use crate::logs::LogOptions;
pub use crate::protocol::{ExitCause, ExitStatus};

/// Where a runtime keeps things and which shim binary it runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Persistent state: snapshots, container records, logs (e.g. `/var/lib/berth/runtime`).
    pub data_root: PathBuf,
    /// Volatile state: shim sockets, libcontainer state (e.g. `/run/berth/runtime`). Keep it
    /// short: unix socket paths are limited to 107 bytes.
    pub exec_root: PathBuf,
    /// Path of the `berth-shim` binary.
    pub shim_path: PathBuf,
}

impl RuntimeConfig {
    /// `berth-shim` next to the current executable (where cargo and packages install it).
    pub fn shim_next_to_current_exe() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        [dir.join("berth-shim"), dir.parent()?.join("berth-shim")]
            .into_iter()
            .find(|p| p.is_file())
    }
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    /// Chain IDs of the image's layers, bottom first; each must be in the snapshot store.
    pub layers: Vec<String>,
    pub image: ImageConfig,
    pub options: RunOptions,
}

/// The persisted record of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub version: u32,
    pub request: CreateRequest,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub restart_count: u32,
}

/// What `inspect` and `list` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub status: Status,
    /// Host pid of the init while it runs.
    pub pid: Option<i32>,
    /// The last exit, once the process has exited.
    pub exit: Option<ExitStatus>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub restart_count: u32,
    pub rootfs: PathBuf,
    pub log_path: PathBuf,
    pub request: CreateRequest,
}

/// An extra process to run in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    /// Added to (and overriding) the container's env.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub open_stdin: bool,
    /// Nobody will attach (Docker's `Detach`): output is read and dropped from the start.
    /// Otherwise output waits, unread, for the first [`Runtime::exec_attach`] that asks for
    /// stdout or stderr (at most [`crate::protocol::HOLD_LIMIT_SECS`]).
    pub detached: bool,
}

/// Which streams an attach carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Resource usage read from the container's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub read_at: DateTime<Utc>,
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_kernel_ns: u64,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    pub memory_limit: u64,
    pub memory_failcnt: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
}

/// `top`: one row per process, Docker's column titles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopResult {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

const RECORD_VERSION: u32 = 1;
static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// Which supervised process a path or request concerns.
#[derive(Debug, Clone, Copy)]
enum Proc<'a> {
    Init,
    Exec(&'a str),
}

/// One host's containers. See the module docs: all methods block.
#[derive(Debug)]
pub struct Runtime {
    config: RuntimeConfig,
    snapshots: SnapshotStore,
    mounter: Box<dyn Mounter>,
    spares: Spares,
    background: Background,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| RuntimeError::io("create", p, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &'static str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::Json { what, source })
}

fn write_json<T: Serialize>(path: &Path, value: &T, what: &'static str) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| RuntimeError::Json { what, source })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| RuntimeError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename", path, e))
}

fn remove_file_quiet(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::io("remove", p, e)),
        _ => Ok(()),
    }
}

fn remove_dir_quiet(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::io("remove", p, e)),
        _ => Ok(()),
    }
}

/// Renames `dir` into `trash` (created if needed) under a unique name; `None` when `dir`
/// does not exist.
fn move_aside(dir: &Path, trash: &Path) -> Result<Option<PathBuf>> {
    if !dir.exists() {
        return Ok(None);
    }
    mkdir(trash)?;
    let name = format!(
        "{}.{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let to = trash.join(name);
    std::fs::rename(dir, &to).map_err(|e| RuntimeError::io("rename", dir, e))?;
    Ok(Some(to))
}

/// Removes a directory moved to the trash. One whose `rootfs` is still a mountpoint in this
/// mount namespace (a host-side mount that would not come off) is left for a later run
/// rather than emptied through the mount.
fn purge(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let rootfs = path.join("rootfs");
    if let (Ok(inner), Ok(outer)) = (
        std::fs::symlink_metadata(&rootfs),
        std::fs::symlink_metadata(path),
    ) {
        if inner.dev() != outer.dev() {
            tracing::warn!(path = %rootfs.display(), "trash entry still mounted; left in place");
            return;
        }
    }
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not empty the trash");
    }
}

/// The running kernel's `<kernel>.<major>`, from uname.
fn host_kernel() -> Option<crate::seccomp::KernelVersion> {
    let uts = nix::sys::utsname::uname().ok()?;
    crate::seccomp::KernelVersion::from_release(&uts.release().to_string_lossy())
}

/// The capabilities in this process's bounding set, by name: what a `--privileged`
/// container gets (Docker gives "all capabilities"; a capability the daemon lacks cannot be
/// handed on, e.g. CAP_SYS_RESOURCE in a sandbox that dropped it).
fn bounding_caps() -> Vec<String> {
    let mut out: Vec<String> = caps::read(None, caps::CapSet::Bounding)
        .map(|set| set.into_iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The host's device nodes under /dev, as containerd's `HostDevices` (which dockerd uses
/// for `--privileged`) lists them: character and block nodes, symlinks not followed,
/// `/dev/pts`, `/dev/shm`, `/dev/fd`, `/dev/mqueue` and `/dev/console` left out (the
/// container has its own).
pub fn host_devices() -> Vec<DeviceNode> {
    fn walk(dir: &Path, out: &mut Vec<DeviceNode>) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ft = md.file_type();
            if ft.is_dir() {
                if !matches!(
                    name.as_ref(),
                    "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                ) {
                    walk(&path, out);
                }
                continue;
            }
            if name == "console" {
                continue;
            }
            let kind = if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                continue;
            };
            let dev = md.rdev();
            out.push(DeviceNode {
                path: path.to_string_lossy().into_owned(),
                kind,
                major: nix::sys::stat::major(dev) as i64,
                minor: nix::sys::stat::minor(dev) as i64,
                file_mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                access: "rwm".into(),
            });
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Current hard limits of the rlimits the spec may set.
fn host_rlimit_hard() -> BTreeMap<String, u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let mut out = BTreeMap::new();
    for (name, res) in [
        ("RLIMIT_NOFILE", Resource::RLIMIT_NOFILE),
        ("RLIMIT_NPROC", Resource::RLIMIT_NPROC),
        ("RLIMIT_CORE", Resource::RLIMIT_CORE),
        ("RLIMIT_MEMLOCK", Resource::RLIMIT_MEMLOCK),
        ("RLIMIT_STACK", Resource::RLIMIT_STACK),
        ("RLIMIT_FSIZE", Resource::RLIMIT_FSIZE),
        ("RLIMIT_NICE", Resource::RLIMIT_NICE),
        ("RLIMIT_RTPRIO", Resource::RLIMIT_RTPRIO),
        ("RLIMIT_MSGQUEUE", Resource::RLIMIT_MSGQUEUE),
        ("RLIMIT_SIGPENDING", Resource::RLIMIT_SIGPENDING),
        ("RLIMIT_AS", Resource::RLIMIT_AS),
        ("RLIMIT_CPU", Resource::RLIMIT_CPU),
        ("RLIMIT_DATA", Resource::RLIMIT_DATA),
        ("RLIMIT_RSS", Resource::RLIMIT_RSS),
    ] {
        if let Ok((_, hard)) = getrlimit(res) {
            out.insert(name.to_string(), hard);
        }
    }
    out
}

/// Whether `pid` is a process that still runs: alive and not a zombie (a killed shim
/// stays a zombie until the process that spawned it reaps it).
fn pid_running(pid: i32) -> bool {
    pid_alive(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().to_string()))
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

impl Runtime {
    /// Opens the runtime at the configured roots with the real mounter. Existing containers
    /// and their shims are found again on demand (`list`, `inspect`): nothing is cached.
    pub fn open(config: RuntimeConfig) -> Result<Self> {
        Self::with_mounter(config, Box::new(SysMounter))
    }

    /// As [`Runtime::open`] with another mount executor.
    pub fn with_mounter(config: RuntimeConfig, mounter: Box<dyn Mounter>) -> Result<Self> {
        mkdir(&config.data_root.join("containers"))?;
        mkdir(&config.exec_root.join("lc"))?;
        let snapshots = SnapshotStore::open(config.data_root.join("snapshots"))?;
        let background = Background::default();
        // What a previous process moved aside in teardowns but did not get to remove.
        if let Ok(entries) = std::fs::read_dir(config.data_root.join("trash")) {
            let doomed: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            if !doomed.is_empty() {
                background.spawn("trash", move || doomed.iter().for_each(|p| purge(p)));
            }
        }
        Ok(Runtime {
            spares: Spares::new(config.shim_path.clone(), background.clone()),
            background,
            config,
            snapshots,
            mounter,
        })
    }

    /// Waits (at most `limit`) until the work calls left running in the background is done:
    /// emptying the trash after deletes, starting the next standby shim, the cgroup warm-up.
    /// None of it is needed for correctness; benchmarks call this so that one runtime's
    /// leftovers do not slow whatever is measured next. True when all of it finished.
    pub fn settle(&self, limit: Duration) -> bool {
        self.background.settle(limit)
    }

    fn warm_cgroup_attach(&self) {
        if let Some(job) = cgroups::attach_warmer() {
            self.background.spawn("cgroup-warm", job);
        }
    }

    /// The snapshot store (for the image unpacker to commit layers into).
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.config.data_root.join("containers").join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.config.exec_root.join(id)
    }

    fn lc_root(&self) -> PathBuf {
        self.config.exec_root.join("lc")
    }

    fn rootfs(&self, id: &str) -> PathBuf {
        self.dir(id).join("rootfs")
    }

    /// The live json-file log of a container (rotated files are `<path>.N[.gz]`).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("container.log")
    }

    /// The live log file of a container by its driver; `None` for `none`.
    fn log_file_of(&self, rec: &ContainerRecord) -> Option<PathBuf> {
        let id = &rec.request.id;
        match rec.request.options.log.driver {
            LogDriver::JsonFile => Some(self.log_path(id)),
            LogDriver::Local => Some(self.dir(id).join("local-logs").join("container.log")),
            LogDriver::None => None,
        }
    }

    fn socket(&self, id: &str, p: Proc<'_>) -> PathBuf {
        match p {
            Proc::Init => self.run_dir(id).join("shim.sock"),
            Proc::Exec(e) => self.run_dir(id).join(format!("{e}.sock")),
        }
    }

    fn shim_pid_file(&self, id: &str, p: Proc<'_>) -> PathBuf {
        match p {
            Proc::Init => self.run_dir(id).join("shim.pid"),
            Proc::Exec(e) => self.run_dir(id).join(format!("{e}.pid")),
        }
    }

    fn exit_file(&self, id: &str, p: Proc<'_>) -> PathBuf {
        match p {
            Proc::Init => self.dir(id).join("exit.json"),
            Proc::Exec(e) => self.dir(id).join("execs").join(e).join("exit.json"),
        }
    }

    fn record(&self, id: &str) -> Result<ContainerRecord> {
        if !valid_id(id) {
            return Err(RuntimeError::InvalidId { id: id.to_string() });
        }
        let path = self.dir(id).join("container.json");
        if !path.exists() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        read_json(&path, "container record")
    }

    fn save_record(&self, rec: &ContainerRecord) -> Result<()> {
        write_json(
            &self.dir(&rec.request.id).join("container.json"),
            rec,
            "container record",
        )
    }

    // ---- create ---------------------------------------------------------------------------

    /// Prepares a container: upper dir, overlay rootfs mount, `config.json`. Nothing runs yet.
    pub fn create(&self, req: CreateRequest) -> Result<ContainerInfo> {
        let id = req.id.clone();
        if !valid_id(&id) {
            return Err(RuntimeError::InvalidId { id });
        }
        let dir = self.dir(&id);
        if dir.exists() {
            return Err(RuntimeError::AlreadyExists { id });
        }
        // A start usually follows: let the kernel's grace period for its cgroup joins run
        // from now on (see `spawn_shim`).
        self.warm_cgroup_attach();
        mkdir(&dir)?;
        let rec = ContainerRecord {
            version: RECORD_VERSION,
            request: req,
            created_at: Utc::now(),
            started_at: None,
            restart_count: 0,
        };
        let result = self
            .save_record(&rec)
            .and_then(|()| mkdir(&self.rootfs(&id)))
            .and_then(|()| self.write_bundle(&rec));
        if let Err(e) = result {
            let _ = self.teardown(&id);
            return Err(e);
        }
        self.inspect(&id)
    }

    /// The overlay mount of the container's rootfs (creates its upper and work dirs).
    fn rootfs_plan(&self, rec: &ContainerRecord) -> Result<MountPlan> {
        let id = &rec.request.id;
        self.snapshots
            .prepare_active(id, &rec.request.layers, &self.rootfs(id))
    }

    fn image_file(&self, rec: &ContainerRecord, rel: &str) -> Result<String> {
        Ok(self
            .snapshots
            .read_image_file(&rec.request.layers, rel)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    }

    fn write_bundle(&self, rec: &ContainerRecord) -> Result<()> {
        let id = &rec.request.id;
        let dir = self.dir(id);
        let rootfs = self.rootfs(id);
        let opts = &rec.request.options;
        let hostname = opts
            .hostname
            .clone()
            .unwrap_or_else(|| id.chars().take(12).collect());
        let hostname_file = dir.join("hostname");
        let hosts_file = dir.join("hosts");
        std::fs::write(&hostname_file, format!("{hostname}\n"))
            .map_err(|e| RuntimeError::io("write", &hostname_file, e))?;
        std::fs::write(
            &hosts_file,
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            ),
        )
        .map_err(|e| RuntimeError::io("write", &hosts_file, e))?;
        let host = HostFacts {
            rlimit_hard: host_rlimit_hard(),
            passwd: self.image_file(rec, "etc/passwd")?,
            group: self.image_file(rec, "etc/group")?,
            kernel: host_kernel(),
            all_caps: bounding_caps(),
            devices: if opts.privileged {
                host_devices()
            } else {
                Vec::new()
            },
        };
        let etc_files = vec![
            (hostname_file.clone(), "/etc/hostname".to_string()),
            (hosts_file.clone(), "/etc/hosts".to_string()),
        ];
        let spec = spec::build_spec(&SpecInputs {
            id,
            rootfs: rootfs.clone(),
            image: &rec.request.image,
            options: opts,
            host: &host,
            etc_files,
        })?;
        let bundle = dir.join("bundle");
        mkdir(&bundle)?;
        write_json(&bundle.join("config.json"), &spec, "OCI runtime spec")
    }

    // ---- state ----------------------------------------------------------------------------

    fn read_exit(&self, id: &str, p: Proc<'_>) -> Option<ExitStatus> {
        read_json::<ExitRecord>(&self.exit_file(id, p), "exit record")
            .ok()
            .map(|r| r.exit)
    }

    fn connect(&self, id: &str, p: Proc<'_>) -> Result<UnixStream> {
        let socket = self.socket(id, p);
        UnixStream::connect(&socket).map_err(|source| RuntimeError::ShimUnreachable {
            id: id.to_string(),
            socket,
            source,
        })
    }

    /// One request, one response.
    fn request(
        &self,
        id: &str,
        p: Proc<'_>,
        req: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        let mut s = self.connect(id, p)?;
        s.set_read_timeout(timeout)
            .map_err(|e| RuntimeError::io("set timeout", self.socket(id, p), e))?;
        protocol::write_line(&mut s, req)
            .map_err(|e| RuntimeError::io("write", self.socket(id, p), e))?;
        // The connection ends with this response, so reading ahead is harmless: one read
        // instead of one per byte.
        match protocol::read_line::<Response>(&mut std::io::BufReader::new(&mut s)) {
            Err(RuntimeError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(RuntimeError::Timeout {
                    what: "shim response",
                    millis: timeout.map_or(0, |t| t.as_millis() as u64),
                })
            }
            Err(e) => Err(e),
            Ok(Response::Error { message }) => Err(RuntimeError::ShimRequest {
                id: id.to_string(),
                message,
            }),
            Ok(r) => Ok(r),
        }
    }

    /// The shim's view: `Some(pid, exit)` while the shim answers.
    fn shim_state(&self, id: &str, p: Proc<'_>) -> Option<(i32, Option<ExitStatus>)> {
        match self.request(id, p, &Request::State, Some(Duration::from_secs(5))) {
            Ok(Response::State { pid, exit }) => Some((pid, exit)),
            _ => None,
        }
    }

    fn status_of(&self, rec: &ContainerRecord) -> (Status, Option<i32>, Option<ExitStatus>) {
        self.observe(rec, true)
    }

    /// `with_pause`: tell a paused container from a running one (libcontainer reads its state
    /// and the freezer cgroup); callers that treat both alike pass false and see Running.
    fn observe(
        &self,
        rec: &ContainerRecord,
        with_pause: bool,
    ) -> (Status, Option<i32>, Option<ExitStatus>) {
        let id = &rec.request.id;
        let shim = self.shim_state(id, Proc::Init);
        let mut recorded = self.read_exit(id, Proc::Init);
        if shim.is_none() && recorded.is_none() {
            recorded = self.settle_orphan(rec);
        }
        let live_exit = shim.and_then(|(_, e)| e);
        let exit = recorded.or(live_exit);
        let paused = with_pause
            && shim.is_some()
            && exit.is_none()
            && oci::is_paused(id, &self.lc_root()).unwrap_or(false);
        let status = lifecycle::observe(
            shim.is_some(),
            paused,
            exit.is_some(),
            rec.started_at.is_some(),
        );
        let pid = shim.filter(|_| status.is_live()).map(|(p, _)| p);
        (status, pid, exit)
    }

    /// The overlay directories of container `id`'s rootfs: its upper dir (the container's
    /// writes) and the image's layer dirs, top first (overlayfs' `lowerdir` order, what
    /// [`crate::changes::changes`] and [`crate::changes::write_layer_tar`] take).
    /// Errors: [`RuntimeError::NotFound`], [`RuntimeError::InvalidId`].
    pub fn upper_and_lowers(&self, id: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
        let rec = self.record(id)?;
        let mut lowers = rec
            .request
            .layers
            .iter()
            .map(|c| self.snapshots.layer_dir(c))
            .collect::<Result<Vec<_>>>()?;
        lowers.reverse();
        Ok((self.snapshots.upper_dir(id), lowers))
    }

    /// The container as it is now (asks its shim).
    pub fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        let rec = self.record(id)?;
        let (status, pid, exit) = self.status_of(&rec);
        Ok(self.info(rec, status, pid, exit))
    }

    fn info(
        &self,
        rec: ContainerRecord,
        status: Status,
        pid: Option<i32>,
        exit: Option<ExitStatus>,
    ) -> ContainerInfo {
        let id = &rec.request.id;
        ContainerInfo {
            id: id.clone(),
            status,
            pid,
            exit,
            created_at: rec.created_at,
            started_at: rec.started_at,
            restart_count: rec.restart_count,
            rootfs: self.rootfs(id),
            log_path: self.log_file_of(&rec).unwrap_or_default(),
            request: rec.request,
        }
    }

    /// Every container under the data root, with its current status (live restore: a new
    /// `Runtime` sees the containers and shims an earlier one started).
    pub fn list(&self) -> Result<Vec<ContainerInfo>> {
        let mut out: Vec<ContainerInfo> = self
            .ids()?
            .iter()
            .filter_map(|id| self.inspect(id).ok())
            .collect();
        out.sort_by_key(|a| a.created_at);
        Ok(out)
    }

    /// The id of every container directory under the data root, readable record or not
    /// (a create interrupted before its record was written leaves a directory without one;
    /// [`Runtime::delete`] with `force` removes it). Unordered; asks no shim.
    pub fn ids(&self) -> Result<Vec<String>> {
        let dir = self.config.data_root.join("containers");
        let entries = std::fs::read_dir(&dir).map_err(|e| RuntimeError::io("read dir", &dir, e))?;
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn require(&self, id: &str, action: Action) -> Result<ContainerInfo> {
        let info = self.inspect(id)?;
        if info.status.check(action) {
            Ok(info)
        } else {
            Err(RuntimeError::InvalidTransition {
                id: id.to_string(),
                action,
                status: info.status,
            })
        }
    }

    // ---- start ----------------------------------------------------------------------------

    /// Starts the container's init under a new detached shim; returns once it runs. The info
    /// returned is what the shim reported (running, with the init's pid), not asked again: a
    /// short-lived process may have exited since.
    pub fn start(&self, id: &str) -> Result<ContainerInfo> {
        self.start_attached(id, 0)
    }

    /// As [`Runtime::start`], for `attachers` clients on their way to [`Runtime::attach`]
    /// with stdout or stderr: the shim reads no output until they are attached, so they
    /// get all of it (Docker's attach before start). Each must attach, or the output waits
    /// [`crate::protocol::HOLD_LIMIT_SECS`] for it.
    pub fn start_attached(&self, id: &str, attachers: u32) -> Result<ContainerInfo> {
        self.require(id, Action::Start)?;
        let mut rec = self.record(id)?;
        self.wait_shim_gone(id, Proc::Init, Duration::from_secs(10))?;
        // A shim killed since the last look: settle it before its files are reused.
        self.settle_orphan(&rec);
        let plan = self.rootfs_plan(&rec)?;
        remove_file_quiet(&self.exit_file(id, Proc::Init))?;
        mkdir(&self.run_dir(id))?;
        let cfg = ShimConfig {
            version: protocol::RECORD_VERSION,
            id: id.to_string(),
            task: ShimTask::Init {
                bundle: self.dir(id).join("bundle"),
            },
            state_root: self.lc_root(),
            socket: self.socket(id, Proc::Init),
            exit_file: self.exit_file(id, Proc::Init),
            pid_file: self.shim_pid_file(id, Proc::Init),
            log_file: self.log_file_of(&rec),
            log_policy: rec.request.options.log.policy().unwrap_or_default(),
            cgroups_path: spec::cgroups_path(id),
            tty: rec.request.options.tty,
            open_stdin: rec.request.options.open_stdin,
            rootfs_mount: Some(plan),
            hold_output_for: attachers,
        };
        let cfg_path = self.dir(id).join("shim.json");
        let pid = self.spawn_shim(id, &cfg, &cfg_path)?;
        if rec.started_at.is_some() {
            rec.restart_count += 1;
        }
        rec.started_at = Some(Utc::now());
        self.save_record(&rec)?;
        Ok(self.info(rec, Status::Running, Some(pid), None))
    }

    fn spawn_shim(&self, id: &str, cfg: &ShimConfig, cfg_path: &Path) -> Result<i32> {
        // libcontainer joins the container's cgroups a few ms into the shim's work (init
        // and exec alike): let the kernel's grace period for that elapse meanwhile.
        self.warm_cgroup_attach();
        write_json(cfg_path, cfg, "shim config")?;
        let order = StandbyOrder {
            config: cfg_path.to_path_buf(),
            stderr: cfg_path.with_extension("stderr"),
        };
        let launched = self.spares.launch(&order)?;
        match self.read_ready(id, launched)? {
            // The spare was killed before it took the order: its process ended by a
            // signal and nothing wrote to the ready pipe, which the supervisor it forks
            // holds open until it reports, so no supervisor ever ran. A fresh shim does
            // the start instead.
            ReadyOutcome::SpareKilled => {
                tracing::warn!(
                    id,
                    "standby shim was killed before it started; using a fresh one"
                );
                match self.read_ready(id, self.spares.launch_fresh(&order)?)? {
                    ReadyOutcome::Ready(r) => r,
                    ReadyOutcome::SpareKilled => Err(RuntimeError::ShimStart {
                        id: id.to_string(),
                        message: "the shim was killed before it reported".into(),
                    }),
                }
            }
            ReadyOutcome::Ready(r) => r,
        }
    }

    /// Reaps the launched shim's first process and reads its ready line.
    fn read_ready(&self, id: &str, launched: Launched) -> Result<ReadyOutcome> {
        let Launched {
            mut child,
            stdout: mut out,
            spare,
        } = launched;
        // The first process forks the supervisor and exits at once; reap it.
        let status = child.wait().ok();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.contains(&b'\n') {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd, count 1.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if n == 0 {
                return Err(RuntimeError::Timeout {
                    what: "shim start",
                    millis: 60_000,
                });
            }
            match out.read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RuntimeError::io("read", "shim ready pipe", e)),
            }
        }
        let killed = status.is_some_and(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal().is_some()
        });
        if spare && killed && buf.is_empty() {
            return Ok(ReadyOutcome::SpareKilled);
        }
        let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
        Ok(ReadyOutcome::Ready(
            match serde_json::from_slice::<Ready>(line) {
                Ok(Ready::Started { pid, .. }) => Ok(pid),
                Ok(Ready::Failed { message }) => Err(RuntimeError::ShimStart {
                    id: id.to_string(),
                    message,
                }),
                Err(_) => Err(RuntimeError::ShimStart {
                    id: id.to_string(),
                    message: format!("no ready message (got {:?})", String::from_utf8_lossy(&buf)),
                }),
            },
        ))
    }

    /// Waits until a previous shim of this process has finished its teardown.
    fn wait_shim_gone(&self, id: &str, p: Proc<'_>, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let pid = std::fs::read_to_string(self.shim_pid_file(id, p))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            match pid {
                Some(pid) if pid_alive(pid) => {}
                _ => return Ok(()),
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Timeout {
                    what: "previous shim to exit",
                    millis: limit.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // ---- signals, wait, stop --------------------------------------------------------------

    /// Sends `signal` to the container's init.
    pub fn kill(&self, id: &str, signal: i32) -> Result<()> {
        self.require(id, Action::Kill)?;
        self.request(
            id,
            Proc::Init,
            &Request::Kill { signal, all: false },
            Some(Duration::from_secs(10)),
        )
        .map(|_| ())
    }

    /// A started container whose shim is gone without recording an exit (the shim was
    /// killed, e.g. `kill -9`): nothing supervises its processes any more. Kills every
    /// process left in its cgroup, removes its cgroups and libcontainer state as the shim's
    /// teardown would, and records the exit (SIGKILL, 137) with the reason as its
    /// `error`, so the container is never left running unsupervised and is reported exited.
    /// Returns the recorded exit; `None` when the shim runs, the container never started,
    /// or an exit is recorded already.
    ///
    /// The evidence is the shim's pid file naming a dead process: a shim removes it only
    /// after writing the exit record, and a starting shim writes it before anything runs
    /// (so a container between `start`'s cleanup and its new shim is never taken for one).
    fn settle_orphan(&self, rec: &ContainerRecord) -> Option<ExitStatus> {
        let id = &rec.request.id;
        let shim_pid = std::fs::read_to_string(self.shim_pid_file(id, Proc::Init))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())?;
        if rec.started_at.is_none() || pid_running(shim_pid) {
            return None;
        }
        // The shim writes its record before it removes its pid file: read again now that
        // it is known to be gone.
        if self.read_exit(id, Proc::Init).is_some() {
            return None;
        }
        let shim_pid = Some(shim_pid);
        let cg = spec::cgroups_path(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = 0usize;
        loop {
            let pids = cgroups::pids(id, &cg).unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
                {
                    killed += 1;
                }
            }
            if Instant::now() > deadline {
                tracing::warn!(container = %id, "processes of a container whose shim died survive SIGKILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if cgroups::remove_dirs(&cg).is_ok() {
            let _ = std::fs::remove_dir_all(self.lc_root().join(id));
        } else {
            let _ = oci::delete(id, &self.lc_root(), true);
        }
        let mut exit = ExitStatus::from_wait(None, Some(libc::SIGKILL), false);
        exit.cause = Some(protocol::ExitCause::ShimDied);
        tracing::warn!(container = %id, ?shim_pid, killed, "shim died: container killed");
        let record = ExitRecord {
            version: protocol::RECORD_VERSION,
            pid: 0,
            exit,
        };
        if let Err(e) = write_json(&self.exit_file(id, Proc::Init), &record, "exit record") {
            tracing::warn!(container = %id, error = %e, "could not record the exit");
        }
        let _ = std::fs::remove_file(self.shim_pid_file(id, Proc::Init));
        let _ = std::fs::remove_file(self.socket(id, Proc::Init));
        Some(exit)
    }

    /// Whether the shim supervising `p` still runs.
    fn shim_running(&self, id: &str, p: Proc<'_>) -> bool {
        std::fs::read_to_string(self.shim_pid_file(id, p))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .is_some_and(pid_alive)
    }

    fn wait_proc(
        &self,
        id: &str,
        p: Proc<'_>,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitStatus>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(e) = self.read_exit(id, p) {
                return Ok(Some(e));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            match self.request(id, p, &Request::Wait, left) {
                Ok(Response::Exited { exit }) => return Ok(Some(exit)),
                Ok(_) => {
                    return Err(RuntimeError::Protocol {
                        detail: "unexpected answer to wait",
                    })
                }
                Err(RuntimeError::Timeout { .. }) => return Ok(None),
                // The shim is finishing (socket gone or closed while it writes the exit
                // record): look again until the record appears or the shim is gone.
                Err(
                    e @ (RuntimeError::ShimUnreachable { .. }
                    | RuntimeError::Protocol { .. }
                    | RuntimeError::Io { .. }),
                ) => {
                    if let Some(x) = self.read_exit(id, p) {
                        return Ok(Some(x));
                    }
                    let pid = std::fs::read_to_string(self.shim_pid_file(id, p))
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok());
                    if !pid.is_some_and(pid_alive) {
                        let settled = match p {
                            Proc::Init => self
                                .record(id)
                                .ok()
                                .and_then(|rec| self.settle_orphan(&rec)),
                            Proc::Exec(_) => None,
                        };
                        return match self.read_exit(id, p).or(settled) {
                            Some(x) => Ok(Some(x)),
                            None => Err(e),
                        };
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for the init to exit (`None` timeout: forever); `Ok(None)` on timeout.
    /// Returns at once with the recorded exit of a container that is not running.
    pub fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        // A paused container is waited for like a running one: no need to tell them apart.
        let (status, _, exit) = self.observe(&self.record(id)?, false);
        match status {
            Status::Created => Err(RuntimeError::InvalidTransition {
                id: id.to_string(),
                action: Action::Wait,
                status: Status::Created,
            }),
            // Exited as the shim saw it, but the shim may still be writing the last of the
            // log: only the exit record (written after the log is complete) or the shim's
            // answer to Wait ends the wait.
            Status::Exited => match self.read_exit(id, Proc::Init) {
                Some(recorded) => Ok(Some(recorded)),
                None => self.wait_proc(id, Proc::Init, timeout).or(Ok(exit)),
            },
            _ => self.wait_proc(id, Proc::Init, timeout),
        }
    }

    /// Stops the container: its stop signal, then SIGKILL after `timeout` (default: the
    /// container's stop timeout, else 10 s). Returns the exit, or `None` if it was not running.
    pub fn stop(&self, id: &str, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        self.stop_with_signal(id, timeout, None)
    }

    /// [`Runtime::stop`] with the first signal given (`docker stop --signal`) instead of
    /// the container's stop signal.
    pub fn stop_with_signal(
        &self,
        id: &str,
        timeout: Option<Duration>,
        signal: Option<i32>,
    ) -> Result<Option<ExitStatus>> {
        let info = self.inspect(id)?;
        let opts = &info.request.options;
        let signal = signal.unwrap_or_else(|| {
            opts.stop_signal
                .as_deref()
                .or(info.request.image.stop_signal.as_deref())
                .and_then(spec::signal_number)
                .unwrap_or(libc::SIGTERM)
        });
        let grace = timeout.unwrap_or(Duration::from_secs(opts.stop_timeout.unwrap_or(10)));
        let Some(plan) = lifecycle::plan_stop(info.status, signal, grace.as_millis() as u64) else {
            return Ok(info.exit);
        };
        if plan.thaw_first {
            oci::resume(id, &self.lc_root())?;
        }
        let _ = self.request(
            id,
            Proc::Init,
            &Request::Kill {
                signal: plan.signal,
                all: false,
            },
            Some(Duration::from_secs(10)),
        );
        if let Some(e) = self.wait_proc(
            id,
            Proc::Init,
            Some(Duration::from_millis(plan.grace_ms.max(1))),
        )? {
            return Ok(Some(e));
        }
        let _ = self.request(
            id,
            Proc::Init,
            &Request::Kill {
                signal: libc::SIGKILL,
                all: true,
            },
            Some(Duration::from_secs(10)),
        );
        self.wait_proc(id, Proc::Init, Some(Duration::from_secs(30)))
    }

    /// Stop, then start again (same rootfs and upper dir).
    pub fn restart(&self, id: &str, timeout: Option<Duration>) -> Result<ContainerInfo> {
        self.stop(id, timeout)?;
        self.start(id)
    }

    /// Freezes the container (cgroup freezer).
    pub fn pause(&self, id: &str) -> Result<()> {
        self.require(id, Action::Pause)?;
        oci::pause(id, &self.lc_root())
    }

    /// Thaws a paused container.
    pub fn unpause(&self, id: &str) -> Result<()> {
        self.require(id, Action::Unpause)?;
        oci::resume(id, &self.lc_root())
    }

    // ---- delete ---------------------------------------------------------------------------

    /// Removes the container: libcontainer state and cgroups, the rootfs mount, the upper dir,
    /// its records and logs. Without `force` it must not be running; with `force` it is
    /// killed first.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let info = match self.inspect(id) {
            Ok(info) => info,
            // A directory whose record cannot be read (a create cut short): forced, what
            // there is of it goes.
            Err(_) if force && valid_id(id) && self.dir(id).is_dir() => return self.teardown(id),
            Err(e) => return Err(e),
        };
        if !info.status.check(if force {
            Action::ForceDelete
        } else {
            Action::Delete
        }) {
            return Err(RuntimeError::InvalidTransition {
                id: id.to_string(),
                action: Action::Delete,
                status: info.status,
            });
        }
        if info.status.is_live() {
            self.stop(id, Some(Duration::ZERO))?;
        }
        self.teardown(id)
    }

    /// Removes everything of `id`, collecting every error instead of stopping at the first.
    fn teardown(&self, id: &str) -> Result<()> {
        let mut errors = Vec::new();
        let _ = self.wait_shim_gone(id, Proc::Init, Duration::from_secs(10));
        if let Err(e) = oci::delete(id, &self.lc_root(), true) {
            errors.push(e);
        }
        // The shim removes the cgroups; this catches a shim that died before it could.
        if let Err(e) = cgroups::remove_dirs(&spec::cgroups_path(id)) {
            errors.push(RuntimeError::Cgroup {
                op: "remove",
                id: id.to_string(),
                message: e.to_string(),
            });
        }
        if let Err(e) = self.mounter.unmount(&self.rootfs(id)) {
            errors.push(e);
        }
        // The container's directory (records, bundle, log, rootfs mountpoint) and its upper
        // and work dirs are moved aside at once and removed off the caller's path: removing
        // them takes milliseconds (many small files; the rootfs may still be the overlay's
        // mountpoint in the exiting shim's mount namespace, and removing it detaches that
        // mount, which waits for an RCU grace period). The id is free when this returns; a
        // restarted runtime finishes what a dead one left in the trash.
        let trash = self.config.data_root.join("trash");
        let mut doomed = Vec::new();
        for dir in [self.dir(id), self.snapshots.active_dir(id)] {
            match move_aside(&dir, &trash) {
                Ok(Some(p)) => doomed.push(p),
                Ok(None) => {}
                // Another filesystem (no rename into the trash): remove it here.
                Err(_) => {
                    if let Err(e) = remove_dir_quiet(&dir) {
                        errors.push(e);
                    }
                }
            }
        }
        if !doomed.is_empty() {
            self.background
                .spawn("trash", move || doomed.iter().for_each(|p| purge(p)));
        }
        if let Err(e) = remove_dir_quiet(&self.run_dir(id)) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Teardown {
                id: id.to_string(),
                errors,
            })
        }
    }

    // ---- exec -----------------------------------------------------------------------------

    /// Starts an extra process in a running container under its own shim; returns its exec
    /// id. Its output waits for the first [`Runtime::exec_attach`] unless
    /// [`ExecOptions::detached`] (it is not logged).
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<String> {
        let info = self.require(id, Action::Exec)?;
        let rec = self.record(id)?;
        let exec_id = format!(
            "x{:x}{:x}",
            std::process::id(),
            EXEC_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.dir(id).join("execs").join(&exec_id);
        mkdir(&dir)?;
        let spec: oci_spec::runtime::Spec =
            read_json(&self.dir(id).join("bundle/config.json"), "OCI runtime spec")?;
        let (passwd, group) = if opts.user.is_some() {
            (
                self.image_file(&rec, "etc/passwd")?,
                self.image_file(&rec, "etc/group")?,
            )
        } else {
            (String::new(), String::new())
        };
        let process = exec_process(&spec, opts, &passwd, &group)?;
        let process_path = dir.join("process.json");
        write_json(&process_path, &process, "exec process")?;
        let p = Proc::Exec(&exec_id);
        let cfg = ShimConfig {
            version: protocol::RECORD_VERSION,
            id: id.to_string(),
            task: ShimTask::Exec {
                exec_id: exec_id.clone(),
                process: process_path,
            },
            state_root: self.lc_root(),
            socket: self.socket(id, p),
            exit_file: self.exit_file(id, p),
            pid_file: self.shim_pid_file(id, p),
            log_file: None,
            log_policy: Default::default(),
            cgroups_path: spec::cgroups_path(id),
            tty: opts.tty,
            open_stdin: opts.open_stdin,
            rootfs_mount: None,
            hold_output_for: u32::from(!opts.detached),
        };
        if let Err(e) = self.spawn_shim(id, &cfg, &dir.join("shim.json")) {
            return Err(explain_exec_failure(e, id, info.pid, opts));
        }
        Ok(exec_id)
    }

    fn check_exec(&self, id: &str, exec_id: &str) -> Result<()> {
        if valid_id(exec_id) && self.dir(id).join("execs").join(exec_id).is_dir() {
            Ok(())
        } else {
            Err(RuntimeError::ExecNotFound {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
        }
    }

    /// Waits for an exec'd process; `Ok(None)` on timeout.
    pub fn exec_wait(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitStatus>> {
        self.check_exec(id, exec_id)?;
        self.wait_proc(id, Proc::Exec(exec_id), timeout)
    }

    /// Sends `signal` to an exec'd process (health probes that outlive their timeout).
    pub fn exec_kill(&self, id: &str, exec_id: &str, signal: i32) -> Result<()> {
        self.check_exec(id, exec_id)?;
        self.request(
            id,
            Proc::Exec(exec_id),
            &Request::Kill { signal, all: false },
            Some(Duration::from_secs(10)),
        )
        .map(|_| ())
    }

    /// Forgets a finished exec: its directory (exit record) and its shim's pid file and
    /// socket. `Ok(false)` while its shim still runs (nothing removed: try again later);
    /// `Ok(true)` once removed (or already gone).
    pub fn exec_remove(&self, id: &str, exec_id: &str) -> Result<bool> {
        if !valid_id(exec_id) {
            return Err(RuntimeError::ExecNotFound {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
        }
        let p = Proc::Exec(exec_id);
        if self.shim_running(id, p) {
            return Ok(false);
        }
        let mut errors = Vec::new();
        for f in [self.socket(id, p), self.shim_pid_file(id, p)] {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    errors.push(RuntimeError::io("remove", &f, e))
                }
                _ => {}
            }
        }
        if let Err(e) = remove_dir_quiet(&self.dir(id).join("execs").join(exec_id)) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(true)
        } else {
            Err(RuntimeError::Teardown {
                id: id.to_string(),
                errors,
            })
        }
    }

    /// Attaches to an exec'd process (see [`Runtime::attach`]).
    pub fn exec_attach(&self, id: &str, exec_id: &str, opts: AttachOptions) -> Result<UnixStream> {
        self.check_exec(id, exec_id)?;
        self.attach_proc(id, Proc::Exec(exec_id), opts)
    }

    /// Resizes an exec'd process's tty.
    pub fn exec_resize(&self, id: &str, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        self.check_exec(id, exec_id)?;
        self.request(
            id,
            Proc::Exec(exec_id),
            &Request::Resize { rows, cols },
            Some(Duration::from_secs(5)),
        )
        .map(|_| ())
    }

    // ---- attach, resize -------------------------------------------------------------------

    /// Attaches to the container's init. The returned stream speaks the frames of
    /// [`crate::protocol`]: output frames (Docker's multiplexed header) arrive until the
    /// process exits and the stream closes; write STDIN, STDIN_CLOSE and RESIZE frames.
    /// Convert it for tokio with `set_nonblocking(true)` and `tokio::net::UnixStream::from_std`.
    ///
    /// A process that has exited while its shim still runs (draining, or holding output
    /// for the attachers of [`Runtime::start_attached`]) can be attached to: the stream
    /// carries the rest of the output and closes.
    pub fn attach(&self, id: &str, opts: AttachOptions) -> Result<UnixStream> {
        let info = self.inspect(id)?;
        if info.status == Status::Exited && self.shim_running(id, Proc::Init) {
            if let Ok(s) = self.attach_proc(id, Proc::Init, opts) {
                return Ok(s);
            }
        }
        if !info.status.check(Action::Attach) {
            return Err(RuntimeError::InvalidTransition {
                id: id.to_string(),
                action: Action::Attach,
                status: info.status,
            });
        }
        self.attach_proc(id, Proc::Init, opts)
    }

    fn attach_proc(&self, id: &str, p: Proc<'_>, opts: AttachOptions) -> Result<UnixStream> {
        let mut s = self.connect(id, p)?;
        let sock = self.socket(id, p);
        protocol::write_line(
            &mut s,
            &Request::Attach {
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr,
            },
        )
        .map_err(|e| RuntimeError::io("write", &sock, e))?;
        match protocol::read_line::<Response>(&mut s)? {
            Response::Ok => Ok(s),
            Response::Error { message } => Err(RuntimeError::ShimRequest {
                id: id.to_string(),
                message,
            }),
            _ => Err(RuntimeError::Protocol {
                detail: "unexpected answer to attach",
            }),
        }
    }

    /// Resizes the init's tty.
    pub fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        self.require(id, Action::Attach)?;
        self.request(
            id,
            Proc::Init,
            &Request::Resize { rows, cols },
            Some(Duration::from_secs(5)),
        )
        .map(|_| ())
    }

    // ---- logs -----------------------------------------------------------------------------

    /// The container's log records. Without `follow` the stream ends at the end of the file;
    /// with it, the stream blocks for new records until the container is no longer running.
    /// Reads across the rotated files in order. Fails with
    /// [`RuntimeError::LogsNotReadable`] for a driver that keeps nothing.
    pub fn logs(&self, id: &str, opts: LogOptions) -> Result<LogStream<'_>> {
        let rec = self.record(id)?;
        let (Some(path), Some(policy)) = (self.log_file_of(&rec), rec.request.options.log.policy())
        else {
            return Err(RuntimeError::LogsNotReadable { id: id.to_string() });
        };
        let mut file = LogReader::new(path, policy.format);
        let initial = file
            .read_all()
            .map_err(|e| RuntimeError::io("read log", file.path(), e))?;
        let initial = logs::select(initial, &opts);
        Ok(LogStream {
            runtime: self,
            id: id.to_string(),
            file,
            pending: initial.into(),
            opts,
            done: false,
            idle: 0,
            cancelled: None,
        })
    }

    // ---- stats, top -----------------------------------------------------------------------

    /// `docker update`: writes `resources` (memory, cpu, cpuset, pids) into the container's
    /// `config.json`, so that every later start uses them, and, when `live` (the container
    /// runs or is paused), applies them to its cgroups now. A limit the kernel refuses
    /// leaves `config.json` as it was and answers [`RuntimeError::Cgroup`].
    pub fn update_resources(
        &self,
        id: &str,
        resources: &crate::spec::Resources,
        live: bool,
    ) -> Result<()> {
        let path = self.dir(id).join("bundle/config.json");
        let mut spec: serde_json::Value = read_json(&path, "OCI runtime spec")?;
        let limits = crate::spec::limits_json(resources);
        if live {
            let mut applied = limits.clone();
            // pids: no limit is "max" for libcgroups only when asked with 0.
            if applied.get("pids").is_none() {
                applied["pids"] = serde_json::json!({"limit": 0});
            }
            let linux: oci_spec::runtime::LinuxResources = serde_json::from_value(applied)
                .map_err(|source| RuntimeError::Json {
                    what: "cgroup limits",
                    source,
                })?;
            cgroups::apply(
                id,
                &crate::spec::cgroups_path(id),
                &linux,
                resources.oom_kill_disable,
            )?;
        }
        let devices = spec["linux"]["resources"]["devices"].take();
        let mut new = limits;
        new["devices"] = devices;
        spec["linux"]["resources"] = new;
        write_json(&path, &spec, "OCI runtime spec")
    }

    /// CPU, memory and pids usage from the container's cgroups.
    pub fn stats(&self, id: &str) -> Result<Stats> {
        self.require(id, Action::Stats)?;
        let s = cgroups::stats(id, &spec::cgroups_path(id))?;
        Ok(Stats {
            read_at: Utc::now(),
            cpu_total_ns: s.cpu.usage.usage_total,
            cpu_user_ns: s.cpu.usage.usage_user,
            cpu_kernel_ns: s.cpu.usage.usage_kernel,
            cpu_periods: s.cpu.throttling.periods,
            cpu_throttled_periods: s.cpu.throttling.throttled_periods,
            cpu_throttled_ns: s.cpu.throttling.throttled_time,
            memory_usage: s.memory.memory.usage,
            memory_max_usage: s.memory.memory.max_usage,
            memory_limit: s.memory.memory.limit,
            memory_failcnt: s.memory.memory.fail_count,
            pids_current: s.pids.current,
            pids_limit: s.pids.limit,
        })
    }

    /// The container's processes: `UID PID PPID CMD` (host pids, as `docker top` shows).
    pub fn top(&self, id: &str) -> Result<TopResult> {
        self.require(id, Action::Top)?;
        let mut pids = cgroups::pids(id, &spec::cgroups_path(id))?;
        pids.sort_unstable();
        let mut processes = Vec::new();
        for pid in pids {
            let base = PathBuf::from(format!("/proc/{pid}"));
            let (Ok(stat), Ok(status)) = (
                std::fs::read_to_string(base.join("stat")),
                std::fs::read_to_string(base.join("status")),
            ) else {
                continue; // exited meanwhile
            };
            let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
            processes.push(top_row(pid, &stat, &status, &cmdline));
        }
        Ok(TopResult {
            titles: ["UID", "PID", "PPID", "CMD"].map(String::from).to_vec(),
            processes,
        })
    }
}

/// One `top` row from `/proc/<pid>/{stat,status,cmdline}`.
pub fn top_row(pid: i32, stat: &str, status: &str, cmdline: &[u8]) -> Vec<String> {
    // stat: "pid (comm) state ppid ..."; comm may contain spaces and parens.
    let close = stat.rfind(')').unwrap_or(0);
    let comm = stat
        .find('(')
        .map(|o| stat[o + 1..close].to_string())
        .unwrap_or_default();
    let ppid = stat[close.min(stat.len())..]
        .split_whitespace()
        .nth(2)
        .unwrap_or("0")
        .to_string();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0")
        .to_string();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cmd = if args.is_empty() {
        format!("[{comm}]")
    } else {
        args.join(" ")
    };
    vec![uid, pid.to_string(), ppid, cmd]
}

/// The OCI process of an exec: the container's process with the exec's overrides.
fn exec_process(
    spec: &oci_spec::runtime::Spec,
    opts: &ExecOptions,
    passwd: &str,
    group: &str,
) -> Result<serde_json::Value> {
    if opts.cmd.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let mut p = serde_json::to_value(spec.process()).map_err(|source| RuntimeError::Json {
        what: "OCI process",
        source,
    })?;
    p["args"] = serde_json::json!(opts.cmd);
    p["terminal"] = serde_json::json!(opts.tty);
    let mut env: Vec<String> = p["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    for e in &opts.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    p["env"] = serde_json::json!(env);
    if let Some(w) = &opts.working_dir {
        p["cwd"] = serde_json::json!(w);
    }
    if let Some(u) = &opts.user {
        let (ids, extra) = spec::resolve_user(u, passwd, group)?;
        p["user"] = serde_json::json!({"uid": ids.uid, "gid": ids.gid, "additionalGids": extra});
    }
    Ok(p)
}

/// libcontainer reports a working directory it cannot enter only as a failed system call:
/// when the exec's directory is missing in the container (seen through the init's root),
/// say so in runc's words instead.
fn explain_exec_failure(
    e: RuntimeError,
    id: &str,
    init_pid: Option<i32>,
    opts: &ExecOptions,
) -> RuntimeError {
    let (Some(pid), Some(dir)) = (init_pid, opts.working_dir.as_deref()) else {
        return e;
    };
    if !matches!(e, RuntimeError::ShimStart { .. }) {
        return e;
    }
    let seen = PathBuf::from(format!("/proc/{pid}/root")).join(dir.trim_start_matches('/'));
    match std::fs::metadata(&seen) {
        Ok(m) if m.is_dir() => e,
        Ok(_) => RuntimeError::ShimStart {
            id: id.to_string(),
            message: format!(
                "error in executing process : chdir to cwd ({dir:?}) set in config.json failed: not a directory"
            ),
        },
        Err(_) => RuntimeError::ShimStart {
            id: id.to_string(),
            message: format!(
                "error in executing process : chdir to cwd ({dir:?}) set in config.json failed: no such file or directory"
            ),
        },
    }
}

/// Log records of one container; see [`Runtime::logs`]. Blocking iterator.
pub struct LogStream<'a> {
    runtime: &'a Runtime,
    id: String,
    file: LogReader,
    pending: std::collections::VecDeque<LogRecord>,
    opts: LogOptions,
    done: bool,
    /// Empty polls in a row (sets the poll interval).
    idle: u32,
    /// Asked between polls of a follow: `true` ends the stream (its reader went away).
    cancelled: Option<Box<dyn Fn() -> bool + Send + 'a>>,
}

impl std::fmt::Debug for LogStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("id", &self.id)
            .field("opts", &self.opts)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<'a> LogStream<'a> {
    /// Ends a follow as soon as `cancelled` answers `true` (asked between polls, at most
    /// 50 ms apart), instead of when the container's shim is gone: a reader whose client
    /// went away while the container runs quietly must not poll on forever.
    pub fn cancel_when(mut self, cancelled: impl Fn() -> bool + Send + 'a) -> Self {
        self.cancelled = Some(Box::new(cancelled));
        self
    }
}

impl Iterator for LogStream<'_> {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(r));
            }
            if self.done || !self.opts.follow {
                return None;
            }
            // Live until the shim is gone: it drains the output into the log after the
            // process exits, and only then removes its pid file.
            let live = self
                .runtime
                .inspect(&self.id)
                .map(|i| i.status.is_live())
                .unwrap_or(false)
                || self.runtime.shim_running(&self.id, Proc::Init);
            let mut no_tail = self.opts.clone();
            no_tail.tail = None;
            match self.file.read_new() {
                Ok(new) => self.pending.extend(logs::select(new, &no_tail)),
                Err(e) => return Some(Err(RuntimeError::io("read log", self.file.path(), e))),
            }
            if self.pending.is_empty() {
                if !live || self.cancelled.as_ref().is_some_and(|c| c()) {
                    self.done = true;
                    return None;
                }
                // Poll quickly right after activity (a short-lived container's output and
                // exit arrive within milliseconds), backing off to 50 ms when idle.
                std::thread::sleep(Duration::from_millis((2u64 << self.idle.min(5)).min(50)));
                self.idle = self.idle.saturating_add(1);
            } else {
                self.idle = 0;
            }
        }
    }
}

/// What a launched shim's ready pipe said.
enum ReadyOutcome {
    /// The start's result: the container's pid, or why the shim could not start it.
    Ready(Result<i32>),
    /// The spare died from a signal without a word: it never took the order.
    SpareKilled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Runtime>();
    }

    /// Needs root (mounts a tmpfs in a temporary directory, unmounted even on failure).
    #[test]
    fn purge_leaves_a_still_mounted_rootfs_alone() {
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let entry = tmp.path().join("c1.123");
        let rootfs = entry.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(entry.join("config.json"), "{}").unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &rootfs,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let guard = Unmount(rootfs.clone());
        std::fs::write(rootfs.join("image-file"), "keep").unwrap();
        purge(&entry);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("image-file")).unwrap(),
            "keep"
        );
        drop(guard);
        purge(&entry);
        assert!(!entry.exists());
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("abc-1_2.3"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id(&"a".repeat(65)));
    }

    #[test]
    fn top_row_parses_proc_files() {
        let stat = "42 (my (odd) cmd) S 7 42 42 0 -1";
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\n";
        let row = top_row(42, stat, status, b"sleep\x0010\x00");
        assert_eq!(row, ["1000", "42", "7", "sleep 10"]);
        let row = top_row(42, stat, status, b"");
        assert_eq!(row[3], "[my (odd) cmd]");
    }
}
