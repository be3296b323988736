//! The access log's Merkle tree (RFC 6962, SHA-256): its right edge
//! ([`CompactRange`]), the perfect subtrees a store keeps ([`TreeNode`]),
//! and the tree an auditor's replay follows ([`ReplayTree`]). Roots and
//! proofs read from stored nodes are in [`super::proofs`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A perfect subtree of the audit tree: the `2^level` leaves from
/// `index << level` on. Level 0 is one leaf. Once all its leaves are in,
/// its hash never changes, so a store keeps it under this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeNode {
    /// Its height: it covers `2^level` leaves.
    pub level: u8,
    /// Its place among the subtrees of its level, from the left.
    pub index: u64,
}

impl TreeNode {
    /// The first leaf it covers.
    pub fn first_leaf(&self) -> u64 {
        self.index << self.level
    }
}

/// The most roots a [`ReplayTree`] keeps: leaves no final checkpoint covers
/// yet (32 bytes each, 128 MiB at most).
pub const REPLAY_ROOTS_KEPT_MAX: usize = 1 << 22;

/// The audit tree as an auditor's replay follows it, in memory bounded by
/// the leaves after the latest final checkpoint, not by the log: its right
/// edge, and its root at every size since the latest final checkpoint
/// (a checkpoint must cover more than the last final one, so no later one
/// needs an older root), at most [`REPLAY_ROOTS_KEPT_MAX`].
#[derive(Debug, Clone, Default)]
pub struct ReplayTree {
    range: CompactRange,
    /// The root at size `first_root_size + i` at `roots[i]`.
    roots: VecDeque<[u8; 32]>,
    first_root_size: u64,
}

impl ReplayTree {
    /// Appends one leaf, and keeps the root at the new size.
    pub fn push(&mut self, leaf: &[u8; 32]) {
        self.range.push(leaf);
        if self.roots.is_empty() {
            self.first_root_size = self.range.size();
        }
        self.roots.push_back(self.range.root());
        if self.roots.len() > REPLAY_ROOTS_KEPT_MAX {
            self.roots.pop_front();
            self.first_root_size += 1;
        }
        debug_assert_eq!(self.first_root_size + self.roots.len() as u64, self.range.size() + 1);
    }

    /// How many leaves.
    pub fn len(&self) -> u64 {
        self.range.size()
    }

    /// Whether there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.range.size() == 0
    }

    /// The root now.
    pub fn root(&self) -> [u8; 32] {
        self.range.root()
    }

    /// The root at `size`, if it is still kept: a size after the last
    /// [`ReplayTree::forget_through`] and among the latest
    /// [`REPLAY_ROOTS_KEPT_MAX`].
    pub fn root_at(&self, size: u64) -> Option<[u8; 32]> {
        let offset = size.checked_sub(self.first_root_size)?;
        self.roots.get(usize::try_from(offset).ok()?).copied()
    }

    /// Forgets the roots at `size` and before: a final checkpoint covers
    /// them, and every later checkpoint covers more.
    pub fn forget_through(&mut self, size: u64) {
        while self.first_root_size <= size && self.roots.pop_front().is_some() {
            self.first_root_size += 1;
        }
    }
}

/// The most perfect subtrees a compact range holds: one per bit of a u64 size.
pub const COMPACT_RANGE_HASHES_MAX: usize = 64;

/// The right edge of an RFC 6962 tree: the roots of its perfect subtrees,
/// largest first, one per set bit of its size. It gives the root at its
/// size and takes the next leaf in O(log n), holding at most
/// [`COMPACT_RANGE_HASHES_MAX`] hashes whatever the tree's size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CompactRangeParts")]
pub struct CompactRange {
    size: u64,
    hashes: Vec<[u8; 32]>,
}

/// A compact range as decoded, before it is checked.
#[derive(Deserialize)]
struct CompactRangeParts {
    size: u64,
    hashes: Vec<[u8; 32]>,
}

/// A decoded compact range whose hashes do not match its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a compact range of {size} leaves holds {hashes} hashes, not one per set bit of its size")]
pub struct CompactRangeMalformed {
    size: u64,
    hashes: usize,
}

impl TryFrom<CompactRangeParts> for CompactRange {
    type Error = CompactRangeMalformed;

    fn try_from(parts: CompactRangeParts) -> Result<Self, Self::Error> {
        if parts.hashes.len() as u64 != u64::from(parts.size.count_ones()) {
            return Err(CompactRangeMalformed { size: parts.size, hashes: parts.hashes.len() });
        }
        Ok(CompactRange { size: parts.size, hashes: parts.hashes })
    }
}

impl CompactRange {
    /// The leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (its value, hashed here as an RFC 6962 leaf), and
    /// returns the perfect subtrees it completed, the leaf's own first:
    /// what a store keeps to read roots and proofs at any size later.
    pub fn push(&mut self, leaf: &[u8; 32]) -> Vec<(TreeNode, [u8; 32])> {
        let mut node = hash_leaf(leaf);
        let mut completed = vec![(TreeNode { level: 0, index: self.size }, node)];
        let mut size = self.size;
        let mut level = 0u8;
        while size & 1 == 1 {
            let Some(left) = self.hashes.pop() else { break };
            node = hash_children(&left, &node);
            size >>= 1;
            level += 1;
            completed.push((TreeNode { level, index: self.size >> level }, node));
        }
        self.hashes.push(node);
        self.size += 1;
        debug_assert_eq!(self.hashes.len() as u32, self.size.count_ones());
        completed
    }

