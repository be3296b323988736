//! The checkpoint task: hub and department nodes keep the access log's
//! Merkle tree from their own replica and cosign checkpoints of it.
//!
//! Every `CHECKPOINT_TICK_MS` the task adds the new audit leaves (access
//! entries and correction outcomes) to its tree. Several candidate
//! checkpoints may be open at once, and a signer's cosignature counts for
//! one of them only. If this node has cosigned none, it cosigns the first
//! candidate whose signed root matches its own tree at that size. If none
//! matches (none is open, or only bogus ones a single signer opened) and
//! `CHECKPOINT_INTERVAL_ENTRIES` entries or `CHECKPOINT_INTERVAL_MS` have
//! passed since the last final checkpoint, it opens one at its current size
//! (signers take turns by a stagger, so they rarely open two at once).

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, NodeKey, SignedEnvelope};
use civmesh_consensus::PolicyLog;
use civmesh_policy::audit::{signs_checkpoints, AccessTree, CheckpointBody, CHECKPOINT_PENDING_MS_MAX};
use civmesh_policy::Command;
use tokio::sync::watch;

use crate::swarm::SwarmClient;

/// How often the task looks at the log.
pub const CHECKPOINT_TICK_MS: u64 = 500;
/// A checkpoint is due after this many new access entries.
pub const CHECKPOINT_INTERVAL_ENTRIES: u64 = 1_000;
/// A checkpoint is due this long after the last one, if there are new entries.
pub const CHECKPOINT_INTERVAL_MS: u64 = 5_000;
/// Each signer waits this much longer than the one before it to open one.
pub const CHECKPOINT_OPEN_STAGGER_MS: u64 = 1_000;
/// Leaves hashed per tick at most (bounds the time the state is read-locked).
pub const CHECKPOINT_LEAVES_PER_TICK_MAX: usize = 50_000;

/// What the task needs from the state in one look.
struct View {
    /// This node's place among the signers, if it is one.
    signer_rank: Option<u64>,
    new_leaves: Vec<[u8; 32]>,
    last_final_size: u64,
    last_final_at_ms: u64,
    /// The open candidates, each with whether this node cosigned it and
    /// when it opened.
    pending: Vec<(CheckpointBody, bool, u64)>,
    applied_index: u64,
}

/// Runs until `stop`.
pub async fn run_checkpoints(
    log: PolicyLog<SwarmClient>,
    key: std::sync::Arc<NodeKey>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tree = AccessTree::new();
    let mut interval = tokio::time::interval(Duration::from_millis(CHECKPOINT_TICK_MS));
    let started_at_ms = now_unix_millis();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let view = look(&log, &key.node_id(), tree.len());
        for leaf in view.new_leaves {
            tree.push(leaf);
        }
        let Some(rank) = view.signer_rank else { continue };
        // A candidate that never reached a majority expires.
        let now_ms = now_unix_millis();
        let open: Vec<(CheckpointBody, bool)> = view
            .pending
            .into_iter()
            .filter(|(_, _, opened_at_ms)| now_ms < opened_at_ms.saturating_add(CHECKPOINT_PENDING_MS_MAX))
            .map(|(body, mine, _)| (body, mine))
            .collect();
        if open.iter().any(|(_, mine)| *mine) {
            continue;
        }
        let body = match matching_candidate(open.into_iter().map(|(body, _)| body), &tree) {
            Some(body) => body,
            None => {
                let new_entries = tree.len().saturating_sub(view.last_final_size);
                let since_ms = now_ms.saturating_sub(view.last_final_at_ms.max(started_at_ms));
                let due = new_entries >= CHECKPOINT_INTERVAL_ENTRIES
                    || (new_entries > 0
                        && since_ms >= CHECKPOINT_INTERVAL_MS + rank * CHECKPOINT_OPEN_STAGGER_MS);
                let Some(root) = tree.root_at(tree.len()).filter(|_| due) else { continue };
                CheckpointBody { tree_size: tree.len(), root, log_index: view.applied_index }
            }
        };
        let Ok(envelope) =
            SignedEnvelope::sign(&key, &Command::CosignCheckpoint(body.clone()), now_unix_millis())
        else {
            continue;
        };
        match log.submit(vec![envelope]).await {
            Ok(result) => {
                if let Some(Err(rejection)) = result.outcomes.first() {
                    tracing::debug!(%rejection, size = body.tree_size, "cosignature not taken");
                }
            }
            Err(error) => tracing::debug!(%error, "cannot cosign now"),
        }
    }
}

/// The first open candidate whose signed root is this replica's own root
/// at that size: the only kind this node cosigns.
fn matching_candidate(
    open: impl IntoIterator<Item = CheckpointBody>,
    tree: &AccessTree,
) -> Option<CheckpointBody> {
    open.into_iter().find(|body| {
        let ours = body.tree_size <= tree.len() && tree.root_at(body.tree_size) == Some(body.root);
        if !ours && body.tree_size <= tree.len() {
            tracing::warn!(
                size = body.tree_size,
                "an open checkpoint's root is not this replica's: not cosigning"
            );
        }
        ours
    })
}

fn look(log: &PolicyLog<SwarmClient>, me: &NodeId, hashed: u64) -> View {
    log.state().read(|applied| {
        let policy = &applied.policy;
        let mut signers: Vec<NodeId> = policy
            .members
            .values()
            .filter(|member| member.revoked.is_none() && signs_checkpoints(member))
            .map(|member| member.node_id)
            .collect();
        signers.sort();
        let signer_rank = signers.iter().position(|signer| signer == me).map(|rank| rank as u64);
        let new_leaves = policy
            .audit_leaves
            .iter()
            .skip(hashed as usize)
            .take(CHECKPOINT_LEAVES_PER_TICK_MAX)
            .copied()
            .collect();
        let last = policy.checkpoints.last();
        View {
            signer_rank,
            new_leaves,
            last_final_size: last.map_or(0, |last| last.body.tree_size),
            last_final_at_ms: last.map_or(0, |last| last.final_at_ms),
            pending: policy
                .pending_checkpoints
                .iter()
                .map(|pending| (pending.body.clone(), pending.cosigners.contains(me), pending.opened_at_ms))
                .collect(),
            applied_index: applied.applied_index,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(tree_size: u64, root: [u8; 32]) -> CheckpointBody {
        CheckpointBody { tree_size, root, log_index: tree_size }
    }

    #[test]
    fn a_node_cosigns_only_a_candidate_over_its_own_root() {
        let mut tree = AccessTree::new();
        for leaf in [[1u8; 32], [2; 32], [3; 32]] {
            tree.push(leaf);
        }
        let ours = |size: u64| body(size, tree.root_at(size).unwrap());
        let bogus = body(2, [9; 32]);
        let beyond = body(4, [9; 32]);
        assert_eq!(matching_candidate([bogus.clone(), ours(3)], &tree), Some(ours(3)));
        assert_eq!(matching_candidate([ours(2), ours(3)], &tree), Some(ours(2)));
        assert_eq!(matching_candidate([bogus, beyond], &tree), None);
        assert_eq!(matching_candidate([], &tree), None);
    }
}
