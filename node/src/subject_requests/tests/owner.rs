//! The owner's side: its checks before it looks a record up, the bounds on
//! the keys it keeps, the check of a kept key before it acts, and the
//! newest-first scan of the access report.

use civmesh_certs::{Role, UnixMillis};
use civmesh_policy::model::{Dataset, Member, Revocation, SharingCategory};
use civmesh_policy::state::{
    RejectionCode, COMMAND_SKEW_MS_MAX, SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX as PER_INTAKE_MAX,
};
use civmesh_policy::subject_request::{SubjectRequest, SubjectRequestSpec};
use civmesh_policy::PolicyState;

use super::super::admission::{admit, security_event, Candidate, ENTRY_SLACK_MS};
use super::super::answer::check_kept;
use super::super::kept::{blocking, KEPT_KEYS_PER_INTAKE_MAX};
use super::super::report::{scan_newest_first, ScanBounds, Scanned};
use super::*;
use crate::query::SubjectKeys;

const NOW_MS: UnixMillis = 1_800_000_000_000;
const OWNER: NodeId = NodeId([1; 32]);
const INTAKE: NodeId = NodeId([2; 32]);
const REVOKED: NodeId = NodeId([3; 32]);
const EXPIRING: NodeId = NodeId([4; 32]);
const OPEN_ID: [u8; 32] = [9; 32];
const ORG_KEY: [u8; 32] = [5; 32];
const RECORD_KEY: &str = "310106194000000001";

fn org(name: &str) -> OrgId {
    OrgId::new(name).unwrap()
}

fn member(node_id: NodeId, name: &str, role: Role) -> Member {
    Member {
        node_id,
        org: org(name),
        role,
        certificate_der: Vec::new(),
        certificate_serial: Vec::new(),
        certificate_not_after_ms: NOW_MS + 365 * DAY_MS,
        admitted_at_ms: 0,
        revoked: None,
    }
}

fn dataset(id: &str, owner: &str) -> Dataset {
    Dataset {
        id: id.to_string(),
        owner: org(owner),
        title: id.to_string(),
        subject_key_field: "citizen_id".to_string(),
        sharing: SharingCategory::Conditional,
        fields: Vec::new(),
        scope_fields: Vec::new(),
        version: 1,
    }
}

fn spec(id: [u8; 32], record_key: &str) -> SubjectRequestSpec {
    let pair_key = SubjectKeys::new(Some(ORG_KEY)).for_requester(&street()).unwrap();
    SubjectRequestSpec {
        id,
        kind: SubjectRequestKind::Deletion,
        dataset: "residents".to_string(),
        subject: civmesh_policy::model::SubjectKeyHash::of(&pair_key, record_key),
        deadline_ms: deadline_ms(NOW_MS, 15),
    }
}

/// The civil-affairs bureau's replica: it owns `residents`; the market
/// bureau owns `enterprises`; the street took one request already.
fn replica() -> PolicyState {
    let mut policy = PolicyState::default();
    let mut revoked = member(REVOKED, "street/revoked", Role::Street);
    revoked.revoked = Some(Revocation { at_ms: 0, by: OWNER, reason: "left".to_string() });
    let mut expiring = member(EXPIRING, "street/expiring", Role::Street);
    expiring.certificate_not_after_ms = NOW_MS + ENTRY_SLACK_MS / 2;
    for member in [
        member(OWNER, "dept/civil-affairs", Role::Department),
        member(INTAKE, "street/jingansi", Role::Street),
        revoked,
        expiring,
    ] {
        policy.members.insert(member.node_id, member);
    }
    for (id, owner) in [("residents", "dept/civil-affairs"), ("enterprises", "dept/market")] {
        policy.datasets.insert(id.to_string(), dataset(id, owner));
    }
    let open = SubjectRequest {
        spec: spec(OPEN_ID, "310106194000000002"),
        owner: org("dept/civil-affairs"),
        intake: street(),
        filed_at_ms: NOW_MS - 1,
    };
    policy.subject_requests.insert(OPEN_ID, open);
    policy.subject_requests_open_by_intake.insert(street(), 1);
    policy
}

