use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use civmesh_certs::NodeKey;
use civmesh_policy::deletion::Retention;
use civmesh_policy::model::{
    Dataset, FieldClass, FieldSpec, FieldType, LegalBasis, SensitiveCategory, SharingCategory,
};
use civmesh_policy::GrantSpec;

use super::*;

const DAY_MS: u64 = 86_400_000;
const NOW_MS: u64 = 1_790_000_000_000;

fn assessment() -> Assessment {
    Assessment {
        dataset: "civil-affairs/residents".into(),
        fields: ["lives_alone_80_plus".to_string(), "name".to_string()].into(),
        purpose: "street-inspection".into(),
        necessity: " Visits to people over 80 living alone need their names.\n".into(),
        risks: "Disclosure of a vulnerable person's situation.".into(),
        measures: "Street staff only; copies deleted after 30 days.".into(),
        officer: "王芳".into(),
    }
}

fn store(dir: &std::path::Path) -> AssessmentStore {
    let key = NodeKey::generate().unwrap();
    AssessmentStore::new(dir, Arc::new(key))
}

#[test]
fn an_assessment_is_kept_signed_and_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(NodeKey::generate().unwrap());
    let store = AssessmentStore::new(dir.path(), key.clone());
    assert_eq!(store.list().unwrap(), [], "an empty store lists nothing");
    let record = store.add(assessment(), NOW_MS).unwrap();
    assert_eq!(record.signed_at_ms, NOW_MS);
    assert_eq!(record.assessment.necessity, "Visits to people over 80 living alone need their names.");

    // Another process (the CLI, a restarted node) reads what was kept.
    let again = AssessmentStore::new(dir.path(), key);
    assert_eq!(again.get(&record.digest).unwrap(), Some(record.clone()));
    assert_eq!(again.list().unwrap(), [AssessmentSummary::from(&record)]);
    let path = dir.path().join(ASSESSMENTS_DIR).join(format!("{}.pia", digest_hex(&record.digest)));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // The digest is the SHA-256 of the signed body, recomputable from the envelope.
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &record.envelope).unwrap();
    let envelope = civmesh_certs::SignedEnvelope::<serde_json::Value>::from_bytes(&bytes).unwrap();
    let hash = ring::digest::digest(&ring::digest::SHA256, envelope.body_bytes());
    assert_eq!(hash.as_ref(), record.digest.0);

    // Two adds of the same text are two assessments; the older is listed first.
    let second = again.add(assessment(), NOW_MS + 1).unwrap();
    assert_ne!(second.digest, record.digest);
    let listed: Vec<_> = again.list().unwrap().into_iter().map(|summary| summary.digest).collect();
    assert_eq!(listed, [record.digest, second.digest]);
    assert_eq!(again.get(&AssessmentDigest([7; 32])).unwrap(), None);
}

