//! Property tests of the policy invariants (DESIGN.md section 5): whatever
//! sequence of commands was applied, by whomever,
//! - negative-listed and not-shared fields are never released;
//! - expired or revoked grants never permit;
//! - a consent-based grant never releases a subject without active consent;
//! - decisions are deterministic, and agree field by field with an
//!   independent model written from DESIGN.md section 5 (membership,
//!   sharing, negative list, grantee, dataset, purpose, window, fields,
//!   scope, masking, consent, sensitive consent);
//! - the generators reach the cases that matter: the coverage of permits,
//!   consent-based and sensitive releases is asserted;
//! - apply rejects every command whose signer lacks authority (one command
//!   in ten wrapped as an operator makes it, which must change nothing);
//! - replicas that apply the same commands (one through a snapshot) agree,
//!   even with replays and entry times that go back, and both of those are
//!   always rejected, changing nothing but the counters;
//! - every decision, logged by the owner, is accepted by `apply`;
//! - every correction `check_correction` clears is within a grant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use civmesh_certs::{codec, NodeId, NodeKey, SignedEnvelope};
use civmesh_policy::correction_tally::CorrectionTally;
use civmesh_policy::model::{
    FieldClass, FieldValue, LegalBasis, MaskingRule, ScopeCondition, SharingCategory, SubjectKeyHash,
};
use civmesh_policy::{
    decide, AccessOutcome, AccessRecord, AccessRequest, Command, DatasetSpec, Decision, FieldAction,
    PolicyState, QueryHeader, RejectionCode, SignedCommand, SubjectRelease,
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
    let spec = if dataset.is_multiple_of(2) { enterprise_dataset() } else { resident_dataset() };
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
    /// A consent for the grantee, dataset and purpose of one of the
    /// state's grants (so consents meet the grants that need them).
    Consent {
        grant: prop::sample::Index,
        subject: u8,
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
    /// The op as an operator makes it through the console: wrapped in
    /// `Command::ByOperator`, decided exactly as the op alone.
    ByOperator(Box<Op>),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    // One op in ten as an operator makes it (which changes nothing).
    prop_oneof![9 => plain_op_strategy(), 1 => plain_op_strategy().prop_map(|op| Op::ByOperator(Box::new(op)))]
}

fn plain_op_strategy() -> impl Strategy<Value = Op> {
    // Grants and consents dominate, and grants mostly start near now, so that
    // permits, consents and sensitive fields are common (the coverage test
    // below holds the generators to it); the ops that deny everything are
    // rare but present.
    let needs_consent = prop_oneof![2 => Just(false), 1 => Just(true)];
    prop_oneof![
        12 => (0..2usize, 0..3usize, field_mask(), 0..2usize, needs_consent.clone(), -3i8..1, 4u8..12, any::<bool>(), any::<bool>(), needs_consent)
            .prop_map(|(dataset, grantee, fields, purpose, consent_basis, from_days, length_days, mask, scoped, consent_required)| Op::Grant { dataset, grantee, fields, purpose, consent_basis, from_days, length_days, mask, scoped, consent_required }),
        1 => (1..8u64).prop_map(|grant| Op::RevokeGrant { grant }),
        1 => (0..2usize, proptest::option::weighted(0.8, 0..6usize)).prop_map(|(dataset, field)| Op::Negative { dataset, field }),
        1 => (0..2usize, proptest::option::of(0..6usize)).prop_map(|(dataset, field)| Op::RemoveNegative { dataset, field }),
        14 => (any::<prop::sample::Index>(), 0..SUBJECTS, prop_oneof![3 => Just(true), 1 => Just(false)], prop_oneof![2 => Just(true), 1 => Just(false)])
            .prop_map(|(grant, subject, given, covers_sensitive)| Op::Consent { grant, subject, given, covers_sensitive }),
        1 => (0..2usize, 0..3usize).prop_map(|(dataset, sharing)| Op::Republish { dataset, sharing }),
        1 => (0..2usize).prop_map(|street| Op::RevokeMember { street }),
    ]
}

/// Which of a dataset's fields a grant or request names: a third of the
/// time all of them (so sensitive fields are often both granted and asked
/// for), otherwise any subset.
fn field_mask() -> impl Strategy<Value = u8> {
    prop_oneof![2 => any::<u8>(), 1 => Just(u8::MAX)]
}

/// The grant a consent op is aimed at, if the state has any.
fn consent_target<'a>(
    state: &'a PolicyState,
    pick: &prop::sample::Index,
) -> Option<&'a civmesh_policy::model::Grant> {
    let grants: Vec<_> = state.grants.values().collect();
    grants.get(pick.index(grants.len().max(1))).copied()
}

