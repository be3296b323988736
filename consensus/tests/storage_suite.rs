//! The RocksDB storage passes openraft's own storage test suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_consensus::{LogStore, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, state_machine) = civmesh_consensus::open(dir.path()).expect("the store opens");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn rocksdb_storage_passes_the_openraft_suite() -> Result<(), Box<StorageError<u64>>> {
    Suite::test_all(RocksBuilder).map_err(Box::new)
}
