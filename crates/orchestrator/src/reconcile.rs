//! The reconciler: services to the tasks that should exist (swarmkit's
//! `manager/orchestrator`: `replicated`, `global`, `jobs`, `restart`, `taskreaper`), as a
//! pure function of the cluster's objects and `now`.
//!
//! Rules, per service (every rule derives from the stored state alone, so a pass repeated
//! on the state its changes produced decides nothing new, and a new leader continues where
//! the old one stopped):
//! - **Live** tasks are those whose desired state is `Running` (services) or `Complete`
//!   (jobs). A live task whose observed state is terminal stopped: its desired state goes
//!   to `Shutdown` (jobs: unless it completed) and the restart policy decides its
//!   replacement. A live task on a node that is gone, not ready or drained goes to
//!   `Shutdown` too and is replaced at once: a node loss is not the task's failure, so no
//!   delay and no restart attempt are counted (global services: not replaced, the node
//!   simply has no task until it is eligible again).
//! - **Replicated services** keep slots `1..=replicas`. A slot whose tasks are all
//!   stopped is replaced per the restart policy; a slot whose newest task must not be
//!   restarted (condition, attempts) stays as it is and still counts (swarmkit
//!   `UpdatableTasksInSlot`). Missing slots are created lowest first. Scaling down removes
//!   whole slots (desired `Remove`, or `Delete` when nothing runs), preferring the nodes
//!   with the most tasks of the service, then tasks not running, then the highest slots
//!   (swarmkit `replicated/services.go`).
//! - **Global services**: one task per node that is ready, not drained and matches the
//!   constraints and platforms; a new one only on `active` nodes (pause keeps tasks, stops
//!   placement). Slot 0, keyed by node. The task is created already assigned, and only
//!   where the scheduler's resource and max-replicas filters pass on that node; until they
//!   do, the node has no task (swarmkit instead keeps a pending task there with the
//!   reason: `TaskChange::Unschedulable` is for unassigned tasks only).
//! - **Replicated jobs**: slots `1..=TotalCompletions` of the current `job_iteration`, at
//!   most `MaxConcurrent` of them in progress; a slot is done when a task completed.
//!   **Global jobs**: one task per eligible node per iteration. Tasks of an earlier
//!   iteration still running go to `Remove`, finished ones to `Shutdown` (so their slot
//!   takes the new iteration's task) (swarmkit `jobs/replicated/reconciler.go`).
//! - **Restart policy** (swarmkit `restart.go` `shouldRestart`): `none` never; `on-failure`
//!   unless the task completed; `any` always (jobs: unless completed). `Delay` counts from
//!   the stopped task's status timestamp; until then nothing is created and the pass's
//!   `wake_at` says when to look again. `MaxAttempts` counts the restarts recorded in the
//!   task's [`Task::restart_times`] for the same service version (and job iteration),
//!   within `Window` before the stop when a window is set.
//! - **History** (swarmkit `taskreaper`): per slot (per node for global services) at most
//!   `retention` tasks are kept; the oldest that are neither live nor running (terminal,
//!   or never assigned) are `Delete`d, never the newest. Tasks whose desired state is
//!   `Remove` are deleted once terminal or if never assigned.
//! - **Service gone**: every task goes to `Remove`, and is deleted once terminal.
//! - **Rolling update** (replicated and global services; swarmkit `update/updater.go` as
//!   a rule over the stored state): a live task whose [`Task::template_version`] differs
//!   from its service's is outdated. A place (slot, or node of a global service) is *in
//!   progress* while its replacement (a live task of the current template) is not yet
//!   `Running`, or while the newest current-template task of the place stopped and the
//!   restart policy (or, start-first, the next attempt after the restart delay) has yet
//!   to replace it: a replacement that keeps failing holds the update back. Outdated places
//!   are replaced lowest slot (node id) first, at most `UpdateConfig.Parallelism` in
//!   progress at once (0: all at once), and none until `Delay` has passed since the
//!   latest replacement started running (`wake_at` says when). `stop-first`: the old task
//!   goes to `Shutdown` and the new one is created in the same batch; `start-first`: the
//!   new one is created beside it (the cluster state allows a slot to hold a task of an
//!   older template beside one of the current), and the old one goes to `Shutdown` once
//!   the new one runs. Jobs are not rolled (their `job_iteration` reruns them). The pacing
//!   is `RollbackConfig`'s while a rollback is under way. The same pass observes the
//!   update (outdated places, failures of new tasks, the last replacement's start) for
//!   the update state machine ([`crate::update::step`]), whose decision is a
//!   [`TaskChange::UpdateStatus`]: while the update is paused no replacement starts, and
//!   a rollback decision ends the pass (the next one sees the previous spec).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::{
    Nanos, NodeId, NodeInfo, RestartCondition, Service, ServiceMode, ServiceSpec, Task, TaskState,
    TaskStatus, UpdateOrder,
};
use crate::schedule::node_eligible;
use crate::update::{self, UpdateDecision, UpdateObservation};
use crate::TaskChange;