#[test]
fn bad_input_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let long = |bytes: usize| "字".repeat(bytes / 3 + 1);
    let cases: Vec<(Assessment, AssessmentInvalid)> = vec![
        (Assessment { dataset: String::new(), ..assessment() }, AssessmentInvalid::Dataset),
        (Assessment { dataset: "a\u{7}b".into(), ..assessment() }, AssessmentInvalid::Dataset),
        (Assessment { fields: Default::default(), ..assessment() }, AssessmentInvalid::FieldCount),
        (
            Assessment {
                fields: (0..=ASSESSMENT_FIELDS_MAX).map(|i| format!("f{i}")).collect(),
                ..assessment()
            },
            AssessmentInvalid::FieldCount,
        ),
        (Assessment { fields: [String::new()].into(), ..assessment() }, AssessmentInvalid::Field),
        (
            Assessment { fields: ["x".repeat(NAME_BYTES_MAX + 1)].into(), ..assessment() },
            AssessmentInvalid::Field,
        ),
        (
            Assessment { purpose: "\t".into(), ..assessment() },
            AssessmentInvalid::Text { what: "purpose", bytes_max: NAME_BYTES_MAX },
        ),
        (
            Assessment { necessity: " \n ".into(), ..assessment() },
            AssessmentInvalid::Text { what: "necessity", bytes_max: NECESSITY_BYTES_MAX },
        ),
        (
            Assessment { risks: long(RISKS_BYTES_MAX), ..assessment() },
            AssessmentInvalid::Text { what: "risks", bytes_max: RISKS_BYTES_MAX },
        ),
        (
            Assessment { measures: "erase\u{1b}[2J".into(), ..assessment() },
            AssessmentInvalid::Text { what: "measures", bytes_max: MEASURES_BYTES_MAX },
        ),
        (
            Assessment { officer: "王\n芳".into(), ..assessment() },
            AssessmentInvalid::Text { what: "officer", bytes_max: OFFICER_BYTES_MAX },
        ),
    ];
    for (bad, reason) in cases {
        match store.add(bad.clone(), NOW_MS) {
            Err(AssessmentError::Invalid(got)) => assert_eq!(got, reason, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(store.list().unwrap(), [], "nothing refused was kept");
    // The bounds are inclusive.
    let largest = Assessment {
        fields: (0..ASSESSMENT_FIELDS_MAX).map(|i| format!("{i:0>128}")).collect(),
        necessity: "n".repeat(NECESSITY_BYTES_MAX),
        risks: "r".repeat(RISKS_BYTES_MAX),
        measures: "m".repeat(MEASURES_BYTES_MAX),
        officer: "o".repeat(OFFICER_BYTES_MAX),
        dataset: "d".repeat(NAME_BYTES_MAX),
        purpose: "p".repeat(NAME_BYTES_MAX),
    };
    let record = store.add(largest, NOW_MS).unwrap();
    assert_eq!(store.get(&record.digest).unwrap().unwrap(), record, "the largest fits the file bound");
}

#[test]
fn a_file_altered_replaced_or_exposed_is_refused_and_kept_files_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let record = store.add(assessment(), NOW_MS).unwrap();
    let path = dir.path().join(ASSESSMENTS_DIR).join(format!("{}.pia", digest_hex(&record.digest)));
    let original = std::fs::read(&path).unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(store.get(&record.digest), Err(AssessmentError::Corrupt { .. })));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Another node's assessment under this digest's name.
    let other = store_in(dir.path().join("other"));
    let foreign = other.add(assessment(), NOW_MS).unwrap();
    let foreign_path =
        dir.path().join("other").join(ASSESSMENTS_DIR).join(format!("{}.pia", digest_hex(&foreign.digest)));
    let renamed = path.with_file_name(format!("{}.pia", digest_hex(&foreign.digest)));
    std::fs::copy(&foreign_path, &renamed).unwrap();
    let error = store.get(&foreign.digest).unwrap_err().to_string();
    assert!(error.contains("signed by another node"), "{error}");
    std::fs::remove_file(&renamed).unwrap();

    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(store.get(&record.digest), Err(AssessmentError::Corrupt { .. })));
    assert!(store.list().is_err(), "a list never skips a bad file silently");
    std::fs::write(&path, vec![0; ASSESSMENT_FILE_BYTES_MAX as usize + 1]).unwrap();
    let error = store.get(&record.digest).unwrap_err().to_string();
    assert!(error.contains("too large"), "{error}");
    std::fs::write(&path, &original).unwrap();
    assert_eq!(store.get(&record.digest).unwrap(), Some(record.clone()));

    // A partial file a crash left is not listed, and the next add clears it.
    let partial = path.with_file_name(format!("{}.partial", digest_hex(&AssessmentDigest([1; 32]))));
    std::fs::write(&partial, b"half").unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    store.add(assessment(), NOW_MS + 1).unwrap();
    assert!(!partial.exists());
    assert_eq!(std::fs::read(&path).unwrap(), original, "a kept file is never rewritten");
}

fn store_in(dir: std::path::PathBuf) -> AssessmentStore {
    std::fs::create_dir_all(&dir).unwrap();
    store(&dir)
}

#[test]
fn the_store_holds_at_most_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let kept = store.add(assessment(), NOW_MS).unwrap();
    let assessments = dir.path().join(ASSESSMENTS_DIR);
    // Fill it up cheaply: copies of one file under other names read as
    // files whose digest differs from their name, so only count them.
    let original = assessments.join(format!("{}.pia", digest_hex(&kept.digest)));
    for index in 1..ASSESSMENTS_MAX {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(index as u64).to_be_bytes());
        std::fs::hard_link(
            &original,
            assessments.join(format!("{}.pia", digest_hex(&AssessmentDigest(digest)))),
        )
        .unwrap();
    }
    assert!(matches!(store.add(assessment(), NOW_MS), Err(AssessmentError::Full)));
    std::fs::write(assessments.join("stray"), b"").unwrap();
    let error = store.list().unwrap_err().to_string();
    assert!(error.contains("not an assessment's file") || error.contains("entries"), "{error}");
}

