//! Retention, impact assessments and deletion receipts (PIPL Art. 15, 19,
//! 47, 55-56): which grants must state them, which releases make a node a
//! holder, which receipts the log takes, and what is due and overdue when.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use civmesh_certs::{NodeId, NodeKey, Role, SignedEnvelope};
use civmesh_policy::deletion::{
    AssessmentDigest, Holding, OverdueDeletion, DELETION_WITHIN_MS_DEFAULT, DELETION_WITHIN_MS_MAX,
    RETENTION_KEEP_MS_MAX, RETENTION_MS_MIN,
};
use civmesh_policy::model::{GrantId, LegalBasis, SubjectKeyHash};
use civmesh_policy::{
    AccessOutcome, AccessRecord, Applied, Command, DeletionCause, DeletionDue, DeletionReceipt, GrantSpec,
    PolicyState, QueryHeader, ReasonCode, Rejection, RejectionCode, Retention, SubjectRelease,
};
use proptest::prelude::*;
use support::*;

const HOUR_MS: u64 = 3_600_000;
/// When the scenes' first records are released.
const RELEASE_MS: u64 = NOW_MS + HOUR_MS;
/// The enterprise phone grant's retention: kept 3 days, deleted within 12 hours.
const KEPT: Retention = Retention { keep_ms: 3 * DAY_MS, delete_within_ms: 12 * HOUR_MS };
/// The consent-based residents grant's retention: kept 10 days, deleted within 2 hours.
const CONSENTED: Retention = Retention { keep_ms: 10 * DAY_MS, delete_within_ms: 2 * HOUR_MS };
const ELDERLY_CARE: &str = "elderly-care";
const INSPECTION: &str = "inspection";

fn subject(n: u8) -> SubjectKeyHash {
    SubjectKeyHash([n; 32])
}

// ---------------------------------------------------------------------------
// Building blocks: grants, releases, consents, receipts.

/// A grant of `fields` of `dataset` to Jing'an Temple street with
/// `retention`, no assessment, over the support window.
fn spec(fx: &Fixture, dataset: &str, fields: &[&str], retention: Option<Retention>) -> GrantSpec {
    let purpose = if dataset == RESIDENTS { ELDERLY_CARE } else { INSPECTION };
    GrantSpec { retention, ..grant_spec(dataset, &fx.jingansi.org, fields, purpose) }
}

/// How a record reached its requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Query,
    Listing,
    Push,
}

/// What the owner logs: `kind` of access by `requester` under `grant` at
/// `at_ms` (the grant's dataset, purpose and fields), with `outcome`.
fn access(
    state: &PolicyState,
    kind: Kind,
    requester: &NodeKey,
    grant: GrantId,
    outcome: AccessOutcome,
    at_ms: u64,
) -> Command {
    let granted = &state.grants[&grant];
    let subjects = match (&outcome, kind) {
        (AccessOutcome::Permit { released }, Kind::Query) => {
            released.iter().map(|release| release.subject).collect()
        }
        (_, Kind::Query) => vec![subject(0)],
        _ => vec![],
    };
    let header = QueryHeader {
        dataset: granted.dataset.clone(),
        subjects,
        fields: granted.fields.iter().cloned().collect(),
        purpose: granted.purpose.clone(),
        grant: Some(grant),
    };
    let record = AccessRecord {
        request: SignedEnvelope::sign(requester, &header, at_ms).unwrap(),
        outcome,
        decided_at_ms: at_ms,
    };
    match kind {
        Kind::Query => Command::RecordAccess(record),
        Kind::Listing => Command::RecordListing(record),
        Kind::Push => Command::RecordPush(record),
    }
}

/// A permit releasing `subjects` with every field of `grant`.
fn permit(state: &PolicyState, grant: GrantId, subjects: &[SubjectKeyHash]) -> AccessOutcome {
    let fields: Vec<String> = state.grants[&grant].fields.iter().cloned().collect();
    let released =
        subjects.iter().map(|subject| SubjectRelease { subject: *subject, fields: fields.clone() }).collect();
    AccessOutcome::Permit { released }
}

/// The key of the node owning `dataset`.
fn owner<'a>(fx: &'a Fixture, dataset: &str) -> &'a NodeKey {
    if dataset == ENTERPRISES {
        &fx.market.key
    } else {
        &fx.civil.key
    }
}

/// Signs `command` as the node owning `dataset` and applies it at `at_ms`.
fn apply_as_owner(
    fx: &mut Fixture,
    dataset: &str,
    command: Command,
    at_ms: u64,
) -> Result<Applied, Rejection> {
    let Fixture { state, market, civil, .. } = fx;
    let owner = if dataset == ENTERPRISES { &market.key } else { &civil.key };
    apply_at(state, owner, command, at_ms)
}

/// Logs a query by `requester` under `grant` at `at_ms` that releases `subjects`.
fn release(
    fx: &mut Fixture,
    requester: &NodeKey,
    grant: GrantId,
    subjects: &[SubjectKeyHash],
    at_ms: u64,
) -> Result<Applied, Rejection> {
    let outcome = permit(&fx.state, grant, subjects);
    let command = access(&fx.state, Kind::Query, requester, grant, outcome, at_ms);
    let dataset = fx.state.grants[&grant].dataset.clone();
    apply_as_owner(fx, &dataset, command, at_ms)
}

/// `given` (or withdrawn) consent of `subject` to the residents' use by
/// Jing'an Temple street for elderly care, for its sensitive fields too if
/// `covers_sensitive`: civil affairs signs it.
fn consent_command(fx: &Fixture, subject: SubjectKeyHash, given: bool, covers_sensitive: bool) -> Command {
    Command::RecordConsent {
        subject,
        dataset: RESIDENTS.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: ELDERLY_CARE.into(),
        given,
        covers_sensitive,
        channel: "online_form".into(),
    }
}

/// [`consent_command`] without the sensitive fields, applied at `at_ms`.
fn consent(fx: &mut Fixture, subject: SubjectKeyHash, given: bool, at_ms: u64) {
    let command = consent_command(fx, subject, given, false);
    apply_at(&mut fx.state, &fx.civil.key, command, at_ms).unwrap();
}

/// A receipt for `cause` under `grant`, deleted at `deleted_at_ms`.
fn receipt(grant: GrantId, cause: DeletionCause, deleted_at_ms: u64) -> Command {
    Command::ConfirmDeletion(DeletionReceipt {
        grant,
        cause,
        records_deleted: 1,
        subjects_commitment: [0x5c; 32],
        deleted_at_ms,
        earliest_held_ms: None,
    })
}

/// A retention receipt at `at_ms` with cutoff `received_before_ms`, the
/// holder still keeping a copy received at `earliest_held_ms`.
fn confirm_keeping(
    state: &mut PolicyState,
    holder: &NodeKey,
    grant: GrantId,
    received_before_ms: u64,
    earliest_held_ms: u64,
    at_ms: u64,
) -> Result<Applied, Rejection> {
    let Command::ConfirmDeletion(receipt) = receipt(grant, retention_ended(received_before_ms), at_ms) else {
        unreachable!("a receipt")
    };
    let command =
        Command::ConfirmDeletion(DeletionReceipt { earliest_held_ms: Some(earliest_held_ms), ..receipt });
    apply_at(state, holder, command, at_ms)
}

/// `holder` logs a receipt for `cause` at `at_ms`, deleted at that time.
fn confirm(
    state: &mut PolicyState,
    holder: &NodeKey,
    grant: GrantId,
    cause: DeletionCause,
    at_ms: u64,
) -> Result<Applied, Rejection> {
    apply_at(state, holder, receipt(grant, cause, at_ms), at_ms)
}

/// Issues `spec` at `at_ms`, signed by the dataset's owner.
fn grant_at(fx: &mut Fixture, spec: GrantSpec, at_ms: u64) -> GrantId {
    let dataset = spec.dataset.clone();
    match apply_as_owner(fx, &dataset, Command::IssueGrant(spec), at_ms) {
        Ok(Applied::GrantIssued(id)) => id,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn revoke(fx: &mut Fixture, grant: GrantId, at_ms: u64) {
    let command = Command::RevokeGrant { grant_id: grant, reason: "the inspection campaign ended".into() };
    let dataset = fx.state.grants[&grant].dataset.clone();
    apply_as_owner(fx, &dataset, command, at_ms).unwrap();
}

fn retention_ended(received_before_ms: u64) -> DeletionCause {
    DeletionCause::RetentionEnded { received_before_ms }
}

/// A copy of `key` (keys are not `Clone`), for a test that signs with a
/// fixture node's key while it changes the fixture's state.
fn copy(key: &NodeKey) -> NodeKey {
    NodeKey::from_pkcs8_der(key.pkcs8_der()).unwrap()
}

fn holding<'a>(state: &'a PolicyState, grant: GrantId, holder: &NodeKey) -> Option<&'a Holding> {
    state.holdings.get(&grant)?.get(&holder.node_id())
}