/// The reconciler's decisions for one pass, before scheduling.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// Changes in order (`Create`s of replicated tasks carry unassigned tasks).
    pub changes: Vec<TaskChange>,
    /// Global tasks wanted on a given node; the scheduler checks they fit and creates them.
    pub preassigned: Vec<Task>,
    /// Earliest future restart delay expiry.
    pub wake_at: Option<Nanos>,
    /// Desired states changed in this pass, by task id.
    pub desired: HashMap<String, TaskState>,
    /// Tasks deleted in this pass.
    pub deleted: HashSet<String>,
}

/// The context every service's reconciliation reads.
pub(crate) struct Ctx<'a> {
    pub nodes: HashMap<NodeId, &'a NodeInfo>,
    pub now: Nanos,
    pub retention: usize,
    /// At most this many new tasks per service per pass.
    pub max_new_tasks: usize,
}

impl Reconciled {
    fn set_desired(&mut self, t: &Task, desired: TaskState) {
        let current = self.desired.get(&t.id).copied().unwrap_or(t.desired_state);
        if desired > current && !self.deleted.contains(&t.id) {
            self.desired.insert(t.id.clone(), desired);
            self.changes.push(TaskChange::SetDesired {
                task_id: t.id.clone(),
                desired,
            });
        }
    }

    fn delete(&mut self, t: &Task) {
        if self.deleted.insert(t.id.clone()) {
            self.changes.push(TaskChange::Delete {
                task_id: t.id.clone(),
            });
        }
    }

    fn wake(&mut self, at: Nanos) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn desired_of(&self, t: &Task) -> TaskState {
        self.desired.get(&t.id).copied().unwrap_or(t.desired_state)
    }
}

/// A task record may go: nothing can be running for it (terminal, or never assigned). The
/// cluster state refuses `Delete` otherwise.
fn deletable(t: &Task) -> bool {
    t.status.state.is_terminal() || t.node_id.is_none()
}

/// How long a stop-first replacement is held at `Ready` waiting for the task it replaces
/// to stop (swarmkit's restart supervisor: 1 minute), in nanoseconds.
pub const HELD_START_TIMEOUT: Nanos = 60_000_000_000;

/// The desired state of a live task of this mode.
fn live_state(mode: &ServiceMode) -> TaskState {
    if mode.is_job() {
        TaskState::Complete
    } else {
        TaskState::Running
    }
}

/// Newest first: by creation time, then id (deterministic).
fn newest<'t>(tasks: &[&'t Task]) -> Option<&'t Task> {
    tasks
        .iter()
        .copied()
        .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
}

/// What became of a slot (or a global node) in this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotOutcome {
    /// A live task is (still) there, or was created now.
    Active,
    /// A job task completed in this iteration.
    Done,
    /// Stopped; the replacement waits for the restart delay.
    Waiting,
    /// Stopped and not to be restarted (condition, attempts): the slot stays as is.
    Finished,
    /// Nothing there (global: node not eligible).
    Empty,
}

/// Everything a new task needs from its service.
struct NewTask<'a> {
    service: &'a Service,
    spec: &'a ServiceSpec,
}

impl NewTask<'_> {
    fn build(
        &self,
        id: String,
        slot: u64,
        node: Option<NodeId>,
        now: Nanos,
        restart_times: Vec<Nanos>,
    ) -> Task {
        let status = match node {
            Some(_) => TaskStatus::new(TaskState::Assigned, now, "scheduler assigned task to node"),
            None => TaskStatus::new(TaskState::New, now, "created"),
        };
        Task {
            id,
            service_id: self.service.id.clone(),
            slot,
            node_id: node,
            service_version: self.service.version,
            image: self.service.image.clone(),
            job_iteration: if self.spec.mode.is_job() {
                self.service.job_iteration
            } else {
                0
            },
            desired_state: live_state(&self.spec.mode),
            status,
            created_at: now,
            version: 0,
            restart_times,
            template_version: self.service.template_version,
            running_at: None,
        }
    }
}

