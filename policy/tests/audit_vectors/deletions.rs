//! The deletion vectors: grants with and without retention and impact
//! assessments, releases, a consent withdrawn, a revocation, a grant's
//! window ending, and holder nodes' deletion receipts (`ConfirmDeletion`),
//! accepted and refused, under a final checkpoint; then tampered copies
//! the replay catches with the holdings it keeps.

use civmesh_certs::{NodeKey, SignedEnvelope};
use civmesh_policy::deletion::{
    DeletionCause, DeletionReceipt, SubjectsCommitment, DELETION_WITHIN_MS_MAX, RETENTION_KEEP_MS_MAX,
    RETENTION_MS_MIN,
};
use civmesh_policy::fixtures::RETENTION;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::state::COMMAND_SKEW_MS_MAX;
use civmesh_policy::{AccessOutcome, AccessRecord, GrantSpec, QueryHeader, Retention, SubjectRelease};

use super::*;

/// How long after [`NOW_MS`] grant 2, which states no retention, ends.
const SHORT_GRANT_MS: u64 = 60_000;
/// The entry time of the bundle's last commands: after grant 2 ended.
const LATER_MS: u64 = NOW_MS + 2 * SHORT_GRANT_MS;
/// The subject whose residents' record is released, then withdrawn.
const RESIDENT: u8 = 12;

// Where some commands are in the deletion bundle (`05`).
/// The sensitive grant naming no impact assessment.
const NO_ASSESSMENT: u64 = 17;
/// The release under grant 2, the one without retention.
const SHORT_RELEASE: u64 = 26;
/// The resident's consent withdrawn.
const WITHDRAWAL: u64 = 27;
/// Grant 1 revoked, its end's receipt, and the receipt again.
const REVOCATION: u64 = 45;
const END_RECEIPT: u64 = 46;
const END_RECEIPT_AGAIN: u64 = 47;
/// Grant 2's end's receipt, the first command at [`LATER_MS`].
const SHORT_END_RECEIPT: u64 = 50;
/// The cosignature that makes the checkpoint over leaf 10 final.
const FINAL_COSIGNATURE: u64 = 53;

/// Resident `n`'s hash in the street's queries at civil affairs.
fn resident_hash(fx: &Fixture, n: u8) -> SubjectKeyHash {
    lookup(n).hash(&fx.civil.org, &fx.jingansi.org)
}

/// The sensitive grant of residents to the street, under consent: copies
/// kept as long as a grant allows, deleted as soon.
fn sensitive_grant(fx: &Fixture) -> GrantSpec {
    GrantSpec {
        legal_basis: LegalBasis::Consent,
        retention: Some(Retention { keep_ms: RETENTION_KEEP_MS_MAX, delete_within_ms: RETENTION_MS_MIN }),
        assessment: Some(ASSESSMENT),
        ..grant_spec(RESIDENTS, &fx.jingansi.org, &["name", "lives_alone_80_plus"], "elderly-care")
    }
}

/// Grant 2: the enterprises' names, for a minute, with no retention
/// (no personal field needs one).
fn short_grant(fx: &Fixture) -> GrantSpec {
    GrantSpec {
        valid_until_ms: NOW_MS + SHORT_GRANT_MS,
        retention: None,
        ..grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection")
    }
}

/// A permit releasing `fields` of `subject` to `requester` under `grant`.
fn release(
    requester: &NodeKey,
    (dataset, purpose): (&str, &str),
    subject: SubjectKeyHash,
    fields: &[&str],
    grant: u64,
) -> Command {
    let fields: Vec<String> = fields.iter().map(|field| field.to_string()).collect();
    let header = QueryHeader {
        dataset: dataset.into(),
        subjects: vec![subject],
        fields: fields.clone(),
        purpose: purpose.into(),
        grant: Some(grant),
    };
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(requester, &header, NOW_MS).unwrap(),
        outcome: AccessOutcome::Permit { released: vec![SubjectRelease { subject, fields }] },
        decided_at_ms: NOW_MS,
    })
}

/// Resident `n`'s consent to the street's elderly care, given or withdrawn.
fn consent(fx: &Fixture, n: u8, given: bool) -> Command {
    Command::RecordConsent {
        subject: resident_hash(fx, n),
        dataset: RESIDENTS.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "elderly-care".into(),
        given,
        covers_sensitive: true,
        channel: "street_window".into(),
    }
}

/// A receipt for `cause` under `grant`, deleting `subjects` in this order.
fn receipt(grant: u64, cause: DeletionCause, subjects: &[SubjectKeyHash]) -> Command {
    let mut commitment = SubjectsCommitment::default();
    for subject in subjects {
        commitment.add(&subject.0);
    }
    Command::ConfirmDeletion(DeletionReceipt {
        grant,
        cause,
        records_deleted: subjects.len() as u64,
        subjects_commitment: commitment.0,
        deleted_at_ms: NOW_MS,
        earliest_held_ms: None,
    })
}

