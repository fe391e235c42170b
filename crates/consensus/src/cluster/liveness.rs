//! The leader's view of node liveness and of its own readiness, kept in memory only.
//!
//! Owns: the heartbeat table (when each node last said it is alive) of the current
//! leadership term, and the log index this leader must have applied before its state is
//! safe to orchestrate on. Both belong to one *epoch*: this node leading in one term. Any
//! change of leader or term ends the epoch, so a new leader starts with an empty table
//! (the driver grants a grace period from `since`) and never trusts heartbeats it did not
//! receive itself.
//!
//! Heartbeats are not Raft writes: they cost one RPC and one map insert on the leader.
//!
//! Does not own: the timeouts (the driver in `berth-node` decides when silence means
//! down), Raft itself (the caller passes what Raft's metrics say as a [`LeaderView`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::state::NodeId;

/// What Raft's metrics say, reduced to what an epoch needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaderView {
    /// This node is the current leader.
    pub leading: bool,
    /// Current term.
    pub term: u64,
    /// Index of the last entry in this node's log.
    pub last_log_index: u64,
}

impl LeaderView {
    pub(crate) fn of(me: NodeId, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> Self {
        LeaderView {
            leading: m.current_leader == Some(me),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
        }
    }
}

#[derive(Debug)]
struct Epoch {
    term: u64,
    since: Instant,
    ready_index: u64,
    beats: BTreeMap<NodeId, Instant>,
}

/// The heartbeat table and readiness mark of this node's current leadership.
#[derive(Debug)]
pub(crate) struct LeaderLiveness {
    me: NodeId,
    epoch: Mutex<Option<Epoch>>,
}

impl LeaderLiveness {
    pub(crate) fn new(me: NodeId) -> Self {
        LeaderLiveness {
            me,
            epoch: Mutex::new(None),
        }
    }

    /// Bring the epoch in line with `view` (observed at `now`) and run `f` on it: a new
    /// epoch when this node leads in a term it had no epoch for, none when it does not lead.
    fn with_epoch<T>(
        &self,
        view: LeaderView,
        now: Instant,
        f: impl FnOnce(Option<&mut Epoch>) -> T,
    ) -> T {
        let mut guard = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if !view.leading {
            *guard = None;
        } else if guard.as_ref().is_none_or(|e| e.term != view.term) {
            // Raft's leader completeness: every entry committed before this term is in the
            // new leader's log, so it is at or below the log's last index right now.
            *guard = Some(Epoch {
                term: view.term,
                since: now,
                ready_index: view.last_log_index,
                beats: BTreeMap::new(),
            });
        }
        f(guard.as_mut())
    }

    /// Note a leadership change (called by the metrics watcher, so `since` is accurate).
    pub(crate) fn observe(&self, view: LeaderView, now: Instant) {
        self.with_epoch(view, now, |_| ());
    }

    /// Record a heartbeat of `node`; false when this node does not lead.
    pub(crate) fn record(&self, view: LeaderView, node: NodeId, now: Instant) -> bool {
        self.with_epoch(view, now, |epoch| match epoch {
            Some(e) => {
                e.beats.insert(node, now);
                true
            }
            None => false,
        })
    }

    /// `(since, last heartbeat per node)` with this node counted as alive at `now`; `None`
    /// when it does not lead.
    pub(crate) fn table(
        &self,
        view: LeaderView,
        now: Instant,
    ) -> Option<(Instant, BTreeMap<NodeId, Instant>)> {
        self.with_epoch(view, now, |epoch| {
            epoch.map(|e| {
                let mut beats = e.beats.clone();
                beats.insert(self.me, now);
                (e.since, beats)
            })
        })
    }

    /// The log index this leader must have applied before acting on its state; `None`
    /// when it does not lead.
    pub(crate) fn ready_index(&self, view: LeaderView, now: Instant) -> Option<u64> {
        self.with_epoch(view, now, |epoch| epoch.map(|e| e.ready_index))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn leading(term: u64, last_log_index: u64) -> LeaderView {
        LeaderView {
            leading: true,
            term,
            last_log_index,
        }
    }

    const FOLLOWING: LeaderView = LeaderView {
        leading: false,
        term: 9,
        last_log_index: 100,
    };

    #[test]
    fn table_belongs_to_one_term_of_leadership() {
        let live = LeaderLiveness::new(1);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(250);
        assert!(!live.record(FOLLOWING, 2, t0));
        assert_eq!(live.table(FOLLOWING, t0), None);
        assert_eq!(live.ready_index(FOLLOWING, t0), None);

        live.observe(leading(3, 40), t0);
        assert!(live.record(leading(3, 41), 2, t1));
        let (since, beats) = live.table(leading(3, 45), t1).unwrap();
        assert_eq!(since, t0);
        assert_eq!(beats, BTreeMap::from([(1, t1), (2, t1)]));
        // The readiness mark is the log's end when leadership began, not later growth.
        assert_eq!(live.ready_index(leading(3, 50), t1), Some(40));

        // Leadership lost: nothing; regained in a later term: a fresh, empty table.
        assert_eq!(live.table(FOLLOWING, t1), None);
        let t2 = t1 + Duration::from_secs(1);
        let (since, beats) = live.table(leading(5, 60), t2).unwrap();
        assert_eq!(since, t2);
        assert_eq!(beats, BTreeMap::from([(1, t2)]));
        assert_eq!(live.ready_index(leading(5, 70), t2), Some(60));
        // A new term without an observed loss in between resets too.
        assert!(live.record(leading(5, 70), 3, t2));
        let (_, beats) = live.table(leading(6, 80), t2).unwrap();
        assert!(!beats.contains_key(&3));
    }
}
