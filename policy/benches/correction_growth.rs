//! The policy state as corrections accumulate: a million corrections at
//! the city's rate of 50,000 a day, each submitted, delivered, accepted,
//! applied and its outcome delivered. Prints, at 10k, 100k and 1M
//! corrections, the tracks the state holds, the state's encoded size
//! (what a state image and a snapshot carry), this process's resident
//! memory, and apply's cost per command over the last stretch; beside the
//! anchor of the same run, the state's size had it kept every closed
//! correction (as it did before they were released), as a ratio.
//!
//! Run: `cargo bench -p civmesh-policy --bench correction_growth`
//! (`-- --corrections N` for another total).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/city.rs"]
mod city;
#[path = "support/memory.rs"]
mod memory;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use city::{sign, City, NOW_MS};
use civmesh_certs::codec;
use civmesh_policy::correction::{CorrectionEvent, CorrectionStage};
use civmesh_policy::fixtures::ENTERPRISES;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{Command, PolicyState, SignedCommand};

/// The city's corrections a day (issue 13).
const CORRECTIONS_PER_DAY: u64 = 50_000;
/// The time between two corrections' submissions, in ms.
const SPACING_MS: u64 = city::DAY_MS / CORRECTIONS_PER_DAY;
/// Corrections signed at once, on every core.
const SIGNED_AT_ONCE: u64 = 10_000;
const STAGES: [CorrectionStage; 5] = [
    CorrectionStage::Submitted,
    CorrectionStage::Delivered,
    CorrectionStage::Accepted,
    CorrectionStage::Applied,
    CorrectionStage::OutcomeDelivered,
];

/// Correction `index`'s five events, each with its entry time.
fn lifecycle(city: &City, index: u64) -> Vec<(SignedCommand, u64)> {
    let id = codec::sha256(&index.to_le_bytes());
    let submitted_at_ms = NOW_MS + 10 + index * SPACING_MS;
    (0..)
        .zip(STAGES)
        .map(|(offset, stage)| {
            let at_ms = submitted_at_ms + offset;
            let by_street = matches!(stage, CorrectionStage::Submitted | CorrectionStage::OutcomeDelivered);
            let key = if by_street { &city.street.key } else { &city.market.key };
            let event = CorrectionEvent {
                correction: id,
                dataset: ENTERPRISES.into(),
                subject: SubjectKeyHash(id),
                submitter: city.street.key.node_id(),
                stage,
                payload_sha256: id,
                fields: BTreeSet::from(["operating_address".to_string()]),
                reason_code: None,
                version: (stage == CorrectionStage::Applied).then_some(2),
                operator: String::new(),
                record_written_at_ms: stage.is_owner_decision().then_some(submitted_at_ms),
            };
            (sign(key, Command::RecordCorrectionEvent(event), at_ms), at_ms)
        })
        .collect()
}

/// Corrections `from..to`'s events, signed on every core, in order.
fn signed(city: &City, from: u64, to: u64) -> Vec<(SignedCommand, u64)> {
    city::on_every_core(from..to, |index| lifecycle(city, index)).into_iter().flatten().collect()
}

/// This process's resident memory now, in MiB (Linux: VmRSS).
fn rss_mib() -> f64 {
    memory::status_mib("VmRSS")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: u64 = args
        .iter()
        .position(|arg| arg == "--corrections")
        .and_then(|index| args.get(index + 1))
        .map_or(1_000_000, |value| value.parse().expect("--corrections takes a number"));
    let city = City::new();
    let mut state = PolicyState::default();
    for (envelope, at_ms) in city.setup(&["name", "operating_address"]) {
        assert!(state.apply(&envelope, at_ms).is_ok());
    }
    let marks: Vec<u64> = [10_000, 100_000, 1_000_000, total]
        .into_iter()
        .filter(|mark| *mark <= total)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    println!(
        "{:>10} | {:>7} | {:>8} | {:>12} | {:>14} | {:>6} | {:>8} | {:>10}",
        "corrections", "days", "tracks", "state bytes", "kept-all bytes", "ratio", "RSS MiB", "apply µs"
    );
    let (mut done, mut released_bytes, mut applied_since, mut apply_time) =
        (0u64, 0u64, 0u64, Duration::ZERO);
    for mark in marks {
        while done < mark {
            let to = (done + SIGNED_AT_ONCE).min(mark);
            for (envelope, at_ms) in signed(&city, done, to) {
                let started = Instant::now();
                let (outcome, appended) = state.apply_with_signatures_verified(&envelope, at_ms);
                apply_time += started.elapsed();
                applied_since += 1;
                assert!(outcome.is_ok(), "{outcome:?}");
                released_bytes += appended
                    .closed_corrections
                    .iter()
                    .map(|released| codec::encode(released).unwrap().len() as u64)
                    .sum::<u64>();
            }
            done = to;
        }
        let state_bytes = codec::encode(&state).unwrap().len() as u64;
        let kept_all = state_bytes + released_bytes;
        println!(
            "{mark:>11} | {:>7.1} | {:>8} | {state_bytes:>12} | {kept_all:>14} | {:>6.3} | {:>8.0} | {:>10.2}",
            mark as f64 / CORRECTIONS_PER_DAY as f64,
            state.corrections.len(),
            state_bytes as f64 / kept_all as f64,
            rss_mib(),
            apply_time.as_secs_f64() * 1e6 / applied_since as f64,
        );
        (applied_since, apply_time) = (0, Duration::ZERO);
    }
    println!(
        "kept-all bytes (the anchor): the state's size plus every released track's encoding, what the state \
         held when closed corrections stayed in it; apply µs: per command since the previous row, \
         signatures verified beforehand"
    );
}