/// The IssueGrant command an `Op::Grant` describes.
fn grant_command(op: Op) -> Command {
    let Op::Grant {
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
    } = op
    else {
        unreachable!("only called with Op::Grant")
    };
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
        retention: Some(civmesh_policy::fixtures::RETENTION),
        assessment: Some(civmesh_policy::deletion::AssessmentDigest([7; 32])),
    })
}

fn command(state: &PolicyState, op: &Op) -> Command {
    match op.clone() {
        grant @ Op::Grant { .. } => grant_command(grant),
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
        Op::Consent { grant, subject, given, covers_sensitive } => {
            let (dataset, grantee, purpose) = match consent_target(state, &grant) {
                Some(grant) => (grant.dataset.clone(), grant.grantee.clone(), grant.purpose.clone()),
                None => (DATASETS[0].into(), grantee(0), PURPOSES[0].into()),
            };
            Command::RecordConsent {
                subject: SubjectKeyHash([subject; 32]),
                dataset,
                grantee,
                purpose,
                given,
                covers_sensitive,
                channel: "online_form".into(),
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
        Op::ByOperator(op) => by_operator(command(state, &op)),
    }
}

/// `command` as an operator makes it through the console.
fn by_operator(command: Command) -> Command {
    Command::ByOperator { operator: "王芳".into(), command: Box::new(command) }
}

/// An independent statement of who may issue what.
fn authorised(state: &PolicyState, signer_key: &NodeKey, command: &Command) -> bool {
    if let Command::ByOperator { command, .. } = command {
        return command.operator_may_make() && authorised(state, signer_key, command);
    }
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
        Command::RecordConsent { dataset, .. } => owns(dataset),
        Command::FileDemand { .. } | Command::FileDemandWithReason(_) => true,
        Command::RefuseDemand { demand_id, .. } => {
            state.demands.get(demand_id).is_some_and(|d| owns(&d.dataset))
        }
        Command::RecordAccess(record) | Command::RecordListing(record) | Command::RecordPush(record) => {
            record.request.unverified_payload().ok().is_none_or(|header| owns(&header.dataset))
        }
        Command::CosignCheckpoint(_) => civmesh_policy::audit::signs_checkpoints(member),
        Command::SetAutoAcceptRule(rule) => owns(&rule.dataset),
        Command::RemoveAutoAcceptRule { dataset, .. } => owns(dataset),
        Command::RecordCorrectionEvent(event) if event.stage.logged_by_owner() => owns(&event.dataset),
        Command::RecordCorrectionEvent(event) => event.submitter == signer,
        Command::FileSubjectRequest(_) => true,
        Command::AnswerSubjectRequest { id, .. } => {
            state.subject_requests.get(id).is_some_and(|request| owns(&request.spec.dataset))
        }
        Command::ConfirmDeletion(receipt) => {
            state.grants.get(&receipt.grant).is_some_and(|grant| grant.grantee == member.org)
        }
        Command::Genesis { .. } | Command::CommitSubjectKeySecret { .. } | Command::ByOperator { .. } => {
            false
        }
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
        let _ = state.apply(&sign(signer, command(&state, op)), NOW_MS);
    }
    state
}

/// What one request released, for the coverage the generators must reach.
#[derive(Debug, Default, Clone, Copy)]
struct Released {
    any: bool,
    under_consent: bool,
    sensitive: bool,
}

/// One field of a request as the model plans it: `None` withholds it,
/// `Some(None)` releases it as stored, `Some(Some(rule))` masked.
type ModelPlan = Vec<(String, Option<Option<MaskingRule>>, bool)>;

/// The model's reading of the request-wide rules (membership, dataset,
/// negative list, grant usability, fields); `None` denies the request.
/// Written from DESIGN.md section 5, not from `decide`.
fn model_fields(state: &PolicyState, request: &AccessRequest, now_ms: u64) -> Option<ModelPlan> {
    let member = state.members.get(&request.requester)?;
    if member.revoked.is_some() || member.certificate_not_after_ms <= now_ms {
        return None;
    }
    let dataset = state.datasets.get(&request.dataset)?;
    let listed =
        |field: Option<&String>| state.negative_list.contains_key(&(request.dataset.clone(), field.cloned()));
    if dataset.sharing == SharingCategory::NotShared || listed(None) {
        return None;
    }
    let grant = match request.grant {
        Some(id) => {
            let grant = state.grants.get(&id)?;
            let usable = grant.dataset == request.dataset
                && grant.grantee == member.org
                && grant.purpose == request.purpose
                && grant.revoked.is_none()
                && grant.valid_from_ms <= now_ms
                && now_ms < grant.valid_until_ms;
            Some(grant).filter(|_| usable)?;
            Some(grant)
        }
        None if dataset.sharing == SharingCategory::Unconditional => None,
        None => return None,
    };
    let plan: ModelPlan = request
        .fields
        .iter()
        .map(|field| {
            let class = dataset.field(field).unwrap().class;
            let action = match grant {
                _ if listed(Some(field)) => None,
                None => (class == FieldClass::Public).then_some(None),
                Some(grant) => grant.fields.contains(field).then(|| grant.masking.get(field).copied()),
            };
            (field.clone(), action, matches!(class, FieldClass::Sensitive(_)))
        })
        .collect();
    plan.iter().any(|(_, action, _)| action.is_some()).then_some(plan)
}

/// The model's action for `field` of `row`: scope and consent on top of
/// [`model_fields`].
fn model_action(
    state: &PolicyState,
    request: &AccessRequest,
    plan: &ModelPlan,
    row: &Row,
    field: &str,
) -> Option<Option<MaskingRule>> {
    let (_, action, sensitive) = plan.iter().find(|(name, _, _)| name == field)?;
    let action = (*action)?;
    let Some(grant) = request.grant.map(|id| &state.grants[&id]) else { return Some(action) };
    let in_scope = grant.scope.iter().all(|condition| {
        row.values.get(&condition.field).is_some_and(|value| condition.allowed.contains(value))
    });
    if !in_scope {
        return None;
    }
    if !grant.consent_required && grant.legal_basis != LegalBasis::Consent {
        return Some(action);
    }
    let key = civmesh_policy::model::ConsentKey {
        subject: row.subject,
        dataset: grant.dataset.clone(),
        grantee: grant.grantee.clone(),
        purpose: grant.purpose.clone(),
    };
    let consent = state.consents.get(&key).filter(|consent| consent.given)?;
    if consent.covers_sensitive {
        return Some(action);
    }
    let only_sensitive = plan.iter().all(|(_, action, sensitive)| action.is_none() || *sensitive);
    (!only_sensitive && !sensitive).then_some(action)
}

/// Compares `decision` with the independent model on every field of every
/// row, both ways: nothing released that the model withholds, nothing
/// withheld that it releases, the same masking. Says what was released.
fn check_against_model(
    state: &PolicyState,
    request: &AccessRequest,
    decision: &Decision,
    now_ms: u64,
) -> Result<Released, TestCaseError> {
    let rows = rows();
    let plan = model_fields(state, request, now_ms);
    let mut released = Released::default();
    for (index, row) in rows.iter().enumerate() {
        for field in &request.fields {
            let expected = plan.as_ref().and_then(|plan| model_action(state, request, plan, row, field));
            let actual = match decision.action_for(index, field) {
                FieldAction::Withhold(_) => None,
                FieldAction::Release => Some(None),
                FieldAction::Mask(rule) => Some(Some(rule)),
            };
            prop_assert_eq!(
                actual,
                expected,
                "decide and the model differ on {} of row {}: {:?}",
                field,
                index,
                decision
            );
            if actual.is_some() {
                let grant = request.grant.map(|id| &state.grants[&id]);
                let class = state.datasets[&request.dataset].field(field).unwrap().class;
                released.any = true;
                released.under_consent |= grant.is_some_and(|grant| grant.needs_consent());
                released.sensitive |= matches!(class, FieldClass::Sensitive(_));
            }
        }
    }
    Ok(released)
}

/// Checks every field of `request` against the invariants and against the
/// independent model ([`check_against_model`]). Says what was released.
fn check_released(
    state: &PolicyState,
    request: &AccessRequest,
    now_ms: u64,
) -> Result<Released, TestCaseError> {
    let rows = rows();
    let decision = decide(state, request, &rows, now_ms);
    let released = check_against_model(state, request, &decision, now_ms)?;
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
    Ok(released)
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
        | Op::Republish { dataset, .. } => 2 + dataset,
        Op::Consent { grant, .. } => match consent_target(state, grant) {
            Some(grant) if grant.dataset == RESIDENTS => 3,
            _ => 2,
        },
        Op::RevokeGrant { grant } => match state.grants.get(grant) {
            Some(grant) if grant.dataset == RESIDENTS => 3,
            _ => 2,
        },
        Op::RevokeMember { .. } => 1,
        Op::ByOperator(op) => natural_signer(state, op),
    }
}

