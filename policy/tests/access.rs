//! Access records at apply time: both signatures, the owner's authority,
//! replay, and permits that the policy state must justify (every rule of
//! `decide` again: window, revocation, purpose, negative list, consent,
//! sensitive consent, fields asked for, subjects named).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use civmesh_certs::{NodeKey, SignedEnvelope};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{
    AccessOutcome, AccessRecord, Applied, Command, QueryHeader, ReasonCode, RejectionCode, SubjectRelease,
};
use support::*;

const SUBJECT: SubjectKeyHash = SubjectKeyHash([9; 32]);

fn header(grant: Option<u64>, fields: &[&str]) -> QueryHeader {
    QueryHeader {
        dataset: ENTERPRISES.into(),
        subjects: vec![SUBJECT],
        fields: fields.iter().map(|f| f.to_string()).collect(),
        purpose: "inspection".into(),
        grant,
    }
}

fn record(requester: &NodeKey, header: QueryHeader, outcome: AccessOutcome) -> Command {
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(requester, &header, NOW_MS).unwrap(),
        outcome,
        decided_at_ms: NOW_MS,
    })
}

fn released(fields: &[&str]) -> AccessOutcome {
    AccessOutcome::Permit {
        released: vec![SubjectRelease {
            subject: SUBJECT,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }],
    }
}

#[test]
fn justified_permits_and_denials_are_logged() {
    let mut fx = Fixture::new();
    let grant =
        fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "operating_address"], "inspection"));
    let denial = record(
        &fx.jingansi.key,
        header(None, &["name"]),
        AccessOutcome::Deny { reason: ReasonCode::GrantRequired },
    );
    assert_eq!(apply(&mut fx.state, &fx.market.key, denial), Ok(Applied::AccessLogged(0)));
    let permit = record(
        &fx.jingansi.key,
        header(Some(grant), &["name", "operating_address"]),
        released(&["name", "operating_address"]),
    );
    let position = civmesh_policy::audit::LeafPosition {
        digest_before: fx.state.digest,
        sequence: fx.state.commands_applied + 1,
        entry_time_ms: NOW_MS,
    };
    let (outcome, appended) = fx.state.apply_appending(&sign(&fx.market.key, permit), NOW_MS);
    assert_eq!(outcome, Ok(Applied::AccessLogged(1)));
    assert_eq!(fx.state.access_log_length, 2);
    let entry = appended.access_entry.expect("a logged access hands its entry over");
    assert_eq!(
        (entry.sequence, entry.requester, entry.owner),
        (1, fx.jingansi.key.node_id(), fx.market.key.node_id())
    );
    assert_eq!(appended.audit_leaf, Some(civmesh_policy::audit::leaf_of(&position, &entry.envelope)));
    assert_eq!(fx.state.audit_frontier.size(), 2);
}

