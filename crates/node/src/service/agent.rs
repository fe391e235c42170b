//! The node agent: runs the tasks the cluster assigned to this node on the local runtime
//! and reports their observed status (swarmkit's agent and executor).
//!
//! Owns: this node's heartbeat to the leader, its reported description
//! (`SetNodeDescription`), one worker per assigned task that drives its container through
//! the task states (pull, create, start, watch its exit, stop, remove) and reports every
//! state change (`UpdateTaskStatus`, the only writer of a task's status), the removal of
//! task containers whose task is gone, and the start and stop of these loops (and of the
//! leader loop, [`super::orchestrator`]) with the cluster.
//!
//! Does not own: what the container of a task is ([`super::task_spec`]), images
//! ([`super::images`]), containers ([`super::containers`]), desired state (the leader).
//!
//! ```text
//!  ClusterService phase ──> supervisor ──┬─ heartbeat every 250 ms ──> leader
//!   (active / inactive / left)           ├─ description ─> SetNodeDescription (when it changes)
//!                                        ├─ orchestrator::run (acts on the leader only)
//!                                        └─ tasks: applied_watch ──> local state ──> my tasks
//!                                              ├─ worker per task: pull ─> create ─> start ─> wait
//!                                              │     └─ UpdateTaskStatus per state change
//!                                              └─ containers of vanished tasks ─> removed
//! ```
//!
//! Task containers outlive berthd: berthd's shutdown stops these loops but not the
//! containers, and after a restart each worker finds its task's container by the
//! `com.docker.swarm.task.id` label: a running one is adopted as it is (not restarted, not
//! reported again), one that exited meanwhile is reported. Leaving the cluster removes
//! this node's task containers, as Swarm does.
//!
//! Liveness numbers (heartbeat every 250 ms, down after 1.5 s, 3 s grace after a leader
//! change) and why: see [`super::orchestrator`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_consensus::{ClusterNode, Command, ConsensusError, NodeDescription, NodeId};
use berth_orchestrator::{Service, Task, TaskState, TaskStatus};
use berth_registry_mirror::Credentials;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::cluster::{node_id_str, ClusterPhase, ClusterService};
use super::containers::health::HealthStatus;
use super::containers::{blocking, ContainerService, WaitCondition};
use super::images::ImageService;
use super::orchestrator::unix_nanos;
use super::overlay_plane::OverlayAttachment;
use super::task_spec::TaskNetworkMode;
use crate::error::ServiceError;

/// The label naming a task container's task (what marks a container as a task: `ps --filter is-task`).
pub const TASK_ID_LABEL: &str = "com.docker.swarm.task.id";
/// The label naming the node a task container was created for.
pub const NODE_ID_LABEL: &str = "com.docker.swarm.node.id";
/// Swarm's default `StopGracePeriod`.
const DEFAULT_STOP_GRACE: Duration =
    Duration::from_nanos(berth_orchestrator::spec::DEFAULT_STOP_GRACE_PERIOD);
/// How long one heartbeat may take before the next is sent.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// The task loop re-reads the state at least this often (retries of cleanups).
const TASKS_EVERY: Duration = Duration::from_secs(2);

/// Facts about this engine that its node description reports.
#[derive(Debug, Clone)]
pub struct EngineFacts {
    /// Online CPUs (as `docker info` `NCPU`).
    pub cpus: u64,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// berthd's version.
    pub version: String,
    /// The daemon's `--label`s (`labels` in daemon.json): `engine.labels.*` constraints.
    pub labels: BTreeMap<String, String>,
    /// `uname -m` (`x86_64`, `aarch64`): reported as it is, as Docker's node API shows
    /// `Description.Platform.Architecture`.
    pub machine: String,
}

impl EngineFacts {
    /// What this node reports with `SetNodeDescription`.
    pub fn description(&self) -> NodeDescription {
        NodeDescription {
            os: "linux".into(),
            architecture: self.machine.clone(),
            nano_cpus: self.cpus.saturating_mul(1_000_000_000),
            memory_bytes: self.memory_bytes,
            engine_version: self.version.clone(),
            engine_labels: self.labels.clone(),
        }
    }
}

/// What the agent needs from the rest of the daemon.
#[derive(Debug, Clone)]
pub struct Agent {
    /// This node's containers.
    pub containers: ContainerService,
    /// This node's images (task images are pulled through it).
    pub images: ImageService,
    /// What the node description says.
    pub engine: Arc<EngineFacts>,
    /// Where tasks' secret and config files are mounted from (tmpfs per task).
    pub task_files: super::task_files::TaskFiles,
}

