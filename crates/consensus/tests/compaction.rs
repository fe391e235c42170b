//! Snapshots and log compaction: the log is purged behind snapshots, a late joiner is
//! brought up to date by a snapshot, and a restarted node recovers from snapshot + log.

mod common;

use std::time::Duration;

use berth_consensus::cluster::RaftTuning;
use berth_consensus::{ClusterSettings, Command, NodeRole, ReadConsistency};
use common::{eventually, Harness};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_is_compacted_and_late_joiner_installs_snapshot() {
    let h = Harness::new();
    let tuning = RaftTuning {
        snapshot_every: 20,
        keep_after_snapshot: 5,
        ..RaftTuning::default()
    };
    let mut m1 = h.init_with("m1", tuning).await;
    for _ in 0..60 {
        m1.node()
            .rotate_join_token(NodeRole::Manager)
            .await
            .expect("write");
    }
    let (snapshot, purged) = eventually("snapshot built and log purged", WAIT, || async {
        let m = m1.node().raft_metrics().borrow().clone();
        match (m.snapshot, m.purged) {
            (Some(s), Some(p)) if s.index >= 40 && p.index > 0 => Some((s, p)),
            _ => None,
        }
    })
    .await;
    assert!(
        purged.index <= snapshot.index,
        "purged {purged:?} beyond snapshot {snapshot:?}"
    );

    // A worker joining now needs entries that were purged: it gets the snapshot.
    let token = m1
        .node()
        .join_tokens()
        .await
        .expect("tokens")
        .worker
        .to_string();
    let mut w1 = h.join("w1", &m1, &token).await;
    eventually("joiner has the compacted history", WAIT, || async {
        let s = w1.node().state(ReadConsistency::Local).await.ok()?;
        (s.tokens.manager == 60 && s.nodes.len() == 2).then_some(())
    })
    .await;
    let w1_metrics = w1.node().raft_metrics().borrow().clone();
    assert!(
        w1_metrics.snapshot.is_some(),
        "the joiner installed a snapshot: {:?}",
        w1_metrics.snapshot
    );

    // Both restart from snapshot + remaining log and keep working.
    w1.stop().await;
    m1.stop().await;
    m1.restart().await;
    w1.restart().await;
    m1.node().wait_for_leader(WAIT).await.expect("leader");
    m1.node()
        .rotate_join_token(NodeRole::Manager)
        .await
        .expect("write after restart");
    eventually("worker follows after restart", WAIT, || async {
        let s = w1.node().state(ReadConsistency::Local).await.ok()?;
        (s.tokens.manager == 61).then_some(())
    })
    .await;
    w1.stop().await;
    m1.stop().await;
}

/// `Raft.SnapshotInterval` and `Raft.LogEntriesForSlowFollowers` are replicated settings:
/// changed at run time (`docker swarm update --snapshot-interval`), they apply at once on
/// every node, leader and follower, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_settings_apply_at_run_time_on_every_node() {
    let h = Harness::new();
    let mut m1 = h.init("m1").await;
    let token = m1
        .node()
        .join_tokens()
        .await
        .expect("tokens")
        .manager
        .to_string();
    let mut m2 = h.join("m2", &m1, &token).await;
    for _ in 0..30 {
        m1.node()
            .rotate_join_token(NodeRole::Worker)
            .await
            .expect("write");
    }
    // The default interval (5,000) is far away: no snapshot yet.
    assert_eq!(m1.node().raft_metrics().borrow().snapshot, None);
    let settings = m1
        .node()
        .state(ReadConsistency::Local)
        .await
        .expect("state")
        .settings;
    m1.node()
        .write(Command::UpdateClusterSettings {
            expected_version: settings.version,
            settings: ClusterSettings {
                snapshot_interval: 10,
                log_entries_for_slow_followers: 3,
                ..settings
            },
        })
        .await
        .expect("settings");
    for slot in [&m1, &m2] {
        eventually("snapshot and purge by the new settings", WAIT, || async {
            let m = slot.node().raft_metrics().borrow().clone();
            match (m.snapshot, m.purged) {
                (Some(s), Some(p)) if s.index >= 30 && p.index + 3 == s.index => Some(()),
                _ => None,
            }
        })
        .await;
    }
    m2.stop().await;
    m1.stop().await;
}
