//! berth-orchestrator: the pure orchestration core of berth's services (swarmkit's model).
//!
//! Owns: the service and task objects ([`model`]), parsing the orchestration part of a
//! Docker `ServiceSpec` ([`spec`], [`constraint`]), the reconciler (services to the tasks
//! that should exist: replicas per slot, one per eligible node for global services, jobs,
//! restart policy, task history, rolling updates; [`reconcile`]), the update state machine
//! (`UpdateStatus`, failure detection, pause/continue/rollback; [`update`]) and the scheduler (a filter pipeline over
//! nodes, then spread; [`schedule`]), which together turn the cluster's objects and `now`
//! into [`TaskChange`]s: [`plan`].
//!
//! Does not own: storage, Raft, clocks, randomness or I/O. The driver (`berth-node`'s
//! leader loop) reads the replicated state, passes `now` and an id generator in, and
//! commits the changes through Raft (`berth-consensus` checks each again in its pure
//! `apply`, as [`TaskChange`] documents).
//!
//! ```text
//!   services + specs + tasks + nodes + now ──> plan() ──> Plan { changes, wake_at }
//!        (replicated state, parsed specs,                      │
//!         heartbeats -> NodeInfo)                              v
//!                                              Command::Orchestrate ──> Raft ──> apply
//! ```
//!
//! A pass is idempotent: run on the state its own changes produced (with nothing else
//! changed), `plan` returns no changes. So a new leader, or a repeated pass, continues
//! where the last one stopped.

#![warn(missing_docs)]

pub mod constraint;
pub mod model;
pub mod reconcile;
pub mod schedule;
pub mod spec;
pub mod update;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use model::{
    Constraint, ConstraintOp, DynamicPort, Nanos, NodeId, NodeInfo, Placement, Platform,
    RegistryAuth, Resources, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec,
    Task, TaskState, TaskStatus,
};
pub use schedule::{NoSuitableNode, Scheduler};
pub use spec::SpecError;

/// One decision of the orchestrator, committed through Raft and applied by the cluster
/// state. Each is checked again at apply time against the state it meets there (see each
/// variant), so a decision made on a state that has since moved on is refused instead of
/// doing harm: nothing is ever placed twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
// `Create` carries a whole `Task` (the others an id); changes are short-lived batch items,
// and boxing would change the shape other crates build and match on.
#[allow(clippy::large_enum_variant)]
pub enum TaskChange {
    /// Record a new task. Refused when its slot (replicated services and jobs: service and
    /// slot; global: service and node) already holds a task whose desired state is
    /// `Running` or `Complete`: a replacement must first move the old task's desired state
    /// on (to `Shutdown`), earlier in the same batch or before. One exception, for
    /// start-first rolling updates: a task of the service's current
    /// [`Service::template_version`] may join a slot whose holders all have an older
    /// `template_version` (never a second one of the same or a newer template).
    Create {
        /// The task: status `New` with no node (the scheduler could not place it in the
        /// same pass: an `Unschedulable` for it follows), or status `Assigned` with
        /// `node_id` set (global services, and replicated tasks the scheduler placed in
        /// the same pass: no separate `Assign` follows).
        task: Task,
    },
    /// Place an unassigned task: `node_id` set, status `Assigned` at `at`. Refused unless
    /// the task exists, has no node and its desired state is `Running` or `Complete`.
    Assign {
        /// Task id.
        task_id: String,
        /// Where it runs.
        node_id: NodeId,
    },
    /// An unassigned task fits nowhere: status `Pending` with `err` (Swarm's "no suitable
    /// node (...)"). Refused unless the task exists and has no node.
    Unschedulable {
        /// Task id.
        task_id: String,
        /// Why.
        err: String,
    },
    /// Move a task's desired state forward (`Running` -> `Complete`/`Shutdown` ->
    /// `Remove`); a move backwards is refused.
    SetDesired {
        /// Task id.
        task_id: String,
        /// New desired state.
        desired: TaskState,
    },
    /// Forget a task record (trimmed history, or a removed service's task that stopped).
    /// Refused while the task may still have a running container: observed state below
    /// `Complete` with a node assigned.
    Delete {
        /// Task id.
        task_id: String,
    },
    /// Store a service's [`update::UpdateStatus`] (the update state machine's decision,
    /// [`update::step`]); with `rollback`, also roll the service back to its
    /// `PreviousSpec` (spec, pinned image and template version restored, no previous spec
    /// left, `version` = the entry's index: swarmkit's automatic rollback). Refused when the
    /// service is missing, at another `version` than `service_version` (the decision was
    /// made on an older spec), or, for a rollback, has no previous spec.
    UpdateStatus {
        /// Service id.
        service_id: String,
        /// The service's `version` the decision was made on.
        service_version: u64,
        /// The new status.
        status: update::UpdateStatus,
        /// Roll back to the previous spec.
        rollback: bool,
    },
}

