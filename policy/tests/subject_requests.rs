//! Subjects' requests (PIPL Art. 44-47): filed by the node of the
//! organisation that took them (the intake), answered by the dataset's
//! owner; the bounds on what may be open, and the answers counted late.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use civmesh_certs::{NodeKey, OrgId, Role};
use civmesh_policy::model::{SubjectKeyHash, REASON_BYTES_MAX};
use civmesh_policy::state::SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX;
use civmesh_policy::subject_request::{
    SubjectRequest, SubjectRequestCounts, SubjectRequestId, SubjectRequestKind, SubjectRequestOutcome,
    SubjectRequestSpec, SUBJECT_REQUEST_DEADLINE_MS_MAX, SUBJECT_REQUEST_DEADLINE_MS_MIN,
};
use civmesh_policy::{Applied, Command, PolicyState, Rejection, RejectionCode};
use support::*;

/// A deadline a fortnight after [`NOW_MS`].
const FORTNIGHT_MS: u64 = NOW_MS + 14 * DAY_MS;
const NO_DATASET: &str = "market-supervision/no-such-registry";

/// Request `n`'s id.
fn request_id(n: u64) -> SubjectRequestId {
    let mut id = [0x5a; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id
}

fn spec(n: u64, dataset: &str, deadline_ms: u64) -> SubjectRequestSpec {
    SubjectRequestSpec {
        id: request_id(n),
        kind: SubjectRequestKind::Access,
        dataset: dataset.into(),
        subject: SubjectKeyHash([n as u8; 32]),
        deadline_ms,
    }
}

/// Request `n`, for a subject of `dataset`, due at `deadline_ms`.
fn filing(n: u64, dataset: &str, deadline_ms: u64) -> Command {
    Command::FileSubjectRequest(spec(n, dataset, deadline_ms))
}

fn done(n: u64) -> Command {
    Command::AnswerSubjectRequest { id: request_id(n), outcome: SubjectRequestOutcome::Done }
}

fn refused(n: u64, reason: &str) -> Command {
    let outcome = SubjectRequestOutcome::Refused { reason: reason.into() };
    Command::AnswerSubjectRequest { id: request_id(n), outcome }
}

fn by_operator(command: Command) -> Command {
    Command::ByOperator { operator: "王芳".into(), command: Box::new(command) }
}

/// A copy of `key` (keys are not `Clone`), to sign while the fixture changes.
fn copy(key: &NodeKey) -> NodeKey {
    NodeKey::from_pkcs8_der(key.pkcs8_der()).unwrap()
}

fn open_of(state: &PolicyState, intake: &OrgId) -> u64 {
    state.subject_requests_open_by_intake.get(intake).copied().unwrap_or(0)
}

/// The per-intake counters are the open requests counted by intake, with
/// no organisation at 0.
fn check_open_counts(state: &PolicyState) {
    let mut counted: BTreeMap<OrgId, u64> = BTreeMap::new();
    for request in state.subject_requests.values() {
        *counted.entry(request.intake.clone()).or_default() += 1;
    }
    assert_eq!(state.subject_requests_open_by_intake, counted);
}

fn code(outcome: Result<Applied, Rejection>) -> Result<Applied, RejectionCode> {
    outcome.map_err(|rejection| rejection.code)
}

// ---------------------------------------------------------------------------
// Filing.

/// How one filing case sets up the fixture, then the filing: who signs it
/// (with their organisation) and the command, at [`NOW_MS`].
type FilingSetup = fn(&mut Fixture) -> (NodeKey, OrgId, Command);

/// The street files `command`.
fn by_street(fx: &Fixture, command: Command) -> (NodeKey, OrgId, Command) {
    (copy(&fx.jingansi.key), fx.jingansi.org.clone(), command)
}

// A table of cases: one row per rule and bound, however long it grows.
#[allow(clippy::too_many_lines)]
fn filing_cases() -> Vec<(&'static str, FilingSetup, Result<(), RejectionCode>)> {
    use RejectionCode::*;
    vec![
        (
            "a deadline a day after filing, the shortest",
            |fx| by_street(fx, filing(1, ENTERPRISES, NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MIN)),
            Ok(()),
        ),
        (
            "a deadline a day less 1 ms after filing",
            |fx| by_street(fx, filing(1, ENTERPRISES, NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MIN - 1)),
            Err(InvalidArgument),
        ),
        (
            "a deadline 60 days after filing, the longest",
            |fx| by_street(fx, filing(1, ENTERPRISES, NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MAX)),
            Ok(()),
        ),
        (
            "a deadline 60 days and 1 ms after filing",
            |fx| by_street(fx, filing(1, ENTERPRISES, NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MAX + 1)),
            Err(InvalidArgument),
        ),
        (
            "a deadline passed already",
            |fx| by_street(fx, filing(1, ENTERPRISES, NOW_MS - 1)),
            Err(InvalidArgument),
        ),
        (
            "a dataset nobody published",
            |fx| by_street(fx, filing(1, NO_DATASET, FORTNIGHT_MS)),
            Err(DatasetUnknown),
        ),
        (
            "a dataset nobody published, due too soon: the dataset is checked first",
            |fx| by_street(fx, filing(1, NO_DATASET, NOW_MS)),
            Err(DatasetUnknown),
        ),
        (
            "an id open already",
            |fx| {
                apply(&mut fx.state, &fx.jingansi.key, filing(1, RESIDENTS, FORTNIGHT_MS)).unwrap();
                by_street(fx, filing(1, ENTERPRISES, FORTNIGHT_MS))
            },
            Err(SubjectRequestDuplicate),
        ),
        (
            "an id open already, due too soon: the deadline is checked first",
            |fx| {
                apply(&mut fx.state, &fx.jingansi.key, filing(1, RESIDENTS, FORTNIGHT_MS)).unwrap();
                by_street(fx, filing(1, ENTERPRISES, NOW_MS))
            },
            Err(InvalidArgument),
        ),
        (
            "an id open already at another intake",
            |fx| {
                apply(&mut fx.state, &fx.nanjingxilu.key, filing(1, ENTERPRISES, FORTNIGHT_MS)).unwrap();
                by_street(fx, filing(1, ENTERPRISES, FORTNIGHT_MS))
            },
            Err(SubjectRequestDuplicate),
        ),
        (
            "the id of a request answered already",
            |fx| {
                apply(&mut fx.state, &fx.jingansi.key, filing(1, ENTERPRISES, FORTNIGHT_MS)).unwrap();
                apply(&mut fx.state, &fx.market.key, done(1)).unwrap();
                by_street(fx, filing(1, ENTERPRISES, FORTNIGHT_MS))
            },
            Ok(()),
        ),
        (
            "by a department that does not own the dataset",
            |fx| (copy(&fx.civil.key), fx.civil.org.clone(), filing(1, ENTERPRISES, FORTNIGHT_MS)),
            Ok(()),
        ),
        (
            "by the dataset's owner, at its own window",
            |fx| (copy(&fx.market.key), fx.market.org.clone(), filing(1, ENTERPRISES, FORTNIGHT_MS)),
            Ok(()),
        ),
        (
            "by a node that is no member",
            |fx| (copy(&fx.outsider.key), fx.outsider.org.clone(), filing(1, ENTERPRISES, FORTNIGHT_MS)),
            Err(SignerUnknown),
        ),
        (
            "made by an operator: a node files its own requests",
            |fx| by_street(fx, by_operator(filing(1, ENTERPRISES, FORTNIGHT_MS))),
            Err(NotAuthorised),
        ),
    ]
}

#[test]
fn a_request_names_a_known_dataset_a_deadline_in_bounds_and_an_id_not_open() {
    for (name, setup, expected) in filing_cases() {
        let mut fx = Fixture::new();
        let (signer, intake, command) = setup(&mut fx);
        let before = fx.state.clone();
        let outcome = code(apply(&mut fx.state, &signer, command.clone()));
        match (outcome, expected) {
            (Ok(Applied::Done), Ok(())) => {
                let Command::FileSubjectRequest(spec) = &command else {
                    panic!("{name}: accepted, not a filing")
                };
                let request = SubjectRequest {
                    spec: spec.clone(),
                    owner: before.datasets[&spec.dataset].owner.clone(),
                    intake: intake.clone(),
                    filed_at_ms: NOW_MS,
                };
                assert_eq!(fx.state.subject_requests.get(&spec.id), Some(&request), "{name}");
                assert_eq!(open_of(&fx.state, &intake), open_of(&before, &intake) + 1, "{name}");
            }
            (Err(code), Err(expected_code)) => {
                assert_eq!(code, expected_code, "{name}");
                assert_eq!(fx.state, after_rejection(&before, &fx.state), "{name}");
            }
            (outcome, expected) => panic!("{name}: {outcome:?}, expected {expected:?}"),
        }
        check_open_counts(&fx.state);
    }
}

// ---------------------------------------------------------------------------
// The bound per intake organisation.

#[test]
fn an_intake_organisation_has_at_most_its_bound_of_requests_open() {
    use RejectionCode::*;
    let mut fx = Fixture::new();
    let second = fx.admit(&fx.jingansi.org.to_string(), Role::Street);
    let (street, other) = (copy(&fx.jingansi.key), copy(&fx.nanjingxilu.key));
    let bound = SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX;
    assert_eq!(bound, 1_000);
    // Both of the street's nodes file, and count against one bound.
    for n in 0..bound {
        let key = if n % 2 == 0 { &street } else { &second.key };
        apply(&mut fx.state, key, filing(n, ENTERPRISES, FORTNIGHT_MS)).unwrap();
    }
    assert_eq!(open_of(&fx.state, &fx.jingansi.org), bound);
    check_open_counts(&fx.state);
    let refusals = [
        (&street, filing(bound, ENTERPRISES, FORTNIGHT_MS), Overloaded),
        (&second.key, filing(bound, RESIDENTS, FORTNIGHT_MS), Overloaded),
        // The dataset, the deadline and the id are checked first.
        (&street, filing(bound, NO_DATASET, FORTNIGHT_MS), DatasetUnknown),
        (&street, filing(bound, ENTERPRISES, NOW_MS), InvalidArgument),
        (&street, filing(0, ENTERPRISES, FORTNIGHT_MS), SubjectRequestDuplicate),
    ];
    for (key, command, expected) in refusals {
        let before = fx.state.clone();
        assert_eq!(code(apply(&mut fx.state, key, command.clone())), Err(expected), "{command:?}");
        assert_eq!(fx.state, after_rejection(&before, &fx.state));
    }
    // Another street is not held back.
    apply(&mut fx.state, &other, filing(bound + 1, ENTERPRISES, FORTNIGHT_MS)).unwrap();
    assert_eq!(open_of(&fx.state, &fx.nanjingxilu.org), 1);
    // One answered: the street may file one more, then no more.
    apply(&mut fx.state, &fx.market.key, done(0)).unwrap();
    assert_eq!(open_of(&fx.state, &fx.jingansi.org), bound - 1);
    apply(&mut fx.state, &second.key, filing(bound, ENTERPRISES, FORTNIGHT_MS)).unwrap();
    let again = apply(&mut fx.state, &street, filing(bound + 2, ENTERPRISES, FORTNIGHT_MS));
    assert_eq!(code(again), Err(Overloaded));
    check_open_counts(&fx.state);
}

// ---------------------------------------------------------------------------
// Answering.

#[test]
fn only_the_owner_answers_an_open_request_and_late_answers_are_counted() {
    use RejectionCode::*;
    let mut fx = Fixture::new();
    let (street, market, civil) = (copy(&fx.jingansi.key), copy(&fx.market.key), copy(&fx.civil.key));
    let deadline_ms = NOW_MS + SUBJECT_REQUEST_DEADLINE_MS_MIN;
    // Requests 1 and 3 for the market's registry, 2 for civil affairs' residents.
    for (n, dataset) in [(1, ENTERPRISES), (2, RESIDENTS), (3, ENTERPRISES)] {
        apply(&mut fx.state, &street, filing(n, dataset, deadline_ms)).unwrap();
    }
    let at_deadline = |state: &mut PolicyState, key: &NodeKey, command: Command| {
        code(apply_at(state, key, command, deadline_ms))
    };
    let longest = "x".repeat(REASON_BYTES_MAX);
    let refusals = [
        (&civil, done(1), NotAuthorised),
        (&street, done(1), NotAuthorised),
        (&copy(&fx.auditor.key), done(1), NotAuthorised),
        // The owner is checked before the answer.
        (&civil, refused(1, " "), NotAuthorised),
        // Whether the request is open is checked before who answers it.
        (&civil, done(99), SubjectRequestUnknown),
        (&market, done(99), SubjectRequestUnknown),
        (&market, refused(1, " \u{3000}"), InvalidArgument),
        (&market, refused(1, &format!("{longest}x")), InvalidArgument),
        (&market, by_operator(by_operator(done(1))), NotAuthorised),
    ];
    for (key, command, expected) in refusals {
        let before = fx.state.clone();
        assert_eq!(at_deadline(&mut fx.state, key, command.clone()), Err(expected), "{command:?}");
        assert_eq!(fx.state, after_rejection(&before, &fx.state), "{command:?}");
    }
    // Request 1 answered at its deadline: on time; through the market's
    // console, by an operator.
    assert_eq!(at_deadline(&mut fx.state, &market, by_operator(done(1))), Ok(Applied::Done));
    assert_eq!(at_deadline(&mut fx.state, &market, done(1)), Err(SubjectRequestUnknown));
    // 1 ms after the deadline: late, done or refused.
    let late_ms = deadline_ms + 1;
    apply_at(&mut fx.state, &civil, done(2), late_ms).unwrap();
    apply_at(&mut fx.state, &market, refused(3, &longest), late_ms).unwrap();
    let counts = &fx.state.subject_request_counts;
    let market_counts = SubjectRequestCounts { answered: 2, answered_late: 1, refused: 1 };
    let civil_counts = SubjectRequestCounts { answered: 1, answered_late: 1, refused: 0 };
    assert_eq!(counts.get(&fx.market.org), Some(&market_counts));
    assert_eq!(counts.get(&fx.civil.org), Some(&civil_counts));
    assert!(fx.state.subject_requests.is_empty());
    assert!(fx.state.subject_requests_open_by_intake.is_empty(), "no intake keeps a count of 0");
}

#[test]
fn the_open_counts_follow_filings_and_answers_back_to_nothing() {
    let mut fx = Fixture::new();
    let intakes = [copy(&fx.jingansi.key), copy(&fx.nanjingxilu.key), copy(&fx.civil.key)];
    let orgs = [fx.jingansi.org.clone(), fx.nanjingxilu.org.clone(), fx.civil.org.clone()];
    let mut at_ms = NOW_MS;
    // Three rounds: each intake files three requests, then the owners
    // answer every other one open, oldest first.
    for round in 0..3u64 {
        for (i, key) in intakes.iter().enumerate() {
            for k in 0..3u64 {
                let n = round * 100 + i as u64 * 10 + k;
                let dataset = if k % 2 == 0 { ENTERPRISES } else { RESIDENTS };
                apply_at(&mut fx.state, key, filing(n, dataset, at_ms + 15 * DAY_MS), at_ms).unwrap();
                check_open_counts(&fx.state);
            }
        }
        at_ms += DAY_MS;
        let open: Vec<SubjectRequest> = fx.state.subject_requests.values().cloned().collect();
        for request in open.iter().step_by(2) {
            answer_as_owner(&mut fx, request, at_ms);
            check_open_counts(&fx.state);
        }
    }
    assert!(orgs.iter().all(|org| open_of(&fx.state, org) > 0));
    at_ms += DAY_MS;
    let open: Vec<SubjectRequest> = fx.state.subject_requests.values().cloned().collect();
    for request in &open {
        answer_as_owner(&mut fx, request, at_ms);
        check_open_counts(&fx.state);
    }
    assert!(fx.state.subject_requests.is_empty());
    assert!(fx.state.subject_requests_open_by_intake.is_empty());
    let answered: u64 = fx.state.subject_request_counts.values().map(|counts| counts.answered).sum();
    assert_eq!(answered, 27);
}

/// The owner of `request`'s dataset answers it, done, at `at_ms`.
fn answer_as_owner(fx: &mut Fixture, request: &SubjectRequest, at_ms: u64) {
    let owner = if request.owner == fx.market.org { &fx.market.key } else { &fx.civil.key };
    let command = Command::AnswerSubjectRequest { id: request.spec.id, outcome: SubjectRequestOutcome::Done };
    apply_at(&mut fx.state, owner, command, at_ms).unwrap();
}
