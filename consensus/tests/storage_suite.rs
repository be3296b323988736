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

/// The state image holds the replay window; at its cap of
/// `COMMAND_NONCES_MAX` nonces it still decodes within
/// `STATE_IMAGE_BYTES_MAX`, with room for the policy itself.
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
        window * 2.0 < civmesh_consensus::store::STATE_IMAGE_BYTES_MAX as f64,
        "a full replay window takes {window:.0} bytes ({per_nonce:.1} per nonce)"
    );
}
