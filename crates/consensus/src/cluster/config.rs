//! Node configuration and the node's own record in its data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ConsensusError;
use crate::state::NodeId;
use crate::transport::task_logs::TaskLogSource;

/// How to run one cluster node.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Directory for `node.json`, `pki/` and `raft.redb` (e.g. `/var/lib/berth/cluster`).
    pub data_dir: PathBuf,
    /// Address the gRPC server binds (`0.0.0.0:2377`; port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// `host:port` other nodes use to reach this node. `None`: the bound address at
    /// init/join, the recorded one at restart.
    pub advertise_addr: Option<String>,
    /// Hostname shown in node lists.
    pub hostname: String,
    /// Raft timing and compaction.
    pub raft: RaftTuning,
    /// Default address pools of a new cluster (`swarm init --default-addr-pool`,
    /// `--default-addr-pool-mask-length`); used only by `init`.
    pub address_pools: crate::state::AddressPools,
    /// What answers other nodes' `Tasks.Logs` calls (this node's task containers); `None`:
    /// such calls are refused (`Unimplemented`).
    pub task_logs: Option<Arc<dyn TaskLogSource>>,
}

impl ClusterConfig {
    /// Defaults for `data_dir` and `listen_addr`.
    pub fn new(data_dir: impl Into<PathBuf>, listen_addr: SocketAddr) -> Self {
        ClusterConfig {
            data_dir: data_dir.into(),
            listen_addr,
            advertise_addr: None,
            hostname: std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".to_string()),
            raft: RaftTuning::default(),
            address_pools: crate::state::AddressPools::default(),
            task_logs: None,
        }
    }
}

/// Raft timing (milliseconds) and snapshot policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTuning {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries: the initial
    /// `Raft.SnapshotInterval` of a cluster this node initialises (then the replicated
    /// setting rules, see `compaction.rs`).
    pub snapshot_every: u64,
    /// Entries kept in the log behind the snapshot, for lagging followers: the initial
    /// `Raft.LogEntriesForSlowFollowers` of a cluster this node initialises.
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    /// Heartbeat 100 ms, elections after 500 to 1,000 ms, and the default cluster
    /// settings' snapshot interval (5,000) and kept entries (1,000).
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every: crate::state::ClusterSettings::default().snapshot_interval,
            keep_after_snapshot: crate::state::ClusterSettings::default()
                .log_entries_for_slow_followers,
        }
    }
}

impl RaftTuning {
    pub(crate) fn openraft_config(&self) -> Result<openraft::Config, ConsensusError> {
        openraft::Config {
            cluster_name: "berth".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Snapshots and purges follow the replicated settings (compaction.rs), which
            // openraft cannot change at run time.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ConsensusError::Raft {
            op: "validate config",
            source: Box::new(e),
        })
    }
}

/// Current format of `node.json`.
const NODE_FILE_FORMAT: u32 = 1;

/// `<data dir>/node.json`: who this node is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NodeFile {
    pub format: u32,
    pub id: NodeId,
    pub advertise_addr: String,
    pub hostname: String,
    pub cluster_id: String,
}

impl NodeFile {
    pub fn new(id: NodeId, advertise_addr: String, hostname: String, cluster_id: String) -> Self {
        NodeFile {
            format: NODE_FILE_FORMAT,
            id,
            advertise_addr,
            hostname,
            cluster_id,
        }
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("node.json")
    }

    pub fn load(data_dir: &Path) -> Result<Self, ConsensusError> {
        let path = Self::path(data_dir);
        let bytes = std::fs::read(&path).map_err(|e| ConsensusError::io(&path, e))?;
        let file: NodeFile =
            serde_json::from_slice(&bytes).map_err(|source| ConsensusError::Decode {
                what: "node.json",
                source,
            })?;
        if file.format != NODE_FILE_FORMAT {
            return Err(ConsensusError::UnknownFormat {
                what: "node.json",
                found: file.format,
                supported: NODE_FILE_FORMAT,
            });
        }
        Ok(file)
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), ConsensusError> {
        use std::io::Write;
        let path = Self::path(data_dir);
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| ConsensusError::Encode {
            what: "node.json",
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| ConsensusError::io(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| ConsensusError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ConsensusError::io(&path, e))
    }
}
