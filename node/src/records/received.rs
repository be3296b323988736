//! Deleting what a holder received: a subscription's copies, all of them,
//! those received before a time, or one subject's. Each batch of deletions
//! is one synced write together with the receipt it owes so far (family
//! `deletion_receipts`, by grant and cause), so a restart resumes the count
//! and the commitment where they were. The copy's range is then compacted,
//! so the records are gone from the files, not only hidden by tombstones.

use civmesh_certs::{codec, UnixMillis};
use civmesh_policy::deletion::{DeletionCause, DeletionReceipt, SubjectsCommitment};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::copies::{copy_key, stored_header, COPIES_FAMILY};
use super::{synced, RecordStore, RecordStoreError};

pub(super) const DELETION_RECEIPTS_FAMILY: &str = "deletion_receipts";
/// The most copies deleted in one synced write.
pub const DELETION_BATCH_RECORDS_MAX: usize = 10_000;
/// The most receipts waiting to be logged that a node reads at once.
pub const PENDING_RECEIPTS_MAX: usize = 10_000;
/// The most subscriptions a holder's deletion looks through.
pub const SUBSCRIPTIONS_READ_MAX: usize = 10_000;
/// A subscription's digest and its encoded progress.
pub type StoredProgress = ([u8; 32], Vec<u8>);
/// The largest stored receipt, in bytes.
const RECEIPT_BYTES_MAX: usize = 4096;

/// Which of a subscription's copies to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDeletion {
    /// Every copy.
    All,
    /// The copies released before this time.
    ReleasedBefore(UnixMillis),
    /// The one subject's copy.
    Subject([u8; 32]),
}

impl CopyDeletion {
    /// The deletion a cause calls for.
    pub fn of(cause: &DeletionCause) -> CopyDeletion {
        match cause {
            DeletionCause::GrantEnded => CopyDeletion::All,
            DeletionCause::RetentionEnded { received_before_ms } => {
                CopyDeletion::ReleasedBefore(*received_before_ms)
            }
            DeletionCause::ConsentWithdrawn { subject } => CopyDeletion::Subject(subject.0),
        }
    }
}

fn receipt_key(receipt: &DeletionReceipt) -> Result<Vec<u8>, RecordStoreError> {
    let mut key = receipt.grant.to_be_bytes().to_vec();
    key.extend_from_slice(&codec::encode(&receipt.cause).map_err(corrupt)?);
    Ok(key)
}

fn corrupt(error: impl std::fmt::Display) -> RecordStoreError {
    RecordStoreError::Corrupt(error.to_string())
}

