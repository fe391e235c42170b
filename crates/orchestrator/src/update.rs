//! The update state machine of a service (Docker's `UpdateStatus`; swarmkit
//! `manager/orchestrator/update/updater.go`, restated as a pure rule over what a pass
//! observes, with time passed in).
//!
//! The reconciler's rolling update replaces outdated tasks; this module decides what the
//! update as a whole is doing, from the service's stored [`UpdateStatus`], the
//! [`UpdateConfig`] in force and an [`UpdateObservation`] of the service's places made by
//! the same pass:
//! - **Start.** A service with outdated places (a live task of an older template) and no update in progress (no status, or
//!   a finished one) starts one: `updating`, `"update in progress"`, `StartedAt` = now.
//!   A manual rollback (`POST /services/{id}/update?rollback=previous`) stores
//!   `rollback_started` / `"manually requested rollback"` itself; this module then paces
//!   it with `RollbackConfig` (see [`policy_in_force`]).
//! - **Failures.** A task of the current template that was created since the update
//!   started and stopped on its own (`failed`, `rejected`, `complete`: not shut down by a
//!   manager nor orphaned by a lost node) before it ran, or within `Monitor` of starting
//!   to run, is a failure ([`counts_as_failure`]). Swarm's rule: its updater counts a
//!   task whose state passes `running` while it watches it, and watches each new task for
//!   `Monitor` after seeing it run.
//! - **Failure action.** When `FailureAction` is not `continue` and the failures over the
//!   service's places exceed `MaxFailureRatio` (`failures / places > ratio`, so with the
//!   default 0 one failure is enough):
//!   - `pause`: `paused`, `"update paused due to failure or early termination of task
//!     <id>"` (`rollback_paused`, `"rollback paused due to ..."` during a rollback);
//!   - `rollback`: the service goes back to its `PreviousSpec` ([`UpdateDecision::Rollback`]):
//!     `rollback_started`, `"update rolled back due to failure or early termination of
//!     task <id>"`, `StartedAt` = now. A rollback is never rolled back: a rollback's
//!     `rollback` failure action pauses it (as swarmkit does).
//! - **Paused.** A paused update (or rollback) replaces nothing more
//!   ([`update_proceeds`]); a new `docker service update` clears the status and starts
//!   again.
//! - **Completion.** Once no place is outdated or waiting for its replacement, and
//!   `Monitor` has passed since the last replacement started running, the update is
//!   `completed` (`"update completed"`) or the rollback `rollback_completed`
//!   (`"rollback completed"`), with `CompletedAt` = now. Until `Monitor` has passed,
//!   [`Step::wake_at`] says when to look again.
//!
//! Differences from swarmkit, all because the rule reads only the stored state: the ratio's
//! denominator is the service's places (swarmkit: the slots that were dirty when its
//! updater started, the same number for an update that began with every task outdated);
//! failures are counted among the task records the history retention keeps; and a leader
//! change does not forget them (swarmkit's updater keeps them in memory).

use serde::{Deserialize, Serialize};

use crate::model::{Nanos, Task, TaskState, UpdateConfig};

/// Docker `UpdateStatus.State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// An update is rolling out.
    Updating,
    /// The update stopped on failures (`FailureAction` `pause`).
    Paused,
    /// The update finished.
    Completed,
    /// A rollback (manual, or the failure action `rollback`) is rolling out.
    RollbackStarted,
    /// The rollback stopped on failures.
    RollbackPaused,
    /// The rollback finished.
    RollbackCompleted,
}

impl UpdateState {
    /// Docker's lowercase spelling (`"rollback_started"`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }

    /// A rollback (started, paused or completed).
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }

    /// Rolling out now (`updating` or `rollback_started`).
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }
}

/// Docker `Service.UpdateStatus`, as stored with the service. Times are unix ns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// `State`.
    pub state: UpdateState,
    /// `StartedAt`: when the update (or rollback) began.
    pub started_at: Option<Nanos>,
    /// `CompletedAt`: when it completed (`completed`, `rollback_completed` only).
    pub completed_at: Option<Nanos>,
    /// `Message`, Swarm's wording (`"update in progress"`).
    pub message: String,
}