/// One request as the owner sees it.
#[derive(Clone)]
struct Case {
    policy: PolicyState,
    org_key: Option<[u8; 32]>,
    signer: NodeId,
    issued_at_ms: UnixMillis,
    spec: SubjectRequestSpec,
    record_key: String,
}

impl Case {
    fn admitted(&self) -> Result<OrgId, OwnerOutcome> {
        let candidate = Candidate {
            signer: &self.signer,
            issued_at_ms: self.issued_at_ms,
            spec: &self.spec,
            record_key: &self.record_key,
        };
        admit(&self.policy, &SubjectKeys::new(self.org_key), &OWNER, &candidate, NOW_MS)
    }
}

/// What the owner makes of a request: admitted, rejected with the log's
/// code, or refused.
#[derive(Debug, PartialEq)]
enum Expected {
    Admitted,
    Rejected(RejectionCode),
    Refused,
}

#[test]
fn the_owner_checks_the_whole_request_as_the_log_will_before_it_looks_the_record_up() {
    let base = Case {
        policy: replica(),
        org_key: Some(ORG_KEY),
        signer: INTAKE,
        issued_at_ms: NOW_MS,
        spec: spec([1; 32], RECORD_KEY),
        record_key: RECORD_KEY.to_string(),
    };
    use Expected::{Admitted, Refused, Rejected};
    use RejectionCode::*;
    type Change = fn(&mut Case);
    let cases: Vec<(&str, Change, Expected)> = vec![
        ("as the intake signed it", |_| {}, Admitted),
        ("the shortest deadline", |c| c.spec.deadline_ms = deadline_ms(NOW_MS, 1), Admitted),
        ("the longest deadline", |c| c.spec.deadline_ms = deadline_ms(NOW_MS, 60), Admitted),
        ("signed a minute ago", |c| c.issued_at_ms = NOW_MS - 60_000, Admitted),
        ("a deadline of a day", |c| c.spec.deadline_ms = NOW_MS + DAY_MS, Rejected(InvalidArgument)),
        ("over 60 days", |c| c.spec.deadline_ms = NOW_MS + 61 * DAY_MS, Rejected(InvalidArgument)),
        ("no deadline", |c| c.spec.deadline_ms = 0, Rejected(InvalidArgument)),
        ("signed too long ago", |c| c.issued_at_ms = NOW_MS - COMMAND_SKEW_MS_MAX, Rejected(Stale)),
        (
            "signed in the future",
            |c| c.issued_at_ms = NOW_MS + COMMAND_SKEW_MS_MAX + 1,
            Rejected(FutureDated),
        ),
        ("an unknown dataset", |c| c.spec.dataset = "pets".to_string(), Rejected(DatasetUnknown)),
        ("an id open already", |c| c.spec.id = OPEN_ID, Rejected(SubjectRequestDuplicate)),
        (
            "the intake's bound reached",
            |c| {
                c.policy.subject_requests_open_by_intake.insert(street(), PER_INTAKE_MAX);
            },
            Rejected(Overloaded),
        ),
        (
            "another intake's bound reached",
            |c| {
                c.policy.subject_requests_open_by_intake.insert(org("street/other"), PER_INTAKE_MAX);
            },
            Admitted,
        ),
        ("a signer that is no member", |c| c.signer = NodeId([7; 32]), Rejected(SignerUnknown)),
        ("a revoked intake", |c| c.signer = REVOKED, Rejected(SignerRevoked)),
        ("a certificate expiring before entry", |c| c.signer = EXPIRING, Rejected(SignerCertificateExpired)),
        ("another owner's dataset", |c| c.spec.dataset = "enterprises".to_string(), Refused),
        ("no organisation key here", |c| c.org_key = None, Refused),
        ("another key than the subject's", |c| c.record_key = "310106194000000003".to_string(), Refused),
    ];

    for (name, change, expected) in cases {
        let mut case = base.clone();
        change(&mut case);
        let got = match case.admitted() {
            Ok(intake) => {
                assert_eq!(intake, street(), "{name}");
                Expected::Admitted
            }
            Err(OwnerOutcome::Rejected(rejection)) => Expected::Rejected(rejection.code),
            Err(OwnerOutcome::Refused(_)) => Expected::Refused,
            Err(other) => panic!("{name}: {other:?}"),
        };
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn every_request_a_peer_learns_something_from_without_a_log_entry_is_a_security_event() {
    let rejection = civmesh_policy::Rejection { code: RejectionCode::InvalidArgument, detail: String::new() };
    let cases = [
        (OwnerOutcome::RecordUnknown, Some("subject_request_record_unknown")),
        (OwnerOutcome::Refused("signature".to_string()), Some("subject_request_refused")),
        (OwnerOutcome::Rejected(rejection), Some("subject_request_rejected")),
        (OwnerOutcome::Filed, None),
        (OwnerOutcome::Unavailable("store".to_string()), None),
    ];
    for (outcome, expected) in cases {
        assert_eq!(security_event(&outcome), expected, "{outcome:?}");
    }
}

#[test]
fn one_intake_keeps_at_most_its_share_of_the_keys_and_asking_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeptKeys::at(dir.path());
    let never_open = |_: &[u8; 32]| false;
    let other = org("street/other");
    let id = |n: usize, intake: &OrgId| {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        id[8] = u8::from(intake != &street());
        id
    };
    let kept = |n: usize, intake: &OrgId| {
        Kept::new(id(n, intake), "residents", SubjectRequestKind::Access, intake, RECORD_KEY)
    };
    assert!(keys.has_room(&kept(0, &street()), never_open).is_ok());
    assert!(!dir.path().join(kept::KEPT_KEYS_FILE).exists(), "asking writes nothing");
    for n in 0..KEPT_KEYS_PER_INTAKE_MAX {
        keys.keep(kept(n, &street()), never_open).unwrap();
    }
    let full = kept(KEPT_KEYS_PER_INTAKE_MAX, &street());
    assert!(matches!(keys.has_room(&full, never_open), Err(KeepError::IntakeFull(_))));
    assert!(matches!(keys.keep(full.clone(), never_open), Err(KeepError::IntakeFull(_))));
    assert_eq!(keys.ids().unwrap().len(), KEPT_KEYS_PER_INTAKE_MAX, "the same record, a hundred times");
    keys.keep(kept(0, &other), never_open).unwrap();
    keys.forget(&id(0, &street())).unwrap();
    keys.keep(full, never_open).unwrap();
    assert_eq!(keys.ids().unwrap().len(), KEPT_KEYS_PER_INTAKE_MAX + 1);
}

#[tokio::test]
async fn kept_keys_are_read_and_written_on_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeptKeys::at(dir.path());
    let kept = Kept::new([1; 32], "residents", SubjectRequestKind::Access, &street(), RECORD_KEY);
    let writer = keys.clone();
    blocking(move || writer.keep(kept, |_| false)).await.unwrap();
    let reader = keys.clone();
    let read = blocking(move || reader.get(&[1; 32])).await.unwrap().unwrap();
    assert_eq!((read.record_key.as_str(), read.intake.as_str()), (RECORD_KEY, "street/jingansi"));
}