/// swarmkit `shouldRestart`: whether the stopped task `t` is to be replaced.
fn should_restart(t: &Task, service: &Service, spec: &ServiceSpec) -> bool {
    let completed = t.status.state == TaskState::Complete;
    match spec.restart.condition {
        RestartCondition::None => return false,
        RestartCondition::OnFailure if completed => return false,
        RestartCondition::Any if completed && spec.mode.is_job() => return false,
        _ => {}
    }
    let max = spec.restart.max_attempts;
    if max == 0 {
        return true;
    }
    let history = carried_history(t, service, spec);
    let counted = if spec.restart.window == 0 {
        history.len()
    } else {
        let lookback = t.status.timestamp.saturating_sub(spec.restart.window);
        history.iter().filter(|&&at| at > lookback).count()
    };
    (counted as u64) < max
}

/// The restart history that carries over from `t` to its replacement: only for the same
/// service version and job iteration (swarmkit resets it when the spec version changes).
fn carried_history(t: &Task, service: &Service, spec: &ServiceSpec) -> Vec<Nanos> {
    if spec.restart.max_attempts == 0
        || t.service_version != service.version
        || (spec.mode.is_job() && t.job_iteration != service.job_iteration)
    {
        return Vec::new();
    }
    t.restart_times.clone()
}

/// The history of a replacement made under the restart policy at `now`: the carried
/// entries within the window, plus `now`, at most `max_attempts` entries.
fn history_after_restart(
    t: &Task,
    service: &Service,
    spec: &ServiceSpec,
    now: Nanos,
) -> Vec<Nanos> {
    let max = spec.restart.max_attempts;
    if max == 0 {
        return Vec::new();
    }
    let mut h = carried_history(t, service, spec);
    if spec.restart.window > 0 {
        let lookback = now.saturating_sub(spec.restart.window);
        h.retain(|&at| at > lookback);
    }
    h.push(now);
    let excess = h
        .len()
        .saturating_sub(usize::try_from(max).unwrap_or(usize::MAX));
    h.drain(..excess);
    h
}

/// Reconcile every service (in id order) and the tasks of services that are gone.
pub(crate) fn reconcile(
    services: &BTreeMap<String, Service>,
    specs: &BTreeMap<String, ServiceSpec>,
    tasks: &BTreeMap<String, Task>,
    ctx: &Ctx<'_>,
    new_id: &mut dyn FnMut() -> String,
) -> Reconciled {
    let mut out = Reconciled::default();
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in tasks.values() {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    // Services with tasks, and services without any yet, in id order.
    let mut ids: Vec<&str> = by_service.keys().copied().collect();
    ids.extend(services.keys().map(String::as_str));
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let service_tasks = by_service.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let Some(service) = services.get(id) else {
            // The service is gone: every task goes, once nothing runs for it.
            for t in service_tasks {
                if deletable(t) {
                    out.delete(t);
                } else {
                    out.set_desired(t, TaskState::Remove);
                }
            }
            continue;
        };
        // A service whose spec the driver could not parse is left alone (its create or
        // update was validated with the same parser, so this does not happen in practice).
        let Some(spec) = specs.get(id) else {
            continue;
        };
        // Tasks being removed go once nothing runs for them; the rest is reconciled.
        let mut kept: Vec<&Task> = Vec::with_capacity(service_tasks.len());
        for t in service_tasks {
            if t.desired_state >= TaskState::Remove {
                if deletable(t) {
                    out.delete(t);
                }
            } else {
                kept.push(t);
            }
        }
        let mut r = ServiceReconciler {
            out: &mut out,
            ctx,
            new: NewTask { service, spec },
            new_id: &mut *new_id,
            created: 0,
            created_in: HashSet::new(),
        };
        match spec.mode {
            ServiceMode::Replicated { replicas } => r.replicated(&kept, replicas),
            ServiceMode::Global => r.global(&kept),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => r.replicated_job(&kept, max_concurrent, total_completions),
            ServiceMode::GlobalJob => r.global(&kept),
        }
    }
    out
}

