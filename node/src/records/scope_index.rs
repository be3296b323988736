//! Secondary indexes on a dataset's scope fields, and ordered scans over
//! them or over every record, resumable from a position.
//!
//! Family `scope_index` maps `dataset \0 field \0 value \0 key` to nothing;
//! `scope_index_built` marks `dataset \0 field` whose index is complete.
//! The record store keeps the index of each declared scope field as it
//! writes; an index declared after records were written is built once, on
//! first use. An entry may be stale for a moment (a scan that races a
//! write); a scan's reader checks the record's value against the entry's.

use civmesh_policy::model::FieldValue;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{synced, RecordStore, RecordStoreError, LATEST_FAMILY};

pub(super) const SCOPE_INDEX_FAMILY: &str = "scope_index";
pub(super) const SCOPE_INDEX_BUILT_FAMILY: &str = "scope_index_built";
/// The longest value indexed, in bytes; longer ones are not (so a scan
/// position, and a cursor, stays small).
pub const SCOPE_VALUE_BYTES_MAX: usize = 256;
/// Index entries written per batch while an index is built.
const INDEX_BUILD_BATCH_ENTRIES_MAX: usize = 10_000;

/// What a scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanPlan {
    /// Every record of the dataset, in key order.
    Every,
    /// The records whose indexed `field` matches one of `ranges`, in
    /// (value, key) order.
    Indexed {
        /// The scope field.
        field: String,
        /// The values or prefixes, in any order.
        ranges: Vec<IndexRange>,
    },
}

/// One part of an indexed scan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndexRange {
    /// The value is exactly this.
    Equals(String),
    /// The value starts with this.
    Prefix(String),
}

/// One record a scan reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// The record key.
    pub key: String,
    /// The indexed value the entry was found under (for an indexed scan).
    pub value: Option<String>,
    /// Where the scan resumes after this entry.
    pub position: Vec<u8>,
}

/// The entries a scan reached, and whether it reached the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// In scan order.
    pub entries: Vec<ScanEntry>,
    /// No entry follows the last one.
    pub done: bool,
}

fn text(value: Option<&FieldValue>) -> Option<&str> {
    match value {
        Some(FieldValue::Text(text)) => Some(text),
        _ => None,
    }
}

fn field_prefix(dataset: &str, field: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(dataset.len() + field.len() + 2);
    prefix.extend_from_slice(dataset.as_bytes());
    prefix.push(0);
    prefix.extend_from_slice(field.as_bytes());
    prefix.push(0);
    prefix
}

fn built_key(dataset: &str, field: &str) -> Vec<u8> {
    let mut key = field_prefix(dataset, field);
    key.pop();
    key
}

fn range_prefix(dataset: &str, field: &str, range: &IndexRange) -> Vec<u8> {
    let mut prefix = field_prefix(dataset, field);
    match range {
        IndexRange::Equals(value) => {
            prefix.extend_from_slice(value.as_bytes());
            prefix.push(0);
        }
        IndexRange::Prefix(start) => prefix.extend_from_slice(start.as_bytes()),
    }
    prefix
}

pub(super) fn index_key(dataset: &str, field: &str, value: &str, key: &str) -> Vec<u8> {
    let mut full = field_prefix(dataset, field);
    full.extend_from_slice(value.as_bytes());
    full.push(0);
    full.extend_from_slice(key.as_bytes());
    full
}

/// The index changes for one record of `dataset` moving from `old` to `new`.
pub(super) fn reindex(
    batch: &mut WriteBatch,
    family: &rocksdb::ColumnFamily,
    target: IndexTarget<'_>,
    old: Option<&std::collections::BTreeMap<String, FieldValue>>,
    new: &std::collections::BTreeMap<String, FieldValue>,
) {
    for field in target.fields {
        let before = old.and_then(|fields| text(fields.get(field)));
        let after = text(new.get(field));
        // A value over the bound is not indexed (no scope value is that long).
        let (before, after) = (
            before.filter(|v| v.len() <= SCOPE_VALUE_BYTES_MAX),
            after.filter(|v| v.len() <= SCOPE_VALUE_BYTES_MAX),
        );
        if before == after {
            continue;
        }
        if let Some(value) = before {
            batch.delete_cf(family, index_key(target.dataset, field, value, target.key));
        }
        if let Some(value) = after {
            batch.put_cf(family, index_key(target.dataset, field, value, target.key), []);
        }
    }
}