/// What one orchestration pass decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The decisions, in the order they must be applied (a `SetDesired` that frees a slot
    /// comes before the `Create` that reuses it). Deterministic for the same inputs and
    /// ids.
    pub changes: Vec<TaskChange>,
    /// The earliest future time (unix ns) a restart delay expires: the driver plans again
    /// then. `None`: nothing is waiting.
    pub wake_at: Option<Nanos>,
}

/// Tunables of a pass ([`plan_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// Tasks kept per slot (per node for global services), the live one included; older
    /// stopped ones are deleted (Swarm's `TaskHistoryRetentionLimit`, default 5).
    pub task_history_retention: usize,
    /// New tasks created per service in one pass, at most (default 1,000): a huge
    /// `Replicas` or `MaxConcurrent` is reached over several passes (each applied change
    /// makes the driver plan again) instead of one unbounded batch.
    pub max_new_tasks_per_service: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            task_history_retention: 5,
            max_new_tasks_per_service: 1_000,
        }
    }
}

/// The whole orchestration pass: reconcile every service, then schedule every unassigned
/// task. `specs` are the parsed specs by service id (the driver caches parsing; a service
/// without one is left alone). `nodes`: every cluster node (not ready ones included:
/// they count in "no suitable node" explanations). `now`: unix ns. `new_id`: a fresh task
/// id per call (see [`task_id_from_bytes`]). [`PlanConfig::default`] tunables.
pub fn plan(
    services: &BTreeMap<String, Service>,
    specs: &BTreeMap<String, ServiceSpec>,
    tasks: &BTreeMap<String, Task>,
    nodes: &[NodeInfo],
    now: Nanos,
    new_id: &mut dyn FnMut() -> String,
) -> Plan {
    plan_with(
        services,
        specs,
        tasks,
        nodes,
        now,
        new_id,
        &PlanConfig::default(),
    )
}