struct ServiceReconciler<'o, 'c, 's, 'f> {
    out: &'o mut Reconciled,
    ctx: &'c Ctx<'c>,
    new: NewTask<'s>,
    new_id: &'f mut dyn FnMut() -> String,
    /// New tasks of this service in this pass (bounded by `Ctx::max_new_tasks`).
    created: usize,
    /// The places given a new task in this pass.
    created_in: HashSet<PlaceKey>,
}

/// A place as a set key: (global?, slot or node id).
type PlaceKey = (bool, u64);

/// Where a slot's replacement goes.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// Replicated services and jobs: the slot number, unassigned (the scheduler places it).
    Slot(u64),
    /// Global: on this node.
    Node(NodeId),
}

impl Place {
    fn key(self) -> PlaceKey {
        match self {
            Place::Slot(s) => (false, s),
            Place::Node(n) => (true, n),
        }
    }
}

impl ServiceReconciler<'_, '_, '_, '_> {
    /// The node may keep the task running: known, ready, not drained.
    fn node_keeps(&self, node: NodeId) -> bool {
        self.ctx
            .nodes
            .get(&node)
            .is_some_and(|n| n.ready && !n.drain)
    }

    /// Creates a task (`false`: this pass has created its share for the service; the next
    /// pass continues).
    fn create(&mut self, place: Place, restart_times: Vec<Nanos>) -> bool {
        self.create_task(place, restart_times, false)
    }

    /// [`Self::create`], the new task held at desired state `Ready` when `held` (a
    /// stop-first replacement, see [`Self::promote_held`]).
    fn create_task(&mut self, place: Place, restart_times: Vec<Nanos>, held: bool) -> bool {
        if self.created >= self.ctx.max_new_tasks {
            return false;
        }
        self.created += 1;
        self.created_in.insert(place.key());
        let id = (self.new_id)();
        let (slot, node) = match place {
            Place::Slot(slot) => (slot, None),
            Place::Node(node) => (0, Some(node)),
        };
        let mut task = self.new.build(id, slot, node, self.ctx.now, restart_times);
        if held {
            task.desired_state = TaskState::Ready;
        }
        if node.is_some() {
            self.out.preassigned.push(task);
        } else {
            self.out.changes.push(TaskChange::Create { task });
        }
        true
    }