fn residents() -> Dataset {
    let field = |name: &str, class| FieldSpec { name: name.into(), field_type: FieldType::Text, class };
    Dataset {
        id: "civil-affairs/residents".into(),
        owner: "dept/civil-affairs".parse().unwrap(),
        title: "Residents".into(),
        subject_key_field: "citizen_id".into(),
        sharing: SharingCategory::Conditional,
        fields: vec![
            field("citizen_id", FieldClass::Personal),
            field("name", FieldClass::Personal),
            field("lives_alone_80_plus", FieldClass::Sensitive(SensitiveCategory::SpecificIdentity)),
            field("street", FieldClass::Public),
        ],
        scope_fields: vec!["street".into()],
        version: 1,
    }
}

fn grant(fields: &[&str], retention: Option<Retention>, assessment: Option<AssessmentDigest>) -> GrantSpec {
    GrantSpec {
        dataset: "civil-affairs/residents".into(),
        grantee: "street/nanjingxilu".parse().unwrap(),
        fields: fields.iter().map(|field| field.to_string()).collect(),
        purpose: "street-inspection".into(),
        legal_basis: LegalBasis::StatutoryDuty,
        scope: vec![],
        valid_from_ms: NOW_MS,
        valid_until_ms: NOW_MS + 30 * DAY_MS,
        masking: Default::default(),
        consent_required: true,
        demand: None,
        retention,
        assessment,
    }
}

#[test]
fn a_grant_is_checked_against_the_assessments_this_node_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let kept = store.add(assessment(), NOW_MS).unwrap().digest;
    let other_purpose = Assessment { purpose: "elderly-care".into(), ..assessment() };
    let other_purpose = store.add(other_purpose, NOW_MS).unwrap().digest;
    let other_dataset = Assessment { dataset: "market/enterprises".into(), ..assessment() };
    let other_dataset = store.add(other_dataset, NOW_MS).unwrap().digest;
    let narrow = Assessment { fields: ["name".to_string()].into(), ..assessment() };
    let narrow = store.add(narrow, NOW_MS).unwrap().digest;
    let keep = Some(Retention { keep_ms: 30 * DAY_MS, delete_within_ms: DAY_MS });
    let check = |spec: GrantSpec| check_grant(&store, Some(&residents()), &spec).map_err(|e| e.to_string());
    let sensitive = ["name", "lives_alone_80_plus"];

    assert_eq!(check(grant(&["street"], None, None)), Ok(()));
    assert_eq!(check(grant(&["name"], keep, None)), Ok(()));
    assert_eq!(check(grant(&sensitive, keep, Some(kept))), Ok(()));
    let cases = [
        (grant(&sensitive, None, Some(kept)), "fields lives_alone_80_plus, name are personal"),
        (
            grant(&["street"], Some(Retention { keep_ms: 0, delete_within_ms: DAY_MS }), None),
            "the retention must keep copies 1 second",
        ),
        (grant(&sensitive, keep, None), "field lives_alone_80_plus is sensitive: name the impact assessment"),
        (
            grant(&sensitive, keep, Some(AssessmentDigest([9; 32]))),
            "this node keeps no impact assessment 0909",
        ),
        (
            grant(&sensitive, keep, Some(other_dataset)),
            "is for dataset market/enterprises, not civil-affairs",
        ),
        (grant(&sensitive, keep, Some(other_purpose)), "is for purpose elderly-care, not street-inspection"),
        (grant(&sensitive, keep, Some(narrow)), "does not cover the sensitive field lives_alone_80_plus"),
        // Named, it must be right even when no field needs it.
        (grant(&["street"], None, Some(AssessmentDigest([9; 32]))), "keeps no impact assessment"),
    ];
    for (spec, expected) in cases {
        let error = check(spec.clone()).unwrap_err();
        assert!(error.contains(expected), "{spec:?}: {error}");
    }
    // An unknown dataset is left to the log, which refuses it.
    assert!(check_grant(&store, None, &grant(&sensitive, None, None)).is_ok());
}

#[test]
fn digests_are_read_only_as_lowercase_hex() {
    let digest = AssessmentDigest([0xab; 32]);
    assert_eq!(parse_digest(&digest_hex(&digest)), Some(digest));
    for bad in ["", "ab", &"AB".repeat(32), &format!("+{}", "a".repeat(63)), &"g".repeat(64)] {
        assert_eq!(parse_digest(bad), None, "{bad}");
    }
}