/// The grants every scene starts with, each released to Jing'an Temple
/// street's first node at [`RELEASE_MS`].
struct Scene {
    fx: Fixture,
    /// A second node of Jing'an Temple street, released nothing.
    second: Node,
    /// The enterprise registry's public and internal fields: no retention.
    plain: GrantId,
    /// The enterprise registry's personal phone field, with [`KEPT`].
    kept: GrantId,
    /// Residents' names on each subject's consent, with [`CONSENTED`]:
    /// subjects 1 and 2 consented, subject 1 was released.
    consented: GrantId,
}

impl Scene {
    fn new() -> Scene {
        let mut fx = Fixture::new();
        let second = fx.admit(&fx.jingansi.org.to_string(), Role::Street);
        let plain = fx.grant(spec(&fx, ENTERPRISES, &["name", "operating_address"], None));
        let kept = fx.grant(spec(&fx, ENTERPRISES, &["name", "legal_rep_phone"], Some(KEPT)));
        let consented = fx.grant(GrantSpec {
            legal_basis: LegalBasis::Consent,
            ..spec(&fx, RESIDENTS, &["name"], Some(CONSENTED))
        });
        consent(&mut fx, subject(1), true, NOW_MS);
        consent(&mut fx, subject(2), true, NOW_MS);
        let first = copy(&fx.jingansi.key);
        for grant in [plain, kept, consented] {
            release(&mut fx, &first, grant, &[subject(1)], RELEASE_MS).unwrap();
        }
        Scene { fx, second, plain, kept, consented }
    }

    fn holder(&self) -> NodeKey {
        copy(&self.fx.jingansi.key)
    }
}

// ---------------------------------------------------------------------------
// Grants: retention and assessment.

/// One grant case: its fields of a dataset, its retention and assessment,
/// and what the log answers.
struct GrantCase {
    name: &'static str,
    dataset: &'static str,
    fields: &'static [&'static str],
    retention: Option<Retention>,
    assessment: Option<AssessmentDigest>,
    expected: Result<(), RejectionCode>,
}

const fn retention(keep_ms: u64, delete_within_ms: u64) -> Option<Retention> {
    Some(Retention { keep_ms, delete_within_ms })
}

const YEAR: Option<Retention> = retention(365 * DAY_MS, DAY_MS);

const fn case(
    name: &'static str,
    dataset: &'static str,
    fields: &'static [&'static str],
    retention: Option<Retention>,
    assessment: Option<AssessmentDigest>,
    expected: Result<(), RejectionCode>,
) -> GrantCase {
    GrantCase { name, dataset, fields, retention, assessment, expected }
}