/// Where [`RecordStore::scan_range`] reads: the entries under `prefix`,
/// from `start`, skipping `after` itself (the last entry already read).
struct Range<'a> {
    prefix: &'a [u8],
    start: &'a [u8],
    after: Option<&'a [u8]>,
}

/// Which record's index entries [`reindex`] changes.
pub(super) struct IndexTarget<'a> {
    pub dataset: &'a str,
    pub key: &'a str,
    pub fields: &'a [String],
}

/// The record key of a `latest` entry (`dataset \0 key \0`).
fn latest_entry_key(dataset: &str, stored: &[u8]) -> Option<String> {
    let inner = stored.get(dataset.len() + 1..stored.len().checked_sub(1)?)?;
    String::from_utf8(inner.to_vec()).ok()
}

/// The value and record key of an index entry (`... field \0 value \0 key`).
fn index_entry(prefix_len: usize, stored: &[u8]) -> Option<(String, String)> {
    let rest = stored.get(prefix_len..)?;
    let split = rest.iter().rposition(|byte| *byte == 0)?;
    let value = String::from_utf8(rest[..split].to_vec()).ok()?;
    let key = String::from_utf8(rest[split + 1..].to_vec()).ok()?;
    Some((value, key))
}

impl RecordStore {
    /// Up to `entries_max` records of `dataset` that `plan` covers, after
    /// `after` (a position from an earlier page), in scan order. An
    /// indexed scan builds its field's index first if it is not complete.
    pub fn scan(
        &self,
        dataset: &str,
        plan: &ScanPlan,
        after: Option<&[u8]>,
        entries_max: usize,
    ) -> Result<ScanPage, RecordStoreError> {
        match plan {
            ScanPlan::Every => self.scan_every(dataset, after, entries_max),
            ScanPlan::Indexed { field, ranges } => {
                self.ensure_index(dataset, field)?;
                self.scan_indexed(dataset, field, ranges, after, entries_max)
            }
        }
    }

    fn scan_every(
        &self,
        dataset: &str,
        after: Option<&[u8]>,
        entries_max: usize,
    ) -> Result<ScanPage, RecordStoreError> {
        let mut prefix = dataset.as_bytes().to_vec();
        prefix.push(0);
        let start = after.filter(|after| after.starts_with(&prefix)).unwrap_or(&prefix);
        let family = self.family(LATEST_FAMILY)?;
        let mut entries = Vec::new();
        let decode = |stored: &[u8]| Some((None, latest_entry_key(dataset, stored)?));
        let done = self.scan_range(
            family,
            Range { prefix: &prefix, start, after },
            &mut entries,
            entries_max,
            decode,
        )?;
        Ok(ScanPage { entries, done })
    }

    fn scan_indexed(
        &self,
        dataset: &str,
        field: &str,
        ranges: &[IndexRange],
        after: Option<&[u8]>,
        entries_max: usize,
    ) -> Result<ScanPage, RecordStoreError> {
        let family = self.family(SCOPE_INDEX_FAMILY)?;
        let prefix_len = field_prefix(dataset, field).len();
        let mut prefixes: Vec<Vec<u8>> =
            ranges.iter().map(|range| range_prefix(dataset, field, range)).collect();
        prefixes.sort();
        prefixes.dedup();
        let mut entries = Vec::new();
        let decode = |stored: &[u8]| {
            let (value, key) = index_entry(prefix_len, stored)?;
            Some((Some(value), key))
        };
        for prefix in &prefixes {
            let start = match after {
                Some(after) if after.starts_with(prefix) => after,
                // Every entry of this range sorts before the position.
                Some(after) if after > prefix.as_slice() => continue,
                _ => prefix.as_slice(),
            };
            let range = Range { prefix, start, after };
            if !self.scan_range(family, range, &mut entries, entries_max, decode)? {
                return Ok(ScanPage { entries, done: false });
            }
        }
        Ok(ScanPage { entries, done: true })
    }

