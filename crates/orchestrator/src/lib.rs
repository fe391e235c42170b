//! berth-orchestrator: the pure orchestration core of berth's services (swarmkit's model).
//!
//! Owns: the service and task objects ([`model`]), the reconciler (services to the tasks
//! that should exist: replicas per slot, one per eligible node for global services, jobs,
//! restart policy, task history) and the scheduler (a filter pipeline over nodes, then
//! spread), which together turn the cluster's objects and `now` into [`TaskChange`]s.
//!
//! Does not own: storage, Raft, clocks, randomness or I/O. The driver (`berth-node`'s
//! leader loop) reads the replicated state, passes `now` and an id generator in, and
//! commits the changes through Raft (`berth-consensus` applies them with
//! [`apply_change`]-style rules in its pure `apply`).
//!
//! ```text
//!   services + tasks + nodes + now ──> plan() ──> Vec<TaskChange> ──> Raft ──> apply
//!                                                 + wake_at (next restart delay expiry)
//! ```

pub mod constraint;
pub mod model;
pub mod spec;

use serde::{Deserialize, Serialize};

pub use model::{
    Constraint, ConstraintOp, Nanos, NodeId, NodeInfo, Placement, Platform, Resources,
    RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, Task, TaskState,
    TaskStatus,
};
pub use spec::SpecError;

/// One decision of the orchestrator, committed through Raft and applied by the cluster
/// state. Each is checked again at apply time against the state it meets there (see each
/// variant), so a decision made on a state that has since moved on is refused instead of
/// doing harm: nothing is ever placed twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum TaskChange {
    /// Record a new task. Refused when its slot (replicated services and jobs: service and
    /// slot; global: service and node) already holds a task whose desired state is
    /// `Running` or `Complete`: a replacement must first move the old task's desired state
    /// on (to `Shutdown`), earlier in the same batch or before.
    Create {
        /// The task (status `New`, or `Assigned` with `node_id` for global services).
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
}
