//! Erasing one of this organisation's records, as its owner decides on a
//! subject's deletion request (PIPL Art. 47): every version, its scope
//! index entries and its place in the count go in one synced write, and
//! the ranges they held are compacted, so the values leave the disk.

use std::collections::BTreeMap;
use std::path::Path;

use civmesh_policy::model::Dataset;
use rocksdb::WriteBatch;

use super::scope_index::{index_key, reindex, IndexTarget, SCOPE_INDEX_FAMILY};
use super::{
    record_prefix, synced, RecordStore, RecordStoreError, LATEST_FAMILY, RECORD_COUNTS_FAMILY,
    VERSIONS_FAMILY,
};

impl RecordStore {
    /// Deletes record `key` of `dataset` (every version, its index entries,
    /// one from the count) in one synced write, then compacts what it
    /// held; returns how many versions were deleted (0: no such record).
    pub fn delete_record(&self, dataset: &Dataset, key: &str) -> Result<u64, RecordStoreError> {
        let id = dataset.id.as_str();
        let (latest, versions) = (self.family(LATEST_FAMILY)?, self.family(VERSIONS_FAMILY)?);
        let index = self.family(SCOPE_INDEX_FAMILY)?;
        let _indexing =
            self.index_lock.lock().map_err(|_| RecordStoreError::Corrupt("index lock poisoned".into()))?;
        let Some(newest) = self.latest(id, key)? else { return Ok(0) };
        // A record's versions are `dataset \0 key \0 version`; keys hold no
        // NUL, so `dataset \0 key \1` ends exactly its range.
        let start = record_prefix(id, key);
        let mut end = start.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(versions, &start[..], &end[..]);
        batch.delete_cf(latest, &start);
        let target = IndexTarget { dataset: id, key, fields: &dataset.scope_fields };
        reindex(&mut batch, index, target, Some(&newest.fields), &BTreeMap::new());
        let count = self.count_locked(id)?.saturating_sub(1);
        batch.put_cf(self.family(RECORD_COUNTS_FAMILY)?, id, count.to_be_bytes());
        self.db.write_opt(batch, &synced())?;
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.db.compact_range_cf(versions, Some(&start[..]), Some(&end[..]));
        self.db.compact_range_cf(latest, Some(&start[..]), Some(&end[..]));
        for field in &dataset.scope_fields {
            if let Some(civmesh_policy::model::FieldValue::Text(value)) = newest.fields.get(field) {
                let entry = index_key(id, field, value, key);
                let mut after = entry.clone();
                after.push(0);
                self.db.compact_range_cf(index, Some(&entry[..]), Some(&after[..]));
            }
        }
        // The push queue names the keys it pushed; it is small (bounded),
        // so it is compacted whole.
        self.db.compact_range_cf(
            self.family(super::push_queue::PUSH_QUEUE_FAMILY)?,
            None::<&[u8]>,
            None::<&[u8]>,
        );
        // No write-ahead log keeps the record once every family is flushed.
        for name in super::FAMILIES {
            self.db.flush_cf(self.family(name)?)?;
        }
        Ok(newest.version)
    }

    /// The directory the store lives in (`NODE_DIR/records`).
    pub fn directory(&self) -> &Path {
        self.db.path()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use civmesh_certs::OrgId;
    use civmesh_policy::model::{FieldClass, FieldSpec, FieldType, FieldValue, SharingCategory};

    use super::*;
    use crate::records::{IndexRange, Provenance, ScanPlan};

    fn residents() -> Dataset {
        let field = |name: &str| FieldSpec {
            name: name.into(),
            field_type: FieldType::Text,
            class: FieldClass::Public,
        };
        Dataset {
            id: "residents".into(),
            owner: OrgId::new("dept/civil-affairs").unwrap(),
            title: "Residents".into(),
            subject_key_field: "citizen_id".into(),
            sharing: SharingCategory::Conditional,
            fields: vec![field("citizen_id"), field("street")],
            scope_fields: vec!["street".into()],
            version: 1,
        }
    }

    fn on(street: &str) -> BTreeMap<String, FieldValue> {
        BTreeMap::from([("street".to_string(), FieldValue::Text(street.into()))])
    }

    #[test]
    fn a_deleted_record_leaves_no_version_no_index_entry_and_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let dataset = residents();
        let import = Provenance::Import { batch: "b".into() };
        store
            .write(&dataset, vec![("k1".into(), on("jingansi")), ("k10".into(), on("jingansi"))], &import, 1)
            .unwrap();
        store.write(&dataset, vec![("k1".into(), on("caojiadu"))], &import, 2).unwrap();
        assert_eq!(store.count("residents").unwrap(), 2);

        assert_eq!(store.delete_record(&dataset, "k1").unwrap(), 2, "both versions");
        assert_eq!(store.latest("residents", "k1").unwrap(), None);
        assert_eq!(store.history("residents", "k1").unwrap(), vec![]);
        assert_eq!(store.count("residents").unwrap(), 1);
        let keys = |street: &str| {
            let plan =
                ScanPlan::Indexed { field: "street".into(), ranges: vec![IndexRange::Equals(street.into())] };
            let page = store.scan("residents", &plan, None, 10).unwrap();
            page.entries.into_iter().map(|entry| entry.key).collect::<Vec<_>>()
        };
        assert_eq!(keys("caojiadu"), Vec::<String>::new());
        assert_eq!(keys("jingansi"), ["k10"], "a record whose key extends the deleted one's stays");
        assert_eq!(store.history("residents", "k10").unwrap().len(), 1);
        assert_eq!(store.delete_record(&dataset, "k1").unwrap(), 0, "deleting again deletes nothing");
        assert_eq!(store.count("residents").unwrap(), 1);
        assert_eq!(store.directory(), dir.path());
    }
}