    /// Appends to `entries` the entries of `family` in `range`, decoded by
    /// `decode` into (indexed value, record key), until it holds
    /// `entries_max`; returns whether the range ended first.
    fn scan_range(
        &self,
        family: &rocksdb::ColumnFamily,
        range: Range<'_>,
        entries: &mut Vec<ScanEntry>,
        entries_max: usize,
        decode: impl Fn(&[u8]) -> Option<(Option<String>, String)>,
    ) -> Result<bool, RecordStoreError> {
        for item in self.db.iterator_cf(family, IteratorMode::From(range.start, Direction::Forward)) {
            let (stored, _) = item?;
            if !stored.starts_with(range.prefix) {
                return Ok(true);
            }
            if Some(stored.as_ref()) == range.after {
                continue;
            }
            if entries.len() == entries_max {
                return Ok(false);
            }
            let (value, key) = decode(&stored)
                .ok_or_else(|| RecordStoreError::Corrupt("a scanned key is malformed".into()))?;
            entries.push(ScanEntry { key, value, position: stored.to_vec() });
        }
        Ok(true)
    }

    /// Builds `field`'s index of `dataset` from its records, unless it is
    /// complete: once, when a field becomes a scope field after records
    /// were written.
    pub fn ensure_index(&self, dataset: &str, field: &str) -> Result<(), RecordStoreError> {
        let built = self.family(SCOPE_INDEX_BUILT_FAMILY)?;
        if self.db.get_cf(built, built_key(dataset, field))?.is_some() {
            return Ok(());
        }
        let _indexing =
            self.index_lock.lock().map_err(|_| RecordStoreError::Corrupt("index lock poisoned".into()))?;
        if self.db.get_cf(built, built_key(dataset, field))?.is_some() {
            return Ok(());
        }
        let index = self.family(SCOPE_INDEX_FAMILY)?;
        let start = field_prefix(dataset, field);
        let mut end = built_key(dataset, field);
        end.push(1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(index, &start, &end);
        let fields = [field.to_string()];
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan_every(dataset, after.as_deref(), INDEX_BUILD_BATCH_ENTRIES_MAX)?;
            for entry in &page.entries {
                if let Some(record) = self.latest(dataset, &entry.key)? {
                    let target = IndexTarget { dataset, key: &entry.key, fields: &fields };
                    reindex(&mut batch, index, target, None, &record.fields);
                }
            }
            self.db.write_opt(std::mem::take(&mut batch), &synced())?;
            match page.entries.last() {
                Some(last) if !page.done => after = Some(last.position.clone()),
                _ => break,
            }
        }
        self.db.put_cf_opt(built, built_key(dataset, field), [], &synced())?;
        Ok(())
    }

    /// In `batch`: marks `dataset`'s indexes of `fields` complete when it
    /// has no record yet (the write that follows keeps them), and forgets
    /// the marks of fields no longer declared (rebuilt if declared again).
    pub(super) fn mark_indexes(
        &self,
        batch: &mut WriteBatch,
        dataset: &str,
        fields: &[String],
    ) -> Result<(), RecordStoreError> {
        let built = self.family(SCOPE_INDEX_BUILT_FAMILY)?;
        let mut prefix = dataset.as_bytes().to_vec();
        prefix.push(0);
        for item in self.db.iterator_cf(built, IteratorMode::From(&prefix, Direction::Forward)) {
            let (stored, _) = item?;
            if !stored.starts_with(&prefix) {
                break;
            }
            let field = String::from_utf8_lossy(&stored[prefix.len()..]).into_owned();
            if !fields.contains(&field) {
                batch.delete_cf(built, &stored);
            }
        }
        if self.scan_every(dataset, None, 1)?.entries.is_empty() {
            for field in fields {
                batch.put_cf(built, built_key(dataset, field), []);
            }
        }
        Ok(())
    }
}
