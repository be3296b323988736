//! Envelope signing and verification per second, beside raw ring Ed25519
//! sign and verify measured in the same run. Run: `cargo bench -p civmesh-certs`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../testnet/bench_support/ratio_table.rs"]
mod ratio_table;

use std::hint::black_box;

use civmesh_certs::{NodeKey, SignedEnvelope};
use criterion::Criterion;
use serde::{Deserialize, Serialize};

/// A payload the size of a typical query request.
#[derive(Serialize, Deserialize)]
struct QueryLike {
    dataset: String,
    keys: Vec<String>,
    fields: Vec<String>,
    purpose: String,
    grant_id: u64,
}

fn payload() -> QueryLike {
    QueryLike {
        dataset: "enterprise-registry".into(),
        keys: vec!["91310106MA1FL5XR2K".into()],
        fields: vec!["name".into(), "operating_address".into()],
        purpose: "street-inspection".into(),
        grant_id: 42,
    }
}

fn envelope_benches(c: &mut Criterion) {
    let key = NodeKey::generate().unwrap();
    let payload = payload();
    let envelope = SignedEnvelope::sign(&key, &payload, 1).unwrap();
    let raw_message = envelope.body_bytes().to_vec();
    let raw_signature = key.sign(&raw_message);
    let public = key.node_id().0;
    let mut group = c.benchmark_group("envelope");
    group.bench_function("raw_ring_sign", |b| b.iter(|| key.sign(black_box(&raw_message))));
    group.bench_function("envelope_sign", |b| {
        b.iter(|| SignedEnvelope::sign(&key, black_box(&payload), 1).unwrap())
    });
    group.bench_function("raw_ring_verify", |b| {
        b.iter(|| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
                .verify(black_box(&raw_message), black_box(&raw_signature))
                .unwrap()
        })
    });
    group.bench_function("envelope_verify", |b| b.iter(|| black_box(&envelope).verify_signature().unwrap()));
    group.finish();
}

fn main() {
    let run = ratio_table::Run::start();
    let mut criterion = run.criterion();
    envelope_benches(&mut criterion);
    criterion.final_summary();
    run.print_ratio_table(
        "envelope vs raw ring Ed25519 (same run)",
        &[
            ratio_table::Row {
                group: "envelope",
                bench: "envelope_sign",
                anchor: "raw_ring_sign",
                operations_per_iteration: 1.0,
            },
            ratio_table::Row {
                group: "envelope",
                bench: "envelope_verify",
                anchor: "raw_ring_verify",
                operations_per_iteration: 1.0,
            },
        ],
    );
}
