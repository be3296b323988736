//! The record store: the authoritative records of the datasets this node's
//! organisation owns, in RocksDB, with every version kept.
//!
//! Column families: `latest` maps `dataset \0 key` to the newest version
//! number; `versions` maps `dataset \0 key \0 version` (big-endian) to the
//! [`RecordVersion`]; `subscriptions` and `corrections` keep the node's
//! subscriptions and its correction inbox and outbox, and `pushes` the
//! logged pushes a subscriber has not received yet; `attachments` keeps
//! correction attachments by SHA-256 (at the submitter once uploaded, at
//! the owner once whole and checked) and `attachment_parts` the chunks of
//! one still arriving; `scope_index` (see [`scope_index`]) indexes the
//! scope fields, `copies` (see [`copies`]) keeps a subscriber's copies, and
//! `record_counts` each dataset's number of records, written with them;
//! `deletion_receipts` the receipts a holder owes for copies it deleted
//! (see [`received`]).
//! The families share one bounded block cache. A batch of rows is one
//! synced RocksDB write: it is on disk before the caller is told, or not
//! at all.

mod copies;
mod erase;
mod push_queue;
mod received;
mod scope_index;

use std::collections::BTreeMap;
use std::path::Path;

use civmesh_certs::{codec, UnixMillis};
use civmesh_policy::model::{Dataset, FieldValue};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

pub use copies::{CopiedRecord, COPY_BYTES_MAX};
use copies::{COPIES_FAMILY, SUBSCRIPTION_PROGRESS_FAMILY};
pub use push_queue::QueuedChanges;
use push_queue::{PUSHES_FAMILY, PUSH_QUEUE_FAMILY};
use received::DELETION_RECEIPTS_FAMILY;
pub use received::{CopyDeletion, DELETION_BATCH_RECORDS_MAX};
pub use scope_index::{IndexRange, ScanEntry, ScanPage, ScanPlan};
use scope_index::{IndexTarget, SCOPE_INDEX_BUILT_FAMILY, SCOPE_INDEX_FAMILY};

const LATEST_FAMILY: &str = "latest";
const VERSIONS_FAMILY: &str = "versions";
const SUBSCRIPTIONS_FAMILY: &str = "subscriptions";
const CORRECTIONS_FAMILY: &str = "corrections";
const ATTACHMENTS_FAMILY: &str = "attachments";
const ATTACHMENT_PARTS_FAMILY: &str = "attachment_parts";
/// `dataset` to its number of records (u64, big-endian), written in the
/// same batch as the records.
const RECORD_COUNTS_FAMILY: &str = "record_counts";
/// The longest record key accepted, in bytes.
pub const RECORD_KEY_BYTES_MAX: usize = 256;
/// The largest stored record version, in bytes.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// The largest row's fields, encoded, in bytes: with its provenance and
/// numbers a version stays within [`RECORD_BYTES_MAX`], which reads decode.
pub const RECORD_FIELDS_BYTES_MAX: usize = RECORD_BYTES_MAX - 64 * 1024;
/// The record store's block cache, shared by its column families, in bytes.
const BLOCK_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// A bulk import, by batch id.
    Import {
        /// The import batch.
        batch: String,
    },
    /// An accepted correction, by correction id.
    Correction {
        /// The correction.
        id: String,
    },
}

/// One version of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordVersion {
    /// 1 for the first version, then +1 per change.
    pub version: u64,
    /// When it was written.
    pub written_at_ms: UnixMillis,
    /// What wrote it.
    pub provenance: Provenance,
    /// The field values.
    pub fields: BTreeMap<String, FieldValue>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordStoreError {
    /// RocksDB failed (disk full, I/O error, corruption).
    #[error("record store: {0}")]
    Database(#[from] rocksdb::Error),
    /// A stored value does not decode.
    #[error("record store holds a corrupt value: {0}")]
    Corrupt(String),
    /// A version would encode past what reads decode; nothing was written.
    #[error(
        "a record version of {bytes} bytes is over the {RECORD_BYTES_MAX} a record may take; nothing written"
    )]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
    },
}

