//! The subject-request vectors: subjects' requests (access, correction,
//! deletion) filed by streets (`FileSubjectRequest`) and answered by the
//! datasets' owners (`AnswerSubjectRequest`), accepted and refused, on time
//! and late, one answer made by an operator, under a final checkpoint; then
//! tampered copies the replay catches with the open requests it keeps.

use civmesh_certs::SignedEnvelope;
use civmesh_policy::model::{SubjectKeyHash, REASON_BYTES_MAX};
use civmesh_policy::subject_request::{
    SubjectRequestId, SubjectRequestKind, SubjectRequestOutcome, SubjectRequestSpec,
    SUBJECT_REQUEST_DEADLINE_MS_MAX, SUBJECT_REQUEST_DEADLINE_MS_MIN,
};
use civmesh_policy::{AccessOutcome, AccessRecord, QueryHeader, ReasonCode};

use super::*;

/// When the last answers are logged: 1 ms after request B's deadline, the
/// shortest a request may have.
const LATE_MS: u64 = NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MIN + 1;

/// The requests' ids.
const A: SubjectRequestId = [0xa1; 32];
const B: SubjectRequestId = [0xb2; 32];
const C: SubjectRequestId = [0xc3; 32];
const D: SubjectRequestId = [0xd4; 32];
/// An id nobody filed.
const NEVER_FILED: SubjectRequestId = [0xe5; 32];

// Where some commands are in the subject-request bundle (`06`).
/// Request C filed, by the other street.
const FILED_C: u64 = 19;
/// Request A filed again while open.
const DUPLICATE: u64 = 20;
/// Civil affairs' refusal of the market's request A.
const NOT_OWNER: u64 = 25;
/// The market's refusal of request C, with its reason.
const REFUSED_C: u64 = 34;
/// The cosignature that makes the checkpoint over leaf 9 final.
const FINAL_COSIGNATURE: u64 = 37;

/// A request `id` of `kind` for `subject` in `dataset`, due `deadline_ms`.
fn filing(
    id: SubjectRequestId,
    kind: SubjectRequestKind,
    (dataset, subject): (&str, SubjectKeyHash),
    deadline_ms: u64,
) -> Command {
    Command::FileSubjectRequest(SubjectRequestSpec {
        id,
        kind,
        dataset: dataset.into(),
        subject,
        deadline_ms,
    })
}

fn done(id: SubjectRequestId) -> Command {
    Command::AnswerSubjectRequest { id, outcome: SubjectRequestOutcome::Done }
}

fn refused(id: SubjectRequestId, reason: &str) -> Command {
    Command::AnswerSubjectRequest { id, outcome: SubjectRequestOutcome::Refused { reason: reason.into() } }
}

/// `step` at [`LATE_MS`].
fn late(step: Step<'_>) -> Step<'_> {
    Step { at_ms: LATE_MS, ..step }
}

/// Commands 16 to 24: the residents published; requests filed by the
/// streets, at the bounds of the deadline (B: a day, C: 60 days); refused:
/// request A again while open, again with a deadline a day less 1 ms (the
/// deadline is checked before the id), one 60 days and 1 ms off, one for
/// no dataset with a deadline too short (the dataset is checked first), a
/// filing an operator made (operators answer requests, they do not file
/// them).
fn filings(fx: &Fixture) -> Vec<Step<'_>> {
    use RejectionCode::*;
    use SubjectRequestKind::*;
    let (street, other) = (&fx.jingansi.key, &fx.nanjingxilu.key);
    let enterprise = (ENTERPRISES, subject_hash(1));
    let resident = (RESIDENTS, lookup(2).hash(&fx.civil.org, &fx.jingansi.org));
    let other_enterprise = (ENTERPRISES, lookup(3).hash(&fx.market.org, &fx.nanjingxilu.org));
    let (shortest_ms, longest_ms) =
        (NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MIN, NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MAX);
    let fortnight_ms = NOW_MS + 15 * DAY_MS;
    vec![
        step(&fx.civil.key, Command::PublishDataset(resident_dataset()), None),
        step(street, filing(A, Access, enterprise, fortnight_ms), None),
        step(street, filing(B, Deletion, resident, shortest_ms), None),
        step(other, filing(C, Correction, other_enterprise, longest_ms), None),
        step(street, filing(A, Deletion, enterprise, fortnight_ms), Some(SubjectRequestDuplicate)),
        step(street, filing(A, Access, enterprise, shortest_ms - 1), Some(InvalidArgument)),
        step(street, filing(D, Access, enterprise, longest_ms + 1), Some(InvalidArgument)),
        step(
            street,
            filing(D, Access, ("market-supervision/no-such-registry", subject_hash(1)), shortest_ms - 1),
            Some(DatasetUnknown),
        ),
        step(&fx.market.key, by("王芳", filing(D, Access, enterprise, fortnight_ms)), Some(NotAuthorised)),
    ]
}

/// Commands 25 to 34: answers. Refused: request A refused by civil
/// affairs, which does not own its dataset, with a reason of white space
/// (who answers is checked before the answer); a request never filed,
/// answered by civil affairs (whether the request is open is checked
/// before who answers it); request A answered on time, then
/// again (closed); request C refused with a reason of white space, of 1 025
/// bytes. Request A filed again once closed (an id is refused only while
/// open) and answered by an operator through the market's console; then,
/// a day and 1 ms later, request B answered late and request C refused on
/// time, with its reason.
fn answers(fx: &Fixture) -> Vec<Step<'_>> {
    use RejectionCode::*;
    let (market, civil) = (&fx.market.key, &fx.civil.key);
    let long_reason = "x".repeat(REASON_BYTES_MAX + 1);
    let enterprise = (ENTERPRISES, subject_hash(1));
    vec![
        step(civil, refused(A, " "), Some(NotAuthorised)),
        step(civil, done(NEVER_FILED), Some(SubjectRequestUnknown)),
        step(market, done(A), None),
        step(market, done(A), Some(SubjectRequestUnknown)),
        step(market, refused(C, " \u{3000}"), Some(InvalidArgument)),
        step(market, refused(C, &long_reason), Some(InvalidArgument)),
        step(
            &fx.jingansi.key,
            filing(A, SubjectRequestKind::Correction, enterprise, NOW_MS + 30 * DAY_MS),
            None,
        ),
        step(market, by("王芳", done(A)), None),
        late(step(civil, done(B), None)),
        late(step(market, refused(C, "the registry must keep it: Art. 47, a retention duty by law"), None)),
    ]
}

