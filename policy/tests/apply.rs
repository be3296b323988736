//! `apply`: who may do what, bad input as typed rejections, and replicas
//! that stay equal.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use civmesh_certs::SignedEnvelope;
use civmesh_policy::model::{FieldClass, FieldSpec, FieldType, LegalBasis, SharingCategory, SubjectKeyHash};
use civmesh_policy::{Applied, Command, DatasetSpec, RejectionCode};
use support::*;

#[test]
fn authority_is_checked_per_command() {
    let mut fx = Fixture::new();
    let outsider_cert = fx.outsider.certificate_der.clone();
    let jingansi_org = fx.jingansi.org.clone();
    let jingansi_id = fx.jingansi.key.node_id();
    let negative = |field: &str| Command::AddNegativeListEntry {
        dataset: ENTERPRISES.into(),
        field: Some(field.into()),
        reason: "law enforcement only".into(),
    };
    let consent = Command::RecordConsent {
        subject: SubjectKeyHash([1; 32]),
        dataset: RESIDENTS.into(),
        grantee: jingansi_org.clone(),
        purpose: "elderly-care".into(),
        given: true,
        covers_sensitive: false,
        channel: "street_window".into(),
    };
    let republish_as_other_owner =
        Command::PublishDataset(DatasetSpec { title: "hijack".into(), ..enterprise_dataset() });
    type Case<'a> = (&'a str, &'a civmesh_certs::NodeKey, Command, Option<RejectionCode>);
    let cases: Vec<Case> = vec![
        (
            "street admits",
            &fx.jingansi.key,
            Command::AdmitMember { certificate_der: outsider_cert.clone() },
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "department revokes",
            &fx.market.key,
            Command::RevokeMember { node_id: jingansi_id, reason: "x".into() },
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "CA publishes",
            &fx.ca_key,
            Command::PublishDataset(enterprise_dataset()),
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "outsider files demand",
            &fx.outsider.key,
            Command::FileDemand {
                dataset: ENTERPRISES.into(),
                fields: BTreeSet::from(["name".to_string()]),
                purpose: "p".into(),
                legal_basis: LegalBasis::StatutoryDuty,
            },
            Some(RejectionCode::SignerUnknown),
        ),
        (
            "other department edits negative list",
            &fx.civil.key,
            negative("legal_rep_phone"),
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "street grants",
            &fx.jingansi.key,
            Command::IssueGrant(grant_spec(ENTERPRISES, &jingansi_org, &["name"], "p")),
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "other department republishes",
            &fx.civil.key,
            republish_as_other_owner,
            Some(RejectionCode::NotAuthorised),
        ),
        (
            "unrelated street records consent",
            &fx.nanjingxilu.key,
            consent.clone(),
            Some(RejectionCode::NotAuthorised),
        ),
        ("hub admits", &fx.hub.key, Command::AdmitMember { certificate_der: outsider_cert }, None),
        ("owner edits negative list", &fx.market.key, negative("legal_rep_phone"), None),
        // The grantee used to be allowed to record consents (the access it
        // vouched for was its own); only the owner may now.
        ("grantee records consent", &fx.jingansi.key, consent.clone(), Some(RejectionCode::NotAuthorised)),
        ("owner records consent", &fx.civil.key, consent, None),
        (
            "CA revokes",
            &fx.ca_key,
            Command::RevokeMember { node_id: jingansi_id, reason: "laptop stolen".into() },
            None,
        ),
    ];
    for (name, key, command, expected) in cases {
        let before = fx.state.clone();
        let outcome = fx.state.apply(&sign(key, command), NOW_MS);
        match expected {
            None => assert!(outcome.is_ok(), "{name}: {outcome:?}"),
            Some(code) => {
                assert_eq!(outcome.as_ref().map_err(|r| r.code), Err(code), "{name}");
                assert_eq!(
                    fx.state,
                    after_rejection(&before, &fx.state),
                    "{name}: a rejected command changed the state"
                );
            }
        }
    }
    // A revoked member's commands are refused from then on.
    let demand = Command::FileDemand {
        dataset: ENTERPRISES.into(),
        fields: BTreeSet::from(["name".to_string()]),
        purpose: "p".into(),
        legal_basis: LegalBasis::StatutoryDuty,
    };
    assert_eq!(
        apply(&mut fx.state, &fx.jingansi.key, demand).unwrap_err().code,
        RejectionCode::SignerRevoked
    );
}

