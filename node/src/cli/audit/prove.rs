//! `civmesh audit prove`: without a bundle, checks that nodes serve one
//! history, and the history the auditor verified before, from RFC 6962
//! proofs their stored trees give, checked here.
//!
//! What a node reports of its own latest final checkpoint is its word, not
//! a proof (the cosignatures are verified by `audit verify`, from a
//! bundle). So the trusted roots are the checkpoints seen in earlier
//! verified runs. The checks:
//! - each node's latest final checkpoint extends every checkpoint seen
//!   before (a consistency proof from each);
//! - the nodes' latest final checkpoints extend one another (the smaller a
//!   prefix of the larger): nodes showing auditors different histories are
//!   caught, whichever organisations run them;
//! - each leaf asked for is in the smallest seen checkpoint that covers it
//!   (an inclusion proof against a root the auditor verified).

use std::path::PathBuf;

use anyhow::Context;
use civmesh_policy::audit::{verify_consistency, verify_inclusion, SeenCheckpoint, PROOF_TREE_SIZE_MAX};
use civmesh_policy::hex_digest::{from_hex, to_hex};
use clap::Args;
use serde::Deserialize;

use crate::api::{ConsistencyAnswer, InclusionAnswer};
use crate::cli::args::{CaCert, NodeDirs};
use crate::client::NodeApi;

/// The most leaves one run proves.
pub const PROVE_LEAVES_MAX: usize = 1_000;
/// The most nodes one run asks.
pub const PROVE_NODES_MAX: usize = 64;

/// Arguments of `civmesh audit prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The nodes asked for proofs (best run by different organisations).
    #[command(flatten)]
    pub node_dirs: NodeDirs,
    /// The federation CA the auditor trusts.
    #[command(flatten)]
    pub ca_cert: CaCert,
    /// Where checkpoints seen in earlier runs are kept (read only here).
    #[arg(long, value_name = "SEEN_FILE", default_value = "civmesh-seen-checkpoints.json")]
    pub seen: PathBuf,
    /// A leaf of the audit tree (a subject report's `leaf`) to prove is in
    /// a checkpoint seen before (repeatable).
    #[arg(long = "leaf", value_name = "LEAF")]
    pub leaves: Vec<u64>,
}

/// What `GET /v1/audit/checkpoints` says of the latest final checkpoint.
#[derive(Deserialize)]
struct Checkpoints {
    latest: Option<SeenCheckpoint>,
}

/// One node asked, and the latest final checkpoint it reports.
struct Asked {
    name: String,
    api: NodeApi,
    latest: SeenCheckpoint,
}

pub(super) fn prove(args: &ProveArgs) -> anyhow::Result<()> {
    let dirs = &args.node_dirs.paths;
    anyhow::ensure!(
        dirs.len() <= PROVE_NODES_MAX,
        "at most {PROVE_NODES_MAX} nodes a run, not {}",
        dirs.len()
    );
    anyhow::ensure!(
        args.leaves.len() <= PROVE_LEAVES_MAX,
        "at most {PROVE_LEAVES_MAX} leaves a run, not {}",
        args.leaves.len()
    );
    let mut seen = super::read_seen(&args.seen)?.checkpoints(&super::read_ca(&args.ca_cert.path)?);
    seen.sort_by_key(|earlier| earlier.tree_size);
    let mut asked = Vec::new();
    for dir in dirs {
        let api = NodeApi::open(dir)?;
        let checkpoints: Checkpoints = api.get("/v1/audit/checkpoints?limit=1")?;
        // People read organisations; two nodes of one are told apart by directory.
        let name = format!("{} ({})", api.status()?.org, dir.display());
        let latest = checkpoints.latest.with_context(|| format!("{name} knows no final checkpoint yet"))?;
        println!(
            "{name}: latest final checkpoint {} leaves, root {} (as it reports)",
            latest.tree_size, latest.root
        );
        asked.push(Asked { name, api, latest });
    }
    let mut failures = Vec::new();
    for node in &asked {
        for earlier in &seen {
            match extends(&node.api, earlier, &node.latest) {
                Ok(()) => println!(
                    "consistent:  {} extends the checkpoint seen at {} leaves",
                    node.name, earlier.tree_size
                ),
                Err(error) => failures.push(format!(
                    "{} against the checkpoint seen at {} leaves: {error:#}",
                    node.name, earlier.tree_size
                )),
            }
        }
    }
    asked.sort_by_key(|node| node.latest.tree_size);
    if let Some(largest) = asked.last() {
        for node in &asked[..asked.len() - 1] {
            match extends(&largest.api, &node.latest, &largest.latest) {
                Ok(()) => println!("consistent:  {} extends {}", largest.name, node.name),
                Err(error) => failures.push(format!("{} against {}: {error:#}", largest.name, node.name)),
            }
        }
    }
    if let Some(first) = asked.first() {
        for leaf in &args.leaves {
            match included(&first.api, *leaf, &seen) {
                Ok((value, size)) => {
                    println!("included:    leaf {leaf} ({value}) in the checkpoint seen at {size} leaves")
                }
                Err(error) => failures.push(format!("leaf {leaf}: {error:#}")),
            }
        }
    }
    anyhow::ensure!(failures.is_empty(), "{} proof(s) failed:\n{}", failures.len(), failures.join("\n"));
    println!(
        "proved: {} node(s), {} seen checkpoint(s), {} leaf(s)",
        asked.len(),
        seen.len(),
        args.leaves.len()
    );
    Ok(())
}

/// Checks, with a proof `api` gives, that `earlier` is a prefix of `later`.
fn extends(api: &NodeApi, earlier: &SeenCheckpoint, later: &SeenCheckpoint) -> anyhow::Result<()> {
    anyhow::ensure!(
        earlier.tree_size <= later.tree_size,
        "the later checkpoint ({} leaves) is older: ask a node that caught up",
        later.tree_size
    );
    anyhow::ensure!(
        later.tree_size <= PROOF_TREE_SIZE_MAX,
        "a tree of {} leaves is not plausible",
        later.tree_size
    );
    let path =
        format!("/v1/audit/proofs/consistency?from={}&tree_size={}", earlier.tree_size, later.tree_size);
    let answer: ConsistencyAnswer = api.get(&path)?;
    verify_consistency(&root(earlier)?, earlier.tree_size, &root(later)?, later.tree_size, &answer.proof)
        .context("not a prefix: the history was rewritten, or nodes show different histories")?;
    Ok(())
}

/// Checks, with a proof `api` gives, that `leaf` is in the smallest of the
/// `seen` checkpoints (sorted by size) that covers it; its value and that
/// checkpoint's size.
fn included(api: &NodeApi, leaf: u64, seen: &[SeenCheckpoint]) -> anyhow::Result<(String, u64)> {
    let anchor = seen
        .iter()
        .find(|earlier| earlier.tree_size > leaf)
        .context("no checkpoint seen before covers it: verify a newer bundle first")?;
    let path = format!("/v1/audit/proofs/inclusion?leaf={leaf}&tree_size={}", anchor.tree_size);
    let answer: InclusionAnswer = api.get(&path)?;
    verify_inclusion(&root(anchor)?, anchor.tree_size, leaf, &answer.leaf_value, &answer.proof)
        .context("the node's proof does not lead to the root seen before")?;
    Ok((to_hex(&answer.leaf_value), anchor.tree_size))
}

/// A checkpoint's root, from its hex.
fn root(checkpoint: &SeenCheckpoint) -> anyhow::Result<[u8; 32]> {
    from_hex(&checkpoint.root).with_context(|| format!("{:?} is not a 32-byte hex hash", checkpoint.root))
}
