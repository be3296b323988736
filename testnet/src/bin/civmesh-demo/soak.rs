//! `--soak-seconds N` (or `--soak-minutes N`): mixed queries, corrections
//! and policy changes with random faults, then a check that the federation
//! ended consistent.
//!
//! The schedule of operations and faults is a function of the seed alone:
//! each operation is planned, with every random choice it needs, before it
//! runs, so outcomes never change what comes next. `--seed N` replays a
//! soak; the soak writes what it ran to `soak-schedule.log` in the demo's
//! directory, and `--soak-plan COUNT` prints the first COUNT operations of a
//! seed's schedule without starting anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::LegalBasis;
use civmesh_policy::Command;
use civmesh_testnet::city::ENTERPRISES;
use civmesh_testnet::{wait_until, Testnet};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{enterprise_key, ok, step, ENTERPRISE_COUNT, PURPOSE};

/// How long the soak waits for the federation to settle afterwards.
const SOAK_SETTLE_SECONDS_MAX: u64 = 120;
/// The most operations `--soak-plan` prints.
pub const SOAK_PLAN_OPERATIONS_MAX: u64 = 1_000_000;
/// Where in the demo's directory the soak writes the operations it ran.
const SCHEDULE_FILE: &str = "soak-schedule.log";

/// One planned operation of the soak, with every random choice made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    /// The street queries one enterprise.
    Query { key: String },
    /// The street corrects one enterprise's operating address.
    Correction { key: String, street_number: u64 },
    /// The street files a demand.
    Demand { purpose: String },
    /// The market issues a grant to Nanjing West Road.
    Grant,
    /// A street (3, 4 or 5) killed with SIGKILL and restarted.
    KillStreet { node: usize },
    /// A voter killed with SIGKILL, down for a while, restarted.
    KillVoter { node: usize, down_ms: u64 },
    /// A voter frozen (SIGSTOP) for a while, then thawed.
    FreezeVoter { node: usize, frozen_ms: u64 },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Query { key } => write!(f, "query {key}"),
            Operation::Correction { key, street_number } => {
                write!(f, "correction {key} to {street_number} Soak Road")
            }
            Operation::Demand { purpose } => write!(f, "demand for {purpose}"),
            Operation::Grant => write!(f, "grant to street/nanjingxilu"),
            Operation::KillStreet { node } => write!(f, "fault: kill -9 node {node}, restart"),
            Operation::KillVoter { node, down_ms } => {
                write!(f, "fault: kill -9 voter {node}, down {down_ms} ms")
            }
            Operation::FreezeVoter { node, frozen_ms } => {
                write!(f, "fault: freeze voter {node} for {frozen_ms} ms")
            }
        }
    }
}

/// The seed's schedule: an endless sequence of planned operations.
struct Schedule(ChaCha8Rng);

impl Schedule {
    fn new(seed: u64) -> Self {
        Schedule(ChaCha8Rng::seed_from_u64(seed))
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0.next_u64() % bound.max(1)
    }

    fn next_operation(&mut self) -> Operation {
        // Jing'an Temple street's enterprises: those with index % 6 == 1.
        let key = enterprise_key(6 * self.below(ENTERPRISE_COUNT as u64 / 6) as usize + 1);
        match self.below(10) {
            0..=4 => Operation::Query { key },
            5..=6 => Operation::Correction { key, street_number: self.below(900) + 1 },
            7..=8 if self.below(2) == 0 => {
                Operation::Demand { purpose: format!("soak-{}", self.below(1_000)) }
            }
            7..=8 => Operation::Grant,
            _ => match self.below(3) {
                0 => Operation::KillStreet { node: 3 + self.below(3) as usize },
                1 => Operation::KillVoter { node: self.below(3) as usize, down_ms: 300 + self.below(1_000) },
                _ => Operation::FreezeVoter {
                    node: self.below(3) as usize,
                    frozen_ms: 500 + self.below(1_500),
                },
            },
        }
    }
}

/// `--soak-plan COUNT --seed N`: the first `count` operations of the seed's
/// schedule, one a line, as the soak writes them.
pub fn print_plan(seed: u64, count: u64) {
    let mut schedule = Schedule::new(seed);
    for index in 0..count {
        println!("{index} {}", schedule.next_operation());
    }
}