/// Starts the supervisor: while the cluster is active it runs the heartbeat, the
/// description, the task loop and the leader loop; when the cluster stops (daemon
/// shutdown, or before a leave) it stops them, leaving task containers alone; after this
/// node left the cluster it removes this node's task containers.
pub fn spawn(cluster: ClusterService, agent: Agent) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut phase = cluster.phase_watch();
        // (generation, the loops of that generation).
        let mut running: Option<(u64, JoinSet<()>)> = None;
        loop {
            let current = phase.borrow_and_update().clone();
            match current {
                ClusterPhase::Active(generation) => {
                    if running.as_ref().map(|(g, _)| *g) != Some(generation) {
                        running = None;
                        if let Some(node) = cluster.node() {
                            let mut set = JoinSet::new();
                            set.spawn(heartbeat_loop(node.clone()));
                            set.spawn(describe_loop(node.clone(), agent.engine.clone()));
                            set.spawn(task_loop(agent.clone(), node.clone()));
                            set.spawn(super::orchestrator::run(node));
                            running = Some((generation, set));
                        }
                    }
                }
                ClusterPhase::Inactive => running = None,
                ClusterPhase::Left { node_id } => {
                    running = None;
                    agent.remove_task_containers(&node_id_str(node_id)).await;
                    // The overlay plane tears the swarm's networks down here.
                    agent.containers.forget_swarm_endpoints(None).await;
                }
            }
            // The loops run until the phase changes; one that ends on its own panicked
            // (a bug): say so loudly, the others keep running.
            loop {
                let ended = async {
                    match running.as_mut() {
                        Some((_, set)) if !set.is_empty() => set.join_next().await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = phase.changed() => {
                        if r.is_err() {
                            return;
                        }
                        break;
                    }
                    Some(r) = ended => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "a cluster loop of this node stopped");
                        }
                    }
                }
            }
        }
    })
}

/// Tells the leader this node is alive, every `Dispatcher.HeartbeatPeriod` of the
/// replicated cluster settings (read again before each beat, so `docker swarm update
/// --dispatcher-heartbeat` takes effect at the next one).
async fn heartbeat_loop(node: Arc<ClusterNode>) {
    loop {
        let sent = tokio::time::Instant::now();
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, node.heartbeat()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat failed"),
            Err(_) => tracing::debug!("heartbeat not answered within 1 s"),
        }
        let period = node
            .state_view()
            .read(|s: &berth_consensus::ClusterState| s.settings.heartbeat_period());
        tokio::time::sleep_until(sent + period).await;
    }
}

