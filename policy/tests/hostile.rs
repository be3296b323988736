//! Issue #14: a compromised member (a valid key that signs anything) or a
//! faulty leader gets nothing it is not granted. Each test is one thing
//! such a party tries, and the rejection that stops it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{IssueRequest, NodeCertificate, NodeKey, OrgId, ReplayGuard, Role, SignedEnvelope};
use civmesh_policy::audit::{CheckpointBody, CompactRange, CHECKPOINT_OPEN_MS_MAX};
use civmesh_policy::correction::{AutoAcceptRule, CorrectionEvent, CorrectionStage};
use civmesh_policy::model::{FieldValue, MaskingRule, ScopeCondition, SubjectKeyHash};
use civmesh_policy::state::{COMMAND_NONCES_MAX, COMMAND_NONCES_PER_SIGNER_MAX, COMMAND_SKEW_MS_MAX};
use civmesh_policy::{
    decide, AccessOutcome, AccessRecord, AccessRequest, Applied, Command, CorrectionReasonCode, Decision,
    PolicyState, QueryHeader, ReasonCode, RecordFacts, RejectionCode, SignedCommand, SubjectRelease,
};
use support::*;

const SUBJECT: SubjectKeyHash = SubjectKeyHash([9; 32]);

fn sign_at(key: &NodeKey, command: Command, at_ms: u64) -> SignedCommand {
    SignedEnvelope::sign(key, &command, at_ms).unwrap()
}

fn code(outcome: Result<Applied, civmesh_policy::Rejection>) -> Option<RejectionCode> {
    outcome.err().map(|rejection| rejection.code)
}

fn demand() -> Command {
    Command::FileDemand {
        dataset: ENTERPRISES.into(),
        fields: BTreeSet::from(["name".to_string()]),
        purpose: "inspection".into(),
        legal_basis: civmesh_policy::model::LegalBasis::StatutoryDuty,
    }
}

fn header(dataset: &str, grant: Option<u64>, fields: &[&str]) -> QueryHeader {
    QueryHeader {
        dataset: dataset.into(),
        subjects: vec![SUBJECT],
        fields: fields.iter().map(|f| f.to_string()).collect(),
        purpose: "inspection".into(),
        grant,
    }
}

