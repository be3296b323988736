//! `decide` and `catalog match`, table-driven over the rules, plus the
//! street-and-department scenarios the node relies on.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use civmesh_policy::decide::REQUEST_FIELDS_MAX;
use civmesh_policy::model::{FieldValue, LegalBasis, MaskingRule, ScopeCondition, SubjectKeyHash};
use civmesh_policy::{
    catalog_match, decide, AccessRequest, Command, Decision, FieldAction, ReasonCode, RecordPlan,
};
use support::*;

fn row(subject: u8, district: &str) -> Row {
    Row {
        subject: SubjectKeyHash([subject; 32]),
        values: BTreeMap::from([("district".to_string(), FieldValue::Text(district.into()))]),
    }
}

fn request(fx: &Fixture, dataset: &str, fields: &[&str], purpose: &str, grant: Option<u64>) -> AccessRequest {
    AccessRequest {
        requester: fx.jingansi.key.node_id(),
        dataset: dataset.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        purpose: purpose.into(),
        grant,
    }
}

#[test]
fn a_street_without_a_grant_is_denied() {
    let fx = Fixture::new();
    let decision = decide(
        &fx.state,
        &request(&fx, ENTERPRISES, &["name"], "inspection", None),
        &[row(1, "jingan")],
        NOW_MS,
    );
    assert_eq!(decision, Decision::Deny(ReasonCode::GrantRequired));
}

#[test]
fn a_grant_for_two_fields_releases_exactly_those_masked_as_granted() {
    let mut fx = Fixture::new();
    let mut spec = grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "legal_rep_phone"], "inspection");
    spec.masking.insert("legal_rep_phone".into(), MaskingRule::KeepLast(4));
    let grant = fx.grant(spec);
    let wanted = ["name", "legal_rep_phone", "operating_address"];
    let decision = decide(
        &fx.state,
        &request(&fx, ENTERPRISES, &wanted, "inspection", Some(grant)),
        &[row(1, "jingan")],
        NOW_MS,
    );
    assert!(decision.is_permit());
    assert_eq!(decision.action_for(0, "name"), FieldAction::Release);
    assert_eq!(decision.action_for(0, "legal_rep_phone"), FieldAction::Mask(MaskingRule::KeepLast(4)));
    assert_eq!(
        decision.action_for(0, "operating_address"),
        FieldAction::Withhold(ReasonCode::FieldNotGranted)
    );
}

#[test]
fn grant_rules_each_deny_with_their_reason() {
    let mut fx = Fixture::new();
    let base = grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "district"], "inspection");
    let good = fx.grant(base.clone());
    let expired = fx.grant(grant_spec_window(&base, NOW_MS - 10 * DAY_MS, NOW_MS - DAY_MS));
    let future = fx.grant(grant_spec_window(&base, NOW_MS + DAY_MS, NOW_MS + 10 * DAY_MS));
    let revoked = fx.grant(base.clone());
    apply(&mut fx.state, &fx.market.key, Command::RevokeGrant { grant_id: revoked, reason: "ended".into() })
        .unwrap();
    let other_street = fx.grant(grant_spec(ENTERPRISES, &fx.nanjingxilu.org, &["name"], "inspection"));
    let residents = fx.grant(grant_spec(RESIDENTS, &fx.jingansi.org, &["name"], "inspection"));

    let cases: Vec<(&str, AccessRequest, ReasonCode)> = vec![
        (
            "expired",
            request(&fx, ENTERPRISES, &["name"], "inspection", Some(expired)),
            ReasonCode::GrantExpired,
        ),
        (
            "not yet valid",
            request(&fx, ENTERPRISES, &["name"], "inspection", Some(future)),
            ReasonCode::GrantNotYetValid,
        ),
        (
            "revoked",
            request(&fx, ENTERPRISES, &["name"], "inspection", Some(revoked)),
            ReasonCode::GrantRevoked,
        ),
        (
            "someone else's grant",
            request(&fx, ENTERPRISES, &["name"], "inspection", Some(other_street)),
            ReasonCode::GrantNotForRequester,
        ),
        (
            "grant of another dataset",
            request(&fx, ENTERPRISES, &["name"], "inspection", Some(residents)),
            ReasonCode::GrantDatasetMismatch,
        ),
        (
            "unknown grant",
            request(&fx, ENTERPRISES, &["name"], "inspection", Some(999)),
            ReasonCode::GrantUnknown,
        ),
        (
            "purpose not in grant",
            request(&fx, ENTERPRISES, &["name"], "marketing", Some(good)),
            ReasonCode::PurposeMismatch,
        ),
        (
            "unknown dataset",
            request(&fx, "x/y", &["name"], "inspection", Some(good)),
            ReasonCode::DatasetUnknown,
        ),
        (
            "field not in schema",
            request(&fx, ENTERPRISES, &["shoe_size"], "inspection", Some(good)),
            ReasonCode::FieldUnknown,
        ),
        (
            "only ungranted fields",
            request(&fx, ENTERPRISES, &["operating_address"], "inspection", Some(good)),
            ReasonCode::FieldNotGranted,
        ),
        ("no fields", request(&fx, ENTERPRISES, &[], "inspection", Some(good)), ReasonCode::RequestInvalid),
    ];
    for (name, request, reason) in cases {
        assert_eq!(
            decide(&fx.state, &request, &[row(1, "jingan")], NOW_MS),
            Decision::Deny(reason),
            "{name}"
        );
    }
    let mut outsider = request(&fx, ENTERPRISES, &["name"], "inspection", Some(good));
    outsider.requester = fx.outsider.key.node_id();
    assert_eq!(
        decide(&fx.state, &outsider, &[row(1, "jingan")], NOW_MS),
        Decision::Deny(ReasonCode::RequesterNotMember)
    );
    let ok = request(&fx, ENTERPRISES, &["name"], "inspection", Some(good));
    assert!(decide(&fx.state, &ok, &[row(1, "jingan")], NOW_MS).is_permit());
    // Expiry is exclusive at valid_until.
    assert_eq!(
        decide(&fx.state, &ok, &[row(1, "jingan")], base.valid_until_ms),
        Decision::Deny(ReasonCode::GrantExpired)
    );
}

