//! Roots and RFC 6962 proofs read from the perfect subtrees a store keeps
//! ([`TreeNode`]), at any size the store holds, in O(log n) reads: the
//! recursion of RFC 6962 section 2.1 descends one path, and only the
//! ranges on the tree's right edge are not perfect (each folds from at
//! most 64 stored nodes, and a path meets one of them before it turns
//! left into a perfect subtree). Verification is ct-merkle's, so the
//! proofs are checked by an implementation that is not this one.

use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2::{Digest, Sha256};

use super::tree::{hash_children, TreeNode};

/// The largest tree size a proof is checked against: beyond it a size is
/// malformed (ct-merkle's index arithmetic needs room above it).
pub const PROOF_TREE_SIZE_MAX: u64 = 1 << 62;

/// Where the hashes of stored perfect subtrees are read from.
pub trait TreeNodes {
    /// Why a read failed.
    type Error: std::error::Error + 'static;

    /// The hash of `node`, if it is stored.
    fn node_hash(&self, node: TreeNode) -> Result<Option<[u8; 32]>, Self::Error>;
}

/// Why a root or a proof could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeReadError<E: std::error::Error + 'static> {
    /// The sizes or the leaf asked for do not fit together.
    #[error("{0}")]
    OutOfRange(String),
    /// A subtree it needs is not stored here: this replica joined by
    /// snapshot after those leaves.
    #[error("this replica does not hold the audit tree's {} leaves from {}", 1u64 << .0.level, .0.first_leaf())]
    NotHeld(TreeNode),
    /// The store failed.
    #[error(transparent)]
    Store(E),
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not a whole number of 32-byte hashes, or not as many as the sizes
    /// call for.
    #[error("the proof has the wrong shape for these sizes")]
    Malformed,
    /// The hashes do not lead to the root.
    #[error("the proof does not lead to the root")]
    Mismatch,
}

/// The root of the tree's first `size` leaves (the hash of nothing at 0).
pub fn root_at<N: TreeNodes>(nodes: &N, size: u64) -> Result<[u8; 32], TreeReadError<N::Error>> {
    if size == 0 {
        return Ok(Sha256::digest(b"").into());
    }
    range_root(nodes, 0, size)
}