/// Why a row was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RowError {
    /// The row names a field the schema does not have.
    #[error("field {0:?} is not in the schema")]
    FieldUnknown(String),
    /// A value does not fit its field's type.
    #[error("field {field:?} expects {expected}")]
    WrongType {
        /// The field.
        field: String,
        /// The type expected.
        expected: String,
    },
    /// The subject key is missing, empty, too long or not text.
    #[error("the subject key field {0:?} must be non-empty text of at most {RECORD_KEY_BYTES_MAX} bytes without NUL")]
    KeyInvalid(String),
    /// The row's fields encode to more than a record may hold.
    #[error("the row takes {bytes} bytes, over the {RECORD_FIELDS_BYTES_MAX} a record's fields may take")]
    TooLarge {
        /// Its fields' encoded size.
        bytes: usize,
    },
}

/// Checks a row against `dataset`'s schema; returns its key and fields
/// (absent schema fields become null).
pub fn validate_row(
    dataset: &Dataset,
    row: &BTreeMap<String, FieldValue>,
) -> Result<(String, BTreeMap<String, FieldValue>), RowError> {
    if let Some(unknown) = row.keys().find(|name| dataset.field(name).is_none()) {
        return Err(RowError::FieldUnknown(unknown.clone()));
    }
    let mut fields = BTreeMap::new();
    for spec in &dataset.fields {
        let value = row.get(&spec.name).cloned().unwrap_or(FieldValue::Null);
        if !value.fits(spec.field_type) {
            return Err(RowError::WrongType {
                field: spec.name.clone(),
                expected: format!("{:?}", spec.field_type).to_lowercase(),
            });
        }
        fields.insert(spec.name.clone(), value);
    }
    let key = match fields.get(&dataset.subject_key_field) {
        Some(FieldValue::Text(key))
            if !key.is_empty() && key.len() <= RECORD_KEY_BYTES_MAX && !key.contains('\0') =>
        {
            key.clone()
        }
        _ => return Err(RowError::KeyInvalid(dataset.subject_key_field.clone())),
    };
    let bytes = codec::encode(&fields).map_or(usize::MAX, |encoded| encoded.len());
    if bytes > RECORD_FIELDS_BYTES_MAX {
        return Err(RowError::TooLarge { bytes });
    }
    Ok((key, fields))
}

/// A correction's id and its encoded entry.
pub type StoredCorrection = ([u8; 32], Vec<u8>);

/// Write options that sync the write to disk before returning.
fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Every column family of the store.
const FAMILIES: [&str; 14] = [
    LATEST_FAMILY,
    VERSIONS_FAMILY,
    SUBSCRIPTIONS_FAMILY,
    CORRECTIONS_FAMILY,
    PUSHES_FAMILY,
    ATTACHMENTS_FAMILY,
    ATTACHMENT_PARTS_FAMILY,
    SCOPE_INDEX_FAMILY,
    SCOPE_INDEX_BUILT_FAMILY,
    COPIES_FAMILY,
    SUBSCRIPTION_PROGRESS_FAMILY,
    RECORD_COUNTS_FAMILY,
    DELETION_RECEIPTS_FAMILY,
    PUSH_QUEUE_FAMILY,
];

/// The record store.
pub struct RecordStore {
    db: DB,
    /// Held by a write and by an index build, so a build never erases an
    /// entry a write just made.
    index_lock: std::sync::Mutex<()>,
    /// Counts record writes, so a reader can tell nothing was written since it read.
    generation: std::sync::atomic::AtomicU64,
    /// The number the push queue's next entry gets.
    push_queue_next: std::sync::atomic::AtomicU64,
}

/// A stored big-endian u64; `what` names it in the error.
fn be_u64(bytes: &[u8], what: &str) -> Result<u64, RecordStoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| RecordStoreError::Corrupt(format!("{what} is not 8 bytes")))
}

fn record_prefix(dataset: &str, key: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(dataset.len() + key.len() + 2);
    prefix.extend_from_slice(dataset.as_bytes());
    prefix.push(0);
    prefix.extend_from_slice(key.as_bytes());
    prefix.push(0);
    prefix
}