    /// Its hashes with the subtrees they are the roots of, largest first:
    /// a store that starts from this range (a snapshot) keeps them, so it
    /// can read the root at this size and any later one.
    pub fn nodes(&self) -> Vec<(TreeNode, [u8; 32])> {
        let mut first_leaf = 0u64;
        let levels = (0..64u8).rev().filter(|level| self.size >> level & 1 == 1);
        levels
            .zip(&self.hashes)
            .map(|(level, hash)| {
                let node = TreeNode { level, index: first_leaf >> level };
                first_leaf += 1 << level;
                (node, *hash)
            })
            .collect()
    }

    /// The root at this size (the hash of nothing when empty).
    pub fn root(&self) -> [u8; 32] {
        let mut nodes = self.hashes.iter().rev();
        let Some(last) = nodes.next() else { return Sha256::digest(b"").into() };
        nodes.fold(*last, |right, left| hash_children(left, &right))
    }
}

pub(super) fn hash_leaf(leaf: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

pub(super) fn hash_children(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use civmesh_certs::codec;

    /// RFC 6962 by hand for small trees, against the crate's incremental roots.
    fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        let sha = |parts: &[&[u8]]| {
            let mut all = Vec::new();
            for part in parts {
                all.extend_from_slice(part);
            }
            codec::sha256(&all)
        };
        match leaves.len() {
            0 => codec::sha256(b""),
            1 => sha(&[&[0], &leaves[0]]),
            n => {
                let split = n.next_power_of_two() / 2;
                let split = if split == n { n / 2 } else { split };
                sha(&[&[1], &reference_root(&leaves[..split]), &reference_root(&leaves[split..])])
            }
        }
    }

    #[test]
    fn roots_at_every_size_follow_rfc_6962() {
        let leaves: Vec<[u8; 32]> = (0..37u8).map(|i| [i; 32]).collect();
        let mut tree = ReplayTree::default();
        assert!(tree.is_empty());
        assert_eq!(tree.root(), reference_root(&[]));
        for leaf in &leaves {
            tree.push(leaf);
        }
        for size in 1..=37u64 {
            let expected = reference_root(&leaves[..size as usize]);
            assert_eq!(tree.root_at(size), Some(expected), "size {size}");
        }
        assert_eq!(tree.root(), reference_root(&leaves));
        assert_eq!(tree.root_at(0), None);
        assert_eq!(tree.root_at(38), None);
    }

    #[test]
    fn a_replay_tree_keeps_roots_only_after_the_last_final_checkpoint() {
        let leaves: Vec<[u8; 32]> = (0..20u8).map(|i| [i; 32]).collect();
        let mut tree = ReplayTree::default();
        for leaf in &leaves[..10] {
            tree.push(leaf);
        }
        tree.forget_through(6);
        assert_eq!(tree.root_at(6), None);
        assert_eq!(tree.root_at(7), Some(reference_root(&leaves[..7])));
        tree.forget_through(10);
        assert_eq!(tree.root_at(10), None, "every root forgotten");
        for leaf in &leaves[10..] {
            tree.push(leaf);
        }
        assert_eq!(tree.roots.len(), 10, "only the roots after the checkpoint are kept");
        for size in 11..=20u64 {
            assert_eq!(tree.root_at(size), Some(reference_root(&leaves[..size as usize])), "size {size}");
        }
        assert_eq!(tree.len(), 20);
    }

    #[test]
    fn a_compact_range_names_the_subtrees_it_completes_and_holds() {
        let leaves: Vec<[u8; 32]> = (0..300u32).map(|index| codec::sha256(&index.to_be_bytes())).collect();
        let subtree = |node: TreeNode| {
            let first = node.first_leaf() as usize;
            reference_root(&leaves[first..first + (1 << node.level)])
        };
        let mut range = CompactRange::default();
        assert_eq!(range.root(), reference_root(&[]));
        let mut completed = 0;
        for (index, leaf) in leaves.iter().enumerate() {
            let nodes = range.push(leaf);
            assert_eq!(nodes[0].0, TreeNode { level: 0, index: index as u64 });
            for (node, hash) in nodes {
                assert_eq!(hash, subtree(node), "{node:?}");
                assert_eq!(node.first_leaf() + (1 << node.level), range.size(), "completed by this leaf");
                completed += 1;
            }
            assert_eq!(range.root(), reference_root(&leaves[..=index]), "size {}", range.size());
            let held = range.nodes();
            assert_eq!(held.len() as u32, range.size().count_ones());
            assert!(held.iter().all(|(node, hash)| *hash == subtree(*node)), "size {}", range.size());
        }
        assert_eq!(completed, 2 * 300 - 300u32.count_ones(), "every perfect subtree, once");
        let bytes = codec::encode(&range).unwrap();
        assert_eq!(codec::decode_exact::<CompactRange>(&bytes, 4096).unwrap(), range);
        let bent = CompactRangeParts { size: range.size + 1, hashes: range.hashes.clone() };
        assert!(CompactRange::try_from(bent).is_err());
    }
}
