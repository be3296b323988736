//! Audit-bundle verification throughput: entries per second on one core,
//! and the wall time of a whole bundle on all cores, beside raw ring
//! Ed25519 verifications per second measured in the same run.
//!
//! Run: `cargo bench -p civmesh-policy --bench audit_verify -- --entries 1000000`
//! (default 20,000 entries). `--write FILE` also writes the bundle; a later
//! `-- --verify-file FILE` verifies that file as a stream, as `civmesh audit
//! verify` does, and prints its time and this process's peak memory (so the
//! bundle's size is not in it). Each entry is a query logged by its owner:
//! two signatures (the requester's header and the owner's command), both
//! verified, and the permit re-justified by a replay of the policy.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/city.rs"]
mod city;
#[path = "support/memory.rs"]
mod memory;

use std::time::Instant;

use civmesh_certs::{NodeKey, SignedEnvelope};
use civmesh_policy::audit::{
    encode_bundle, verify_stream, ArchivedCommand, AuditBundle, BundleReader, CheckpointBody, Checks,
    CompactRange,
};
use civmesh_policy::fixtures::ENTERPRISES;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::state::{COMMAND_NONCES_PER_SIGNER_MAX, COMMAND_SKEW_MS_MAX};
use civmesh_policy::{
    AccessOutcome, AccessRecord, Command, PolicyState, QueryHeader, ReasonCode, SubjectRelease,
};

use city::{sign, City, NOW_MS};

const DATASET: &str = ENTERPRISES;
/// A checkpoint every this many entries, as the nodes do.
const CHECKPOINT_EVERY: u64 = 1_000;

struct Builder {
    state: PolicyState,
    tree: CompactRange,
    commands: Vec<ArchivedCommand>,
}

impl Builder {
    /// Appends a command signed at its entry time ([`ENTRY_SPACING_MS`]
    /// apart, so the replay window never holds more than a signer's quota).
    fn push(&mut self, envelope: civmesh_policy::SignedCommand, at_ms: u64) {
        let (outcome, appended) = self.state.apply_with_signatures_verified(&envelope, at_ms);
        let accepted = outcome.is_ok();
        assert!(accepted, "the generated command {} was rejected", self.commands.len() + 1);
        if let Some(leaf) = appended.audit_leaf {
            self.tree.push(&leaf);
        }
        let sequence = self.commands.len() as u64 + 1;
        self.commands.push(ArchivedCommand {
            sequence,
            log_index: sequence,
            entry_time_ms: at_ms,
            envelope: envelope.to_bytes().unwrap(),
            accepted,
        });
    }
}

/// Signs `count` access records on all cores: (requester header, owner command).
fn signed_accesses(street: &NodeKey, market: &NodeKey, count: u64) -> Vec<civmesh_policy::SignedCommand> {
    city::on_every_core(0..count, |index| access(street, market, index))
}

fn access(street: &NodeKey, market: &NodeKey, index: u64) -> civmesh_policy::SignedCommand {
    let at_ms = entry_time(index);
    let subject = SubjectKeyHash(civmesh_certs::codec::sha256(&index.to_le_bytes()));
    let permit = index % 4 != 3;
    let header = QueryHeader {
        dataset: DATASET.into(),
        subjects: vec![subject],
        fields: vec!["name".into(), "operating_address".into()],
        purpose: "inspection".into(),
        grant: permit.then_some(1),
    };
    let outcome = if permit {
        AccessOutcome::Permit {
            released: vec![SubjectRelease {
                subject,
                fields: vec!["name".into(), "operating_address".into()],
            }],
        }
    } else {
        AccessOutcome::Deny { reason: ReasonCode::GrantRequired }
    };
    let record = AccessRecord {
        request: SignedEnvelope::sign(street, &header, at_ms).unwrap(),
        outcome,
        decided_at_ms: at_ms,
    };
    SignedEnvelope::sign(market, &Command::RecordAccess(record), at_ms).unwrap()
}

/// The time between two entries, in ms: each signer signs one command
/// per entry, and keeps at most `COMMAND_NONCES_PER_SIGNER_MAX` nonces in a
/// window twice `COMMAND_SKEW_MS_MAX` wide.
const ENTRY_SPACING_MS: u64 = 2 * COMMAND_SKEW_MS_MAX / COMMAND_NONCES_PER_SIGNER_MAX as u64;

/// Entry `index`'s time; setup commands come first.
fn entry_time(index: u64) -> u64 {
    NOW_MS + 10 + index * ENTRY_SPACING_MS
}

