//! The deletion vectors: grants with and without retention and impact
//! assessments, releases, a consent withdrawn, a revocation, a grant's
//! window ending, and holder nodes' deletion receipts (`ConfirmDeletion`),
//! accepted and refused (for what they delete, when they say they deleted
//! it, and the earliest copy a holder says it still keeps), under a final
//! checkpoint; then tampered copies the replay catches with the holdings it
//! keeps.

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

/// How long after [`NOW_MS`] grant 2, which states no retention, ends
/// (and grant 4, issued the same).
const SHORT_GRANT_MS: u64 = 60_000;
/// When grants 2 and 4 end.
const SHORT_END_MS: u64 = NOW_MS + SHORT_GRANT_MS;
/// The entry time of the bundle's last commands: after grants 2 and 4 ended.
const LATER_MS: u64 = NOW_MS + 2 * SHORT_GRANT_MS;
/// The cutoff of the first retention receipt under grant 1: before [`NOW_MS`].
const EARLY_CUTOFF_MS: u64 = NOW_MS - 1_000;
/// The clock skew a receipt's times are allowed.
const SKEW_MS: u64 = COMMAND_SKEW_MS_MAX;
/// The subject whose residents' record is released, then withdrawn.
const RESIDENT: u8 = 12;

// Where some commands are in the deletion bundle (`05`).
/// The sensitive grant naming no impact assessment.
const NO_ASSESSMENT: u64 = 17;
/// The release under grant 2, the one without retention.
const SHORT_RELEASE: u64 = 26;
/// The resident's consent withdrawn.
const WITHDRAWAL: u64 = 27;
/// The street's receipt for the withdrawn subject, dated as early as the
/// withdrawal and the clock skew allow.
const WITHDRAWAL_RECEIPT: u64 = 30;
/// A retention receipt naming an earliest copy held after its entry time
/// and the clock skew.
const EARLIEST_TOO_LATE: u64 = 47;
/// Grant 1 revoked, its end's receipt, and the receipt again.
const REVOCATION: u64 = 54;
const END_RECEIPT: u64 = 55;
const END_RECEIPT_AGAIN: u64 = 56;
/// Grant 2's end's receipt, the first command at [`LATER_MS`].
const SHORT_END_RECEIPT: u64 = 61;
/// Grant 4's end's receipt dated before the release that followed its end.
const BEFORE_LAST_RELEASE: u64 = 65;
/// Grant 4's end's receipt, the last receipt.
const LAST_RECEIPT: u64 = 66;
/// The cosignature that makes the checkpoint over leaf 11 final.
const FINAL_COSIGNATURE: u64 = 69;

