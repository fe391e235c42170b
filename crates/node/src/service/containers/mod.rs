//! Containers on this node: the rules of create, start, stop, restart policies, wait, remove
//! and exec, over the runtime crate. Records live in the state database; what a container
//! is doing right now comes from the runtime (and so from its shim), which survives daemon
//! restarts.
//!
//! ```text
//!  API --> ContainerService --spawn_blocking--> berth_runtime::Runtime --> shims
//!              |  records (redb), names, volumes, events
//!              +-- one monitor thread per running container: waits for its exit, then
//!                  records it, applies --rm and the restart policy, wakes `wait` callers
//! ```

pub mod config;
pub mod fs;
pub mod health;
pub mod list;
pub mod names;
pub mod record;
pub mod update;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_runtime::log_config::{LogConfig, LogDriver};
use berth_runtime::spec::{BindMount, ImageConfig, NetworkMode};
use berth_runtime::{CreateRequest, ExecOptions, Runtime, Status};
use bollard_stubs::models::ContainerCreateBody;
use tokio::sync::watch;

use self::config::{parse_create, validate_name, ContainerSpec, MountRequest, NetworkChoice};
use self::names::NameIndex;
use self::record::{ContainerRecord, ContainerState, ResolvedMount};
use super::events::{Event, EventBus};
use super::images::ImageService;
use super::networks::{AttachRequest, NameFiles, NetworkService};
use super::volumes::{random_hex64, CreateVolume, VolumeService};
use crate::error::ServiceError;
use crate::store::{Store, CONTAINERS};

/// Counters a `wait` watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Life {
    pub starts: u64,
    pub exits: u64,
    pub removed: bool,
    pub exit_code: i64,
    pub running: bool,
    /// Attach streams in progress: `--rm` waits for them before it removes the container
    /// (and its log, which they may still be reading).
    pub attachers: u32,
    /// Attach streams (with stdout or stderr) waiting for the next start: the start makes
    /// the shim hold the output until they are connected, so they miss none of it.
    pub awaiting_start: u32,
}

/// Counts an attach stream that waits for the container's start, until it is connected to
/// the shim or gives up (dropped).
#[derive(Debug)]
pub struct AwaitStartGuard {
    tx: watch::Sender<Life>,
}

impl Drop for AwaitStartGuard {
    fn drop(&mut self) {
        self.tx
            .send_modify(|l| l.awaiting_start = l.awaiting_start.saturating_sub(1));
    }
}

/// Counts an attach stream while it lives.
#[derive(Debug)]
pub struct AttachGuard {
    tx: watch::Sender<Life>,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        self.tx
            .send_modify(|l| l.attachers = l.attachers.saturating_sub(1));
    }
}

/// `wait`'s `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

impl WaitCondition {
    pub fn parse(s: Option<&str>) -> Result<Self, ServiceError> {
        match s.unwrap_or("") {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            other => Err(ServiceError::invalid(format!(
                "invalid condition: {other:?}"
            ))),
        }
    }
}

/// An exec instance: created by `POST /containers/{id}/exec`, run by `/exec/{id}/start`.
#[derive(Debug, Clone)]
pub struct ExecEntry {
    pub id: String,
    pub container: String,
    pub opts: ExecOptions,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// The runtime's exec id once started.
    pub runtime_id: Option<String>,
    pub running: bool,
    pub exit_code: Option<i64>,
    /// Why the process could not be started (exit code 126 then, as with Docker).
    pub start_error: Option<String>,
    /// The tty's first size (rows, columns), from the request's `ConsoleSize`.
    pub console_size: Option<(u16, u16)>,
}

/// What dockerd 20.10 makes of a process that could not be started (its
/// `translateContainerdStartErr`): the exit code it records, and whether the failure is
/// the client's (400: a command that is missing or cannot be executed) rather than the
/// daemon's (500). `cmd` is the process's executable as configured.
pub fn start_failure_code(cmd: &str, message: &str) -> (i64, bool) {
    let m = message.to_lowercase();
    if m.contains(&cmd.to_lowercase())
        && (m.contains("executable file not found")
            || m.contains("no such file or directory")
            || m.contains("system cannot find the file specified"))
    {
        return (127, true);
    }
    if m.contains("permission denied") {
        return (126, true);
    }
    if m.contains("not a directory") {
        return (127, true);
    }
    (128, false)
}

/// The message of a process start the runtime refused, in Docker's words: a failure of the
/// process itself (`exec: "x": executable file not found in $PATH`, a chdir, a user) after
/// `prefix` ("OCI runtime create failed", "OCI runtime exec failed"), other errors as they
/// are.
pub fn start_failure_message(prefix: &str, e: &berth_runtime::RuntimeError) -> String {
    use berth_runtime::RuntimeError as R;
    match e {
        R::ShimStart { message, .. } => {
            // libcontainer's chain ends in what the container's init reported.
            const INIT_SAYS: &str = "error in executing process : ";
            let detail = match message.rfind(INIT_SAYS) {
                Some(at) => &message[at + INIT_SAYS.len()..],
                None => message.as_str(),
            };
            format!("{prefix}: unable to start container process: {detail}")
        }
        e => e.to_string(),
    }
}

#[derive(Debug, Default)]
struct Table {
    names: NameIndex,
    records: BTreeMap<String, ContainerRecord>,
    lives: HashMap<String, watch::Sender<Life>>,
    execs: HashMap<String, ExecEntry>,
    /// Running health monitors by container ID.
    health_monitors: HashMap<String, health::MonitorHandle>,
}

#[derive(Debug)]
struct Inner {
    runtime: Arc<Runtime>,
    images: ImageService,
    volumes: VolumeService,
    networks: NetworkService,
    events: EventBus,
    store: Store,
    /// The daemon's default logging configuration (`--log-driver`, `--log-opt`).
    log_default: LogConfig,
    table: Mutex<Table>,
    /// For waiting on watch channels from blocking threads.
    handle: tokio::runtime::Handle,
    /// The init binary `--init` runs as PID 1 (tini), if the host has one.
    init_path: Option<PathBuf>,
}

/// The containers of this node.
#[derive(Debug, Clone)]
pub struct ContainerService {
    inner: Arc<Inner>,
}

/// Runs blocking runtime work off the async executor.
pub async fn blocking<T, F>(f: F) -> Result<T, ServiceError>
where
    F: FnOnce() -> Result<T, ServiceError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Exited => "exited",
    }
}

/// Signal names and numbers as `docker kill -s` accepts them.
pub fn parse_signal(s: &str) -> Result<i32, ServiceError> {
    if s.is_empty() {
        return Ok(libc::SIGKILL);
    }
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    berth_runtime::spec::signal_number(s)
        .ok_or_else(|| ServiceError::invalid(format!("Invalid signal: {s}")))
}

/// A container that uses an image (see [`ContainerService::image_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// Full container ID.
    pub container_id: String,
    /// Running, paused or restarting.
    pub running: bool,
}

/// Daemon-wide defaults the container service applies at create (berthd's flags and
/// daemon.json).
#[derive(Debug, Clone, Default)]
pub struct ContainerDefaults {
    /// The init binary `--init` runs as PID 1 (`--init-path`); `None`: `--init` is refused.
    pub init_path: Option<PathBuf>,
    /// The logging configuration of containers that name no driver (`--log-driver`,
    /// `--log-opt`).
    pub log: LogConfig,
}

