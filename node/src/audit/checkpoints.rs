//! The checkpoint task: hub and department nodes follow the access log's
//! Merkle tree from their own replica and cosign checkpoints of it.
//!
//! The task holds only the tree's compact range (at most 64 hashes), seeded
//! from the applied state's and advanced leaf by leaf from the stored audit
//! leaves, at most `CHECKPOINT_LEAVES_PER_TICK_MAX` every
//! `CHECKPOINT_TICK_MS`. It stops at the size of an open candidate it has
//! not reached, so it can check that candidate's root. Several candidates
//! may be open at once, and a signer's cosignature counts for one of them
//! only. If this node has cosigned none, it cosigns the candidate at its
//! range's size whose signed root is its own. If none matches (none is open,
//! or only bogus ones a single signer opened, or ones it has passed) and
//! `CHECKPOINT_INTERVAL_ENTRIES` entries or `CHECKPOINT_INTERVAL_MS` have
//! passed since the last final checkpoint, it opens one at its range's size
//! (signers take turns by a stagger, so they rarely open two at once).

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, NodeKey, SignedEnvelope};
use civmesh_consensus::PolicyLog;
use civmesh_policy::audit::{signs_checkpoints, CheckpointBody, CompactRange, CHECKPOINT_PENDING_MS_MAX};
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
    /// The applied state's audit tree.
    frontier: CompactRange,
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
    let mut range: Option<CompactRange> = None;
    let mut interval = tokio::time::interval(Duration::from_millis(CHECKPOINT_TICK_MS));
    let started_at_ms = now_unix_millis();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let view = look(&log, &key.node_id());
        let Some(rank) = view.signer_rank else { continue };
        // A candidate that never reached a majority expires.
        let now_ms = now_unix_millis();
        let open: Vec<(CheckpointBody, bool)> = view
            .pending
            .into_iter()
            .filter(|(_, _, opened_at_ms)| now_ms < opened_at_ms.saturating_add(CHECKPOINT_PENDING_MS_MAX))
            .map(|(body, mine, _)| (body, mine))
            .collect();
        let range = range.get_or_insert_with(|| view.frontier.clone());
        let stop_at = open.iter().map(|(body, _)| body.tree_size).filter(|size| *size > range.size()).min();
        advance(&log, range, &view.frontier, stop_at);
        if open.iter().any(|(_, mine)| *mine) {
            continue;
        }
        let body = match matching_candidate(open.into_iter().map(|(body, _)| body), range) {
            Some(body) => body,
            None => {
                let new_entries = range.size().saturating_sub(view.last_final_size);
                let since_ms = now_ms.saturating_sub(view.last_final_at_ms.max(started_at_ms));
                let due = new_entries >= CHECKPOINT_INTERVAL_ENTRIES
                    || (new_entries > 0
                        && since_ms >= CHECKPOINT_INTERVAL_MS + rank * CHECKPOINT_OPEN_STAGGER_MS);
                if !due {
                    continue;
                }
                CheckpointBody { tree_size: range.size(), root: range.root(), log_index: view.applied_index }
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

/// Moves `range` towards the applied state's tree, reading stored leaves,
/// and stops at `stop_at` if it lies on the way. A range the stored leaves
/// cannot advance (this node installed a snapshot beyond it) jumps to the
/// state's.
fn advance(
    log: &PolicyLog<SwarmClient>,
    range: &mut CompactRange,
    frontier: &CompactRange,
    stop_at: Option<u64>,
) {
    let target = stop_at.unwrap_or(u64::MAX).min(frontier.size());
    let wanted = usize::try_from(target.saturating_sub(range.size()))
        .unwrap_or(usize::MAX)
        .min(CHECKPOINT_LEAVES_PER_TICK_MAX);
    if wanted == 0 {
        return;
    }
    match log.history().audit_leaves(range.size(), wanted) {
        Ok(leaves) if leaves.is_empty() => *range = frontier.clone(),
        Ok(leaves) => leaves.iter().for_each(|leaf| range.push(leaf)),
        Err(error) => tracing::warn!(%error, "cannot read the audit leaves"),
    }
}

/// The open candidate at the range's size whose signed root is this
/// replica's own: the only kind this node cosigns.
fn matching_candidate(
    open: impl IntoIterator<Item = CheckpointBody>,
    range: &CompactRange,
) -> Option<CheckpointBody> {
    open.into_iter().find(|body| {
        let at_our_size = body.tree_size == range.size();
        let ours = at_our_size && body.root == range.root();
        if at_our_size && !ours {
            tracing::warn!(
                size = body.tree_size,
                "an open checkpoint's root is not this replica's: not cosigning"
            );
        }
        ours
    })
}

fn look(log: &PolicyLog<SwarmClient>, me: &NodeId) -> View {
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
        let last = policy.last_checkpoint.as_ref();
        View {
            signer_rank,
            frontier: policy.audit_frontier.clone(),
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
    fn a_node_cosigns_only_a_candidate_at_its_size_over_its_own_root() {
        let mut range = CompactRange::default();
        let mut roots = Vec::new();
        for leaf in [[1u8; 32], [2; 32], [3; 32]] {
            range.push(&leaf);
            roots.push(range.root());
        }
        let ours = body(3, range.root());
        let bogus = body(3, [9; 32]);
        let passed = body(2, roots[1]);
        let beyond = body(4, [9; 32]);
        assert_eq!(matching_candidate([bogus.clone(), ours.clone()], &range), Some(ours));
        assert_eq!(matching_candidate([passed, bogus, beyond], &range), None);
        assert_eq!(matching_candidate([], &range), None);
    }
}