/// [`plan`] with explicit tunables.
pub fn plan_with(
    services: &BTreeMap<String, Service>,
    specs: &BTreeMap<String, ServiceSpec>,
    tasks: &BTreeMap<String, Task>,
    nodes: &[NodeInfo],
    now: Nanos,
    new_id: &mut dyn FnMut() -> String,
    config: &PlanConfig,
) -> Plan {
    let ctx = reconcile::Ctx {
        nodes: nodes.iter().map(|n| (n.id, n)).collect(),
        now,
        retention: config.task_history_retention,
        max_new_tasks: config.max_new_tasks_per_service,
    };
    let mut r = reconcile::reconcile(services, specs, tasks, &ctx, new_id);

    // The scheduler's view after the reconciler's decisions.
    let mut scheduler = Scheduler::new(nodes);
    let zero = Resources::default();
    for t in tasks.values() {
        if r.deleted.contains(&t.id) {
            continue;
        }
        let Some(node) = t.node_id else { continue };
        let desired = r.desired.get(&t.id).copied().unwrap_or(t.desired_state);
        let holds = match specs.get(&t.service_id) {
            Some(spec) if !t.status.state.is_terminal() => spec.reservations,
            _ => zero,
        };
        // Counted for spread and max replicas while wanted and not stopped (swarmkit
        // tracks a task on its node from Pending to Running only).
        let active = desired <= TaskState::Complete && !t.status.state.is_terminal();
        scheduler.account(node, &t.service_id, active, holds);
    }

    // Global tasks: created where they fit.
    for task in std::mem::take(&mut r.preassigned) {
        let (Some(spec), Some(node)) = (specs.get(&task.service_id), task.node_id) else {
            continue;
        };
        if scheduler.check(node, &task.service_id, spec).is_ok() {
            scheduler.record(node, &task.service_id, spec);
            r.changes.push(TaskChange::Create { task });
        }
    }

    // Unassigned live tasks: those created above, then the existing ones.
    enum Pending {
        Created(usize),
        Existing(String),
    }
    let mut pending: Vec<(&str, u64, Nanos, String, Pending)> = Vec::new();
    for (i, change) in r.changes.iter().enumerate() {
        if let TaskChange::Create { task } = change {
            if task.node_id.is_none() {
                pending.push((
                    services
                        .get_key_value(&task.service_id)
                        .map_or("", |(k, _)| k.as_str()),
                    task.slot,
                    task.created_at,
                    task.id.clone(),
                    Pending::Created(i),
                ));
            }
        }
    }
    for t in tasks.values() {
        let desired = r.desired.get(&t.id).copied().unwrap_or(t.desired_state);
        if t.node_id.is_none()
            && desired <= TaskState::Complete
            && !r.deleted.contains(&t.id)
            && services.contains_key(&t.service_id)
        {
            pending.push((
                t.service_id.as_str(),
                t.slot,
                t.created_at,
                t.id.clone(),
                Pending::Existing(t.id.clone()),
            ));
        }
    }
    pending.sort_by(|a, b| (a.0, a.1, a.2, &a.3).cmp(&(b.0, b.1, b.2, &b.3)));
    let mut unschedulable: HashMap<usize, String> = HashMap::new();
    let mut tail: Vec<TaskChange> = Vec::new();
    // Tasks of one service are consecutive; once one found no node, the next ones of the
    // same service would meet the very same nodes (nothing was placed in between), so
    // they share its answer instead of running the filters again (swarmkit schedules a
    // service's tasks as a group the same way).
    let mut failed: Option<(&str, NoSuitableNode)> = None;
    for (service_id, _, _, _, which) in pending {
        let Some(spec) = specs.get(service_id) else {
            continue;
        };
        let placed = match &failed {
            Some((s, why)) if *s == service_id => Err(why.clone()),
            _ => scheduler.place(service_id, spec),
        };
        if let Err(why) = &placed {
            failed = Some((service_id, why.clone()));
        }
        match (placed, which) {
            (Ok(node), Pending::Created(i)) => {
                if let TaskChange::Create { task } = &mut r.changes[i] {
                    task.node_id = Some(node);
                    task.status = TaskStatus::new(
                        TaskState::Assigned,
                        now,
                        "scheduler assigned task to node",
                    );
                }
            }
            (Ok(node), Pending::Existing(task_id)) => {
                tail.push(TaskChange::Assign {
                    task_id,
                    node_id: node,
                });
            }
            (Err(why), Pending::Created(i)) => {
                unschedulable.insert(i, why.message());
            }
            (Err(why), Pending::Existing(task_id)) => {
                let err = why.message();
                let t = &tasks[&task_id];
                if t.status.state != TaskState::Pending || t.status.err.as_deref() != Some(&err) {
                    tail.push(TaskChange::Unschedulable { task_id, err });
                }
            }
        }
    }
    // A new task's Unschedulable goes right after its Create.
    let mut changes = Vec::with_capacity(r.changes.len() + unschedulable.len() + tail.len());
    for (i, change) in r.changes.into_iter().enumerate() {
        let id = match &change {
            TaskChange::Create { task } => Some(task.id.clone()),
            _ => None,
        };
        changes.push(change);
        if let (Some(err), Some(task_id)) = (unschedulable.remove(&i), id) {
            changes.push(TaskChange::Unschedulable { task_id, err });
        }
    }
    changes.extend(tail);
    Plan {
        changes,
        wake_at: r.wake_at.filter(|&w| w > now),
    }
}

/// Swarm's id shape (swarmkit `identity.NewID`): the 16 bytes read as a big-endian
/// integer, written in base 36 (`[0-9a-z]`), left-padded with `0` to 25 characters. The
/// caller supplies the random bytes (this crate has no randomness).
pub fn task_id_from_bytes(bytes: [u8; 16]) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = u128::from_be_bytes(bytes);
    let mut out = [b'0'; 25];
    let mut i = out.len();
    while n > 0 {
        i -= 1;
        out[i] = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests;