/// `id ‖ index ‖ offset`, big-endian, so chunks sort by offset.
fn part_key(id: &[u8; 32], index: u32, offset: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(44);
    key.extend_from_slice(id);
    key.extend_from_slice(&index.to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

fn version_key(dataset: &str, key: &str, version: u64) -> Vec<u8> {
    let mut full = record_prefix(dataset, key);
    full.extend_from_slice(&version.to_be_bytes());
    full
}

impl RecordStore {
    /// Opens (or creates) the store in `directory`.
    pub fn open(directory: &Path) -> Result<Self, RecordStoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let family_options = civmesh_consensus::database::family_options;
        let families = std::iter::once(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .chain(FAMILIES)
            .map(|name| ColumnFamilyDescriptor::new(name, family_options(&cache)));
        let db = DB::open_cf_descriptors(&options, directory, families)?;
        let push_queue_next = std::sync::atomic::AtomicU64::new(Self::push_queue_end(&db)?);
        Ok(RecordStore {
            db,
            index_lock: std::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            push_queue_next,
        })
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, RecordStoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| RecordStoreError::Corrupt(format!("column family {name} is missing")))
    }

    /// The newest version number of a record, if it exists.
    pub fn latest_version(&self, dataset: &str, key: &str) -> Result<Option<u64>, RecordStoreError> {
        let bytes = self.db.get_cf(self.family(LATEST_FAMILY)?, record_prefix(dataset, key))?;
        bytes.map(|bytes| be_u64(&bytes, "a latest-version entry")).transpose()
    }

    /// Writes one new version of each row of `dataset` in one synced batch,
    /// keeping the indexes of its scope fields and queueing the keys for
    /// the subscribers ([`QueuedChanges`]); returns the version each row
    /// got. Later rows with the same key see earlier ones.
    pub fn write(
        &self,
        dataset: &Dataset,
        rows: Vec<(String, BTreeMap<String, FieldValue>)>,
        provenance: &Provenance,
        now_ms: UnixMillis,
    ) -> Result<Vec<u64>, RecordStoreError> {
        let id = dataset.id.as_str();
        let (latest, versions) = (self.family(LATEST_FAMILY)?, self.family(VERSIONS_FAMILY)?);
        let index = self.family(SCOPE_INDEX_FAMILY)?;
        let _indexing =
            self.index_lock.lock().map_err(|_| RecordStoreError::Corrupt("index lock poisoned".into()))?;
        let mut batch = WriteBatch::default();
        self.mark_indexes(&mut batch, id, &dataset.scope_fields)?;
        let mut count = self.count_locked(id)?;
        let mut pending: BTreeMap<String, RecordVersion> = BTreeMap::new();
        let mut written = Vec::with_capacity(rows.len());
        for (key, fields) in rows {
            let previous = match pending.remove(&key) {
                Some(record) => Some(record),
                None => self.latest(id, &key)?,
            };
            count += u64::from(previous.is_none());
            let version = previous.as_ref().map_or(0, |record| record.version) + 1;
            let target = IndexTarget { dataset: id, key: &key, fields: &dataset.scope_fields };
            scope_index::reindex(
                &mut batch,
                index,
                target,
                previous.as_ref().map(|record| &record.fields),
                &fields,
            );
            let record =
                RecordVersion { version, written_at_ms: now_ms, provenance: provenance.clone(), fields };
            let bytes =
                codec::encode(&record).map_err(|error| RecordStoreError::Corrupt(error.to_string()))?;
            if bytes.len() > RECORD_BYTES_MAX {
                return Err(RecordStoreError::TooLarge { bytes: bytes.len() });
            }
            batch.put_cf(versions, version_key(id, &key, version), bytes);
            batch.put_cf(latest, record_prefix(id, &key), version.to_be_bytes());
            pending.insert(key, record);
            written.push(version);
        }
        batch.put_cf(self.family(RECORD_COUNTS_FAMILY)?, id, count.to_be_bytes());
        self.queue_changes(
            &mut batch,
            &QueuedChanges { dataset: id.to_string(), keys: pending.into_keys().collect() },
        )?;
        self.db.write_opt(batch, &synced())?;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(written)
    }

    /// Changes after every record write: equal before and after a read
    /// means no record changed in between (since this store was opened).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every version of a record, oldest first.
    pub fn history(&self, dataset: &str, key: &str) -> Result<Vec<RecordVersion>, RecordStoreError> {
        let prefix = record_prefix(dataset, key);
        let mut versions = Vec::new();
        for item in self
            .db
            .iterator_cf(self.family(VERSIONS_FAMILY)?, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (stored_key, value) = item?;
            if !stored_key.starts_with(&prefix) || stored_key.len() != prefix.len() + 8 {
                break;
            }
            versions.push(
                codec::decode_exact(&value, RECORD_BYTES_MAX)
                    .map_err(|error| RecordStoreError::Corrupt(error.to_string()))?,
            );
        }
        Ok(versions)
    }

    /// The newest version of a record.
    pub fn latest(&self, dataset: &str, key: &str) -> Result<Option<RecordVersion>, RecordStoreError> {
        let Some(version) = self.latest_version(dataset, key)? else { return Ok(None) };
        let bytes = self.db.get_cf(self.family(VERSIONS_FAMILY)?, version_key(dataset, key, version))?;
        bytes
            .map(|bytes| {
                codec::decode_exact(&bytes, RECORD_BYTES_MAX)
                    .map_err(|error| RecordStoreError::Corrupt(error.to_string()))
            })
            .transpose()
    }

    /// The newest version of each of `keys` (of one dataset), in order, read
    /// in two batched lookups: the version numbers, then the versions.
    pub fn latest_many(
        &self,
        dataset: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<RecordVersion>>, RecordStoreError> {
        let prefixes: Vec<Vec<u8>> = keys.iter().map(|key| record_prefix(dataset, key)).collect();
        let numbers = self.db.batched_multi_get_cf(self.family(LATEST_FAMILY)?, &prefixes, false);
        // Which of `keys` exist, and the version key of each that does.
        let mut existing = Vec::with_capacity(keys.len());
        let mut version_keys = Vec::with_capacity(keys.len());
        for (position, (prefix, number)) in prefixes.into_iter().zip(numbers).enumerate() {
            let Some(number) = number? else { continue };
            let version = be_u64(&number, "a latest-version entry")?;
            let mut version_key = prefix;
            version_key.extend_from_slice(&version.to_be_bytes());
            existing.push(position);
            version_keys.push(version_key);
        }
        let versions = self.db.batched_multi_get_cf(self.family(VERSIONS_FAMILY)?, &version_keys, false);
        let mut latest: Vec<Option<RecordVersion>> = keys.iter().map(|_| None).collect();
        for (position, bytes) in existing.into_iter().zip(versions) {
            latest[position] = bytes?
                .map(|bytes| {
                    codec::decode_exact(&bytes, RECORD_BYTES_MAX)
                        .map_err(|error| RecordStoreError::Corrupt(error.to_string()))
                })
                .transpose()?;
        }
        Ok(latest)
    }

    /// What the record said at `at_ms`: the newest version written no later.
    pub fn at(
        &self,
        dataset: &str,
        key: &str,
        at_ms: UnixMillis,
    ) -> Result<Option<RecordVersion>, RecordStoreError> {
        Ok(self.history(dataset, key)?.into_iter().rev().find(|version| version.written_at_ms <= at_ms))
    }

    /// Keeps a subscription (its signed request, by digest), synced.
    pub fn put_subscription(&self, digest: &[u8; 32], envelope_bytes: &[u8]) -> Result<(), RecordStoreError> {
        self.db.put_cf_opt(self.family(SUBSCRIPTIONS_FAMILY)?, digest, envelope_bytes, &synced())?;
        Ok(())
    }

    /// Every kept subscription's signed request.
    pub fn subscriptions(&self) -> Result<Vec<Vec<u8>>, RecordStoreError> {
        let mut all = Vec::new();
        for item in self.db.iterator_cf(self.family(SUBSCRIPTIONS_FAMILY)?, IteratorMode::Start) {
            all.push(item?.1.to_vec());
        }
        Ok(all)
    }

    /// Keeps a correction's entry (encoded by the corrections module), synced.
    pub fn put_correction(&self, id: &[u8; 32], entry_bytes: &[u8]) -> Result<(), RecordStoreError> {
        self.db.put_cf_opt(self.family(CORRECTIONS_FAMILY)?, id, entry_bytes, &synced())?;
        Ok(())
    }

    /// One correction's entry.
    pub fn correction(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>, RecordStoreError> {
        Ok(self.db.get_cf(self.family(CORRECTIONS_FAMILY)?, id)?)
    }

    /// Every correction's entry, by id.
    pub fn corrections(&self) -> Result<Vec<StoredCorrection>, RecordStoreError> {
        let mut all = Vec::new();
        for item in self.db.iterator_cf(self.family(CORRECTIONS_FAMILY)?, IteratorMode::Start) {
            let (key, value) = item?;
            let id = <[u8; 32]>::try_from(key.as_ref())
                .map_err(|_| RecordStoreError::Corrupt("a correction id is not 32 bytes".to_string()))?;
            all.push((id, value.to_vec()));
        }
        Ok(all)
    }

    /// Keeps an attachment by its SHA-256, synced.
    pub fn put_attachment(&self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), RecordStoreError> {
        self.db.put_cf_opt(self.family(ATTACHMENTS_FAMILY)?, sha256, bytes, &synced())?;
        Ok(())
    }

    /// An attachment by its SHA-256.
    pub fn attachment(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, RecordStoreError> {
        Ok(self.db.get_cf(self.family(ATTACHMENTS_FAMILY)?, sha256)?)
    }

    /// The first `bytes_max` bytes of an attachment, if kept (read without
    /// copying the rest).
    pub fn attachment_head(
        &self,
        sha256: &[u8; 32],
        bytes_max: usize,
    ) -> Result<Option<Vec<u8>>, RecordStoreError> {
        let pinned = self.db.get_pinned_cf(self.family(ATTACHMENTS_FAMILY)?, sha256)?;
        Ok(pinned.map(|bytes| bytes[..bytes.len().min(bytes_max)].to_vec()))
    }

    /// The size of an attachment, if kept.
    pub fn attachment_len(&self, sha256: &[u8; 32]) -> Result<Option<u64>, RecordStoreError> {
        Ok(self.db.get_pinned_cf(self.family(ATTACHMENTS_FAMILY)?, sha256)?.map(|bytes| bytes.len() as u64))
    }

    /// Keeps one chunk of attachment `index` of correction `id`, at `offset`, synced.
    pub fn put_attachment_part(
        &self,
        id: &[u8; 32],
        index: u32,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), RecordStoreError> {
        let family = self.family(ATTACHMENT_PARTS_FAMILY)?;
        self.db.put_cf_opt(family, part_key(id, index, offset), bytes, &synced())?;
        Ok(())
    }

    /// The chunks kept of attachment `index` of correction `id`, by offset.
    pub fn attachment_parts(
        &self,
        id: &[u8; 32],
        index: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>, RecordStoreError> {
        let prefix = part_key(id, index, 0)[..36].to_vec();
        let mut parts = Vec::new();
        for item in self.db.iterator_cf(
            self.family(ATTACHMENT_PARTS_FAMILY)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let offset = <[u8; 8]>::try_from(&key[36..]).map(u64::from_be_bytes).map_err(|_| {
                RecordStoreError::Corrupt("an attachment part key is not 44 bytes".to_string())
            })?;
            parts.push((offset, value.to_vec()));
        }
        Ok(parts)
    }

    /// Forgets the chunks of attachment `index` of correction `id`, synced.
    pub fn delete_attachment_parts(&self, id: &[u8; 32], index: u32) -> Result<(), RecordStoreError> {
        let family = self.family(ATTACHMENT_PARTS_FAMILY)?;
        let mut batch = WriteBatch::default();
        for (offset, _) in self.attachment_parts(id, index)? {
            batch.delete_cf(family, part_key(id, index, offset));
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// How many records `dataset` holds: kept beside the records, so one
    /// read (a store written before counts were kept counts once, then keeps it).
    pub fn count(&self, dataset: &str) -> Result<u64, RecordStoreError> {
        if let Some(count) = self.stored_count(dataset)? {
            return Ok(count);
        }
        let _indexing =
            self.index_lock.lock().map_err(|_| RecordStoreError::Corrupt("index lock poisoned".into()))?;
        let count = self.count_locked(dataset)?;
        self.db.put_cf_opt(self.family(RECORD_COUNTS_FAMILY)?, dataset, count.to_be_bytes(), &synced())?;
        Ok(count)
    }

    fn stored_count(&self, dataset: &str) -> Result<Option<u64>, RecordStoreError> {
        let stored = self.db.get_pinned_cf(self.family(RECORD_COUNTS_FAMILY)?, dataset)?;
        stored.map(|bytes| be_u64(&bytes, "a record count")).transpose()
    }

    /// The count of `dataset`, stored or counted; the caller holds `index_lock`.
    fn count_locked(&self, dataset: &str) -> Result<u64, RecordStoreError> {
        if let Some(count) = self.stored_count(dataset)? {
            return Ok(count);
        }
        let mut prefix = dataset.as_bytes().to_vec();
        prefix.push(0);
        let mut count = 0;
        for item in
            self.db.iterator_cf(self.family(LATEST_FAMILY)?, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests;
