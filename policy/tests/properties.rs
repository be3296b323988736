//! Property tests of the policy invariants (DESIGN.md section 5): whatever
//! sequence of commands was applied, by whomever,
//! - negative-listed and not-shared fields are never released;
//! - expired or revoked grants never permit;
//! - a consent-based grant never releases a subject without active consent;
//! - decisions are deterministic;
//! - apply rejects every command whose signer lacks authority;
//! - replicas that apply the same commands (one through a snapshot) agree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use civmesh_certs::{codec, NodeKey};
use civmesh_policy::model::{
    FieldClass, FieldValue, LegalBasis, MaskingRule, ScopeCondition, SharingCategory, SubjectKeyHash,
};
use civmesh_policy::{
    decide, AccessRequest, Command, DatasetSpec, FieldAction, PolicyState, RecordFacts, RejectionCode,
};
use proptest::prelude::*;
use support::*;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

const DATASETS: [&str; 2] = [ENTERPRISES, RESIDENTS];
const PURPOSES: [&str; 2] = ["inspection", "elderly-care"];
const DISTRICTS: [&str; 2] = ["jingan", "putuo"];
const SUBJECTS: u8 = 4;

fn signer(index: usize) -> &'static NodeKey {
    let fx = fixture();
    [
        &fx.ca_key,
        &fx.hub.key,
        &fx.market.key,
        &fx.civil.key,
        &fx.jingansi.key,
        &fx.nanjingxilu.key,
        &fx.auditor.key,
        &fx.outsider.key,
    ][index % 8]
}

fn grantee(index: usize) -> civmesh_certs::OrgId {
    let fx = fixture();
    [&fx.jingansi.org, &fx.nanjingxilu.org, &fx.auditor.org][index % 3].clone()
}

fn dataset_fields(dataset: usize) -> Vec<String> {
    let spec = if dataset % 2 == 0 { enterprise_dataset() } else { resident_dataset() };
    spec.fields.into_iter().map(|field| field.name).collect()
}

fn pick_fields(dataset: usize, mask: u8) -> BTreeSet<String> {
    dataset_fields(dataset)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, f)| f)
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Grant {
        dataset: usize,
        grantee: usize,
        fields: u8,
        purpose: usize,
        consent_basis: bool,
        from_days: i8,
        length_days: u8,
        mask: bool,
        scoped: bool,
        consent_required: bool,
    },
    RevokeGrant {
        grant: u64,
    },
    Negative {
        dataset: usize,
        field: Option<usize>,
    },
    RemoveNegative {
        dataset: usize,
        field: Option<usize>,
    },
    Consent {
        subject: u8,
        dataset: usize,
        grantee: usize,
        purpose: usize,
        given: bool,
        covers_sensitive: bool,
    },
    Republish {
        dataset: usize,
        sharing: usize,
    },
    RevokeMember {
        street: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..3usize, any::<u8>(), 0..2usize, any::<bool>(), -5i8..3, 0u8..10, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(dataset, grantee, fields, purpose, consent_basis, from_days, length_days, mask, scoped, consent_required)| Op::Grant { dataset, grantee, fields, purpose, consent_basis, from_days, length_days, mask, scoped, consent_required }),
        1 => (1..8u64).prop_map(|grant| Op::RevokeGrant { grant }),
        1 => (0..2usize, proptest::option::of(0..6usize)).prop_map(|(dataset, field)| Op::Negative { dataset, field }),
        1 => (0..2usize, proptest::option::of(0..6usize)).prop_map(|(dataset, field)| Op::RemoveNegative { dataset, field }),
        3 => (0..SUBJECTS, 0..2usize, 0..3usize, 0..2usize, any::<bool>(), any::<bool>())
            .prop_map(|(subject, dataset, grantee, purpose, given, covers_sensitive)| Op::Consent { subject, dataset, grantee, purpose, given, covers_sensitive }),
        1 => (0..2usize, 0..3usize).prop_map(|(dataset, sharing)| Op::Republish { dataset, sharing }),
        1 => (0..2usize).prop_map(|street| Op::RevokeMember { street }),
    ]
}

