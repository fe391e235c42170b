//! openraft's storage conformance suite against the redb log and state-machine stores.

use berth_consensus::raft_types::{StorageError, TypeConfig};
use berth_consensus::store::{self, LogStore, StateMachineStore};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RedbStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = store::open(&dir.path().join("raft.redb")).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(RedbStoreBuilder).expect("storage suite");
}