#[test]
fn only_the_key_that_hashes_to_the_requests_subject_is_acted_on() {
    let request = SubjectRequest {
        spec: spec([1; 32], RECORD_KEY),
        owner: org("dept/civil-affairs"),
        intake: street(),
        filed_at_ms: NOW_MS,
    };
    let keys = SubjectKeys::new(Some(ORG_KEY));
    let pair_key = keys.for_requester(&street()).unwrap();
    let kept =
        |dataset: &str, kind, record_key: &str| Kept::new([1; 32], dataset, kind, &street(), record_key);
    let deletion = SubjectRequestKind::Deletion;
    let cases = [
        (kept("residents", deletion, RECORD_KEY), pair_key, true),
        (kept("residents", deletion, "310106194000000009"), pair_key, false),
        (kept("enterprises", deletion, RECORD_KEY), pair_key, false),
        (kept("residents", SubjectRequestKind::Access, RECORD_KEY), pair_key, false),
        (kept("residents", deletion, RECORD_KEY), keys.for_requester(&org("street/other")).unwrap(), false),
    ];
    for (kept, pair_key, acted_on) in cases {
        let checked = check_kept(&kept, &request, &pair_key);
        assert_eq!(checked.is_ok(), acted_on, "{kept:?}");
        if !acted_on {
            assert!(matches!(checked, Err(AnswerError::KeyMismatch)), "{kept:?}");
            assert_eq!(checked.unwrap_err().status(), axum::http::StatusCode::CONFLICT);
        }
    }
    assert_eq!(AnswerError::RecordGone.status(), axum::http::StatusCode::CONFLICT);
    assert!(AnswerError::RecordGone.to_string().starts_with("record_gone"));
}