/// The soak: operations from the seed's schedule until `seconds` have
/// passed; then every node back up, every correction decided and applied
/// at most once, every replica identical at the same index, and the audit
/// bundle verified. Prints the counts.
pub fn soak(
    net: &mut Testnet,
    root: &std::path::Path,
    seconds: u64,
    seed: u64,
    grant_id: u64,
) -> anyhow::Result<()> {
    step("soak", &format!("{seconds} s of mixed queries, corrections and policy changes with random faults"));
    println!("    seed {seed} (replay: civmesh demo --soak-seconds {seconds} --seed {seed})");
    run(net, root, seconds, seed, grant_id).with_context(|| format!("the soak with seed {seed} failed"))
}

fn run(
    net: &mut Testnet,
    root: &std::path::Path,
    seconds: u64,
    seed: u64,
    grant_id: u64,
) -> anyhow::Result<()> {
    net.auto_accept(1, ENTERPRISES, "street/jingansi", "operating_address")?;
    let keys = Keys {
        market: NodeKey::load(&net.nodes[1].data_dir.join("node.key"))?,
        street: NodeKey::load(&net.nodes[3].data_dir.join("node.key"))?,
    };
    let schedule_path = root.join(SCHEDULE_FILE);
    let mut log = std::io::BufWriter::new(std::fs::File::create(&schedule_path)?);
    let mut schedule = Schedule::new(seed);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut corrections: Vec<(String, String)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut index = 0u64;
    while std::time::Instant::now() < deadline {
        let operation = schedule.next_operation();
        writeln!(log, "{index} {operation}")?;
        index += 1;
        let outcome = execute(net, &keys, grant_id, &operation, &mut corrections);
        *counts.entry(outcome.unwrap_or("operation failed under a fault")).or_default() += 1;
    }
    log.flush()?;
    println!("    {index} operations, as run: {}", schedule_path.display());
    settle(net, &corrections, &mut counts)?;
    for (what, count) in &counts {
        println!("    {count:>6}  {what}");
    }
    audit_after_soak(net, root)?;
    ok("every node up, every correction decided and applied at most once, replicas identical, the bundle verified");
    Ok(())
}

/// The keys the soak signs policy changes with.
struct Keys {
    market: NodeKey,
    street: NodeKey,
}

/// Runs one operation; what it came to, for the counts.
fn execute(
    net: &mut Testnet,
    keys: &Keys,
    grant_id: u64,
    operation: &Operation,
    corrections: &mut Vec<(String, String)>,
) -> anyhow::Result<&'static str> {
    match operation {
        Operation::Query { key } => {
            let answer = street_query(net, grant_id, key, &["name", "operating_address"])?;
            Ok(if answer.get("Released").is_some() { "query released" } else { "query denied" })
        }
        Operation::Correction { key, street_number } => {
            let id = correct(net, grant_id, key, *street_number)?;
            corrections.push((id, key.clone()));
            Ok("correction submitted")
        }
        Operation::Demand { purpose } => {
            let demand = Command::FileDemand {
                dataset: ENTERPRISES.into(),
                fields: BTreeSet::from(["name".to_string()]),
                purpose: purpose.clone(),
                legal_basis: LegalBasis::StatutoryDuty,
            };
            policy_change(net, 3, &keys.street, demand)
        }
        Operation::Grant => {
            let grant = civmesh_testnet::city::street_inspection_grant("street/nanjingxilu", &["name"], &[])?;
            policy_change(net, 1, &keys.market, Command::IssueGrant(grant))
        }
        Operation::KillStreet { node } => {
            net.kill9(*node)?;
            net.start(*node)?;
            Ok("fault: street killed (-9) and restarted")
        }
        Operation::KillVoter { node, down_ms } => {
            net.kill9(*node)?;
            std::thread::sleep(Duration::from_millis(*down_ms));
            net.start(*node)?;
            Ok("fault: voter killed (-9) and restarted")
        }
        Operation::FreezeVoter { node, frozen_ms } => {
            net.freeze(*node)?;
            std::thread::sleep(Duration::from_millis(*frozen_ms));
            net.thaw(*node)?;
            Ok("fault: voter frozen and thawed")
        }
    }
}

