//! Every bound policy checks on its own, at its value and one past it, and
//! the stable names logs and metrics print.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use civmesh_policy::correction::{
    CorrectionBoundsError, CorrectionRequest, CORRECTION_ATTACHMENTS_MAX, CORRECTION_CHANGES_MAX,
    CORRECTION_TEXT_BYTES_MAX,
};
use civmesh_policy::model::FieldValue;
use civmesh_policy::CommandKind;

fn request() -> CorrectionRequest {
    CorrectionRequest {
        dataset: "enterprises".into(),
        record_key: "91310000MA1FL0001X".into(),
        base_version: 1,
        changes: BTreeMap::from([("operating_address".to_string(), FieldValue::Text("1 Road".into()))]),
        reason: "moved".into(),
        evidence_text: String::new(),
        attachment_sha256: Vec::new(),
        operator: "Li Wei".into(),
    }
}

fn changes(count: usize) -> BTreeMap<String, FieldValue> {
    (0..count).map(|index| (format!("field_{index}"), FieldValue::Integer(1))).collect()
}

#[test]
fn a_correction_request_is_checked_at_every_bound() {
    let text = |bytes: usize| "a".repeat(bytes);
    let cases: Vec<(&str, Box<dyn Fn(&mut CorrectionRequest)>, Result<(), CorrectionBoundsError>)> = vec![
        ("as it is", Box::new(|_| {}), Ok(())),
        ("no change", Box::new(|r| r.changes.clear()), Err(CorrectionBoundsError::ChangeCount)),
        ("changes at the bound", Box::new(|r| r.changes = changes(CORRECTION_CHANGES_MAX)), Ok(())),
        (
            "one change over",
            Box::new(|r| r.changes = changes(CORRECTION_CHANGES_MAX + 1)),
            Err(CorrectionBoundsError::ChangeCount),
        ),
        (
            "attachments at the bound",
            Box::new(|r| r.attachment_sha256 = vec![[1; 32]; CORRECTION_ATTACHMENTS_MAX]),
            Ok(()),
        ),
        (
            "one attachment over",
            Box::new(|r| r.attachment_sha256 = vec![[1; 32]; CORRECTION_ATTACHMENTS_MAX + 1]),
            Err(CorrectionBoundsError::TooManyAttachments),
        ),
        ("reason at the bound", Box::new(move |r| r.reason = text(CORRECTION_TEXT_BYTES_MAX)), Ok(())),
        (
            "reason one byte over",
            Box::new(move |r| r.reason = text(CORRECTION_TEXT_BYTES_MAX + 1)),
            Err(CorrectionBoundsError::TextLength("reason")),
        ),
        (
            "blank reason",
            Box::new(|r| r.reason = " \n".into()),
            Err(CorrectionBoundsError::TextLength("reason")),
        ),
        ("no operator", Box::new(|r| r.operator.clear()), Err(CorrectionBoundsError::TextLength("operator"))),
        (
            "operator one byte over",
            Box::new(move |r| r.operator = text(CORRECTION_TEXT_BYTES_MAX + 1)),
            Err(CorrectionBoundsError::TextLength("operator")),
        ),
        (
            "no record key",
            Box::new(|r| r.record_key.clear()),
            Err(CorrectionBoundsError::TextLength("record key")),
        ),
        (
            "evidence at the bound",
            Box::new(move |r| r.evidence_text = text(CORRECTION_TEXT_BYTES_MAX)),
            Ok(()),
        ),
        (
            "evidence one byte over",
            Box::new(move |r| r.evidence_text = text(CORRECTION_TEXT_BYTES_MAX + 1)),
            Err(CorrectionBoundsError::EvidenceTooLong),
        ),
    ];
    for (case, change, expected) in cases {
        let mut request = request();
        change(&mut request);
        assert_eq!(request.check_bounds(), expected, "{case}");
    }
}

#[test]
fn a_command_kind_prints_the_name_its_json_carries() {
    use CommandKind::*;
    let kinds = [
        Genesis,
        AdmitMember,
        RevokeMember,
        PublishDataset,
        AddNegativeListEntry,
        RemoveNegativeListEntry,
        FileDemand,
        IssueGrant,
        RevokeGrant,
        RecordConsent,
        RecordAccess,
        RecordPush,
        RecordCorrectionEvent,
        SetAutoAcceptRule,
        RemoveAutoAcceptRule,
        CosignCheckpoint,
        CommitSubjectKeySecret,
        FileDemandWithReason,
        RefuseDemand,
        RecordListing,
    ];
    for kind in kinds {
        let json = serde_json::to_value(kind).unwrap();
        assert_eq!(json.as_str(), Some(kind.as_str()));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(RecordCorrectionEvent.to_string(), "record_correction_event");
}
