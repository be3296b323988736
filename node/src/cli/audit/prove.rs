//! `civmesh audit prove`: ask a node for proofs from its stored audit tree
//! and check them here, against the latest final checkpoint it reports:
//! that every checkpoint the auditor saw before is a prefix of it
//! (consistency), and that given leaves are in it (inclusion), without
//! exporting the whole history.

use std::path::PathBuf;

use anyhow::Context;
use civmesh_policy::audit::{verify_consistency, verify_inclusion, SeenCheckpoint};
use clap::Args;
use serde::Deserialize;

use crate::api::{ConsistencyAnswer, InclusionAnswer};
use crate::cli::args::{CaCert, NodeDir};
use crate::client::NodeApi;

/// The most leaves one run proves.
pub const PROVE_LEAVES_MAX: usize = 1_000;

/// Arguments of `civmesh audit prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The node asked for the proofs.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The federation CA the auditor trusts.
    #[command(flatten)]
    pub ca_cert: CaCert,
    /// Where checkpoints seen in earlier runs are kept (read only here).
    #[arg(long, value_name = "SEEN_FILE", default_value = "civmesh-seen-checkpoints.json")]
    pub seen: PathBuf,
    /// A leaf of the audit tree (a subject report's `leaf`) to prove is in
    /// the latest final checkpoint (repeatable).
    #[arg(long = "leaf", value_name = "LEAF")]
    pub leaves: Vec<u64>,
}

/// What `GET /v1/audit/checkpoints` says of the latest final checkpoint.
#[derive(Deserialize)]
struct Checkpoints {
    latest: Option<SeenCheckpoint>,
}

pub(super) fn prove(args: &ProveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.leaves.len() <= PROVE_LEAVES_MAX,
        "at most {PROVE_LEAVES_MAX} leaves a run, not {}",
        args.leaves.len()
    );
    let seen = super::read_seen(&args.seen)?.checkpoints(&super::read_ca(&args.ca_cert.path)?);
    let api = NodeApi::open(&args.node_dir.path)?;
    let checkpoints: Checkpoints = api.get("/v1/audit/checkpoints?limit=1")?;
    let latest = checkpoints.latest.context("the node knows no final checkpoint yet")?;
    let root = hash(&latest.root)?;
    println!("latest final checkpoint: {} leaves, root {}", latest.tree_size, latest.root);
    let mut failures = Vec::new();
    for earlier in &seen {
        match check_seen(&api, earlier, &latest, &root) {
            Ok(()) => {
                println!("consistent:  the checkpoint seen at {} leaves is a prefix", earlier.tree_size)
            }
            Err(error) => {
                failures.push(format!("the checkpoint seen at {} leaves: {error:#}", earlier.tree_size))
            }
        }
    }
    for leaf in &args.leaves {
        match check_leaf(&api, *leaf, &latest, &root) {
            Ok(value) => println!("included:    leaf {leaf} ({value})"),
            Err(error) => failures.push(format!("leaf {leaf}: {error:#}")),
        }
    }
    anyhow::ensure!(failures.is_empty(), "{} proof(s) failed:\n{}", failures.len(), failures.join("\n"));
    println!("proved: {} seen checkpoint(s), {} leaf(s)", seen.len(), args.leaves.len());
    Ok(())
}

/// Checks that `earlier` is a prefix of `latest`.
fn check_seen(
    api: &NodeApi,
    earlier: &SeenCheckpoint,
    latest: &SeenCheckpoint,
    root: &[u8; 32],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        earlier.tree_size <= latest.tree_size,
        "the node's latest final checkpoint ({} leaves) is older than this one: ask a node that caught up",
        latest.tree_size
    );
    let path =
        format!("/v1/audit/proofs/consistency?from={}&tree_size={}", earlier.tree_size, latest.tree_size);
    let answer: ConsistencyAnswer = api.get(&path)?;
    let proof = hashes(&answer.proof)?;
    verify_consistency(&hash(&earlier.root)?, earlier.tree_size, root, latest.tree_size, &proof)
        .context("the history was rewritten since, or the node answers falsely")?;
    Ok(())
}

/// Checks that `leaf` is in `latest`; returns the leaf's value.
fn check_leaf(api: &NodeApi, leaf: u64, latest: &SeenCheckpoint, root: &[u8; 32]) -> anyhow::Result<String> {
    let answer: InclusionAnswer =
        api.get(&format!("/v1/audit/proofs/inclusion?leaf={leaf}&tree_size={}", latest.tree_size))?;
    let proof = hashes(&answer.proof)?;
    verify_inclusion(root, latest.tree_size, leaf, &hash(&answer.leaf_value)?, &proof)
        .context("the node's proof does not lead to the checkpoint's root")?;
    Ok(answer.leaf_value)
}

fn hash(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text).with_context(|| format!("{text:?} is not hex"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{text:?} is not a 32-byte hash"))
}

fn hashes(texts: &[String]) -> anyhow::Result<Vec<[u8; 32]>> {
    texts.iter().map(|text| hash(text)).collect()
}