/// One row per rule and bound.
const GRANT_CASES: &[GrantCase] = &[
    case(
        "residents' names, no retention",
        RESIDENTS,
        &["name"],
        None,
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case(
        "one personal field among public ones, no retention",
        ENTERPRISES,
        &["name", "legal_rep_phone"],
        None,
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case(
        "a sensitive field with its assessment, no retention",
        RESIDENTS,
        &["lives_alone_80_plus"],
        None,
        Some(ASSESSMENT),
        Err(RejectionCode::RetentionMissing),
    ),
    case("kept 0 ms", RESIDENTS, &["name"], retention(0, DAY_MS), None, Err(RejectionCode::RetentionMissing)),
    case(
        "kept just under 1 s",
        RESIDENTS,
        &["name"],
        retention(RETENTION_MS_MIN - 1, DAY_MS),
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case("kept exactly 1 s", RESIDENTS, &["name"], retention(RETENTION_MS_MIN, DAY_MS), None, Ok(())),
    case(
        "kept exactly 10 years",
        RESIDENTS,
        &["name"],
        retention(RETENTION_KEEP_MS_MAX, DAY_MS),
        None,
        Ok(()),
    ),
    case(
        "kept 10 years and 1 ms",
        RESIDENTS,
        &["name"],
        retention(RETENTION_KEEP_MS_MAX + 1, DAY_MS),
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case(
        "deleted within 0 ms",
        RESIDENTS,
        &["name"],
        retention(DAY_MS, 0),
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case(
        "deleted within exactly 30 days",
        RESIDENTS,
        &["name"],
        retention(DAY_MS, DELETION_WITHIN_MS_MAX),
        None,
        Ok(()),
    ),
    case(
        "deleted within 30 days and 1 ms",
        RESIDENTS,
        &["name"],
        retention(DAY_MS, DELETION_WITHIN_MS_MAX + 1),
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case(
        "public and internal fields, no retention",
        ENTERPRISES,
        &["name", "operating_address"],
        None,
        None,
        Ok(()),
    ),
    case("residents' public fields, no retention", RESIDENTS, &["district", "street"], None, None, Ok(())),
    case("public fields, a retention", ENTERPRISES, &["name"], YEAR, None, Ok(())),
    case(
        "public fields, an out-of-bounds retention",
        ENTERPRISES,
        &["name"],
        retention(0, DAY_MS),
        None,
        Err(RejectionCode::RetentionMissing),
    ),
    case(
        "a sensitive field without its assessment",
        RESIDENTS,
        &["name", "lives_alone_80_plus"],
        YEAR,
        None,
        Err(RejectionCode::AssessmentMissing),
    ),
    case(
        "a sensitive field with its assessment",
        RESIDENTS,
        &["name", "lives_alone_80_plus"],
        YEAR,
        Some(ASSESSMENT),
        Ok(()),
    ),
    case("personal fields with an assessment", RESIDENTS, &["name"], YEAR, Some(ASSESSMENT), Ok(())),
];

#[test]
fn grants_state_the_retention_and_assessment_their_fields_need() {
    let fx = Fixture::new();
    for case in GRANT_CASES {
        let mut state = fx.state.clone();
        let grant =
            GrantSpec { assessment: case.assessment, ..spec(&fx, case.dataset, case.fields, case.retention) };
        let outcome = apply(&mut state, owner(&fx, case.dataset), Command::IssueGrant(grant));
        match (outcome, case.expected) {
            (Ok(Applied::GrantIssued(id)), Ok(())) => {
                let issued = &state.grants[&id];
                assert_eq!(
                    (issued.retention, issued.assessment),
                    (case.retention, case.assessment),
                    "{}",
                    case.name
                );
            }
            (Err(rejection), Err(code)) => {
                assert_eq!(rejection.code, code, "{}: {}", case.name, rejection.detail);
                assert_eq!(state, after_rejection(&fx.state, &state), "{}", case.name);
            }
            (outcome, expected) => panic!("{}: {outcome:?}, expected {expected:?}", case.name),
        }
    }
}

// ---------------------------------------------------------------------------
// Holdings: which releases make a node a holder.

#[test]
fn permits_releasing_a_subject_under_a_grant_make_the_requester_a_holder() {
    let deny = |_: &PolicyState, _| AccessOutcome::Deny { reason: ReasonCode::ConsentMissing };
    let one = |state: &PolicyState, grant| permit(state, grant, &[subject(1)]);
    let two = |state: &PolicyState, grant| permit(state, grant, &[subject(1), subject(2)]);
    let none = |state: &PolicyState, grant| permit(state, grant, &[]);
    type Outcome = fn(&PolicyState, GrantId) -> AccessOutcome;
    let cases: [(&str, Kind, Outcome, bool); 7] = [
        ("a query's permit of one subject", Kind::Query, one, true),
        ("a listing page of two subjects", Kind::Listing, two, true),
        ("a push of one subject", Kind::Push, one, true),
        ("a query's denial", Kind::Query, deny, false),
        ("a listing page's denial", Kind::Listing, deny, false),
        ("a query's permit releasing nobody", Kind::Query, none, false),
        ("a listing page releasing nobody", Kind::Listing, none, false),
    ];
    for (name, kind, outcome, holds) in cases {
        let mut fx = Fixture::new();
        let grant = fx.grant(spec(&fx, ENTERPRISES, &["name", "legal_rep_phone"], Some(KEPT)));
        let requester = copy(&fx.jingansi.key);
        let record = access(&fx.state, kind, &requester, grant, outcome(&fx.state, grant), RELEASE_MS);
        let logged = apply_as_owner(&mut fx, ENTERPRISES, record, RELEASE_MS);
        assert!(matches!(logged, Ok(Applied::AccessLogged(_))), "{name}: {logged:?}");
        let expected = holds.then(|| Holding {
            last_release_ms: RELEASE_MS,
            retained_since_ms: Some(RELEASE_MS),
            ..Holding::default()
        });
        assert_eq!(holding(&fx.state, grant, &requester).cloned(), expected, "{name}");
        assert_eq!(fx.state.holdings.len(), usize::from(holds), "{name}: only the requester holds");
    }
}

#[test]
fn a_later_release_moves_the_last_release_not_the_earliest_copy() {
    let mut scene = Scene::new();
    let holder = scene.holder();
    release(&mut scene.fx, &holder, scene.kept, &[subject(2)], RELEASE_MS + DAY_MS).unwrap();
    let expected = Holding {
        last_release_ms: RELEASE_MS + DAY_MS,
        retained_since_ms: Some(RELEASE_MS),
        ..Holding::default()
    };
    assert_eq!(holding(&scene.fx.state, scene.kept, &holder), Some(&expected));
    assert_eq!(holding(&scene.fx.state, scene.kept, &scene.second.key), None);
}

// ---------------------------------------------------------------------------
// Receipts the log rejects.

/// How one case sets up the scene, and the receipt it then logs: signer
/// and command, at an entry time.
type ReceiptSetup = fn(&mut Scene) -> (NodeKey, Command, u64);

const LATER_MS: u64 = RELEASE_MS + 4 * DAY_MS;

/// Every receipt the log must refuse, with the one flaw its name says.
// A table of cases: one row per rule, however long the table grows.
#[allow(clippy::too_many_lines)]
fn refused_receipts() -> Vec<(&'static str, ReceiptSetup, RejectionCode)> {
    vec![
        (
            "an unknown grant",
            |scene| (scene.holder(), receipt(99, DeletionCause::GrantEnded, LATER_MS), LATER_MS),
            RejectionCode::GrantUnknown,
        ),
        (
            "a node of another street",
            |scene| {
                revoke(&mut scene.fx, scene.plain, LATER_MS);
                let key = copy(&scene.fx.nanjingxilu.key);
                (key, receipt(scene.plain, DeletionCause::GrantEnded, LATER_MS), LATER_MS)
            },
            RejectionCode::DeletionNotHolder,
        ),
        (
            "the owner's node",
            |scene| {
                revoke(&mut scene.fx, scene.plain, LATER_MS);
                let key = copy(&scene.fx.market.key);
                (key, receipt(scene.plain, DeletionCause::GrantEnded, LATER_MS), LATER_MS)
            },
            RejectionCode::DeletionNotHolder,
        ),
        (
            "a node of the grantee that was released nothing",
            |scene| {
                revoke(&mut scene.fx, scene.plain, LATER_MS);
                let key = copy(&scene.second.key);
                (key, receipt(scene.plain, DeletionCause::GrantEnded, LATER_MS), LATER_MS)
            },
            RejectionCode::DeletionNotHolder,
        ),
        (
            "a node that is no member",
            |scene| {
                revoke(&mut scene.fx, scene.plain, LATER_MS);
                let key = copy(&scene.fx.outsider.key);
                (key, receipt(scene.plain, DeletionCause::GrantEnded, LATER_MS), LATER_MS)
            },
            RejectionCode::SignerUnknown,
        ),
        (
            "the grant's end before it ended",
            |scene| (scene.holder(), receipt(scene.plain, DeletionCause::GrantEnded, LATER_MS), LATER_MS),
            RejectionCode::DeletionNotDue,
        ),
        (
            "the grant's end confirmed twice",
            |scene| {
                revoke(&mut scene.fx, scene.kept, LATER_MS);
                let holder = scene.holder();
                confirm(&mut scene.fx.state, &holder, scene.kept, DeletionCause::GrantEnded, LATER_MS)
                    .unwrap();
                (holder, receipt(scene.kept, DeletionCause::GrantEnded, LATER_MS + 1), LATER_MS + 1)
            },
            RejectionCode::DeletionDuplicate,
        ),
        (
            "a retention after the grant's end was confirmed",
            |scene| {
                revoke(&mut scene.fx, scene.kept, LATER_MS);
                let holder = scene.holder();
                confirm(&mut scene.fx.state, &holder, scene.kept, DeletionCause::GrantEnded, LATER_MS)
                    .unwrap();
                (holder, receipt(scene.kept, retention_ended(LATER_MS - KEPT.keep_ms), LATER_MS), LATER_MS)
            },
            RejectionCode::DeletionDuplicate,
        ),
        (
            "a retention on a grant that states none",
            |scene| {
                (scene.holder(), receipt(scene.plain, retention_ended(RELEASE_MS + 1), LATER_MS), LATER_MS)
            },
            RejectionCode::DeletionNotDue,
        ),
        (
            "a retention cutoff in the future",
            |scene| (scene.holder(), receipt(scene.kept, retention_ended(LATER_MS + 1), LATER_MS), LATER_MS),
            RejectionCode::InvalidArgument,
        ),
        (
            "a retention cutoff equal to the previous one",
            |scene| {
                let holder = scene.holder();
                confirm(&mut scene.fx.state, &holder, scene.kept, retention_ended(RELEASE_MS + 1), LATER_MS)
                    .unwrap();
                (holder, receipt(scene.kept, retention_ended(RELEASE_MS + 1), LATER_MS + 1), LATER_MS + 1)
            },
            RejectionCode::DeletionDuplicate,
        ),
        (
            "a retention cutoff before the previous one",
            |scene| {
                let holder = scene.holder();
                confirm(&mut scene.fx.state, &holder, scene.kept, retention_ended(RELEASE_MS + 1), LATER_MS)
                    .unwrap();
                (holder, receipt(scene.kept, retention_ended(RELEASE_MS), LATER_MS + 1), LATER_MS + 1)
            },
            RejectionCode::DeletionDuplicate,
        ),
        (
            "a withdrawal of a subject whose consent stands",
            |scene| {
                let cause = DeletionCause::ConsentWithdrawn { subject: subject(1) };
                (scene.holder(), receipt(scene.consented, cause, LATER_MS), LATER_MS)
            },
            RejectionCode::DeletionNotDue,
        ),
        (
            "a withdrawal confirmed twice",
            |scene| {
                consent(&mut scene.fx, subject(1), false, LATER_MS);
                let holder = scene.holder();
                let cause = DeletionCause::ConsentWithdrawn { subject: subject(1) };
                confirm(&mut scene.fx.state, &holder, scene.consented, cause.clone(), LATER_MS).unwrap();
                (holder, receipt(scene.consented, cause, LATER_MS + 1), LATER_MS + 1)
            },
            RejectionCode::DeletionNotDue,
        ),
        (
            "a deletion time far in the future",
            |scene| {
                revoke(&mut scene.fx, scene.plain, LATER_MS);
                (scene.holder(), receipt(scene.plain, DeletionCause::GrantEnded, LATER_MS + DAY_MS), LATER_MS)
            },
            RejectionCode::InvalidArgument,
        ),
    ]
}

#[test]
fn refused_receipts_change_nothing_but_the_counters() {
    for (name, setup, code) in refused_receipts() {
        let mut scene = Scene::new();
        let (signer, command, at_ms) = setup(&mut scene);
        let before = scene.fx.state.clone();
        let outcome = apply_at(&mut scene.fx.state, &signer, command, at_ms);
        assert_eq!(outcome.as_ref().map_err(|rejection| rejection.code), Err(code), "{name}: {outcome:?}");
        assert_eq!(scene.fx.state.holdings, before.holdings, "{name}: the holdings");
        assert_eq!(scene.fx.state, after_rejection(&before, &scene.fx.state), "{name}");
    }
}

// ---------------------------------------------------------------------------
// What is due and overdue, and what clears it.

fn overdue(grant: GrantId, holder: &NodeKey, cause: DeletionCause, due_at_ms: u64) -> OverdueDeletion {
    OverdueDeletion { grant, holder: holder.node_id(), cause, due_at_ms }
}

fn due(grant: GrantId, cause: DeletionCause) -> DeletionDue {
    DeletionDue { grant, cause }
}

#[test]
fn an_ended_grant_is_due_at_once_and_overdue_after_its_time_to_delete() {
    const END_MS: u64 = NOW_MS + 2 * DAY_MS;
    // (name, retention, ended by revocation rather than its window)
    let cases = [
        ("revoked, no retention", None, true),
        ("revoked, with a retention", Some(KEPT), true),
        ("its window ended, no retention", None, false),
        ("its window ended, with a retention", Some(KEPT), false),
    ];
    for (name, retention, revoked) in cases {
        let mut fx = Fixture::new();
        let fields: &[&str] = if retention.is_some() { &["legal_rep_phone"] } else { &["name"] };
        let valid_until_ms = if revoked { NOW_MS + 30 * DAY_MS } else { END_MS };
        let grant = fx.grant(GrantSpec { valid_until_ms, ..spec(&fx, ENTERPRISES, fields, retention) });
        let holder = copy(&fx.jingansi.key);
        release(&mut fx, &holder, grant, &[subject(1)], RELEASE_MS).unwrap();
        if revoked {
            revoke(&mut fx, grant, END_MS);
        }
        let within_ms = retention.map_or(DELETION_WITHIN_MS_DEFAULT, |retention| retention.delete_within_ms);
        let state = &fx.state;
        assert_eq!(state.deletions_due(&holder.node_id(), END_MS - 1), [], "{name}: before the end");
        assert_eq!(
            state.deletions_due(&holder.node_id(), END_MS),
            [due(grant, DeletionCause::GrantEnded)],
            "{name}"
        );
        assert_eq!(state.deletions_due(&fx.nanjingxilu.key.node_id(), END_MS), [], "{name}: only holders");
        assert_eq!(state.deletions_overdue(END_MS + within_ms - 1), [], "{name}: in time");
        let late = overdue(grant, &holder, DeletionCause::GrantEnded, END_MS + within_ms);
        assert_eq!(state.deletions_overdue(END_MS + within_ms), [late], "{name}");
        let confirmed_ms = END_MS + within_ms + HOUR_MS;
        confirm(&mut fx.state, &holder, grant, DeletionCause::GrantEnded, confirmed_ms).unwrap();
        let confirmed = holding(&fx.state, grant, &holder).unwrap();
        assert_eq!((confirmed.ended_deleted_at_ms, confirmed.receipts), (Some(confirmed_ms), 1), "{name}");
        for now_ms in [confirmed_ms, confirmed_ms + 400 * DAY_MS] {
            assert_eq!(fx.state.deletions_due(&holder.node_id(), now_ms), [], "{name}: cleared");
            assert_eq!(fx.state.deletions_overdue(now_ms), [], "{name}: cleared");
        }
    }
}

#[test]
fn copies_are_due_after_their_retention_and_overdue_after_the_time_to_delete() {
    let scene = Scene::new();
    let (state, holder, grant) = (&scene.fx.state, scene.holder(), scene.kept);
    let due_ms = RELEASE_MS + KEPT.keep_ms;
    let overdue_ms = due_ms + KEPT.delete_within_ms;
    // The holder is asked to delete half its time to delete after the
    // retention (so one receiving all the time deletes in batches), with
    // the cutoff of that moment.
    let asked_ms = due_ms + KEPT.delete_within_ms / 2;
    let only_kept_in = |state: &PolicyState, now_ms| -> Vec<DeletionDue> {
        state.deletions_due(&holder.node_id(), now_ms).into_iter().filter(|due| due.grant == grant).collect()
    };
    let only_kept = |now_ms| only_kept_in(state, now_ms);
    assert_eq!(only_kept(asked_ms - 1), []);
    assert_eq!(only_kept(asked_ms), [due(grant, retention_ended(asked_ms - KEPT.keep_ms))]);
    assert_eq!(only_kept(overdue_ms), [due(grant, retention_ended(overdue_ms - KEPT.keep_ms))]);
    let overdue_kept = |state: &PolicyState, now_ms| -> Vec<OverdueDeletion> {
        state.deletions_overdue(now_ms).into_iter().filter(|overdue| overdue.grant == grant).collect()
    };
    assert_eq!(overdue_kept(state, overdue_ms - 1), []);
    let late = overdue(grant, &holder, retention_ended(RELEASE_MS + 1), overdue_ms);
    assert_eq!(overdue_kept(state, overdue_ms), [late]);

    // A cutoff at the release itself deletes nothing received then: the
    // holder still keeps that copy.
    let mut same = state.clone();
    confirm_keeping(&mut same, &holder, grant, RELEASE_MS, RELEASE_MS, due_ms + 1).unwrap();
    assert_eq!(holding(&same, grant, &holder).unwrap().retained_since_ms, Some(RELEASE_MS));
    assert_eq!(overdue_kept(&same, overdue_ms).len(), 1, "still overdue");

    // The cutoff the due list gives clears the copy, for good.
    let mut cleared = state.clone();
    confirm(&mut cleared, &holder, grant, retention_ended(RELEASE_MS + 1), due_ms + 1).unwrap();
    let expected = Holding {
        last_release_ms: RELEASE_MS,
        retained_since_ms: None,
        deleted_before_ms: RELEASE_MS + 1,
        receipts: 1,
        ..Holding::default()
    };
    assert_eq!(holding(&cleared, grant, &holder), Some(&expected));
    // Until the grant's window ends, 30 days after its start.
    for now_ms in [asked_ms, overdue_ms, overdue_ms + 20 * DAY_MS] {
        assert_eq!(only_kept_in(&cleared, now_ms), [], "due at {now_ms}");
        assert_eq!(overdue_kept(&cleared, now_ms), [], "overdue at {now_ms}");
    }
}

#[test]
fn a_release_after_a_retention_receipt_is_due_again() {
    let mut scene = Scene::new();
    let (holder, grant) = (scene.holder(), scene.kept);
    let second_ms = RELEASE_MS + 2 * DAY_MS;
    release(&mut scene.fx, &holder, grant, &[subject(2)], second_ms).unwrap();
    // The first copy's retention ends; the holder deletes it, not the second.
    let cutoff_ms = RELEASE_MS + 1;
    let receipt_ms = cutoff_ms + KEPT.keep_ms;
    confirm_keeping(&mut scene.fx.state, &holder, grant, cutoff_ms, second_ms, receipt_ms).unwrap();
    let state = &scene.fx.state;
    let kept_due = |now_ms| -> Vec<DeletionDue> {
        state.deletions_due(&holder.node_id(), now_ms).into_iter().filter(|due| due.grant == grant).collect()
    };
    assert_eq!(kept_due(receipt_ms), []);
    let asked_ms = second_ms + KEPT.keep_ms + KEPT.delete_within_ms / 2;
    assert_eq!(kept_due(asked_ms - 1), []);
    assert_eq!(kept_due(asked_ms), [due(grant, retention_ended(asked_ms - KEPT.keep_ms))]);
}

#[test]
fn a_withdrawn_consent_is_due_at_every_holder_of_the_grants_relying_on_it() {
    let mut scene = Scene::new();
    let (first, second, consented) = (scene.holder(), copy(&scene.second.key), scene.consented);
    release(&mut scene.fx, &second, consented, &[subject(2)], RELEASE_MS + HOUR_MS).unwrap();
    // A statutory grant of the same dataset, grantee and purpose relies on
    // no consent.
    let statutory_spec = spec(&scene.fx, RESIDENTS, &["name", "address"], Some(CONSENTED));
    let statutory = grant_at(&mut scene.fx, statutory_spec, RELEASE_MS + HOUR_MS);
    release(&mut scene.fx, &first, statutory, &[subject(1)], RELEASE_MS + HOUR_MS).unwrap();
    let withdrawn_ms = RELEASE_MS + DAY_MS;
    let before = scene.fx.state.holdings.clone();
    // Refusing a consent never given, once or twice, adds nothing.
    consent(&mut scene.fx, subject(3), false, withdrawn_ms - 2);
    consent(&mut scene.fx, subject(3), false, withdrawn_ms - 1);
    assert_eq!(scene.fx.state.holdings, before);

    consent(&mut scene.fx, subject(1), false, withdrawn_ms);
    let due_at_ms = withdrawn_ms + CONSENTED.delete_within_ms;
    let cause = DeletionCause::ConsentWithdrawn { subject: subject(1) };
    let state = &scene.fx.state;
    for holder in [&first, &second] {
        let withdrawals = &holding(state, consented, holder).unwrap().withdrawals_due;
        assert_eq!(withdrawals, &BTreeMap::from([(subject(1), due_at_ms)]));
        assert_eq!(state.deletions_due(&holder.node_id(), withdrawn_ms), [due(consented, cause.clone())]);
    }
    assert_eq!(holding(state, statutory, &first).unwrap().withdrawals_due, BTreeMap::new());
    assert_eq!(state.deletions_overdue(due_at_ms - 1), []);
    let overdue_at = |state: &PolicyState| state.deletions_overdue(due_at_ms);
    let mut expected: Vec<OverdueDeletion> = [&first, &second]
        .into_iter()
        .map(|holder| overdue(consented, holder, cause.clone(), due_at_ms))
        .collect();
    expected.sort_by_key(|overdue| overdue.holder);
    assert_eq!(overdue_at(state), expected);

    confirm(&mut scene.fx.state, &first, consented, cause.clone(), due_at_ms).unwrap();
    let state = &scene.fx.state;
    assert_eq!(state.deletions_due(&first.node_id(), due_at_ms), []);
    assert_eq!(overdue_at(state), [overdue(consented, &second, cause.clone(), due_at_ms)]);
    // Withdrawn again, it was not given: nothing more is due.
    consent(&mut scene.fx, subject(1), false, due_at_ms + 1);
    assert_eq!(overdue_at(&scene.fx.state), [overdue(consented, &second, cause, due_at_ms)]);
    assert_eq!(scene.fx.state.deletions_due(&first.node_id(), due_at_ms + 1), []);
}

// ---------------------------------------------------------------------------
// Found while writing these tests: each fails today, and says why.

#[test]
fn an_early_retention_cutoff_does_not_bring_the_copies_deadline_forward() {
    let mut scene = Scene::new();
    let (holder, grant) = (scene.holder(), scene.kept);
    // Nothing was received before NOW_MS; the holder says it deleted it.
    confirm_keeping(&mut scene.fx.state, &holder, grant, NOW_MS, RELEASE_MS, RELEASE_MS + HOUR_MS).unwrap();
    let state = &scene.fx.state;
    assert_eq!(holding(state, grant, &holder).unwrap().retained_since_ms, Some(RELEASE_MS));
    let overdue_ms = RELEASE_MS + KEPT.keep_ms + KEPT.delete_within_ms;
    let kept: Vec<_> = state
        .deletions_overdue(overdue_ms - 1)
        .into_iter()
        .filter(|overdue| overdue.grant == grant)
        .collect();
    assert_eq!(kept, [], "the copy released at RELEASE_MS is not overdue before {overdue_ms}");
}

#[test]
fn a_retention_receipt_is_not_due_again_before_the_next_copy_ages() {
    let mut scene = Scene::new();
    let (holder, grant) = (scene.holder(), scene.kept);
    let second_ms = RELEASE_MS + 2 * DAY_MS;
    release(&mut scene.fx, &holder, grant, &[subject(2)], second_ms).unwrap();
    let receipt_ms = RELEASE_MS + 1 + KEPT.keep_ms;
    confirm_keeping(&mut scene.fx.state, &holder, grant, RELEASE_MS + 1, second_ms, receipt_ms).unwrap();
    // The node's next sweep, a minute later: the only copy left was
    // released two days after the cutoff.
    let next_sweep_ms = receipt_ms + 60_000;
    let due: Vec<_> = scene
        .fx
        .state
        .deletions_due(&holder.node_id(), next_sweep_ms)
        .into_iter()
        .filter(|due| due.grant == grant)
        .collect();
    assert_eq!(due, [], "nothing received before {} is held", next_sweep_ms - KEPT.keep_ms);
}

#[test]
fn a_receipt_deleted_before_the_last_release_is_refused() {
    let mut scene = Scene::new();
    let (holder, grant) = (scene.holder(), scene.plain);
    revoke(&mut scene.fx, grant, LATER_MS);
    // Deleted a day before the copy it claims to have deleted was released.
    let command = receipt(grant, DeletionCause::GrantEnded, RELEASE_MS - DAY_MS);
    let outcome = apply_at(&mut scene.fx.state, &holder, command, LATER_MS);
    assert_eq!(outcome.map_err(|rejection| rejection.code), Err(RejectionCode::InvalidArgument));
}

#[test]
fn a_receipt_for_the_overdue_cause_clears_it() {
    let mut scene = Scene::new();
    let (holder, grant) = (scene.holder(), scene.kept);
    let overdue_ms = RELEASE_MS + KEPT.keep_ms + KEPT.delete_within_ms;
    let kept = |state: &PolicyState| -> Vec<OverdueDeletion> {
        state.deletions_overdue(overdue_ms).into_iter().filter(|overdue| overdue.grant == grant).collect()
    };
    let [late] = kept(&scene.fx.state).try_into().unwrap();
    confirm(&mut scene.fx.state, &holder, grant, late.cause, overdue_ms).unwrap();
    assert_eq!(kept(&scene.fx.state), []);
}

// ---------------------------------------------------------------------------
// The invariant over any sequence of releases, ends, consents and receipts.

/// The fixture, a second Jing'an Temple node, and the three grants of a
/// [`Scene`] (windows ending after 20, 10 and 30 days) before any release,
/// with subjects 0 and 1 consented.
struct World {
    fx: Fixture,
    second: Node,
    state: PolicyState,
    grants: [GrantId; 3],
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let mut fx = Fixture::new();
        let second = fx.admit(&fx.jingansi.org.to_string(), Role::Street);
        let until = |days: u64| NOW_MS + days * DAY_MS;
        let plain = spec(&fx, ENTERPRISES, &["name", "operating_address"], None);
        let plain = fx.grant(GrantSpec { valid_until_ms: until(20), ..plain });
        let kept = spec(&fx, ENTERPRISES, &["name", "legal_rep_phone"], Some(KEPT));
        let kept = fx.grant(GrantSpec { valid_until_ms: until(10), ..kept });
        let consented = spec(&fx, RESIDENTS, &["name"], Some(CONSENTED));
        let consented = fx.grant(GrantSpec { legal_basis: LegalBasis::Consent, ..consented });
        consent(&mut fx, subject(0), true, NOW_MS);
        consent(&mut fx, subject(1), true, NOW_MS);
        let state = fx.state.clone();
        World { fx, second, state, grants: [plain, kept, consented] }
    })
}

impl World {
    /// Jing'an Temple's two nodes, then Nanjing West Road's, never a grantee.
    fn holder(&self, index: usize) -> &NodeKey {
        [&self.fx.jingansi.key, &self.second.key, &self.fx.nanjingxilu.key][index % 3]
    }
}

/// What a receipt in a generated run confirms.
#[derive(Debug, Clone)]
enum Confirmed {
    /// The `pick`th thing `deletions_due` lists for the holder (modulo
    /// their number), under whichever grant, if any.
    Due {
        pick: usize,
    },
    GrantEnded,
    /// Copies received before `now - back_ms`.
    Retention {
        back_ms: u64,
    },
    Withdrawn {
        subject: u8,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Release { grant: usize, holder: usize, subject: u8 },
    Revoke { grant: usize },
    Consent { subject: u8, given: bool },
    Receipt { grant: usize, holder: usize, confirmed: Confirmed },
}

/// Mostly Jing'an Temple's nodes, the grantee's; now and then Nanjing West Road's.
fn holder() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 3 => Just(1usize), 1 => Just(2usize)]
}

fn op() -> impl Strategy<Value = Op> {
    let confirmed = prop_oneof![
        4 => any::<usize>().prop_map(|pick| Confirmed::Due { pick }),
        1 => Just(Confirmed::GrantEnded),
        1 => (0..6 * DAY_MS).prop_map(|back_ms| Confirmed::Retention { back_ms }),
        1 => (0..4u8).prop_map(|subject| Confirmed::Withdrawn { subject }),
    ];
    prop_oneof![
        10 => (0..3usize, holder(), 0..4u8).prop_map(|(grant, holder, subject)| Op::Release { grant, holder, subject }),
        1 => (0..3usize).prop_map(|grant| Op::Revoke { grant }),
        4 => (0..4u8, any::<bool>()).prop_map(|(subject, given)| Op::Consent { subject, given }),
        10 => (0..3usize, holder(), confirmed)
            .prop_map(|(grant, holder, confirmed)| Op::Receipt { grant, holder, confirmed }),
    ]
}

/// An overdue deletion without its cutoff and time: what it is about.
type Deletion = (GrantId, NodeId, u8, Option<SubjectKeyHash>);

fn deletion(overdue: &OverdueDeletion) -> Deletion {
    let (kind, subject) = match &overdue.cause {
        DeletionCause::GrantEnded => (0, None),
        DeletionCause::RetentionEnded { .. } => (1, None),
        DeletionCause::ConsentWithdrawn { subject } => (2, Some(*subject)),
    };
    (overdue.grant, overdue.holder, kind, subject)
}

fn overdue_by_deletion(state: &PolicyState, now_ms: u64) -> BTreeMap<Deletion, u64> {
    state.deletions_overdue(now_ms).iter().map(|overdue| (deletion(overdue), overdue.due_at_ms)).collect()
}

/// The command `op` makes at `now_ms`, signed by whom; `None` when it
/// confirms what is due and nothing is.
fn command_of(state: &PolicyState, op: &Op, now_ms: u64) -> Option<(&'static NodeKey, Command)> {
    let world = world();
    Some(match op {
        Op::Release { grant, holder, subject: n } => {
            let grant = world.grants[grant % 3];
            let outcome = permit(state, grant, &[subject(*n)]);
            let record = access(state, Kind::Query, world.holder(*holder), grant, outcome, now_ms);
            (owner(&world.fx, &state.grants[&grant].dataset), record)
        }
        Op::Revoke { grant } => {
            let grant = world.grants[grant % 3];
            let command = Command::RevokeGrant { grant_id: grant, reason: "ended".into() };
            (owner(&world.fx, &state.grants[&grant].dataset), command)
        }
        Op::Consent { subject: n, given } => {
            (&world.fx.civil.key, consent_command(&world.fx, subject(*n), *given, false))
        }
        Op::Receipt { grant, holder, confirmed } => {
            let (mut grant, holder) = (world.grants[grant % 3], world.holder(*holder));
            let cause = match confirmed {
                Confirmed::Due { pick } => {
                    let due = state.deletions_due(&holder.node_id(), now_ms);
                    let picked = due.get(pick.checked_rem(due.len())?)?.clone();
                    grant = picked.grant;
                    picked.cause
                }
                Confirmed::GrantEnded => DeletionCause::GrantEnded,
                Confirmed::Retention { back_ms } => retention_ended(now_ms.saturating_sub(*back_ms)),
                Confirmed::Withdrawn { subject: n } => {
                    DeletionCause::ConsentWithdrawn { subject: subject(*n) }
                }
            };
            (holder, receipt(grant, cause, now_ms))
        }
    })
}

/// Whether a retention receipt's cutoff is before the copies the holding
/// may hold: the case [`an_early_retention_cutoff_does_not_bring_the_copies_deadline_forward`]
/// shows is wrong today.
fn early_cutoff(state: &PolicyState, command: &Command, signer: &NodeKey) -> bool {
    let Command::ConfirmDeletion(receipt) = command else { return false };
    let DeletionCause::RetentionEnded { received_before_ms } = receipt.cause else { return false };
    holding(state, receipt.grant, signer)
        .and_then(|holding| holding.retained_since_ms)
        .is_some_and(|since_ms| received_before_ms < since_ms)
}

/// Applies `ops`, each after its pause, and checks after each:
/// - a rejected command changes nothing but the counters;
/// - a holding whose grant's end was confirmed is never due or overdue again;
/// - everything overdue is due, and was due by then;
/// - an accepted receipt adds no overdue deletion and brings none forward,
///   now or later (unless `early_cutoffs_too` is off and its cutoff is
///   before the holding's copies);
/// - a receipt for something due clears it.
fn check_run(ops: &[(u64, Op)], early_cutoffs_too: bool) -> Result<(), TestCaseError> {
    let mut state = world().state.clone();
    let mut now_ms = NOW_MS;
    let mut ended: BTreeSet<(GrantId, NodeId)> = BTreeSet::new();
    for (pause_ms, op) in ops {
        now_ms += pause_ms;
        let Some((signer, command)) = command_of(&state, op, now_ms) else { continue };
        let before = state.clone();
        let outcome = apply_at(&mut state, signer, command.clone(), now_ms);
        let probes = [now_ms, now_ms + 13 * HOUR_MS, now_ms + 4 * DAY_MS, now_ms + 40 * DAY_MS];
        match (&outcome, &command) {
            (Err(_), _) => prop_assert_eq!(&state, &after_rejection(&before, &state), "{:?}", op),
            (Ok(_), Command::ConfirmDeletion(receipt)) => {
                if receipt.cause == DeletionCause::GrantEnded {
                    ended.insert((receipt.grant, signer.node_id()));
                }
                let early = !early_cutoffs_too && early_cutoff(&before, &command, signer);
                let accepted = Accepted { receipt, signer: signer.node_id(), at_ms: now_ms };
                check_receipt(&before, &state, &accepted, if early { &[] } else { &probes })?;
            }
            (Ok(_), _) => {}
        }
        for probe_ms in probes {
            check_deletions(&state, &ended, probe_ms)?;
        }
    }
    Ok(())
}

/// A receipt the log took, from whom, when.
struct Accepted<'a> {
    receipt: &'a DeletionReceipt,
    signer: NodeId,
    at_ms: u64,
}

/// A receipt for something due clears it; at each of `probes`, nothing is
/// overdue after it that was not, nor due earlier than it was.
fn check_receipt(
    before: &PolicyState,
    after: &PolicyState,
    accepted: &Accepted<'_>,
    probes: &[u64],
) -> Result<(), TestCaseError> {
    let Accepted { receipt, signer, at_ms } = accepted;
    let listed = |state: &PolicyState| {
        let due = state.deletions_due(signer, *at_ms);
        due.iter().any(|due| due.grant == receipt.grant && due.cause == receipt.cause)
    };
    prop_assert!(!listed(before) || !listed(after), "{:?} still due after its receipt", receipt.cause);
    for probe_ms in probes {
        let (was, is) = (overdue_by_deletion(before, *probe_ms), overdue_by_deletion(after, *probe_ms));
        for (deletion, due_at_ms) in &is {
            let earlier = was.get(deletion).is_some_and(|was_ms| was_ms <= due_at_ms);
            prop_assert!(earlier, "at {} after {:?}: {:?}, before {:?}", probe_ms, receipt, is, was);
        }
    }
    Ok(())
}

/// At `now_ms`: nothing confirmed deleted for a grant's end is due or
/// overdue; everything overdue was due by now and is due.
fn check_deletions(
    state: &PolicyState,
    ended: &BTreeSet<(GrantId, NodeId)>,
    now_ms: u64,
) -> Result<(), TestCaseError> {
    for overdue in state.deletions_overdue(now_ms) {
        prop_assert!(
            !ended.contains(&(overdue.grant, overdue.holder)),
            "{:?}: its end was confirmed",
            overdue
        );
        prop_assert!(overdue.due_at_ms <= now_ms);
        let due = state.deletions_due(&overdue.holder, now_ms);
        prop_assert!(
            due.iter().any(|due| due.grant == overdue.grant),
            "{:?} overdue, not due: {:?}",
            overdue,
            due
        );
    }
    for (grant, holder) in ended {
        let due = state.deletions_due(holder, now_ms);
        prop_assert!(due.iter().all(|due| due.grant != *grant), "{:?}: its end was confirmed", due);
    }
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    let pause = prop_oneof![1 => Just(0u64), 3 => 0..DAY_MS];
    prop::collection::vec((pause, op()), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn receipts_only_ever_clear_deletions(ops in ops()) {
        check_run(&ops, false)?;
    }

    #[test]
    fn receipts_only_ever_clear_deletions_even_with_early_cutoffs(ops in ops()) {
        check_run(&ops, true)?;
    }
}

// ---------------------------------------------------------------------------
// A retention receipt and the copies it leaves: what the holder names it
// still keeps, and what was released to it since the cutoff.

/// The cutoff of the receipts below: a day after the scene's first release.
const CUTOFF_MS: u64 = RELEASE_MS + DAY_MS;
/// When the holder logs its receipt, having scanned its copies a little before.
const RECEIPT_MS: u64 = CUTOFF_MS + KEPT.keep_ms + 2 * HOUR_MS;

/// One retention receipt under the scene's kept grant (copies released at
/// [`RELEASE_MS`]), cutoff [`CUTOFF_MS`], logged at [`RECEIPT_MS`]: a
/// release before it or not, the earliest copy it names, and the earliest
/// copy the log then counts as kept.
struct KeptCase {
    name: &'static str,
    released_ms: Option<u64>,
    earliest_held_ms: Option<u64>,
    retained_since_ms: Option<u64>,
}

const KEPT_CASES: &[KeptCase] = &[
    KeptCase {
        // The reviewer's case: the copy released between the scan and the
        // receipt is still due, from the cutoff on.
        name: "a copy released between the holder's scan and its receipt, none named",
        released_ms: Some(RECEIPT_MS - 60_000),
        earliest_held_ms: None,
        retained_since_ms: Some(CUTOFF_MS),
    },
    KeptCase {
        name: "a copy released at the cutoff, none named",
        released_ms: Some(CUTOFF_MS),
        earliest_held_ms: None,
        retained_since_ms: Some(CUTOFF_MS),
    },
    KeptCase {
        name: "nothing released since the cutoff, none named",
        released_ms: Some(CUTOFF_MS - 1),
        earliest_held_ms: None,
        retained_since_ms: None,
    },
    KeptCase {
        name: "nothing released since the first copy, none named",
        released_ms: None,
        earliest_held_ms: None,
        retained_since_ms: None,
    },
    KeptCase {
        // A push released before the cutoff that reached the holder after
        // it: the holder keeps it, and names it.
        name: "a copy released before the cutoff, received after it and named",
        released_ms: None,
        earliest_held_ms: Some(CUTOFF_MS + HOUR_MS),
        retained_since_ms: Some(CUTOFF_MS + HOUR_MS),
    },
    KeptCase {
        name: "a copy released since the cutoff, an earlier one named",
        released_ms: Some(RECEIPT_MS - 60_000),
        earliest_held_ms: Some(CUTOFF_MS + HOUR_MS),
        retained_since_ms: Some(CUTOFF_MS + HOUR_MS),
    },
    KeptCase {
        name: "a copy named at the cutoff itself",
        released_ms: None,
        earliest_held_ms: Some(CUTOFF_MS),
        retained_since_ms: Some(CUTOFF_MS),
    },
];

#[test]
fn a_retention_receipt_leaves_due_what_the_holder_keeps_or_may_have_received_since() {
    for case in KEPT_CASES {
        let mut scene = Scene::new();
        let (holder, grant) = (scene.holder(), scene.kept);
        if let Some(released_ms) = case.released_ms {
            release(&mut scene.fx, &holder, grant, &[subject(2)], released_ms).unwrap();
        }
        let state = &mut scene.fx.state;
        match case.earliest_held_ms {
            Some(earliest_ms) => confirm_keeping(state, &holder, grant, CUTOFF_MS, earliest_ms, RECEIPT_MS),
            None => confirm(state, &holder, grant, retention_ended(CUTOFF_MS), RECEIPT_MS),
        }
        .unwrap_or_else(|rejection| panic!("{}: {rejection}", case.name));
        let kept = holding(state, grant, &holder).unwrap();
        assert_eq!(kept.deleted_before_ms, CUTOFF_MS, "{}", case.name);
        assert_eq!(kept.retained_since_ms, case.retained_since_ms, "{}", case.name);
        check_kept_due(state, &holder, grant, case);
    }
}

/// What is due and overdue after the receipt of `case`: nothing at once;
/// then, for a copy still counted, a retention from it; else nothing until
/// the grant's window ends.
fn check_kept_due(state: &PolicyState, holder: &NodeKey, grant: GrantId, case: &KeptCase) {
    let name = case.name;
    let due_in = |now_ms| -> Vec<DeletionDue> {
        state.deletions_due(&holder.node_id(), now_ms).into_iter().filter(|due| due.grant == grant).collect()
    };
    let overdue_in = |now_ms| -> Vec<OverdueDeletion> {
        state.deletions_overdue(now_ms).into_iter().filter(|overdue| overdue.grant == grant).collect()
    };
    assert_eq!(due_in(RECEIPT_MS), [], "{name}: just confirmed");
    let Some(since_ms) = case.retained_since_ms else {
        for now_ms in [RECEIPT_MS + KEPT.keep_ms, RECEIPT_MS + 10 * DAY_MS] {
            assert_eq!(due_in(now_ms), [], "{name}: due at {now_ms}");
            assert_eq!(overdue_in(now_ms), [], "{name}: overdue at {now_ms}");
        }
        return;
    };
    let asked_ms = since_ms + KEPT.keep_ms + KEPT.delete_within_ms / 2;
    assert_eq!(due_in(asked_ms - 1), [], "{name}: not yet");
    assert_eq!(due_in(asked_ms), [due(grant, retention_ended(asked_ms - KEPT.keep_ms))], "{name}");
    let overdue_ms = since_ms + KEPT.keep_ms + KEPT.delete_within_ms;
    assert_eq!(overdue_in(overdue_ms - 1), [], "{name}: in time");
    let late = overdue(grant, holder, retention_ended(since_ms + 1), overdue_ms);
    assert_eq!(overdue_in(overdue_ms), [late], "{name}");
}

// ---------------------------------------------------------------------------
// A new version of a dataset and the grants in force over it.

use civmesh_policy::model::{FieldClass, SensitiveCategory};
use civmesh_policy::DatasetSpec;

const SENSITIVE: FieldClass = FieldClass::Sensitive(SensitiveCategory::Whereabouts);

/// Where a grant stands when the dataset is republished at [`NOW_MS`].
#[derive(Debug, Clone, Copy)]
enum Standing {
    InForce,
    /// Its window opens a day later.
    NotYetValid,
    /// Its window ended at [`NOW_MS`] itself.
    Ended,
    /// Revoked before the new version.
    Revoked,
}

/// A grant of the enterprises' name and operating address to Jing'an
/// Temple street, with this protection and standing.
#[derive(Debug, Clone, Copy)]
struct Granted {
    retention: Option<Retention>,
    assessment: Option<AssessmentDigest>,
    standing: Standing,
}

const fn granted(
    retention: Option<Retention>,
    assessment: Option<AssessmentDigest>,
    standing: Standing,
) -> Granted {
    Granted { retention, assessment, standing }
}

/// One new version of the enterprise registry: the grants issued before
/// it, its title, the fields it changes (a class, or `None`: left out),
/// and the code it is refused with, naming the `n`th grant (from 0).
struct RepublishCase {
    name: &'static str,
    grants: &'static [Granted],
    title: &'static str,
    changes: &'static [(&'static str, Option<FieldClass>)],
    expected: Result<(), (RejectionCode, usize)>,
}

const PLAIN: Granted = granted(None, None, Standing::InForce);
const KEPT_A_YEAR: Granted = granted(YEAR, None, Standing::InForce);
const NAME_PERSONAL: &[(&str, Option<FieldClass>)] = &[("name", Some(FieldClass::Personal))];
const NAME_SENSITIVE: &[(&str, Option<FieldClass>)] = &[("name", Some(SENSITIVE))];
const TITLE: &str = "Enterprise registry";

const fn republish(
    name: &'static str,
    grants: &'static [Granted],
    changes: &'static [(&'static str, Option<FieldClass>)],
    expected: Result<(), (RejectionCode, usize)>,
) -> RepublishCase {
    RepublishCase { name, grants, title: TITLE, changes, expected }
}

