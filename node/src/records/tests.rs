//! The record store's tests: schema checks, versions, scope indexes and
//! scans, attachment parts.

use super::*;
use civmesh_certs::OrgId;
use civmesh_policy::model::{FieldClass, FieldSpec, FieldType, SharingCategory};

fn dataset() -> Dataset {
    let field =
        |name: &str, field_type| FieldSpec { name: name.into(), field_type, class: FieldClass::Public };
    Dataset {
        id: "market-supervision/enterprise-registry".into(),
        owner: OrgId::new("dept/market-supervision").unwrap(),
        title: "Enterprises".into(),
        subject_key_field: "credit_code".into(),
        sharing: SharingCategory::Conditional,
        fields: vec![
            field("credit_code", FieldType::Text),
            field("employees", FieldType::Integer),
            field("founded", FieldType::Date),
        ],
        scope_fields: vec![],
        version: 1,
    }
}

fn row(pairs: &[(&str, FieldValue)]) -> BTreeMap<String, FieldValue> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
}

#[test]
fn rows_are_validated_against_the_schema() {
    let dataset = dataset();
    let text = |s: &str| FieldValue::Text(s.into());
    let (key, fields) = validate_row(
        &dataset,
        &row(&[("credit_code", text("91310000X")), ("employees", FieldValue::Integer(5))]),
    )
    .unwrap();
    assert_eq!(key, "91310000X");
    assert_eq!(fields["founded"], FieldValue::Null);
    let cases = [
        (
            row(&[("credit_code", text("k")), ("colour", text("red"))]),
            RowError::FieldUnknown("colour".into()),
        ),
        (
            row(&[("credit_code", text("k")), ("employees", text("five"))]),
            RowError::WrongType { field: "employees".into(), expected: "integer".into() },
        ),
        (
            row(&[("credit_code", text("k")), ("founded", text("May"))]),
            RowError::WrongType { field: "founded".into(), expected: "date".into() },
        ),
        (row(&[("employees", FieldValue::Integer(1))]), RowError::KeyInvalid("credit_code".into())),
        (row(&[("credit_code", text(""))]), RowError::KeyInvalid("credit_code".into())),
        (
            row(&[("credit_code", FieldValue::Integer(7))]),
            RowError::WrongType { field: "credit_code".into(), expected: "text".into() },
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(validate_row(&dataset, &bad).unwrap_err(), expected);
    }
}

/// A row whose fields encode past what a record may hold is refused when
/// it is checked, and a version past what reads decode is never written:
/// it could not be read back.
#[test]
fn a_record_past_its_byte_bound_is_refused_and_nothing_is_written() {
    let dataset = dataset();
    let long_key = "k".repeat(RECORD_KEY_BYTES_MAX);
    let mut rows = Vec::new();
    // Many columns at the key's length make a row past the bound.
    let mut wide = dataset.clone();
    for column in 0..(RECORD_BYTES_MAX / RECORD_KEY_BYTES_MAX + 1) {
        let name = format!("note_{column}");
        wide.fields.push(FieldSpec {
            name: name.clone(),
            field_type: FieldType::Text,
            class: FieldClass::Public,
        });
        rows.push((name, FieldValue::Text(long_key.clone())));
    }
    rows.push(("credit_code".into(), FieldValue::Text("k1".into())));
    let row: BTreeMap<String, FieldValue> = rows.into_iter().collect();
    assert!(
        matches!(validate_row(&wide, &row), Err(RowError::TooLarge { bytes }) if bytes > RECORD_FIELDS_BYTES_MAX)
    );
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let import = Provenance::Import { batch: "b".into() };
    let small = BTreeMap::from([("credit_code".to_string(), FieldValue::Text("k0".into()))]);
    let written = store.write(&wide, vec![("k0".into(), small), ("k1".into(), row)], &import, 1);
    assert!(matches!(written, Err(RecordStoreError::TooLarge { bytes }) if bytes > RECORD_BYTES_MAX));
    assert_eq!(store.count(&wide.id).unwrap(), 0, "not even the small row before it");
}

#[test]
fn every_version_is_kept_and_history_answers_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let schema = dataset();
    let dataset = schema.id.as_str();
    let fields = |address: &str| row(&[("address", FieldValue::Text(address.into()))]);
    let import = Provenance::Import { batch: "b1".into() };
    assert_eq!(
        store
            .write(&schema, vec![("k1".into(), fields("old")), ("k2".into(), fields("x"))], &import, 1000)
            .unwrap(),
        vec![1, 1]
    );
    let correction = Provenance::Correction { id: "c1".into() };
    assert_eq!(store.write(&schema, vec![("k1".into(), fields("new"))], &correction, 2000).unwrap(), vec![2]);
    assert_eq!(
        store
            .write(
                &schema,
                vec![("k1".into(), fields("newer")), ("k1".into(), fields("newest"))],
                &correction,
                3000
            )
            .unwrap(),
        vec![3, 4]
    );
    let latest = store.latest(dataset, "k1").unwrap().unwrap();
    assert_eq!((latest.version, latest.provenance.clone()), (4, correction));
    let many = store.latest_many(dataset, &["k2", "absent", "k1", "k", "k1"]).unwrap();
    let versions: Vec<Option<u64>> = many.iter().map(|record| record.as_ref().map(|r| r.version)).collect();
    assert_eq!(versions, vec![Some(1), None, Some(4), None, Some(4)], "in the keys' order, absent ones None");
    assert_eq!(many[2].as_ref(), Some(&latest));
    assert_eq!(store.latest_many(dataset, &[]).unwrap(), vec![]);
    assert_eq!(store.at(dataset, "k1", 1500).unwrap().unwrap().fields, fields("old"));
    assert_eq!(store.at(dataset, "k1", 999).unwrap(), None);
    assert_eq!(store.history(dataset, "k1").unwrap().len(), 4);
    assert_eq!(
        store.history(dataset, "k").unwrap().len(),
        0,
        "a key that is a prefix of another sees nothing"
    );
    assert_eq!(store.count(dataset).unwrap(), 2, "new versions of a key do not count it again");
    store
        .write(&schema, vec![("k3".into(), fields("x")), ("k3".into(), fields("y"))], &import, 4000)
        .unwrap();
    assert_eq!(store.count(dataset).unwrap(), 3, "a new key twice in one batch counts once");
    assert_eq!(store.count("another/dataset").unwrap(), 0);
    // A store from before counts were kept counts once, then keeps it.
    store.db.delete_cf(store.family(RECORD_COUNTS_FAMILY).unwrap(), dataset).unwrap();
    assert_eq!(store.stored_count(dataset).unwrap(), None);
    assert_eq!(store.count(dataset).unwrap(), 3);
    assert_eq!(store.stored_count(dataset).unwrap(), Some(3));
    drop(store);
    let reopened = RecordStore::open(dir.path()).unwrap();
    assert_eq!(reopened.latest_version(dataset, "k1").unwrap(), Some(4));
    assert_eq!(reopened.count(dataset).unwrap(), 3);
}