/// Reports this node's description whenever the replicated one differs from it (at start,
/// after an engine upgrade or label change, after a state restore).
async fn describe_loop(node: Arc<ClusterNode>, engine: Arc<EngineFacts>) {
    let me = node.id();
    let want = engine.description();
    let mut applied = node.applied_watch();
    let mut backoff = Duration::from_millis(250);
    loop {
        let have = node
            .state_view()
            .read(|s| s.nodes.get(&me).map(|n| n.description.clone()));
        // `None`: this node's record has not reached its replica yet (just joined).
        if matches!(&have, Some(d) if d.as_ref() != Some(&want)) {
            let write = node.write(Command::SetNodeDescription {
                id: me,
                description: want.clone(),
            });
            match tokio::time::timeout(Duration::from_secs(10), write).await {
                // Applied on the leader; this replica may still lag: wait for it below.
                Ok(Ok(_)) => backoff = Duration::from_millis(250),
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "reporting the node description failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(_) => {
                    tracing::info!("reporting the node description: no answer in 10 s");
                    continue;
                }
            }
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// A task as its worker sees it: the record and its service (gone after a removal).
#[derive(Debug, Clone, PartialEq)]
struct TaskView {
    task: Task,
    service: Option<Service>,
}

/// Keeps one worker per task assigned to this node and removes the containers of tasks
/// that no longer exist.
async fn task_loop(agent: Agent, node: Arc<ClusterNode>) {
    let me = node.id();
    let me_str = node_id_str(me);
    let mut applied = node.applied_watch();
    let mut workers: HashMap<String, watch::Sender<TaskView>> = HashMap::new();
    let mut set = JoinSet::new();
    // Task ids at the last cleanup, and when it ran: the containers are listed again when
    // a task record went away, else every TASKS_EVERY (a retry after a failed removal).
    let mut cleaned: Option<(HashSet<String>, std::time::Instant)> = None;
    loop {
        let (mine, all_ids) = node.state_view().read(|s| {
            let mine: Vec<TaskView> = s
                .tasks
                .values()
                .filter(|t| t.node_id == Some(me))
                .map(|t| TaskView {
                    task: t.clone(),
                    service: s.services.get(&t.service_id).cloned(),
                })
                .collect();
            let all: HashSet<String> = s.tasks.keys().cloned().collect();
            (mine, all)
        });
        // Tasks of this node that ended (their container must not run: a `docker restart`
        // of it would otherwise leave a task-less container serving, holding its ports).
        let ended: HashSet<String> = mine
            .iter()
            .filter(|v| v.task.status.state > TaskState::Running)
            .map(|v| v.task.id.clone())
            .collect();
        let mut present = HashSet::new();
        for view in mine {
            let id = view.task.id.clone();
            present.insert(id.clone());
            match workers.get(&id) {
                Some(tx) => {
                    tx.send_if_modified(|old| {
                        let changed = *old != view;
                        if changed {
                            *old = view;
                        }
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(view);
                    set.spawn(
                        Worker {
                            agent: agent.clone(),
                            node: node.clone(),
                            me,
                            rx,
                            reported: TaskState::New,
                        }
                        .run(),
                    );
                    workers.insert(id, tx);
                }
            }
        }
        // A task gone from the state: its worker ends when its sender is dropped.
        workers.retain(|id, _| present.contains(id));
        while let Some(r) = set.try_join_next() {
            if let Err(e) = r {
                if e.is_panic() {
                    tracing::error!(error = %e, "task worker panicked");
                }
            }
        }
        let due = match &cleaned {
            None => true,
            Some((ids, at)) => {
                at.elapsed() >= TASKS_EVERY || ids.iter().any(|id| !all_ids.contains(id))
            }
        };
        if due {
            agent.remove_vanished(&me_str, &all_ids).await;
            agent.stop_ended(&me_str, &ended).await;
            agent.release_phantom_endpoints(&node).await;
            let files = agent.task_files.clone();
            let keep = present.clone();
            let _ = blocking(move || {
                files.sweep(&keep);
                Ok(())
            })
            .await;
            cleaned = Some((all_ids, std::time::Instant::now()));
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(TASKS_EVERY) => {}
        }
    }
}

impl Agent {
    /// Releases this node's overlay endpoints whose container was never made
    /// ([`container_endpoints`](super::overlay_plane::container_endpoints) whose container
    /// [`ContainerService::is_known`] does not know).
    async fn release_phantom_endpoints(&self, node: &ClusterNode) {
        let Some(plane) = self.containers.networks().overlay() else {
            return;
        };
        let me = node.id();
        // The state's read lock is not held while the container table is consulted; an
        // endpoint read here was written after its container's name was reserved, so a
        // container being created counts as known.
        let mine = node
            .state_view()
            .read(|s| super::overlay_plane::container_endpoints(s, me));
        let phantoms = mine
            .into_iter()
            .filter(|(_, cid)| !self.containers.is_known(cid))
            .map(|(ep, _)| ep)
            .collect::<Vec<_>>();
        for ep in phantoms {
            tracing::info!(endpoint = %ep, "releasing an overlay endpoint whose container was never made");
            plane.release_endpoint(&ep).await;
        }
    }

    /// Task containers of node `node` (id string) as (container id, task id).
    fn task_containers(&self, node: &str) -> Vec<(String, String)> {
        self.containers
            .all()
            .into_iter()
            .filter(|c| c.labels.get(NODE_ID_LABEL).map(String::as_str) == Some(node))
            .filter_map(|c| Some((c.id.clone(), c.labels.get(TASK_ID_LABEL)?.clone())))
            .collect()
    }

    /// The container of task `task_id`, if one exists on this node.
    fn task_container_of(&self, task_id: &str) -> Option<String> {
        self.containers
            .all()
            .into_iter()
            .find(|c| c.labels.get(TASK_ID_LABEL).map(String::as_str) == Some(task_id))
            .map(|c| c.id)
    }

    /// Removes this node's task containers whose task is no longer in the state (history
    /// trimmed, service removed and its records deleted).
    async fn remove_vanished(&self, me: &str, tasks: &HashSet<String>) {
        let svc = self.containers.clone();
        let me = me.to_string();
        let tasks = tasks.clone();
        let this = self.clone();
        let _ = blocking(move || {
            for (cid, task) in this.task_containers(&me) {
                if tasks.contains(&task) {
                    continue;
                }
                match svc.remove_blocking(&cid, true, true) {
                    Ok(()) => {
                        tracing::info!(container = %cid, task = %task, "removed the container of a task that no longer exists")
                    }
                    Err(ServiceError::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(container = %cid, task = %task, error = %e, "removing a task container")
                    }
                }
            }
            Ok(())
        })
        .await;
    }

    /// Stops this node's running task containers whose task ended (`ended`: failed,
    /// complete, shut down...): nothing of the task should run any more, and the
    /// orchestrator has replaced it.
    async fn stop_ended(&self, me: &str, ended: &HashSet<String>) {
        if ended.is_empty() {
            return;
        }
        let this = self.clone();
        let me = me.to_string();
        let ended = ended.clone();
        let _ = blocking(move || {
            for (cid, task) in this.task_containers(&me) {
                if !ended.contains(&task) {
                    continue;
                }
                let running = this
                    .containers
                    .get(&cid)
                    .is_ok_and(|r| matches!(r.state.status.as_str(), "running" | "paused"));
                if !running {
                    continue;
                }
                match this.containers.stop_blocking(&cid, Some(DEFAULT_STOP_GRACE), None) {
                    Ok(()) => {
                        tracing::info!(container = %cid, task = %task, "stopped the container of an ended task")
                    }
                    Err(ServiceError::NotFound { .. } | ServiceError::NotModified { .. }) => {}
                    Err(e) => {
                        tracing::warn!(container = %cid, task = %task, error = %e, "stopping an ended task's container")
                    }
                }
            }
            Ok(())
        })
        .await;
    }

    /// After leaving the cluster: removes every task container of node `node`.
    async fn remove_task_containers(&self, node: &str) {
        let this = self.clone();
        let node = node.to_string();
        let _ = blocking(move || {
            for (cid, task) in this.task_containers(&node) {
                if let Err(e) = this.containers.remove_blocking(&cid, true, true) {
                    tracing::warn!(container = %cid, task = %task, error = %e, "removing a task container after leaving the cluster");
                }
            }
            this.task_files.sweep(&HashSet::new());
            Ok(())
        })
        .await;
    }
}

/// What a task's worker does next, from the task's desired state and the highest state
/// observed for it (reported by this worker or read from the cluster state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Wanted running (or run to completion) and not there yet: pull, create, start, or
    /// resume with the container that exists.
    BringUp,
    /// Running: wait for the container's exit.
    WatchExit,
    /// Desired `Shutdown` and still not terminal: stop the container, report `Shutdown`.
    Shutdown,
    /// Desired `Remove`: stop, report `Shutdown` if not terminal yet (`report`), remove the
    /// container.
    Remove {
        /// Whether `Shutdown` still has to be reported.
        report: bool,
    },
    /// Nothing to do until the task changes (terminal, kept as history).
    Idle,
}

fn next_action(desired: TaskState, observed: TaskState) -> Action {
    match desired {
        // Held (a stop-first replacement waiting for the task it replaces to stop):
        // prepared up to `Ready` (image pulled, container created), not started.
        TaskState::Ready if observed < TaskState::Ready => Action::BringUp,
        TaskState::Ready if observed >= TaskState::Running && !observed.is_terminal() => {
            Action::WatchExit
        }
        TaskState::Running | TaskState::Complete if !observed.is_terminal() => {
            if observed < TaskState::Running {
                Action::BringUp
            } else {
                Action::WatchExit
            }
        }
        TaskState::Remove => Action::Remove {
            report: !observed.is_terminal(),
        },
        d if d >= TaskState::Shutdown && !observed.is_terminal() => Action::Shutdown,
        _ => Action::Idle,
    }
}

/// Drives one task's container and reports its states. Only this worker writes the task's
/// status, one state change per write, always forward.
struct Worker {
    agent: Agent,
    node: Arc<ClusterNode>,
    me: NodeId,
    rx: watch::Receiver<TaskView>,
    /// The highest state this worker reported or saw in the state.
    reported: TaskState,
}

/// How one step of bringing a task up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Go on.
    Done,
    /// The task's desired state moved away from running (or the report was refused):
    /// re-evaluate.
    Changed,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let view = self.rx.borrow_and_update().clone();
            self.reported = self.reported.max(view.task.status.state);
            match next_action(view.task.desired_state, self.reported) {
                Action::BringUp => {
                    let before = self.reported;
                    if let Err(gone) = self.bring_up(&view).await {
                        tracing::debug!(task = %view.task.id, reason = %gone, "task worker ends");
                        return;
                    }
                    // No progress (its service is gone, the desired state moved): wait for
                    // the task to change instead of trying again at once.
                    if self.reported == before && self.rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Action::WatchExit => {
                    if !self.watch_exit(&view).await {
                        return;
                    }
                    continue;
                }
                Action::Remove { report } => {
                    // Stopped and reported first (the task no longer runs once its
                    // container does not), then removed.
                    self.stop(&view).await;
                    self.unplug(&view).await;
                    if report {
                        let mut s = self.status(TaskState::Shutdown, "shutdown");
                        s.container_id = view.task.status.container_id.clone();
                        self.report(&view.task, s).await;
                    }
                    if let Some(cid) = self.agent.task_container_of(&view.task.id) {
                        let svc = self.agent.containers.clone();
                        if let Err(e) =
                            blocking(move || svc.remove_blocking(&cid, true, true)).await
                        {
                            tracing::warn!(task = %view.task.id, error = %e, "removing a task container");
                        }
                    }
                }
                Action::Shutdown => {
                    self.stop(&view).await;
                    self.unplug(&view).await;
                    let mut s = self.status(TaskState::Shutdown, "shutdown");
                    s.container_id = view.task.status.container_id.clone();
                    self.report(&view.task, s).await;
                }
                Action::Idle => {}
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// A running task: waits for its container's exit (reported as the task's end) or a
    /// change of the task record. `false`: the task is gone.
    async fn watch_exit(&mut self, view: &TaskView) -> bool {
        let Some(cid) = self.agent.task_container_of(&view.task.id) else {
            let mut s = self.status(TaskState::Failed, "started");
            s.err = Some("task: the container was removed".into());
            self.report(&view.task, s).await;
            return true;
        };
        let containers = self.agent.containers.clone();
        tokio::select! {
            // Swarm's executor: an unhealthy container is stopped and its task fails.
            HealthOutcome::Unhealthy = health_change(&containers, &cid, false) => {
                self.fail_unhealthy(view, &cid).await;
                true
            }
            code = containers.wait(&cid, WaitCondition::NotRunning) => {
                // Desired state may have moved on while we waited: then the stop was ours
                // and the exit is not the task's end.
                let desired = self.rx.borrow().task.desired_state;
                if matches!(desired, TaskState::Running | TaskState::Complete) {
                    let s = self.exit_status(&cid, code.unwrap_or(-1));
                    self.unplug(view).await;
                    self.report(&view.task, s).await;
                }
                true
            }
            r = self.rx.changed() => r.is_ok(),
        }
    }

    /// Takes the task from wherever it is (assigned, or part way after a restart) to
    /// running, reusing a container that already exists for it. `Err`: the task is gone.
    async fn bring_up(&mut self, view: &TaskView) -> Result<(), String> {
        let task = &view.task;
        if let Some(cid) = self.agent.task_container_of(&task.id) {
            return self.resume(view, cid).await;
        }
        if self
            .step(task, TaskState::Accepted, "accepted", None)
            .await?
            == Step::Changed
        {
            return Ok(());
        }
        if self
            .step(task, TaskState::Preparing, "preparing", None)
            .await?
            == Step::Changed
        {
            return Ok(());
        }
        let Some(service) = view.service.as_ref() else {
            // The service is gone: its tasks are about to be removed.
            return Ok(());
        };
        let credentials = super::services::pull_credentials(service);
        if let Err(e) = self.pull(&task.image, credentials).await {
            let mut s = self.status(TaskState::Rejected, "preparing");
            s.err = Some(e);
            self.report(task, s).await;
            return Ok(());
        }
        let me = node_id_str(self.me);
        let gateway_bridge = match self.gateway_bridge(service).await {
            Ok(g) => g,
            Err(e) => {
                let mut s = self.status(TaskState::Rejected, "preparing");
                s.err = Some(e.to_string());
                self.report(task, s).await;
                return Ok(());
            }
        };
        let network = match &gateway_bridge {
            _ if self.uses_host_network(service) => TaskNetworkMode::Host,
            Some(name) => TaskNetworkMode::Network(name),
            None => TaskNetworkMode::DefaultBridge,
        };
        let created = match super::task_spec::task_container(service, task, &me, network) {
            Ok((name, mut body)) => match self.mount_task_files(service, task, &mut body).await {
                Err(e) => Err(e),
                Ok(()) => {
                    let svc = self.agent.containers.clone();
                    blocking(move || {
                        let body = super::containers::config::create_body_from_json(body)?;
                        svc.create_blocking(Some(&name), body)
                    })
                    .await
                }
            },
            Err(e) => Err(e),
        };
        let cid = match created {
            Ok((cid, _warnings)) => cid,
            Err(e) => {
                let mut s = self.status(TaskState::Rejected, "preparing");
                s.err = Some(e.to_string());
                self.report(task, s).await;
                return Ok(());
            }
        };
        self.resume(view, cid).await
    }

    /// Puts the task's secret and config files on its tmpfs and adds their bind mounts to
    /// the create `body`. The values come from the leader (secrets only for this node's
    /// task whose service references them), over the cluster's mTLS transport, into
    /// memory and the tmpfs only.
    async fn mount_task_files(
        &self,
        service: &Service,
        task: &Task,
        body: &mut serde_json::Value,
    ) -> Result<(), ServiceError> {
        use berth_consensus::ObjectKind;
        let refs = super::task_spec::task_files(&service.spec)?;
        if refs.is_empty() {
            return Ok(());
        }
        let mut values = std::collections::HashMap::new();
        for kind in [ObjectKind::Secret, ObjectKind::Config] {
            let mut ids: Vec<String> = refs
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| r.id.clone())
                .collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                continue;
            }
            let for_task = (kind == ObjectKind::Secret).then(|| task.id.clone());
            let opened =
                self.node
                    .open_objects(kind, ids, for_task)
                    .await
                    .map_err(|e| match e {
                        ConsensusError::Rejected(r) => super::objects::rejection_error(r),
                        e => super::cluster::cluster_error(e),
                    })?;
            for (id, v) in opened {
                values.insert((kind, id), v);
            }
        }
        let files: Vec<super::task_files::TaskFile> = refs
            .iter()
            .map(|r| super::task_files::TaskFile {
                target: r.target.clone(),
                data: values
                    .get(&(r.kind, r.id.clone()))
                    .cloned()
                    .unwrap_or_default(),
                uid: r.uid,
                gid: r.gid,
                mode: r.mode,
            })
            .collect();
        for mut v in values.into_values() {
            v.fill(0);
        }
        let tf = self.agent.task_files.clone();
        let task_id = task.id.clone();
        let mounts = blocking(move || tf.prepare(&task_id, &files)).await?;
        let host_config = body.as_object_mut().map(|o| {
            o.entry("HostConfig")
                .or_insert_with(|| serde_json::json!({}))
        });
        if let Some(hc) = host_config.and_then(serde_json::Value::as_object_mut) {
            let list = hc
                .entry("Mounts")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if list.is_null() {
                *list = serde_json::Value::Array(Vec::new());
            }
            if let Some(a) = list.as_array_mut() {
                a.extend(mounts);
            }
        }
        Ok(())
    }

    /// Continues with an existing container `cid`: created -> start it; running -> report
    /// it running; exited -> report the exit.
    async fn resume(&mut self, view: &TaskView, cid: String) -> Result<(), String> {
        let task = &view.task;
        let rec = match self.agent.containers.get(&cid) {
            Ok(r) => r,
            Err(e) => {
                // Removed under our feet: the next change of the task tries again.
                tracing::warn!(task = %task.id, container = %cid, error = %e, "task container vanished");
                return Ok(());
            }
        };
        match rec.state.status.as_str() {
            "running" | "paused" | "restarting" => {
                if self.reported < TaskState::Running
                    && !self.healthy_or_reported(view, &cid).await?
                {
                    return Ok(());
                }
                let mut s = self.status(TaskState::Running, "started");
                s.container_id = Some(cid);
                s.pid = Some(rec.state.pid);
                self.report(task, s).await;
                return Ok(());
            }
            "created" => {}
            _ => {
                let s = self.exit_status(&cid, rec.state.exit_code);
                self.report(task, s).await;
                return Ok(());
            }
        }
        if self
            .step(task, TaskState::Ready, "prepared", Some(&cid))
            .await?
            == Step::Changed
        {
            return Ok(());
        }
        if self
            .step(task, TaskState::Starting, "starting", Some(&cid))
            .await?
            == Step::Changed
        {
            return Ok(());
        }
        if let Err(e) = self.plug(task, &cid).await {
            let mut s = self.status(TaskState::Failed, "starting");
            // Docker's executor wording.
            s.err = Some(format!("starting container failed: {e}"));
            s.container_id = Some(cid);
            self.report(task, s).await;
            return Ok(());
        }
        let svc = self.agent.containers.clone();
        let id = cid.clone();
        let started = blocking(move || svc.start_blocking(&id)).await;
        if started.is_ok() && !self.healthy_or_reported(view, &cid).await? {
            return Ok(());
        }
        let rec = self.agent.containers.get(&cid).ok();
        let mut s = match started {
            Ok(()) => {
                let mut s = self.status(TaskState::Running, "started");
                s.pid = rec.as_ref().map(|r| r.state.pid);
                s
            }
            Err(e) => {
                let mut s = self.status(TaskState::Failed, "starting");
                // Docker's executor wording.
                s.err = Some(format!("starting container failed: {e}"));
                s.exit_code = Some(rec.as_ref().map_or(-1, |r| r.state.exit_code));
                s
            }
        };
        s.container_id = Some(cid);
        self.report(task, s).await;
        Ok(())
    }

    /// Reports `state` unless already past it; `Changed` when the desired state no longer
    /// asks for a running task.
    async fn step(
        &mut self,
        task: &Task,
        state: TaskState,
        message: &str,
        cid: Option<&str>,
    ) -> Result<Step, String> {
        let desired = self.rx.borrow().task.desired_state;
        let wanted = match desired {
            TaskState::Running | TaskState::Complete => true,
            // Held: up to `Ready`, no further until the desired state moves on.
            TaskState::Ready => state <= TaskState::Ready,
            _ => false,
        };
        if !wanted {
            return Ok(Step::Changed);
        }
        if self.reported >= state {
            return Ok(Step::Done);
        }
        let mut s = self.status(state, message);
        s.container_id = cid.map(str::to_string);
        if self.report(task, s).await {
            Ok(Step::Done)
        } else if self.rx.has_changed().is_err() {
            Err("task deleted".into())
        } else {
            Ok(Step::Changed)
        }
    }

    /// Pulls `image` unless it is pinned to a digest this node has; a failed pull is fine
    /// when the image exists locally (as Swarm's executor does). `Err`: the pull's error.
    async fn pull(&self, image: &str, credentials: Credentials) -> Result<(), String> {
        let reference = ImageService::parse_reference(image).map_err(|e| e.to_string())?;
        let local = self.agent.images.inspect(image).is_ok();
        if local && reference.digest().is_some() {
            return Ok(());
        }
        let progress = |_e: berth_registry_mirror::PullEvent| {};
        match self
            .agent
            .images
            .pull(&reference, None, credentials, &progress)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if local => {
                tracing::info!(image, error = %e, "pulling a task image failed; using the local one");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Plugs task container `cid` into the overlays the task has addresses on
    /// ([`OverlayPlane::attach_task`](super::overlay_plane::OverlayPlane::attach_task),
    /// after its node-local bridge `eth0`), and points its resolv.conf at the embedded DNS
    /// of its first non-ingress overlay. Nothing to do for a task without networks.
    async fn plug(&self, task: &Task, cid: &str) -> Result<(), ServiceError> {
        let networks = self.agent.containers.networks();
        let service = self
            .node
            .state_view()
            .read(|s| s.services.get(&task.service_id).cloned());
        if service.as_ref().is_some_and(|s| self.uses_host_network(s)) {
            // In the node's own namespace: no overlay to join, the host's resolv.conf.
            return Ok(());
        }
        let Some(plane) = networks.overlay() else {
            return Ok(());
        };
        let netns = networks.netns_path(cid);
        let attached = plane.attach_task(&task.id, &netns, 1).await?;
        // What inspect and `ps --filter network=` show of the task: its overlays.
        let aliases = service
            .as_ref()
            .map(|s| super::task_spec::service_attachments(&s.spec))
            .unwrap_or_default();
        for a in &attached {
            let endpoint = OverlayAttachment {
                network: a.network.clone(),
                endpoint_id: berth_consensus::state::task_endpoint_id(&task.id, &a.network.id),
                ip: a.ip,
                mac: a.mac,
                aliases: aliases
                    .iter()
                    .filter(|n| n.target == a.network.id || n.target == a.network.spec.name)
                    .flat_map(|n| n.aliases.clone())
                    .collect(),
            };
            self.agent.containers.add_overlay_endpoint(cid, &endpoint);
        }
        let own = || attached.iter().filter(|a| !a.network.spec.ingress);
        if let Some(a) = own()
            .find(|a| !a.network.spec.internal)
            .or_else(|| own().next())
        {
            if let Err(e) = networks.point_resolv_at(cid, a.network.gateway) {
                plane.detach_all(&netns).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The gateway bridge a task of `service` joins (made on first need): for a task on
    /// overlay networks that names neither of Swarm's predefined networks, as Swarm's
    /// `docker_gwbridge`; `None` otherwise (the default bridge, or the node's network).
    async fn gateway_bridge(&self, service: &Service) -> Result<Option<String>, ServiceError> {
        let wants = self.node.state_view().read(|s| {
            s.service_predefined_networks(&service.spec).is_empty()
                && s.service_networks(&service.spec)
                    .is_ok_and(|nets| !nets.is_empty())
        });
        if !wants {
            return Ok(None);
        }
        self.agent
            .containers
            .networks()
            .ensure_gateway_bridge()
            .await
            .map(Some)
    }

    /// Whether the service's tasks run on the node's network (`--network host`).
    fn uses_host_network(&self, service: &Service) -> bool {
        self.node
            .state_view()
            .read(|s| s.service_uses_host_network(&service.spec))
    }

    /// Unplugs the task's container from every overlay (it stopped: its addresses stop
    /// answering; they are released with the task record).
    async fn unplug(&self, view: &TaskView) {
        let Some(cid) = self.agent.task_container_of(&view.task.id) else {
            return;
        };
        let networks = self.agent.containers.networks();
        if let Some(plane) = networks.overlay() {
            plane.detach_all(&networks.netns_path(&cid)).await;
        }
        self.agent
            .containers
            .forget_swarm_endpoints(Some(&cid))
            .await;
    }

    /// Stops the task's container (its `StopGracePeriod`, default 10 s) if it runs.
    async fn stop(&self, view: &TaskView) {
        let Some(cid) = self.agent.task_container_of(&view.task.id) else {
            return;
        };
        let grace = view
            .service
            .as_ref()
            .and_then(|s| s.spec["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"].as_u64())
            .map_or(DEFAULT_STOP_GRACE, Duration::from_nanos);
        let svc = self.agent.containers.clone();
        match blocking(move || svc.stop_blocking(&cid, Some(grace), None)).await {
            Ok(()) | Err(ServiceError::NotModified { .. }) | Err(ServiceError::NotFound { .. }) => {
            }
            Err(e) => tracing::warn!(task = %view.task.id, error = %e, "stopping a task container"),
        }
    }

    /// A started container with a health check stays `starting` until its first
    /// `healthy` (Swarm's executor), so that an update counts it as running only then.
    /// `Ok(true)`: report it running now (healthy, or no health check). `Ok(false)`: its
    /// end is already reported (unhealthy: stopped and failed; exited: its exit) or the
    /// task changed (the run loop re-evaluates). `Err`: the task is gone (the worker ends).
    async fn healthy_or_reported(&mut self, view: &TaskView, cid: &str) -> Result<bool, String> {
        let outcome = tokio::select! {
            o = health_change(&self.agent.containers, cid, true) => o,
            r = self.rx.changed() => {
                return match r {
                    Ok(()) => Ok(false),
                    Err(_) => Err("task deleted".into()),
                }
            }
        };
        match outcome {
            HealthOutcome::Healthy => Ok(true),
            HealthOutcome::Unhealthy => {
                self.fail_unhealthy(view, cid).await;
                Ok(false)
            }
            HealthOutcome::Exited(code) => {
                let s = self.exit_status(cid, code);
                self.unplug(view).await;
                self.report(&view.task, s).await;
                Ok(false)
            }
        }
    }

    /// Stops the task's unhealthy container `cid` and reports the task failed with
    /// Swarm's error (`unhealthy container`, moby's executor `ErrContainerUnhealthy`).
    async fn fail_unhealthy(&mut self, view: &TaskView, cid: &str) {
        tracing::info!(task = %view.task.id, container = %cid, "task container unhealthy: stopping it");
        self.stop(view).await;
        self.unplug(view).await;
        let mut s = self.status(TaskState::Failed, "started");
        s.err = Some(UNHEALTHY.into());
        s.container_id = Some(cid.to_string());
        if let Ok(rec) = self.agent.containers.get(cid) {
            s.exit_code = Some(rec.state.exit_code);
        }
        self.report(&view.task, s).await;
    }

    fn status(&self, state: TaskState, message: &str) -> TaskStatus {
        TaskStatus::new(state, unix_nanos(), message)
    }

    /// The status of a task whose container exited with `code`: `Complete` for 0, else
    /// `Failed` with Swarm's error.
    fn exit_status(&self, cid: &str, code: i64) -> TaskStatus {
        let mut s = if code == 0 {
            self.status(TaskState::Complete, "finished")
        } else {
            let mut s = self.status(TaskState::Failed, "started");
            s.err = Some(format!("task: non-zero exit ({code})"));
            s
        };
        s.exit_code = Some(code);
        s.container_id = Some(cid.to_string());
        s
    }

    /// Writes `status` for `task`: retried with backoff while the cluster cannot take it
    /// (no leader); `false` when refused (the task is gone, or the state already past it).
    async fn report(&mut self, task: &Task, status: TaskStatus) -> bool {
        let state = status.state;
        let mut backoff = Duration::from_millis(100);
        loop {
            let write = self.node.write(Command::UpdateTaskStatus {
                task_id: task.id.clone(),
                node_id: self.me,
                status: status.clone(),
            });
            match write.await {
                Ok(_) => {
                    tracing::debug!(task = %task.id, state = state.as_str(), "task status reported");
                    self.reported = self.reported.max(state);
                    return true;
                }
                Err(ConsensusError::Rejected(why)) => {
                    tracing::debug!(task = %task.id, state = state.as_str(), reason = %why, "task status refused");
                    self.reported = self.reported.max(state);
                    return false;
                }
                Err(e) => {
                    tracing::debug!(task = %task.id, error = %e, "reporting task status; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Waits for the health of container `cid` to decide: `Healthy` at once when it has no
/// health check (or, `until_healthy` false, never), `Unhealthy` when a check fails its
/// retries, `Exited` when it stops running first. Polls the container's record every
/// [`HEALTH_POLL`] (health is recorded there by the container's monitor).
async fn health_change(
    containers: &ContainerService,
    cid: &str,
    until_healthy: bool,
) -> HealthOutcome {
    let checked = containers
        .get(cid)
        .is_ok_and(|r| r.healthcheck.as_ref().is_some_and(|h| h.enabled()));
    if !checked && !until_healthy {
        // Nothing to watch: the caller waits for the exit.
        return std::future::pending().await;
    }
    loop {
        let rec = containers.get(cid).ok();
        let observed = rec.as_ref().map(|r| ObservedHealth {
            running: matches!(r.state.status.as_str(), "running" | "paused" | "restarting"),
            exit_code: r.state.exit_code,
            checked: r.healthcheck.as_ref().is_some_and(|h| h.enabled()),
            status: r.state.health.as_ref().map(|h| h.status),
        });
        if let Some(outcome) = health_outcome(observed, until_healthy) {
            return outcome;
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// Swarm's task error for a container that turned unhealthy (moby
/// `daemon/cluster/executor/container/errors.go`, `ErrContainerUnhealthy`).
pub const UNHEALTHY: &str = "unhealthy container";
/// How often a task worker reads its container's health.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// What decides a task container's health wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealthOutcome {
    /// Healthy (or nothing to check).
    Healthy,
    /// Its health check failed its retries.
    Unhealthy,
    /// It stopped running (with this exit code) first.
    Exited(i64),
}

/// A task container's state as the health wait reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ObservedHealth {
    running: bool,
    exit_code: i64,
    /// It has an enabled health check.
    checked: bool,
    /// `State.Health.Status`, once its monitor recorded one.
    status: Option<HealthStatus>,
}

/// The outcome `observed` decides, if any (`None`: keep waiting). `until_healthy`: a
/// healthy (or unchecked) container ends the wait; otherwise only unhealthy or an exit
/// does. A vanished container counts as exited with -1.
fn health_outcome(observed: Option<ObservedHealth>, until_healthy: bool) -> Option<HealthOutcome> {
    let Some(o) = observed else {
        return Some(HealthOutcome::Exited(-1));
    };
    if o.checked && o.status == Some(HealthStatus::Unhealthy) {
        return Some(HealthOutcome::Unhealthy);
    }
    if !o.running {
        return Some(HealthOutcome::Exited(o.exit_code));
    }
    let healthy = !o.checked || o.status == Some(HealthStatus::Healthy);
    (until_healthy && healthy).then_some(HealthOutcome::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_task_runs_once_healthy_and_fails_when_unhealthy() {
        let o = |running, checked, status| {
            Some(ObservedHealth {
                running,
                exit_code: 3,
                checked,
                status,
            })
        };
        use HealthStatus::*;
        // No health check: running at once; watched only for its exit.
        assert_eq!(
            health_outcome(o(true, false, None), true),
            Some(HealthOutcome::Healthy)
        );
        assert_eq!(health_outcome(o(true, false, None), false), None);
        // Checked: starting until the first healthy.
        assert_eq!(health_outcome(o(true, true, None), true), None);
        assert_eq!(health_outcome(o(true, true, Some(Starting)), true), None);
        assert_eq!(
            health_outcome(o(true, true, Some(Healthy)), true),
            Some(HealthOutcome::Healthy)
        );
        assert_eq!(health_outcome(o(true, true, Some(Healthy)), false), None);
        // Unhealthy, starting or running: fails.
        for until_healthy in [true, false] {
            assert_eq!(
                health_outcome(o(true, true, Some(Unhealthy)), until_healthy),
                Some(HealthOutcome::Unhealthy)
            );
        }
        // Exited first; vanished.
        assert_eq!(
            health_outcome(o(false, true, Some(Starting)), true),
            Some(HealthOutcome::Exited(3))
        );
        assert_eq!(health_outcome(None, false), Some(HealthOutcome::Exited(-1)));
    }

    #[test]
    fn a_task_is_brought_up_watched_stopped_or_removed_by_its_states() {
        use TaskState::*;
        for observed in [Assigned, Accepted, Preparing, Ready, Starting] {
            assert_eq!(next_action(Running, observed), Action::BringUp);
            // Jobs run to completion the same way.
            assert_eq!(next_action(Complete, observed), Action::BringUp);
        }
        assert_eq!(next_action(Running, Running), Action::WatchExit);
        assert_eq!(next_action(Complete, Running), Action::WatchExit);
        for done in [Complete, Failed, Rejected, Shutdown] {
            // A stopped task is history: its replacement is another task.
            assert_eq!(next_action(Running, done), Action::Idle);
            assert_eq!(next_action(Shutdown, done), Action::Idle);
            assert_eq!(next_action(Remove, done), Action::Remove { report: false });
        }
        assert_eq!(next_action(Shutdown, Running), Action::Shutdown);
        // Replaced before it even started (its node was lost): reported shut down.
        assert_eq!(next_action(Shutdown, Assigned), Action::Shutdown);
        assert_eq!(
            next_action(Remove, Running),
            Action::Remove { report: true }
        );
        // Held at `Ready` (stop-first): prepared, then nothing until it may start.
        for observed in [Assigned, Accepted, Preparing] {
            assert_eq!(next_action(Ready, observed), Action::BringUp);
        }
        assert_eq!(next_action(Ready, Ready), Action::Idle);
        assert_eq!(next_action(Ready, Failed), Action::Idle);
    }

    #[test]
    fn description_reports_capacity_in_swarm_units() {
        let facts = EngineFacts {
            cpus: 4,
            memory_bytes: 8 << 30,
            version: "0.1.0".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            machine: "x86_64".into(),
        };
        let d = facts.description();
        assert_eq!(d.os, "linux");
        // As Docker's node API shows it; the leader loop normalises for scheduling.
        assert_eq!(d.architecture, "x86_64");
        assert_eq!(d.nano_cpus, 4_000_000_000);
        assert_eq!(d.memory_bytes, 8 << 30);
        assert_eq!(d.engine_labels["zone"], "a");
        assert_eq!(d.engine_version, "0.1.0");
    }
}