const REPUBLISH_CASES: &[RepublishCase] = &[
    republish(
        "a public field made personal under a grant without retention",
        &[PLAIN],
        NAME_PERSONAL,
        Err((RejectionCode::RetentionMissing, 0)),
    ),
    republish(
        "a public field made personal under a grant with retention",
        &[KEPT_A_YEAR],
        NAME_PERSONAL,
        Ok(()),
    ),
    republish(
        "a public field made sensitive under a grant with retention, no assessment",
        &[KEPT_A_YEAR],
        NAME_SENSITIVE,
        Err((RejectionCode::AssessmentMissing, 0)),
    ),
    republish(
        "a public field made sensitive under a grant with neither: the retention first",
        &[PLAIN],
        NAME_SENSITIVE,
        Err((RejectionCode::RetentionMissing, 0)),
    ),
    republish(
        "a public field made sensitive under a grant with retention and assessment",
        &[granted(YEAR, Some(ASSESSMENT), Standing::InForce)],
        NAME_SENSITIVE,
        Ok(()),
    ),
    republish(
        "a public field made personal after the grant without retention was revoked",
        &[granted(None, None, Standing::Revoked)],
        NAME_PERSONAL,
        Ok(()),
    ),
    republish(
        "a public field made sensitive after the grant without assessment was revoked",
        &[granted(YEAR, None, Standing::Revoked)],
        NAME_SENSITIVE,
        Ok(()),
    ),
    republish(
        "a public field made personal at the end of the grant without retention",
        &[granted(None, None, Standing::Ended)],
        NAME_PERSONAL,
        Ok(()),
    ),
    republish(
        "a public field made personal under a grant without retention not valid yet",
        &[granted(None, None, Standing::NotYetValid)],
        NAME_PERSONAL,
        Err((RejectionCode::RetentionMissing, 0)),
    ),
    republish(
        "a field no grant grants made sensitive",
        &[PLAIN],
        &[("registered_address", Some(SENSITIVE)), ("legal_rep_phone", Some(SENSITIVE))],
        Ok(()),
    ),
    republish(
        "a granted field left out, another made public",
        &[PLAIN],
        &[("name", None), ("operating_address", Some(FieldClass::Public))],
        Ok(()),
    ),
    republish(
        "two grants: the first lacking its assessment refuses before the second lacking its retention",
        &[KEPT_A_YEAR, PLAIN],
        NAME_SENSITIVE,
        Err((RejectionCode::AssessmentMissing, 0)),
    ),
    republish(
        "two grants: the second lacking its retention",
        &[KEPT_A_YEAR, PLAIN],
        NAME_PERSONAL,
        Err((RejectionCode::RetentionMissing, 1)),
    ),
    RepublishCase {
        name: "a title of white space is refused first",
        title: " ",
        ..republish("", &[PLAIN], NAME_PERSONAL, Err((RejectionCode::InvalidArgument, 0)))
    },
];

