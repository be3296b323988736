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

/// A replica's state keeps the replay window's counts, not its nonces (a
/// store holds those): the state's share of the window does not grow with
/// the nonces, and a full window's nonces, 56 bytes each after the state,
/// fit the image file's bound beside a state of the largest size.
#[test]
fn a_full_replay_window_costs_the_state_its_counts_and_fits_the_image_bound() {
    use civmesh_certs::{codec, MemoryNonces, NodeId, ReplayGuard};
    use civmesh_consensus::snapshot::IMAGE_FILE_BYTES_MAX;
    use civmesh_policy::state::{COMMAND_NONCES_MAX, COMMAND_NONCES_PER_SIGNER_MAX, COMMAND_SKEW_MS_MAX};
    const SIGNERS: usize = 200;
    let mut guard = ReplayGuard::with_signer_quota(
        COMMAND_SKEW_MS_MAX,
        COMMAND_NONCES_MAX,
        COMMAND_NONCES_PER_SIGNER_MAX,
    );
    let mut store = MemoryNonces::default();
    let now = 1_800_000_000_000u64;
    let mut encoded = Vec::new();
    for number in 0..20_000_usize {
        let signer = NodeId([(number % SIGNERS) as u8; 32]);
        let nonce = codec::sha256(&number.to_be_bytes())[..16].try_into().unwrap();
        guard.check_and_record_in(&mut store, &signer, &nonce, now, now).unwrap();
        if number + 1 == SIGNERS || number + 1 == 20_000 {
            encoded.push(codec::encode(&guard).unwrap().len());
        }
    }
    assert_eq!(store.len(), 20_000);
    assert!(
        encoded[1] <= encoded[0] + 8 * SIGNERS,
        "the counts grew from {} to {} bytes",
        encoded[0],
        encoded[1]
    );
    let window_bytes = 8 + COMMAND_NONCES_MAX * 56;
    let state_bytes_max = civmesh_consensus::store::STATE_IMAGE_BYTES_MAX;
    assert!(state_bytes_max + window_bytes <= IMAGE_FILE_BYTES_MAX);
}

/// The options the policy log opens RocksDB with, as RocksDB records them.
fn options_recorded() -> String {
    let dir = tempfile::tempdir().unwrap();
    let opened = civmesh_consensus::open(dir.path()).unwrap();
    drop(opened);
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("OPTIONS-")))
        .max()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .expect("RocksDB writes its options file")
}

/// The bound on all memtables together reaches RocksDB: 64 MiB.
#[test]
fn the_memtables_bound_reaches_rocksdb() {
    let options = options_recorded();
    assert!(options.contains(&format!("db_write_buffer_size={}", 64 * 1024 * 1024)), "{options}");
}

/// Every family's tables keep their partitioned indexes and filters in the
/// block cache, so nothing held per table grows with the data (that the
/// cache is one, and bounded, is `database`'s own test).
#[test]
fn every_family_keeps_its_indexes_and_filters_in_one_bounded_cache() {
    let options = options_recorded();
    let tables: Vec<&str> = options.split("[TableOptions/BlockBasedTable").skip(1).collect();
    assert_eq!(tables.len(), 13, "the default family and twelve more: {options}");
    for table in tables {
        for setting in [
            "cache_index_and_filter_blocks=true",
            "index_type=kTwoLevelIndexSearch",
            "partition_filters=true",
            "pin_top_level_index_and_filter=true",
        ] {
            assert!(table.contains(setting), "{setting} missing in {table}");
        }
    }
}

/// Two snapshots of one applied state are told apart, and the node reports
/// the size of the one it built last.
#[tokio::test]
async fn each_snapshot_has_its_own_id_and_is_measured() {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut state_machine) = civmesh_consensus::open(dir.path()).unwrap();
    let stats = state_machine.snapshot_stats();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let snapshot = state_machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(
            stats.bytes.load(std::sync::atomic::Ordering::Acquire),
            snapshot.snapshot.metadata().await.unwrap().len()
        );
        ids.push(snapshot.meta.snapshot_id);
    }
    assert_ne!(ids[0], ids[1]);
}