fn access_at(requester: &NodeKey, header: QueryHeader, outcome: AccessOutcome, at_ms: u64) -> Command {
    Command::RecordAccess(AccessRecord {
        request: SignedEnvelope::sign(requester, &header, at_ms).unwrap(),
        outcome,
        decided_at_ms: at_ms,
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

/// A street node whose certificate is valid for one day from `NOW_MS`,
/// admitted by the hub.
fn admit_short_lived(fx: &mut Fixture) -> (NodeKey, OrgId) {
    let key = NodeKey::generate().unwrap();
    let org = OrgId::new("street/short-lived").unwrap();
    let request = IssueRequest::for_days(org.clone(), Role::Street, key.node_id(), NOW_MS, 1).unwrap();
    let der = NodeCertificate::from_pem(&fx.ca.issue(&request).unwrap()).unwrap().der().to_vec();
    apply(&mut fx.state, &fx.hub.key, Command::AdmitMember { certificate_der: der }).unwrap();
    (key, org)
}

#[test]
fn an_expired_certificate_signs_nothing_and_is_released_nothing() {
    let mut fx = Fixture::new();
    let (short, short_org) = admit_short_lived(&mut fx);
    let mut spec = grant_spec(ENTERPRISES, &short_org, &["name"], "inspection");
    spec.valid_until_ms = NOW_MS + 30 * DAY_MS;
    let grant = fx.grant(spec);
    let later = NOW_MS + 2 * DAY_MS;
    // Its own commands.
    assert_eq!(
        code(fx.state.apply(&sign_at(&short, demand(), later), later)),
        Some(RejectionCode::SignerCertificateExpired)
    );
    // A permit logged for it.
    let permit = access_at(&short, header(ENTERPRISES, Some(grant), &["name"]), released(&["name"]), later);
    assert_eq!(
        code(fx.state.apply(&sign_at(&fx.market.key, permit, later), later)),
        Some(RejectionCode::SignerCertificateExpired)
    );
    // The decision denies it too.
    let request = AccessRequest {
        requester: short.node_id(),
        dataset: ENTERPRISES.into(),
        fields: vec!["name".into()],
        purpose: "inspection".into(),
        grant: Some(grant),
    };
    let no_records: [Row; 0] = [];
    assert_eq!(
        decide(&fx.state, &request, &no_records, later),
        Decision::Deny(ReasonCode::RequesterCertificateExpired)
    );
    // The same on the day it was still valid.
    assert!(decide(&fx.state, &request, &no_records, NOW_MS + 1).is_permit());
}

#[test]
fn entry_time_never_goes_back() {
    let mut fx = Fixture::new();
    let later = NOW_MS + 10_000;
    fx.state.apply(&sign_at(&fx.jingansi.key, demand(), later), later).unwrap();
    assert_eq!(fx.state.last_entry_time_ms, later);
    let before = fx.state.clone();
    let earlier = sign_at(&fx.jingansi.key, demand(), NOW_MS);
    assert_eq!(code(fx.state.apply(&earlier, NOW_MS)), Some(RejectionCode::EntryTimeWentBack));
    let mut expected = before.clone();
    expected.commands_applied += 1;
    expected.digest = fx.state.digest;
    assert_ne!(fx.state.digest, before.digest, "the digest moves on with every command");
    assert_eq!(fx.state, expected, "a backwards entry time changes nothing but the counter and the digest");
    // The same time again is fine.
    fx.state.apply(&sign_at(&fx.jingansi.key, demand(), later), later).unwrap();
}

#[test]
fn a_revoked_grant_is_not_brought_back_by_replaying_its_issue() {
    let mut fx = Fixture::new();
    let issue =
        sign(&fx.market.key, Command::IssueGrant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "p")));
    assert_eq!(fx.state.apply(&issue, NOW_MS), Ok(Applied::GrantIssued(1)));
    apply(&mut fx.state, &fx.market.key, Command::RevokeGrant { grant_id: 1, reason: "misuse".into() })
        .unwrap();
    // Within the window: the nonce is remembered.
    assert_eq!(code(fx.state.apply(&issue, NOW_MS + 1)), Some(RejectionCode::Replayed));
    // After the window: the command is stale, measured from the latest entry time.
    let after_window = NOW_MS + COMMAND_SKEW_MS_MAX + 1;
    assert_eq!(code(fx.state.apply(&issue, after_window)), Some(RejectionCode::Stale));
    // A faulty leader stamping an old entry time is refused outright.
    assert_eq!(code(fx.state.apply(&issue, NOW_MS)), Some(RejectionCode::EntryTimeWentBack));
    assert_eq!(fx.state.grants.len(), 1);
    assert!(fx.state.grants[&1].revoked.is_some(), "the grant stays revoked");
}

#[test]
fn a_rejected_command_cannot_be_retried_once_it_would_pass() {
    let mut fx = Fixture::new();
    // A grant to an organisation with no member yet is refused...
    let outsider_org = fx.outsider.org.clone();
    let issue =
        sign(&fx.market.key, Command::IssueGrant(grant_spec(ENTERPRISES, &outsider_org, &["name"], "p")));
    assert_eq!(code(fx.state.apply(&issue, NOW_MS)), Some(RejectionCode::MemberUnknown));
    // ...and stays refused once the organisation has a member.
    let certificate_der = fx.outsider.certificate_der.clone();
    apply(&mut fx.state, &fx.hub.key, Command::AdmitMember { certificate_der }).unwrap();
    assert_eq!(code(fx.state.apply(&issue, NOW_MS)), Some(RejectionCode::Replayed));
    assert!(fx.state.grants.is_empty());
}

#[test]
fn a_signer_over_its_quota_does_not_block_another() {
    assert_eq!((COMMAND_NONCES_PER_SIGNER_MAX, COMMAND_NONCES_MAX), (50_000, 1_000_000));
    let mut fx = Fixture::new();
    // The state's quota, made small enough to reach in a test.
    fx.state.recent_commands = ReplayGuard::with_signer_quota(COMMAND_SKEW_MS_MAX, COMMAND_NONCES_MAX, 2);
    for _ in 0..2 {
        apply(&mut fx.state, &fx.jingansi.key, demand()).unwrap();
    }
    assert_eq!(code(apply(&mut fx.state, &fx.jingansi.key, demand())), Some(RejectionCode::Overloaded));
    apply(&mut fx.state, &fx.nanjingxilu.key, demand()).unwrap();
    // Its nonces leave the window; it may sign again.
    let later = NOW_MS + COMMAND_SKEW_MS_MAX + 1;
    fx.state.apply(&sign_at(&fx.jingansi.key, demand(), later), later).unwrap();
}

#[test]
fn only_the_owner_records_consent_and_names_its_channel() {
    let mut fx = Fixture::new();
    let consent = |channel: &str| Command::RecordConsent {
        subject: SUBJECT,
        dataset: RESIDENTS.into(),
        grantee: fx.jingansi.org.clone(),
        purpose: "elderly-care".into(),
        given: true,
        covers_sensitive: true,
        channel: channel.into(),
    };
    let by_grantee = consent("street_window");
    let empty_channel = consent(" ");
    let long_channel = consent(&"x".repeat(civmesh_policy::model::NAME_BYTES_MAX + 1));
    let good = consent("street_window");
    assert_eq!(code(apply(&mut fx.state, &fx.jingansi.key, by_grantee)), Some(RejectionCode::NotAuthorised));
    assert_eq!(
        code(apply(&mut fx.state, &fx.civil.key, empty_channel)),
        Some(RejectionCode::InvalidArgument)
    );
    assert_eq!(code(apply(&mut fx.state, &fx.civil.key, long_channel)), Some(RejectionCode::InvalidArgument));
    assert!(fx.state.consents.is_empty());
    apply(&mut fx.state, &fx.civil.key, good).unwrap();
    let recorded = fx.state.consents.values().next().unwrap();
    assert_eq!(
        (recorded.channel.as_str(), recorded.recorded_by.as_str()),
        ("street_window", "dept/civil-affairs")
    );
}

fn correction_event(submitter: &NodeKey, dataset: &str, stage: CorrectionStage, fields: &[&str]) -> Command {
    Command::RecordCorrectionEvent(CorrectionEvent {
        correction: [1; 32],
        dataset: dataset.into(),
        subject: SUBJECT,
        submitter: submitter.node_id(),
        stage,
        payload_sha256: [1; 32],
        fields: fields.iter().map(|f| f.to_string()).collect(),
        reason_code: None,
        version: None,
        operator: String::new(),
        record_written_at_ms: None,
    })
}

#[test]
fn a_submission_needs_a_grant_showing_every_field_unmasked() {
    let mut fx = Fixture::new();
    let street = &fx.jingansi.key;
    let submit = |fields: &[&str]| correction_event(street, ENTERPRISES, CorrectionStage::Submitted, fields);
    assert_eq!(
        code(apply(&mut fx.state, street, submit(&["name"]))),
        Some(RejectionCode::CorrectionNotGranted)
    );
    let mut spec = grant_spec(ENTERPRISES, &fx.jingansi.org, &["name", "legal_rep_phone"], "p");
    spec.masking = BTreeMap::from([("legal_rep_phone".to_string(), MaskingRule::KeepLast(4))]);
    fx.grant(spec);
    let street = &fx.jingansi.key;
    for fields in [&["operating_address"][..], &["legal_rep_phone"], &["name", "operating_address"]] {
        let refused = correction_event(street, ENTERPRISES, CorrectionStage::Submitted, fields);
        assert_eq!(
            code(apply(&mut fx.state, street, refused)),
            Some(RejectionCode::CorrectionNotGranted),
            "{fields:?}"
        );
    }
    let accepted = correction_event(street, ENTERPRISES, CorrectionStage::Submitted, &["name"]);
    apply(&mut fx.state, street, accepted).unwrap();
}

#[test]
fn an_outcome_comes_only_from_the_owner_at_submission() {
    let mut fx = Fixture::new();
    fx.grant(grant_spec(ENTERPRISES, &fx.jingansi.org, &["name"], "p"));
    let street = &fx.jingansi.key;
    apply(
        &mut fx.state,
        street,
        correction_event(street, ENTERPRISES, CorrectionStage::Submitted, &["name"]),
    )
    .unwrap();
    // Civil affairs owns the dataset this event names, not the one the
    // correction was submitted for.
    let foreign = correction_event(street, RESIDENTS, CorrectionStage::Delivered, &["name"]);
    assert_eq!(code(apply(&mut fx.state, &fx.civil.key, foreign)), Some(RejectionCode::NotAuthorised));
    let street_stage = correction_event(street, ENTERPRISES, CorrectionStage::Delivered, &["name"]);
    assert_eq!(code(apply(&mut fx.state, street, street_stage)), Some(RejectionCode::NotAuthorised));
    let owner = correction_event(street, ENTERPRISES, CorrectionStage::Delivered, &["name"]);
    apply(&mut fx.state, &fx.market.key, owner).unwrap();
    let skipped = correction_event(street, ENTERPRISES, CorrectionStage::Applied, &["name"]);
    assert_eq!(
        code(apply(&mut fx.state, &fx.market.key, skipped)),
        Some(RejectionCode::CorrectionStageOutOfOrder)
    );
}

#[test]
fn access_records_need_a_known_dataset_and_a_current_decision_time() {
    let mut fx = Fixture::new();
    let unknown = access_at(
        &fx.jingansi.key,
        header("market-supervision/nope", None, &["name"]),
        AccessOutcome::Deny { reason: ReasonCode::DatasetUnknown },
        NOW_MS,
    );
    assert_eq!(code(apply(&mut fx.state, &fx.market.key, unknown)), Some(RejectionCode::DatasetUnknown));
    assert_eq!(fx.state.access_log_length, 0);
    let Command::RecordAccess(mut record) = access_at(
        &fx.jingansi.key,
        header(ENTERPRISES, None, &["name"]),
        AccessOutcome::Deny { reason: ReasonCode::GrantRequired },
        NOW_MS,
    ) else {
        unreachable!()
    };
    record.decided_at_ms = NOW_MS - COMMAND_SKEW_MS_MAX - 1;
    assert_eq!(
        code(apply(&mut fx.state, &fx.market.key, Command::RecordAccess(record.clone()))),
        Some(RejectionCode::DecisionTimeOutOfWindow)
    );
    // A rejected record does not spend the requester's query.
    record.decided_at_ms = NOW_MS;
    assert_eq!(
        apply(&mut fx.state, &fx.market.key, Command::RecordAccess(record.clone())),
        Ok(Applied::AccessLogged(0))
    );
    assert_eq!(
        code(apply(&mut fx.state, &fx.market.key, Command::RecordAccess(record))),
        Some(RejectionCode::Replayed)
    );
}

/// A federation with `n` access entries, so checkpoints have leaves, and
/// those leaves.
fn with_entries(n: u8) -> (Fixture, Vec<[u8; 32]>) {
    let mut fx = Fixture::new();
    let mut leaves = Vec::new();
    for subject in 0..n {
        let mut header = header(ENTERPRISES, None, &["name"]);
        header.subjects = vec![SubjectKeyHash([subject; 32])];
        let denial = access_at(
            &fx.jingansi.key,
            header,
            AccessOutcome::Deny { reason: ReasonCode::GrantRequired },
            NOW_MS,
        );
        let (outcome, appended) = fx.state.apply_appending(&sign(&fx.market.key, denial), NOW_MS);
        outcome.unwrap();
        leaves.extend(appended.audit_leaf);
    }
    (fx, leaves)
}

fn body(leaves: &[[u8; 32]], size: u64) -> CheckpointBody {
    let mut tree = CompactRange::default();
    for leaf in &leaves[..size as usize] {
        tree.push(leaf);
    }
    CheckpointBody { tree_size: size, root: tree.root(), log_index: 7 }
}

fn cosign(state: &mut PolicyState, key: &NodeKey, body: &CheckpointBody) -> Option<RejectionCode> {
    code(apply(state, key, Command::CosignCheckpoint(body.clone())))
}

#[test]
fn a_bogus_checkpoint_does_not_block_a_good_one() {
    let (mut fx, leaves) = with_entries(2);
    let good = body(&leaves, 2);
    let bogus = CheckpointBody { root: [0xee; 32], ..good.clone() };
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &bogus), None);
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &bogus), Some(RejectionCode::CheckpointDuplicate));
    assert_eq!(
        cosign(&mut fx.state, &fx.market.key, &good),
        None,
        "another checkpoint may open beside the bogus one"
    );
    assert_eq!(fx.state.pending_checkpoints.len(), 2);
    assert_eq!(cosign(&mut fx.state, &fx.civil.key, &good), None);
    let last = fx.state.last_checkpoint.as_ref().unwrap();
    assert_eq!(last.body, good);
    assert_eq!(last.cosigners, BTreeSet::from([fx.market.key.node_id(), fx.civil.key.node_id()]));
    assert_eq!(last.signer_orgs_in_force, 3);
    assert!(fx.state.pending_checkpoints.is_empty(), "the bogus one is closed by the final one");
}

