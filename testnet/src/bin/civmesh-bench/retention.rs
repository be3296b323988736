//! `civmesh-bench retention`: the time a holder takes to delete and
//! compact its received copies (the record store's own path: bounded
//! synced batches that count and commit to each subject, then a compaction
//! of the copy's range), beside a raw RocksDB `delete_range` and compaction
//! of the same keys and values in the same run.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use civmesh_node::records::{CopiedRecord, CopyDeletion, RecordStore};
use civmesh_policy::deletion::{DeletionCause, DeletionReceipt, SubjectsCommitment};

/// Copies written per synced batch while filling the store.
const FILL_BATCH_RECORDS: usize = 10_000;
/// The bytes of one copied record (an encoded record of a few fields).
const RECORD_BYTES: usize = 200;

/// The subscription the copies belong to.
const SUBSCRIPTION: [u8; 32] = [7; 32];

fn subject(index: u64) -> [u8; 32] {
    let mut subject = [0u8; 32];
    subject[..8].copy_from_slice(&index.to_be_bytes());
    subject
}

fn directory_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries.filter_map(Result::ok).filter_map(|entry| entry.metadata().ok()).map(|meta| meta.len()).sum()
}

pub fn retention(records: u64) -> anyhow::Result<()> {
    let dir = crate::tempfile_dir()?.join("retention");
    println!("civmesh-bench retention: {records} received copies of {RECORD_BYTES} bytes, one subscription");
    let (civmesh_s, civmesh_sizes) = civmesh_delete(&dir.join("store"), records)?;
    let (raw_s, raw_sizes) = raw_delete(&dir.join("raw"), records)?;
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!("| path | delete and compact | records/s | disk before | disk after | ratio to raw |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, seconds: f64, (before, after): (u64, u64)| {
        println!(
            "| {name} | {seconds:.2} s | {:.0} | {:.1} MiB | {:.1} MiB | {:.2}× |",
            records as f64 / seconds,
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            seconds / raw_s
        );
    };
    row("civmesh (batched deletes, receipt, compaction)", civmesh_s, civmesh_sizes);
    row("raw RocksDB delete_range + compaction", raw_s, raw_sizes);
    Ok(())
}

/// Fills a record store with `records` copies, then deletes them all as a
/// holder does after its grant ended; the seconds that took, and the
/// store's size on disk before and after.
fn civmesh_delete(path: &Path, records: u64) -> anyhow::Result<(f64, (u64, u64))> {
    let store = RecordStore::open(path)?;
    let bytes = vec![0x5a; RECORD_BYTES];
    for start in (0..records).step_by(FILL_BATCH_RECORDS) {
        let end = (start + FILL_BATCH_RECORDS as u64).min(records);
        let batch: Vec<CopiedRecord> = (start..end)
            .map(|index| CopiedRecord { subject: subject(index), version: 1, bytes: bytes.clone() })
            .collect();
        store.put_copies(&SUBSCRIPTION, &batch, 1, |_| Ok(Vec::new()))?;
    }
    store.compact_copies(&SUBSCRIPTION)?;
    let before = directory_bytes(path);
    let mut receipt = DeletionReceipt {
        grant: 1,
        cause: DeletionCause::GrantEnded,
        records_deleted: 0,
        subjects_commitment: SubjectsCommitment::default().0,
        deleted_at_ms: 0,
        earliest_held_ms: None,
    };
    let started = Instant::now();
    store.put_pending_receipt(&receipt)?;
    let mut resume = None;
    while store
        .delete_copies_batch(&SUBSCRIPTION, CopyDeletion::All, &mut resume, &mut receipt, |_| Ok(None))?
        > 0
    {}
    store.compact_copies(&SUBSCRIPTION)?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(receipt.records_deleted == records, "deleted {} of {records}", receipt.records_deleted);
    anyhow::ensure!(store.copies(&SUBSCRIPTION, None, 1)?.is_empty(), "copies left after the deletion");
    drop(store);
    Ok((seconds, (before, directory_bytes(path))))
}

/// The same keys and values in a plain RocksDB, removed by one
/// `delete_range` and a compaction of the range.
fn raw_delete(path: &Path, records: u64) -> anyhow::Result<(f64, (u64, u64))> {
    let db = rocksdb::DB::open_default(path)?;
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(true);
    let value = vec![0x5a; RECORD_BYTES + 16];
    let key = |index: u64| {
        let mut key = SUBSCRIPTION.to_vec();
        key.extend_from_slice(&subject(index));
        key
    };
    for start in (0..records).step_by(FILL_BATCH_RECORDS) {
        let mut batch = rocksdb::WriteBatch::default();
        for index in start..(start + FILL_BATCH_RECORDS as u64).min(records) {
            batch.put(key(index), &value);
        }
        db.write_opt(batch, &options)?;
    }
    db.compact_range::<&[u8], &[u8]>(None, None);
    let before = directory_bytes(path);
    let (first, last) = (SUBSCRIPTION.to_vec(), [SUBSCRIPTION.to_vec(), vec![0xff; 32]].concat());
    let started = Instant::now();
    let mut batch = rocksdb::WriteBatch::default();
    batch.delete_range(&first, &last);
    db.write_opt(batch, &options)?;
    db.compact_range(Some(&first), Some(&last));
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(db.iterator(rocksdb::IteratorMode::Start).next().is_none(), "raw keys left");
    drop(db);
    Ok((seconds, (before, directory_bytes(path))))
}

/// `--records N`, or a million.
pub fn records_arg(args: &[String]) -> anyhow::Result<u64> {
    match args.iter().position(|arg| arg == "--records") {
        Some(index) => Ok(args.get(index + 1).context("--records needs a value")?.parse()?),
        None => Ok(1_000_000),
    }
}