fn command(op: &Op) -> Command {
    match op.clone() {
        Op::Grant {
            dataset,
            grantee: g,
            fields,
            purpose,
            consent_basis,
            from_days,
            length_days,
            mask,
            scoped,
            consent_required,
        } => {
            let fields = pick_fields(dataset, fields);
            let masking: BTreeMap<String, MaskingRule> = if mask {
                fields.iter().take(1).map(|field| (field.clone(), MaskingRule::KeepLast(2))).collect()
            } else {
                BTreeMap::new()
            };
            let valid_from_ms = (NOW_MS as i64 + i64::from(from_days) * DAY_MS as i64) as u64;
            Command::IssueGrant(civmesh_policy::GrantSpec {
                dataset: DATASETS[dataset].into(),
                grantee: grantee(g),
                fields,
                purpose: PURPOSES[purpose].into(),
                legal_basis: if consent_basis { LegalBasis::Consent } else { LegalBasis::StatutoryDuty },
                scope: if scoped {
                    vec![ScopeCondition {
                        field: "district".into(),
                        allowed: BTreeSet::from([FieldValue::Text(DISTRICTS[0].into())]),
                    }]
                } else {
                    vec![]
                },
                valid_from_ms,
                valid_until_ms: valid_from_ms + u64::from(length_days) * DAY_MS,
                masking,
                consent_required,
                demand: None,
            })
        }
        Op::RevokeGrant { grant } => Command::RevokeGrant { grant_id: grant, reason: "property test".into() },
        Op::Negative { dataset, field } => Command::AddNegativeListEntry {
            dataset: DATASETS[dataset].into(),
            field: field.map(|i| dataset_fields(dataset)[i].clone()),
            reason: "property test".into(),
        },
        Op::RemoveNegative { dataset, field } => Command::RemoveNegativeListEntry {
            dataset: DATASETS[dataset].into(),
            field: field.map(|i| dataset_fields(dataset)[i].clone()),
        },
        Op::Consent { subject, dataset, grantee: g, purpose, given, covers_sensitive } => {
            Command::RecordConsent {
                subject: SubjectKeyHash([subject; 32]),
                dataset: DATASETS[dataset].into(),
                grantee: grantee(g),
                purpose: PURPOSES[purpose].into(),
                given,
                covers_sensitive,
            }
        }
        Op::Republish { dataset, sharing } => {
            let spec = if dataset == 0 { enterprise_dataset() } else { resident_dataset() };
            let sharing =
                [SharingCategory::Unconditional, SharingCategory::Conditional, SharingCategory::NotShared]
                    [sharing];
            Command::PublishDataset(DatasetSpec { sharing, ..spec })
        }
        Op::RevokeMember { street } => {
            let fx = fixture();
            let node_id = [&fx.jingansi, &fx.nanjingxilu][street].key.node_id();
            Command::RevokeMember { node_id, reason: "property test".into() }
        }
    }
}

/// An independent statement of who may issue what.
fn authorised(state: &PolicyState, signer_key: &NodeKey, command: &Command) -> bool {
    let signer = signer_key.node_id();
    if state.federation.as_ref().unwrap().ca_node_id == signer {
        return matches!(
            command,
            Command::AdmitMember { .. }
                | Command::RevokeMember { .. }
                | Command::CommitSubjectKeySecret { .. }
        );
    }
    let Some(member) = state.active_member(&signer) else { return false };
    let owns = |dataset: &str| state.datasets.get(dataset).is_some_and(|d| d.owner == member.org);
    match command {
        Command::RevokeMember { .. } | Command::AdmitMember { .. } => member.role == civmesh_certs::Role::Hub,
        Command::IssueGrant(spec) => owns(&spec.dataset),
        Command::RevokeGrant { grant_id, .. } => state.grants.get(grant_id).is_some_and(|g| owns(&g.dataset)),
        Command::AddNegativeListEntry { dataset, .. } | Command::RemoveNegativeListEntry { dataset, .. } => {
            owns(dataset)
        }
        Command::PublishDataset(spec) => owns(&spec.id),
        Command::RecordConsent { dataset, grantee, .. } => owns(dataset) || member.org == *grantee,
        Command::FileDemand { .. } => true,
        Command::RecordAccess(record) | Command::RecordPush(record) => {
            record.request.unverified_payload().ok().is_none_or(|header| owns(&header.dataset))
        }
        Command::CosignCheckpoint(_) => civmesh_policy::audit::signs_checkpoints(member),
        Command::SetAutoAcceptRule(rule) => owns(&rule.dataset),
        Command::RemoveAutoAcceptRule { dataset, .. } => owns(dataset),
        Command::RecordCorrectionEvent(event) if event.stage.logged_by_owner() => owns(&event.dataset),
        Command::RecordCorrectionEvent(event) => event.submitter == signer,
        Command::Genesis { .. } | Command::CommitSubjectKeySecret { .. } => false,
    }
}