#[test]
fn bad_input_gets_typed_rejections() {
    let mut fx = Fixture::new();
    let street = fx.jingansi.org.clone();
    let mut unknown_field_grant = grant_spec(ENTERPRISES, &street, &["name", "shoe_size"], "p");
    let cases: Vec<(&str, Command, RejectionCode)> = vec![
        (
            "grant on unknown dataset",
            Command::IssueGrant(grant_spec("market-supervision/nope", &street, &["name"], "p")),
            RejectionCode::DatasetUnknown,
        ),
        (
            "grant of unknown field",
            Command::IssueGrant(unknown_field_grant.clone()),
            RejectionCode::FieldUnknown,
        ),
        (
            "revoke unknown grant",
            Command::RevokeGrant { grant_id: 999, reason: "x".into() },
            RejectionCode::GrantUnknown,
        ),
        (
            "negative-list unknown field",
            Command::AddNegativeListEntry {
                dataset: ENTERPRISES.into(),
                field: Some("x".into()),
                reason: "r".into(),
            },
            RejectionCode::FieldUnknown,
        ),
        (
            "schema without subject key",
            Command::PublishDataset(DatasetSpec {
                subject_key_field: "missing".into(),
                ..enterprise_dataset()
            }),
            RejectionCode::FieldUnknown,
        ),
        (
            "schema with duplicate field",
            Command::PublishDataset(DatasetSpec {
                fields: vec![
                    FieldSpec {
                        name: "a".into(),
                        field_type: FieldType::Text,
                        class: FieldClass::Public
                    };
                    2
                ],
                subject_key_field: "a".into(),
                ..enterprise_dataset()
            }),
            RejectionCode::InvalidArgument,
        ),
        (
            "scope field not in the schema",
            Command::PublishDataset(DatasetSpec {
                scope_fields: vec!["grid".into()],
                ..enterprise_dataset()
            }),
            RejectionCode::FieldUnknown,
        ),
        (
            "scope field declared twice",
            Command::PublishDataset(DatasetSpec {
                scope_fields: vec!["street".into(), "street".into()],
                ..enterprise_dataset()
            }),
            RejectionCode::InvalidArgument,
        ),
        (
            "grant scoped by a field that is not a scope field",
            Command::IssueGrant({
                let mut g = grant_spec(ENTERPRISES, &street, &["name"], "p");
                g.scope = vec![civmesh_policy::model::ScopeCondition {
                    field: "name".into(),
                    allowed: [civmesh_policy::model::FieldValue::Text("x".into())].into(),
                }];
                g
            }),
            RejectionCode::InvalidArgument,
        ),
        (
            "grant scoped by a street with no value",
            Command::IssueGrant({
                let mut g = grant_spec(ENTERPRISES, &street, &["name"], "p");
                g.scope = vec![civmesh_policy::model::ScopeCondition {
                    field: "street".into(),
                    allowed: Default::default(),
                }];
                g
            }),
            RejectionCode::InvalidArgument,
        ),
        (
            "empty window",
            Command::IssueGrant({
                let mut g = grant_spec(ENTERPRISES, &street, &["name"], "p");
                g.valid_until_ms = g.valid_from_ms;
                g
            }),
            RejectionCode::InvalidArgument,
        ),
        (
            "grant to unknown org",
            Command::IssueGrant(grant_spec(
                ENTERPRISES,
                &civmesh_certs::OrgId::new("street/ghost").unwrap(),
                &["name"],
                "p",
            )),
            RejectionCode::MemberUnknown,
        ),
    ];
    for (name, command, code) in cases {
        assert_eq!(apply(&mut fx.state, &fx.market.key, command).map_err(|r| r.code), Err(code), "{name}");
    }
    unknown_field_grant.fields.remove("shoe_size");
    assert!(matches!(
        apply(&mut fx.state, &fx.market.key, Command::IssueGrant(unknown_field_grant)),
        Ok(Applied::GrantIssued(1))
    ));

    // Future-dated, stale, replayed and forged commands.
    let demand = Command::FileDemand {
        dataset: ENTERPRISES.into(),
        fields: BTreeSet::from(["name".to_string()]),
        purpose: "p".into(),
        legal_basis: LegalBasis::StatutoryDuty,
    };
    let future = SignedEnvelope::sign(&fx.jingansi.key, &demand, NOW_MS + 3_600_000).unwrap();
    assert_eq!(fx.state.apply(&future, NOW_MS).unwrap_err().code, RejectionCode::FutureDated);
    let stale = SignedEnvelope::sign(&fx.jingansi.key, &demand, NOW_MS - 3_600_000).unwrap();
    assert_eq!(fx.state.apply(&stale, NOW_MS).unwrap_err().code, RejectionCode::Stale);
    let once = sign(&fx.jingansi.key, demand.clone());
    assert!(fx.state.apply(&once, NOW_MS).is_ok());
    assert_eq!(fx.state.apply(&once, NOW_MS + 1).unwrap_err().code, RejectionCode::Replayed);
    let genuine = sign(&fx.jingansi.key, demand).to_bytes().unwrap();
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = SignedEnvelope::from_bytes(&forged).unwrap();
    // (At NOW_MS + 1: the log's entry time never goes back.)
    assert_eq!(fx.state.apply(&forged, NOW_MS + 1).unwrap_err().code, RejectionCode::SignatureInvalid);
}