#[test]
fn a_signers_latest_cosignature_is_the_one_that_counts() {
    let (mut fx, leaves) = with_entries(3);
    let (first, second) = (body(&leaves, 2), body(&leaves, 3));
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &first), None);
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &second), None);
    assert_eq!(fx.state.pending_checkpoints.len(), 1, "the hub's first cosignature moved");
    assert_eq!(fx.state.pending_checkpoint().unwrap().body, second);
    // The market alone on `first` is no majority: the hub left it.
    assert_eq!(cosign(&mut fx.state, &fx.market.key, &first), None);
    assert_eq!(fx.state.checkpoints_final, 0);
}

#[test]
fn a_revoked_cosigner_does_not_count() {
    let (mut fx, leaves) = with_entries(1);
    let good = body(&leaves, 1);
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &good), None);
    let revoke = Command::RevokeMember { node_id: fx.hub.key.node_id(), reason: "key stolen".into() };
    apply(&mut fx.state, &fx.ca_key, revoke).unwrap();
    // Hub and market would be 2 of 3; the hub no longer counts: 1 of 2.
    assert_eq!(cosign(&mut fx.state, &fx.market.key, &good), None);
    assert_eq!(fx.state.checkpoints_final, 0);
    assert_eq!(cosign(&mut fx.state, &fx.civil.key, &good), None);
    let last = fx.state.last_checkpoint.as_ref().unwrap();
    assert_eq!(last.cosigners, BTreeSet::from([fx.market.key.node_id(), fx.civil.key.node_id()]));
    assert_eq!(last.signer_orgs_in_force, 2);
}

