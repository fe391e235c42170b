//! [`LogStore`]: openraft's `RaftLogStorage` over redb.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable};

use super::{blocking, record, LOG, LOG_META};
use crate::error::ConsensusError;
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig};

const VOTE: &str = "vote";
const LAST_PURGED: &str = "last_purged";

/// Raft log, vote and committed id in redb. Cheap to clone (shares the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn read_err(e: ConsensusError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: ConsensusError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &'static str,
    ) -> Result<Option<T>, ConsensusError> {
        let txn = db
            .begin_read()
            .map_err(|e| ConsensusError::db("begin read", e))?;
        let table = txn
            .open_table(LOG_META)
            .map_err(|e| ConsensusError::db("open meta", e))?;
        let value = table
            .get(key)
            .map_err(|e| ConsensusError::db("read meta", e))?;
        value.map(|v| record::decode(key, v.value())).transpose()
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), ConsensusError> {
        let bytes = record::encode(key, value)?;
        let db = self.db.clone();
        blocking(move || {
            let mut txn = db
                .begin_write()
                .map_err(|e| ConsensusError::db("begin write", e))?;
            txn.set_durability(durability);
            {
                let mut table = txn
                    .open_table(LOG_META)
                    .map_err(|e| ConsensusError::db("open meta", e))?;
                table
                    .insert(key, bytes.as_slice())
                    .map_err(|e| ConsensusError::db("write meta", e))?;
            }
            txn.commit().map_err(|e| ConsensusError::db("commit", e))
        })
        .await
    }

    /// Read entries in `range` (blocking).
    fn read_range(
        db: &Database,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry>, ConsensusError> {
        let txn = db
            .begin_read()
            .map_err(|e| ConsensusError::db("begin read", e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| ConsensusError::db("open log", e))?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>(range)
            .map_err(|e| ConsensusError::db("range log", e))?
        {
            let (_, v) = item.map_err(|e| ConsensusError::db("read log", e))?;
            out.push(record::decode("log entry", v.value())?);
        }
        Ok(out)
    }

    /// Delete entries in `range` and optionally record `last_purged`, in one transaction.
    async fn delete_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        last_purged: Option<LogId>,
    ) -> Result<(), ConsensusError> {
        let purged = last_purged
            .map(|id| record::encode(LAST_PURGED, &id))
            .transpose()?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db
                .begin_write()
                .map_err(|e| ConsensusError::db("begin write", e))?;
            {
                let mut table = txn
                    .open_table(LOG)
                    .map_err(|e| ConsensusError::db("open log", e))?;
                table
                    .retain_in::<u64, _>(range, |_, _| false)
                    .map_err(|e| ConsensusError::db("delete log", e))?;
                if let Some(bytes) = purged {
                    let mut meta = txn
                        .open_table(LOG_META)
                        .map_err(|e| ConsensusError::db("open meta", e))?;
                    meta.insert(LAST_PURGED, bytes.as_slice())
                        .map_err(|e| ConsensusError::db("write meta", e))?;
                }
            }
            txn.commit().map_err(|e| ConsensusError::db("commit", e))
        })
        .await
    }

    /// A handle that tells when every user of the database has let go of it.
    pub(crate) fn db_weak(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }

    /// The vote persisted in this store (used by force-new-cluster).
    pub(crate) fn stored_vote(&self) -> Result<Option<Vote<u64>>, ConsensusError> {
        Self::read_meta(&self.db, VOTE)
    }

    /// The last entry persisted in this store (used by force-new-cluster).
    pub(crate) fn last_entry(&self) -> Result<Option<Entry>, ConsensusError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| ConsensusError::db("begin read", e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| ConsensusError::db("open log", e))?;
        let last = table
            .last()
            .map_err(|e| ConsensusError::db("read log", e))?;
        last.map(|(_, v)| record::decode("log entry", v.value()))
            .transpose()
    }

    /// Append entries and fsync (blocking; used by force-new-cluster before Raft starts).
    pub(crate) fn append_blocking(&self, entries: &[Entry]) -> Result<(), ConsensusError> {
        let encoded = entries
            .iter()
            .map(|e| Ok((e.log_id.index, record::encode("log entry", e)?)))
            .collect::<Result<Vec<_>, ConsensusError>>()?;
        write_entries(&self.db, encoded)
    }

    /// Persist a vote (blocking; used by force-new-cluster before Raft starts).
    pub(crate) fn save_vote_blocking(&self, vote: &Vote<u64>) -> Result<(), ConsensusError> {
        let bytes = record::encode(VOTE, vote)?;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| ConsensusError::db("begin write", e))?;
        {
            let mut table = txn
                .open_table(LOG_META)
                .map_err(|e| ConsensusError::db("open meta", e))?;
            table
                .insert(VOTE, bytes.as_slice())
                .map_err(|e| ConsensusError::db("write meta", e))?;
        }
        txn.commit().map_err(|e| ConsensusError::db("commit", e))
    }
}

fn write_entries(db: &Database, encoded: Vec<(u64, Vec<u8>)>) -> Result<(), ConsensusError> {
    let txn = db
        .begin_write()
        .map_err(|e| ConsensusError::db("begin write", e))?;
    {
        let mut table = txn
            .open_table(LOG)
            .map_err(|e| ConsensusError::db("open log", e))?;
        for (index, bytes) in &encoded {
            table
                .insert(*index, bytes.as_slice())
                .map_err(|e| ConsensusError::db("append log", e))?;
        }
    }
    txn.commit().map_err(|e| ConsensusError::db("commit", e))
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let db = self.db.clone();
        let range = bounds(&range);
        blocking(move || Self::read_range(&db, range))
            .await
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> =
            Self::read_meta(&self.db, LAST_PURGED).map_err(read_err)?;
        let last = self.last_entry().map_err(read_err)?.map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, Durability::Immediate)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Self::read_meta(&self.db, VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    // `save_committed`/`read_committed` keep openraft's defaults (not persisted): the
    // committed index is re-learned from the leader after a restart, and persisting it would
    // put one more fsync on every commit's critical path.

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, record::encode("log entry", &e)?)))
            .collect::<Result<Vec<_>, ConsensusError>>()
            .map_err(write_err)?;
        let db = self.db.clone();
        let result = blocking(move || write_entries(&db, encoded)).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_range((Bound::Included(log_id.index), Bound::Unbounded), None)
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_range(
            (Bound::Unbounded, Bound::Included(log_id.index)),
            Some(log_id),
        )
        .await
        .map_err(write_err)
    }
}
