//! Demands with a reason and a date, their status, and the owner's refusal;
//! the warnings an owner confirms before granting one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use civmesh_policy::model::LegalBasis;
use civmesh_policy::{Applied, Command, DemandSpec, DemandStatus, GrantSpec, GrantWarning, RejectionCode};
use support::*;

fn demand_spec(reason: &str) -> DemandSpec {
    DemandSpec {
        dataset: ENTERPRISES.into(),
        fields: BTreeSet::from(["name".to_string()]),
        purpose: "street-inspection".into(),
        legal_basis: LegalBasis::StatutoryDuty,
        reason: reason.into(),
        until_ms: Some(NOW_MS + 30 * DAY_MS),
    }
}

fn file(fx: &mut Fixture, reason: &str) -> u64 {
    match apply(&mut fx.state, &fx.nanjingxilu.key, Command::FileDemandWithReason(demand_spec(reason)))
        .unwrap()
    {
        Applied::DemandFiled(id) => id,
        other => panic!("{other:?}"),
    }
}

fn status(fx: &Fixture, id: u64) -> DemandStatus {
    fx.state.demand_status(&fx.state.demands[&id])
}

#[test]
fn a_demand_keeps_its_reason_and_date_and_waits_until_granted() {
    let mut fx = Fixture::new();
    let id = file(&mut fx, "visit every enterprise");
    let demand = &fx.state.demands[&id];
    assert_eq!(demand.reason.as_deref(), Some("visit every enterprise"));
    assert_eq!(demand.until_ms, Some(NOW_MS + 30 * DAY_MS));
    assert_eq!(status(&fx, id), DemandStatus::Waiting);
    let street = fx.nanjingxilu.org.clone();
    let grant = fx.grant(GrantSpec {
        demand: Some(id),
        ..grant_spec(ENTERPRISES, &street, &["name"], "street-inspection")
    });
    assert_eq!(status(&fx, id), DemandStatus::Granted { grant });
    let refusal = Command::RefuseDemand { demand_id: id, reason: "granted already".into() };
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, refusal).unwrap_err().code,
        RejectionCode::InvalidArgument
    );
}

#[test]
fn the_old_demand_command_files_without_reason() {
    let mut fx = Fixture::new();
    let key = &fx.nanjingxilu.key;
    let DemandSpec { dataset, fields, purpose, legal_basis, .. } = demand_spec("r");
    let old = Command::FileDemand { dataset, fields, purpose, legal_basis };
    let Applied::DemandFiled(id) = apply(&mut fx.state, key, old).unwrap() else { panic!() };
    assert_eq!((fx.state.demands[&id].reason.as_ref(), fx.state.demands[&id].until_ms), (None, None));
    let empty = Command::FileDemandWithReason(demand_spec(" "));
    assert_eq!(apply(&mut fx.state, key, empty).unwrap_err().code, RejectionCode::InvalidArgument);
}

#[test]
fn a_demand_names_fields_of_the_schema_and_a_purpose() {
    let mut fx = Fixture::new();
    let key = &fx.nanjingxilu.key;
    let fields = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<BTreeSet<_>>();
    let cases = [
        ("no field", DemandSpec { fields: fields(&[]), ..demand_spec("r") }, RejectionCode::InvalidArgument),
        (
            "no purpose",
            DemandSpec { purpose: String::new(), ..demand_spec("r") },
            RejectionCode::InvalidArgument,
        ),
        (
            "a field not in the schema",
            DemandSpec { fields: fields(&["colour"]), ..demand_spec("r") },
            RejectionCode::FieldUnknown,
        ),
    ];
    for (case, spec, code) in cases {
        let DemandSpec { dataset, fields, purpose, legal_basis, .. } = spec.clone();
        let old = Command::FileDemand { dataset, fields, purpose, legal_basis };
        for command in [old, Command::FileDemandWithReason(spec)] {
            assert_eq!(apply(&mut fx.state, key, command).unwrap_err().code, code, "{case}");
        }
    }
    // A dataset nobody publishes yet may be demanded, any field of it.
    let unpublished =
        DemandSpec { dataset: "housing/rentals".into(), fields: fields(&["tenant"]), ..demand_spec("r") };
    assert!(apply(&mut fx.state, key, Command::FileDemandWithReason(unpublished)).is_ok());
}