#[test]
fn only_signers_cosign_and_only_over_leaves_past_the_last_final_checkpoint() {
    let (mut fx, leaves) = with_entries(2);
    let one = body(&leaves, 1);
    assert_eq!(cosign(&mut fx.state, &fx.jingansi.key, &one), Some(RejectionCode::NotAuthorised));
    let past_the_leaves = CheckpointBody { tree_size: 3, ..one.clone() };
    let empty = CheckpointBody { tree_size: 0, ..one.clone() };
    for bad in [&past_the_leaves, &empty] {
        assert_eq!(cosign(&mut fx.state, &fx.hub.key, bad), Some(RejectionCode::InvalidArgument));
    }
    let two = body(&leaves, 2);
    assert_eq!(cosign(&mut fx.state, &fx.civil.key, &two), None);
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &one), None);
    assert_eq!(cosign(&mut fx.state, &fx.market.key, &one), None);
    assert_eq!(fx.state.checkpoints_final, 1);
    // The checkpoint past the final one stays open with its cosignature.
    let open: Vec<_> = fx.state.pending_checkpoints.iter().map(|pending| pending.body.clone()).collect();
    assert_eq!(open, std::slice::from_ref(&two));
    assert_eq!(cosign(&mut fx.state, &fx.civil.key, &one), Some(RejectionCode::InvalidArgument));
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &two), None);
    assert_eq!(fx.state.last_checkpoint.as_ref().map(|last| last.body.clone()), Some(two));
}

