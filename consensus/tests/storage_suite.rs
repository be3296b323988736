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

/// The state image holds the replay window, each nonce once (its time,
/// signer and nonce: 57 bytes); at its cap of `COMMAND_NONCES_MAX` nonces
/// it takes under a quarter of `STATE_IMAGE_BYTES_MAX`, leaving the rest to
/// the policy itself.
#[test]
fn a_full_replay_window_fits_the_state_image_bound() {
    use civmesh_certs::{codec, NodeId, ReplayGuard};
    use civmesh_policy::state::{COMMAND_NONCES_MAX, COMMAND_NONCES_PER_SIGNER_MAX, COMMAND_SKEW_MS_MAX};
    const SAMPLE: usize = 20_000;
    let mut guard = ReplayGuard::with_signer_quota(
        COMMAND_SKEW_MS_MAX,
        COMMAND_NONCES_MAX,
        COMMAND_NONCES_PER_SIGNER_MAX,
    );
    let empty = codec::encode(&guard).unwrap().len();
    let now = 1_800_000_000_000u64;
    for number in 0..SAMPLE {
        let signer = NodeId([(number % 200) as u8; 32]);
        let nonce = codec::sha256(&number.to_be_bytes())[..16].try_into().unwrap();
        guard.check_and_record(&signer, &nonce, now, now).unwrap();
    }
    let per_nonce = (codec::encode(&guard).unwrap().len() - empty) as f64 / SAMPLE as f64;
    let window = per_nonce * COMMAND_NONCES_MAX as f64;
    assert!(
        per_nonce < 60.0 && window * 4.0 < civmesh_consensus::store::STATE_IMAGE_BYTES_MAX as f64,
        "a full replay window takes {window:.0} bytes ({per_nonce:.1} per nonce)"
    );
}

/// The bound on all memtables together reaches RocksDB: 64 MiB, as RocksDB
/// records the options it opened with.
#[test]
fn the_memtables_bound_reaches_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let opened = civmesh_consensus::open(dir.path()).unwrap();
    drop(opened);
    let options = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("OPTIONS-")))
        .max()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .expect("RocksDB writes its options file");
    assert!(options.contains(&format!("db_write_buffer_size={}", 64 * 1024 * 1024)), "{options}");
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