struct Row {
    subject: SubjectKeyHash,
    values: BTreeMap<String, FieldValue>,
}

impl RecordFacts for Row {
    fn subject(&self) -> SubjectKeyHash {
        self.subject
    }
    fn value(&self, field: &str) -> Option<&FieldValue> {
        self.values.get(field)
    }
}

fn rows() -> Vec<Row> {
    (0..SUBJECTS)
        .map(|subject| Row {
            subject: SubjectKeyHash([subject; 32]),
            values: BTreeMap::from([(
                "district".to_string(),
                FieldValue::Text(DISTRICTS[usize::from(subject) % 2].into()),
            )]),
        })
        .collect()
}

/// Applies `ops`, each signed by its signer; returns the final state.
fn run(ops: &[(SignerChoice, Op)]) -> PolicyState {
    let mut state = fixture().state.clone();
    for (choice, op) in ops {
        let signer = signer(signer_index(&state, *choice, op));
        let _ = state.apply(&sign(signer, command(op)), NOW_MS);
    }
    state
}

/// Checks every released field of `request` against the invariants.
fn check_released(state: &PolicyState, request: &AccessRequest, now_ms: u64) -> Result<(), TestCaseError> {
    let rows = rows();
    let decision = decide(state, request, &rows, now_ms);
    prop_assert_eq!(
        &decision,
        &decide(&state.clone(), request, &rows, now_ms),
        "decide is not deterministic"
    );
    let dataset = state.datasets.get(&request.dataset);
    for (index, row) in rows.iter().enumerate() {
        for field in &request.fields {
            if matches!(decision.action_for(index, field), FieldAction::Withhold(_)) {
                continue;
            }
            let dataset = dataset.expect("released from an unknown dataset");
            prop_assert!(dataset.sharing != SharingCategory::NotShared, "released from a not-shared dataset");
            prop_assert!(
                !state.negative_list.contains_key(&(request.dataset.clone(), None)),
                "released a negative-listed dataset"
            );
            prop_assert!(
                !state.negative_list.contains_key(&(request.dataset.clone(), Some(field.clone()))),
                "released a negative-listed field"
            );
            prop_assert!(state.active_member(&request.requester).is_some(), "released to a non-member");
            let class = dataset.field(field).unwrap().class;
            let Some(grant_id) = request.grant else {
                prop_assert_eq!(dataset.sharing, SharingCategory::Unconditional);
                prop_assert_eq!(class, FieldClass::Public);
                continue;
            };
            let grant = &state.grants[&grant_id];
            prop_assert!(grant.revoked.is_none(), "a revoked grant permitted");
            prop_assert!(
                grant.valid_from_ms <= now_ms && now_ms < grant.valid_until_ms,
                "an expired grant permitted"
            );
            prop_assert!(grant.fields.contains(field), "released an ungranted field");
            if grant.needs_consent() {
                let key = civmesh_policy::model::ConsentKey {
                    subject: row.subject,
                    dataset: request.dataset.clone(),
                    grantee: grant.grantee.clone(),
                    purpose: grant.purpose.clone(),
                };
                let consent = state.consents.get(&key);
                prop_assert!(consent.is_some_and(|c| c.given), "released a subject without active consent");
                if matches!(class, FieldClass::Sensitive(_)) {
                    prop_assert!(
                        consent.is_some_and(|c| c.covers_sensitive),
                        "released a sensitive field without separate consent"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Who signs an op: usually its natural author (the dataset's owner, or the
/// hub for membership), so grants and lists really build up; sometimes
/// anyone at all, so authority is exercised too.
#[derive(Debug, Clone, Copy)]
enum SignerChoice {
    Natural,
    Anyone(usize),
}

/// The signer index for `choice`, resolved against the state the op is
/// applied to (a grant's owner is known only once the grant exists).
fn signer_index(state: &PolicyState, choice: SignerChoice, op: &Op) -> usize {
    match choice {
        SignerChoice::Anyone(index) => index,
        SignerChoice::Natural => natural_signer(state, op),
    }
}

fn natural_signer(state: &PolicyState, op: &Op) -> usize {
    match op {
        Op::Grant { dataset, .. }
        | Op::Negative { dataset, .. }
        | Op::RemoveNegative { dataset, .. }
        | Op::Consent { dataset, .. }
        | Op::Republish { dataset, .. } => 2 + dataset,
        Op::RevokeGrant { grant } => match state.grants.get(grant) {
            Some(grant) if grant.dataset == RESIDENTS => 3,
            _ => 2,
        },
        Op::RevokeMember { .. } => 1,
    }
}

fn ops_strategy() -> impl Strategy<Value = Vec<(SignerChoice, Op)>> {
    let choice =
        prop_oneof![6 => Just(SignerChoice::Natural), 1 => (0..8usize).prop_map(SignerChoice::Anyone)];
    proptest::collection::vec((choice, op_strategy()), 1..24)
}

/// A request aimed at one of the state's grants (so permits are common),
/// perturbed in purpose, grant or fields some of the time.
fn aimed_request(state: &PolicyState, pick: prop::sample::Index, fields: u8, perturb: u8) -> AccessRequest {
    let fx = fixture();
    let nodes = [&fx.jingansi, &fx.nanjingxilu, &fx.auditor];
    let grants: Vec<_> = state.grants.values().collect();
    let (requester, dataset, purpose, grant) = match grants.get(pick.index(grants.len().max(1))) {
        Some(grant) => {
            let node = nodes.iter().find(|node| node.org == grant.grantee).unwrap_or(&nodes[0]);
            (node.key.node_id(), grant.dataset.clone(), grant.purpose.clone(), Some(grant.id))
        }
        None => (nodes[0].key.node_id(), DATASETS[0].to_string(), PURPOSES[0].to_string(), None),
    };
    let dataset_index = DATASETS.iter().position(|d| *d == dataset).unwrap_or(0);
    let mut request = AccessRequest {
        requester,
        dataset,
        fields: pick_fields(dataset_index, fields | 1).into_iter().collect(),
        purpose,
        grant,
    };
    match perturb {
        0 => request.purpose = PURPOSES.iter().find(|p| **p != request.purpose).unwrap().to_string(),
        1 => request.grant = None,
        2 => request.requester = nodes[usize::from(fields) % 3].key.node_id(),
        _ => {}
    }
    request
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn released_fields_always_satisfy_the_policy(
        ops in ops_strategy(),
        requests in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..8u8, -6i64..12), 1..12),
    ) {
        let state = run(&ops);
        for (pick, fields, perturb, day) in requests {
            let request = aimed_request(&state, pick, fields, perturb);
            check_released(&state, &request, (NOW_MS as i64 + day * DAY_MS as i64) as u64)?;
        }
    }

    #[test]
    fn commands_without_authority_are_rejected_and_change_nothing(ops in ops_strategy()) {
        let mut state = fixture().state.clone();
        for (choice, op) in &ops {
            let signer_index = signer_index(&state, *choice, op);
            let key = signer(signer_index);
            let command = command(op);
            let allowed = authorised(&state, key, &command);
            let before = state.clone();
            let outcome = state.apply(&sign(key, command), NOW_MS);
            if !allowed {
                let code = outcome.as_ref().map_err(|rejection| rejection.code);
                prop_assert!(
                    matches!(code, Err(RejectionCode::NotAuthorised | RejectionCode::SignerUnknown | RejectionCode::SignerRevoked | RejectionCode::GrantUnknown)),
                    "unauthorised {:?} by signer {} gave {:?}", op, signer_index, code
                );
                let mut expected = before;
                expected.commands_applied += 1;
                prop_assert_eq!(&state, &expected);
            }
        }
    }

    #[test]
    fn replicas_agree_even_through_a_snapshot(ops in ops_strategy(), cut in any::<prop::sample::Index>()) {
        // Natural signers resolved against the initial state: some commands
        // are then unauthorised, which the replicas must reject alike.
        let initial = &fixture().state;
        let signed: Vec<_> =
            ops.iter().map(|(choice, op)| sign(signer(signer_index(initial, *choice, op)), command(op))).collect();
        let mut replica_a = fixture().state.clone();
        for envelope in &signed {
            let _ = replica_a.apply(envelope, NOW_MS);
        }
        let cut = cut.index(signed.len() + 1);
        let mut replica_b = fixture().state.clone();
        for envelope in &signed[..cut] {
            let _ = replica_b.apply(envelope, NOW_MS);
        }
        let snapshot = codec::encode(&replica_b).unwrap();
        let mut replica_b: PolicyState = codec::decode_exact(&snapshot, codec::DECODE_BYTES_MAX).unwrap();
        for envelope in &signed[cut..] {
            let _ = replica_b.apply(envelope, NOW_MS);
        }
        prop_assert_eq!(replica_a.state_hash(), replica_b.state_hash());
        prop_assert_eq!(replica_a, replica_b);
    }
}
