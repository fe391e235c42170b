//! Log compaction driven by the replicated settings (`Raft.SnapshotInterval`,
//! `Raft.LogEntriesForSlowFollowers`), so `docker swarm update --snapshot-interval` takes
//! effect on every node without a restart.
//!
//! openraft reads its snapshot policy and `max_in_snapshot_log_to_keep` once, at start;
//! berth therefore runs it with `SnapshotPolicy::Never` and no automatic purge, and this
//! watcher asks for a snapshot and a purge when the settings say so.
//!
//! Owns: the decision ([`next_step`], pure) and the watcher that feeds it Raft's metrics.
//! Does not own: building or installing snapshots (openraft and the store).
//!
//! ```text
//!  raft metrics (applied, snapshot, purged) ─┐
//!  state.settings (interval, keep) ──────────┴─> next_step ─> trigger().snapshot()
//!                                                           └─> trigger().purge_log(upto)
//! ```

use openraft::BasicNode;

use crate::raft_types::Raft;
use crate::state::{ClusterState, NodeId};
use crate::store::StateView;

/// What Raft's metrics say about the log, reduced to indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogMarks {
    /// Last applied entry.
    pub applied: Option<u64>,
    /// Last entry in the current snapshot.
    pub snapshot: Option<u64>,
    /// Last purged entry.
    pub purged: Option<u64>,
}

impl LogMarks {
    fn of(m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Self {
        LogMarks {
            applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
        }
    }
}

/// One thing to ask of Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompactionStep {
    /// Build a snapshot of the applied state.
    Snapshot,
    /// Purge the log up to and including this index (all of it inside the snapshot).
    Purge(u64),
}

/// What to do next with `marks`, given `interval` (entries between snapshots) and `keep`
/// (entries kept behind the snapshot). `requested`: the applied index at which a snapshot
/// was last asked for (building takes a while; not asked again until `interval` more
/// entries are applied or the snapshot arrives).
pub(crate) fn next_step(
    marks: LogMarks,
    interval: u64,
    keep: u64,
    requested: Option<u64>,
) -> Option<CompactionStep> {
    let applied = marks.applied?;
    let since = marks
        .snapshot
        .max(requested)
        .map_or(applied + 1, |s| applied - s.min(applied));
    if since >= interval.max(1) {
        return Some(CompactionStep::Snapshot);
    }
    let snapshot = marks.snapshot?;
    let upto = snapshot.checked_sub(keep)?;
    (marks.purged.is_none_or(|p| p < upto)).then_some(CompactionStep::Purge(upto))
}

/// Follows Raft's metrics and this node's settings; ends when Raft stops.
pub(crate) async fn watch(raft: Raft, state: StateView) {
    let mut metrics = raft.metrics();
    let mut applied = state.applied_watch();
    let mut requested: Option<u64> = None;
    let mut purge_asked: Option<u64> = None;
    loop {
        let marks = LogMarks::of(&metrics.borrow_and_update());
        let (interval, keep) = state.read(|s: &ClusterState| {
            (
                s.settings.snapshot_interval,
                s.settings.log_entries_for_slow_followers,
            )
        });
        match next_step(marks, interval, keep, requested) {
            Some(CompactionStep::Snapshot) => {
                requested = marks.applied;
                if let Err(e) = raft.trigger().snapshot().await {
                    tracing::debug!(error = %e, "snapshot not triggered: raft stopped");
                    return;
                }
            }
            // openraft purges once replication no longer needs the entries; ask once.
            Some(CompactionStep::Purge(upto)) if purge_asked != Some(upto) => {
                purge_asked = Some(upto);
                if let Err(e) = raft.trigger().purge_log(upto).await {
                    tracing::debug!(error = %e, "purge not triggered: raft stopped");
                    return;
                }
            }
            _ => {}
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            // A settings change alone moves no metric.
            r = applied.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(applied: u64, snapshot: Option<u64>, purged: Option<u64>) -> LogMarks {
        LogMarks {
            applied: Some(applied),
            snapshot,
            purged,
        }
    }

    #[test]
    fn a_snapshot_every_interval_then_a_purge_keeping_the_tail() {
        assert_eq!(next_step(LogMarks::default(), 20, 5, None), None);
        assert_eq!(next_step(marks(10, None, None), 20, 5, None), None);
        assert_eq!(
            next_step(marks(19, None, None), 20, 5, None),
            Some(CompactionStep::Snapshot)
        );
        // Asked at 19: not again before 39, unless it arrives.
        assert_eq!(next_step(marks(30, None, None), 20, 5, Some(19)), None);
        assert_eq!(
            next_step(marks(30, Some(19), None), 20, 5, Some(19)),
            Some(CompactionStep::Purge(14))
        );
        assert_eq!(
            next_step(marks(30, Some(19), Some(14)), 20, 5, Some(19)),
            None
        );
        assert_eq!(
            next_step(marks(39, Some(19), Some(14)), 20, 5, Some(19)),
            Some(CompactionStep::Snapshot)
        );
        // Keeping more than the snapshot holds purges nothing.
        assert_eq!(
            next_step(marks(30, Some(19), None), 20, 100, Some(19)),
            None
        );
    }

    #[test]
    fn a_shorter_interval_applies_at_once() {
        // 4,000 entries since the snapshot: nothing at 5,000, a snapshot at 1,000.
        let m = marks(6000, Some(2000), Some(1000));
        assert_eq!(next_step(m, 5000, 1000, Some(2000)), None);
        assert_eq!(
            next_step(m, 1000, 1000, Some(2000)),
            Some(CompactionStep::Snapshot)
        );
    }
}