impl UpdateStatus {
    /// The status a manual rollback starts with (swarmkit controlapi's wording).
    pub fn manual_rollback(now: Nanos) -> UpdateStatus {
        UpdateStatus {
            state: UpdateState::RollbackStarted,
            started_at: Some(now),
            completed_at: None,
            message: "manually requested rollback".into(),
        }
    }
}

/// Docker `UpdateConfig.FailureAction` (`RollbackConfig.FailureAction` too, where
/// `rollback` pauses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Stop the update where it is (the default).
    #[default]
    Pause,
    /// Ignore failures.
    Continue,
    /// Roll the service back to its previous spec.
    Rollback,
}

/// The policy that paces the service now: `RollbackConfig` while a rollback is under
/// way, `UpdateConfig` otherwise.
pub fn policy_in_force<'p>(
    status: Option<&UpdateStatus>,
    update: &'p UpdateConfig,
    rollback: &'p UpdateConfig,
) -> &'p UpdateConfig {
    if status.is_some_and(|s| s.state.is_rollback()) {
        rollback
    } else {
        update
    }
}

/// Whether the rolling update may replace more tasks: not while paused.
pub fn update_proceeds(status: Option<&UpdateStatus>) -> bool {
    !status.is_some_and(|s| matches!(s.state, UpdateState::Paused | UpdateState::RollbackPaused))
}

/// Whether `task` (of the service's current template) is a failure of the update that
/// started at `update_started`: created since then, stopped on its own, and either never
/// ran (`running_at` `None`) or stopped within `monitor` ns of starting to run.
pub fn counts_as_failure(
    task: &Task,
    running_at: Option<Nanos>,
    update_started: Nanos,
    monitor: Nanos,
) -> bool {
    let own_stop = matches!(
        task.status.state,
        TaskState::Failed | TaskState::Rejected | TaskState::Complete
    );
    if !own_stop || task.created_at < update_started {
        return false;
    }
    match running_at {
        None => true,
        Some(ran) => task.status.timestamp.saturating_sub(ran) <= monitor,
    }
}

/// What a pass saw of one service's places (slots, or nodes of a global service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateObservation {
    /// Places the service keeps.
    pub places: u64,
    /// Places that still hold a live task of an older template: an update starts only
    /// when there are some.
    pub outdated: u64,
    /// Places that hold an outdated live task or wait for their replacement to run (a
    /// task of the current template, not yet running, in a place that held an older one):
    /// the update completes only when there are none.
    pub pending: u64,
    /// Latest time a task of the current template started running, if any did.
    pub last_running_at: Option<Nanos>,
    /// Ids of the tasks that are failures of the update ([`counts_as_failure`]), oldest
    /// failure first.
    pub failures: Vec<String>,
}

/// The decision of one [`step`].
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateDecision {
    /// The status stays as it is.
    Keep,
    /// Store this status.
    Set(UpdateStatus),
    /// Roll the service back to its `PreviousSpec` and store this status
    /// (`rollback_started`).
    Rollback(UpdateStatus),
}

/// A [`step`]'s decision and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The decision.
    pub decision: UpdateDecision,
    /// When the monitor period after the last replacement ends, if still ahead.
    pub wake_at: Option<Nanos>,
}