/// Scans every page of `plan` with pages of `entries_max`; the keys.
fn scan_all(store: &RecordStore, plan: &ScanPlan, entries_max: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan("d", plan, after.as_deref(), entries_max).unwrap();
        assert!(page.entries.len() <= entries_max);
        keys.extend(page.entries.iter().map(|entry| entry.key.clone()));
        match page.entries.last() {
            Some(last) if !page.done => after = Some(last.position.clone()),
            _ => return keys,
        }
    }
}

#[test]
fn scope_indexes_follow_writes_and_scans_resume_without_gap_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    let mut schema = dataset();
    schema.id = "d".into();
    schema.scope_fields = vec!["street".into()];
    let text = |s: &str| FieldValue::Text(s.into());
    let at = |street: &str| row(&[("street", text(street))]);
    let import = Provenance::Import { batch: "b".into() };
    let rows: Vec<_> = (0..30)
        .map(|index| (format!("k{index:02}"), at(["nanjingxilu", "jingansi", "zhenru"][index % 3])))
        .collect();
    store.write(&schema, rows, &import, 1).unwrap();
    // k00 moves from Nanjing West Road to Jing'an Temple.
    store.write(&schema, vec![("k00".into(), at("jingansi"))], &import, 2).unwrap();
    let street = |values: &[&str]| ScanPlan::Indexed {
        field: "street".into(),
        ranges: values.iter().map(|value| IndexRange::Equals(value.to_string())).collect(),
    };
    let nanjing: Vec<String> = (3..30).step_by(3).map(|index| format!("k{index:02}")).collect();
    for entries_max in [1, 4, 9, 100] {
        assert_eq!(scan_all(&store, &street(&["nanjingxilu"]), entries_max), nanjing);
    }
    let both = scan_all(&store, &street(&["zhenru", "nanjingxilu"]), 4);
    assert_eq!(both.len(), 19, "{both:?}");
    assert_eq!(&both[..9], &nanjing[..], "values in order, each value's keys in order");
    let prefix =
        ScanPlan::Indexed { field: "street".into(), ranges: vec![IndexRange::Prefix("jing".into())] };
    assert_eq!(scan_all(&store, &prefix, 3).len(), 11, "jingansi's ten and the moved k00");
    assert_eq!(scan_all(&store, &ScanPlan::Every, 7).len(), 30);
    assert!(scan_all(&store, &street(&["huangpu"]), 5).is_empty());
    // An index not kept as records were written is built on first use.
    let late = ScanPlan::Indexed { field: "address".into(), ranges: vec![IndexRange::Prefix(String::new())] };
    store.write(&schema, vec![("k99".into(), row(&[("address", text("1 Road"))]))], &import, 3).unwrap();
    assert_eq!(scan_all(&store, &late, 2), vec!["k99".to_string()]);
}