/// One command of the bundle: who signs it, its entry time, and the code
/// it is refused with (`None`: accepted).
struct Step<'a> {
    key: &'a NodeKey,
    at_ms: u64,
    command: Command,
    refused: Option<RejectionCode>,
}

fn step(key: &NodeKey, command: Command, refused: Option<RejectionCode>) -> Step<'_> {
    Step { key, at_ms: NOW_MS, command, refused }
}

/// Commands 16 to 27: the residents published; grants refused for want of
/// an assessment or a retention, or with one out of bounds; grants 2 (no
/// retention, a minute long) and 3 (sensitive, consent); a consent, a
/// release under each, the consent withdrawn.
fn grants_and_releases(fx: &Fixture) -> Vec<Step<'_>> {
    use RejectionCode::*;
    let (market, civil, street) = (&fx.market.key, &fx.civil.key, &fx.jingansi.key);
    let other = &fx.nanjingxilu.org;
    let no_assessment = GrantSpec { assessment: None, ..sensitive_grant(fx) };
    let flag_only = GrantSpec {
        retention: None,
        assessment: None,
        ..grant_spec(RESIDENTS, &fx.jingansi.org, &["lives_alone_80_plus"], "elderly-care")
    };
    let names = grant_spec(ENTERPRISES, other, &["name"], "inspection");
    let too_short = GrantSpec { retention: Some(Retention { keep_ms: 999, ..RETENTION }), ..names.clone() };
    let too_slow = GrantSpec {
        retention: Some(Retention { delete_within_ms: DELETION_WITHIN_MS_MAX + 1, ..RETENTION }),
        ..names
    };
    let phone =
        GrantSpec { retention: None, ..grant_spec(ENTERPRISES, other, &["legal_rep_phone"], "inspection") };
    let resident = resident_hash(fx, RESIDENT);
    vec![
        step(civil, Command::PublishDataset(resident_dataset()), None),
        step(civil, Command::IssueGrant(no_assessment), Some(AssessmentMissing)),
        step(civil, Command::IssueGrant(flag_only), Some(RetentionMissing)),
        step(market, Command::IssueGrant(too_short), Some(RetentionMissing)),
        step(market, Command::IssueGrant(too_slow), Some(RetentionMissing)),
        step(market, Command::IssueGrant(phone), Some(RetentionMissing)),
        step(market, Command::IssueGrant(short_grant(fx)), None),
        step(civil, Command::IssueGrant(sensitive_grant(fx)), None),
        step(civil, consent(fx, RESIDENT, true), None),
        step(
            civil,
            release(street, (RESIDENTS, "elderly-care"), resident, &["lives_alone_80_plus", "name"], 3),
            None,
        ),
        step(
            market,
            release(street, (ENTERPRISES, "inspection"), subject_hash(RESIDENT), &["name"], 2),
            None,
        ),
        step(civil, consent(fx, RESIDENT, false), None),
    ]
}

