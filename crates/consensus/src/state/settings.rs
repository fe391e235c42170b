//! The cluster's settings: the parts of Swarm's `ClusterSpec` berth applies (`docker swarm
//! update`, docker-py `client.swarm.update`), replicated so every node reads the same.
//!
//! Owns the values and their checks. Does not own applying them: the orchestrator reads
//! the history limit, the agents and the leader the heartbeat period, each node's
//! compaction watcher (`cluster/compaction.rs`) the Raft log settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Rejection, Response};
use super::ClusterState;

/// Swarm's `ClusterSpec` fields berth honours, with berth's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Log index of the entry that last changed these settings or the join tokens (the
    /// cluster object's `Version.Index`; 0 before init).
    pub version: u64,
    /// `Labels` of the cluster spec.
    pub labels: BTreeMap<String, String>,
    /// `Orchestration.TaskHistoryRetentionLimit`: tasks kept per slot, the live one
    /// included; negative: never trimmed.
    pub task_history_retention_limit: i64,
    /// `Raft.SnapshotInterval`: applied entries between two snapshots (each node builds
    /// its own); at least 1.
    pub snapshot_interval: u64,
    /// `Raft.LogEntriesForSlowFollowers`: entries kept in the log behind a snapshot, so a
    /// follower that lags by fewer gets entries instead of the whole snapshot.
    pub log_entries_for_slow_followers: u64,
    /// `Dispatcher.HeartbeatPeriod` in nanoseconds: how often every node tells the leader
    /// it is alive; a node silent for [`DOWN_AFTER_HEARTBEATS`] periods is down.
    pub heartbeat_period_ns: u64,
}

/// A node that missed this many heartbeat periods is down (its tasks are replaced).
pub const DOWN_AFTER_HEARTBEATS: u32 = 6;

/// Shortest heartbeat period accepted (10 ms): shorter would be a busy loop of RPCs.
pub const MIN_HEARTBEAT_PERIOD_NS: u64 = 10_000_000;

impl Default for ClusterSettings {
    /// berth's defaults: 5 tasks of history, a snapshot every 5,000 entries keeping 1,000,
    /// heartbeats every 250 ms (so a silent node is down after 1.5 s; Swarm: 5 s and 15 s).
    fn default() -> Self {
        ClusterSettings {
            version: 0,
            labels: BTreeMap::new(),
            task_history_retention_limit: 5,
            snapshot_interval: 5000,
            log_entries_for_slow_followers: 1000,
            heartbeat_period_ns: 250_000_000,
        }
    }
}

impl ClusterSettings {
    /// Why these settings cannot be applied: the field (Swarm's spec path) and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.snapshot_interval == 0 {
            return Err("Raft.SnapshotInterval must be at least 1".into());
        }
        if self.heartbeat_period_ns < MIN_HEARTBEAT_PERIOD_NS {
            return Err(format!(
                "Dispatcher.HeartbeatPeriod must be at least {} ms",
                MIN_HEARTBEAT_PERIOD_NS / 1_000_000
            ));
        }
        Ok(())
    }

    /// The history limit as a count of tasks kept per slot (`usize::MAX`: unlimited).
    pub fn task_history_retention(&self) -> usize {
        usize::try_from(self.task_history_retention_limit).unwrap_or(usize::MAX)
    }

    /// How often nodes heartbeat.
    pub fn heartbeat_period(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.heartbeat_period_ns)
    }

    /// How long a node may stay silent before it is down.
    pub fn down_after(&self) -> std::time::Duration {
        self.heartbeat_period() * DOWN_AFTER_HEARTBEATS
    }
}

impl ClusterState {
    /// `UpdateClusterSettings`: replaces the settings when `expected_version` is theirs.
    pub(super) fn update_settings(
        &mut self,
        index: u64,
        expected_version: u64,
        settings: &ClusterSettings,
    ) -> Result<Response, Rejection> {
        if expected_version != self.settings.version {
            return Err(Rejection::ClusterVersion {
                expected: expected_version,
                actual: self.settings.version,
            });
        }
        settings
            .validate()
            .map_err(|detail| Rejection::SettingsInvalid { detail })?;
        self.settings = ClusterSettings {
            version: index,
            ..settings.clone()
        };
        Ok(Response::Settings {
            settings: self.settings.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, NodeRole, NodeSpec};

    fn initialised() -> ClusterState {
        let mut state = ClusterState::default();
        state.apply(
            3,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: NodeSpec {
                    id: 1,
                    hostname: "m1".into(),
                    addr: "127.0.0.1:7001".into(),
                    role: NodeRole::Manager,
                    cert_fingerprint: "fp1".into(),
                },
                networking: None,
            },
        );
        state
    }

    #[test]
    fn init_records_the_defaults_at_its_index() {
        let state = initialised();
        assert_eq!(
            state.settings,
            ClusterSettings {
                version: 3,
                ..ClusterSettings::default()
            }
        );
    }

    #[test]
    fn an_update_needs_the_current_version_and_valid_values() {
        let mut state = initialised();
        let wanted = ClusterSettings {
            task_history_retention_limit: -1,
            heartbeat_period_ns: 1_000_000_000,
            ..ClusterSettings::default()
        };
        let update =
            |expected_version, settings: &ClusterSettings| Command::UpdateClusterSettings {
                expected_version,
                settings: settings.clone(),
            };
        assert_eq!(
            state.apply(4, &update(2, &wanted)),
            Response::Rejected {
                rejection: Rejection::ClusterVersion {
                    expected: 2,
                    actual: 3
                }
            }
        );
        let zero = ClusterSettings {
            snapshot_interval: 0,
            ..wanted.clone()
        };
        assert!(matches!(
            state.apply(5, &update(3, &zero)),
            Response::Rejected {
                rejection: Rejection::SettingsInvalid { .. }
            }
        ));
        let r = state.apply(6, &update(3, &wanted));
        let Response::Settings { settings } = r else {
            panic!("unexpected {r:?}")
        };
        assert_eq!(settings.version, 6);
        assert_eq!(settings.task_history_retention(), usize::MAX);
        assert_eq!(settings.down_after(), std::time::Duration::from_secs(6));
        assert_eq!(state.settings, settings);
        // Rotating a token changes the cluster object too.
        state.apply(
            7,
            &Command::RotateJoinToken {
                role: NodeRole::Worker,
            },
        );
        assert_eq!(state.settings.version, 7);
    }
}