/// The RFC 6962 audit path of leaf `leaf` in the tree of `size` leaves,
/// deepest sibling first.
pub fn inclusion_proof<N: TreeNodes>(
    nodes: &N,
    leaf: u64,
    size: u64,
) -> Result<Vec<[u8; 32]>, TreeReadError<N::Error>> {
    if leaf >= size {
        return Err(TreeReadError::OutOfRange(format!("leaf {leaf} is not in a tree of {size} leaves")));
    }
    let mut proof = Vec::new();
    let (mut start, mut end) = (0u64, size);
    // Top down, then reversed: the path's siblings, deepest first.
    while end - start > 1 {
        let split = start + largest_power_below(end - start);
        if leaf < split {
            proof.push(range_root(nodes, split, end)?);
            end = split;
        } else {
            proof.push(range_root(nodes, start, split)?);
            start = split;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The RFC 6962 consistency proof that the tree of `old_size` leaves is a
/// prefix of the tree of `size` leaves (`0 < old_size <= size`).
pub fn consistency_proof<N: TreeNodes>(
    nodes: &N,
    old_size: u64,
    size: u64,
) -> Result<Vec<[u8; 32]>, TreeReadError<N::Error>> {
    if old_size == 0 || old_size > size {
        return Err(TreeReadError::OutOfRange(format!(
            "a tree of {old_size} leaves is not a prefix of one of {size}"
        )));
    }
    let mut proof = Vec::new();
    let (mut start, mut end) = (0u64, size);
    // SUBPROOF(m, D[start:end], whole): `whole` while the old tree is this
    // range's own prefix from the root's left edge.
    let mut whole = true;
    while old_size != end {
        let split = start + largest_power_below(end - start);
        if old_size <= split {
            proof.push(range_root(nodes, split, end)?);
            end = split;
        } else {
            proof.push(range_root(nodes, start, split)?);
            start = split;
            whole = false;
        }
    }
    if !whole {
        proof.push(range_root(nodes, start, end)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `leaf_value` is leaf `leaf` of the tree of `size` leaves
/// whose root is `root`.
pub fn verify_inclusion(
    root: &[u8; 32],
    size: u64,
    leaf: u64,
    leaf_value: &[u8; 32],
    proof: &[[u8; 32]],
) -> Result<(), ProofError> {
    if size > PROOF_TREE_SIZE_MAX {
        return Err(ProofError::Malformed);
    }
    let proof =
        InclusionProof::<Sha256>::try_from_bytes(proof.concat()).map_err(|_| ProofError::Malformed)?;
    RootHash::<Sha256>::new((*root).into(), size).verify_inclusion(leaf_value, leaf, &proof).map_err(
        |error| match error {
            ct_merkle::InclusionVerifError::IncorrectHash => ProofError::Mismatch,
            _ => ProofError::Malformed,
        },
    )
}

/// Checks that the tree of `old_size` leaves with `old_root` is a prefix
/// of the tree of `size` leaves with `root`.
pub fn verify_consistency(
    old_root: &[u8; 32],
    old_size: u64,
    root: &[u8; 32],
    size: u64,
    proof: &[[u8; 32]],
) -> Result<(), ProofError> {
    if size > PROOF_TREE_SIZE_MAX {
        return Err(ProofError::Malformed);
    }
    let proof =
        ConsistencyProof::<Sha256>::try_from_bytes(proof.concat()).map_err(|_| ProofError::Malformed)?;
    let old = RootHash::<Sha256>::new((*old_root).into(), old_size);
    RootHash::<Sha256>::new((*root).into(), size).verify_consistency(&old, &proof).map_err(
        |error| match error {
            ct_merkle::ConsistencyVerifError::VerificationFailure => ProofError::Mismatch,
            _ => ProofError::Malformed,
        },
    )
}

/// The largest power of two below `width` (`width > 1`): where RFC 6962
/// splits a range.
fn largest_power_below(width: u64) -> u64 {
    debug_assert!(width > 1);
    1 << (63 - (width - 1).leading_zeros())
}

/// The RFC 6962 hash of the leaves `start..end`, a range the recursion
/// reaches: perfect and aligned, one stored node; otherwise split.
fn range_root<N: TreeNodes>(nodes: &N, start: u64, end: u64) -> Result<[u8; 32], TreeReadError<N::Error>> {
    debug_assert!(start < end);
    let width = end - start;
    if width.is_power_of_two() && start.is_multiple_of(width) {
        let level = width.trailing_zeros() as u8;
        let node = TreeNode { level, index: start >> level };
        return nodes.node_hash(node).map_err(TreeReadError::Store)?.ok_or(TreeReadError::NotHeld(node));
    }
    let split = start + largest_power_below(width);
    Ok(hash_children(&range_root(nodes, start, split)?, &range_root(nodes, split, end)?))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use ct_merkle::mem_backed_tree::MemoryBackedTree;
    use proptest::prelude::*;

    use super::*;
    use crate::audit::CompactRange;

    /// The nodes a store keeps: what each push completed, optionally only
    /// from a snapshot's range on; and how many reads it served.
    #[derive(Default)]
    struct Stored {
        nodes: BTreeMap<TreeNode, [u8; 32]>,
        reads: Cell<u64>,
    }

    impl TreeNodes for Stored {
        type Error = std::convert::Infallible;

        fn node_hash(&self, node: TreeNode) -> Result<Option<[u8; 32]>, Self::Error> {
            self.reads.set(self.reads.get() + 1);
            Ok(self.nodes.get(&node).copied())
        }
    }

    fn leaf(number: u64) -> [u8; 32] {
        civmesh_certs::codec::sha256(&number.to_be_bytes())
    }

    /// A store of `size` leaves, and ct-merkle's whole tree of the same.
    fn grown(size: u64) -> (Stored, MemoryBackedTree<Sha256, [u8; 32]>) {
        let mut stored = Stored::default();
        let mut range = CompactRange::default();
        let mut reference = MemoryBackedTree::new();
        for number in 0..size {
            stored.nodes.extend(range.push(&leaf(number)));
            reference.push(leaf(number));
        }
        (stored, reference)
    }

    fn hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
        bytes.chunks(32).map(|chunk| chunk.try_into().unwrap()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Roots and proofs read from stored nodes are ct-merkle's, byte
        /// for byte, at every size; they verify; a changed hash does not.
        #[test]
        fn stored_roots_and_proofs_are_rfc_6962(size in 1u64..600, picks in any::<(u64, u64, u64)>()) {
            let (stored, reference) = grown(size);
            let old_size = picks.0 % size + 1;
            let leaf_index = picks.1 % old_size;
            let (old_stored, old_reference) = grown(old_size);
            let root = root_at(&stored, size).unwrap();
            let old_root = root_at(&stored, old_size).unwrap();
            let reference_root = reference.root();
            prop_assert_eq!(&root[..], reference_root.as_bytes().as_slice());
            prop_assert_eq!(old_root, root_at(&old_stored, old_size).unwrap());

            let inclusion = inclusion_proof(&stored, leaf_index, old_size).unwrap();
            let expected = old_reference.prove_inclusion(leaf_index as usize);
            prop_assert_eq!(&inclusion, &hashes(expected.as_bytes()));
            prop_assert_eq!(verify_inclusion(&old_root, old_size, leaf_index, &leaf(leaf_index), &inclusion), Ok(()));
            prop_assert!(verify_inclusion(&old_root, old_size, leaf_index, &leaf(leaf_index + 1), &inclusion).is_err());

            let consistency = consistency_proof(&stored, old_size, size).unwrap();
            let expected = reference.prove_consistency((size - old_size) as usize);
            prop_assert_eq!(&consistency, &hashes(expected.as_bytes()));
            prop_assert_eq!(verify_consistency(&old_root, old_size, &root, size, &consistency), Ok(()));
            if let Some(first) = consistency.first() {
                let mut bent = consistency.clone();
                bent[0] = hash_children(first, first);
                prop_assert_eq!(verify_consistency(&old_root, old_size, &root, size, &bent), Err(ProofError::Mismatch));
            }
            let wrong_old_root = [picks.2 as u8; 32];
            prop_assert!(verify_consistency(&wrong_old_root, old_size, &root, size, &consistency).is_err());
        }
    }

    #[test]
    fn reads_grow_with_the_logarithm_of_the_size() {
        let size = (1u64 << 16) - 1;
        let (stored, _) = grown(size);
        for (leaf_index, old_size) in [(0, 1), (0, size), (size / 3, size - 1), (size - 1, size)] {
            stored.reads.set(0);
            root_at(&stored, size).unwrap();
            inclusion_proof(&stored, leaf_index, size).unwrap();
            consistency_proof(&stored, old_size, size).unwrap();
            assert!(stored.reads.get() <= 3 * 2 * 16, "{} reads at leaf {leaf_index}", stored.reads.get());
        }
    }

    #[test]
    fn a_store_that_starts_from_a_snapshot_holds_later_sizes_only() {
        let mut range = CompactRange::default();
        for number in 0..1000 {
            range.push(&leaf(number));
        }
        let mut stored = Stored::default();
        stored.nodes.extend(range.nodes());
        for number in 1000..1500 {
            stored.nodes.extend(range.push(&leaf(number)));
        }
        let (whole, _) = grown(1500);
        for size in [1000, 1001, 1024, 1499, 1500] {
            assert_eq!(root_at(&stored, size).unwrap(), root_at(&whole, size).unwrap(), "size {size}");
            assert_eq!(
                consistency_proof(&stored, 1000, size).unwrap(),
                consistency_proof(&whole, 1000, size).unwrap()
            );
        }
        assert!(inclusion_proof(&stored, 1200, 1500).is_ok());
        assert!(matches!(root_at(&stored, 999), Err(TreeReadError::NotHeld(_))));
        assert!(matches!(inclusion_proof(&stored, 5, 1500), Err(TreeReadError::NotHeld(_))));
        assert!(matches!(inclusion_proof(&stored, 1500, 1500), Err(TreeReadError::OutOfRange(_))));
        assert!(matches!(consistency_proof(&stored, 0, 1500), Err(TreeReadError::OutOfRange(_))));
        assert!(matches!(consistency_proof(&stored, 1501, 1500), Err(TreeReadError::OutOfRange(_))));
        assert_eq!(verify_inclusion(&[0; 32], 3, 1, &leaf(1), &[[0; 32]; 5]), Err(ProofError::Malformed));
        for size in [PROOF_TREE_SIZE_MAX + 1, u64::MAX] {
            assert_eq!(
                verify_inclusion(&[0; 32], size, 1, &leaf(1), &[[0; 32]; 62]),
                Err(ProofError::Malformed)
            );
            assert_eq!(
                verify_consistency(&[0; 32], 1, &[0; 32], size, &[[0; 32]; 62]),
                Err(ProofError::Malformed)
            );
        }
    }
}
