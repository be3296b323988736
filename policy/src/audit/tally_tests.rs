//! The tally against a hand-made log: two departments, a statutory grant
//! releasing a sensitive field, a consent on file for one subject, a
//! release logged after the grant's window, a denial, a checkpoint.

use super::*;
use crate::access::QueryHeader;
use crate::audit::{CheckpointBody, FinalCheckpoint};
use crate::decide::ReasonCode;
use crate::fixtures::{enterprise_dataset, resident_dataset};
use crate::model::{Consent, Dataset, Member, SubjectKeyHash};
use crate::{Command, DatasetSpec};
use civmesh_certs::{NodeId, NodeKey, OrgId, Role, SignedEnvelope};

const CIVIL: &str = "dept/civil-affairs";
const MARKET: &str = "dept/market-supervision";
const STREET: &str = "street/jingansi";
const HOUR_MS: u64 = 3_600_000;

fn org(name: &str) -> OrgId {
    OrgId::new(name).unwrap()
}

fn member(index: u8, name: &str) -> Member {
    Member {
        node_id: NodeId([index; 32]),
        org: org(name),
        role: Role::Department,
        certificate_der: Vec::new(),
        certificate_serial: Vec::new(),
        certificate_not_after_ms: u64::MAX,
        admitted_at_ms: 0,
        revoked: None,
    }
}

fn dataset(spec: DatasetSpec, owner: &str) -> Dataset {
    Dataset {
        id: spec.id,
        owner: org(owner),
        title: spec.title,
        subject_key_field: spec.subject_key_field,
        sharing: spec.sharing,
        fields: spec.fields,
        scope_fields: spec.scope_fields,
        version: 1,
    }
}

/// Grant 1: residents' names and the sensitive flag to the street under a
/// statutory duty, valid for hours 0..10.
fn grant() -> Grant {
    Grant {
        id: 1,
        dataset: crate::fixtures::RESIDENTS.into(),
        grantor: org(CIVIL),
        grantee: org(STREET),
        fields: ["name".to_string(), "lives_alone_80_plus".to_string()].into(),
        purpose: "elderly-care".into(),
        legal_basis: LegalBasis::StatutoryDuty,
        scope: Vec::new(),
        valid_from_ms: 0,
        valid_until_ms: 10 * HOUR_MS,
        masking: BTreeMap::new(),
        consent_required: false,
        demand: None,
        issued_at_ms: 0,
        revoked: None,
        retention: None,
        assessment: None,
    }
}

fn state() -> PolicyState {
    let mut state = PolicyState::default();
    for (index, name) in [(1, CIVIL), (2, MARKET), (3, STREET)] {
        state.members.insert(NodeId([index; 32]), member(index, name));
    }
    let residents = dataset(resident_dataset(), CIVIL);
    let enterprises = dataset(enterprise_dataset(), MARKET);
    state.datasets.insert(residents.id.clone(), residents);
    state.datasets.insert(enterprises.id.clone(), enterprises);
    state.grants.insert(1, grant());
    let key = ConsentKey {
        subject: subject(2),
        dataset: crate::fixtures::RESIDENTS.into(),
        grantee: org(STREET),
        purpose: "elderly-care".into(),
    };
    let consent = Consent {
        given: true,
        covers_sensitive: true,
        recorded_by: org(CIVIL),
        recorded_at_ms: 0,
        channel: "street_window".into(),
    };
    state.consents.insert(key, consent);
    state
}

fn subject(index: u8) -> SubjectKeyHash {
    SubjectKeyHash([index; 32])
}

/// An access entry at `sequence` from the street to `owner`'s dataset.
fn entry(
    sequence: u64,
    owner: u8,
    dataset: &str,
    grant: Option<u64>,
    outcome: AccessOutcome,
) -> AccessLogEntry {
    let key = NodeKey::generate().unwrap();
    let envelope =
        SignedEnvelope::sign(&key, &Command::RevokeGrant { grant_id: 1, reason: String::new() }, 0);
    AccessLogEntry {
        sequence,
        envelope: envelope.unwrap(),
        requester: NodeId([3; 32]),
        owner: NodeId([owner; 32]),
        header: QueryHeader {
            dataset: dataset.into(),
            subjects: Vec::new(),
            fields: vec!["name".into()],
            purpose: "elderly-care".into(),
            grant,
        },
        outcome,
        decided_at_ms: sequence * HOUR_MS,
    }
}