/// Resident `n`'s hash in the street's queries at civil affairs.
pub(super) fn resident_hash(fx: &Fixture, n: u8) -> SubjectKeyHash {
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

/// Grants 2 and 4: the enterprises' names, for a minute, with no retention
/// (no personal field needs one).
fn short_grant(fx: &Fixture) -> GrantSpec {
    GrantSpec {
        valid_until_ms: SHORT_END_MS,
        retention: None,
        ..grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection")
    }
}

/// A permit releasing `fields` of `subject` to `requester` under `grant`.
pub(super) fn release(
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
pub(super) fn receipt(grant: u64, cause: DeletionCause, subjects: &[SubjectKeyHash]) -> Command {
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

/// `step` at [`LATER_MS`].
fn later(step: Step<'_>) -> Step<'_> {
    Step { at_ms: LATER_MS, ..step }
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

/// `command`, a receipt, deleted at `deleted_at_ms` and naming
/// `earliest_held_ms` as the earliest copy its holder still keeps.
fn dated(command: Command, deleted_at_ms: u64, earliest_held_ms: Option<u64>) -> Command {
    Command::ConfirmDeletion(DeletionReceipt { deleted_at_ms, earliest_held_ms, ..deletion_receipt(command) })
}

fn deletion_receipt(command: Command) -> DeletionReceipt {
    match command {
        Command::ConfirmDeletion(receipt) => receipt,
        other => panic!("not a receipt: {other:?}"),
    }
}

fn retention(received_before_ms: u64) -> DeletionCause {
    DeletionCause::RetentionEnded { received_before_ms }
}

/// A receipt for grant 1's end, deleted 1 ms later than its entry time
/// and the clock skew allow.
fn late(at_ms: u64) -> Command {
    dated(receipt(1, DeletionCause::GrantEnded, &[]), at_ms + SKEW_MS + 1, None)
}

/// Commands 28 to 45: the street's receipts for the withdrawn subject,
/// dated 1 ms before the withdrawal and the skew allow (refused), naming an
/// earliest copy held, which only a retention receipt may (refused), then
/// dated at that bound (accepted); and receipts refused: again, for
/// withdrawals that make nothing due (one dated 0: a withdrawal not due
/// bounds nothing), for grant 2 before its end (one
/// naming an earliest copy held: that is checked before the cause; one
/// dated before its entry time and the skew: the time is checked first),
/// for grant 2's retention, which it has none of, by a node that holds
/// nothing, for no grant, deleted in the future, for copies received in
/// the future.
fn receipts_refused(fx: &Fixture) -> Vec<Step<'_>> {
    use DeletionCause::*;
    use RejectionCode::*;
    let (market, civil, street) = (&fx.market.key, &fx.civil.key, &fx.jingansi.key);
    let withdrawn = |subject| ConsentWithdrawn { subject };
    let resident = resident_hash(fx, RESIDENT);
    let enterprise_consent = |given| Command::RecordConsent {
        subject: subject_hash(RESIDENT),
        dataset: ENTERPRISES.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "inspection".into(),
        given,
        covers_sensitive: false,
        channel: "online_form".into(),
    };
    // The withdrawal's entry time is NOW_MS: its deletion is due a second
    // (grant 3's time to delete) after it.
    let withdrawal_receipt = |deleted_at_ms, earliest_held_ms| {
        dated(receipt(3, withdrawn(resident), &[resident]), deleted_at_ms, earliest_held_ms)
    };
    vec![
        step(street, withdrawal_receipt(NOW_MS - SKEW_MS - 1, None), Some(InvalidArgument)),
        step(street, withdrawal_receipt(NOW_MS - SKEW_MS, Some(NOW_MS)), Some(InvalidArgument)),
        step(street, withdrawal_receipt(NOW_MS - SKEW_MS, None), None),
        step(street, receipt(3, withdrawn(resident), &[]), Some(DeletionNotDue)),
        step(civil, consent(fx, RESIDENT + 2, false), None),
        // Dated 0: no withdrawal bounds it, so it is refused as not due.
        step(
            street,
            dated(receipt(3, withdrawn(resident_hash(fx, RESIDENT + 2)), &[]), 0, None),
            Some(DeletionNotDue),
        ),
        step(market, enterprise_consent(true), None),
        step(market, enterprise_consent(false), None),
        step(street, receipt(1, withdrawn(subject_hash(RESIDENT)), &[]), Some(DeletionNotDue)),
        step(street, receipt(2, GrantEnded, &[]), Some(DeletionNotDue)),
        step(street, dated(receipt(2, GrantEnded, &[]), NOW_MS, Some(NOW_MS)), Some(InvalidArgument)),
        step(street, dated(receipt(2, GrantEnded, &[]), NOW_MS - SKEW_MS - 1, None), Some(InvalidArgument)),
        step(street, dated(receipt(2, retention(NOW_MS), &[]), NOW_MS, Some(0)), Some(DeletionNotDue)),
        step(street, receipt(2, retention(NOW_MS + 1), &[]), Some(DeletionNotDue)),
        step(&fx.nanjingxilu.key, receipt(1, GrantEnded, &[]), Some(DeletionNotHolder)),
        step(street, receipt(99, GrantEnded, &[]), Some(GrantUnknown)),
        step(street, late(NOW_MS), Some(InvalidArgument)),
        step(street, receipt(1, retention(NOW_MS + 1), &[]), Some(InvalidArgument)),
    ]
}

/// Commands 46 to 53: retention receipts under grant 1, the earliest copy
/// held before the cutoff (46) or after the entry time and the skew (47);
/// one at every bound, accepted (48); one deleted before its cutoff (49);
/// one accepted (50), again (51), again naming an earliest copy before the
/// cutoff (52); a wrapped receipt (53).
fn retention_receipts(fx: &Fixture) -> Vec<Step<'_>> {
    use RejectionCode::*;
    let street = &fx.jingansi.key;
    let kept = |received_before_ms, deleted_at_ms, earliest_held_ms| {
        dated(receipt(1, retention(received_before_ms), &[]), deleted_at_ms, earliest_held_ms)
    };
    let early = |earliest_held_ms| kept(EARLY_CUTOFF_MS, NOW_MS, Some(earliest_held_ms));
    // Nothing was received before the cutoff: the street deleted nothing.
    let at_the_bounds =
        dated(receipt(1, retention(EARLY_CUTOFF_MS), &[]), EARLY_CUTOFF_MS - SKEW_MS, Some(NOW_MS + SKEW_MS));
    vec![
        step(street, early(EARLY_CUTOFF_MS - 1), Some(InvalidArgument)),
        step(street, early(NOW_MS + SKEW_MS + 1), Some(InvalidArgument)),
        step(street, at_the_bounds, None),
        step(street, kept(NOW_MS, NOW_MS - SKEW_MS - 1, None), Some(InvalidArgument)),
        step(street, kept(NOW_MS, NOW_MS + SKEW_MS, Some(NOW_MS)), None),
        step(street, kept(NOW_MS, NOW_MS, None), Some(DeletionDuplicate)),
        step(street, kept(NOW_MS, NOW_MS, Some(NOW_MS - 1)), Some(InvalidArgument)),
        step(&fx.market.key, by("王芳", receipt(1, DeletionCause::GrantEnded, &[])), Some(NotAuthorised)),
    ]
}

/// Commands 54 to 66: grant 1 revoked, its end's receipt, again, a
/// withdrawal's after it, one naming an earliest copy held (that is
/// checked before the duplicate), one deleted in the future; grant 4
/// issued; two
/// minutes later, grant 2's end's receipt deleted as early as allowed, and
/// 1 ms earlier (after its end's receipt: the time is checked first); one
/// for grant 3, which has not ended, dated before its entry time and the
/// skew (the time is checked first); a release under grant 4 decided
/// before its end, and grant 4's end's receipt dated before that release,
/// then as early as allowed.
fn end_receipts(fx: &Fixture) -> Vec<Step<'_>> {
    use DeletionCause::*;
    use RejectionCode::*;
    let (market, street) = (&fx.market.key, &fx.jingansi.key);
    let released_under_1: Vec<SubjectKeyHash> = [0, 2, 4, 5, 6, 7].map(subject_hash).to_vec();
    // Deleted at the latest time a receipt may state.
    let end_receipt = dated(receipt(1, GrantEnded, &released_under_1), NOW_MS + SKEW_MS, None);
    let short_end =
        |deleted_at_ms| dated(receipt(2, GrantEnded, &[subject_hash(RESIDENT)]), deleted_at_ms, None);
    let last_end =
        |deleted_at_ms| dated(receipt(4, GrantEnded, &[subject_hash(RESIDENT)]), deleted_at_ms, None);
    let late_release =
        match release(street, (ENTERPRISES, "inspection"), subject_hash(RESIDENT), &["name"], 4) {
            Command::RecordAccess(record) => {
                Command::RecordAccess(AccessRecord { decided_at_ms: SHORT_END_MS - 1, ..record })
            }
            other => panic!("not a release: {other:?}"),
        };
    vec![
        step(market, Command::RevokeGrant { grant_id: 1, reason: "inspections ended".into() }, None),
        step(street, end_receipt, None),
        step(street, receipt(1, GrantEnded, &[]), Some(DeletionDuplicate)),
        step(
            street,
            receipt(1, ConsentWithdrawn { subject: subject_hash(RESIDENT) }, &[]),
            Some(DeletionDuplicate),
        ),
        step(street, dated(receipt(1, GrantEnded, &[]), NOW_MS, Some(NOW_MS)), Some(InvalidArgument)),
        step(street, late(NOW_MS), Some(InvalidArgument)),
        step(market, Command::IssueGrant(short_grant(fx)), None),
        later(step(street, short_end(SHORT_END_MS - SKEW_MS), None)),
        later(step(street, short_end(SHORT_END_MS - SKEW_MS - 1), Some(InvalidArgument))),
        later(step(
            street,
            dated(receipt(3, GrantEnded, &[]), LATER_MS - SKEW_MS - 1, None),
            Some(InvalidArgument),
        )),
        later(step(market, late_release, None)),
        later(step(street, last_end(LATER_MS - SKEW_MS - 1), Some(InvalidArgument))),
        later(step(street, last_end(LATER_MS - SKEW_MS), None)),
    ]
}

/// `log` and the deletion commands (16 to 66), then a denial (67, leaf
/// 11) and a final checkpoint over it (68, 69): its root binds every
/// outcome before it.
fn with_deletions(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut steps = grants_and_releases(fx);
    steps.extend(receipts_refused(fx));
    steps.extend(retention_receipts(fx));
    steps.extend(end_receipts(fx));
    let mut more = continued(log, steps);
    assert_eq!(more.commands.len() as u64, LAST_RECEIPT);
    let street = fx.jingansi.key.node_id();
    let holdings = &more.state.holdings;
    for grant in [1, 2, 4] {
        assert!(holdings[&grant][&street].ended_deleted_at_ms.is_some(), "grant {grant}");
    }
    assert_eq!(holdings[&4][&street].last_release_ms, LATER_MS);
    assert!(holdings[&3][&street].withdrawals_due.is_empty());
    let last = (&fx.market.key, access(&fx.jingansi.key, 13, None, false));
    close_with_checkpoint(&mut more, LATER_MS, last, [&fx.hub.key, &fx.market.key], (12, FINAL_COSIGNATURE));
    more
}

/// The deletion bundle, and copies whose flags, commands or entry times
/// the replay of the holdings contradicts.
pub(super) fn deletion_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let deletions = with_deletions(fx, log);
    let summary = Summary {
        commands: FINAL_COSIGNATURE,
        access_entries: 12,
        leaves: 12,
        permits: 9,
        denials: 3,
        checkpoints: 3,
        anchored_leaves: 12,
        root: hex_root(&deletions, 12),
        ..genuine_summary(log)
    };
    let genuine = made(
        "05-deletions.bundle",
        "00, then: the residents published; grants refused for want of an impact assessment (17), of \
         a retention (18: a sensitive field, 21: a personal one) or with one out of bounds (19, 20); \
         grant 2 (no retention, a minute long) and grant 3 (sensitive, under consent, kept as long and \
         deleted as soon as a retention allows) issued; a consent, a release under each grant, the \
         consent withdrawn (27); the street's receipts for the withdrawn subject: dated 1 ms earlier \
         than the skew before the withdrawal allows (28), naming an earliest copy held, which only a \
         retention receipt may (29), then dated at that bound, accepted (30); refused receipts: again \
         (31), for a withdrawal of a consent never given (32, 33: dated 0, which no withdrawal bounds), of one grant 1 does not rely on (34 \
         to 36), for grant 2 before its end (37), naming an earliest copy held (38: refused for that, \
         not as not due), and dated before its entry time and the skew (39), for its retention, which \
         it has none of (40, 41), by a node that holds nothing (42), for no grant (43), deleted in the \
         future (44), for copies received in the future (45), naming an earliest copy held before the \
         cutoff (46) or after the entry time and the skew (47); a retention receipt at every bound \
         (48: deleted the skew before its cutoff, the earliest copy held the skew after its entry \
         time); one deleted 1 ms earlier than its cutoff allows (49); one naming the earliest copy \
         held at its cutoff and deleted the skew after its entry time (50), again (51), again with an \
         earliest copy before the cutoff (52: refused for that, not as a duplicate); a wrapped receipt \
         (53); grant 1 revoked (54), its end's receipt (55), again (56), a withdrawal's after it (57), \
         again naming an earliest copy held (58: refused for that, not as a duplicate), one deleted in \
         the future (59); grant 4 issued as grant 2 (60); two minutes later, grant 2's end's receipt \
         deleted the skew before that end (61), one 1 ms earlier (62: refused for its time, not as a \
         duplicate), grant 3's end's receipt before that end, dated before its entry time and the skew \
         (63: refused for its time, not as not due), a release under grant 4 decided before its end \
         (64), grant 4's end's receipt dated 1 ms earlier than the skew before that release allows \
         (65), then at that bound (66); a denial and a final checkpoint at 12",
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
    let cases: [(&'static str, &'static str, Tamper, Expect); 10] = [
        (
            "39-deletion-duplicate-marked-accepted.bundle",
            "05 with command 56, a second receipt for grant 1's end, marked accepted",
            Box::new(|c| c[index(END_RECEIPT_AGAIN)].accepted = true),
            replay_failed(ReplayRejected, END_RECEIPT_AGAIN),
        ),
        (
            "40-deletion-receipt-marked-rejected.bundle",
            "05 with command 55, the receipt for grant 1's end, marked rejected",
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
            "05 with grant 1's revocation (54) left out, renumbered: the receipt for its end is not due",
            dropped(REVOCATION),
            replay_failed(ReplayRejected, END_RECEIPT - 1),
        ),
        (
            "43-withdrawal-dropped.bundle",
            "05 with the consent's withdrawal (27) left out, renumbered: the receipt for it (30) is not due",
            dropped(WITHDRAWAL),
            replay_failed(ReplayRejected, WITHDRAWAL_RECEIPT - 1),
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
            "05 with command 61, the receipt for grant 2's end, 1 ms before that end",
            Box::new(|c| c[index(SHORT_END_RECEIPT)].entry_time_ms = SHORT_END_MS - 1),
            replay_failed(ReplayRejected, SHORT_END_RECEIPT),
        ),
        (
            "46-grant-end-receipt-at-the-end.bundle",
            "05 with command 61, the receipt for grant 2's end, at that end: accepted, but the \
             checkpoint binds its entry time",
            Box::new(|c| c[index(SHORT_END_RECEIPT)].entry_time_ms = SHORT_END_MS),
            failed(CheckpointRootMismatch, Some(FINAL_COSIGNATURE), None, Some(11)),
        ),
        (
            "47-receipt-before-release-marked-accepted.bundle",
            "05 with command 65, grant 4's end's receipt dated before the release after that end, \
             marked accepted",
            Box::new(|c| c[index(BEFORE_LAST_RELEASE)].accepted = true),
            replay_failed(ReplayRejected, BEFORE_LAST_RELEASE),
        ),
        (
            "48-earliest-held-too-late-marked-accepted.bundle",
            "05 with command 47, a retention receipt naming an earliest copy held after its entry time \
             and the skew, marked accepted",
            Box::new(|c| c[index(EARLIEST_TOO_LATE)].accepted = true),
            replay_failed(ReplayRejected, EARLIEST_TOO_LATE),
        ),
    ];
    cases
        .into_iter()
        .map(|(file, made_by, tamper, expect)| made(file, made_by, tampered(deletions, &*tamper), expect))
        .collect()
}
