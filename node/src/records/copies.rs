//! A subscriber's copies: the records each of its subscriptions received
//! (by listing, then by pushes), one per subject, newest version kept, and
//! each subscription's progress beside them.
//!
//! Family `copies` maps `subscription ‖ subject` to the record's version
//! and the time its release was decided (u64 big-endian each: a copy's
//! retention counts from it), then the encoded record;
//! `subscription_progress` maps `subscription` to its encoded progress. A
//! page of records and the progress that follows it are one synced write,
//! so a restart resumes exactly where the copy ends.

use civmesh_certs::UnixMillis;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{synced, RecordStore, RecordStoreError};

pub(super) const COPIES_FAMILY: &str = "copies";
pub(super) const SUBSCRIPTION_PROGRESS_FAMILY: &str = "subscription_progress";
/// The largest copied record or progress entry, in bytes.
pub const COPY_BYTES_MAX: usize = 1024 * 1024;

/// One record for a copy: its subject, version and encoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedRecord {
    /// The subject's keyed hash.
    pub subject: [u8; 32],
    /// The record's version.
    pub version: u64,
    /// The encoded record, which begins with nothing the store reads.
    pub bytes: Vec<u8>,
}

/// A subject of a copy and its encoded record.
pub type HeldCopy = ([u8; 32], Vec<u8>);

pub(super) fn copy_key(subscription: &[u8; 32], subject: &[u8; 32]) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(subscription);
    key[32..].copy_from_slice(subject);
    key
}

/// The bytes before a copied record's own: its version and when its
/// release was decided.
pub(super) const COPY_HEADER_BYTES: usize = 16;

/// What the store keeps of a copied record: the version, the time its
/// release was decided, then the bytes.
fn stored(record: &CopiedRecord, released_at_ms: UnixMillis) -> Vec<u8> {
    let mut value = Vec::with_capacity(COPY_HEADER_BYTES + record.bytes.len());
    value.extend_from_slice(&record.version.to_be_bytes());
    value.extend_from_slice(&released_at_ms.to_be_bytes());
    value.extend_from_slice(&record.bytes);
    value
}

/// A stored copy's version and the time its release was decided.
pub(super) fn stored_header(value: &[u8]) -> Result<(u64, UnixMillis), RecordStoreError> {
    let number = |range: std::ops::Range<usize>| {
        value.get(range).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()).map(u64::from_be_bytes)
    };
    match (number(0..8), number(8..COPY_HEADER_BYTES)) {
        (Some(version), Some(released_at_ms)) => Ok((version, released_at_ms)),
        _ => Err(RecordStoreError::Corrupt("a copied record is shorter than its header".into())),
    }
}

fn stored_version(value: &[u8]) -> Result<u64, RecordStoreError> {
    stored_header(value).map(|(version, _)| version)
}

impl RecordStore {
    /// Keeps `records` in `subscription`'s copy (each only if newer than
    /// the one held), released at `released_at_ms`, and then its progress,
    /// which `progress` encodes given how many subjects the copy did not
    /// hold before, in one synced write. Returns that number.
    pub fn put_copies(
        &self,
        subscription: &[u8; 32],
        records: &[CopiedRecord],
        released_at_ms: UnixMillis,
        progress: impl FnOnce(u64) -> Result<Vec<u8>, RecordStoreError>,
    ) -> Result<u64, RecordStoreError> {
        let copies = self.family(COPIES_FAMILY)?;
        let mut batch = WriteBatch::default();
        let mut added = 0;
        for record in records {
            let key = copy_key(subscription, &record.subject);
            match self.db.get_pinned_cf(copies, key)? {
                Some(held) if stored_version(&held)? >= record.version => continue,
                Some(_) => {}
                None => added += 1,
            }
            batch.put_cf(copies, key, stored(record, released_at_ms));
        }
        batch.put_cf(self.family(SUBSCRIPTION_PROGRESS_FAMILY)?, subscription, progress(added)?);
        self.db.write_opt(batch, &synced())?;
        Ok(added)
    }

    /// Keeps `subscription`'s progress alone, synced.
    pub fn put_progress(&self, subscription: &[u8; 32], progress: &[u8]) -> Result<(), RecordStoreError> {
        self.db.put_cf_opt(self.family(SUBSCRIPTION_PROGRESS_FAMILY)?, subscription, progress, &synced())?;
        Ok(())
    }

    /// `subscription`'s progress, if kept.
    pub fn progress(&self, subscription: &[u8; 32]) -> Result<Option<Vec<u8>>, RecordStoreError> {
        Ok(self.db.get_cf(self.family(SUBSCRIPTION_PROGRESS_FAMILY)?, subscription)?)
    }

    /// Up to `limit` records of `subscription`'s copy after subject
    /// `after`, in subject order: each record's encoded bytes.
    pub fn copies(
        &self,
        subscription: &[u8; 32],
        after: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<HeldCopy>, RecordStoreError> {
        let start = copy_key(subscription, after.unwrap_or(&[0; 32]));
        let mut records = Vec::new();
        let iterator =
            self.db.iterator_cf(self.family(COPIES_FAMILY)?, IteratorMode::From(&start, Direction::Forward));
        for item in iterator {
            let (key, value) = item?;
            if !key.starts_with(subscription) || records.len() == limit {
                break;
            }
            if after.is_some() && key.as_ref() == start.as_slice() {
                continue;
            }
            let subject = <[u8; 32]>::try_from(&key[32..])
                .map_err(|_| RecordStoreError::Corrupt("a copy key is not 64 bytes".into()))?;
            stored_version(&value)?;
            records.push((subject, value[COPY_HEADER_BYTES..].to_vec()));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: u8, version: u64) -> CopiedRecord {
        CopiedRecord { subject: [subject; 32], version, bytes: format!("v{version}").into_bytes() }
    }

    #[test]
    fn a_copy_keeps_each_subject_once_at_its_newest_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let (mine, other) = ([1; 32], [2; 32]);
        let progress = |name: &'static str| move |added: u64| Ok(format!("{name}+{added}").into_bytes());
        assert_eq!(store.put_copies(&mine, &[record(5, 1), record(6, 1)], 1, progress("p1")).unwrap(), 2);
        // A push of a newer version, then a listing page that read the older one.
        assert_eq!(store.put_copies(&mine, &[record(5, 2)], 2, progress("p2")).unwrap(), 0);
        assert_eq!(store.put_copies(&mine, &[record(5, 1), record(7, 1)], 3, progress("p3")).unwrap(), 1);
        store.put_copies(&other, &[record(5, 9)], 4, progress("q")).unwrap();
        let held = store.copies(&mine, None, 10).unwrap();
        let versions: Vec<(u8, Vec<u8>)> =
            held.iter().map(|(subject, bytes)| (subject[0], bytes.clone())).collect();
        assert_eq!(versions, vec![(5, b"v2".to_vec()), (6, b"v1".to_vec()), (7, b"v1".to_vec())]);
        assert_eq!(store.copies(&mine, Some(&[5; 32]), 1).unwrap()[0].0, [6; 32], "resumes after a subject");
        assert_eq!(
            store.progress(&mine).unwrap().as_deref(),
            Some(&b"p3+1"[..]),
            "written with what it added"
        );
        store.put_progress(&mine, b"p4").unwrap();
        assert_eq!(store.progress(&mine).unwrap().as_deref(), Some(&b"p4"[..]));
        assert_eq!(store.copies(&[3; 32], None, 10).unwrap(), vec![]);
    }
}
