//! What the policy log's end-to-end tests share: waiting for the replicas
//! to agree, signing access records in bulk, submitting them exactly once,
//! and reading the audit counts.

use std::collections::BTreeSet;
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{
    AccessOutcome, AccessRecord, Command, QueryHeader, ReasonCode, RejectionCode, SignedCommand,
};
use civmesh_testnet::{wait_until, Testnet};

/// How long the replicas may take to agree after a few commands.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until every running node reports the same applied index and
/// digest; returns the digest.
pub fn converged(net: &Testnet) -> String {
    converged_within(net, CONVERGE_TIMEOUT)
}

/// [`converged`], waiting at most `timeout`.
pub fn converged_within(net: &Testnet, timeout: Duration) -> String {
    wait_until("all replicas to converge", timeout, || {
        let mut seen = BTreeSet::new();
        for index in (0..net.nodes.len()).filter(|index| net.is_running(*index)) {
            let status = net.api(index).ok()?.status().ok()?.raft;
            seen.insert((status.applied_index, status.state_digest));
        }
        (seen.len() == 1).then(|| seen.into_iter().next().map(|(_, hash)| hash)).flatten()
    })
    .unwrap()
}

/// `count` denials logged by `owner` for queries `street` signed of
/// `dataset`, each naming `subjects_per_record` subjects: a denial needs no grant, records or consents. Signed on
/// every core.
pub fn denials(
    street: &NodeKey,
    owner: &NodeKey,
    dataset: &str,
    count: usize,
    subjects_per_record: usize,
) -> Vec<SignedCommand> {
    let denial = |number: usize| {
        let subjects = (0..subjects_per_record)
            .map(|subject| SubjectKeyHash(codec::sha256(format!("{number}/{subject}").as_bytes())))
            .collect();
        let header = QueryHeader {
            dataset: dataset.into(),
            subjects,
            fields: vec!["name".into()],
            purpose: "inspection".into(),
            grant: None,
        };
        let now = now_unix_millis();
        let request = SignedEnvelope::sign(street, &header, now).unwrap();
        let record = AccessRecord {
            request,
            outcome: AccessOutcome::Deny { reason: ReasonCode::GrantRequired },
            decided_at_ms: now,
        };
        SignedEnvelope::sign(owner, &Command::RecordAccess(record), now).unwrap()
    };
    civmesh_testnet::on_every_core(0..count as u64, |number| Ok(denial(number as usize))).unwrap()
}

/// The access entries node `index` counts, and the size of its latest
/// final checkpoint (0 before one).
pub fn audit_counts(net: &Testnet, index: usize) -> Option<(u64, u64)> {
    let checkpoints: serde_json::Value = net.api(index).ok()?.get("/v1/audit/checkpoints").ok()?;
    let last_final = checkpoints["latest"]["tree_size"].as_u64();
    Some((checkpoints["access_entries"].as_u64()?, last_final.unwrap_or(0)))
}

/// How often a batch is submitted again after the node's commit timeout.
pub const SUBMIT_ATTEMPTS_MAX: usize = 5;

/// Submits `batch`, again after a commit timeout (a busy machine can miss
/// the node's bound): commands that committed meanwhile then come back as
/// replays, so each is applied exactly once, which the counts check later.
pub fn submit_each_once(api: &civmesh_testnet::NodeApi, number: usize, batch: &[SignedCommand]) {
    for attempt in 1..=SUBMIT_ATTEMPTS_MAX {
        match api.submit(batch) {
            Ok(response) => {
                for outcome in &response.outcomes {
                    let replayed =
                        outcome.as_ref().is_err_and(|rejection| rejection.code == RejectionCode::Replayed);
                    assert!(outcome.is_ok() || (attempt > 1 && replayed), "batch {number}: {outcome:?}");
                }
                return;
            }
            Err(error) if attempt < SUBMIT_ATTEMPTS_MAX && format!("{error:#}").contains("503") => {}
            Err(error) => panic!("batch {number}, attempt {attempt}: {error:#}"),
        }
    }
}

/// A hex digest in JSON, as bytes.
pub fn hash(value: &serde_json::Value) -> [u8; 32] {
    civmesh_policy::hex_digest::from_hex(value.as_str().unwrap()).unwrap()
}
