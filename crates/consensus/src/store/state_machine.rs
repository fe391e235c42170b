//! [`StateMachineStore`]: openraft's `RaftStateMachine` over redb, applying commands with
//! the pure [`ClusterState::apply`].

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use redb::{Database, Durability};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{blocking, record, SM};
use crate::error::ConsensusError;
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig};
use crate::state::{ClusterState, Response};

const APPLIED: &str = "applied";
const SNAPSHOT: &str = "snapshot";

/// What the state machine persists after every applied batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    /// [`ClusterState::encode`] output (itself versioned).
    state: Vec<u8>,
}

/// The current snapshot as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    state: ClusterState,
}

/// Read-only view of the applied state, shared with the node handle.
#[derive(Clone)]
pub struct StateView {
    inner: Arc<RwLock<Inner>>,
    applied: Arc<watch::Sender<u64>>,
}

impl Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView").finish_non_exhaustive()
    }
}

impl StateView {
    /// Run `f` on the current applied state.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f(&guard.state)
    }

    /// Log id of the last applied entry.
    pub fn last_applied(&self) -> Option<LogId> {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        guard.last_applied
    }

    /// Membership as of the last applied membership entry.
    pub fn membership(&self) -> StoredMembership<u64, BasicNode> {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        guard.last_membership.clone()
    }

    /// A watch on the log index of the last applied entry (0 before any): it changes after
    /// every applied batch of entries (and snapshot install), once the state it names is
    /// readable through [`read`](Self::read). Entries without a command (blank, membership)
    /// count too, so a change does not always mean the cluster objects changed.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

fn index_of(log_id: Option<LogId>) -> u64 {
    log_id.map_or(0, |l| l.index)
}

/// Applies committed entries to [`ClusterState`] and persists the result in redb.
pub struct StateMachineStore {
    db: Arc<Database>,
    inner: Arc<RwLock<Inner>>,
    applied: Arc<watch::Sender<u64>>,
    snapshot_seq: u64,
}

impl Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