fn ops_strategy() -> impl Strategy<Value = Vec<(SignerChoice, Op)>> {
    let choice =
        prop_oneof![6 => Just(SignerChoice::Natural), 1 => (0..8usize).prop_map(SignerChoice::Anyone)];
    proptest::collection::vec((choice, op_strategy()), 4..24)
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

/// Requests against a state: which grant to aim at, which fields, how to
/// perturb the request, and on which day (relative to `NOW_MS`).
type RequestChoice = (prop::sample::Index, u8, u8, i64);

fn requests_strategy() -> impl Strategy<Value = Vec<RequestChoice>> {
    // Mostly today or tomorrow, where most grants are valid; sometimes any
    // day from before the earliest grant to after the latest.
    let day = prop_oneof![4 => 0i64..2, 1 => -6i64..12];
    proptest::collection::vec((any::<prop::sample::Index>(), field_mask(), 0..12u8, day), 1..12)
}

fn day_ms(day: i64) -> u64 {
    (NOW_MS as i64 + day * DAY_MS as i64) as u64
}

/// Requests the coverage test checks.
const COVERAGE_CASES: usize = 256;

/// The generators reach the cases that matter, or the properties above
/// prove little: of the requests checked (from a fixed seed), at least 30%
/// release something, 10% under a grant that needs consent, and 5% a
/// sensitive field. Every one of them is also checked against the model.
#[test]
fn the_generators_reach_permits_consent_and_sensitive_fields() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = (ops_strategy(), requests_strategy());
    let (mut requests, mut any, mut consent, mut sensitive) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..COVERAGE_CASES {
        let (ops, choices) = strategy.new_tree(&mut runner).unwrap().current();
        let state = run(&ops);
        for (pick, fields, perturb, day) in choices {
            let request = aimed_request(&state, pick, fields, perturb);
            let released = check_released(&state, &request, day_ms(day)).unwrap();
            requests += 1;
            any += usize::from(released.any);
            consent += usize::from(released.under_consent);
            sensitive += usize::from(released.sensitive);
        }
    }
    let percent = |count: usize| count * 100 / requests;
    eprintln!(
        "{requests} requests: {}% release, {}% under consent, {}% sensitive",
        percent(any),
        percent(consent),
        percent(sensitive)
    );
    assert!(percent(any) >= 30, "{}% of requests release something", percent(any));
    assert!(percent(consent) >= 10, "{}% release under consent", percent(consent));
    assert!(percent(sensitive) >= 5, "{}% release a sensitive field", percent(sensitive));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn released_fields_always_satisfy_the_policy(ops in ops_strategy(), requests in requests_strategy()) {
        let state = run(&ops);
        for (pick, fields, perturb, day) in requests {
            let request = aimed_request(&state, pick, fields, perturb);
            check_released(&state, &request, day_ms(day))?;
        }
    }

    #[test]
    fn commands_without_authority_are_rejected_and_no_rejection_changes_anything(ops in ops_strategy()) {
        let mut state = fixture().state.clone();
        for (choice, op) in &ops {
            let signer_index = signer_index(&state, *choice, op);
            let key = signer(signer_index);
            let command = command(&state, op);
            let allowed = authorised(&state, key, &command);
            let before = state.clone();
            let outcome = state.apply(&sign(key, command), NOW_MS);
            if !allowed {
                let code = outcome.as_ref().map_err(|rejection| rejection.code);
                prop_assert!(
                    matches!(code, Err(RejectionCode::NotAuthorised | RejectionCode::SignerUnknown | RejectionCode::SignerRevoked | RejectionCode::GrantUnknown)),
                    "unauthorised {:?} by signer {} gave {:?}", op, signer_index, code
                );
            }
            // Whatever the rejection, it changes nothing but the counters.
            if let Err(rejection) = &outcome {
                prop_assert_eq!(&state, &after_rejection(&before, &state), "{:?} changed the state", rejection.code);
            }
        }
    }

    #[test]
    fn replicas_agree_even_through_a_snapshot(ops in ops_strategy(), cut in any::<prop::sample::Index>()) {
        // Natural signers resolved against the initial state: some commands
        // are then unauthorised, which the replicas must reject alike.
        let initial = &fixture().state;
        let signed: Vec<_> =
            ops.iter().map(|(choice, op)| sign(signer(signer_index(initial, *choice, op)), command(initial, op))).collect();
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
        // The correction statistics kept at each event are the ones the
        // tracks give when counted afresh.
        let mut recounted = std::collections::BTreeMap::new();
        for track in replica_a.corrections.values() {
            let group = (track.owner.clone(), track.dataset.clone());
            recounted.entry(group).or_insert_with(CorrectionTally::default).add(track);
        }
        prop_assert_eq!(&replica_a.correction_tallies, &recounted);
        prop_assert_eq!(codec::encode(&replica_a).unwrap(), codec::encode(&replica_b).unwrap());
        prop_assert_eq!(replica_a, replica_b);
    }
}

