//! The replicated objects of the services model (swarmkit's, as Docker's API shows it):
//! [`Service`] and [`Task`], the task state machine ([`TaskState`]), and the typed view of
//! a Docker `ServiceSpec` that orchestration reads ([`ServiceSpec`]).
//!
//! These are stored in the Raft state by `berth-consensus` and changed only by its pure
//! `apply`. Times are unix nanoseconds chosen by the driver and carried in commands, so
//! every replica computes the same objects.
//!
//! Writers (swarmkit's rule): a task's `desired_state` is written only by managers (the
//! leader's reconciler and scheduler, or a service removal); its `status` only by the agent
//! of the node it is assigned to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Raft node id (as `berth-consensus` defines it).
pub type NodeId = u64;
/// Unix time in nanoseconds.
pub type Nanos = u64;

/// A service as stored in the cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// 25 lowercase base-36 characters, as swarmkit's ids.
    pub id: String,
    /// The `ServiceSpec` JSON exactly as the client sent it (Docker API `ServiceSpec`).
    pub spec: serde_json::Value,
    /// The spec before the last update (`PreviousSpec`, for rollback); `None` until updated.
    pub previous_spec: Option<serde_json::Value>,
    /// The image reference every task runs: the spec's image pinned to the digest the
    /// manager resolved at create/update time (`name:tag@sha256:...`), or the spec's image
    /// unchanged when it could not be resolved.
    pub image: String,
    /// Log index of the command that last changed the service (Docker's `Version.Index`).
    pub version: u64,
    /// When it was created.
    pub created_at: Nanos,
    /// When its spec last changed.
    pub updated_at: Nanos,
    /// Jobs only: bumped by every update, so a job runs again (`JobStatus.JobIteration`).
    #[serde(default)]
    pub job_iteration: u64,
    /// Log index of the command that last changed what a task runs: the create, or an
    /// update that changed the spec's `TaskTemplate` (`ForceUpdate` included, which is how
    /// `--force` arrives), its `EndpointSpec` or the pinned [`Service::image`] (compared as
    /// [`crate::spec::same_task_template`] does). A scale does not change it. Tasks whose
    /// [`Task::template_version`] differs are outdated and replaced by a rolling update.
    /// 0 for services stored before this field existed (their tasks have 0 too).
    #[serde(default)]
    pub template_version: u64,
    /// Registry credentials from the `X-Registry-Auth` of the create (or of an update
    /// that sent one), with which every node pulls `image`, as swarmkit keeps them with
    /// the task spec for its agents. Never shown by the API. Stored in the replicated
    /// state as they are: any member's replica holds them (encrypted objects come with the
    /// secrets work of the service lifecycle issue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
    /// The pinned image of [`Service::previous_spec`] (what a rollback runs again); `None`
    /// until updated, and for services stored before this field existed (a rollback then
    /// runs the previous spec's image as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// The [`Service::template_version`] of [`Service::previous_spec`]: a rollback restores
    /// it, so the tasks still running the previous spec stay up to date. `None` as
    /// `previous_image` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_template_version: Option<u64>,
    /// Docker's `UpdateStatus`: the state of the service's latest update or rollback
    /// (see [`crate::update`]); `None` until one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<crate::update::UpdateStatus>,
    /// The published ports the cluster chose for the spec's ingress ports that name no
    /// `PublishedPort` (`docker service create -p 80`), from swarmkit's dynamic range
    /// 30000-32767 (Docker's `Endpoint.Ports` shows them; the spec keeps 0). Allocated by
    /// the replicated state when the service is created or updated, kept across updates
    /// for the same target and protocol, freed with the service. Empty for services stored
    /// before this field existed and for services without such ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic_ports: Vec<DynamicPort>,
}

/// One port allocated to a [`Service`] from the dynamic range (see
/// [`Service::dynamic_ports`]): the spec's `TargetPort` and `Protocol` it serves, and the
/// published port the routing mesh answers on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicPort {
    /// The spec port's `TargetPort` (the container's port).
    pub target: u16,
    /// `tcp`, `udp` or `sctp`, lower case.
    pub protocol: String,
    /// The allocated published port, 30000-32767.
    pub published: u16,
}