fn released(subjects: &[(u8, &[&str])]) -> AccessOutcome {
    AccessOutcome::Permit {
        released: subjects
            .iter()
            .map(|(index, fields)| SubjectRelease {
                subject: subject(*index),
                fields: fields.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

#[test]
fn departments_grants_flags_and_unanchored_entries_are_tallied() {
    let residents = crate::fixtures::RESIDENTS;
    let enterprises = crate::fixtures::ENTERPRISES;
    let mut state = state();
    let mut tally = AccessTally::new();
    // Entry 0: names and the sensitive flag of subjects 1 (no consent) and
    // 2 (consent covering sensitive fields): flagged for subject 1 only.
    let both = released(&[(1, &["name", "lives_alone_80_plus"]), (2, &["name", "lives_alone_80_plus"])]);
    tally.observe(&state, &entry(0, 1, residents, Some(1), both), 0, 0);
    // Entry 1: a denial at the civil affairs department.
    let denied = AccessOutcome::Deny { reason: ReasonCode::GrantExpired };
    tally.observe(&state, &entry(1, 1, residents, Some(1), denied), 1, HOUR_MS);
    // A final checkpoint over leaves 0..2.
    state.last_checkpoint = Some(FinalCheckpoint {
        body: CheckpointBody { tree_size: 2, root: [0; 32], log_index: 1 },
        cosigners: Default::default(),
        cosigning_orgs: Default::default(),
        signer_orgs_in_force: 1,
        final_at_ms: 2 * HOUR_MS,
    });
    // Entry 2: public enterprise names, no grant, at the market department.
    let public = released(&[(7, &["name"]), (8, &["name"])]);
    tally.observe(&state, &entry(2, 2, enterprises, None, public), 2, 2 * HOUR_MS);
    // Entry 3: decided at hour 3 but logged at hour 10, when the grant had
    // expired; a name only.
    tally.observe(&state, &entry(3, 1, residents, Some(1), released(&[(2, &["name"])])), 3, 10 * HOUR_MS);

    let summary = tally.finish(3);
    let civil = &summary.departments[0];
    assert_eq!(civil.department, CIVIL);
    let counts = &civil.counts;
    assert_eq!((counts.accesses, counts.permits, counts.denials), (3, 2, 1));
    assert_eq!((counts.subjects_released, counts.fields_released), (3, 5));
    assert_eq!(counts.field_names, ["lives_alone_80_plus".to_string(), "name".to_string()].into());
    assert_eq!((counts.unanchored, counts.flagged), (1, 2), "entry 3 is after the checkpoint at 3");
    let market = &summary.departments[1];
    assert_eq!(market.department, MARKET);
    let counts = &market.counts;
    assert_eq!((counts.accesses, counts.subjects_released, counts.fields_released), (1, 2, 2));
    assert_eq!((counts.unanchored, counts.flagged), (0, 0));

    assert_eq!(summary.grants.len(), 2);
    let (none, granted) = (&summary.grants[0], &summary.grants[1]);
    assert_eq!((none.grant, none.dataset.as_str(), none.grantee.as_deref()), (None, enterprises, None));
    assert_eq!((granted.grant, granted.grantee.as_deref()), (Some(1), Some(STREET)));
    assert_eq!(
        (granted.legal_basis, granted.valid_until_ms),
        (Some(LegalBasis::StatutoryDuty), Some(10 * HOUR_MS))
    );
    assert_eq!((granted.counts.accesses, granted.counts.denials, granted.counts.unanchored), (3, 1, 1));

    let kinds: Vec<(FlagKind, u64)> =
        summary.flags.iter().map(|flag| (flag.kind, flag.access_entry)).collect();
    assert_eq!(kinds, [(FlagKind::SensitiveWithoutConsent, 0), (FlagKind::OutsideGrantWindow, 3)]);
    let sensitive = &summary.flags[0];
    assert_eq!((sensitive.fields.clone(), sensitive.subjects), (vec!["lives_alone_80_plus".to_string()], 1));
    assert_eq!((sensitive.department.as_str(), sensitive.requester.as_str()), (CIVIL, STREET));
    let late = &summary.flags[1];
    assert_eq!(
        (late.decided_at_ms, late.logged_at_ms, late.fields.clone()),
        (3 * HOUR_MS, 10 * HOUR_MS, vec!["name".to_string()])
    );
    assert_eq!(
        summary.flag_counts,
        [(FlagKind::SensitiveWithoutConsent, 1), (FlagKind::OutsideGrantWindow, 1)].into()
    );
}

#[test]
fn a_revoked_grant_flags_a_later_release_and_flags_are_listed_up_to_their_bound() {
    let residents = crate::fixtures::RESIDENTS;
    let mut state = state();
    if let Some(grant) = state.grants.get_mut(&1) {
        grant.revoked =
            Some(crate::model::Revocation { at_ms: 0, by: NodeId([1; 32]), reason: "moved".into() });
    }
    let mut tally = AccessTally::new();
    let total = FLAGS_LISTED_MAX as u64 + 5;
    for sequence in 0..total {
        let outcome = released(&[(2, &["name"])]);
        tally.observe(&state, &entry(sequence, 1, residents, Some(1), outcome), sequence, HOUR_MS);
    }
    let summary = tally.finish(0);
    assert_eq!(summary.flags.len(), FLAGS_LISTED_MAX);
    assert_eq!(summary.flag_counts, [(FlagKind::OutsideGrantWindow, total)].into());
    assert_eq!(summary.departments[0].counts.unanchored, total, "no checkpoint: every entry unanchored");
    assert_eq!(summary.departments[0].counts.flagged, total);
}

#[test]
fn a_release_of_a_subject_whose_consent_was_withdrawn_is_flagged() {
    let residents = crate::fixtures::RESIDENTS;
    let mut state = state();
    let consent_grant = Grant { legal_basis: LegalBasis::Consent, ..grant() };
    state.grants.insert(1, consent_grant);
    let key = |index| ConsentKey {
        subject: subject(index),
        dataset: residents.into(),
        grantee: org(STREET),
        purpose: "elderly-care".into(),
    };
    // Subject 2 consented (see `state`); subject 3 withdrew; subject 4 never consented.
    let withdrawn = Consent {
        given: false,
        covers_sensitive: false,
        recorded_by: org(CIVIL),
        recorded_at_ms: 0,
        channel: "street_window".into(),
    };
    state.consents.insert(key(3), withdrawn);
    let cases: [(&str, AccessOutcome, u64); 3] = [
        ("a consenting subject", released(&[(2, &["name"])]), 0),
        ("a withdrawn one beside a consenting one", released(&[(2, &["name"]), (3, &["name"])]), 1),
        ("no consent on file: not a withdrawal", released(&[(4, &["name"])]), 0),
    ];
    for (name, outcome, expected) in cases {
        let mut tally = AccessTally::new();
        tally.observe(&state, &entry(0, 1, residents, Some(1), outcome), 0, 0);
        let summary = tally.finish(0);
        let flagged = summary.flag_counts.get(&FlagKind::ReleasedAfterWithdrawal).copied().unwrap_or(0);
        assert_eq!(flagged, u64::from(expected > 0), "{name}");
        let subjects: u64 = summary
            .flags
            .iter()
            .filter(|flag| flag.kind == FlagKind::ReleasedAfterWithdrawal)
            .map(|flag| flag.subjects)
            .sum();
        assert_eq!(subjects, expected, "{name}");
    }
}