/// The key of a fixture node.
fn key_of(node: &NodeId) -> &'static NodeKey {
    let fx = fixture();
    [&fx.hub, &fx.market, &fx.civil, &fx.jingansi, &fx.nanjingxilu, &fx.auditor, &fx.outsider]
        .into_iter()
        .map(|node| &node.key)
        .find(|key| key.node_id() == *node)
        .unwrap()
}

/// The key of a node of the dataset's owner.
fn owner_key(dataset: &str) -> &'static NodeKey {
    if dataset == ENTERPRISES {
        &fixture().market.key
    } else {
        &fixture().civil.key
    }
}

/// The access record an owner logs for `decision`, as the node builds it:
/// per released record, the fields the decision does not withhold.
fn logged(decision: &Decision, request: &AccessRequest, rows: &[Row], at_ms: u64) -> SignedCommand {
    let header = QueryHeader {
        dataset: request.dataset.clone(),
        subjects: rows.iter().map(|row| row.subject).collect(),
        fields: request.fields.clone(),
        purpose: request.purpose.clone(),
        grant: request.grant,
    };
    let outcome = match decision {
        Decision::Deny(reason) => AccessOutcome::Deny { reason: *reason },
        Decision::Permit { .. } => AccessOutcome::Permit {
            released: rows
                .iter()
                .enumerate()
                .filter_map(|(index, row)| {
                    let fields: Vec<String> = request
                        .fields
                        .iter()
                        .filter(|field| {
                            !matches!(decision.action_for(index, field), FieldAction::Withhold(_))
                        })
                        .cloned()
                        .collect();
                    (!fields.is_empty()).then_some(SubjectRelease { subject: row.subject, fields })
                })
                .collect(),
        },
    };
    let record = AccessRecord {
        request: SignedEnvelope::sign(key_of(&request.requester), &header, at_ms).unwrap(),
        outcome,
        decided_at_ms: at_ms,
    };
    SignedEnvelope::sign(owner_key(&request.dataset), &Command::RecordAccess(record), at_ms).unwrap()
}