/// A registry username and password (or personal access token), as `X-Registry-Auth`
/// carries them (Docker's `AuthConfig` `username`/`password`). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A task: one scheduled instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// 25 lowercase base-36 characters.
    pub id: String,
    /// The service it belongs to.
    pub service_id: String,
    /// Replicated services and jobs: the slot, from 1. Global services: 0.
    pub slot: u64,
    /// The node it runs on: set by the scheduler (replicated) or at creation (global).
    pub node_id: Option<NodeId>,
    /// `Service::version` of the spec the task was created from.
    pub service_version: u64,
    /// The image the task runs (the service's pinned image when the task was created).
    pub image: String,
    /// Jobs only: the job iteration the task belongs to.
    #[serde(default)]
    pub job_iteration: u64,
    /// Written by managers only: `Running`, `Complete` (jobs), `Shutdown` or `Remove`.
    pub desired_state: TaskState,
    /// Written by the agent of `node_id` (and by the scheduler while unassigned: `Pending`
    /// with the reason it cannot be placed).
    pub status: TaskStatus,
    /// When the task was created.
    pub created_at: Nanos,
    /// Log index of the command that last changed the task.
    pub version: u64,
    /// Restart history of the task's slot (replicated) or node (global), carried from task
    /// to replacement task: the times (unix ns, the orchestrator's `now`) at which earlier
    /// tasks of this slot were replaced under the restart policy, for the same service
    /// version (and job iteration), pruned to `RestartPolicy.window` and at most
    /// `max_attempts` entries. Empty when `max_attempts` is 0 (nothing to count). It makes
    /// `MaxAttempts` hold across trimmed task history and leader changes (swarmkit keeps
    /// this in the leader's memory and loses it on a leader change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_times: Vec<Nanos>,
    /// [`Service::template_version`] of the service when the task was created: the task
    /// runs that version of the task template. Set by the orchestrator.
    #[serde(default)]
    pub template_version: u64,
    /// When the task's status first became `Running` (the reported status timestamp),
    /// recorded by the cluster state; `None` until then. An update's `Monitor` counts
    /// from it (see [`crate::update::counts_as_failure`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<Nanos>,
}

/// Observed status of a task (Docker's `TaskStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Observed state.
    pub state: TaskState,
    /// When the state was observed.
    pub timestamp: Nanos,
    /// Human-readable progress (`"started"`, `"pending task scheduling"`).
    pub message: String,
    /// Why the task failed or cannot be scheduled (`"no suitable node (...)"`).
    pub err: Option<String>,
    /// The container running the task, once created.
    pub container_id: Option<String>,
    /// The container's init process id while running.
    pub pid: Option<u32>,
    /// Exit code once the container exited.
    pub exit_code: Option<i64>,
}

impl TaskStatus {
    /// A fresh status in `state` at `timestamp` with `message`.
    pub fn new(state: TaskState, timestamp: Nanos, message: impl Into<String>) -> Self {
        TaskStatus {
            state,
            timestamp,
            message: message.into(),
            err: None,
            container_id: None,
            pid: None,
            exit_code: None,
        }
    }
}

/// Task states in swarmkit's order: a task's observed state only moves forward in this
/// order, and `state >= Complete` means terminal (the container is not running).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Created by the reconciler.
    #[default]
    New,
    /// Waiting for a node (resources, constraints).
    Pending,
    /// Placed on a node.
    Assigned,
    /// The node's agent took it.
    Accepted,
    /// Pulling the image, creating the container.
    Preparing,
    /// Container created.
    Ready,
    /// Container starting.
    Starting,
    /// Container running.
    Running,
    /// Exited 0 (or a job finished).
    Complete,
    /// Stopped because its desired state said so.
    Shutdown,
    /// Exited non-zero, or could not be started.
    Failed,
    /// The node refused it (image pull failed, bad spec on this node).
    Rejected,
    /// Desired only: stop and delete the container; the record goes after.
    Remove,
    /// Its node was lost and the task replaced; never seen again.
    Orphaned,
}

impl TaskState {
    /// Lowercase name, as Docker's API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "new" => TaskState::New,
            "pending" => TaskState::Pending,
            "assigned" => TaskState::Assigned,
            "accepted" => TaskState::Accepted,
            "preparing" => TaskState::Preparing,
            "ready" => TaskState::Ready,
            "starting" => TaskState::Starting,
            "running" => TaskState::Running,
            "complete" => TaskState::Complete,
            "shutdown" => TaskState::Shutdown,
            "failed" => TaskState::Failed,
            "rejected" => TaskState::Rejected,
            "remove" => TaskState::Remove,
            "orphaned" => TaskState::Orphaned,
            _ => return None,
        })
    }

    /// The container is not (or no longer) running: `Complete` and after.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

/// How a service's tasks are laid out (Docker `ServiceSpec.Mode`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceMode {
    /// `Replicated.Replicas` tasks, in slots 1..=replicas.
    Replicated {
        /// Number of replicas.
        replicas: u64,
    },
    /// One task on every eligible node.
    Global,
    /// Run to completion: `TotalCompletions` successful tasks, at most `MaxConcurrent` at
    /// once (`ReplicatedJob`; when absent, Docker takes `MaxConcurrent` 1 and
    /// `TotalCompletions` equal to `MaxConcurrent`).
    ReplicatedJob {
        /// Tasks running at once.
        max_concurrent: u64,
        /// Successful completions wanted.
        total_completions: u64,
    },
    /// One task per eligible node, each run to completion (`GlobalJob`).
    GlobalJob,
}

impl ServiceMode {
    /// Jobs run to completion instead of being kept running.
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }
}

/// When a task that stopped is replaced (Docker `TaskTemplate.RestartPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCondition {
    /// Never.
    None,
    /// Only after a non-zero exit (or a failure to start).
    OnFailure,
    /// After any exit.
    Any,
}