fn grant_spec_window(base: &civmesh_policy::GrantSpec, from: u64, until: u64) -> civmesh_policy::GrantSpec {
    civmesh_policy::GrantSpec { valid_from_ms: from, valid_until_ms: until, ..base.clone() }
}

#[test]
fn negative_list_wins_and_not_shared_denies() {
    let mut fx = Fixture::new();
    let grant =
        fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "legal_rep_phone"], "inspection"));
    let entry = Command::AddNegativeListEntry {
        dataset: ENTERPRISES.into(),
        field: Some("legal_rep_phone".into()),
        reason: "identity numbers stay with the registry".into(),
    };
    apply(&mut fx.state, &fx.market.key, entry).unwrap();
    let wanted = request(&fx, ENTERPRISES, &["name", "legal_rep_phone"], "inspection", Some(grant));
    let decision = decide(&fx.state, &wanted, &[row(1, "jingan")], NOW_MS);
    assert_eq!(decision.action_for(0, "legal_rep_phone"), FieldAction::Withhold(ReasonCode::NegativeListed));
    assert_eq!(decision.action_for(0, "name"), FieldAction::Release);

    let whole =
        Command::AddNegativeListEntry { dataset: ENTERPRISES.into(), field: None, reason: "frozen".into() };
    apply(&mut fx.state, &fx.market.key, whole).unwrap();
    assert_eq!(
        decide(&fx.state, &wanted, &[row(1, "jingan")], NOW_MS),
        Decision::Deny(ReasonCode::NegativeListed)
    );

    let not_shared = civmesh_policy::DatasetSpec {
        sharing: civmesh_policy::model::SharingCategory::NotShared,
        ..resident_dataset()
    };
    let residents_grant = fx.grant(grant_spec(RESIDENTS, &fx.jingansi.org, &["name"], "care"));
    apply(&mut fx.state, &fx.civil.key, Command::PublishDataset(not_shared)).unwrap();
    let wanted = request(&fx, RESIDENTS, &["name"], "care", Some(residents_grant));
    assert_eq!(
        decide(&fx.state, &wanted, &[row(1, "jingan")], NOW_MS),
        Decision::Deny(ReasonCode::DatasetNotShared)
    );
}

#[test]
fn scope_filters_records() {
    let mut fx = Fixture::new();
    let mut spec = grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "inspection");
    spec.scope = vec![ScopeCondition {
        field: "district".into(),
        allowed: BTreeSet::from([FieldValue::Text("jingan".into())]),
    }];
    let grant = fx.grant(spec);
    let wanted = request(&fx, ENTERPRISES, &["name"], "inspection", Some(grant));
    let Decision::Permit { records, .. } =
        decide(&fx.state, &wanted, &[row(1, "jingan"), row(2, "putuo")], NOW_MS)
    else {
        panic!("expected a permit");
    };
    assert_eq!(
        records,
        vec![RecordPlan::Release { sensitive_withheld: false }, RecordPlan::Withhold(ReasonCode::OutOfScope)]
    );
}