/// A denial of the street's query for `subject` (no grant), asked and
/// decided at `at_ms`.
fn denial_at(fx: &Fixture, subject: u8, at_ms: u64) -> Command {
    let header = QueryHeader {
        dataset: ENTERPRISES.into(),
        subjects: vec![subject_hash(subject)],
        fields: vec!["name".into()],
        purpose: "inspection".into(),
        grant: None,
    };
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(&fx.jingansi.key, &header, at_ms).unwrap(),
        outcome: AccessOutcome::Deny { reason: ReasonCode::GrantRequired },
        decided_at_ms: at_ms,
    })
}

/// `log` and the subject-request commands (16 to 34), then a denial (35,
/// leaf 9) and a final checkpoint over it (36, 37): its root binds every
/// outcome before it.
fn with_subject_requests(fx: &Fixture, log: &RecordedLog) -> RecordedLog {
    let mut steps = filings(fx);
    steps.extend(answers(fx));
    let mut more = continued(log, steps);
    assert_eq!(more.commands.len() as u64, REFUSED_C);
    assert!(more.state.subject_requests.is_empty(), "every request answered");
    let counts = &more.state.subject_request_counts;
    let (market, civil) = (&counts[&fx.market.org], &counts[&fx.civil.org]);
    assert_eq!((market.answered, market.answered_late, market.refused), (3, 0, 1));
    assert_eq!((civil.answered, civil.answered_late, civil.refused), (1, 1, 0));
    let last = (&fx.market.key, denial_at(fx, 14, LATE_MS));
    close_with_checkpoint(&mut more, LATE_MS, last, [&fx.hub.key, &fx.civil.key], (9, FINAL_COSIGNATURE));
    more
}

/// The subject-request bundle, and copies whose flags or commands the
/// replay of the open requests contradicts.
pub(super) fn subject_request_vectors(fx: &Fixture, log: &RecordedLog) -> Vec<Made> {
    let requests = with_subject_requests(fx, log);
    let summary = Summary {
        commands: FINAL_COSIGNATURE,
        access_entries: 9,
        leaves: 9,
        permits: 6,
        denials: 3,
        checkpoints: 3,
        anchored_leaves: 9,
        root: hex_root(&requests, 9),
        ..genuine_summary(log)
    };
    let genuine = made(
        "06-subject-requests.bundle",
        "00, then: the residents published (16); subjects' requests filed by the streets: A, an access \
         request for an enterprise, due in 15 days (17), B, a deletion request for a resident, due in a \
         day, the shortest deadline (18), C, a correction request by the other street, due in 60 days, \
         the longest (19); refused filings: A again while open (20), A again due in a day less 1 ms \
         (21: refused for its deadline, not as a duplicate), one due in 60 days and 1 ms (22), one for \
         no dataset due too soon (23: refused as no dataset), one an operator made (24); refused \
         answers: A refused by civil affairs, which does not own its dataset, with a reason of white \
         space (25: refused as not the owner's, not for its reason), a request never filed, answered \
         by civil affairs (26: refused as unknown), then A answered by the \
         market on time (27), again (28: closed), C refused with a reason of white space (29) and of \
         1 025 bytes (30); A filed again once answered (31) and answered by an operator through the \
         market's console (32); a day and 1 ms later, B answered late by civil affairs (33) and C \
         refused on time with its reason (34); a denial and a final checkpoint at 9",
        encoded(&requests, requests.commands.clone()),
        Expect::Verified(summary),
    );
    let mut vectors = vec![genuine];
    vectors.extend(tampered_requests(&requests));
    vectors
}

/// Copies of the subject-request bundle, each caught at its first failure.
fn tampered_requests(requests: &RecordedLog) -> Vec<Made> {
    use FailureKind::*;
    let replay_failed = |kind, sequence| failed(kind, Some(sequence), None, None);
    let tampered = |tamper: &dyn Fn(&mut Vec<ArchivedCommand>)| tampered(requests, tamper);
    vec![
        made(
            "49-subject-answer-not-owner-marked-accepted.bundle",
            "06 with command 25, a refusal by a node that does not own the request's dataset, marked \
             accepted",
            tampered(&|c| c[index(NOT_OWNER)].accepted = true),
            replay_failed(ReplayRejected, NOT_OWNER),
        ),
        made(
            "50-subject-request-duplicate-marked-accepted.bundle",
            "06 with command 20, request A filed again while open, marked accepted",
            tampered(&|c| c[index(DUPLICATE)].accepted = true),
            replay_failed(ReplayRejected, DUPLICATE),
        ),
        made(
            "51-subject-request-filing-dropped.bundle",
            "06 with request C's filing (19) left out, renumbered: its refusal (34, now 33) answers no \
             open request",
            tampered(&|c| {
                c.remove(index(FILED_C));
                renumber(c);
            }),
            replay_failed(ReplayRejected, REFUSED_C - 1),
        ),
    ]
}