fn sm_read_err(e: ConsensusError) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: ConsensusError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn read_sm_record(db: &Database, key: &str) -> Result<Option<Vec<u8>>, ConsensusError> {
    let txn = db
        .begin_read()
        .map_err(|e| ConsensusError::db("begin read", e))?;
    let table = txn
        .open_table(SM)
        .map_err(|e| ConsensusError::db("open state machine", e))?;
    let value = table
        .get(key)
        .map_err(|e| ConsensusError::db("read state machine", e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

fn write_sm_records(
    db: &Database,
    records: Vec<(&'static str, Vec<u8>)>,
    durability: Durability,
) -> Result<(), ConsensusError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| ConsensusError::db("begin write", e))?;
    txn.set_durability(durability);
    {
        let mut table = txn
            .open_table(SM)
            .map_err(|e| ConsensusError::db("open state machine", e))?;
        for (key, bytes) in &records {
            table
                .insert(*key, bytes.as_slice())
                .map_err(|e| ConsensusError::db("write state machine", e))?;
        }
    }
    txn.commit().map_err(|e| ConsensusError::db("commit", e))
}

impl StateMachineStore {
    pub(crate) fn load(db: Arc<Database>) -> Result<Self, ConsensusError> {
        let mut inner = match read_sm_record(&db, APPLIED)? {
            Some(bytes) => {
                let applied: Applied = record::decode("applied state", &bytes)?;
                Inner {
                    last_applied: applied.last_applied,
                    last_membership: applied.last_membership,
                    state: ClusterState::decode(&applied.state)?,
                }
            }
            None => Inner::default(),
        };
        // Applied state is written without fsync; the snapshot is fsync'd and the log is
        // only purged behind it. If a crash lost applied state newer than the snapshot,
        // start from the snapshot: the log still holds everything after it.
        if let Some(bytes) = read_sm_record(&db, SNAPSHOT)? {
            let snapshot: StoredSnapshot = record::decode("snapshot", &bytes)?;
            if snapshot.meta.last_log_id > inner.last_applied {
                inner = Inner {
                    last_applied: snapshot.meta.last_log_id,
                    last_membership: snapshot.meta.last_membership.clone(),
                    state: ClusterState::decode(&snapshot.data)?,
                };
            }
        }
        let applied = Arc::new(watch::Sender::new(index_of(inner.last_applied)));
        Ok(StateMachineStore {
            db,
            inner: Arc::new(RwLock::new(inner)),
            applied,
            snapshot_seq: 0,
        })
    }

    /// A read-only view of the applied state.
    pub fn view(&self) -> StateView {
        StateView {
            inner: self.inner.clone(),
            applied: self.applied.clone(),
        }
    }

    fn encode_applied(inner: &Inner) -> Result<Vec<u8>, ConsensusError> {
        record::encode(
            "applied state",
            &Applied {
                last_applied: inner.last_applied,
                last_membership: inner.last_membership.clone(),
                state: inner.state.encode()?,
            },
        )
    }

    async fn persist(
        &self,
        records: Vec<(&'static str, Vec<u8>)>,
        durability: Durability,
    ) -> Result<(), ConsensusError> {
        let db = self.db.clone();
        blocking(move || write_sm_records(&db, records, durability)).await
    }
}

/// Builds snapshots from a copy of the applied state.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    inner: Arc<RwLock<Inner>>,
    seq: u64,
}

impl Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (last_applied, last_membership, data) = {
            let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
            let data = guard.state.encode().map_err(sm_read_err)?;
            (guard.last_applied, guard.last_membership.clone(), data)
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.seq),
            None => format!("none-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = record::encode("snapshot", &stored).map_err(sm_write_err)?;
        let db = self.db.clone();
        blocking(move || write_sm_records(&db, vec![(SNAPSHOT, bytes)], Durability::Immediate))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(
            index = index_of(meta.last_log_id),
            bytes = data.len(),
            "raft snapshot written"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Ok((guard.last_applied, guard.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (responses, bytes, last_index) = {
            let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let mut responses = Vec::new();
            for entry in entries {
                let index = entry.log_id.index;
                guard.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => guard.state.apply_internal(index),
                    EntryPayload::Normal(command) => guard.state.apply(index, &command),
                    EntryPayload::Membership(membership) => {
                        guard.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        guard.state.apply_internal(index)
                    }
                };
                responses.push(response);
            }
            let bytes = Self::encode_applied(&guard).map_err(sm_write_err)?;
            (responses, bytes, index_of(guard.last_applied))
        };
        // Not fsync'd: every applied entry is already durable in the log of a quorum, and
        // a crash only rolls applied state back to the last fsync'd commit of this file
        // (each log append is one); the entries are applied again once committed. `load`
        // never starts behind the fsync'd snapshot, behind which the log may be purged.
        // After a crash, `Local` reads can therefore briefly show an older state.
        self.persist(vec![(APPLIED, bytes)], Durability::None)
            .await
            .map_err(sm_write_err)?;
        self.applied.send_replace(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            inner: self.inner.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = ClusterState::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let snapshot_bytes = record::encode("snapshot", &stored).map_err(sm_write_err)?;
        let applied_bytes = {
            let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
            guard.state = state;
            guard.last_applied = meta.last_log_id;
            guard.last_membership = meta.last_membership.clone();
            Self::encode_applied(&guard).map_err(sm_write_err)?
        };
        self.persist(
            vec![(SNAPSHOT, snapshot_bytes), (APPLIED, applied_bytes)],
            Durability::Immediate,
        )
        .await
        .map_err(sm_write_err)?;
        tracing::info!(
            index = index_of(meta.last_log_id),
            "raft snapshot installed from the leader and written"
        );
        self.applied.send_replace(index_of(meta.last_log_id));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = read_sm_record(&self.db, SNAPSHOT).map_err(sm_read_err)?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let stored: StoredSnapshot = record::decode("snapshot", &bytes).map_err(sm_read_err)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