#[test]
fn a_cosigner_whose_certificate_ended_does_not_count() {
    let (mut fx, leaves) = with_entries(1);
    let good = body(&leaves, 1);
    let ends_ms = NOW_MS + 10;
    fx.state.members.get_mut(&fx.hub.key.node_id()).unwrap().certificate_not_after_ms = ends_ms;
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &good), None);
    // At the instant the hub's certificate ends, hub and market are not 2
    // of 3 signers: the hub no longer counts, and the market is 1 of 2.
    let market = sign(&fx.market.key, Command::CosignCheckpoint(good.clone()));
    fx.state.apply(&market, ends_ms).unwrap();
    assert_eq!(fx.state.checkpoints_final, 0);
    let civil = sign(&fx.civil.key, Command::CosignCheckpoint(good));
    fx.state.apply(&civil, ends_ms).unwrap();
    assert_eq!(fx.state.last_checkpoint.as_ref().map(|last| last.signer_orgs_in_force), Some(2));
}

#[test]
fn a_quorum_counts_organisations_not_nodes() {
    let (mut fx, leaves) = with_entries(1);
    let more_market: Vec<Node> =
        (0..2).map(|_| node(&fx.ca, fx.market.org.as_str(), Role::Department)).collect();
    for extra in &more_market {
        let admit = Command::AdmitMember { certificate_der: extra.certificate_der.clone() };
        apply(&mut fx.state, &fx.ca_key, admit).unwrap();
    }
    let good = body(&leaves, 1);
    // Three market nodes are 3 of 5 signing nodes, but 1 of 3 organisations.
    for key in [&fx.market.key, &more_market[0].key, &more_market[1].key] {
        assert_eq!(cosign(&mut fx.state, key, &good), None);
    }
    assert_eq!(fx.state.checkpoints_final, 0);
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &good), None);
    let last = fx.state.last_checkpoint.as_ref().unwrap();
    assert_eq!((last.cosigners.len(), last.cosigning_orgs.len(), last.signer_orgs_in_force), (4, 2, 3));
}