#[test]
fn unjustified_forged_replayed_or_foreign_records_are_rejected() {
    let mut fx = Fixture::new();
    let grant = fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection"));
    let cases: Vec<(&str, &NodeKey, Command, RejectionCode)> = vec![
        (
            "a field outside the grant",
            &fx.market.key,
            record(
                &fx.jingansi.key,
                header(Some(grant), &["name", "operating_address"]),
                released(&["name", "operating_address"]),
            ),
            RejectionCode::PermitNotJustified,
        ),
        (
            "a permit without any grant",
            &fx.market.key,
            record(&fx.jingansi.key, header(None, &["name"]), released(&["name"])),
            RejectionCode::PermitNotJustified,
        ),
        (
            "someone else's grant",
            &fx.market.key,
            record(&fx.nanjingxilu.key, header(Some(grant), &["name"]), released(&["name"])),
            RejectionCode::PermitNotJustified,
        ),
        (
            "logged by a department that does not own the dataset",
            &fx.civil.key,
            record(&fx.jingansi.key, header(Some(grant), &["name"]), released(&["name"])),
            RejectionCode::NotAuthorised,
        ),
        (
            "a requester who is not a member",
            &fx.market.key,
            record(&fx.outsider.key, header(Some(grant), &["name"]), released(&["name"])),
            RejectionCode::SignerUnknown,
        ),
    ];
    for (name, signer, command, code) in cases {
        assert_eq!(apply(&mut fx.state, signer, command).map_err(|r| r.code), Err(code), "{name}");
    }

    // A forged requester signature.
    let mut request = SignedEnvelope::sign(&fx.jingansi.key, &header(Some(grant), &["name"]), NOW_MS)
        .unwrap()
        .to_bytes()
        .unwrap();
    let last = request.len() - 1;
    request[last] ^= 1;
    let forged = Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::from_bytes(&request).unwrap(),
        outcome: released(&["name"]),
        decided_at_ms: NOW_MS,
    });
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, forged).unwrap_err().code,
        RejectionCode::SignatureInvalid
    );

    // The same signed query logged twice.
    let query = SignedEnvelope::sign(&fx.jingansi.key, &header(Some(grant), &["name"]), NOW_MS).unwrap();
    let once = || {
        Command::RecordAccess(AccessRecord {
            request: query.clone(),
            outcome: released(&["name"]),
            decided_at_ms: NOW_MS,
        })
    };
    assert!(apply(&mut fx.state, &fx.market.key, once()).is_ok());
    assert_eq!(apply(&mut fx.state, &fx.market.key, once()).unwrap_err().code, RejectionCode::Replayed);
    // A spent query is a replay whatever the record around it claims: its
    // freshness is checked before the permit is judged.
    let unjustified = Command::RecordAccess(AccessRecord {
        request: query.clone(),
        outcome: released(&["name", "operating_address"]),
        decided_at_ms: NOW_MS,
    });
    assert_eq!(apply(&mut fx.state, &fx.market.key, unjustified).unwrap_err().code, RejectionCode::Replayed);
    assert_eq!(fx.state.access_log_length, 1);
}

#[test]
fn pushes_under_a_subscription_are_justified_like_permits() {
    let mut fx = Fixture::new();
    let grant = fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection"));
    let subscription = QueryHeader { subjects: vec![], ..header(Some(grant), &["name"]) };
    let signed = SignedEnvelope::sign(&fx.jingansi.key, &subscription, NOW_MS).unwrap();
    let push = |fields: &[&str]| {
        Command::RecordPush(AccessRecord {
            request: signed.clone(),
            outcome: released(fields),
            decided_at_ms: NOW_MS,
        })
    };
    // The same subscription covers many pushes.
    assert_eq!(apply(&mut fx.state, &fx.market.key, push(&["name"])), Ok(Applied::AccessLogged(0)));
    assert_eq!(apply(&mut fx.state, &fx.market.key, push(&["name"])), Ok(Applied::AccessLogged(1)));
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, push(&["operating_address"])).unwrap_err().code,
        RejectionCode::PermitNotJustified
    );
    // A push needs a subscription, not a query naming subjects.
    let query = SignedEnvelope::sign(&fx.jingansi.key, &header(Some(grant), &["name"]), NOW_MS).unwrap();
    let disguised = Command::RecordPush(AccessRecord {
        request: query,
        outcome: released(&["name"]),
        decided_at_ms: NOW_MS,
    });
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, disguised).unwrap_err().code,
        RejectionCode::PermitNotJustified
    );
}