#[test]
fn consent_based_grants_need_consent_and_separate_consent_for_sensitive_fields() {
    let mut fx = Fixture::new();
    let mut spec = grant_spec(RESIDENTS, &fx.jingansi.org, &["name", "lives_alone_80_plus"], "elderly-care");
    spec.legal_basis = LegalBasis::Consent;
    spec.assessment = Some(ASSESSMENT);
    let grant = fx.grant(spec);
    let consent = |subject: u8, given: bool, covers_sensitive: bool| Command::RecordConsent {
        subject: SubjectKeyHash([subject; 32]),
        dataset: RESIDENTS.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "elderly-care".into(),
        given,
        covers_sensitive,
        channel: "street_window".into(),
    };
    let (with_separate, plain, withdrawn) =
        (consent(1, true, true), consent(2, true, false), consent(3, true, true));
    let withdraw = consent(3, false, true);
    for command in [with_separate, plain, withdrawn, withdraw] {
        apply(&mut fx.state, &fx.civil.key, command).unwrap();
    }
    let rows = [row(1, "jingan"), row(2, "jingan"), row(3, "jingan"), row(4, "jingan")];
    let wanted = request(&fx, RESIDENTS, &["name", "lives_alone_80_plus"], "elderly-care", Some(grant));
    let decision = decide(&fx.state, &wanted, &rows, NOW_MS);
    assert_eq!(decision.action_for(0, "lives_alone_80_plus"), FieldAction::Release);
    assert_eq!(decision.action_for(1, "name"), FieldAction::Release);
    assert_eq!(
        decision.action_for(1, "lives_alone_80_plus"),
        FieldAction::Withhold(ReasonCode::SensitiveConsentMissing)
    );
    assert_eq!(decision.action_for(2, "name"), FieldAction::Withhold(ReasonCode::ConsentMissing));
    assert_eq!(decision.action_for(3, "name"), FieldAction::Withhold(ReasonCode::ConsentMissing));

    // Asking for the sensitive field alone: a plain consent releases
    // nothing of its record, since all that would be released is sensitive.
    let sensitive_only = request(&fx, RESIDENTS, &["lives_alone_80_plus"], "elderly-care", Some(grant));
    let Decision::Permit { records, .. } = decide(&fx.state, &sensitive_only, &rows[..2], NOW_MS) else {
        panic!("the separately consented record is released");
    };
    assert_eq!(
        records,
        vec![
            RecordPlan::Release { sensitive_withheld: false },
            RecordPlan::Withhold(ReasonCode::SensitiveConsentMissing)
        ]
    );
}

#[test]
fn a_request_names_one_to_the_bound_of_fields() {
    let fx = Fixture::new();
    let fields = |count: usize| (0..count).map(|index| format!("field_{index}")).collect::<Vec<_>>();
    let asking =
        |fields: Vec<String>| AccessRequest { fields, ..request(&fx, ENTERPRISES, &[], "inspection", None) };
    let cases = [
        (0, ReasonCode::RequestInvalid),
        (REQUEST_FIELDS_MAX, ReasonCode::FieldUnknown),
        (REQUEST_FIELDS_MAX + 1, ReasonCode::RequestInvalid),
    ];
    for (count, reason) in cases {
        let decision = decide(&fx.state, &asking(fields(count)), &[row(1, "jingan")], NOW_MS);
        assert!(!decision.is_permit(), "{count} fields");
        assert_eq!(decision, Decision::Deny(reason), "{count} fields");
    }
}

#[test]
fn catalog_match_reports_gaps_and_expiry() {
    let mut fx = Fixture::new();
    let demand = |dataset: &str, fields: &[&str]| Command::FileDemand {
        dataset: dataset.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        purpose: "inspection".into(),
        legal_basis: LegalBasis::StatutoryDuty,
    };
    apply(&mut fx.state, &fx.jingansi.key, demand("housing/rentals", &["tenant"])).unwrap();
    apply(&mut fx.state, &fx.jingansi.key, demand(ENTERPRISES, &["name", "operating_address"])).unwrap();
    apply(&mut fx.state, &fx.nanjingxilu.key, demand(ENTERPRISES, &["name"])).unwrap();
    let mut spec = grant_spec(ENTERPRISES, &fx.nanjingxilu.org, &["name"], "inspection");
    spec.valid_until_ms = NOW_MS + 3 * DAY_MS;
    let expiring = fx.grant(spec);
    let report = catalog_match(&fx.state, NOW_MS, 7);
    assert_eq!(report.demands_without_producer, vec![1]);
    assert_eq!(report.demands_without_grant, vec![2]);
    assert_eq!(report.grants_expiring, vec![expiring]);
    assert_eq!(report.datasets_without_demand, vec![RESIDENTS.to_string()]);
    assert!(catalog_match(&fx.state, NOW_MS, 1).grants_expiring.is_empty());
    // A grant no longer covers once its window ends, even at its last instant.
    let ended = catalog_match(&fx.state, NOW_MS + 3 * DAY_MS, 7);
    assert_eq!((ended.demands_without_grant, ended.grants_expiring), (vec![2, 3], vec![]));
    // A grant covers only the demand of its grantee, for its purpose.
    let wanted = ["name", "operating_address"];
    fx.grant(grant_spec(ENTERPRISES, &fx.nanjingxilu.org.clone(), &wanted, "inspection"));
    fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org.clone(), &wanted, "audit"));
    assert_eq!(catalog_match(&fx.state, NOW_MS, 7).demands_without_grant, vec![2]);
    // A revoked grant covers nothing.
    let revoke = Command::RevokeGrant { grant_id: expiring, reason: "ended".into() };
    apply(&mut fx.state, &fx.market.key, revoke).unwrap();
    assert_eq!(catalog_match(&fx.state, NOW_MS, 7).demands_without_grant, vec![2]);
}