impl RecordStore {
    /// Deletes `subscription`'s copies that `which` names, counts them
    /// into `receipt` (its number and commitment), and writes the receipt
    /// and the subscription's progress (which `progress` encodes given how
    /// many were deleted) in the same synced write: every copy at once as
    /// one range when `which` is [`CopyDeletion::All`], otherwise up to
    /// [`DELETION_BATCH_RECORDS_MAX`] after `resume`, which it moves on.
    /// Returns how many were deleted: 0 once none is left.
    pub fn delete_copies_batch(
        &self,
        subscription: &[u8; 32],
        which: CopyDeletion,
        resume: &mut Option<[u8; 32]>,
        receipt: &mut DeletionReceipt,
        progress: impl FnOnce(u64) -> Result<Option<Vec<u8>>, RecordStoreError>,
    ) -> Result<u64, RecordStoreError> {
        let copies = self.family(COPIES_FAMILY)?;
        let mut batch = WriteBatch::default();
        let mut commitment = SubjectsCommitment(receipt.subjects_commitment);
        let deleted = if which == CopyDeletion::All {
            let deleted = self.commit_to_all(subscription, &mut commitment)?;
            let (first, last) = (copy_key(subscription, &[0; 32]), copy_key(subscription, &[0xff; 32]));
            batch.delete_range_cf(copies, first, last);
            batch.delete_cf(copies, last);
            deleted
        } else {
            let doomed = self.doomed_copies(subscription, which, resume)?;
            for subject in &doomed {
                batch.delete_cf(copies, copy_key(subscription, subject));
                commitment.add(subject);
            }
            doomed.len() as u64
        };
        if deleted == 0 {
            return Ok(0);
        }
        receipt.subjects_commitment = commitment.0;
        receipt.records_deleted += deleted;
        batch.put_cf(
            self.family(DELETION_RECEIPTS_FAMILY)?,
            receipt_key(receipt)?,
            codec::encode(receipt).map_err(corrupt)?,
        );
        if let Some(bytes) = progress(deleted)? {
            batch.put_cf(self.family(super::copies::SUBSCRIPTION_PROGRESS_FAMILY)?, subscription, bytes);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(deleted)
    }

    /// Moves `commitment` on by every subject `subscription`'s copy holds,
    /// in order, reading keys only; how many there are.
    fn commit_to_all(
        &self,
        subscription: &[u8; 32],
        commitment: &mut SubjectsCommitment,
    ) -> Result<u64, RecordStoreError> {
        let start = copy_key(subscription, &[0; 32]);
        let mut count = 0;
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.iterator_cf(self.family(COPIES_FAMILY)?, mode) {
            let (key, _) = item?;
            if !key.starts_with(subscription) {
                break;
            }
            let subject =
                <[u8; 32]>::try_from(&key[32..]).map_err(|_| corrupt("a copy key is not 64 bytes"))?;
            commitment.add(&subject);
            count += 1;
        }
        Ok(count)
    }

    /// The subjects of up to a batch of `subscription`'s copies `which`
    /// names, after `resume` (which it moves to the last copy read).
    fn doomed_copies(
        &self,
        subscription: &[u8; 32],
        which: CopyDeletion,
        resume: &mut Option<[u8; 32]>,
    ) -> Result<Vec<[u8; 32]>, RecordStoreError> {
        let copies = self.family(COPIES_FAMILY)?;
        if let CopyDeletion::Subject(subject) = which {
            let held = self.db.get_pinned_cf(copies, copy_key(subscription, &subject))?.is_some();
            return Ok(if held { vec![subject] } else { Vec::new() });
        }
        let start = copy_key(subscription, &resume.unwrap_or([0; 32]));
        let mut doomed = Vec::new();
        for item in self.db.iterator_cf(copies, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(subscription) || doomed.len() == DELETION_BATCH_RECORDS_MAX {
                break;
            }
            if resume.is_some() && key.as_ref() == start.as_slice() {
                continue;
            }
            *resume = <[u8; 32]>::try_from(&key[32..]).ok();
            let (_, released_at_ms) = stored_header(&value)?;
            if let CopyDeletion::ReleasedBefore(before_ms) = which {
                if released_at_ms >= before_ms {
                    continue;
                }
            }
            let subject =
                <[u8; 32]>::try_from(&key[32..]).map_err(|_| corrupt("a copy key is not 64 bytes"))?;
            doomed.push(subject);
        }
        Ok(doomed)
    }

    /// When the release of the earliest copy `subscription`'s copy still
    /// holds was decided; `None` when it holds none. Reads the whole copy.
    pub fn earliest_released(&self, subscription: &[u8; 32]) -> Result<Option<UnixMillis>, RecordStoreError> {
        let copies = self.family(COPIES_FAMILY)?;
        let start = copy_key(subscription, &[0; 32]);
        let mut earliest: Option<UnixMillis> = None;
        for item in self.db.iterator_cf(copies, IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(subscription) {
                break;
            }
            let (_, released_at_ms) = stored_header(&value)?;
            earliest = Some(earliest.map_or(released_at_ms, |earliest| earliest.min(released_at_ms)));
        }
        Ok(earliest)
    }

    /// Compacts `subscription`'s range of copies, so deleted ones leave
    /// the table files (RocksDB flushes the memtable first when it
    /// overlaps), then flushes every family, so no write-ahead log still
    /// holds them: RocksDB removes a log once no family needs it.
    pub fn compact_copies(&self, subscription: &[u8; 32]) -> Result<(), RecordStoreError> {
        let start = copy_key(subscription, &[0; 32]);
        let end = copy_key(subscription, &[0xff; 32]);
        self.db.compact_range_cf(self.family(COPIES_FAMILY)?, Some(&start[..]), Some(&end[..]));
        for name in super::FAMILIES {
            self.db.flush_cf(self.family(name)?)?;
        }
        Ok(())
    }

    /// Keeps `receipt` as owed (synced), before any copy is deleted.
    pub fn put_pending_receipt(&self, receipt: &DeletionReceipt) -> Result<(), RecordStoreError> {
        let family = self.family(DELETION_RECEIPTS_FAMILY)?;
        self.db.put_cf_opt(
            family,
            receipt_key(receipt)?,
            codec::encode(receipt).map_err(corrupt)?,
            &synced(),
        )?;
        Ok(())
    }

    /// The receipt owed for `grant` and `cause`, if one is kept.
    pub fn pending_receipt(
        &self,
        template: &DeletionReceipt,
    ) -> Result<Option<DeletionReceipt>, RecordStoreError> {
        let family = self.family(DELETION_RECEIPTS_FAMILY)?;
        let Some(bytes) = self.db.get_pinned_cf(family, receipt_key(template)?)? else { return Ok(None) };
        Ok(Some(codec::decode_exact(&bytes, RECEIPT_BYTES_MAX).map_err(corrupt)?))
    }

    /// Every receipt owed, up to [`PENDING_RECEIPTS_MAX`].
    pub fn pending_receipts(&self) -> Result<Vec<DeletionReceipt>, RecordStoreError> {
        let family = self.family(DELETION_RECEIPTS_FAMILY)?;
        let mut receipts = Vec::new();
        for item in self.db.iterator_cf(family, IteratorMode::Start).take(PENDING_RECEIPTS_MAX) {
            let (_, value) = item?;
            receipts.push(codec::decode_exact(&value, RECEIPT_BYTES_MAX).map_err(corrupt)?);
        }
        Ok(receipts)
    }

    /// Forgets a receipt once the log settled it (synced).
    pub fn remove_pending_receipt(&self, receipt: &DeletionReceipt) -> Result<(), RecordStoreError> {
        let family = self.family(DELETION_RECEIPTS_FAMILY)?;
        self.db.delete_cf_opt(family, receipt_key(receipt)?, &synced())?;
        Ok(())
    }

    /// Calls `visit` with every source's id and encoded progress, one at a
    /// time, however many there are (a deletion must reach them all).
    pub fn visit_progresses(
        &self,
        mut visit: impl FnMut([u8; 32], &[u8]) -> Result<(), RecordStoreError>,
    ) -> Result<(), RecordStoreError> {
        let family = self.family(super::copies::SUBSCRIPTION_PROGRESS_FAMILY)?;
        for item in self.db.iterator_cf(family, IteratorMode::Start) {
            let (key, value) = item?;
            let digest = <[u8; 32]>::try_from(key.as_ref())
                .map_err(|_| corrupt("a subscription key is not 32 bytes"))?;
            visit(digest, &value)?;
        }
        Ok(())
    }

    /// Every subscription with a copy's progress (at most
    /// [`SUBSCRIPTIONS_READ_MAX`], for a listing), and its encoded progress.
    pub fn subscription_progresses(&self) -> Result<Vec<StoredProgress>, RecordStoreError> {
        let family = self.family(super::copies::SUBSCRIPTION_PROGRESS_FAMILY)?;
        let mut progresses = Vec::new();
        for item in self.db.iterator_cf(family, IteratorMode::Start).take(SUBSCRIPTIONS_READ_MAX) {
            let (key, value) = item?;
            let digest = <[u8; 32]>::try_from(key.as_ref())
                .map_err(|_| corrupt("a subscription key is not 32 bytes"))?;
            progresses.push((digest, value.to_vec()));
        }
        Ok(progresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CopiedRecord;

    const SUBSCRIPTION: [u8; 32] = [1; 32];

    fn store_with(copies: &[(u8, UnixMillis)]) -> (tempfile::TempDir, RecordStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        for (subject, released_at_ms) in copies {
            let record = CopiedRecord { subject: [*subject; 32], version: 1, bytes: vec![*subject] };
            store.put_copies(&SUBSCRIPTION, &[record], *released_at_ms, |_| Ok(Vec::new())).unwrap();
        }
        (dir, store)
    }

    fn receipt(cause: DeletionCause) -> DeletionReceipt {
        DeletionReceipt {
            grant: 7,
            cause,
            records_deleted: 0,
            subjects_commitment: SubjectsCommitment::default().0,
            deleted_at_ms: 0,
            earliest_held_ms: None,
        }
    }

    fn held(store: &RecordStore) -> Vec<u8> {
        store.copies(&SUBSCRIPTION, None, 100).unwrap().into_iter().map(|(subject, _)| subject[0]).collect()
    }

    #[test]
    fn each_deletion_removes_what_its_cause_names_and_counts_it_into_the_receipt() {
        let copies = [(1, 100), (2, 200), (3, 300)];
        let cases: [(&str, DeletionCause, Vec<u8>, Vec<u8>); 3] = [
            ("the grant ended", DeletionCause::GrantEnded, vec![1, 2, 3], vec![]),
            (
                "received before 250",
                DeletionCause::RetentionEnded { received_before_ms: 250 },
                vec![1, 2],
                vec![3],
            ),
            (
                "one subject's consent",
                DeletionCause::ConsentWithdrawn { subject: civmesh_policy::model::SubjectKeyHash([2; 32]) },
                vec![2],
                vec![1, 3],
            ),
        ];
        for (name, cause, deleted, kept) in cases {
            let (_dir, store) = store_with(&copies);
            let mut owed = receipt(cause.clone());
            let which = CopyDeletion::of(&cause);
            let (mut counts, mut resume) = (Vec::new(), None);
            loop {
                let count = store
                    .delete_copies_batch(&SUBSCRIPTION, which, &mut resume, &mut owed, |count| {
                        counts.push(count);
                        Ok(None)
                    })
                    .unwrap();
                if count == 0 {
                    break;
                }
            }
            store.compact_copies(&SUBSCRIPTION).unwrap();
            assert_eq!(held(&store), kept, "{name}");
            assert_eq!(owed.records_deleted, deleted.len() as u64, "{name}");
            assert_eq!(counts, vec![deleted.len() as u64], "{name}: one batch, its count to the progress");
            let mut chain = SubjectsCommitment::default();
            deleted.iter().for_each(|subject| chain.add(&[*subject; 32]));
            assert_eq!(owed.subjects_commitment, chain.0, "{name}: the chain over the deleted subjects");
            assert_eq!(store.pending_receipt(&owed).unwrap(), Some(owed.clone()), "{name}: kept as owed");
            let earliest = kept.iter().map(|subject| copies[usize::from(*subject) - 1].1).min();
            assert_eq!(store.earliest_released(&SUBSCRIPTION).unwrap(), earliest, "{name}");
        }
    }

    #[test]
    fn a_cutoff_deletion_resumes_batch_after_batch_past_the_copies_it_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let subject = |index: u32| {
            let mut subject = [0u8; 32];
            subject[..4].copy_from_slice(&index.to_be_bytes());
            subject
        };
        let total = 2 * DELETION_BATCH_RECORDS_MAX as u32 + 500;
        for (released_at_ms, parity) in [(100, 0), (300, 1)] {
            let records: Vec<CopiedRecord> = (0..total)
                .filter(|index| index % 2 == parity)
                .map(|index| CopiedRecord { subject: subject(index), version: 1, bytes: vec![1] })
                .collect();
            store.put_copies(&SUBSCRIPTION, &records, released_at_ms, |_| Ok(Vec::new())).unwrap();
        }
        let mut owed = receipt(DeletionCause::RetentionEnded { received_before_ms: 200 });
        let (mut batches, mut resume) = (Vec::new(), None);
        let which = CopyDeletion::ReleasedBefore(200);
        loop {
            let count = store.delete_copies_batch(&SUBSCRIPTION, which, &mut resume, &mut owed, |_| Ok(None));
            match count.unwrap() {
                0 => break,
                count => batches.push(count),
            }
        }
        let max = DELETION_BATCH_RECORDS_MAX as u64;
        assert_eq!(batches, vec![max, u64::from(total / 2) - max], "bounded batches, the second resumed");
        assert_eq!(owed.records_deleted, u64::from(total / 2));
        let left = store.copies(&SUBSCRIPTION, None, total as usize).unwrap();
        assert_eq!(left.len(), (total / 2) as usize);
        assert!(left.iter().all(|(held, _)| u32::from_be_bytes(held[..4].try_into().unwrap()) % 2 == 1));
        assert_eq!(store.earliest_released(&SUBSCRIPTION).unwrap(), Some(300));
    }

    #[test]
    fn owed_receipts_survive_a_reopen_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let owed = receipt(DeletionCause::GrantEnded);
        {
            let store = RecordStore::open(dir.path()).unwrap();
            store.put_pending_receipt(&owed).unwrap();
        }
        let store = RecordStore::open(dir.path()).unwrap();
        assert_eq!(store.pending_receipts().unwrap(), vec![owed.clone()]);
        store.remove_pending_receipt(&owed).unwrap();
        assert_eq!(store.pending_receipts().unwrap(), vec![]);
        assert_eq!(store.pending_receipt(&owed).unwrap(), None);
    }
}
