#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_policy::subject_request::{
    SubjectRequestKind, SubjectRequestOutcome, SUBJECT_REQUEST_DEADLINE_MS_MAX,
    SUBJECT_REQUEST_DEADLINE_MS_MIN,
};

use super::kept::{KeepError, Kept, KeptKeys, UNLOGGED_KEPT_MS_MAX};
use super::*;

mod owner;

fn street() -> OrgId {
    OrgId::new("street/jingansi").unwrap()
}

fn intake(dataset: &str, record_key: &str, deadline_days: Option<u64>) -> IntakeRequest {
    IntakeRequest {
        kind: SubjectRequestKind::Deletion,
        dataset: dataset.to_string(),
        record_key: record_key.to_string(),
        deadline_days,
        correction: None,
        operator: None,
    }
}

#[test]
fn an_intake_request_is_checked_and_takes_the_configured_deadline_when_it_names_none() {
    let long_key = "k".repeat(RECORD_KEY_BYTES_MAX + 1);
    let long_dataset = "d".repeat(DATASET_ID_BYTES_MAX + 1);
    let cases: [(IntakeRequest, Option<u64>); 10] = [
        (intake("residents", "310106194000000001", None), Some(15)),
        (intake("residents", "310106194000000001", Some(1)), Some(1)),
        (intake("residents", "310106194000000001", Some(60)), Some(60)),
        (intake("residents", "310106194000000001", Some(0)), None),
        (intake("residents", "310106194000000001", Some(61)), None),
        (intake("residents", "", None), None),
        (intake("residents", "a\0b", None), None),
        (intake("residents", &long_key, None), None),
        (intake("", "310106194000000001", None), None),
        (intake(&long_dataset, "310106194000000001", None), None),
    ];
    for (request, expected) in cases {
        let checked = check_intake(&request, 15);
        match expected {
            Some(days) => assert_eq!(checked.unwrap(), days, "{request:?}"),
            None => assert!(matches!(checked, Err(FileError::Invalid(_))), "{request:?}"),
        }
    }
    assert!(matches!(check_intake(&intake("residents", "1", None), 0), Err(FileError::Invalid(_))));
}

#[test]
fn a_deadline_falls_within_the_logs_bounds_for_any_entry_time_within_the_filing_margin() {
    let signed_ms = 1_800_000_000_000;
    for days in [1, 2, 15, 59, 60] {
        let deadline = deadline_ms(signed_ms, days);
        for entry_ms in [signed_ms, signed_ms + 1, signed_ms + FILING_MARGIN_MS] {
            let bounds =
                entry_ms + SUBJECT_REQUEST_DEADLINE_MS_MIN..=entry_ms + SUBJECT_REQUEST_DEADLINE_MS_MAX;
            assert!(bounds.contains(&deadline), "{days} days, entry {} ms late", entry_ms - signed_ms);
        }
        assert!(deadline >= signed_ms + days * DAY_MS, "never earlier than promised");
    }
}

#[test]
fn an_answer_is_done_or_refused_with_a_reason() {
    let done = AnswerRequest { done: true, refuse: None };
    assert_eq!(done.outcome().unwrap(), SubjectRequestOutcome::Done);
    let refused = AnswerRequest { done: false, refuse: Some(" retention duty (Art. 47) ".into()) };
    assert_eq!(
        refused.outcome().unwrap(),
        SubjectRequestOutcome::Refused { reason: "retention duty (Art. 47)".into() }
    );
    for wrong in [
        AnswerRequest::default(),
        AnswerRequest { done: true, refuse: Some("both".into()) },
        AnswerRequest { done: false, refuse: Some("  ".into()) },
        AnswerRequest { done: false, refuse: Some("a\u{7}bell".into()) },
        AnswerRequest { done: false, refuse: Some("x".repeat(1025)) },
    ] {
        assert!(matches!(wrong.outcome(), Err(AnswerError::Invalid(_))), "{wrong:?}");
    }
    let parsed: Result<AnswerRequest, _> = serde_json::from_str(r#"{"done": true, "why": 1}"#);
    assert!(parsed.is_err(), "unknown fields are refused");
}

#[test]
fn record_keys_never_show_in_debug_output() {
    let key = "310106194000000001";
    let wire = SubjectRequestWire { envelope: vec![1, 2, 3], record_key: key.into() };
    let kept = Kept::new([7; 32], "residents", SubjectRequestKind::Access, &street(), key);
    for shown in [format!("{wire:?}"), format!("{:?}", intake("residents", key, None)), format!("{kept:?}")] {
        assert!(!shown.contains(key), "{shown}");
    }
    let bytes = civmesh_certs::codec::encode(&wire).unwrap();
    let decoded: SubjectRequestWire = civmesh_certs::codec::decode_exact(&bytes, 1024).unwrap();
    assert_eq!((decoded.envelope, decoded.record_key), (vec![1, 2, 3], key.to_string()));
}

#[test]
fn kept_keys_are_kept_once_forgotten_and_pruned_when_the_log_never_held_them() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeptKeys::at(dir.path());
    let never_open = |_: &[u8; 32]| false;
    keys.keep(Kept::new([1; 32], "residents", SubjectRequestKind::Deletion, &street(), "k1"), never_open)
        .unwrap();
    assert!(matches!(
        keys.keep(Kept::new([1; 32], "residents", SubjectRequestKind::Access, &street(), "k1"), never_open),
        Err(KeepError::Taken)
    ));
    assert_eq!(keys.get(&[1; 32]).unwrap().unwrap().record_key, "k1");
    assert_eq!(keys.get(&[2; 32]).unwrap(), None);
    let path = dir.path().join(kept::KEPT_KEYS_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // An old key the log does not hold open goes at the next keep; an open one stays.
    let mut old = Kept::new([3; 32], "residents", SubjectRequestKind::Access, &street(), "k3");
    old.kept_at_ms -= UNLOGGED_KEPT_MS_MAX + 1;
    let mut old_open = Kept::new([4; 32], "residents", SubjectRequestKind::Access, &street(), "k4");
    old_open.kept_at_ms -= UNLOGGED_KEPT_MS_MAX + 1;
    keys.keep(old, never_open).unwrap();
    keys.keep(old_open, never_open).unwrap();
    keys.keep(Kept::new([5; 32], "residents", SubjectRequestKind::Access, &street(), "k5"), |id| {
        *id == [4; 32]
    })
    .unwrap();
    let ids: Vec<String> = keys.ids().unwrap().into_iter().collect();
    assert_eq!(ids, [[1; 32], [4; 32], [5; 32]].map(hex::encode));

    keys.forget(&[1; 32]).unwrap();
    keys.forget(&[9; 32]).unwrap();
    assert_eq!(keys.get(&[1; 32]).unwrap(), None);
    assert_eq!(keys.ids().unwrap().len(), 2);
}