/// Docker `TaskTemplate.RestartPolicy`, with Docker's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Default `Any` (jobs: `OnFailure`).
    pub condition: RestartCondition,
    /// Wait between a task stopping and its replacement starting, in ns. Default 5 s.
    pub delay: Nanos,
    /// Replacements allowed within `window` (all time when `window` is 0); 0 = unlimited.
    pub max_attempts: u64,
    /// The window `max_attempts` counts in, in ns; 0 = unbounded.
    pub window: Nanos,
}

/// `==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// Equal. Values compare case-insensitively (swarmkit's `strings.EqualFold`); the
    /// label name in `node.labels.<name>`/`engine.labels.<name>` is case-sensitive.
    Eq,
    /// Not equal.
    Ne,
}

/// One placement constraint (`node.role==worker`), parsed from Docker's syntax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `node.id`, `node.hostname`, `node.role`, `node.platform.os`, `node.platform.arch`,
    /// `node.labels.<key>` or `engine.labels.<key>`, as written.
    pub key: String,
    /// The operator.
    pub op: ConstraintOp,
    /// The value to compare with.
    pub value: String,
}

/// An OS/architecture pair (`Placement.Platforms`, a node's `Description.Platform`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ... (Go's names; Docker's API reports `x86_64` for nodes, which
    /// the driver normalises).
    pub architecture: String,
}

/// Docker `TaskTemplate.Placement`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// All must hold on a node.
    pub constraints: Vec<Constraint>,
    /// `Preferences[].Spread.SpreadDescriptor`: label keys (`node.labels.zone`), applied in
    /// order: tasks are spread evenly over the values of the first, then the second within
    /// each, and so on.
    pub spread: Vec<String>,
    /// At most this many tasks of the service on one node; 0 = unlimited.
    pub max_replicas: u64,
    /// A node must match one of these; empty = any.
    pub platforms: Vec<Platform>,
}

/// CPU and memory (`Resources.Reservations`, a node's `Description.Resources`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in units of 10^-9 CPUs.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// What the orchestrator reads from a Docker `ServiceSpec`, parsed from the JSON the
/// client sent; the rest of the spec (the container) is the agent's business.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `Name`.
    pub name: String,
    /// `Mode`.
    pub mode: ServiceMode,
    /// `TaskTemplate.RestartPolicy` with defaults.
    pub restart: RestartPolicy,
    /// `TaskTemplate.Placement`.
    pub placement: Placement,
    /// `TaskTemplate.Resources.Reservations`.
    pub reservations: Resources,
    /// `UpdateConfig` with Docker's defaults: how outdated tasks are replaced.
    #[serde(default)]
    pub update: UpdateConfig,
    /// `RollbackConfig` with Docker's defaults: how a rollback replaces tasks.
    #[serde(default)]
    pub rollback: UpdateConfig,
}

/// The order of a task replacement in a rolling update (`UpdateConfig.Order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOrder {
    /// `stop-first` (the default): the old task is shut down, and its replacement created
    /// in the same batch.
    #[default]
    StopFirst,
    /// `start-first`: the replacement is created first; the old task is shut down once the
    /// replacement runs (so the slot briefly has two tasks).
    StartFirst,
}

/// Docker `ServiceSpec.UpdateConfig` (and `RollbackConfig`), with Docker's defaults
/// (swarmkit `api/defaults`: parallelism 1, no delay, stop-first, pause, 5 s monitor,
/// ratio 0). The reconciler paces replacements with the first three; the update state
/// machine ([`crate::update`]) applies the failure policy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Slots replaced at once; 0 = all at once. Default 1.
    pub parallelism: u64,
    /// After a replacement task runs, wait this long (ns) before replacing more. Default 0.
    pub delay: Nanos,
    /// Default stop-first.
    pub order: UpdateOrder,
    /// What failures of new tasks do. Default pause.
    #[serde(default)]
    pub failure_action: crate::update::FailureAction,
    /// How long (ns) a new task is watched for failure after it starts running.
    #[serde(default)]
    pub monitor: Nanos,
    /// Tolerated fraction of failed tasks, 0 to 1. Default 0.
    #[serde(default)]
    pub max_failure_ratio: f32,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: 0,
            order: UpdateOrder::StopFirst,
            failure_action: crate::update::FailureAction::Pause,
            monitor: 5_000_000_000,
            max_failure_ratio: 0.0,
        }
    }
}

/// A node as the scheduler sees it (built by the driver from the node records, the
/// leader's heartbeat table and each node's reported description).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Raft node id.
    pub id: NodeId,
    /// Docker-style id string (`node.id` constraints compare against it).
    pub id_str: String,
    /// Hostname.
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Accepting tasks: `Spec.Availability == active`.
    pub active: bool,
    /// Drained: its tasks must move away (`Spec.Availability == drain`).
    pub drain: bool,
    /// Heartbeating the leader: `Status.State == ready`.
    pub ready: bool,
    /// OS and architecture.
    pub platform: Platform,
    /// `node.labels.*`.
    pub labels: BTreeMap<String, String>,
    /// `engine.labels.*` (the daemon's `--label`s).
    pub engine_labels: BTreeMap<String, String>,
    /// Total CPU and memory.
    pub capacity: Resources,
}