#[test]
fn listing_pages_release_any_subject_once_per_fresh_request() {
    let mut fx = Fixture::new();
    let grant = fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection"));
    let listing = QueryHeader { subjects: vec![], ..header(Some(grant), &["name"]) };
    let page = |outcome: AccessOutcome| {
        let request = SignedEnvelope::sign(&fx.jingansi.key, &listing, NOW_MS).unwrap();
        Command::RecordListing(AccessRecord { request, outcome, decided_at_ms: NOW_MS })
    };
    let first = page(released(&["name"]));
    assert_eq!(apply(&mut fx.state, &fx.market.key, first.clone()), Ok(Applied::AccessLogged(0)));
    // Each page is its own request: logging one twice is a replay.
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, first).unwrap_err().code,
        RejectionCode::Replayed,
        "a page's request is spent once"
    );
    let denial = page(AccessOutcome::Deny { reason: ReasonCode::GrantExpired });
    assert_eq!(apply(&mut fx.state, &fx.market.key, denial), Ok(Applied::AccessLogged(1)));
    let empty = page(AccessOutcome::Permit { released: vec![] });
    assert_eq!(apply(&mut fx.state, &fx.market.key, empty), Ok(Applied::AccessLogged(2)));
    let subjects = |count: usize| AccessOutcome::Permit {
        released: (0..count)
            .map(|index| SubjectRelease {
                subject: SubjectKeyHash([(index % 251) as u8; 32]),
                fields: vec!["name".into()],
            })
            .collect(),
    };
    let full = page(subjects(civmesh_policy::access::QUERY_SUBJECTS_MAX));
    assert_eq!(apply(&mut fx.state, &fx.market.key, full), Ok(Applied::AccessLogged(3)));
    let too_many = subjects(civmesh_policy::access::QUERY_SUBJECTS_MAX + 1);
    let cases = [
        ("an ungranted field", page(released(&["operating_address"])), RejectionCode::PermitNotJustified),
        ("a page over the bound", page(too_many), RejectionCode::InvalidArgument),
        (
            "a listing of a header naming subjects",
            Command::RecordListing(AccessRecord {
                request: SignedEnvelope::sign(&fx.jingansi.key, &header(Some(grant), &["name"]), NOW_MS)
                    .unwrap(),
                outcome: released(&["name"]),
                decided_at_ms: NOW_MS,
            }),
            RejectionCode::PermitNotJustified,
        ),
    ];
    for (case, command, code) in cases {
        assert_eq!(apply(&mut fx.state, &fx.market.key, command).unwrap_err().code, code, "{case}");
    }
    assert_eq!(fx.state.access_log_length, 4);
}

/// How one case sets up the state before its access record is applied.
type Setup = fn(&mut Fixture) -> Command;

/// A permit of `fields` of [`SUBJECT`] under a fresh grant of `spec` to
/// Jing'an Temple street, for `purpose`, asking for `asked`.
fn permit_under(
    fx: &mut Fixture,
    spec: civmesh_policy::GrantSpec,
    purpose: &str,
    asked: &[&str],
    fields: &[&str],
) -> Command {
    let dataset = spec.dataset.clone();
    let grant = fx.grant(spec);
    let header = QueryHeader { dataset, purpose: purpose.into(), ..header(Some(grant), asked) };
    record(&fx.jingansi.key, header, released(fields))
}

fn enterprise_grant(fx: &Fixture) -> civmesh_policy::GrantSpec {
    grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection")
}

fn sensitive_grant(fx: &Fixture) -> civmesh_policy::GrantSpec {
    civmesh_policy::GrantSpec {
        legal_basis: civmesh_policy::model::LegalBasis::Consent,
        assessment: Some(ASSESSMENT),
        ..grant_spec(RESIDENTS, &fx.jingansi.org, &["name", "lives_alone_80_plus"], "elderly-care")
    }
}

fn consent(fx: &Fixture, covers_sensitive: bool) -> Command {
    Command::RecordConsent {
        subject: SUBJECT,
        dataset: RESIDENTS.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "elderly-care".into(),
        given: true,
        covers_sensitive,
        channel: "online_form".into(),
    }
}