/// Commands 28 to 50: the street's receipts, and one by a node that holds
/// nothing; withdrawals that make nothing due; grant 1 revoked; grant 2's
/// end's receipt once its minute is over.
fn receipts(fx: &Fixture) -> Vec<Step<'_>> {
    use DeletionCause::*;
    use RejectionCode::*;
    let (market, civil, street) = (&fx.market.key, &fx.civil.key, &fx.jingansi.key);
    let withdrawn = |subject| ConsentWithdrawn { subject };
    let resident = resident_hash(fx, RESIDENT);
    let retention = |received_before_ms| RetentionEnded { received_before_ms };
    let released_under_1: Vec<SubjectKeyHash> = [0, 2, 4, 5, 6, 7].map(subject_hash).to_vec();
    let late = || {
        let receipt = deletion_receipt(receipt(1, GrantEnded, &[]));
        Command::ConfirmDeletion(DeletionReceipt {
            deleted_at_ms: NOW_MS + COMMAND_SKEW_MS_MAX + 1,
            ..receipt
        })
    };
    // Deleted at the latest time a receipt may state.
    let end_receipt = Command::ConfirmDeletion(DeletionReceipt {
        deleted_at_ms: NOW_MS + COMMAND_SKEW_MS_MAX,
        ..deletion_receipt(receipt(1, GrantEnded, &released_under_1))
    });
    let enterprise_consent = |given| Command::RecordConsent {
        subject: subject_hash(RESIDENT),
        dataset: ENTERPRISES.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "inspection".into(),
        given,
        covers_sensitive: false,
        channel: "online_form".into(),
    };
    vec![
        step(street, receipt(3, withdrawn(resident), &[resident]), None),
        step(street, receipt(3, withdrawn(resident), &[]), Some(DeletionNotDue)),
        step(civil, consent(fx, RESIDENT + 2, false), None),
        step(street, receipt(3, withdrawn(resident_hash(fx, RESIDENT + 2)), &[]), Some(DeletionNotDue)),
        step(market, enterprise_consent(true), None),
        step(market, enterprise_consent(false), None),
        step(street, receipt(1, withdrawn(subject_hash(RESIDENT)), &[]), Some(DeletionNotDue)),
        step(street, receipt(2, GrantEnded, &[]), Some(DeletionNotDue)),
        step(street, receipt(2, retention(NOW_MS), &[]), Some(DeletionNotDue)),
        step(street, receipt(2, retention(NOW_MS + 1), &[]), Some(DeletionNotDue)),
        step(&fx.nanjingxilu.key, receipt(1, GrantEnded, &[]), Some(DeletionNotHolder)),
        step(street, receipt(99, GrantEnded, &[]), Some(GrantUnknown)),
        step(street, late(), Some(InvalidArgument)),
        step(street, receipt(1, retention(NOW_MS + 1), &[]), Some(InvalidArgument)),
        step(street, receipt(1, retention(NOW_MS), &[]), None),
        step(street, receipt(1, retention(NOW_MS), &[]), Some(DeletionDuplicate)),
        step(market, by("王芳", receipt(1, GrantEnded, &[])), Some(NotAuthorised)),
        step(market, Command::RevokeGrant { grant_id: 1, reason: "inspections ended".into() }, None),
        step(street, end_receipt, None),
        step(street, receipt(1, GrantEnded, &[]), Some(DeletionDuplicate)),
        step(street, receipt(1, withdrawn(subject_hash(RESIDENT)), &[]), Some(DeletionDuplicate)),
        step(street, late(), Some(InvalidArgument)),
        Step { at_ms: LATER_MS, ..step(street, receipt(2, GrantEnded, &[subject_hash(RESIDENT)]), None) },
    ]
}

fn deletion_receipt(command: Command) -> DeletionReceipt {
    match command {
        Command::ConfirmDeletion(receipt) => receipt,
        other => panic!("not a receipt: {other:?}"),
    }
}

/// `log` and the deletion commands (16 to 50), then a denial (51, leaf
/// 10) and a final checkpoint over it (52, 53): its root binds every
/// outcome before it.
fn with_deletions(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut more = RecordedLog {
        state: log.state.clone(),
        commands: log.commands.clone(),
        leaves: log.leaves.clone(),
        made_final: Vec::new(),
    };
    let mut steps = grants_and_releases(fx);
    steps.extend(receipts(fx));
    for (sequence, step) in (16..).zip(steps) {
        let envelope = SignedEnvelope::sign(step.key, &step.command, step.at_ms).unwrap();
        let outcome = more.state.clone().apply(&envelope, step.at_ms).map_err(|rejection| rejection.code);
        assert_eq!(outcome.err(), step.refused, "command {sequence}: {:?}", step.command);
        assert_eq!(more.record_envelope_at(&envelope, step.at_ms), step.refused.is_none());
    }
    assert_eq!(more.commands.len() as u64, SHORT_END_RECEIPT);
    let holdings = &more.state.holdings;
    assert!(holdings[&1][&fx.jingansi.key.node_id()].ended_deleted_at_ms.is_some());
    assert!(holdings[&3][&fx.jingansi.key.node_id()].withdrawals_due.is_empty());
    let later = |more: &mut RecordedLog, key: &NodeKey, command: Command| {
        more.record_envelope_at(&SignedEnvelope::sign(key, &command, LATER_MS).unwrap(), LATER_MS)
    };
    assert!(later(&mut more, &fx.market.key, access(&fx.jingansi.key, 13, None, false)));
    let body = CheckpointBody { tree_size: 11, root: more.root_at(11), log_index: FINAL_COSIGNATURE + 1 };
    assert!(later(&mut more, &fx.hub.key, Command::CosignCheckpoint(body.clone())));
    assert!(later(&mut more, &fx.market.key, Command::CosignCheckpoint(body)));
    assert_eq!(more.made_final, [11]);
    assert_eq!(more.commands.len() as u64, FINAL_COSIGNATURE);
    more
}

