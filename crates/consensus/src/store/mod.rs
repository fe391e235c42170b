//! Durable Raft storage in one redb file: the log store and the state-machine store.
//!
//! Owns: `raft.redb` in the node's data directory, with the log, the vote, the applied
//! state and the current snapshot. Log appends, votes, snapshots and snapshot installs are
//! redb transactions committed with `Durability::Immediate` (fsync) before openraft is told
//! they are done, so an acknowledged write survives kill -9 (tests/kill9.rs). Applied state
//! is committed without fsync (it is recomputed from the durable log), and the committed
//! index is not persisted (openraft re-learns it).
//!
//! Does not own: what the commands mean ([`crate::state`]), the network, Raft itself.
//!
//! ```text
//!  openraft ──RaftLogStorage──> LogStore ──┐
//!           ──RaftStateMachine─> StateMachineStore ──> ClusterState::apply (pure)
//!                                          │                │
//!                                          └──── redb (raft.redb) <── encoded state
//! ```

mod log_store;
pub(crate) mod record;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

pub use log_store::LogStore;
pub use state_machine::{StateMachineStore, StateView};

use crate::error::ConsensusError;

/// Log entries by index.
pub(crate) const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
/// Log metadata: vote, committed, last purged.
pub(crate) const LOG_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
/// State machine: applied state, membership, snapshot.
pub(crate) const SM: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state_machine");

/// How long [`open`] waits for a previous user of the file in this process to let go.
const OPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Open (or create) the redb file at `path` and return its two stores.
///
/// redb holds an exclusive `flock` on the file. A node restarted within the same process
/// (tests, berthd re-init) may find the previous instance's database still closing (its
/// drop writes a final commit), so a held lock is waited for up to [`OPEN_LOCK_WAIT`].
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore), ConsensusError> {
    let deadline = std::time::Instant::now() + OPEN_LOCK_WAIT;
    let db = loop {
        match Database::create(path) {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(ConsensusError::db("open database", e)),
        }
    };
    let db = Arc::new(db);
    let txn = db
        .begin_write()
        .map_err(|e| ConsensusError::db("begin write", e))?;
    {
        txn.open_table(LOG)
            .map_err(|e| ConsensusError::db("create log table", e))?;
        txn.open_table(LOG_META)
            .map_err(|e| ConsensusError::db("create meta table", e))?;
        txn.open_table(SM)
            .map_err(|e| ConsensusError::db("create state machine table", e))?;
    }
    txn.commit().map_err(|e| ConsensusError::db("commit", e))?;
    let sm = StateMachineStore::load(db.clone())?;
    Ok((LogStore::new(db), sm))
}

/// Run blocking redb work off the async executor.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ConsensusError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ConsensusError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(ConsensusError::Shutdown),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reopen_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let (l, s) = super::open(&path).unwrap();
        let weak = l.db_weak();
        drop((l, s));
        assert_eq!(weak.strong_count(), 0);
        let (_l, _s) = super::open(&path).unwrap();
    }
}
