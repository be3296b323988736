//! The checkpoint task: hub and department nodes keep the access log's
//! Merkle tree from their own replica and cosign checkpoints of it.
//!
//! Every `CHECKPOINT_TICK_MS` the task adds the new audit leaves (access
//! entries and correction outcomes) to its tree. If a checkpoint is open that it has not cosigned, it checks the
//! signed root against its own tree at that size and cosigns only if they
//! match. If none is open and `CHECKPOINT_INTERVAL_ENTRIES` entries or
//! `CHECKPOINT_INTERVAL_MS` have passed since the last final checkpoint, it
//! opens one at its current size (signers take turns by a stagger, so they
//! rarely open two at once; the state refuses the second anyway).

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
    /// The open checkpoint, whether this node cosigned it, and when it opened.
    pending: Option<(CheckpointBody, bool, u64)>,
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
        // An open checkpoint that never reached a majority is replaced.
        let pending = view.pending.filter(|(_, _, opened_at_ms)| {
            now_unix_millis() < opened_at_ms.saturating_add(CHECKPOINT_PENDING_MS_MAX)
        });
        let body = match &pending {
            Some((pending, false, _)) if pending.tree_size <= tree.len() => {
                if tree.root_at(pending.tree_size) != Some(pending.root) {
                    tracing::error!(
                        size = pending.tree_size,
                        "an open checkpoint's root is not this replica's: not cosigning"
                    );
                    continue;
                }
                pending.clone()
            }
            Some(_) => continue,
            None => {
                let new_entries = tree.len().saturating_sub(view.last_final_size);
                let since_ms = now_unix_millis().saturating_sub(view.last_final_at_ms.max(started_at_ms));
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
                .pending_checkpoint()
                .map(|pending| (pending.body.clone(), pending.cosigners.contains(me), pending.opened_at_ms)),
            applied_index: applied.applied_index,
        }
    })
}
