//! Decisions per second with a state of 10,000 grants and 100,000 consents,
//! and the memory those grants take. Run: `cargo bench -p civmesh-policy`.
//!
//! Each anchor is the bare data access its decision cannot avoid, measured
//! in the same run: one grant lookup for the statutory decision, one grant
//! and one consent lookup for the consent-based one.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unsafe_code)]

#[path = "../../testnet/bench_support/ratio_table.rs"]
mod ratio_table;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use civmesh_certs::{NodeKey, OrgId, Role};
use civmesh_policy::model::*;
use civmesh_policy::{decide, AccessRequest, PolicyState, RecordFacts};

/// Counts live heap bytes, to report memory per 10,000 grants.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const GRANTS: u64 = 10_000;
const CONSENTS: u64 = 100_000;
const DATASET: &str = "civil-affairs/residents";
const NOW_MS: u64 = 1_800_000_000_000;

struct Row {
    subject: SubjectKeyHash,
    district: FieldValue,
}

impl RecordFacts for Row {
    fn subject(&self) -> SubjectKeyHash {
        self.subject
    }
    fn value(&self, field: &str) -> Option<&FieldValue> {
        (field == "district").then_some(&self.district)
    }
}

fn subject(index: u64) -> SubjectKeyHash {
    SubjectKeyHash::of(b"bench", &format!("3101{index:014}"))
}

fn member(key: &NodeKey, org: &str, role: Role) -> Member {
    Member {
        node_id: key.node_id(),
        org: OrgId::new(org).unwrap(),
        role,
        certificate_der: vec![],
        certificate_serial: vec![],
        certificate_not_after_ms: u64::MAX,
        admitted_at_ms: 0,
        revoked: None,
    }
}

fn grant(id: u64, grantee: &OrgId) -> Grant {
    Grant {
        id,
        dataset: DATASET.into(),
        grantor: OrgId::new("dept/civil-affairs").unwrap(),
        grantee: grantee.clone(),
        fields: BTreeSet::from([
            "name".to_string(),
            "address".to_string(),
            "lives_alone_80_plus".to_string(),
        ]),
        purpose: format!("purpose-{}", id % 50),
        legal_basis: if id.is_multiple_of(2) { LegalBasis::Consent } else { LegalBasis::StatutoryDuty },
        scope: vec![ScopeCondition {
            field: "district".into(),
            allowed: BTreeSet::from([FieldValue::Text("jingan".into())]),
        }],
        valid_from_ms: 0,
        valid_until_ms: u64::MAX,
        masking: BTreeMap::from([("address".to_string(), MaskingRule::KeepFirst(6))]),
        consent_required: false,
        demand: None,
        retention: None,
        assessment: None,
        issued_at_ms: 0,
        revoked: None,
    }
}

struct Bench {
    state: PolicyState,
    consent_request: AccessRequest,
    duty_request: AccessRequest,
    row: Vec<Row>,
    grant_bytes_per_10k: usize,
}

