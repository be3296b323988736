//! The checkpoint task: hub and department nodes cosign checkpoints of the
//! access log's Merkle tree, each from its own replica.
//!
//! Every `CHECKPOINT_TICK_MS` the task looks at the applied state. Several
//! candidates may be open at once, and a signer's cosignature counts for
//! one of them only. It cosigns the largest acceptable candidate, moving
//! its cosignature there if it is on another: one whose signed root is
//! the root its own stored tree has at that size (read in O(log n),
//! [`civmesh_consensus::History::tree_root`]), at a size it applied, that
//! covers at least half of the leaves it applied since the last final
//! checkpoint (so one signer opening tiny candidates cannot hold finality
//! back to a leaf a round). A candidate beyond what it applied waits. If
//! none is acceptable and `CHECKPOINT_INTERVAL_ENTRIES` entries or
//! `CHECKPOINT_INTERVAL_MS` have passed since the last final checkpoint, it
//! opens one at the size it applied, with the root its state holds
//! (signers take turns by a stagger, so they rarely open two at once). Any
//! signer can check any size it applied, so nobody keeps roots in memory.

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, NodeKey, SignedEnvelope};
use civmesh_consensus::PolicyLog;
use civmesh_policy::audit::{signs_checkpoints, CheckpointBody, CompactRange, CHECKPOINT_PENDING_MS_MAX};
use civmesh_policy::audit::{TreeNodes, TreeReadError};
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
        let applied_size = view.frontier.size();
        let sizes = Sizes { last_final: view.last_final_size, applied: applied_size };
        let history = log.history();
        let body = match best_candidate(open.iter().map(|(body, _)| body), sizes, history) {
            Some(best) if open.iter().any(|(body, mine)| *mine && body == best) => continue,
            Some(best) => best.clone(),
            None => {
                let new_entries = applied_size.saturating_sub(view.last_final_size);
                let since_ms = now_ms.saturating_sub(view.last_final_at_ms.max(started_at_ms));
                let due = new_entries >= CHECKPOINT_INTERVAL_ENTRIES
                    || (new_entries > 0
                        && since_ms >= CHECKPOINT_INTERVAL_MS + rank * CHECKPOINT_OPEN_STAGGER_MS);
                if !due {
                    continue;
                }
                CheckpointBody {
                    tree_size: applied_size,
                    root: view.frontier.root(),
                    log_index: view.applied_index,
                }
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

/// Where this node is: the last final checkpoint's size and the size it
/// applied.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    last_final: u64,
    applied: u64,
}

/// The largest open candidate this node cosigns: its signed root is the
/// root this replica's stored tree has at that size, a size it applied,
/// and it covers at least half of the leaves applied after the last final
/// checkpoint.
fn best_candidate<'a, N: TreeNodes>(
    open: impl IntoIterator<Item = &'a CheckpointBody>,
    sizes: Sizes,
    tree: &N,
) -> Option<&'a CheckpointBody> {
    let unanchored = sizes.applied.saturating_sub(sizes.last_final);
    open.into_iter()
        .filter(|body| body.tree_size <= sizes.applied)
        .filter(|body| 2 * body.tree_size.saturating_sub(sizes.last_final) >= unanchored)
        .filter(|body| matches_stored_root(body, tree))
        .max_by_key(|body| body.tree_size)
}

/// Whether `body` signs the root this replica's stored tree has at its size.
fn matches_stored_root<N: TreeNodes>(body: &CheckpointBody, tree: &N) -> bool {
    match civmesh_policy::audit::root_at(tree, body.tree_size) {
        Ok(root) if root == body.root => true,
        Ok(_) => {
            tracing::warn!(
                size = body.tree_size,
                "an open checkpoint's root is not this replica's: not cosigning"
            );
            false
        }
        // Joined by snapshot after that size: someone else can check it.
        Err(TreeReadError::NotHeld(_)) => false,
        Err(error) => {
            tracing::warn!(%error, size = body.tree_size, "cannot read the audit tree");
            false
        }
    }
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
    use std::collections::BTreeMap;

    use civmesh_policy::audit::TreeNode;

    use super::*;

    /// The nodes a replica stores, from `from_size` on (all when 0).
    struct Stored(BTreeMap<TreeNode, [u8; 32]>);

    impl TreeNodes for Stored {
        type Error = std::convert::Infallible;

        fn node_hash(&self, node: TreeNode) -> Result<Option<[u8; 32]>, Self::Error> {
            Ok(self.0.get(&node).copied())
        }
    }

    fn leaf(number: u64) -> [u8; 32] {
        civmesh_certs::codec::sha256(&number.to_be_bytes())
    }

    /// A replica that applied `size` leaves, storing nodes from `from_size`
    /// on (a snapshot there), and the root at every size.
    fn replica(from_size: u64, size: u64) -> (Stored, Vec<[u8; 32]>) {
        let mut range = CompactRange::default();
        let mut stored = BTreeMap::new();
        let mut roots = vec![range.root()];
        for number in 0..size {
            if number == from_size {
                stored.extend(range.nodes());
            }
            let completed = range.push(&leaf(number));
            if number >= from_size {
                stored.extend(completed);
            }
            roots.push(range.root());
        }
        (Stored(stored), roots)
    }

    fn body(tree_size: u64, root: [u8; 32]) -> CheckpointBody {
        CheckpointBody { tree_size, root, log_index: tree_size }
    }

    #[test]
    fn a_node_cosigns_the_largest_candidate_over_its_own_root_that_covers_enough() {
        let (stored, roots) = replica(0, 2_007);
        let at = |size: u64| body(size, roots[size as usize]);
        let bogus = body(1_900, [9; 32]);
        let ahead = body(2_010, [9; 32]);
        let everywhere = Sizes { last_final: 0, applied: 2_007 };
        let cases = [
            (vec![at(1_004), bogus.clone()], everywhere, Some(at(1_004))),
            (vec![at(1_003), at(2_007), ahead.clone()], everywhere, Some(at(2_007))),
            (vec![at(1_500), at(1_200)], everywhere, Some(at(1_500))),
            (vec![bogus.clone(), ahead.clone()], everywhere, None),
            (vec![], everywhere, None),
            // Less than half of the unanchored leaves: one signer's tiny
            // candidates do not hold finality back.
            (vec![at(1_001)], Sizes { last_final: 1_000, applied: 2_007 }, None),
            (vec![at(1_504)], Sizes { last_final: 1_000, applied: 2_007 }, Some(at(1_504))),
            // Not applied that far yet.
            (vec![at(1_003)], Sizes { last_final: 0, applied: 1_002 }, None),
        ];
        for (open, sizes, expected) in cases {
            assert_eq!(best_candidate(&open, sizes, &stored).cloned(), expected, "{open:?} at {sizes:?}");
        }
        // A replica that joined by snapshot at 1,500 checks sizes from there.
        let (joined, _) = replica(1_500, 2_007);
        assert_eq!(best_candidate(&[at(1_003)], everywhere, &joined), None);
        assert_eq!(
            best_candidate(&[at(1_800)], Sizes { last_final: 1_500, applied: 2_007 }, &joined),
            Some(&at(1_800))
        );
    }
}
