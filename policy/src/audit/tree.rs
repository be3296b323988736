//! The access log's Merkle tree (RFC 6962, SHA-256).

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::RootHash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The access log's Merkle tree (RFC 6962, SHA-256), with the root at every
/// size kept so any checkpoint size can be checked later.
#[derive(Default)]
pub struct AccessTree {
    tree: MemoryBackedTree<Sha256, [u8; 32]>,
    roots: Vec<[u8; 32]>,
}

impl AccessTree {
    /// An empty tree.
    pub fn new() -> Self {
        AccessTree::default()
    }

    /// Appends one leaf.
    pub fn push(&mut self, leaf: [u8; 32]) {
        self.tree.push(leaf);
        self.roots.push(self.tree.root().as_bytes().as_slice().try_into().unwrap_or([0; 32]));
        debug_assert_eq!(self.roots.len() as u64, self.tree.len());
    }

    /// How many leaves.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The root when the tree had `size` leaves (1..=len).
    pub fn root_at(&self, size: u64) -> Option<[u8; 32]> {
        self.roots.get(usize::try_from(size).ok()?.checked_sub(1)?).copied()
    }

    /// Proves, and checks, that the tree of `old_size` leaves with
    /// `old_root` is a prefix of this tree (an RFC 6962 consistency proof).
    pub fn check_consistency(&self, old_size: u64, old_root: &[u8; 32]) -> Result<(), ConsistencyError> {
        if old_size == 0 || old_size > self.len() {
            return Err(ConsistencyError::NotAPrefix { old_size, size: self.len() });
        }
        if old_size == self.len() {
            return (self.root_at(old_size) == Some(*old_root))
                .then_some(())
                .ok_or(ConsistencyError::RootDiffers);
        }
        let proof = self.tree.prove_consistency((self.len() - old_size) as usize);
        let old = RootHash::<Sha256>::new((*old_root).into(), old_size);
        self.tree
            .root()
            .verify_consistency(&old, &proof)
            .map_err(|error| ConsistencyError::ProofFailed(format!("{error:?}")))
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

    /// Appends a leaf (its value, hashed here as RFC 6962 leaf).
    pub fn push(&mut self, leaf: &[u8; 32]) {
        let mut node = hash_leaf(leaf);
        let mut size = self.size;
        while size & 1 == 1 {
            let Some(left) = self.hashes.pop() else { break };
            node = hash_children(&left, &node);
            size >>= 1;
        }
        self.hashes.push(node);
        self.size += 1;
        debug_assert_eq!(self.hashes.len() as u32, self.size.count_ones());
    }

    /// The root at this size (the hash of nothing when empty).
    pub fn root(&self) -> [u8; 32] {
        let mut nodes = self.hashes.iter().rev();
        let Some(last) = nodes.next() else { return Sha256::digest(b"").into() };
        nodes.fold(*last, |right, left| hash_children(left, &right))
    }
}

fn hash_leaf(leaf: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

fn hash_children(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Why an earlier tree is not a prefix of this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// The earlier tree is empty or larger.
    #[error("a tree of {old_size} leaves is not a prefix of {size} leaves")]
    NotAPrefix {
        /// The earlier tree's size.
        old_size: u64,
        /// This tree's size.
        size: u64,
    },
    /// Same size, another root.
    #[error("the root differs at the same size")]
    RootDiffers,
    /// The consistency proof does not verify.
    #[error("{0}")]
    ProofFailed(String),
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
    fn roots_at_every_size_follow_rfc_6962_and_prefixes_are_consistent() {
        let leaves: Vec<[u8; 32]> = (0..37u8).map(|i| [i; 32]).collect();
        let mut tree = AccessTree::new();
        assert!(tree.is_empty());
        for (index, leaf) in leaves.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(
                tree.root_at(index as u64 + 1),
                Some(reference_root(&leaves[..=index])),
                "size {}",
                index + 1
            );
        }
        for size in 1..=37 {
            tree.check_consistency(size, &tree.root_at(size).unwrap()).unwrap();
        }
        assert!(!tree.is_empty());
        assert!(tree.check_consistency(5, &[9; 32]).is_err());
        assert_eq!(tree.check_consistency(37, &[9; 32]), Err(ConsistencyError::RootDiffers));
        assert!(tree.check_consistency(36, &tree.root_at(37).unwrap()).is_err());
        assert!(tree.check_consistency(38, &tree.root_at(37).unwrap()).is_err());
        assert_eq!(tree.root_at(0), None);
    }

    #[test]
    fn a_compact_range_gives_the_same_root_as_the_whole_tree_at_every_size() {
        let mut tree = AccessTree::new();
        let mut range = CompactRange::default();
        assert_eq!(range.root(), reference_root(&[]));
        for index in 0..300u32 {
            let leaf = codec::sha256(&index.to_be_bytes());
            tree.push(leaf);
            range.push(&leaf);
            assert_eq!(Some(range.root()), tree.root_at(range.size()), "size {}", range.size());
        }
        let bytes = codec::encode(&range).unwrap();
        assert_eq!(codec::decode_exact::<CompactRange>(&bytes, 4096).unwrap(), range);
        let bent = CompactRangeParts { size: range.size + 1, hashes: range.hashes.clone() };
        assert!(CompactRange::try_from(bent).is_err());
    }
}