/// A history holding `held` (each entry is its position), read as
/// `History::access_entries` reads: from the first held at or after
/// `from`, consecutive ones, at most `limit`.
fn history(held: &[u64]) -> impl FnMut(u64, usize) -> Result<(u64, Vec<u64>), ()> + '_ {
    move |from, limit| {
        let Some(first) = held.iter().copied().find(|position| *position >= from) else {
            return Ok((from, Vec::new()));
        };
        let run: Vec<u64> = (first..)
            .zip(held.iter().copied().skip_while(|position| *position < first))
            .take_while(|(expected, position)| expected == position)
            .map(|(_, position)| position)
            .take(limit)
            .collect();
        Ok((first, run))
    }
}

#[test]
fn the_access_report_reads_the_newest_entries_first_and_says_how_far_back_it_reaches() {
    let bounds = |entries_max, found_max| ScanBounds { entries_max, found_max, page_entries: 4 };
    let scanned = |found: &[u64], entries_read, from_entry, held_from, complete| Scanned {
        found: found.to_vec(),
        entries_read,
        from_entry,
        held_from,
        complete,
    };
    let all: Vec<u64> = (0..10).collect();
    let from_5: Vec<u64> = (5..10).collect();
    let longer: Vec<u64> = (0..12).collect();
    let gap: Vec<u64> = (0..10).filter(|position| *position != 7).collect();
    let every = [9, 6, 3, 0];
    let cases = [
        ("every entry", &all[..], 10, bounds(100, 100), scanned(&every, 10, Some(0), Some(0), true)),
        ("joined by snapshot", &from_5, 10, bounds(100, 100), scanned(&[9, 6], 5, Some(5), Some(5), true)),
        (
            "entries after it began",
            &longer,
            10,
            bounds(100, 100),
            scanned(&every, 10, Some(0), Some(0), true),
        ),
        ("the entries bound", &all, 10, bounds(4, 100), scanned(&[9, 6], 4, Some(6), Some(0), false)),
        (
            "the entries bound at the first",
            &all,
            10,
            bounds(10, 100),
            scanned(&every, 10, Some(0), Some(0), true),
        ),
        ("the accesses bound", &all, 10, bounds(100, 2), scanned(&[9, 6], 6, Some(4), Some(0), false)),
        ("an empty log", &[], 0, bounds(100, 100), scanned(&[], 0, None, None, true)),
        ("a gap", &gap, 10, bounds(100, 100), scanned(&[], 0, None, Some(0), false)),
    ];
    for (name, held, length, bounds, expected) in cases {
        let found = |position: &u64| position.is_multiple_of(3).then_some(*position);
        let got = scan_newest_first(history(held), length, &bounds, found).unwrap();
        assert_eq!(got, expected, "{name}");
    }
}