#[test]
fn a_checkpoint_not_final_in_time_expires() {
    let (mut fx, leaves) = with_entries(1);
    let good = body(&leaves, 1);
    assert_eq!(cosign(&mut fx.state, &fx.hub.key, &good), None);
    let cosign_at = |state: &mut PolicyState, at_ms: u64| {
        let command = Command::CosignCheckpoint(good.clone());
        state.apply(&SignedEnvelope::sign(&fx.market.key, &command, at_ms).unwrap(), at_ms).unwrap();
    };
    let mut in_time = fx.state.clone();
    cosign_at(&mut in_time, NOW_MS + CHECKPOINT_OPEN_MS_MAX - 1);
    assert_eq!(in_time.checkpoints_final, 1, "hub and market, 2 of 3, in time");
    cosign_at(&mut fx.state, NOW_MS + CHECKPOINT_OPEN_MS_MAX);
    assert_eq!(fx.state.checkpoints_final, 0, "the hub's cosignature expired with the checkpoint");
    let open = fx.state.pending_checkpoint().unwrap();
    assert_eq!(
        (&open.cosigners, open.opened_at_ms),
        (&BTreeSet::from([fx.market.key.node_id()]), NOW_MS + CHECKPOINT_OPEN_MS_MAX)
    );
}

struct Row(BTreeMap<String, FieldValue>);