#[test]
fn genesis_comes_first_and_once() {
    let mut fx = Fixture::new();
    let again = Command::Genesis {
        federation_name: "again".into(),
        ca_certificate_der: fx.state.federation.as_ref().unwrap().ca_certificate_der.clone(),
        founding_member_certificates_der: vec![],
    };
    assert_eq!(apply(&mut fx.state, &fx.ca_key, again).unwrap_err().code, RejectionCode::GenesisOrder);
    let mut empty = civmesh_policy::PolicyState::default();
    let publish = sign(&fx.market.key, Command::PublishDataset(enterprise_dataset()));
    assert_eq!(empty.apply(&publish, NOW_MS).unwrap_err().code, RejectionCode::GenesisOrder);
}

#[test]
fn only_the_ca_commits_the_subject_key_secret_and_only_once() {
    let mut fx = Fixture::new();
    let commitment = civmesh_policy::model::subject_key_commitment(b"the federation's secret");
    assert_ne!(commitment, civmesh_policy::model::subject_key_commitment(b"another secret"));
    let commit = || Command::CommitSubjectKeySecret { commitment };
    assert_eq!(apply(&mut fx.state, &fx.hub.key, commit()).unwrap_err().code, RejectionCode::NotAuthorised);
    assert_eq!(fx.state.subject_key_commitment, None);
    apply(&mut fx.state, &fx.ca_key, commit()).unwrap();
    assert_eq!(fx.state.subject_key_commitment, Some(commitment));
    let other = Command::CommitSubjectKeySecret { commitment: [7; 32] };
    assert_eq!(apply(&mut fx.state, &fx.ca_key, other).unwrap_err().code, RejectionCode::InvalidArgument);
    assert_eq!(fx.state.subject_key_commitment, Some(commitment));
}

#[test]
fn republishing_bumps_the_version_and_keeps_the_owner() {
    let mut fx = Fixture::new();
    let spec = DatasetSpec { sharing: SharingCategory::Unconditional, ..enterprise_dataset() };
    apply(&mut fx.state, &fx.market.key, Command::PublishDataset(spec)).unwrap();
    let dataset = &fx.state.datasets[ENTERPRISES];
    assert_eq!(dataset.version, 2);
    assert_eq!(dataset.owner.as_str(), "dept/market-supervision");
    assert_eq!(dataset.sharing, SharingCategory::Unconditional);
}

#[test]
fn a_command_may_be_issued_five_minutes_either_side_of_its_entry_time() {
    let mut fx = Fixture::new();
    let minutes_ms = |minutes: u64| minutes * 60_000;
    let cases = [
        (NOW_MS - minutes_ms(5), None),
        (NOW_MS - minutes_ms(5) - 1, Some(RejectionCode::Stale)),
        (NOW_MS + minutes_ms(5), None),
        (NOW_MS + minutes_ms(5) + 1, Some(RejectionCode::FutureDated)),
    ];
    for (issued_at_ms, expected) in cases {
        let demand = Command::FileDemand {
            dataset: ENTERPRISES.into(),
            fields: BTreeSet::from(["name".to_string()]),
            purpose: "p".into(),
            legal_basis: LegalBasis::StatutoryDuty,
        };
        let envelope = SignedEnvelope::sign(&fx.jingansi.key, &demand, issued_at_ms).unwrap();
        let outcome = fx.state.apply(&envelope, NOW_MS);
        assert_eq!(outcome.err().map(|rejection| rejection.code), expected, "issued at {issued_at_ms}");
    }
}