/// The deletion bundle, and copies whose flags, commands or entry times
/// the replay of the holdings contradicts.
pub(super) fn deletion_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let deletions = with_deletions(fx, log);
    let summary = Summary {
        commands: FINAL_COSIGNATURE,
        access_entries: 11,
        leaves: 11,
        permits: 8,
        denials: 3,
        checkpoints: 3,
        anchored_leaves: 11,
        root: hex_root(&deletions, 11),
        ..genuine_summary(log)
    };
    let genuine = made(
        "05-deletions.bundle",
        "00, then: the residents published; grants refused for want of an impact assessment (17), of \
         a retention (18: a sensitive field, 21: a personal one) or with one out of bounds (19, 20); \
         grant 2 (no retention, a minute long) and grant 3 (sensitive, under consent, kept as long and \
         deleted as soon as a retention allows) issued; a consent, a release under each grant, the \
         consent withdrawn (27); the street's receipt for the withdrawn subject (28); refused \
         receipts: again (29), for a withdrawal of a consent never given (30, 31), of one grant 1 \
         does not rely on (32 to 34), for grant 2 before its end (35), for its retention, which it \
         has none of (36, 37), by a node that holds nothing (38), for no grant (39), deleted in the \
         future (40), for copies received in the future (41); a retention receipt (42) and again \
         (43); a wrapped receipt (44); grant 1 revoked (45), its end's receipt (46), again (47), a \
         withdrawal's after it (48), one deleted in the future (49); two minutes later, grant 2's \
         end's receipt (50), a denial and a final checkpoint at 11",
        encoded(&deletions, deletions.commands.clone()),
        Expect::Verified(summary),
    );
    let mut vectors = vec![genuine];
    vectors.extend(tampered_deletions(&deletions));
    vectors
}

type Tamper = Box<dyn Fn(&mut Vec<ArchivedCommand>)>;

/// `deletions` with command `sequence` left out, the rest renumbered.
fn dropped(sequence: u64) -> Tamper {
    Box::new(move |c| {
        c.remove(index(sequence));
        renumber(c);
    })
}

fn replay_failed(kind: FailureKind, sequence: u64) -> Expect {
    failed(kind, Some(sequence), None, None)
}

/// Copies of the deletion bundle, each caught at its first failure.
fn tampered_deletions(deletions: &RecordedLog) -> Vec<Made> {
    use FailureKind::*;
    let cases: [(&'static str, &'static str, Tamper, Expect); 8] = [
        (
            "39-deletion-duplicate-marked-accepted.bundle",
            "05 with command 47, a second receipt for grant 1's end, marked accepted",
            Box::new(|c| c[index(END_RECEIPT_AGAIN)].accepted = true),
            replay_failed(ReplayRejected, END_RECEIPT_AGAIN),
        ),
        (
            "40-deletion-receipt-marked-rejected.bundle",
            "05 with command 46, the receipt for grant 1's end, marked rejected",
            Box::new(|c| c[index(END_RECEIPT)].accepted = false),
            replay_failed(ReplayAccepted, END_RECEIPT),
        ),
        (
            "41-assessment-missing-marked-accepted.bundle",
            "05 with command 17, a sensitive grant naming no impact assessment, marked accepted",
            Box::new(|c| c[index(NO_ASSESSMENT)].accepted = true),
            replay_failed(ReplayRejected, NO_ASSESSMENT),
        ),
        (
            "42-revocation-dropped.bundle",
            "05 with grant 1's revocation (45) left out, renumbered: the receipt for its end is not due",
            dropped(REVOCATION),
            replay_failed(ReplayRejected, END_RECEIPT - 1),
        ),
        (
            "43-withdrawal-dropped.bundle",
            "05 with the consent's withdrawal (27) left out, renumbered: the receipt for it is not due",
            dropped(WITHDRAWAL),
            replay_failed(ReplayRejected, WITHDRAWAL),
        ),
        (
            "44-release-dropped.bundle",
            "05 with the release under grant 2 (26) left out, renumbered: the street holds nothing \
             under grant 2, so its receipt for the grant's end is not a holder's",
            dropped(SHORT_RELEASE),
            replay_failed(ReplayRejected, SHORT_END_RECEIPT - 1),
        ),
        (
            "45-grant-end-receipt-early.bundle",
            "05 with command 50, the receipt for grant 2's end, 1 ms before that end",
            Box::new(|c| c[index(SHORT_END_RECEIPT)].entry_time_ms = NOW_MS + SHORT_GRANT_MS - 1),
            replay_failed(ReplayRejected, SHORT_END_RECEIPT),
        ),
        (
            "46-grant-end-receipt-at-the-end.bundle",
            "05 with command 50, the receipt for grant 2's end, at that end: accepted, but the \
             checkpoint binds its entry time",
            Box::new(|c| c[index(SHORT_END_RECEIPT)].entry_time_ms = NOW_MS + SHORT_GRANT_MS),
            failed(CheckpointRootMismatch, Some(FINAL_COSIGNATURE), None, Some(10)),
        ),
    ];
    cases
        .into_iter()
        .map(|(file, made_by, tamper, expect)| made(file, made_by, tampered(deletions, &*tamper), expect))
        .collect()
}