#[test]
fn attachment_parts_are_kept_per_correction_and_index_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    store.put_attachment_part(&[1; 32], 0, 300, b"later").unwrap();
    store.put_attachment_part(&[1; 32], 0, 0, b"first").unwrap();
    store.put_attachment_part(&[1; 32], 1, 0, b"other index").unwrap();
    store.put_attachment_part(&[2; 32], 0, 0, b"other correction").unwrap();
    assert_eq!(
        store.attachment_parts(&[1; 32], 0).unwrap(),
        vec![(0, b"first".to_vec()), (300, b"later".to_vec())]
    );
    store.delete_attachment_parts(&[1; 32], 0).unwrap();
    assert!(store.attachment_parts(&[1; 32], 0).unwrap().is_empty());
    assert_eq!(store.attachment_parts(&[1; 32], 1).unwrap().len(), 1);
    store.put_attachment(&[9; 32], b"%PDF").unwrap();
    assert_eq!(store.attachment(&[9; 32]).unwrap().as_deref(), Some(&b"%PDF"[..]));
    assert_eq!(
        (store.attachment_len(&[9; 32]).unwrap(), store.attachment_len(&[8; 32]).unwrap()),
        (Some(4), None)
    );
}

/// Each write queues its keys in the same batch, numbered in write order;
/// entries stay until forgotten, across a reopen, which numbers on.
#[test]
fn each_write_queues_its_keys_for_the_subscribers_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dataset();
    let import = Provenance::Import { batch: "b".into() };
    let key = |key: &str| (key.to_string(), row(&[("credit_code", FieldValue::Text(key.into()))]));
    let queued = |store: &RecordStore| -> Vec<(u64, Vec<String>)> {
        let entries = store.queued_changes(10).unwrap();
        assert!(entries.iter().all(|(_, changes)| changes.dataset == dataset.id));
        entries.into_iter().map(|(number, changes)| (number, changes.keys)).collect()
    };
    {
        let store = RecordStore::open(dir.path()).unwrap();
        assert_eq!(store.queued_count().unwrap(), 0);
        store.write(&dataset, vec![key("b"), key("a"), key("b")], &import, 1).unwrap();
        store.write(&dataset, vec![key("c")], &import, 2).unwrap();
        assert_eq!(queued(&store), [(0, vec!["a".into(), "b".into()]), (1, vec!["c".into()])]);
        assert_eq!(store.queued_count().unwrap(), 2);
        store.forget_queued_changes(0).unwrap();
        assert_eq!(queued(&store), [(1, vec!["c".into()])]);
    }
    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(queued(&store), [(1, vec!["c".into()])], "kept across a reopen");
    store.write(&dataset, vec![key("d")], &import, 3).unwrap();
    assert_eq!(queued(&store), [(1, vec!["c".into()]), (2, vec!["d".into()])], "numbered on");
    assert_eq!(store.queued_changes(1).unwrap().len(), 1, "a bounded read");
}

/// Kept pushes are read a page at a time from any position, so a reader
/// can go on past a page it could not send.
#[test]
fn kept_pushes_are_read_a_page_at_a_time_after_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::open(dir.path()).unwrap();
    for position in [3u64, 7, 256, 1 << 40] {
        store.put_push(position, &position.to_be_bytes()).unwrap();
    }
    let positions = |after, limit| -> Vec<u64> {
        store.pushes_after(after, limit).unwrap().into_iter().map(|(position, _)| position).collect()
    };
    assert_eq!(positions(None, 2), [3, 7]);
    assert_eq!(positions(Some(7), 2), [256, 1 << 40]);
    assert_eq!(positions(Some(3), 10), [7, 256, 1 << 40]);
    assert_eq!(positions(Some(1 << 40), 10), Vec::<u64>::new());
    store.delete_push(7).unwrap();
    assert_eq!(positions(Some(3), 1), [256]);
}