#[test]
fn grants_respect_sharing_and_the_negative_list_and_are_revoked_once() {
    let mut fx = Fixture::new();
    let street = fx.jingansi.org.clone();
    let private = DatasetSpec {
        id: "market-supervision/internal".into(),
        sharing: SharingCategory::NotShared,
        ..enterprise_dataset()
    };
    apply(&mut fx.state, &fx.market.key, Command::PublishDataset(private)).unwrap();
    let listed = Command::AddNegativeListEntry {
        dataset: ENTERPRISES.into(),
        field: Some("legal_rep_phone".into()),
        reason: "r".into(),
    };
    apply(&mut fx.state, &fx.market.key, listed).unwrap();
    let granted = fx.grant(grant_spec(ENTERPRISES, &street, &["name"], "p"));
    let reason_at_bound = "r".repeat(civmesh_policy::model::REASON_BYTES_MAX);
    let cases: Vec<(&str, Command, Option<RejectionCode>)> = vec![
        (
            "a grant on a dataset not shared",
            Command::IssueGrant(grant_spec("market-supervision/internal", &street, &["name"], "p")),
            Some(RejectionCode::DatasetNotShared),
        ),
        (
            "a grant of a negative-listed field",
            Command::IssueGrant(grant_spec(ENTERPRISES, &street, &["name", "legal_rep_phone"], "p")),
            Some(RejectionCode::NegativeListed),
        ),
        (
            "a revocation with a reason at the bound",
            Command::RevokeGrant { grant_id: granted, reason: reason_at_bound },
            None,
        ),
        (
            "the same grant revoked again",
            Command::RevokeGrant { grant_id: granted, reason: "again".into() },
            Some(RejectionCode::GrantAlreadyRevoked),
        ),
    ];
    for (case, command, expected) in cases {
        let outcome = apply(&mut fx.state, &fx.market.key, command);
        assert_eq!(outcome.err().map(|rejection| rejection.code), expected, "{case}");
    }
    let whole_dataset =
        Command::AddNegativeListEntry { dataset: ENTERPRISES.into(), field: None, reason: "r".into() };
    apply(&mut fx.state, &fx.market.key, whole_dataset).unwrap();
    let name_only = Command::IssueGrant(grant_spec(ENTERPRISES, &street, &["name"], "p"));
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, name_only).unwrap_err().code,
        RejectionCode::NegativeListed
    );
}

#[test]
fn a_member_is_revoked_once_and_its_certificate_never_admitted_again() {
    let mut fx = Fixture::new();
    let street = fx.jingansi.key.node_id();
    let revoke = |reason: &str| Command::RevokeMember { node_id: street, reason: reason.into() };
    apply(&mut fx.state, &fx.ca_key, revoke("key stolen")).unwrap();
    assert_eq!(
        apply(&mut fx.state, &fx.ca_key, revoke("again")).unwrap_err().code,
        RejectionCode::MemberUnknown
    );
    let readmit = Command::AdmitMember { certificate_der: fx.jingansi.certificate_der.clone() };
    assert_eq!(
        apply(&mut fx.state, &fx.hub.key, readmit).unwrap_err().code,
        RejectionCode::CertificateInvalid
    );
}

#[test]
fn the_founding_members_include_a_hub() {
    let fx = Fixture::new();
    let ca_der = fx.state.federation.as_ref().unwrap().ca_certificate_der.clone();
    let genesis = |founders: &[&Node]| Command::Genesis {
        federation_name: "test city".into(),
        ca_certificate_der: ca_der.clone(),
        founding_member_certificates_der: founders.iter().map(|node| node.certificate_der.clone()).collect(),
    };
    let cases: [(&[&Node], Option<RejectionCode>); 3] = [
        (&[&fx.jingansi, &fx.market], Some(RejectionCode::InvalidArgument)),
        (&[&fx.hub], None),
        (&[&fx.jingansi, &fx.hub], None),
    ];
    for (founders, expected) in cases {
        let mut state = civmesh_policy::PolicyState::default();
        let outcome = apply(&mut state, &fx.ca_key, genesis(founders));
        assert_eq!(outcome.err().map(|rejection| rejection.code), expected, "{} founders", founders.len());
    }
}

#[test]
fn only_known_signers_spend_nonces_the_ca_included() {
    let mut fx = Fixture::new();
    let before = fx.state.recent_commands.clone();
    let stranger = sign(&fx.outsider.key, Command::RevokeGrant { grant_id: 1, reason: "r".into() });
    assert_eq!(fx.state.apply(&stranger, NOW_MS).unwrap_err().code, RejectionCode::SignerUnknown);
    assert_eq!(fx.state.recent_commands, before, "a stranger's nonce is not kept");
    // The CA's commands are applied once, like a member's.
    let admit =
        sign(&fx.ca_key, Command::AdmitMember { certificate_der: fx.outsider.certificate_der.clone() });
    fx.state.apply(&admit, NOW_MS).unwrap();
    let revoke =
        sign(&fx.ca_key, Command::RevokeMember { node_id: fx.outsider.key.node_id(), reason: "r".into() });
    fx.state.apply(&revoke, NOW_MS).unwrap();
    assert_eq!(fx.state.apply(&revoke, NOW_MS).unwrap_err().code, RejectionCode::Replayed);
}