fn build() -> Bench {
    let owner = NodeKey::generate().unwrap();
    let street = NodeKey::generate().unwrap();
    let street_org = OrgId::new("street/jingansi").unwrap();
    let mut state = PolicyState::default();
    state.members.insert(owner.node_id(), member(&owner, "dept/civil-affairs", Role::Department));
    state.members.insert(street.node_id(), member(&street, "street/jingansi", Role::Street));
    let field = |name: &str, class| FieldSpec { name: name.into(), field_type: FieldType::Text, class };
    state.datasets.insert(
        DATASET.into(),
        Dataset {
            id: DATASET.into(),
            owner: OrgId::new("dept/civil-affairs").unwrap(),
            title: "Residents".into(),
            subject_key_field: "citizen_id".into(),
            sharing: SharingCategory::Conditional,
            fields: vec![
                field("citizen_id", FieldClass::Personal),
                field("name", FieldClass::Personal),
                field("address", FieldClass::Personal),
                field("district", FieldClass::Public),
                field("lives_alone_80_plus", FieldClass::Sensitive(SensitiveCategory::SpecificIdentity)),
            ],
            scope_fields: vec!["district".into()],
            version: 1,
        },
    );
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for id in 1..=GRANTS {
        state.grants.insert(id, grant(id, &street_org));
    }
    let grant_bytes_per_10k = (LIVE_BYTES.load(Ordering::Relaxed) - before) * 10_000 / GRANTS as usize;
    for index in 0..CONSENTS {
        let key = ConsentKey {
            subject: subject(index),
            dataset: DATASET.into(),
            grantee: street_org.clone(),
            purpose: format!("purpose-{}", index % 50),
        };
        let consent = Consent {
            given: true,
            covers_sensitive: index % 3 == 0,
            recorded_by: street_org.clone(),
            recorded_at_ms: 0,
            channel: "street_window".into(),
        };
        state.consents.insert(key, consent);
    }
    let request = |grant: u64| AccessRequest {
        requester: street.node_id(),
        dataset: DATASET.into(),
        fields: vec!["name".into(), "address".into(), "lives_alone_80_plus".into()],
        purpose: format!("purpose-{}", grant % 50),
        grant: Some(grant),
    };
    // Subject 1200 has a consent for purpose-0 (1200 % 50 == 0), the purpose of grant 5000.
    let row = vec![Row { subject: subject(1200), district: FieldValue::Text("jingan".into()) }];
    Bench { consent_request: request(5000), duty_request: request(5001), state, row, grant_bytes_per_10k }
}

fn main() {
    let bench = build();
    assert!(decide(&bench.state, &bench.consent_request, &bench.row, NOW_MS).is_permit());
    assert!(decide(&bench.state, &bench.duty_request, &bench.row, NOW_MS).is_permit());
    let run = ratio_table::Run::start();
    let mut criterion = run.criterion();
    {
        let mut group = criterion.benchmark_group("decide");
        group.bench_function("decide_consent_basis", |b| {
            b.iter(|| decide(black_box(&bench.state), black_box(&bench.consent_request), &bench.row, NOW_MS))
        });
        group.bench_function("decide_statutory_basis", |b| {
            b.iter(|| decide(black_box(&bench.state), black_box(&bench.duty_request), &bench.row, NOW_MS))
        });
        let consent_key = ConsentKey {
            subject: bench.row[0].subject,
            dataset: DATASET.into(),
            grantee: OrgId::new("street/jingansi").unwrap(),
            purpose: "purpose-0".into(),
        };
        // The statutory decision looks up the grant only; the consent-based
        // one also each subject's consent: each anchor does the same lookups.
        group.bench_function("raw_grant_lookup", |b| {
            b.iter(|| black_box(black_box(&bench.state).grants.get(black_box(&5001))).map(|grant| grant.id))
        });
        group.bench_function("raw_grant_and_consent_lookup", |b| {
            b.iter(|| {
                let grant = black_box(&bench.state).grants.get(black_box(&5000));
                let consent = black_box(&bench.state).consents.get(black_box(&consent_key));
                (grant.is_some(), consent.is_some())
            })
        });
        group.finish();
    }
    criterion.final_summary();
    run.print_ratio_table(
        "policy decisions (10,000 grants, 100,000 consents) vs the bare map lookups each makes (same run)",
        &[
            ratio_table::Row {
                group: "decide",
                bench: "decide_consent_basis",
                anchor: "raw_grant_and_consent_lookup",
                operations_per_iteration: 1.0,
            },
            ratio_table::Row {
                group: "decide",
                bench: "decide_statutory_basis",
                anchor: "raw_grant_lookup",
                operations_per_iteration: 1.0,
            },
        ],
    );
    println!("target: 1,000,000 decisions/s on one core");
    println!(
        "memory: {} bytes per 10,000 grants ({} bytes per grant)",
        bench.grant_bytes_per_10k,
        bench.grant_bytes_per_10k / 10_000
    );
}