/// The unjustified permits, each with the one flaw its name says.
// A table of cases: one row per rule, however long the table grows.
#[allow(clippy::too_many_lines)]
fn unjustified_permits() -> Vec<(&'static str, Setup)> {
    vec![
        ("a window that has ended", |fx| {
            let spec = civmesh_policy::GrantSpec {
                valid_from_ms: NOW_MS - 10 * DAY_MS,
                valid_until_ms: NOW_MS - DAY_MS,
                ..enterprise_grant(fx)
            };
            permit_under(fx, spec, "inspection", &["name"], &["name"])
        }),
        ("a window not yet begun", |fx| {
            let spec = civmesh_policy::GrantSpec {
                valid_from_ms: NOW_MS + DAY_MS,
                valid_until_ms: NOW_MS + 30 * DAY_MS,
                ..enterprise_grant(fx)
            };
            permit_under(fx, spec, "inspection", &["name"], &["name"])
        }),
        ("a revoked grant", |fx| {
            let spec = enterprise_grant(fx);
            let command = permit_under(fx, spec, "inspection", &["name"], &["name"]);
            let grant_id = fx.state.grants.keys().last().copied().unwrap();
            let revoke = Command::RevokeGrant { grant_id, reason: "visits done".into() };
            apply(&mut fx.state, &fx.market.key, revoke).unwrap();
            command
        }),
        ("another purpose than the grant's", |fx| {
            let spec = enterprise_grant(fx);
            permit_under(fx, spec, "marketing", &["name"], &["name"])
        }),
        ("a negative-listed field", |fx| {
            let spec = enterprise_grant(fx);
            let command = permit_under(fx, spec, "inspection", &["name"], &["name"]);
            let entry = Command::AddNegativeListEntry {
                dataset: ENTERPRISES.into(),
                field: Some("name".into()),
                reason: "r".into(),
            };
            apply(&mut fx.state, &fx.market.key, entry).unwrap();
            command
        }),
        ("a negative-listed dataset", |fx| {
            let spec = enterprise_grant(fx);
            let command = permit_under(fx, spec, "inspection", &["name"], &["name"]);
            let entry = Command::AddNegativeListEntry {
                dataset: ENTERPRISES.into(),
                field: None,
                reason: "r".into(),
            };
            apply(&mut fx.state, &fx.market.key, entry).unwrap();
            command
        }),
        ("a consent-based grant without the subject's consent", |fx| {
            let spec = sensitive_grant(fx);
            permit_under(fx, spec, "elderly-care", &["name"], &["name"])
        }),
        ("a sensitive field without separate consent", |fx| {
            let spec = sensitive_grant(fx);
            let command = permit_under(
                fx,
                spec,
                "elderly-care",
                &["name", "lives_alone_80_plus"],
                &["name", "lives_alone_80_plus"],
            );
            let partial = consent(fx, false);
            apply(&mut fx.state, &fx.civil.key, partial).unwrap();
            command
        }),
        ("a field the query did not ask for", |fx| {
            let spec =
                grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "operating_address"], "inspection");
            permit_under(fx, spec, "inspection", &["name"], &["name", "operating_address"])
        }),
        ("a subject the query did not name", |fx| {
            let spec = enterprise_grant(fx);
            let grant = fx.grant(spec);
            let outcome = AccessOutcome::Permit {
                released: vec![SubjectRelease {
                    subject: SubjectKeyHash([8; 32]),
                    fields: vec!["name".into()],
                }],
            };
            record(&fx.jingansi.key, header(Some(grant), &["name"]), outcome)
        }),
    ]
}

/// Every rule `decide` applies is applied again at apply time, on the state
/// the record reaches: a permit the state does not justify is rejected
/// with `PermitNotJustified` and changes nothing but the counters.
#[test]
fn apply_time_rejustifies_window_revocation_purpose_lists_consent_and_subjects() {
    for (name, setup) in unjustified_permits() {
        let mut fx = Fixture::new();
        let command = setup(&mut fx);
        let Command::RecordAccess(record) = &command else { panic!("{name}: not an access record") };
        let dataset = record.request.unverified_payload().unwrap().dataset;
        let owner = if dataset == RESIDENTS { &fx.civil.key } else { &fx.market.key };
        let before = fx.state.clone();
        let outcome = apply(&mut fx.state, owner, command);
        assert_eq!(
            outcome.map_err(|rejection| rejection.code),
            Err(RejectionCode::PermitNotJustified),
            "{name}"
        );
        assert_eq!(fx.state, after_rejection(&before, &fx.state), "{name} changed the state");
    }
    // The same permits are accepted once justified: the cases fail for
    // their flaw alone.
    let mut fx = Fixture::new();
    let spec = sensitive_grant(&fx);
    let command = permit_under(
        &mut fx,
        spec,
        "elderly-care",
        &["name", "lives_alone_80_plus"],
        &["name", "lives_alone_80_plus"],
    );
    let full = consent(&fx, true);
    apply(&mut fx.state, &fx.civil.key, full).unwrap();
    assert!(apply(&mut fx.state, &fx.civil.key, command).is_ok());
}