/// One pass of the update state machine (see the module docs). `policy` is the one in
/// force ([`policy_in_force`]); `has_previous` says whether the service has a
/// `PreviousSpec` to roll back to (without one, `rollback` pauses).
pub fn step(
    status: Option<&UpdateStatus>,
    policy: &UpdateConfig,
    obs: &UpdateObservation,
    has_previous: bool,
    now: Nanos,
) -> Step {
    let keep = Step {
        decision: UpdateDecision::Keep,
        wake_at: None,
    };
    let Some(current) = status.filter(|s| s.state.in_progress()) else {
        if status.is_some_and(|s| !update_proceeds(Some(s))) || obs.outdated == 0 {
            return keep;
        }
        // Outdated places and no update under way: one starts.
        return Step {
            decision: UpdateDecision::Set(UpdateStatus {
                state: UpdateState::Updating,
                started_at: Some(now),
                completed_at: None,
                message: "update in progress".into(),
            }),
            wake_at: None,
        };
    };
    let rolling_back = current.state == UpdateState::RollbackStarted;
    if policy.failure_action != FailureAction::Continue {
        if let Some(task_id) = obs.failures.last() {
            let ratio = obs.failures.len() as f32 / obs.places.max(1) as f32;
            if ratio > policy.max_failure_ratio {
                let rollback = policy.failure_action == FailureAction::Rollback
                    && !rolling_back
                    && has_previous;
                if rollback {
                    return Step {
                        decision: UpdateDecision::Rollback(UpdateStatus {
                            state: UpdateState::RollbackStarted,
                            started_at: Some(now),
                            completed_at: None,
                            message: format!(
                                "update rolled back due to failure or early termination of task {task_id}"
                            ),
                        }),
                        wake_at: None,
                    };
                }
                let (state, what) = if rolling_back {
                    (UpdateState::RollbackPaused, "rollback")
                } else {
                    (UpdateState::Paused, "update")
                };
                return Step {
                    decision: UpdateDecision::Set(UpdateStatus {
                        state,
                        started_at: current.started_at,
                        completed_at: None,
                        message: format!(
                            "{what} paused due to failure or early termination of task {task_id}"
                        ),
                    }),
                    wake_at: None,
                };
            }
        }
    }
    if obs.pending > 0 {
        return keep;
    }
    if let Some(ran) = obs.last_running_at {
        let due = ran.saturating_add(policy.monitor);
        if due > now {
            return Step {
                decision: UpdateDecision::Keep,
                wake_at: Some(due),
            };
        }
    }
    let (state, message) = if rolling_back {
        (UpdateState::RollbackCompleted, "rollback completed")
    } else {
        (UpdateState::Completed, "update completed")
    };
    Step {
        decision: UpdateDecision::Set(UpdateStatus {
            state,
            started_at: current.started_at,
            completed_at: Some(now),
            message: message.into(),
        }),
        wake_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskStatus;

    const S: Nanos = 1_000_000_000;

    fn status(state: UpdateState) -> UpdateStatus {
        UpdateStatus {
            state,
            started_at: Some(10 * S),
            completed_at: None,
            message: "x".into(),
        }
    }

    fn obs(
        places: u64,
        pending: u64,
        last_running_at: Option<Nanos>,
        failures: &[&str],
    ) -> UpdateObservation {
        UpdateObservation {
            places,
            outdated: pending,
            pending,
            last_running_at,
            failures: failures.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn policy(action: FailureAction, monitor: Nanos, ratio: f32) -> UpdateConfig {
        UpdateConfig {
            failure_action: action,
            monitor,
            max_failure_ratio: ratio,
            ..UpdateConfig::default()
        }
    }

    fn set(
        state: UpdateState,
        started: Nanos,
        completed: Option<Nanos>,
        msg: &str,
    ) -> UpdateDecision {
        UpdateDecision::Set(UpdateStatus {
            state,
            started_at: Some(started),
            completed_at: completed,
            message: msg.into(),
        })
    }

    #[test]
    fn state_machine_table() {
        use FailureAction::*;
        use UpdateState::*;
        let now = 20 * S;
        let rolled = |id: &str| {
            UpdateDecision::Rollback(UpdateStatus {
                state: RollbackStarted,
                started_at: Some(now),
                completed_at: None,
                message: format!(
                    "update rolled back due to failure or early termination of task {id}"
                ),
            })
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Option<UpdateState>,
            UpdateConfig,
            UpdateObservation,
            bool,
            UpdateDecision,
            Option<Nanos>,
        )> = vec![
            (
                "nothing outdated, no status",
                None,
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, None, &[]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "outdated places start an update",
                None,
                policy(Pause, 5 * S, 0.0),
                obs(3, 3, None, &[]),
                true,
                set(Updating, now, None, "update in progress"),
                None,
            ),
            (
                "a finished update and a new spec start again",
                Some(Completed),
                policy(Pause, 5 * S, 0.0),
                obs(3, 1, None, &[]),
                true,
                set(Updating, now, None, "update in progress"),
                None,
            ),
            (
                "paused stays paused",
                Some(Paused),
                policy(Pause, 5 * S, 0.0),
                obs(3, 2, None, &[]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "rollback paused stays paused",
                Some(RollbackPaused),
                policy(Pause, 5 * S, 0.0),
                obs(3, 2, None, &[]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "in progress, no failure",
                Some(Updating),
                policy(Pause, 5 * S, 0.0),
                obs(3, 2, Some(19 * S), &[]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "done but monitoring",
                Some(Updating),
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, Some(18 * S), &[]),
                true,
                UpdateDecision::Keep,
                Some(23 * S),
            ),
            (
                "done after monitor",
                Some(Updating),
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, Some(15 * S), &[]),
                true,
                set(Completed, 10 * S, Some(now), "update completed"),
                None,
            ),
            (
                "monitor 0 completes at once",
                Some(Updating),
                policy(Pause, 0, 0.0),
                obs(3, 0, Some(now), &[]),
                true,
                set(Completed, 10 * S, Some(now), "update completed"),
                None,
            ),
            (
                "failure pauses",
                Some(Updating),
                policy(Pause, 5 * S, 0.0),
                obs(3, 1, None, &["t1"]),
                true,
                set(
                    Paused,
                    10 * S,
                    None,
                    "update paused due to failure or early termination of task t1",
                ),
                None,
            ),
            (
                "failure pauses even when all replaced",
                Some(Updating),
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, Some(19 * S), &["t1", "t2"]),
                true,
                set(
                    Paused,
                    10 * S,
                    None,
                    "update paused due to failure or early termination of task t2",
                ),
                None,
            ),
            (
                "continue ignores failures",
                Some(Updating),
                policy(Continue, 5 * S, 0.0),
                obs(3, 1, None, &["t1"]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "ratio tolerates 1 of 4 at 0.25",
                Some(Updating),
                policy(Pause, 5 * S, 0.25),
                obs(4, 1, None, &["t1"]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "ratio exceeded at 2 of 4",
                Some(Updating),
                policy(Pause, 5 * S, 0.25),
                obs(4, 1, None, &["t1", "t2"]),
                true,
                set(
                    Paused,
                    10 * S,
                    None,
                    "update paused due to failure or early termination of task t2",
                ),
                None,
            ),
            (
                "failure rolls back",
                Some(Updating),
                policy(Rollback, 5 * S, 0.0),
                obs(3, 1, None, &["t9"]),
                true,
                rolled("t9"),
                None,
            ),
            (
                "rollback without a previous spec pauses",
                Some(Updating),
                policy(Rollback, 5 * S, 0.0),
                obs(3, 1, None, &["t9"]),
                false,
                set(
                    Paused,
                    10 * S,
                    None,
                    "update paused due to failure or early termination of task t9",
                ),
                None,
            ),
            (
                "a rollback is never rolled back",
                Some(RollbackStarted),
                policy(Rollback, 5 * S, 0.0),
                obs(3, 1, None, &["t3"]),
                true,
                set(
                    RollbackPaused,
                    10 * S,
                    None,
                    "rollback paused due to failure or early termination of task t3",
                ),
                None,
            ),
            (
                "rollback failure pauses",
                Some(RollbackStarted),
                policy(Pause, 5 * S, 0.0),
                obs(3, 1, None, &["t3"]),
                true,
                set(
                    RollbackPaused,
                    10 * S,
                    None,
                    "rollback paused due to failure or early termination of task t3",
                ),
                None,
            ),
            (
                "rollback in progress",
                Some(RollbackStarted),
                policy(Pause, 5 * S, 0.0),
                obs(3, 1, None, &[]),
                true,
                UpdateDecision::Keep,
                None,
            ),
            (
                "rollback completes",
                Some(RollbackStarted),
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, Some(12 * S), &[]),
                true,
                set(RollbackCompleted, 10 * S, Some(now), "rollback completed"),
                None,
            ),
            (
                "rollback monitors too",
                Some(RollbackStarted),
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, Some(19 * S), &[]),
                true,
                UpdateDecision::Keep,
                Some(24 * S),
            ),
            (
                "rolled back and nothing outdated",
                Some(RollbackCompleted),
                policy(Pause, 5 * S, 0.0),
                obs(3, 0, None, &[]),
                true,
                UpdateDecision::Keep,
                None,
            ),
        ];
        for (name, state, policy, obs, prev, decision, wake) in cases {
            let st = state.map(status);
            let got = step(st.as_ref(), &policy, &obs, prev, now);
            assert_eq!(got.decision, decision, "{name}");
            assert_eq!(got.wake_at, wake, "{name}");
        }
    }

    #[test]
    fn failure_counting_table() {
        let task = |state: TaskState, created: Nanos, at: Nanos| Task {
            id: "t".into(),
            service_id: "s".into(),
            slot: 1,
            node_id: Some(1),
            service_version: 1,
            image: "busybox".into(),
            job_iteration: 0,
            desired_state: TaskState::Running,
            status: TaskStatus::new(state, at, "x"),
            created_at: created,
            version: 1,
            restart_times: Vec::new(),
            template_version: 1,
            running_at: None,
        };
        // (name, task, running_at, counts) with the update started at 10 s, monitor 5 s.
        let cases = [
            (
                "failed before running",
                task(TaskState::Failed, 11 * S, 12 * S),
                None,
                true,
            ),
            (
                "rejected",
                task(TaskState::Rejected, 11 * S, 12 * S),
                None,
                true,
            ),
            (
                "exited 0 within monitor",
                task(TaskState::Complete, 11 * S, 14 * S),
                Some(12 * S),
                true,
            ),
            (
                "failed within monitor",
                task(TaskState::Failed, 11 * S, 17 * S),
                Some(12 * S),
                true,
            ),
            (
                "failed after monitor",
                task(TaskState::Failed, 11 * S, 18 * S),
                Some(12 * S),
                false,
            ),
            (
                "shut down by a manager",
                task(TaskState::Shutdown, 11 * S, 13 * S),
                Some(12 * S),
                false,
            ),
            (
                "orphaned by a lost node",
                task(TaskState::Orphaned, 11 * S, 13 * S),
                Some(12 * S),
                false,
            ),
            (
                "still running",
                task(TaskState::Running, 11 * S, 12 * S),
                Some(12 * S),
                false,
            ),
            (
                "created before the update",
                task(TaskState::Failed, 9 * S, 12 * S),
                None,
                false,
            ),
        ];
        for (name, t, ran, counts) in cases {
            assert_eq!(counts_as_failure(&t, ran, 10 * S, 5 * S), counts, "{name}");
        }
    }

    #[test]
    fn policy_and_pause_helpers() {
        let up = policy(FailureAction::Rollback, 1, 0.0);
        let back = policy(FailureAction::Pause, 2, 0.0);
        assert_eq!(policy_in_force(None, &up, &back), &up);
        let st = status(UpdateState::Updating);
        assert_eq!(policy_in_force(Some(&st), &up, &back), &up);
        let st = UpdateStatus::manual_rollback(5);
        assert_eq!(policy_in_force(Some(&st), &up, &back), &back);
        assert!(update_proceeds(None));
        assert!(update_proceeds(Some(&st)));
        assert!(!update_proceeds(Some(&status(UpdateState::Paused))));
        assert!(!update_proceeds(Some(&status(UpdateState::RollbackPaused))));
        let json = serde_json::to_value(UpdateState::RollbackCompleted).unwrap();
        assert_eq!(json, "rollback_completed");
        assert_eq!(
            UpdateState::RollbackCompleted.as_str(),
            "rollback_completed"
        );
    }
}