/// The enterprise registry as `case` republishes it.
fn republished(case: &RepublishCase) -> DatasetSpec {
    let mut spec = DatasetSpec { title: case.title.into(), ..enterprise_dataset() };
    for (name, class) in case.changes {
        match class {
            Some(class) => spec.fields.iter_mut().filter(|field| field.name == *name).for_each(|field| {
                field.class = *class;
            }),
            None => spec.fields.retain(|field| field.name != *name),
        }
    }
    spec
}

/// Issues `grants` at [`NOW_MS`], revoking those revoked; their ids.
fn issue_granted(fx: &mut Fixture, grants: &[Granted]) -> Vec<GrantId> {
    let mut ids = Vec::new();
    for grant in grants {
        let base = spec(fx, ENTERPRISES, &["name", "operating_address"], grant.retention);
        let (valid_from_ms, valid_until_ms) = match grant.standing {
            Standing::NotYetValid => (NOW_MS + DAY_MS, NOW_MS + 30 * DAY_MS),
            Standing::Ended => (NOW_MS - DAY_MS, NOW_MS),
            Standing::InForce | Standing::Revoked => (base.valid_from_ms, base.valid_until_ms),
        };
        let id = fx.grant(GrantSpec { assessment: grant.assessment, valid_from_ms, valid_until_ms, ..base });
        if matches!(grant.standing, Standing::Revoked) {
            revoke(fx, id, NOW_MS);
        }
        ids.push(id);
    }
    ids
}

