//! Access records at apply time: both signatures, the owner's authority,
//! replay, and permits that the policy state must justify.

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
    assert_eq!(apply(&mut fx.state, &fx.market.key, permit), Ok(Applied::AccessLogged(1)));
    assert_eq!(fx.state.access_log.len(), 2);
    assert_eq!(fx.state.access_log[1].requester, fx.jingansi.key.node_id());
    assert_eq!(fx.state.access_log[1].owner, fx.market.key.node_id());
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
    assert_eq!(fx.state.access_log.len(), 1);
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