#[test]
fn only_the_owner_refuses_a_demand_once_and_no_grant_answers_it_then() {
    let mut fx = Fixture::new();
    let id = file(&mut fx, "visit every enterprise");
    let refuse = |reason: &str| Command::RefuseDemand { demand_id: id, reason: reason.into() };
    assert_eq!(
        apply(&mut fx.state, &fx.nanjingxilu.key, refuse("mine")).unwrap_err().code,
        RejectionCode::NotAuthorised
    );
    assert_eq!(
        apply(&mut fx.state, &fx.civil.key, refuse("not ours")).unwrap_err().code,
        RejectionCode::NotAuthorised
    );
    let unknown = Command::RefuseDemand { demand_id: 999, reason: "r".into() };
    assert_eq!(apply(&mut fx.state, &fx.market.key, unknown).unwrap_err().code, RejectionCode::DemandUnknown);
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, refuse("")).unwrap_err().code,
        RejectionCode::InvalidArgument
    );
    assert_eq!(apply(&mut fx.state, &fx.market.key, refuse("not necessary")), Ok(Applied::Done));
    assert_eq!(status(&fx, id), DemandStatus::Refused { reason: "not necessary".into() });
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, refuse("again")).unwrap_err().code,
        RejectionCode::InvalidArgument
    );
    let street_org = fx.nanjingxilu.org.clone();
    let answer = GrantSpec {
        demand: Some(id),
        ..grant_spec(ENTERPRISES, &street_org, &["name"], "street-inspection")
    };
    let outcome = apply(&mut fx.state, &fx.market.key, Command::IssueGrant(answer));
    assert_eq!(outcome.unwrap_err().code, RejectionCode::InvalidArgument);
}

#[test]
fn a_grant_warns_of_its_window_sensitive_fields_and_more_than_its_demand() {
    let mut fx = Fixture::new();
    let id = file(&mut fx, "visit every enterprise");
    let street = fx.nanjingxilu.org.clone();
    let answer =
        GrantSpec { demand: Some(id), ..grant_spec(ENTERPRISES, &street, &["name"], "street-inspection") };
    let until = |days: u64| NOW_MS + days * DAY_MS;
    let sensitive = || GrantSpec {
        legal_basis: LegalBasis::StatutoryDuty,
        ..grant_spec(RESIDENTS, &street, &["name", "lives_alone_80_plus"], "elderly-care")
    };
    let broader = |fields: Vec<&str>, purpose_differs, outlasts_demand| GrantWarning::BroaderThanDemand {
        demand: id,
        fields: fields.into_iter().map(str::to_string).collect(),
        purpose_differs,
        outlasts_demand,
    };
    let cases: Vec<(&str, GrantSpec, Vec<GrantWarning>)> = vec![
        ("as demanded", answer.clone(), vec![]),
        ("no demand", GrantSpec { demand: None, ..answer.clone() }, vec![]),
        (
            "ended",
            GrantSpec { valid_until_ms: NOW_MS, ..answer.clone() },
            vec![GrantWarning::Expired { valid_until_ms: NOW_MS }],
        ),
        (
            "ends in 7 days",
            GrantSpec { valid_until_ms: until(7), ..answer.clone() },
            vec![GrantWarning::ExpiresSoon { valid_until_ms: until(7) }],
        ),
        ("ends in 8 days", GrantSpec { valid_until_ms: until(8), ..answer.clone() }, vec![]),
        (
            "sensitive, statutory",
            sensitive(),
            vec![GrantWarning::SensitiveWithoutConsent { fields: vec!["lives_alone_80_plus".into()] }],
        ),
        ("sensitive, consent required", GrantSpec { consent_required: true, ..sensitive() }, vec![]),
        ("sensitive, consent basis", GrantSpec { legal_basis: LegalBasis::Consent, ..sensitive() }, vec![]),
        (
            "more fields",
            GrantSpec { fields: BTreeSet::from(["name".into(), "legal_rep_phone".into()]), ..answer.clone() },
            vec![broader(vec!["legal_rep_phone"], false, false)],
        ),
        (
            "another purpose",
            GrantSpec { purpose: "audit".into(), ..answer.clone() },
            vec![broader(vec![], true, false)],
        ),
        (
            "past the demand's date",
            GrantSpec { valid_until_ms: until(31), ..answer.clone() },
            vec![broader(vec![], false, true)],
        ),
    ];
    for (case, spec, expected) in cases {
        assert_eq!(fx.state.grant_warnings(&spec, NOW_MS), expected, "{case}");
    }
}
