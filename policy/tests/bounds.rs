//! Every bound policy checks, at its value and one past it (on requests
//! and at apply), and the stable names logs and metrics print.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use civmesh_certs::SignedEnvelope;
use civmesh_policy::access::QUERY_SUBJECTS_MAX;
use civmesh_policy::correction::{
    CorrectionBoundsError, CorrectionRequest, CORRECTION_ATTACHMENTS_MAX, CORRECTION_CHANGES_MAX,
    CORRECTION_TEXT_BYTES_MAX,
};
use civmesh_policy::model::FieldValue;
use civmesh_policy::model::{
    FieldClass, FieldSpec, FieldType, SubjectKeyHash, SCHEMA_FIELDS_MAX, SCOPE_FIELDS_MAX,
};
use civmesh_policy::state::COMMAND_SKEW_MS_MAX;
use civmesh_policy::{
    AccessOutcome, AccessRecord, Command, CommandKind, DatasetSpec, QueryHeader, ReasonCode, RejectionCode,
};

mod support;
use support::*;

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

fn text(bytes: usize) -> String {
    "a".repeat(bytes)
}

fn changes(count: usize) -> BTreeMap<String, FieldValue> {
    (0..count).map(|index| (format!("field_{index}"), FieldValue::Integer(1))).collect()
}

#[test]
fn a_correction_request_is_checked_at_every_bound() {
    type Change = fn(&mut CorrectionRequest);
    let cases: Vec<(&str, Change, Result<(), CorrectionBoundsError>)> = vec![
        ("as it is", |_| {}, Ok(())),
        ("no change", |r| r.changes.clear(), Err(CorrectionBoundsError::ChangeCount)),
        ("changes at the bound", |r| r.changes = changes(CORRECTION_CHANGES_MAX), Ok(())),
        (
            "one change over",
            |r| r.changes = changes(CORRECTION_CHANGES_MAX + 1),
            Err(CorrectionBoundsError::ChangeCount),
        ),
        (
            "attachments at the bound",
            |r| r.attachment_sha256 = vec![[1; 32]; CORRECTION_ATTACHMENTS_MAX],
            Ok(()),
        ),
        (
            "one attachment over",
            |r| r.attachment_sha256 = vec![[1; 32]; CORRECTION_ATTACHMENTS_MAX + 1],
            Err(CorrectionBoundsError::TooManyAttachments),
        ),
        ("reason at the bound", |r| r.reason = text(CORRECTION_TEXT_BYTES_MAX), Ok(())),
        ("a reason of 4 KiB, the documented bound", |r| r.reason = text(4 * 1024), Ok(())),
        (
            "reason one byte over",
            |r| r.reason = text(CORRECTION_TEXT_BYTES_MAX + 1),
            Err(CorrectionBoundsError::TextLength("reason")),
        ),
        ("blank reason", |r| r.reason = " \n".into(), Err(CorrectionBoundsError::TextLength("reason"))),
        ("no operator", |r| r.operator.clear(), Err(CorrectionBoundsError::TextLength("operator"))),
        (
            "operator one byte over",
            |r| r.operator = text(CORRECTION_TEXT_BYTES_MAX + 1),
            Err(CorrectionBoundsError::TextLength("operator")),
        ),
        ("no record key", |r| r.record_key.clear(), Err(CorrectionBoundsError::TextLength("record key"))),
        ("evidence at the bound", |r| r.evidence_text = text(CORRECTION_TEXT_BYTES_MAX), Ok(())),
        (
            "evidence one byte over",
            |r| r.evidence_text = text(CORRECTION_TEXT_BYTES_MAX + 1),
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

/// A denial of a query naming `subjects` subjects and `fields`, decided at
/// `decided_at_ms`.
fn denial(fx: &Fixture, subjects: usize, fields: &[&str], decided_at_ms: u64) -> Command {
    let header = QueryHeader {
        dataset: ENTERPRISES.into(),
        subjects: (0..subjects).map(|index| SubjectKeyHash([(index % 251) as u8; 32])).collect(),
        fields: fields.iter().map(|field| field.to_string()).collect(),
        purpose: "inspection".into(),
        grant: None,
    };
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(&fx.jingansi.key, &header, NOW_MS).unwrap(),
        outcome: AccessOutcome::Deny { reason: ReasonCode::GrantRequired },
        decided_at_ms,
    })
}

/// A dataset of `fields` text fields, `scope_fields` of them scope fields.
fn dataset(id: &str, fields: usize, scope_fields: usize) -> Command {
    let names: Vec<String> = (0..fields).map(|index| format!("field_{index}")).collect();
    Command::PublishDataset(DatasetSpec {
        id: id.into(),
        title: "Bounds".into(),
        subject_key_field: names.first().cloned().unwrap_or_default(),
        sharing: civmesh_policy::model::SharingCategory::Conditional,
        fields: names
            .iter()
            .map(|name| FieldSpec {
                name: name.clone(),
                field_type: FieldType::Text,
                class: FieldClass::Public,
            })
            .collect(),
        scope_fields: names.iter().take(scope_fields).cloned().collect(),
    })
}

#[test]
fn apply_checks_every_bound_at_its_value_and_one_past_it() {
    let mut fx = Fixture::new();
    let invalid = Some(RejectionCode::InvalidArgument);
    let cases: Vec<(&str, Command, Option<RejectionCode>)> = vec![
        ("a query naming the subject bound", denial(&fx, QUERY_SUBJECTS_MAX, &["name"], NOW_MS), None),
        ("one subject more", denial(&fx, QUERY_SUBJECTS_MAX + 1, &["name"], NOW_MS), invalid),
        ("a query naming no field", denial(&fx, 1, &[], NOW_MS), invalid),
        ("decided at the skew's edge", denial(&fx, 1, &["name"], NOW_MS - COMMAND_SKEW_MS_MAX), None),
        ("a schema at the field bound", dataset("bounds/at", SCHEMA_FIELDS_MAX, 1), None),
        ("one field more", dataset("bounds/over", SCHEMA_FIELDS_MAX + 1, 1), invalid),
        ("no field", dataset("bounds/none", 0, 0), invalid),
        ("scope fields at their bound", dataset("bounds/scoped", 10, SCOPE_FIELDS_MAX), None),
        ("one scope field more", dataset("bounds/too-scoped", 10, SCOPE_FIELDS_MAX + 1), invalid),
        (
            "removing a negative-list entry never added",
            Command::RemoveNegativeListEntry { dataset: ENTERPRISES.into(), field: Some("name".into()) },
            Some(RejectionCode::NegativeListEntryUnknown),
        ),
    ];
    for (case, command, expected) in cases {
        let outcome = apply(&mut fx.state, &fx.market.key, command);
        assert_eq!(outcome.map(|_| ()).map_err(|rejection| rejection.code).err(), expected, "{case}");
    }
}