    /// Tasks of an earlier job iteration: running ones are removed (swarmkit), finished
    /// live ones move to `Shutdown` so their slot can take the new iteration's task.
    /// Returns the tasks of the current iteration.
    fn retire_old_iterations<'t>(&mut self, tasks: &[&'t Task]) -> Vec<&'t Task> {
        if !self.new.spec.mode.is_job() {
            return tasks.to_vec();
        }
        let iteration = self.new.service.job_iteration;
        let mut current = Vec::with_capacity(tasks.len());
        for t in tasks {
            if t.job_iteration == iteration {
                current.push(*t);
            } else if t.desired_state <= TaskState::Complete {
                if t.status.state.is_terminal() {
                    self.out.set_desired(t, TaskState::Shutdown);
                } else if t.node_id.is_none() {
                    self.out.delete(t);
                } else {
                    self.out.set_desired(t, TaskState::Remove);
                }
            }
        }
        current
    }

    /// One slot (or one global node): check its live tasks, replace it if it stopped, trim
    /// its history. `all` is every non-removed task of the slot (any iteration), `current`
    /// those of the current job iteration (all of them for services). `eligible`: the
    /// slot's place can hold a live task (global: the node is eligible; always for slots);
    /// `may_start`: a new task may be created (global: the node is also active; jobs:
    /// concurrency allows).
    fn slot(
        &mut self,
        place: Place,
        all: &[&Task],
        current: &[&Task],
        eligible: bool,
        may_start: bool,
    ) -> SlotOutcome {
        let live = live_state(&self.new.spec.mode);
        let is_job = self.new.spec.mode.is_job();
        let mut outcome = SlotOutcome::Empty;
        let mut created = 0usize;
        for t in current {
            if self.out.desired_of(t) > live {
                continue;
            }
            if self.out.desired_of(t) == TaskState::Ready && !t.status.state.is_terminal() {
                self.promote_held(t, all);
            }
            if t.status.state.is_terminal() {
                if is_job && t.status.state == TaskState::Complete {
                    outcome = SlotOutcome::Done;
                    continue;
                }
                // Stopped on its own: the restart policy decides below.
                self.out.set_desired(t, TaskState::Shutdown);
            } else if t.node_id.is_some_and(|n| !self.node_keeps(n)) || !eligible {
                // Its node is lost or drained (or, global, no longer eligible).
                self.out.set_desired(t, TaskState::Shutdown);
            } else if outcome != SlotOutcome::Done {
                outcome = SlotOutcome::Active;
            }
        }
        if outcome == SlotOutcome::Empty && eligible {
            outcome = match newest(current) {
                None if may_start => {
                    if self.create(place, Vec::new()) {
                        created += 1;
                        SlotOutcome::Active
                    } else {
                        SlotOutcome::Empty
                    }
                }
                None => SlotOutcome::Empty,
                Some(t) => self.replace(place, t, may_start, &mut created),
            };
        }
        self.trim(all, created);
        outcome
    }

    /// The slot's newest task `t` has stopped (or is being stopped): replace it.
    fn replace(
        &mut self,
        place: Place,
        t: &Task,
        may_start: bool,
        created: &mut usize,
    ) -> SlotOutcome {
        let (service, spec, now) = (self.new.service, self.new.spec, self.ctx.now);
        let own_failure = t.status.state.is_terminal()
            && !matches!(t.status.state, TaskState::Shutdown | TaskState::Orphaned);
        if !own_failure {
            // Shut down by a manager (node lost or drained, node no longer eligible):
            // replaced at once, no attempt counted.
            if !may_start || !self.create(place, carried_history(t, service, spec)) {
                return SlotOutcome::Empty;
            }
            *created += 1;
            return SlotOutcome::Active;
        }
        if !should_restart(t, service, spec) {
            return SlotOutcome::Finished;
        }
        // swarmkit applies no restart delay to tasks of a drained node; berth neither to a
        // lost one.
        let delay = if t.node_id.is_some_and(|n| !self.node_keeps(n)) {
            0
        } else {
            spec.restart.delay
        };
        let due = t.status.timestamp.saturating_add(delay);
        if due > now {
            self.out.wake(due);
            return SlotOutcome::Waiting;
        }
        if !may_start || !self.create(place, history_after_restart(t, service, spec, now)) {
            return SlotOutcome::Waiting;
        }
        *created += 1;
        SlotOutcome::Active
    }

    /// Keep at most `retention` tasks in the slot (counting `created` new ones): delete
    /// the oldest that are neither live nor possibly running, never the newest.
    fn trim(&mut self, all: &[&Task], created: usize) {
        let all: Vec<&Task> = all
            .iter()
            .copied()
            .filter(|t| !self.out.deleted.contains(&t.id))
            .collect();
        let total = all.len() + created;
        let retention = self.ctx.retention;
        if total <= retention {
            return;
        }
        let mut excess = total - retention;
        let newest_id = newest(&all).map(|t| t.id.as_str());
        let live = live_state(&self.new.spec.mode);
        let mut by_age: Vec<&Task> = all.clone();
        by_age.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        for t in by_age {
            if excess == 0 {
                break;
            }
            if Some(t.id.as_str()) == newest_id && created == 0 {
                continue;
            }
            if self.out.desired_of(t) > live && deletable(t) {
                self.out.delete(t);
                excess -= 1;
            }
        }
    }

    fn replicated(&mut self, tasks: &[&Task], replicas: u64) {
        let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
        for t in tasks {
            if t.slot == 0 {
                // Not a replicated task (cannot happen: the mode of a service does not
                // change); it has no slot to live in.
                self.remove(t);
            } else {
                slots.entry(t.slot).or_default().push(t);
            }
        }
        let kept: BTreeSet<u64> = self.scale_down(&slots, replicas).into_iter().collect();
        for (slot, all) in &slots {
            if kept.contains(slot) {
                self.slot(Place::Slot(*slot), all, all, true, true);
            }
        }
        let places: Vec<(Place, &[&Task])> = slots
            .iter()
            .filter(|(slot, _)| kept.contains(slot))
            .map(|(slot, all)| (Place::Slot(*slot), all.as_slice()))
            .collect();
        self.rolling_update(&places);
        // Missing slots, lowest first.
        let mut missing = replicas.saturating_sub(kept.len() as u64);
        let mut slot = 0u64;
        while missing > 0 {
            slot += 1;
            if !slots.contains_key(&slot) {
                if !self.create(Place::Slot(slot), Vec::new()) {
                    break;
                }
                missing -= 1;
            }
        }
    }

    /// The rolling update of a service's places (slots, or nodes of a global service):
    /// see the module docs. `places` are the places that keep a live task (kept slots,
    /// eligible active nodes), with every non-removed task of each.
    fn rolling_update(&mut self, places: &[(Place, &[&Task])]) {
        if self.new.spec.mode.is_job() {
            return;
        }
        let service = self.new.service;
        let current = service.template_version;
        let status = service.update_status.as_ref();
        let cfg = *update::policy_in_force(status, &self.new.spec.update, &self.new.spec.rollback);
        let now = self.ctx.now;
        // What the update state machine needs: see `crate::update`.
        let watching = status
            .filter(|s| s.state.in_progress())
            .and_then(|s| s.started_at);
        let mut obs = UpdateObservation {
            places: places.len() as u64,
            ..UpdateObservation::default()
        };
        let mut failures: Vec<(Nanos, &str)> = Vec::new();
        let restart_delay = self.new.spec.restart.delay;
        let mut in_progress: u64 = 0;
        let mut last_done: Option<Nanos> = None;
        let mut candidates: Vec<(Place, Vec<&Task>)> = Vec::new();
        let mut retries: Vec<(Place, Vec<&Task>)> = Vec::new();
        for (place, tasks) in places {
            let tasks: Vec<&Task> = tasks
                .iter()
                .copied()
                .filter(|t| !self.out.deleted.contains(&t.id))
                .collect();
            // A held stop-first replacement (desired `Ready`) is live: it holds its place.
            let live = |t: &Task| {
                matches!(
                    self.out.desired_of(t),
                    TaskState::Ready | TaskState::Running
                )
            };
            let old_live: Vec<&Task> = tasks
                .iter()
                .copied()
                .filter(|t| live(t) && t.template_version != current)
                .collect();
            let new_live: Vec<&Task> = tasks
                .iter()
                .copied()
                .filter(|t| live(t) && t.template_version == current)
                .collect();
            for t in &tasks {
                if t.template_version != current {
                    continue;
                }
                if let Some(started) = watching {
                    if update::counts_as_failure(t, t.running_at, started, cfg.monitor) {
                        failures.push((t.status.timestamp, t.id.as_str()));
                    }
                }
            }
            let mut new_running = false;
            for t in &new_live {
                if t.status.state == TaskState::Running {
                    new_running = true;
                    last_done =
                        Some(last_done.map_or(t.status.timestamp, |d| d.max(t.status.timestamp)));
                    let ran = t.running_at.unwrap_or(t.status.timestamp);
                    obs.last_running_at = Some(obs.last_running_at.map_or(ran, |d| d.max(ran)));
                }
            }
            let has_new = self.created_in.contains(&place.key()) || !new_live.is_empty();
            let replaced_here = tasks.iter().any(|t| t.template_version != current);
            let mut old_stays = !old_live.is_empty();
            if !old_live.is_empty()
                && has_new
                && (new_running || cfg.order == UpdateOrder::StopFirst)
            {
                // start-first: the replacement runs, the old task goes. (stop-first: the
                // old task should have gone already; the order was changed meanwhile.)
                for t in &old_live {
                    self.out.set_desired(t, TaskState::Shutdown);
                }
                old_stays = false;
            }
            // Observed as the next pass will see it (a pass repeated decides nothing new).
            if old_stays {
                obs.outdated += 1;
            }
            if old_stays || (has_new && !new_running && replaced_here) {
                obs.pending += 1;
            }
            if new_running {
                continue;
            }
            if has_new {
                in_progress += 1;
                continue;
            }
            let current_tasks: Vec<&Task> = tasks
                .iter()
                .copied()
                .filter(|t| t.template_version == current)
                .collect();
            let failed = newest(&current_tasks).filter(|t| t.status.state.is_terminal());
            match (old_live.is_empty(), failed) {
                // Up to date, or nothing live and the restart policy's business.
                (true, None) => {}
                // A replacement that stopped holds the update back while the restart
                // policy retries it (swarmkit would pause the update).
                (true, Some(_)) => in_progress += 1,
                // A start-first replacement that stopped: retried after the restart delay.
                (false, Some(t)) => {
                    in_progress += 1;
                    let due = t.status.timestamp.saturating_add(restart_delay);
                    if due > now {
                        self.out.wake(due);
                    } else {
                        retries.push((*place, old_live));
                    }
                }
                (false, None) => candidates.push((*place, old_live)),
            }
        }
        failures.sort_unstable();
        obs.failures = failures.into_iter().map(|(_, id)| id.to_string()).collect();
        let step = update::step(status, &cfg, &obs, service.previous_spec.is_some(), now);
        if let Some(at) = step.wake_at {
            self.out.wake(at);
        }
        let status = match step.decision {
            UpdateDecision::Keep => status.cloned(),
            UpdateDecision::Set(new) => {
                self.out.changes.push(TaskChange::UpdateStatus {
                    service_id: service.id.clone(),
                    service_version: service.version,
                    status: new.clone(),
                    rollback: false,
                });
                Some(new)
            }
            UpdateDecision::Rollback(new) => {
                // The next pass sees the previous spec and rolls the tasks back.
                self.out.changes.push(TaskChange::UpdateStatus {
                    service_id: service.id.clone(),
                    service_version: service.version,
                    status: new,
                    rollback: true,
                });
                return;
            }
        };
        if !update::update_proceeds(status.as_ref()) {
            return;
        }
        for (place, old) in retries {
            if !self.start_replacement(place, &old, cfg.order) {
                return;
            }
        }
        let room = if cfg.parallelism == 0 {
            usize::MAX
        } else {
            usize::try_from(cfg.parallelism.saturating_sub(in_progress)).unwrap_or(usize::MAX)
        };
        if candidates.is_empty() || room == 0 {
            return;
        }
        if let Some(done) = last_done.filter(|_| cfg.delay > 0) {
            let due = done.saturating_add(cfg.delay);
            if due > now {
                self.out.wake(due);
                return;
            }
        }
        for (place, old) in candidates.into_iter().take(room) {
            if !self.start_replacement(place, &old, cfg.order) {
                return;
            }
        }
    }

    /// Replaces the outdated live tasks `old` of `place` by a task of the current template
    /// (stop-first: `old` shut down in the same batch; start-first: shut down once the new
    /// one runs). `false`: this pass has created its share of tasks.
    fn start_replacement(&mut self, place: Place, old: &[&Task], order: UpdateOrder) -> bool {
        if self.created >= self.ctx.max_new_tasks {
            return false;
        }
        let mut hold = false;
        if order == UpdateOrder::StopFirst {
            for t in old {
                self.out.set_desired(t, TaskState::Shutdown);
                hold |= self.may_still_run(t);
            }
        }
        // Stop-first: the new task is prepared but held at `Ready` until the old one is
        // down (see `promote_held`).
        self.create_task(place, Vec::new(), hold)
    }

    /// Whether `t` may still have a process running that its node will stop and report:
    /// not terminal, and on a node that is ready (a lost node's task is not waited for).
    fn may_still_run(&self, t: &Task) -> bool {
        !t.status.state.is_terminal()
            && t.node_id
                .is_some_and(|n| self.ctx.nodes.get(&n).is_some_and(|n| n.ready))
    }

    /// A task held at desired `Ready` (a stop-first replacement) goes to `Running` once no
    /// other task of its place may still run ([`Self::may_still_run`]), or
    /// [`HELD_START_TIMEOUT`] after it was created, as swarmkit's restart supervisor
    /// (`DelayStart` with `waitStop`) lets it; until then the pass wakes at that deadline.
    fn promote_held(&mut self, held: &Task, all: &[&Task]) {
        let waiting = all.iter().any(|o| o.id != held.id && self.may_still_run(o));
        let deadline = held.created_at.saturating_add(HELD_START_TIMEOUT);
        if waiting && self.ctx.now < deadline {
            self.out.wake(deadline);
        } else {
            self.out.set_desired(held, TaskState::Running);
        }
    }

    fn remove(&mut self, t: &Task) {
        if deletable(t) {
            self.out.delete(t);
        } else {
            self.out.set_desired(t, TaskState::Remove);
        }
    }

    /// Chooses the slots to keep (all when there are no more than `replicas`) and removes
    /// the others, swarmkit's way: the nth copy on a node ranks n, unassigned slots last,
    /// running tasks before others, lower slots first; the first `replicas` stay.
    fn scale_down(&mut self, slots: &BTreeMap<u64, Vec<&Task>>, replicas: u64) -> Vec<u64> {
        if slots.len() as u64 <= replicas {
            return slots.keys().copied().collect();
        }
        let live = live_state(&self.new.spec.mode);
        struct Info {
            slot: u64,
            node: Option<NodeId>,
            running: bool,
            rank: u64,
        }
        let mut infos: Vec<Info> = slots
            .iter()
            .map(|(slot, tasks)| {
                let current = tasks
                    .iter()
                    .filter(|t| t.desired_state <= live)
                    .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
                Info {
                    slot: *slot,
                    node: current.and_then(|t| t.node_id),
                    running: current.is_some_and(|t| t.status.state == TaskState::Running),
                    rank: u64::MAX,
                }
            })
            .collect();
        infos.sort_by(|a, b| b.running.cmp(&a.running).then(a.slot.cmp(&b.slot)));
        let mut per_node: HashMap<NodeId, u64> = HashMap::new();
        for info in &mut infos {
            if let Some(n) = info.node {
                let c = per_node.entry(n).or_default();
                *c += 1;
                info.rank = *c;
            }
        }
        infos.sort_by(|a, b| {
            a.rank
                .cmp(&b.rank)
                .then(b.running.cmp(&a.running))
                .then(a.slot.cmp(&b.slot))
        });
        let keep = usize::try_from(replicas).unwrap_or(usize::MAX);
        let mut kept: Vec<u64> = infos.iter().take(keep).map(|i| i.slot).collect();
        kept.sort_unstable();
        for info in infos.iter().skip(keep) {
            for t in &slots[&info.slot] {
                self.remove(t);
            }
        }
        kept
    }

    fn global(&mut self, tasks: &[&Task]) {
        let spec = self.new.spec;
        let mut by_node: BTreeMap<NodeId, Vec<&Task>> = BTreeMap::new();
        for t in tasks {
            match t.node_id {
                Some(n) => by_node.entry(n).or_default().push(t),
                // A global task always has its node; one without has nowhere to run.
                None => self.remove(t),
            }
        }
        let mut node_ids: Vec<NodeId> = self.ctx.nodes.keys().copied().collect();
        node_ids.extend(by_node.keys().copied());
        node_ids.sort_unstable();
        node_ids.dedup();
        let mut places: Vec<(Place, &[&Task])> = Vec::new();
        for node in node_ids {
            let all = by_node.get(&node).map(Vec::as_slice).unwrap_or(&[]);
            let current = self.retire_old_iterations(all);
            let info = self.ctx.nodes.get(&node).copied();
            let eligible = info.is_some_and(|n| node_eligible(n, spec));
            let may_start = eligible && info.is_some_and(|n| n.active);
            self.slot(Place::Node(node), all, &current, eligible, may_start);
            if eligible && may_start && !spec.mode.is_job() {
                places.push((Place::Node(node), all));
            }
        }
        self.rolling_update(&places);
    }

    fn replicated_job(&mut self, tasks: &[&Task], max_concurrent: u64, total: u64) {
        let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
        for t in tasks {
            if t.slot == 0 {
                self.remove(t);
            } else {
                slots.entry(t.slot).or_default().push(t);
            }
        }
        // First the slots of the current iteration: in progress ones count against
        // MaxConcurrent (a restart waiting for its delay too, as in swarmkit).
        let mut in_progress = 0u64;
        let mut used: BTreeSet<u64> = BTreeSet::new();
        let mut fresh: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
        for (slot, all) in &slots {
            let current = self.retire_old_iterations(all);
            if current.is_empty() {
                fresh.insert(*slot, all.clone());
                continue;
            }
            used.insert(*slot);
            match self.slot(Place::Slot(*slot), all, &current, true, true) {
                SlotOutcome::Active | SlotOutcome::Waiting => in_progress += 1,
                SlotOutcome::Done | SlotOutcome::Finished | SlotOutcome::Empty => {}
            }
        }
        // Then new slots, lowest first, while concurrency allows. Slots that only hold
        // earlier iterations' tasks are reused (their history trimmed with them). The walk
        // stops as soon as nothing more can start and no such slot is left, so a huge
        // TotalCompletions costs nothing.
        let mut slot = 0u64;
        loop {
            slot += 1;
            let may_start = slot <= total
                && in_progress < max_concurrent
                && self.created < self.ctx.max_new_tasks;
            if !may_start && fresh.range(slot..).next().is_none() {
                break;
            }
            if used.contains(&slot) {
                continue;
            }
            let history: Vec<&Task> = fresh.remove(&slot).unwrap_or_default();
            if self.slot(Place::Slot(slot), &history, &[], true, may_start) == SlotOutcome::Active {
                in_progress += 1;
            }
        }
    }
}