#[test]
fn a_new_version_keeps_the_protection_of_the_grants_in_force() {
    for case in REPUBLISH_CASES {
        let mut fx = Fixture::new();
        let grants = issue_granted(&mut fx, case.grants);
        let before = fx.state.clone();
        let spec = republished(case);
        let outcome = apply(&mut fx.state, &fx.market.key, Command::PublishDataset(spec.clone()));
        let name = case.name;
        match (outcome, case.expected) {
            (Ok(Applied::Done), Ok(())) => {
                let registry = &fx.state.datasets[ENTERPRISES];
                assert_eq!((registry.version, &registry.fields), (2, &spec.fields), "{name}");
                assert_eq!(fx.state.grants, before.grants, "{name}: grants untouched");
            }
            (Err(rejection), Err((code, named))) => {
                assert_eq!(rejection.code, code, "{name}: {}", rejection.detail);
                if code != RejectionCode::InvalidArgument {
                    let prefix = format!("grant {} ", grants[named]);
                    assert!(rejection.detail.starts_with(&prefix), "{name}: {}", rejection.detail);
                }
                assert_eq!(fx.state, after_rejection(&before, &fx.state), "{name}");
            }
            (outcome, expected) => panic!("{name}: {outcome:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn a_dataset_is_held_only_to_its_own_grants() {
    let mut fx = Fixture::new();
    // A residents' grant without an assessment covers nothing of the
    // enterprises', whatever their new version makes sensitive; a new
    // dataset has no grant at all.
    fx.grant(spec(&fx, RESIDENTS, &["name"], YEAR));
    let sensitive_everywhere = DatasetSpec {
        fields: enterprise_dataset()
            .fields
            .into_iter()
            .map(|field| civmesh_policy::model::FieldSpec { class: SENSITIVE, ..field })
            .collect(),
        ..enterprise_dataset()
    };
    let fresh = DatasetSpec { id: "market-supervision/inspections".into(), ..sensitive_everywhere.clone() };
    apply(&mut fx.state, &fx.market.key, Command::PublishDataset(sensitive_everywhere)).unwrap();
    apply(&mut fx.state, &fx.market.key, Command::PublishDataset(fresh)).unwrap();
}

#[test]
fn withdrawing_only_the_separate_sensitive_consent_is_due_at_holders_of_grants_releasing_a_sensitive_field() {
    let mut fx = Fixture::new();
    let by_consent = |fx: &Fixture, fields: &[&str]| GrantSpec {
        legal_basis: LegalBasis::Consent,
        assessment: Some(ASSESSMENT),
        ..spec(fx, RESIDENTS, fields, Some(CONSENTED))
    };
    let names = fx.grant(by_consent(&fx, &["name"]));
    let sensitive = fx.grant(by_consent(&fx, &["name", "lives_alone_80_plus"]));
    let record = |fx: &mut Fixture, given: bool, covers_sensitive: bool, at_ms: u64| {
        let command = consent_command(fx, subject(5), given, covers_sensitive);
        apply_at(&mut fx.state, &fx.civil.key, command, at_ms).unwrap();
    };
    record(&mut fx, true, true, NOW_MS);
    let holder = copy(&fx.jingansi.key);
    for grant in [names, sensitive] {
        release(&mut fx, &holder, grant, &[subject(5)], RELEASE_MS).unwrap();
    }
    let withdrawn = |fx: &Fixture, grant: GrantId| {
        holding(&fx.state, grant, &holder).unwrap().withdrawals_due.keys().copied().collect::<Vec<_>>()
    };
    // Still consenting, but no longer to the sensitive fields (Art. 29).
    record(&mut fx, true, false, RELEASE_MS + HOUR_MS);
    assert_eq!(
        withdrawn(&fx, sensitive),
        vec![subject(5)],
        "a grant releasing a sensitive field relied on it"
    );
    assert_eq!(withdrawn(&fx, names), vec![], "a grant of names alone did not");
    // Then the whole consent.
    record(&mut fx, false, false, RELEASE_MS + 2 * HOUR_MS);
    assert_eq!(withdrawn(&fx, names), vec![subject(5)]);
    // Giving the separate consent again withdraws nothing.
    let mut again = Fixture::new();
    let only = again.grant(by_consent(&again, &["name", "lives_alone_80_plus"]));
    record(&mut again, true, false, NOW_MS);
    let street = copy(&again.jingansi.key);
    // Without the separate consent only the name is released.
    let name_only = AccessOutcome::Permit {
        released: vec![SubjectRelease { subject: subject(5), fields: vec!["name".into()] }],
    };
    let command = access(&again.state, Kind::Query, &street, only, name_only, RELEASE_MS);
    apply_as_owner(&mut again, RESIDENTS, command, RELEASE_MS).unwrap();
    record(&mut again, true, true, RELEASE_MS + HOUR_MS);
    assert!(holding(&again.state, only, &again.jingansi.key).unwrap().withdrawals_due.is_empty());
}