impl ContainerService {
    /// Loads container records and starts watching every container that still runs.
    pub fn open(
        runtime: Arc<Runtime>,
        images: ImageService,
        volumes: VolumeService,
        networks: NetworkService,
        events: EventBus,
        store: Store,
        defaults: ContainerDefaults,
    ) -> Result<Self, ServiceError> {
        let ContainerDefaults {
            init_path,
            log: log_default,
        } = defaults;
        let mut table = Table::default();
        for (id, rec) in store.list::<ContainerRecord>(CONTAINERS)? {
            table.names.insert(&id, &rec.name)?;
            for m in rec.mounts.iter().filter(|m| m.kind == "volume") {
                let _ = volumes.acquire(&m.name, &id);
            }
            table
                .lives
                .insert(id.clone(), watch::channel(Life::default()).0);
            table.records.insert(id, rec);
        }
        Ok(ContainerService {
            inner: Arc::new(Inner {
                runtime,
                images,
                volumes,
                networks,
                events,
                store,
                log_default,
                table: Mutex::new(table),
                handle: tokio::runtime::Handle::current(),
                init_path,
            }),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` (a full container id) is a container of this daemon or one being
    /// created (its name reserved): the test for an overlay endpoint whose container was
    /// never made ([`crate::service::overlay_plane::container_endpoints`]).
    pub fn is_known(&self, id: &str) -> bool {
        self.table().names.resolve(id).is_ok_and(|full| full == id)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// After a daemon start: re-attach monitors to running containers, record exits that
    /// happened while the daemon was away, and apply restart policies.
    pub fn recover(&self) {
        let ids: Vec<String> = self.table().records.keys().cloned().collect();
        for id in ids {
            let info = match self.inner.runtime.inspect(&id) {
                Ok(i) => i,
                // A removal cut short: the runtime's part (state, rootfs snapshot) is gone,
                // the record was not deleted yet. The removal is finished, so no record
                // points at data that no longer exists.
                Err(berth_runtime::RuntimeError::NotFound { .. }) => {
                    let Some(rec) = self.table().records.get(&id).cloned() else {
                        continue;
                    };
                    tracing::warn!(container = %id, "finishing the removal of a container whose runtime state is gone (removal interrupted)");
                    match self.forget(&rec, false) {
                        Ok(()) => self.event("destroy", &rec, &[]),
                        Err(e) => {
                            tracing::warn!(container = %id, error = %e, "finish an interrupted removal")
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "container lost its runtime state");
                    continue;
                }
            };
            match info.status {
                Status::Running | Status::Paused => {
                    self.update(&id, |r| {
                        r.state.status = status_name(info.status).into();
                        r.state.pid = info.pid.unwrap_or(0) as u32;
                    });
                    self.set_life(&id, |l| l.running = true);
                    self.spawn_monitor(id.clone());
                    if info.status == Status::Running {
                        self.start_health_monitor(&id, true);
                    }
                }
                Status::Exited => {
                    let (policy, stopped, old_status) = {
                        let t = self.table();
                        let r = &t.records[&id];
                        (
                            r.spec.restart,
                            r.state.stopped_by_user,
                            r.state.status.clone(),
                        )
                    };
                    if old_status == "running" || old_status == "restarting" {
                        if let Some(e) = info.exit {
                            self.record_exit(
                                &id,
                                e.code as i64,
                                e.oom_killed,
                                e.finished_at,
                                e.cause,
                            );
                        }
                    }
                    if policy.start_on_boot(stopped)
                        || (old_status != "exited"
                            && policy.should_restart(
                                info.exit.map_or(0, |e| e.code as i64),
                                0,
                                stopped,
                            ))
                    {
                        let svc = self.clone();
                        std::thread::spawn(move || {
                            if let Err(e) = svc.start_blocking(&id) {
                                tracing::warn!(container = %id, error = %e, "restart on daemon start failed");
                            }
                        });
                    }
                }
                Status::Created => {}
            }
        }
        self.remove_orphans();
    }

    /// Removes what a daemon killed half-way through a create left without a record: a
    /// runtime container (its rootfs snapshot, state directory, shim) and a network
    /// namespace with its endpoints (addresses, veths, port rules). Nothing of a container
    /// that has a record is touched.
    fn remove_orphans(&self) {
        let known: std::collections::BTreeSet<String> =
            self.table().records.keys().cloned().collect();
        match self.inner.runtime.ids() {
            Ok(ids) => {
                for id in ids.into_iter().filter(|id| !known.contains(id)) {
                    tracing::warn!(container = %id, "removing a runtime container that has no record (interrupted create)");
                    if let Err(e) = self.inner.runtime.delete(&id, true) {
                        tracing::warn!(container = %id, error = %e, "remove orphaned runtime container");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "list runtime containers"),
        }
        for id in self.inner.networks.container_ids_with_state() {
            if !known.contains(&id) {
                tracing::warn!(container = %id, "releasing the network namespace and endpoints of a container that has no record (interrupted create)");
                self.inner.networks.detach_blocking(&id);
            }
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut ContainerRecord)) -> Option<ContainerRecord> {
        let mut t = self.table();
        let rec = t.records.get_mut(id)?;
        f(rec);
        let rec = rec.clone();
        drop(t);
        if let Err(e) = self.inner.store.put(CONTAINERS, id, &rec) {
            tracing::error!(container = %id, error = %e, "persisting container record");
        }
        Some(rec)
    }

    fn set_life(&self, id: &str, f: impl FnOnce(&mut Life)) {
        if let Some(tx) = self.table().lives.get(id) {
            tx.send_modify(f);
        }
    }

    fn event(&self, action: &str, rec: &ContainerRecord, extra: &[(&str, String)]) {
        let mut attrs: BTreeMap<String, String> = rec.labels.clone();
        attrs.insert("name".into(), rec.name.clone());
        attrs.insert("image".into(), rec.spec.image.clone());
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.inner
            .events
            .publish(Event::now("container", action, &rec.id, attrs));
    }

    /// Watches a container's starts, exits and removal.
    pub fn life(&self, id: &str) -> Result<watch::Receiver<Life>, ServiceError> {
        self.table()
            .lives
            .get(id)
            .map(|tx| tx.subscribe())
            .ok_or_else(|| ServiceError::not_found(format!("No such container: {id}")))
    }

    /// Records an endpoint added by `docker network connect`.
    pub fn add_endpoint(
        &self,
        id: &str,
        net: &berth_overlay_net::Network,
        ep: &berth_overlay_net::Endpoint,
    ) {
        let e = endpoint_record(net, ep);
        self.update(id, |r| r.endpoints.push(e));
    }

    /// Records an overlay endpoint added by `docker network connect`.
    pub fn add_overlay_endpoint(
        &self,
        id: &str,
        att: &crate::service::overlay_plane::OverlayAttachment,
    ) {
        let e = overlay_endpoint_record(att);
        self.update(id, |r| r.endpoints.push(e));
    }

    /// Forgets the swarm (overlay) endpoints of container `id`, or of every container when
    /// `None`: the endpoints on no local network. For a task that stopped (it was
    /// unplugged) and after this node left the swarm (the overlays are gone here), so
    /// inspect and `ps` show only what the container is still on, as dockerd does.
    pub async fn forget_swarm_endpoints(&self, id: Option<&str>) {
        let local = self.inner.networks.state().await;
        let swarm = |e: &record::Endpoint| !local.networks.contains_key(&e.network_id);
        let ids: Vec<String> = self
            .table()
            .records
            .iter()
            .filter(|(rid, r)| id.is_none_or(|id| id == *rid) && r.endpoints.iter().any(swarm))
            .map(|(rid, _)| rid.clone())
            .collect();
        for rid in ids {
            self.update(&rid, |r| r.endpoints.retain(|e| !swarm(e)));
        }
    }

    /// Forgets an endpoint removed by `docker network disconnect`.
    pub fn remove_endpoint(&self, id: &str, network_id: &str) {
        self.update(id, |r| r.endpoints.retain(|e| e.network_id != network_id));
    }

    /// Registers an attach stream that waits for the next start (see
    /// [`Life::awaiting_start`]); call before the client may send the start.
    pub fn await_start_guard(&self, id: &str) -> Result<AwaitStartGuard, ServiceError> {
        let tx = self
            .table()
            .lives
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("No such container: {id}")))?;
        tx.send_modify(|l| l.awaiting_start += 1);
        Ok(AwaitStartGuard { tx })
    }

    /// Registers an attach stream; `--rm` waits until it is dropped.
    pub fn attach_guard(&self, id: &str) -> Result<AttachGuard, ServiceError> {
        let tx = self
            .table()
            .lives
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("No such container: {id}")))?;
        tx.send_modify(|l| l.attachers += 1);
        Ok(AttachGuard { tx })
    }

    /// Resolves an ID, name or unique ID prefix.
    pub fn resolve(&self, key: &str) -> Result<String, ServiceError> {
        self.table().names.resolve(key)
    }

    /// The record, with its state refreshed from the runtime.
    /// This node's networks (the agent plugs task containers into overlays through it).
    pub fn networks(&self) -> &NetworkService {
        &self.inner.networks
    }

    pub fn get(&self, key: &str) -> Result<ContainerRecord, ServiceError> {
        let id = self.resolve(key)?;
        let mut rec = self
            .table()
            .records
            .get(&id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("No such container: {key}")))?;
        if let Ok(info) = self.inner.runtime.inspect(&id) {
            refresh_state(&mut rec.state, &info);
        }
        Ok(rec)
    }

    /// The overlay directories of a container's rootfs (ID, name or unique prefix): its
    /// upper dir and its image's layer dirs, top first (what
    /// [`berth_runtime::changes::changes`] and [`berth_runtime::changes::write_layer_tar`]
    /// take). 404 "No such container" for an unknown key.
    pub fn upper_and_lowers(&self, key: &str) -> Result<(PathBuf, Vec<PathBuf>), ServiceError> {
        let id = self.resolve(key)?;
        self.inner
            .runtime
            .upper_and_lowers(&id)
            .map_err(ServiceError::runtime)
    }

    /// The records of containers that carry label `key` (any value), as stored: their state
    /// is not refreshed from the runtime (cheap; for scans by label).
    pub fn with_label(&self, key: &str) -> Vec<ContainerRecord> {
        self.table()
            .records
            .values()
            .filter(|r| r.labels.contains_key(key))
            .cloned()
            .collect()
    }

    /// Every container, state refreshed.
    pub fn all(&self) -> Vec<ContainerRecord> {
        let mut recs: Vec<ContainerRecord> = self.table().records.values().cloned().collect();
        let infos: HashMap<String, berth_runtime::ContainerInfo> = self
            .inner
            .runtime
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        for r in &mut recs {
            if let Some(info) = infos.get(&r.id) {
                refresh_state(&mut r.state, info);
            }
        }
        recs.sort_by(|a, b| b.created.cmp(&a.created));
        recs
    }

    /// A container whose image is `image_id`, preferring a running one: its ID and whether
    /// it runs (running, paused or restarting). For `docker rmi`'s conflict messages.
    pub fn image_user(&self, image_id: &str) -> Option<ImageUser> {
        let t = self.table();
        let users = t.records.values().filter(|r| r.image_id == image_id);
        let mut first = None;
        for r in users {
            let running = matches!(r.state.status.as_str(), "running" | "paused" | "restarting");
            if running {
                return Some(ImageUser {
                    container_id: r.id.clone(),
                    running,
                });
            }
            first.get_or_insert_with(|| ImageUser {
                container_id: r.id.clone(),
                running,
            });
        }
        first
    }

    // ---- create ----------------------------------------------------------------------------

    /// Creates a container (blocking). Returns its ID and warnings.
    pub fn create_blocking(
        &self,
        name: Option<&str>,
        body: ContainerCreateBody,
    ) -> Result<(String, Vec<String>), ServiceError> {
        let requested_log = body
            .host_config
            .as_ref()
            .and_then(|h| h.log_config.clone())
            .unwrap_or_default();
        let mut spec = parse_create(body)?;
        // dockerd's merge with the daemon default, then its checks (400 with its message).
        spec.run.log = LogConfig::resolve(
            requested_log.typ.as_deref(),
            requested_log
                .config
                .unwrap_or_default()
                .into_iter()
                .collect(),
            &self.inner.log_default,
        )
        .map_err(|e| ServiceError::invalid(e.to_string()))?;
        let details = self
            .inner
            .images
            .inspect(&spec.image)
            .map_err(|e| match e {
                ServiceError::NotFound { .. } => {
                    ServiceError::not_found(format!("No such image: {}", spec.image))
                }
                e => e,
            })?;
        let image_cfg: ImageConfig = match &details.config {
            Some(c) => serde_json::from_value(c.clone()).unwrap_or_default(),
            None => ImageConfig::default(),
        };
        let id = random_hex64();
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => validate_name(n)?,
            None => self.table().names.generate_name(id.as_bytes()),
        };
        self.table().names.insert(&id, &name)?;
        let result = self.create_reserved(&id, &name, spec, &details, image_cfg);
        if result.is_err() {
            self.table().names.remove(&id);
            self.inner.networks.detach_blocking(&id);
            for (vname, anonymous) in self.volumes_of_failed(&id) {
                self.inner.volumes.release(&vname, &id);
                if anonymous {
                    let _ = self.inner.volumes.remove(&vname, true);
                }
            }
        }
        result.map(|()| (id, Vec::new()))
    }

    /// Resolves `--add-host`/`--dns*` into what the network files say (`host-gateway`
    /// becomes the default bridge's gateway).
    fn name_files(&self, r: &config::NameResolution) -> Result<NameFiles, ServiceError> {
        let mut extra_hosts = Vec::new();
        for h in &r.extra_hosts {
            let ip = match h.target {
                config::HostTarget::Ip(ip) => ip,
                config::HostTarget::HostGateway => self.inner.networks.host_gateway_blocking()?,
            };
            extra_hosts.push((h.name.clone(), ip));
        }
        Ok(NameFiles {
            extra_hosts,
            resolv: berth_overlay_net::ResolvConfOptions {
                nameservers: r.dns.clone(),
                search: r.dns_search.clone(),
                options: r.dns_options.clone(),
                embedded_dns: None,
            },
        })
    }

    fn volumes_of_failed(&self, id: &str) -> Vec<(String, bool)> {
        self.inner
            .volumes
            .list(&Default::default())
            .into_iter()
            .filter(|v| self.inner.volumes.users(&v.name).iter().any(|u| u == id))
            .map(|v| {
                let anon = v.is_anonymous();
                (v.name, anon)
            })
            .collect()
    }

    fn create_reserved(
        &self,
        id: &str,
        name: &str,
        mut spec: config::ContainerSpec,
        details: &berth_registry_mirror::ImageDetails,
        image_cfg: ImageConfig,
    ) -> Result<(), ServiceError> {
        // Mounts: volumes are created (or found) and taken into use; bind sources made.
        let mut resolved = Vec::new();
        let mut binds = Vec::new();
        for m in &spec.mounts {
            match m {
                MountRequest::Bind {
                    source,
                    destination,
                    read_only,
                } => {
                    if !source.exists() {
                        std::fs::create_dir_all(source)
                            .map_err(|e| ServiceError::io("create bind source", source, e))?;
                    }
                    binds.push(BindMount {
                        source: source.clone(),
                        destination: destination.clone(),
                        read_only: *read_only,
                    });
                    resolved.push(ResolvedMount {
                        kind: "bind".into(),
                        name: String::new(),
                        source: source.display().to_string(),
                        destination: destination.clone(),
                        read_write: !read_only,
                    });
                }
                MountRequest::Volume {
                    name: vname,
                    destination,
                    read_only,
                } => {
                    let v = self.inner.volumes.create(
                        CreateVolume {
                            name: vname.clone(),
                            ..Default::default()
                        },
                        &now_rfc3339(),
                    )?;
                    self.inner.volumes.acquire(&v.name, id)?;
                    binds.push(BindMount {
                        source: v.mountpoint.clone(),
                        destination: destination.clone(),
                        read_only: *read_only,
                    });
                    resolved.push(ResolvedMount {
                        kind: "volume".into(),
                        name: v.name.clone(),
                        source: v.mountpoint.display().to_string(),
                        destination: destination.clone(),
                        read_write: !read_only,
                    });
                }
            }
        }
        // Image volumes (VOLUME in the image config) get anonymous volumes.
        if let Some(vols) = details
            .config
            .as_ref()
            .and_then(|c| c.get("Volumes"))
            .and_then(|v| v.as_object())
        {
            for dst in vols.keys() {
                if resolved.iter().any(|m| &m.destination == dst) {
                    continue;
                }
                let v = self
                    .inner
                    .volumes
                    .create(CreateVolume::default(), &now_rfc3339())?;
                self.inner.volumes.acquire(&v.name, id)?;
                binds.push(BindMount {
                    source: v.mountpoint.clone(),
                    destination: dst.clone(),
                    read_only: false,
                });
                resolved.push(ResolvedMount {
                    kind: "volume".into(),
                    name: v.name,
                    source: v.mountpoint.display().to_string(),
                    destination: dst.clone(),
                    read_write: true,
                });
            }
        }
        // As dockerd: the short id, but on the host's network the host's own name.
        let host_name = || {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        };
        let hostname = spec
            .run
            .hostname
            .clone()
            .or_else(|| {
                (spec.network == NetworkChoice::Host)
                    .then(host_name)
                    .flatten()
            })
            .unwrap_or_else(|| id[..12].to_string());
        spec.run.hostname = Some(hostname.clone());
        let layers: Vec<String> = details
            .record
            .chain_ids()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let mut exposed = spec.exposed.clone();
        if let Some(ports) = details
            .config
            .as_ref()
            .and_then(|c| c.get("ExposedPorts"))
            .and_then(|v| v.as_object())
        {
            for p in ports.keys() {
                if let Ok(pp) = config::PortProto::parse(p) {
                    exposed.push(pp);
                }
            }
        }
        for p in &spec.ports {
            exposed.push(p.container);
        }
        exposed.sort();
        exposed.dedup();
        if spec.init {
            let init = self.inner.init_path.clone().ok_or_else(|| {
                ServiceError::invalid(
                    "HostConfig.Init: no init binary found on this host (install tini or start berthd with --init-path)",
                )
            })?;
            if !init.is_file() {
                return Err(ServiceError::invalid(format!(
                    "HostConfig.Init: init binary {} not found (berthd --init-path)",
                    init.display()
                )));
            }
            spec.run.init = Some(init);
        }
        spec.run.devices = spec
            .devices
            .iter()
            .map(device_node)
            .collect::<Result<_, _>>()?;
        let names = self.name_files(&spec.name_resolution)?;
        // Networking: a namespace of its own joined to a bridge network, the host's, or
        // one with only `lo`.
        let mut endpoints = Vec::new();
        let mut published = Vec::new();
        match &spec.network {
            NetworkChoice::Bridge | NetworkChoice::Named(_) => {
                let net_name = match &spec.network {
                    NetworkChoice::Named(n) => n.as_str(),
                    _ => "bridge",
                };
                let ports = port_requests(&spec, &exposed)?;
                let att = self.inner.networks.attach_blocking(AttachRequest {
                    container_id: id,
                    container_name: name,
                    hostname: &hostname,
                    domainname: &spec.domainname,
                    network: net_name,
                    aliases: spec.aliases.clone(),
                    ports,
                    names: &names,
                })?;
                spec.run.network = NetworkMode::Join(att.netns.clone());
                binds.push(BindMount {
                    source: att.hosts.clone(),
                    destination: "/etc/hosts".into(),
                    read_only: false,
                });
                binds.push(BindMount {
                    source: att.resolv_conf.clone(),
                    destination: "/etc/resolv.conf".into(),
                    read_only: false,
                });
                endpoints.extend(att.overlay.iter().map(overlay_endpoint_record));
                for (net, ep) in &att.endpoints {
                    endpoints.push(endpoint_record(net, ep));
                    for p in &ep.ports {
                        published.push(record::PublishedPort {
                            container: config::PortProto {
                                port: p.container_port,
                                proto: match p.protocol {
                                    berth_overlay_net::Protocol::Tcp => config::Protocol::Tcp,
                                    berth_overlay_net::Protocol::Udp => config::Protocol::Udp,
                                },
                            },
                            host_ip: p
                                .host_ip
                                .map_or_else(|| "0.0.0.0".to_string(), |a| a.to_string()),
                            host_port: p.host_port,
                        });
                    }
                }
            }
            NetworkChoice::Host | NetworkChoice::None => {
                let (hosts, resolv) = if spec.network == NetworkChoice::Host {
                    self.inner.networks.host_mode_files(id, &hostname, &names)?
                } else {
                    self.inner
                        .networks
                        .no_network_files(id, &hostname, &names)?
                };
                binds.push(BindMount {
                    source: hosts,
                    destination: "/etc/hosts".into(),
                    read_only: false,
                });
                binds.push(BindMount {
                    source: resolv,
                    destination: "/etc/resolv.conf".into(),
                    read_only: false,
                });
            }
        }
        spec.run.mounts = binds;
        let args = berth_runtime::spec::process_args(&image_cfg, &spec.run)
            .map_err(ServiceError::runtime)?;
        // `Config.Env` as dockerd shows it (its create-time merge): the client's entries as
        // sent (`-e FOO` with FOO unset included), then the image's for keys the client did
        // not set. The process's own environment (PATH default, HOSTNAME, TERM, unset keys
        // left out) is the runtime's `merge_env`.
        let env_key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
        let mut env = spec.run.env.clone();
        for e in image_cfg.env.iter().flatten() {
            if !spec.run.env.iter().any(|u| env_key(u) == env_key(e)) {
                env.push(e.clone());
            }
        }
        let mut labels: BTreeMap<String, String> = details
            .config
            .as_ref()
            .and_then(|c| c.get("Labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        labels.extend(spec.labels.clone());
        let healthcheck = health::Healthcheck::merged(
            spec.healthcheck.clone(),
            health::Healthcheck::from_image_config(details.config.as_ref()),
        );
        // `Config.Shell` for CMD-SHELL probes: the container's own, else the image's.
        let shell: Vec<String> = spec
            .request
            .shell
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                details
                    .config
                    .as_ref()
                    .and_then(|c| c.get("Shell"))
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
            })
            .unwrap_or_default();
        let req = CreateRequest {
            id: id.to_string(),
            layers,
            image: image_cfg.clone(),
            options: spec.run.clone(),
        };
        let info = self
            .inner
            .runtime
            .create(req)
            .map_err(ServiceError::runtime)?;
        let rec = ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            created: now_rfc3339(),
            image_id: details.id.to_string(),
            path: args.first().cloned().unwrap_or_default(),
            args: args.iter().skip(1).cloned().collect(),
            env,
            working_dir: spec
                .run
                .working_dir
                .clone()
                .or(image_cfg.working_dir.clone())
                .unwrap_or_default(),
            user: spec
                .run
                .user
                .clone()
                .or(image_cfg.user.clone())
                .unwrap_or_default(),
            hostname,
            labels,
            exposed,
            mounts: resolved,
            ports: published,
            endpoints,
            // dockerd shows a path only for json-file.
            log_path: if spec.run.log.driver == LogDriver::JsonFile {
                info.log_path.display().to_string()
            } else {
                String::new()
            },
            state: ContainerState {
                status: "created".into(),
                ..Default::default()
            },
            spec,
            healthcheck,
            shell,
        };
        if let Err(e) = self.inner.store.put(CONTAINERS, id, &rec) {
            let _ = self.inner.runtime.delete(id, true);
            return Err(e.into());
        }
        {
            let mut t = self.table();
            t.records.insert(id.to_string(), rec.clone());
            t.lives
                .insert(id.to_string(), watch::channel(Life::default()).0);
        }
        self.event("create", &rec, &[]);
        Ok(())
    }

    // ---- start, stop, kill -------------------------------------------------------------------

    /// Starts a created or exited container (blocking).
    pub fn start_blocking(&self, key: &str) -> Result<(), ServiceError> {
        let rec = self.get(key)?;
        let id = rec.id.clone();
        if rec.state.status == "running" || rec.state.status == "paused" {
            return Err(ServiceError::NotModified {
                message: format!("container {id} is already running"),
            });
        }
        let attachers = self
            .table()
            .lives
            .get(&id)
            .map_or(0, |tx| tx.borrow().awaiting_start);
        let info = match self.inner.runtime.start_attached(&id, attachers) {
            Ok(info) => info,
            Err(e) => return Err(self.start_failed(&rec, e)),
        };
        let rec = self
            .update(&id, |r| {
                r.state.status = "running".into();
                r.state.pid = info.pid.unwrap_or(0) as u32;
                r.state.started_at = info
                    .started_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                    .unwrap_or_else(now_rfc3339);
                r.state.finished_at.clear();
                r.state.exit_code = 0;
                r.state.oom_killed = false;
                r.state.error.clear();
                r.state.stopped_by_user = false;
            })
            .ok_or_else(|| ServiceError::not_found(format!("No such container: {key}")))?;
        self.set_life(&id, |l| {
            l.starts += 1;
            l.running = true;
        });
        // `ConsoleSize` of the create request: the tty's first size, as dockerd sets it.
        if let (true, Some([h, w])) = (
            rec.spec.run.tty,
            rec.spec
                .request
                .host_config
                .as_ref()
                .and_then(|h| h.console_size.as_deref()),
        ) {
            if *h > 0 && *w > 0 {
                let (h, w) = (
                    u16::try_from(*h).unwrap_or(u16::MAX),
                    u16::try_from(*w).unwrap_or(u16::MAX),
                );
                if let Err(e) = self.inner.runtime.resize(&id, h, w) {
                    tracing::debug!(%id, error = %e, "initial console size");
                }
            }
        }
        self.event("start", &rec, &[]);
        self.spawn_monitor(id.clone());
        self.start_health_monitor(&id, true);
        Ok(())
    }

    /// Records a start that failed as dockerd does: the error and an exit code (127 for a
    /// missing command, 126 for one that cannot be executed, else 128) on a container that
    /// stays as it was (`created`); `--rm` removes it. Returns the error for the client.
    fn start_failed(&self, rec: &ContainerRecord, e: berth_runtime::RuntimeError) -> ServiceError {
        use berth_runtime::RuntimeError as R;
        if matches!(
            e,
            R::NotFound { .. } | R::InvalidTransition { .. } | R::InvalidId { .. }
        ) {
            return ServiceError::runtime(e);
        }
        let message = start_failure_message("OCI runtime create failed", &e);
        let (code, clients_fault) = start_failure_code(&rec.path, &message);
        self.update(&rec.id, |r| {
            r.state.exit_code = code;
            r.state.error = message.clone();
            r.state.pid = 0;
        });
        if rec.spec.auto_remove {
            if let Err(err) = self.remove_blocking(&rec.id, true, true) {
                tracing::warn!(container = %rec.id, error = %err, "auto-remove after a failed start");
            }
        }
        if clients_fault {
            ServiceError::invalid(message)
        } else {
            ServiceError::Runtime(Box::new(e))
        }
    }

    fn spawn_monitor(&self, id: String) {
        let svc = self.clone();
        std::thread::Builder::new()
            .name(format!("monitor-{}", &id[..12.min(id.len())]))
            .spawn(move || svc.monitor(id))
            .expect("spawn monitor thread");
    }

    /// Waits for the container's exit, records it, then applies `--rm` and the restart
    /// policy. Runs on its own thread.
    fn monitor(&self, id: String) {
        loop {
            let exit = match self.inner.runtime.wait(&id, None) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "monitor: wait ended");
                    return;
                }
            };
            // Started again by someone else (restart) while we were waking up?
            if let Ok(info) = self.inner.runtime.inspect(&id) {
                if info.status.is_live() {
                    continue;
                }
            }
            let Some(rec) = self.record_exit(
                &id,
                exit.code as i64,
                exit.oom_killed,
                exit.finished_at,
                exit.cause,
            ) else {
                return;
            };
            if rec.spec.auto_remove {
                // Let attached clients read the whole output first.
                if let Ok(mut rx) = self.life(&id) {
                    self.inner.handle.block_on(async {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            rx.wait_for(|l| l.attachers == 0),
                        )
                        .await;
                    });
                }
                if let Err(e) = self.remove_blocking(&id, true, true) {
                    tracing::warn!(container = %id, error = %e, "auto-remove failed");
                }
                return;
            }
            let restarts = rec.state.restart_count;
            if !rec.spec.restart.should_restart(
                exit.code as i64,
                restarts,
                rec.state.stopped_by_user,
            ) {
                return;
            }
            self.update(&id, |r| r.state.status = "restarting".into());
            std::thread::sleep(Duration::from_millis(config::RestartPolicy::backoff_ms(
                restarts,
            )));
            let Ok(current) = self.get(&id) else { return };
            if current.state.stopped_by_user || current.state.status != "restarting" {
                return;
            }
            match self.inner.runtime.start(&id) {
                Ok(info) => {
                    let rec = self.update(&id, |r| {
                        r.state.status = "running".into();
                        r.state.pid = info.pid.unwrap_or(0) as u32;
                        r.state.started_at = now_rfc3339();
                        r.state.restart_count += 1;
                    });
                    self.set_life(&id, |l| {
                        l.starts += 1;
                        l.running = true;
                    });
                    if let Some(rec) = rec {
                        self.event("start", &rec, &[]);
                    }
                    self.start_health_monitor(&id, true);
                }
                Err(e) => {
                    self.update(&id, |r| {
                        r.state.status = "exited".into();
                        r.state.error = e.to_string();
                    });
                    return;
                }
            }
        }
    }

    fn record_exit(
        &self,
        id: &str,
        code: i64,
        oom: bool,
        finished: chrono::DateTime<chrono::Utc>,
        cause: Option<berth_runtime::ExitCause>,
    ) -> Option<ContainerRecord> {
        self.stop_health_monitor(id);
        let rec = self.update(id, |r| {
            if let Some(c) = cause {
                r.state.error = c.message().to_string();
            }
            r.state.status = "exited".into();
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.oom_killed = oom;
            r.state.finished_at = finished.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        })?;
        if oom {
            self.event("oom", &rec, &[]);
        }
        self.event("die", &rec, &[("exitCode", code.to_string())]);
        self.set_life(id, |l| {
            l.exits += 1;
            l.exit_code = code;
            l.running = false;
        });
        Some(rec)
    }

    /// Stops a container (blocking): its stop signal, SIGKILL after `timeout`.
    /// Stops a container (blocking): `signal` (`docker stop --signal`) or the container's
    /// stop signal, then SIGKILL after `timeout` (or the container's stop timeout).
    pub fn stop_blocking(
        &self,
        key: &str,
        timeout: Option<Duration>,
        signal: Option<i32>,
    ) -> Result<(), ServiceError> {
        let rec = self.get(key)?;
        if rec.state.status != "running" && rec.state.status != "paused" {
            if rec.state.status == "restarting" {
                self.update(&rec.id, |r| {
                    r.state.stopped_by_user = true;
                    r.state.status = "exited".into();
                });
                return Ok(());
            }
            return Err(ServiceError::NotModified {
                message: format!("container {} is not running", rec.id),
            });
        }
        self.update(&rec.id, |r| r.state.stopped_by_user = true);
        self.stop_health_monitor(&rec.id);
        if let Err(e) = self
            .inner
            .runtime
            .stop_with_signal(&rec.id, timeout, signal)
        {
            // Still running: keep probing it.
            self.start_health_monitor(&rec.id, false);
            return Err(ServiceError::runtime(e));
        }
        self.event("stop", &rec, &[]);
        self.wait_exit_recorded(&rec.id);
        Ok(())
    }

    /// Waits (briefly) until the monitor has recorded the exit, so a following inspect
    /// shows it.
    fn wait_exit_recorded(&self, id: &str) {
        let Some(mut rx) = self.table().lives.get(id).map(|tx| tx.subscribe()) else {
            return;
        };
        self.inner.handle.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| !l.running)).await;
        });
    }

    /// Sends `signal` to the container's init (blocking).
    pub fn kill_blocking(&self, key: &str, signal: &str) -> Result<(), ServiceError> {
        let sig = parse_signal(signal)?;
        let rec = self.get(key)?;
        if rec.state.status != "running" && rec.state.status != "paused" {
            return Err(ServiceError::conflict(format!(
                "Cannot kill container: {key}: container {} is not running",
                rec.id
            )));
        }
        if matches!(
            sig,
            libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGQUIT
        ) {
            self.update(&rec.id, |r| r.state.stopped_by_user = true);
        }
        self.inner
            .runtime
            .kill(&rec.id, sig)
            .map_err(ServiceError::runtime)?;
        self.event("kill", &rec, &[("signal", sig.to_string())]);
        if sig == libc::SIGKILL {
            self.wait_exit_recorded(&rec.id);
        }
        Ok(())
    }

    /// Stops (if running) and starts again (blocking).
    pub fn restart_blocking(
        &self,
        key: &str,
        timeout: Option<Duration>,
        signal: Option<i32>,
    ) -> Result<(), ServiceError> {
        match self.stop_blocking(key, timeout, signal) {
            Ok(()) | Err(ServiceError::NotModified { .. }) => {}
            Err(e) => return Err(e),
        }
        self.start_blocking(key)?;
        let rec = self.get(key)?;
        self.event("restart", &rec, &[]);
        Ok(())
    }

    pub fn pause_blocking(&self, key: &str, pause: bool) -> Result<(), ServiceError> {
        let rec = self.get(key)?;
        let r = if pause {
            self.inner.runtime.pause(&rec.id)
        } else {
            self.inner.runtime.unpause(&rec.id)
        };
        r.map_err(|e| match e {
            berth_runtime::RuntimeError::InvalidTransition { .. } => {
                ServiceError::conflict(if pause {
                    format!("Container {} is not running", rec.id)
                } else {
                    format!("Container {} is not paused", rec.id)
                })
            }
            e => ServiceError::runtime(e),
        })?;
        self.update(&rec.id, |r| {
            r.state.status = if pause { "paused" } else { "running" }.into()
        });
        // dockerd probes only running, unpaused containers.
        if pause {
            self.stop_health_monitor(&rec.id);
        } else {
            self.start_health_monitor(&rec.id, false);
        }
        self.event(if pause { "pause" } else { "unpause" }, &rec, &[]);
        Ok(())
    }

    // ---- wait, remove, rename --------------------------------------------------------------

    /// Waits for `condition`; returns the exit code.
    pub async fn wait(&self, key: &str, condition: WaitCondition) -> Result<i64, ServiceError> {
        let rec = self.get(key)?;
        let mut rx = self
            .table()
            .lives
            .get(&rec.id)
            .map(|tx| tx.subscribe())
            .ok_or_else(|| ServiceError::not_found(format!("No such container: {key}")))?;
        let start = rx.borrow_and_update().clone();
        let running = matches!(
            rec.state.status.as_str(),
            "running" | "paused" | "restarting"
        );
        if condition == WaitCondition::NotRunning && !running {
            return Ok(rec.state.exit_code);
        }
        loop {
            let life = rx.borrow_and_update().clone();
            let done = match condition {
                WaitCondition::NotRunning => life.exits > start.exits || life.removed,
                WaitCondition::NextExit => life.exits > start.exits || life.removed,
                WaitCondition::Removed => life.removed,
            };
            if done {
                return Ok(life.exit_code);
            }
            if rx.changed().await.is_err() {
                // Sender dropped: the container is gone.
                return Ok(rx.borrow().exit_code);
            }
        }
    }

    /// Removes a container (blocking). `volumes`: also its anonymous volumes.
    pub fn remove_blocking(
        &self,
        key: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), ServiceError> {
        let rec = self.get(key)?;
        let id = rec.id.clone();
        if matches!(
            rec.state.status.as_str(),
            "running" | "paused" | "restarting"
        ) && !force
        {
            return Err(ServiceError::conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                rec.name
            )));
        }
        // Transitional state, kept in memory only: the record is deleted right after, and
        // after a crash in between the runtime's view is what counts.
        if let Some(r) = self.table().records.get_mut(&id) {
            r.state.stopped_by_user |= force;
            r.state.status = "removing".into();
        }
        match self.inner.runtime.delete(&id, force) {
            Ok(()) | Err(berth_runtime::RuntimeError::NotFound { .. }) => {}
            Err(e) => {
                self.update(&id, |r| r.state.status = "dead".into());
                return Err(ServiceError::runtime(e));
            }
        }
        self.forget(&rec, volumes)?;
        self.event("destroy", &rec, &[]);
        Ok(())
    }

    /// The second half of a removal, once the runtime holds nothing of `rec`'s container:
    /// its network endpoints, its claims on volumes (anonymous ones removed when
    /// `volumes`), its record and its in-memory state go.
    ///
    /// # Errors
    /// The record store's, when the record cannot be deleted.
    fn forget(&self, rec: &ContainerRecord, volumes: bool) -> Result<(), ServiceError> {
        let id = rec.id.clone();
        self.inner.networks.detach_blocking(&id);
        for m in rec.mounts.iter().filter(|m| m.kind == "volume") {
            self.inner.volumes.release(&m.name, &id);
            if volumes {
                if let Ok(v) = self.inner.volumes.inspect(&m.name) {
                    if v.is_anonymous() {
                        let _ = self.inner.volumes.remove(&m.name, false);
                    }
                }
            }
        }
        self.inner.store.delete(CONTAINERS, &id)?;
        let life = {
            let mut t = self.table();
            t.records.remove(&id);
            t.names.remove(&id);
            t.execs.retain(|_, e| e.container != id);
            t.health_monitors.remove(&id);
            t.lives.remove(&id)
        };
        if let Some(tx) = life {
            tx.send_modify(|l| {
                l.removed = true;
                l.running = false;
            });
        }
        Ok(())
    }

    pub fn rename(&self, key: &str, new_name: &str) -> Result<(), ServiceError> {
        let new_name = validate_name(new_name)?;
        let rec = self.get(key)?;
        if rec.name == new_name {
            return Err(ServiceError::conflict(
                "Renaming a container with the same name as its current name",
            ));
        }
        self.table()
            .names
            .insert(&rec.id, &new_name)
            .map_err(|e| match e {
                // dockerd's wording for a rename onto a name in use.
                ServiceError::Conflict { message } => {
                    ServiceError::conflict(format!("Error when allocating new name: {message}"))
                }
                e => e,
            })?;
        let rec = self.update(&rec.id, |r| r.name = new_name.clone());
        if let Some(rec) = rec {
            self.event("rename", &rec, &[]);
        }
        Ok(())
    }

    /// `docker update`: checks `body` by Docker's rules (see [`update`]), applies the new
    /// limits to a running or paused container's cgroups, keeps them (and a new restart
    /// policy) in the record and the container's `config.json` for later starts, and emits
    /// the container `update` event. Answers the warnings (none so far).
    pub fn update_blocking(
        &self,
        key: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<String>, ServiceError> {
        let u = update::parse_update(body)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        update::verify(&u, cpus)?;
        let policy = update::restart_policy(&u)?;
        let rec = self.get(key)?;
        let id = rec.id.clone();
        let cannot = |m: &str| ServiceError::conflict(format!("Cannot update container {id}: {m}"));
        let mut hc = rec.spec.request.host_config.clone().unwrap_or_default();
        let mut res = rec.spec.run.resources.clone();
        let set = |v: Option<i64>| v.filter(|v| *v != 0);

        // container_unix.go UpdateContainer: conflicts with what is already set.
        let (old_quota, old_period) = (hc.cpu_quota.unwrap_or(0), hc.cpu_period.unwrap_or(0));
        let old_nano = hc.nano_cpus.unwrap_or(0);
        if old_nano > 0 && set(u.cpu_period).is_some() {
            return Err(cannot(
                "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
            ));
        }
        if old_nano > 0 && set(u.cpu_quota).is_some() {
            return Err(cannot(
                "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
            ));
        }
        if set(u.nano_cpus).is_some() && old_period > 0 {
            return Err(cannot(
                "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
            ));
        }
        if set(u.nano_cpus).is_some() && old_quota > 0 {
            return Err(cannot(
                "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
            ));
        }
        if let Some(m) = set(u.memory) {
            // An unset swap with a memory limit runs with unlimited swap here (no
            // memory.memsw limit is written), which Docker's rule treats as no conflict.
            let old_swap = match res.memory_swap {
                Some(s) => s,
                None if res.memory.is_some() => -1,
                None => 0,
            };
            if old_swap != -1 && m > old_swap && set(u.memory_swap).is_none() {
                return Err(cannot(
                    "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
                ));
            }
        }
        if policy.is_some() && rec.spec.auto_remove {
            return Err(cannot(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            ));
        }

        if let Some(m) = set(u.memory) {
            res.memory = Some(m);
            hc.memory = Some(m);
        }
        if let Some(s) = set(u.memory_swap) {
            res.memory_swap = Some(s);
            hc.memory_swap = Some(s);
        }
        if let (Some(m), Some(s)) = (res.memory, res.memory_swap) {
            if s != -1 && s < m {
                return Err(cannot(
                    "Minimum memoryswap limit should be larger than memory limit, see usage",
                ));
            }
        }
        if let Some(r) = set(u.memory_reservation) {
            res.memory_reservation = Some(r);
            hc.memory_reservation = Some(r);
        }
        if let Some(n) = set(u.nano_cpus) {
            res.nano_cpus = Some(n);
            hc.nano_cpus = Some(n);
        }
        if let Some(s) = set(u.cpu_shares) {
            res.cpu_shares = Some(s as u64);
            hc.cpu_shares = Some(s);
        }
        if set(u.cpu_quota).is_some() || set(u.cpu_period).is_some() {
            let quota = set(u.cpu_quota).or(hc.cpu_quota).unwrap_or(0);
            let period = set(u.cpu_period).or(hc.cpu_period).filter(|p| *p > 0);
            if quota <= 0 {
                return Err(ServiceError::invalid(
                    "HostConfig.CpuPeriod without HostConfig.CpuQuota is not supported by berth",
                ));
            }
            hc.cpu_quota = Some(quota);
            hc.cpu_period = period;
            res.nano_cpus = Some(quota * 1_000_000_000 / period.unwrap_or(100_000));
        }
        if let Some(c) = u.cpuset_cpus.clone().filter(|c| !c.is_empty()) {
            res.cpuset_cpus = Some(c.clone());
            hc.cpuset_cpus = Some(c);
        }
        if let Some(c) = u.cpuset_mems.clone().filter(|c| !c.is_empty()) {
            res.cpuset_mems = Some(c.clone());
            hc.cpuset_mems = Some(c);
        }
        if let Some(p) = u.pids_limit {
            res.pids_limit = Some(p).filter(|p| *p > 0);
            hc.pids_limit = Some(p);
        }
        if policy.is_some() {
            hc.restart_policy = u.restart_policy.clone();
        }

        let live = matches!(rec.state.status.as_str(), "running" | "paused");
        if res != rec.spec.run.resources {
            self.inner
                .runtime
                .update_resources(&id, &res, live)
                .map_err(ServiceError::runtime)?;
        }
        let rec = self.update(&id, |r| {
            r.spec.run.resources = res;
            r.spec.request.host_config = Some(hc);
            if let Some(p) = policy {
                r.spec.restart = p;
            }
        });
        if let Some(rec) = rec {
            self.event("update", &rec, &[]);
        }
        Ok(Vec::new())
    }

    /// Removes every stopped container; returns their IDs.
    /// Removes stopped containers for which `select(labels, created)` holds (`created` is
    /// the record's RFC 3339 creation time); returns their IDs.
    pub fn prune_blocking(
        &self,
        select: &dyn Fn(&BTreeMap<String, String>, &str) -> bool,
    ) -> Result<Vec<String>, ServiceError> {
        let mut removed = Vec::new();
        for rec in self.all() {
            if matches!(
                rec.state.status.as_str(),
                "running" | "paused" | "restarting"
            ) {
                continue;
            }
            if !select(&rec.labels, &rec.created) {
                continue;
            }
            match self.remove_blocking(&rec.id, false, false) {
                Ok(()) => removed.push(rec.id),
                Err(ServiceError::Conflict { .. }) | Err(ServiceError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    // ---- exec --------------------------------------------------------------------------------

    pub fn exec_create(&self, key: &str, entry: ExecEntry) -> Result<String, ServiceError> {
        let rec = self.get(key)?;
        if rec.state.status != "running" {
            return Err(ServiceError::conflict(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if entry.opts.cmd.is_empty() {
            return Err(ServiceError::invalid("No exec command specified"));
        }
        let id = random_hex64();
        self.table().execs.insert(
            id.clone(),
            ExecEntry {
                id: id.clone(),
                container: rec.id.clone(),
                ..entry
            },
        );
        self.event(
            &format!("exec_create: {}", entry_cmd(&self.table().execs[&id])),
            &rec,
            &[("execID", id.clone())],
        );
        Ok(id)
    }

    pub fn exec_get(&self, exec_id: &str) -> Result<ExecEntry, ServiceError> {
        self.table()
            .execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("No such exec instance: {exec_id}")))
    }

    /// Sets the tty size an exec process gets when it starts (`ConsoleSize` of exec start).
    pub fn exec_set_console_size(
        &self,
        exec_id: &str,
        size: (u16, u16),
    ) -> Result<(), ServiceError> {
        let mut t = self.table();
        let e = t
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| ServiceError::not_found(format!("No such exec instance: {exec_id}")))?;
        e.console_size = Some(size);
        Ok(())
    }

    /// Starts the exec'd process (blocking). `detach`: nobody attaches to its output.
    /// A process that cannot be started (missing command, working directory or user) is
    /// not an error here: the entry comes back with `start_error` set and exit code 126,
    /// for the attach stream to report as Docker does.
    pub fn exec_start_blocking(
        &self,
        exec_id: &str,
        detach: bool,
    ) -> Result<ExecEntry, ServiceError> {
        use berth_runtime::RuntimeError as R;
        let entry = self.exec_get(exec_id)?;
        if entry.runtime_id.is_some() || entry.start_error.is_some() {
            return Err(ServiceError::conflict(format!(
                "exec {exec_id} has already been started"
            )));
        }
        let mut opts = entry.opts.clone();
        opts.detached = detach || !(entry.attach_stdout || entry.attach_stderr);
        let started = match self.inner.runtime.exec(&entry.container, &opts) {
            Ok(rid) => Ok(rid),
            Err(
                e @ (R::NotFound { .. }
                | R::InvalidTransition { .. }
                | R::InvalidId { .. }
                | R::NoCommand),
            ) => return Err(ServiceError::runtime(e)),
            Err(e) => Err(start_failure_message("OCI runtime exec failed", &e)),
        };
        if let (true, Some((h, w)), Ok(rid)) = (entry.opts.tty, entry.console_size, &started) {
            if let Err(e) = self.inner.runtime.exec_resize(&entry.container, rid, h, w) {
                tracing::debug!(exec = %exec_id, error = %e, "initial console size");
            }
        }
        let mut t = self.table();
        let e = t
            .execs
            .get_mut(exec_id)
            .ok_or_else(|| ServiceError::not_found(format!("No such exec instance: {exec_id}")))?;
        match started {
            Ok(rid) => {
                e.runtime_id = Some(rid);
                e.running = true;
            }
            Err(message) => {
                e.start_error = Some(message);
                e.exit_code = Some(126);
            }
        }
        let e = e.clone();
        drop(t);
        if e.running {
            if let Ok(rec) = self.get(&e.container) {
                self.event(
                    &format!("exec_start: {}", entry_cmd(&e)),
                    &rec,
                    &[("execID", e.id.clone())],
                );
            }
        }
        Ok(e)
    }

    /// Waits for an exec'd process and records its exit code (blocking).
    pub fn exec_wait_blocking(&self, exec_id: &str) -> Result<i64, ServiceError> {
        let entry = self.exec_get(exec_id)?;
        let rid = entry.runtime_id.ok_or_else(|| {
            ServiceError::conflict(format!("exec {exec_id} has not been started"))
        })?;
        let code = loop {
            match self
                .inner
                .runtime
                .exec_wait(&entry.container, &rid, None)
                .map_err(ServiceError::runtime)?
            {
                Some(e) => break e.code as i64,
                None => continue,
            }
        };
        if let Some(e) = self.table().execs.get_mut(exec_id) {
            e.running = false;
            e.exit_code = Some(code);
        }
        if let Ok(rec) = self.get(&entry.container) {
            self.event(
                "exec_die",
                &rec,
                &[
                    ("execID", exec_id.to_string()),
                    ("exitCode", code.to_string()),
                ],
            );
        }
        Ok(code)
    }
}

/// An exec's command line as dockerd's `exec_create: ...` and `exec_start: ...` events
/// show it.
fn entry_cmd(e: &ExecEntry) -> String {
    e.opts.cmd.join(" ")
}

/// The `-p` and `-P` requests of a container for the network driver.
/// The node `--device` makes: the host device's type, numbers, mode and owner.
fn device_node(d: &config::DeviceRequest) -> Result<berth_runtime::spec::DeviceNode, ServiceError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let host = &d.path_on_host;
    let md = std::fs::metadata(host).map_err(|e| {
        ServiceError::invalid(format!(
            "error gathering device information while adding custom device {:?}: {e}",
            host.display()
        ))
    })?;
    let kind = if md.file_type().is_char_device() {
        'c'
    } else if md.file_type().is_block_device() {
        'b'
    } else {
        return Err(ServiceError::invalid(format!(
            "HostConfig.Devices: {:?} is not a device node (directories of devices are not supported by berth)",
            host.display()
        )));
    };
    let dev = md.rdev();
    Ok(berth_runtime::spec::DeviceNode {
        path: d.path_in_container.clone(),
        kind,
        major: (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as i64,
        minor: ((dev & 0xff) | ((dev >> 12) & !0xff)) as i64,
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        access: d.permissions.clone(),
    })
}

fn port_requests(
    spec: &ContainerSpec,
    exposed: &[config::PortProto],
) -> Result<Vec<berth_overlay_net::PortRequest>, ServiceError> {
    use berth_overlay_net::{PortRequest, Protocol};
    let proto = |p: config::Protocol| match p {
        config::Protocol::Tcp => Protocol::Tcp,
        config::Protocol::Udp => Protocol::Udp,
    };
    let mut out = Vec::new();
    for p in &spec.ports {
        let host_ip = match p.host_ip {
            None => None,
            Some(std::net::IpAddr::V4(a)) if a.is_unspecified() => None,
            Some(std::net::IpAddr::V4(a)) => Some(a),
            Some(std::net::IpAddr::V6(a)) if a.is_unspecified() => continue,
            Some(std::net::IpAddr::V6(a)) => {
                return Err(ServiceError::invalid(format!(
                    "publishing on IPv6 address {a} is not supported"
                )))
            }
        };
        out.push(PortRequest {
            host_ip,
            host_port: p.host_port,
            container_port: p.container.port,
            protocol: proto(p.container.proto),
        });
    }
    if spec.publish_all {
        for e in exposed {
            if !spec.ports.iter().any(|p| p.container == *e) {
                out.push(PortRequest::publish_all(e.port, proto(e.proto)));
            }
        }
    }
    Ok(out)
}

/// The record of an endpoint, as inspect shows it.
pub fn endpoint_record(
    net: &berth_overlay_net::Network,
    ep: &berth_overlay_net::Endpoint,
) -> record::Endpoint {
    let mac = ep.mac_address();
    record::Endpoint {
        network: net.name.clone(),
        network_id: net.id.clone(),
        endpoint_id: ep.id.clone(),
        ip_address: ep.address.to_string(),
        prefix_len: net.pool.subnet.prefix(),
        gateway: net.pool.gateway.to_string(),
        mac_address: mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        aliases: ep.aliases.clone(),
    }
}

/// The record of an overlay endpoint (inspect's `NetworkSettings.Networks.<name>`).
pub fn overlay_endpoint_record(
    att: &crate::service::overlay_plane::OverlayAttachment,
) -> record::Endpoint {
    record::Endpoint {
        network: att.network.spec.name.clone(),
        network_id: att.network.id.clone(),
        endpoint_id: att.endpoint_id.clone(),
        ip_address: att.ip.to_string(),
        prefix_len: att.network.subnet_net().len,
        gateway: if att.network.spec.internal {
            String::new()
        } else {
            att.network.gateway.to_string()
        },
        mac_address: att
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        aliases: att.aliases.clone(),
    }
}

fn refresh_state(state: &mut ContainerState, info: &berth_runtime::ContainerInfo) {
    let observed = status_name(info.status);
    // The daemon's own transitional states win over the runtime's view.
    if matches!(state.status.as_str(), "restarting" | "removing" | "dead") && observed == "exited" {
        return;
    }
    state.status = observed.into();
    state.pid = info.pid.unwrap_or(0).max(0) as u32;
    if let Some(t) = info.started_at {
        state.started_at = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    }
    if info.status == Status::Exited {
        if let Some(e) = info.exit {
            state.exit_code = e.code as i64;
            state.oom_killed = e.oom_killed;
            state.finished_at = e
                .finished_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            if let Some(c) = e.cause {
                state.error = c.message().into();
            }
        }
    }
}

#[cfg(test)]
mod start_failure_tests {
    use super::*;

    #[test]
    fn start_failures_get_dockers_exit_codes() {
        let not_found = r#"OCI runtime create failed: unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#;
        assert_eq!(start_failure_code("nosuchcmd", not_found), (127, true));
        let stat = r#"unable to start container process: exec: "/bin/topsy": stat /bin/topsy: no such file or directory"#;
        assert_eq!(start_failure_code("/bin/topsy", stat), (127, true));
        let dir = r#"unable to start container process: exec: "/etc": permission denied"#;
        assert_eq!(start_failure_code("/etc", dir), (126, true));
        assert_eq!(
            start_failure_code("sh", "cgroup: out of memory"),
            (128, false)
        );
    }

    #[test]
    fn shim_messages_lose_libcontainers_chain() {
        let e = berth_runtime::RuntimeError::ShimStart {
            id: "c1".into(),
            message: r#"libcontainer create for c1: failed to create container: exec process failed with error error in executing process : exec: "x": executable file not found in $PATH"#.into(),
        };
        assert_eq!(
            start_failure_message("OCI runtime create failed", &e),
            r#"OCI runtime create failed: unable to start container process: exec: "x": executable file not found in $PATH"#
        );
        let user = berth_runtime::RuntimeError::UnknownUser {
            user: "nobody2".into(),
        };
        assert_eq!(
            start_failure_message("OCI runtime exec failed", &user),
            "unable to find user nobody2: no matching entries in passwd file"
        );
    }
}