fn build(entries: u64) -> AuditBundle {
    let city = City::new();
    let (hub, market, street) = (&city.hub, &city.market, &city.street);
    let mut builder =
        Builder { state: PolicyState::default(), tree: CompactRange::default(), commands: Vec::new() };
    for (envelope, at_ms) in city.setup(&["name", "operating_address"]) {
        builder.push(envelope, at_ms);
    }
    for (index, envelope) in signed_accesses(&street.key, &market.key, entries).into_iter().enumerate() {
        let at_ms = entry_time(index as u64);
        builder.push(envelope, at_ms);
        if builder.tree.size().is_multiple_of(CHECKPOINT_EVERY) {
            let size = builder.tree.size();
            let body = CheckpointBody { tree_size: size, root: builder.tree.root(), log_index: size };
            builder.push(sign(&hub.key, Command::CosignCheckpoint(body.clone()), at_ms), at_ms);
            builder.push(sign(&market.key, Command::CosignCheckpoint(body), at_ms), at_ms);
        }
    }
    AuditBundle {
        federation_name: city::FEDERATION.into(),
        ca_certificate_der: city.ca_der.clone(),
        exported_by: hub.key.node_id(),
        exported_at_ms: NOW_MS,
        from_entry: 0,
        to_entry: u64::MAX,
        commands: builder.commands,
    }
}

/// Raw ring Ed25519 verifications per second on `threads` cores, each
/// checking `ROUNDS` signatures after a warm-up of a tenth as many.
fn ring_verifies_per_second(threads: usize) -> f64 {
    const ROUNDS: u32 = 20_000;
    let key = NodeKey::generate().unwrap();
    let message = [7u8; 256];
    let signature = key.sign(&message);
    let public = key.node_id().0;
    let verify = |rounds: u32| {
        for _ in 0..rounds {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
                .verify(std::hint::black_box(&message), &signature)
                .unwrap();
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| verify(ROUNDS / 10));
        }
    });
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| verify(ROUNDS));
        }
    });
    f64::from(ROUNDS) * threads as f64 / started.elapsed().as_secs_f64()
}

/// The value after `name` on the command line.
fn argument(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|arg| arg == name).and_then(|index| args.get(index + 1)).cloned()
}

/// This process's peak resident memory, in MiB (Linux: VmHWM).
fn peak_rss_mib() -> f64 {
    memory::status_mib("VmHWM")
}

/// Verifies a bundle file as a stream on every core; prints time and peak memory.
fn verify_file(path: &str) {
    let started = Instant::now();
    let file = std::fs::File::open(path).expect("the bundle file");
    let length = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let reader = BundleReader::open(std::io::BufReader::new(file)).unwrap();
    let (report, _, _) = verify_stream(reader, Checks::new(None, &[]), &mut |_| {}, None).unwrap();
    assert!(report.ok, "{:?}", report.failures.first());
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "streamed: {} entries, {} commands, {length} bytes in {seconds:.2} s ({:.0} entries/s), peak memory {:.0} MiB",
        report.access_entries,
        report.commands,
        report.access_entries as f64 / seconds,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = argument(&args, "--verify-file") {
        verify_file(&path);
        return;
    }
    let entries: u64 =
        argument(&args, "--entries").map_or(20_000, |value| value.parse().expect("--entries takes a number"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let bundle = build(entries);
    let bytes = encode_bundle(&bundle).unwrap();
    println!(
        "audit verify: {entries} entries, {} commands, {} bytes (built in {:.1} s)",
        bundle.commands.len(),
        bytes.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = argument(&args, "--write") {
        std::fs::write(&path, &bytes).expect("writing the bundle");
    }
    let run = |threads: usize| {
        let started = Instant::now();
        let reader = BundleReader::open(bytes.as_slice()).unwrap();
        let checks = Checks { threads, ..Checks::new(None, &[]) };
        let (report, _, _) = verify_stream(reader, checks, &mut |_| {}, None).unwrap();
        assert!(report.ok && report.access_entries == entries, "{:?}", report.failures.first());
        started.elapsed().as_secs_f64()
    };
    // The same warm-up for figures and anchors: one untimed pass each.
    run(cores);
    let ring_one_core = ring_verifies_per_second(1);
    let ring_all_cores = ring_verifies_per_second(cores);
    let one_core_s = run(1);
    let all_cores_s = run(cores);
    let row = |label: String, per_second: f64, anchor: f64| {
        println!("{label:<44} | {per_second:>12.0} | {anchor:>12.0} | {:>6.2}", per_second / anchor);
    };
    println!("{:<44} | {:>12} | {:>12} | {:>6}", "", "per second", "anchor", "ratio");
    row("bundle entries verified, 1 core".into(), entries as f64 / one_core_s, ring_one_core);
    row(format!("bundle entries verified, {cores} cores"), entries as f64 / all_cores_s, ring_all_cores);
    println!("anchor: raw ring Ed25519 verifications per second on as many cores, in this run");
    println!(
        "whole bundle (decode + verify): {one_core_s:.2} s on 1 core, {all_cores_s:.2} s on {cores} cores"
    );
    println!(
        "each entry needs 2 signature checks, verified in ZIP 215 batches: one at a time the ceiling \
         would be ratio 0.50; issue 19's goal is 0.75 (1.5 x ring / 2)"
    );
}
