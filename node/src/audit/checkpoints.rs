//! The checkpoint task: hub and department nodes follow the access log's
//! Merkle tree from their own replica and cosign checkpoints of it.
//!
//! The task follows the tree with its compact range (at most 64 hashes),
//! seeded from the applied state's and advanced leaf by leaf from the stored
//! audit leaves, at most `CHECKPOINT_LEAVES_PER_TICK_MAX` every
//! `CHECKPOINT_TICK_MS`, and keeps the roots it computed at every multiple of
//! `CHECKPOINT_INTERVAL_ENTRIES` and at the end of each tick (the latest
//! `CHECKPOINT_ROOTS_KEPT_MAX`). It stops at the size of an open candidate
//! it has not reached. Several candidates may be open at once, and a
//! signer's cosignature counts for one of them only. If this node has
//! cosigned none, it cosigns the first candidate whose signed root is a root
//! it computed at that size. If none matches (none is open, or only bogus
//! ones a single signer opened) and `CHECKPOINT_INTERVAL_ENTRIES` entries or
//! `CHECKPOINT_INTERVAL_MS` have passed since the last final checkpoint, it
//! opens one at the latest multiple of `CHECKPOINT_INTERVAL_ENTRIES` it
//! passed, where every signer has a root, or, with fewer new entries, at its
//! size (signers take turns by a stagger, so they rarely open two at once).

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
/// Leaves hashed per tick at most.
pub const CHECKPOINT_LEAVES_PER_TICK_MAX: usize = 50_000;
/// Roots the task keeps, newest first.
pub const CHECKPOINT_ROOTS_KEPT_MAX: usize = 1_024;

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
    let mut tree: Option<Follower> = None;
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
        let tree = tree.get_or_insert_with(|| Follower::new(view.frontier.clone()));
        let size = tree.range.size();
        let stop_at = open.iter().map(|(body, _)| body.tree_size).filter(|candidate| *candidate > size).min();
        tree.advance(&log, &view.frontier, stop_at);
        if open.iter().any(|(_, mine)| *mine) {
            continue;
        }
        let body = match matching_candidate(open.into_iter().map(|(body, _)| body), tree) {
            Some(body) => body,
            None => {
                let new_entries = tree.range.size().saturating_sub(view.last_final_size);
                let since_ms = now_ms.saturating_sub(view.last_final_at_ms.max(started_at_ms));
                let due = new_entries >= CHECKPOINT_INTERVAL_ENTRIES
                    || (new_entries > 0
                        && since_ms >= CHECKPOINT_INTERVAL_MS + rank * CHECKPOINT_OPEN_STAGGER_MS);
                if !due {
                    continue;
                }
                let (tree_size, root) = tree.size_to_open(view.last_final_size);
                CheckpointBody { tree_size, root, log_index: view.applied_index }
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

/// This node's view of the audit tree: its compact range and the roots it
/// computed on the way (bounded).
struct Follower {
    range: CompactRange,
    roots: std::collections::BTreeMap<u64, [u8; 32]>,
}

impl Follower {
    fn new(range: CompactRange) -> Self {
        let mut follower = Follower { range, roots: std::collections::BTreeMap::new() };
        follower.keep_root();
        follower
    }

    fn keep_root(&mut self) {
        if self.range.size() > 0 {
            self.roots.insert(self.range.size(), self.range.root());
        }
        while self.roots.len() > CHECKPOINT_ROOTS_KEPT_MAX {
            self.roots.pop_first();
        }
    }

    fn push(&mut self, leaf: &[u8; 32]) {
        self.range.push(leaf);
        if self.range.size().is_multiple_of(CHECKPOINT_INTERVAL_ENTRIES) {
            self.keep_root();
        }
    }

    /// Moves towards the applied state's tree, reading stored leaves, and
    /// stops at `stop_at` if it lies on the way. A range the stored leaves
    /// cannot advance (this node installed a snapshot beyond it) jumps to
    /// the state's.
    fn advance(&mut self, log: &PolicyLog<SwarmClient>, frontier: &CompactRange, stop_at: Option<u64>) {
        let target = stop_at.unwrap_or(u64::MAX).min(frontier.size());
        let wanted = usize::try_from(target.saturating_sub(self.range.size()))
            .unwrap_or(usize::MAX)
            .min(CHECKPOINT_LEAVES_PER_TICK_MAX);
        if wanted == 0 {
            return;
        }
        match log.history().audit_leaves(self.range.size(), wanted) {
            Ok(leaves) if leaves.is_empty() => self.range = frontier.clone(),
            Ok(leaves) => leaves.iter().for_each(|leaf| self.push(leaf)),
            Err(error) => tracing::warn!(%error, "cannot read the audit leaves"),
        }
        self.keep_root();
    }

    /// The root this node computed at `size`, if it kept one.
    fn root_at(&self, size: u64) -> Option<[u8; 32]> {
        self.roots.get(&size).copied()
    }

    /// Where to open a checkpoint: the latest multiple of
    /// `CHECKPOINT_INTERVAL_ENTRIES` past the last final one, which every
    /// signer passing it kept a root for; with fewer new entries, here.
    fn size_to_open(&self, last_final_size: u64) -> (u64, [u8; 32]) {
        let boundary = self.range.size() / CHECKPOINT_INTERVAL_ENTRIES * CHECKPOINT_INTERVAL_ENTRIES;
        match self.root_at(boundary).filter(|_| boundary > last_final_size) {
            Some(root) => (boundary, root),
            None => (self.range.size(), self.range.root()),
        }
    }
}

/// The first open candidate whose signed root is a root this node computed
/// at that size: the only kind it cosigns.
fn matching_candidate(
    open: impl IntoIterator<Item = CheckpointBody>,
    tree: &Follower,
) -> Option<CheckpointBody> {
    open.into_iter().find(|body| match tree.root_at(body.tree_size) {
        Some(root) if root == body.root => true,
        Some(_) => {
            tracing::warn!(
                size = body.tree_size,
                "an open checkpoint's root is not this replica's: not cosigning"
            );
            false
        }
        None => false,
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

    /// A follower that pushed `leaves` leaves, keeping roots as the task does
    /// (at every multiple of the interval, and at the end).
    fn follower(leaves: u64) -> Follower {
        let mut tree = Follower::new(CompactRange::default());
        for leaf in 0..leaves {
            tree.push(&codec_leaf(leaf));
        }
        tree.keep_root();
        tree
    }

    fn codec_leaf(number: u64) -> [u8; 32] {
        civmesh_certs::codec::sha256(&number.to_be_bytes())
    }

    #[test]
    fn a_node_cosigns_only_a_candidate_over_a_root_it_computed() {
        let interval = CHECKPOINT_INTERVAL_ENTRIES;
        let tree = follower(2 * interval + 7);
        let mut reference = CompactRange::default();
        let mut at_interval = None;
        for leaf in 0..2 * interval + 7 {
            reference.push(&codec_leaf(leaf));
            if leaf + 1 == interval {
                at_interval = Some(reference.root());
            }
        }
        let ours_now = body(2 * interval + 7, reference.root());
        let ours_passed = body(interval, at_interval.unwrap());
        let bogus = body(interval, [9; 32]);
        let unknown = body(interval + 3, [9; 32]);
        assert_eq!(matching_candidate([bogus.clone(), ours_passed.clone()], &tree), Some(ours_passed));
        assert_eq!(matching_candidate([unknown.clone(), ours_now.clone()], &tree), Some(ours_now));
        assert_eq!(matching_candidate([bogus, unknown], &tree), None);
        assert_eq!(matching_candidate([], &tree), None);
    }

    #[test]
    fn a_checkpoint_opens_where_every_signer_kept_a_root() {
        let interval = CHECKPOINT_INTERVAL_ENTRIES;
        let tree = follower(3 * interval + 5);
        assert_eq!(tree.size_to_open(0).0, 3 * interval);
        assert_eq!(tree.size_to_open(3 * interval).0, 3 * interval + 5, "fewer new entries: here");
        let small = follower(5);
        assert_eq!(small.size_to_open(0), (5, small.range.root()));
        let mut many = follower(0);
        for leaf in 0..CHECKPOINT_ROOTS_KEPT_MAX as u64 + 10 {
            many.push(&codec_leaf(leaf));
            many.keep_root();
        }
        assert!(many.roots.len() <= CHECKPOINT_ROOTS_KEPT_MAX, "the roots kept are bounded");
    }
}
