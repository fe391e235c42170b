//! What may follow what: the container lifecycle as a pure state machine.
//!
//! No I/O here. [`Status`] is what the runtime observed (from disk and the shim);
//! [`Status::check`] says whether an [`Action`] is allowed, [`Status::after`] what the status
//! becomes when it succeeds. `Runtime` asks before it acts.
//!
//! ```text
//!            start              pause
//!  Created ---------> Running <-------> Paused
//!     ^   \             |      unpause    |
//!     |    \ delete     | exit / stop / kill
//!     |     v           v                 |
//!     |   (gone) <--- Exited <------------+
//!     |      delete     |
//!     +-----------------+ start / restart (same rootfs, new process)
//! ```

use serde::{Deserialize, Serialize};

/// Observed status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Rootfs and bundle prepared; no process has run yet.
    Created,
    /// Its init process runs (under a live shim).
    Running,
    /// Frozen through the cgroup freezer.
    Paused,
    /// Its init process has exited; the exit status is recorded.
    Exited,
}

/// Something a caller asks of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    /// SIGTERM (or the configured signal), SIGKILL after the timeout. A no-op when not running.
    Stop,
    Kill,
    Pause,
    Unpause,
    Exec,
    Attach,
    Stats,
    Top,
    /// Delete without force.
    Delete,
    /// Delete with force: stops the container first.
    ForceDelete,
    Restart,
    Wait,
}

impl Status {
    /// Whether `action` is allowed in this status.
    pub fn check(self, action: Action) -> bool {
        use Action as A;
        use Status as S;
        match action {
            A::Start => matches!(self, S::Created | S::Exited),
            A::Stop | A::ForceDelete | A::Restart | A::Wait => true,
            A::Kill => matches!(self, S::Running | S::Paused),
            A::Pause => self == S::Running,
            A::Unpause => self == S::Paused,
            A::Exec => self == S::Running,
            A::Attach | A::Stats | A::Top => matches!(self, S::Running | S::Paused),
            A::Delete => matches!(self, S::Created | S::Exited),
        }
    }

    /// The status once `action` has completed (for actions whose effect is immediate).
    /// `Kill` and `Wait` do not change the status by themselves: the process exiting does.
    pub fn after(self, action: Action) -> Option<Status> {
        if !self.check(action) {
            return None;
        }
        use Action as A;
        use Status as S;
        Some(match action {
            A::Start | A::Restart | A::Unpause => S::Running,
            A::Pause => S::Paused,
            A::Stop => match self {
                S::Created => S::Created,
                _ => S::Exited,
            },
            A::Kill | A::Exec | A::Attach | A::Stats | A::Top | A::Wait => self,
            A::Delete | A::ForceDelete => S::Exited,
        })
    }

    /// Whether the container has a live process (and hence a live shim).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

/// How a stop proceeds, decided up front: send `signal`, wait `grace_ms`, then SIGKILL.
/// A paused container is thawed first so that it can act on the signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPlan {
    pub thaw_first: bool,
    pub signal: i32,
    pub grace_ms: u64,
}

/// Plans a stop of a container in `status`; `None` when there is nothing to stop.
pub fn plan_stop(status: Status, signal: i32, grace_ms: u64) -> Option<StopPlan> {
    status.is_live().then_some(StopPlan {
        thaw_first: status == Status::Paused,
        signal,
        grace_ms,
    })
}

/// How the runtime derives the status from what it sees on disk and from the shim.
pub fn observe(shim_alive: bool, paused: bool, exit_recorded: bool, ever_started: bool) -> Status {
    match (shim_alive, exit_recorded) {
        (true, false) if paused => Status::Paused,
        (true, false) => Status::Running,
        (_, true) => Status::Exited,
        // A shim that died without recording an exit: the process is gone.
        (false, false) if ever_started => Status::Exited,
        (false, false) => Status::Created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Status; 4] = [
        Status::Created,
        Status::Running,
        Status::Paused,
        Status::Exited,
    ];

    #[test]
    fn start_only_from_created_or_exited() {
        let ok: Vec<_> = ALL.iter().filter(|s| s.check(Action::Start)).collect();
        assert_eq!(ok, [&Status::Created, &Status::Exited]);
    }

    #[test]
    fn pause_and_unpause_are_inverse() {
        assert_eq!(Status::Running.after(Action::Pause), Some(Status::Paused));
        assert_eq!(Status::Paused.after(Action::Unpause), Some(Status::Running));
        assert_eq!(Status::Paused.after(Action::Pause), None);
        assert_eq!(Status::Exited.after(Action::Unpause), None);
        assert_eq!(Status::Created.after(Action::Pause), None);
    }

    #[test]
    fn delete_needs_a_stopped_container_unless_forced() {
        assert!(!Status::Running.check(Action::Delete));
        assert!(!Status::Paused.check(Action::Delete));
        assert!(Status::Exited.check(Action::Delete));
        assert!(Status::Created.check(Action::Delete));
        assert!(ALL.iter().all(|s| s.check(Action::ForceDelete)));
    }

    #[test]
    fn exec_only_while_running() {
        let ok: Vec<_> = ALL.iter().filter(|s| s.check(Action::Exec)).collect();
        assert_eq!(ok, [&Status::Running]);
    }

    #[test]
    fn kill_needs_a_process() {
        assert!(Status::Running.check(Action::Kill));
        assert!(Status::Paused.check(Action::Kill));
        assert!(!Status::Exited.check(Action::Kill));
        assert!(!Status::Created.check(Action::Kill));
    }

    #[test]
    fn stop_plan_thaws_paused_and_skips_dead() {
        assert_eq!(plan_stop(Status::Exited, 15, 10), None);
        assert_eq!(plan_stop(Status::Created, 15, 10), None);
        let p = plan_stop(Status::Paused, 15, 500).unwrap();
        assert!(p.thaw_first);
        assert_eq!((p.signal, p.grace_ms), (15, 500));
        assert!(!plan_stop(Status::Running, 15, 0).unwrap().thaw_first);
    }

    #[test]
    fn observation_rules() {
        assert_eq!(observe(true, false, false, true), Status::Running);
        assert_eq!(observe(true, true, false, true), Status::Paused);
        assert_eq!(observe(false, false, true, true), Status::Exited);
        assert_eq!(observe(true, false, true, true), Status::Exited);
        assert_eq!(observe(false, false, false, false), Status::Created);
        assert_eq!(observe(false, false, false, true), Status::Exited);
    }

    #[test]
    fn stop_of_created_stays_created() {
        assert_eq!(Status::Created.after(Action::Stop), Some(Status::Created));
        assert_eq!(Status::Running.after(Action::Stop), Some(Status::Exited));
    }
}