/// Signs `command` and submits it through node `via`: committed, or
/// rejected by the log (both are entries; only the first changes policy).
fn policy_change(net: &Testnet, via: usize, key: &NodeKey, command: Command) -> anyhow::Result<&'static str> {
    let envelope = SignedEnvelope::sign(key, &command, now_unix_millis())?;
    let response = net.api(via)?.submit(&[envelope])?;
    Ok(match response.outcomes.first() {
        Some(Ok(_)) => "policy change committed",
        Some(Err(_)) => "policy change rejected by the log",
        None => "policy change answered with no outcome",
    })
}

fn street_query(
    net: &Testnet,
    grant_id: u64,
    key: &str,
    fields: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let query = serde_json::json!({ "dataset": ENTERPRISES, "keys": [key], "fields": fields, "purpose": PURPOSE, "grant": grant_id });
    net.api(3)?.send("POST", "/v1/query", &query)
}

/// A street correction on the version the street sees now.
fn correct(net: &Testnet, grant_id: u64, key: &str, street_number: u64) -> anyhow::Result<String> {
    let answer = street_query(net, grant_id, key, &["operating_address"])?;
    let version = answer["Released"]["records"][0]["version"].as_u64().context("no version released")?;
    let correction = serde_json::json!({
        "dataset": ENTERPRISES, "record_key": key, "base_version": version,
        "changes": {"operating_address": format!("{street_number} Soak Road")},
        "reason": "soak", "operator": "soak",
    });
    let submitted: serde_json::Value = net.api(3)?.send("POST", "/v1/corrections", &correction)?;
    Ok(submitted["correction"].as_str().context("no id")?.to_string())
}

/// After the soak: every node running, every correction decided, applied at
/// most once, and every replica identical at the same index.
fn settle(
    net: &mut Testnet,
    corrections: &[(String, String)],
    counts: &mut BTreeMap<&str, u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !corrections.is_empty(),
        "the soak submitted no correction: the at-most-once check would examine nothing"
    );
    for index in 0..net.nodes.len() {
        if !net.is_running(index) {
            net.start(index)?;
        }
    }
    let settle = Duration::from_secs(SOAK_SETTLE_SECONDS_MAX);
    for (id, key) in corrections {
        let status = wait_until("every correction decided", settle, || {
            let view: serde_json::Value = net.api(3).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
            (view["status"] == "closed").then(|| view["outcome"]["status"].clone())
        })?;
        let decided = if status.get("applied").is_some() {
            "correction applied"
        } else {
            "correction in conflict (resubmittable)"
        };
        *counts.entry(decided).or_default() += 1;
        let versions = net
            .record_history(1, ENTERPRISES, key)?
            .iter()
            .filter(|version| version["provenance"]["correction"]["id"] == id.as_str())
            .count();
        let expected = usize::from(status.get("applied").is_some());
        anyhow::ensure!(versions == expected, "correction {id} was applied {versions} times");
    }
    wait_until("every replica identical at the same index", settle, || {
        let all: Vec<_> =
            (0..net.nodes.len()).map(|i| net.api(i).ok()?.status().ok()).collect::<Option<_>>()?;
        all.iter()
            .all(|s| {
                s.raft.applied_index == all[0].raft.applied_index
                    && s.raft.state_digest == all[0].raft.state_digest
            })
            .then_some(())
    })?;
    Ok(())
}

fn audit_after_soak(net: &Testnet, root: &std::path::Path) -> anyhow::Result<()> {
    let hub: serde_json::Value = net.api(0)?.get("/v1/audit/checkpoints")?;
    let entries = hub["leaves"].clone();
    wait_until("a checkpoint over every entry", Duration::from_secs(SOAK_SETTLE_SECONDS_MAX), || {
        let checkpoints: serde_json::Value = net.api(0).ok()?.get("/v1/audit/checkpoints").ok()?;
        (checkpoints["latest"]["tree_size"] == entries).then_some(())
    })?;
    let bundle = root.join("soak.bundle");
    net.audit_export(0, &bundle)?;
    let seen = root.join("auditor-seen-checkpoints.json");
    let ca = net.ca_dir.join("ca.pem");
    let printed = net.audit_verify(&bundle, &ca, &seen)?;
    for line in printed
        .lines()
        .filter(|line| line.starts_with("access entries") || line.starts_with("checked against"))
    {
        println!("    {line}");
    }
    Ok(())
}