impl RecordFacts for Row {
    fn subject(&self) -> SubjectKeyHash {
        SUBJECT
    }
    fn value(&self, field: &str) -> Option<&FieldValue> {
        self.0.get(field)
    }
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, FieldValue> {
    pairs.iter().map(|(field, value)| (field.to_string(), FieldValue::Text(value.to_string()))).collect()
}

#[test]
fn corrections_stay_within_the_grant() {
    use CorrectionReasonCode::*;
    let mut fx = Fixture::new();
    let street = fx.jingansi.key.node_id();
    let current = values(&[("credit_code", "91310000X"), ("name", "Old"), ("district", "jingan")]);
    let check = |state: &PolicyState,
                 dataset: &str,
                 current: &BTreeMap<String, FieldValue>,
                 changes: &[(&str, &str)]| {
        state
            .check_correction(&street, dataset, current, &values(changes), NOW_MS)
            .map_err(|refusal| refusal.code)
    };
    assert_eq!(check(&fx.state, "nope/nope", &current, &[("name", "New")]).err(), Some(DatasetUnknown));
    assert_eq!(check(&fx.state, ENTERPRISES, &current, &[("name", "New")]).err(), Some(DatasetNotVisible));
    let mut spec = grant_spec(
        ENTERPRISES,
        &fx.jingansi.org,
        &["credit_code", "name", "district", "legal_rep_phone"],
        "p",
    );
    spec.masking = BTreeMap::from([("legal_rep_phone".to_string(), MaskingRule::Redact)]);
    spec.scope = vec![ScopeCondition {
        field: "district".into(),
        allowed: BTreeSet::from([FieldValue::Text("jingan".into())]),
    }];
    let grant = fx.grant(spec);
    let cases: [(&[(&str, &str)], CorrectionReasonCode); 4] = [
        (&[("colour", "red")], FieldUnknown),
        (&[("credit_code", "91310000Y")], SubjectKeyImmutable),
        (&[("operating_address", "1 Road")], FieldNotVisible),
        (&[("legal_rep_phone", "3101")], FieldMasked),
    ];
    for (changes, expected) in cases {
        assert_eq!(check(&fx.state, ENTERPRISES, &current, changes).err(), Some(expected), "{changes:?}");
    }
    let elsewhere = values(&[("credit_code", "91310000X"), ("name", "Old"), ("district", "putuo")]);
    assert_eq!(check(&fx.state, ENTERPRISES, &elsewhere, &[("name", "New")]).err(), Some(RecordOutOfScope));
    // In scope: review, unless an auto-accept rule covers it...
    let cleared = check(&fx.state, ENTERPRISES, &current, &[("name", "New")]).unwrap();
    assert_eq!((cleared.grant, cleared.review_required), (grant, true));
    let rule = AutoAcceptRule {
        dataset: ENTERPRISES.into(),
        submitter: fx.jingansi.org.clone(),
        fields: BTreeSet::from(["name".to_string(), "district".to_string()]),
    };
    apply(&mut fx.state, &fx.market.key, Command::SetAutoAcceptRule(rule)).unwrap();
    assert!(!check(&fx.state, ENTERPRISES, &current, &[("name", "New")]).unwrap().review_required);
    // ...and always when it touches a field the scope tests.
    assert!(check(&fx.state, ENTERPRISES, &current, &[("district", "putuo")]).unwrap().review_required);
    // A submitter whose certificate ends now sees nothing.
    let ends_now = {
        let mut state = fx.state.clone();
        state.members.get_mut(&street).unwrap().certificate_not_after_ms = NOW_MS;
        state
    };
    assert_eq!(check(&ends_now, ENTERPRISES, &current, &[("name", "New")]).err(), Some(DatasetNotVisible));
    // A revoked grant shows nothing.
    apply(&mut fx.state, &fx.market.key, Command::RevokeGrant { grant_id: grant, reason: "r".into() })
        .unwrap();
    assert_eq!(check(&fx.state, ENTERPRISES, &current, &[("name", "New")]).err(), Some(DatasetNotVisible));
    assert_eq!(DatasetNotVisible.as_str(), "dataset_not_visible");
    assert_eq!(serde_json::to_string(&RecordOutOfScope).unwrap(), "\"record_out_of_scope\"");
}

#[test]
fn new_rejection_codes_are_snake_case() {
    for (code, text) in [
        (RejectionCode::EntryTimeWentBack, "entry_time_went_back"),
        (RejectionCode::SignerCertificateExpired, "signer_certificate_expired"),
        (RejectionCode::DecisionTimeOutOfWindow, "decision_time_out_of_window"),
        (RejectionCode::CorrectionNotGranted, "correction_not_granted"),
    ] {
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
    }
}