/// One step of a log a faulty leader writes: a new command, or an old one
/// again, each at an entry time that may go back.
#[derive(Debug, Clone)]
enum Step {
    New(SignerChoice, Op, i64),
    Replay(prop::sample::Index, i64),
}

fn steps_strategy() -> impl Strategy<Value = Vec<Step>> {
    let choice =
        prop_oneof![6 => Just(SignerChoice::Natural), 1 => (0..8usize).prop_map(SignerChoice::Anyone)];
    // Mostly forward, sometimes back, sometimes past the replay window.
    let delta_ms = -200_000i64..400_000;
    let step = prop_oneof![
        3 => (choice, op_strategy(), delta_ms.clone()).prop_map(|(choice, op, delta)| Step::New(choice, op, delta)),
        1 => (any::<prop::sample::Index>(), delta_ms).prop_map(|(pick, delta)| Step::Replay(pick, delta)),
    ];
    proptest::collection::vec(step, 1..32)
}

/// Whether a rejection came before the nonce was spent (so applying the
/// same envelope again later is not a replay the state can see).
fn rejected_before_the_nonce(code: RejectionCode) -> bool {
    matches!(
        code,
        RejectionCode::EntryTimeWentBack
            | RejectionCode::SignatureInvalid
            | RejectionCode::FutureDated
            | RejectionCode::Stale
            | RejectionCode::SignerUnknown
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_decision_logged_by_the_owner_is_accepted(
        ops in ops_strategy(),
        requests in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..8u8, 0i64..12), 1..8),
    ) {
        let state = run(&ops);
        let rows = rows();
        for (pick, fields, perturb, day) in requests {
            let at_ms = NOW_MS + day as u64 * DAY_MS;
            let request = aimed_request(&state, pick, fields, perturb);
            let decision = decide(&state, &request, &rows, at_ms);
            let mut replica = state.clone();
            let outcome = replica.apply(&logged(&decision, &request, &rows, at_ms), at_ms);
            prop_assert!(outcome.is_ok(), "{:?} for {:?} was logged but rejected: {:?}", decision, request, outcome);
        }
    }

    #[test]
    fn every_correction_cleared_is_within_a_grant(
        ops in ops_strategy(),
        corrections in proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<u8>(), 0..4u8, 0..2usize, any::<bool>(), 0i64..3),
            1..8,
        ),
    ) {
        let state = run(&ops);
        let fx = fixture();
        let nodes = [&fx.jingansi, &fx.nanjingxilu, &fx.auditor];
        let grants: Vec<_> = state.grants.values().collect();
        for (pick, fields, perturb, district, move_district, day) in corrections {
            let at_ms = NOW_MS + day as u64 * DAY_MS;
            // Aimed at one of the state's grants (so clearances are common):
            // some of its fields, by its grantee, perturbed some of the time.
            let (mut submitter, dataset, mut changed) = match grants.get(pick.index(grants.len().max(1))) {
                Some(grant) => (
                    *nodes.iter().find(|node| node.org == grant.grantee).unwrap_or(&nodes[0]),
                    DATASETS.iter().position(|d| *d == grant.dataset).unwrap_or(0),
                    grant
                        .fields
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| fields & (1 << (i % 8)) != 0)
                        .map(|(_, field)| field.clone())
                        .collect::<BTreeSet<_>>(),
                ),
                None => (nodes[0], 0, BTreeSet::new()),
            };
            match perturb {
                0 => {
                    changed.insert(dataset_fields(dataset)[usize::from(fields) % 6].clone());
                }
                1 => submitter = nodes[usize::from(fields) % 3],
                _ => {}
            }
            if changed.is_empty() {
                changed.insert("name".to_string());
            }
            let current: BTreeMap<String, FieldValue> = dataset_fields(dataset)
                .into_iter()
                .map(|field| {
                    let value = if field == "district" { DISTRICTS[district] } else { "old" };
                    (field, FieldValue::Text(value.into()))
                })
                .collect();
            let changes: BTreeMap<String, FieldValue> = changed
                .into_iter()
                .map(|field| {
                    let value = if field == "district" && move_district { DISTRICTS[1 - district] } else { "new" };
                    (field, FieldValue::Text(value.into()))
                })
                .collect();
            let Ok(cleared) =
                state.check_correction(&submitter.key.node_id(), DATASETS[dataset], &current, &changes, at_ms)
            else {
                continue;
            };
            let member = state.active_member(&submitter.key.node_id());
            prop_assert!(member.is_some(), "cleared for a non-member");
            let grant = &state.grants[&cleared.grant];
            prop_assert!(grant.check_usable(&submitter.org, DATASETS[dataset], None, at_ms).is_ok());
            prop_assert!(!changes.contains_key(&state.datasets[DATASETS[dataset]].subject_key_field));
            for field in changes.keys() {
                prop_assert!(grant.fields.contains(field), "cleared an ungranted field {}", field);
                prop_assert!(!grant.masking.contains_key(field), "cleared a masked field {}", field);
            }
            for condition in &grant.scope {
                prop_assert!(condition.allowed.contains(&current[&condition.field]), "cleared a record out of scope");
            }
            let touches_scope = state.grants.values().any(|grant| {
                grant.check_usable(&submitter.org, DATASETS[dataset], None, at_ms).is_ok()
                    && grant.scope.iter().any(|condition| changes.contains_key(&condition.field))
            });
            if touches_scope {
                prop_assert!(cleared.review_required, "a change to a scope field was auto-accepted");
            }
        }
    }

    #[test]
    fn replicas_agree_and_replays_and_backwards_times_are_rejected(
        steps in steps_strategy(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut replica_a = fixture().state.clone();
        let mut log: Vec<(SignedCommand, u64)> = Vec::new();
        // Per envelope signed so far: whether its nonce was spent.
        let mut envelopes: Vec<(SignedCommand, bool)> = Vec::new();
        let mut clock = NOW_MS as i64;
        for step in &steps {
            let (index, entry_ms) = match step {
                Step::New(choice, op, delta) => {
                    clock += delta;
                    let key = signer(signer_index(&replica_a, *choice, op));
                    let envelope = SignedEnvelope::sign(key, &command(&replica_a, op), clock as u64).unwrap();
                    envelopes.push((envelope, false));
                    (envelopes.len() - 1, clock as u64)
                }
                Step::Replay(_, _) if envelopes.is_empty() => continue,
                Step::Replay(pick, delta) => {
                    clock += delta;
                    (pick.index(envelopes.len()), clock as u64)
                }
            };
            let (envelope, spent) = envelopes[index].clone();
            let before = replica_a.clone();
            let outcome = replica_a.apply(&envelope, entry_ms);
            log.push((envelope, entry_ms));
            if entry_ms < before.last_entry_time_ms {
                prop_assert_eq!(outcome.as_ref().map_err(|r| r.code).err(), Some(RejectionCode::EntryTimeWentBack));
                let mut expected = before;
                expected.commands_applied += 1;
                expected.digest = replica_a.digest;
                prop_assert_eq!(&replica_a, &expected);
                continue;
            }
            if spent {
                prop_assert!(outcome.is_err(), "a replayed command was accepted");
                prop_assert_eq!(&replica_a, &after_rejection(&before, &replica_a));
            }
            let spends = match &outcome {
                Ok(_) => true,
                Err(rejection) => !rejected_before_the_nonce(rejection.code),
            };
            envelopes[index].1 |= spends;
        }
        let cut = cut.index(log.len() + 1);
        let mut replica_b = fixture().state.clone();
        for (envelope, entry_ms) in &log[..cut] {
            let _ = replica_b.apply(envelope, *entry_ms);
        }
        let snapshot = codec::encode(&replica_b).unwrap();
        let mut replica_b: PolicyState = codec::decode_exact(&snapshot, codec::DECODE_BYTES_MAX).unwrap();
        for (envelope, entry_ms) in &log[cut..] {
            let _ = replica_b.apply(envelope, *entry_ms);
        }
        prop_assert_eq!(codec::encode(&replica_a).unwrap(), codec::encode(&replica_b).unwrap());
        prop_assert_eq!(replica_a, replica_b);
    }
}
