//! The verifiable access log: its RFC 6962 Merkle tree, the checkpoints
//! signers cosign, the audit bundle, and the auditor's offline verification.
//!
//! Verification is a replay: the bundle carries every policy command in log
//! order, and the auditor runs them through the same deterministic
//! [`PolicyState::apply`] the replicas ran. That re-verifies every
//! signature (the owner's command and the requester's query header), every
//! signer's authority and every permit's justification against the state at
//! its position. The access entries it yields are hashed into the tree, and
//! each final checkpoint's root must match. Roots seen in earlier runs must
//! be prefixes of this bundle's tree (consistency proofs), so a rewritten
//! history is caught between two runs. The format is in docs/audit-bundle.md.

use std::collections::BTreeSet;

use civmesh_certs::{NodeId, OrgId, Role, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::model::Member;
use crate::SignedCommand;

mod bundle;
mod export;
mod lifecycle;
mod proofs;
mod subject;
mod tally;
mod tree;
mod verify;

pub use crate::access::AccessKind;
pub use bundle::{
    decode_bundle, encode_bundle, write_bundle_start, write_command, ArchivedCommand, AuditBundle,
    BundleError, BundleHeader, BundleReader,
};
pub use export::{checked_subject_accesses, ArchiveWriter, ExportError, Exported, SubjectReportError};
pub use lifecycle::{lifecycle_report, HolderDeletions, LifecycleReport, OwnerRequests};
pub use proofs::{
    consistency_proof, inclusion_proof, root_at, verify_consistency, verify_inclusion, ProofError, TreeNodes,
    TreeReadError, PROOF_TREE_SIZE_MAX,
};
pub use subject::{SubjectAccess, SubjectAccessOutcome};
pub use tally::{
    AccessCounts, AccessFlag, AccessSummary, AccessTally, DepartmentAccesses, FlagKind, GrantAccesses,
    FLAGS_LISTED_MAX,
};
pub use tree::{CompactRange, ReplayTree, TreeNode, COMPACT_RANGE_HASHES_MAX, REPLAY_ROOTS_KEPT_MAX};
pub use verify::{
    verify_bundle, verify_bundle_for_subject, verify_bundle_on, verify_stream, verify_stream_collecting,
    AuditFailure, AuditReport, Checks, Collect, FailureKind, SeenCheckpoint, PROGRESS_COMMANDS_INTERVAL,
    REPLAY_WINDOW_COMMANDS,
};

/// A signer treats an open checkpoint it cannot cosign as abandoned after
/// this long, in ms, and opens its own. (The state keeps several open at
/// once, so an abandoned one blocks nobody.)
pub const CHECKPOINT_PENDING_MS_MAX: u64 = 30_000;
/// An open checkpoint that has not become final this long, in ms, after it
/// was opened closes at the next cosignature applied: a checkpoint that
/// never reaches quorum expires at a point every replica agrees on.
pub const CHECKPOINT_OPEN_MS_MAX: u64 = 10 * CHECKPOINT_PENDING_MS_MAX;
/// The first bytes of every bundle file.
pub const BUNDLE_MAGIC: [u8; 8] = *b"CIVAUDIT";
/// The bundle format this code writes and reads.
/// 2: leaves bind their position and the applied digest, which covers
/// entry times; version 1 bundles hash leaves from the envelope alone.
/// 3: grants carry a retention and an assessment (`IssueGrant`'s encoding
/// changed), and deletion receipts and subject requests exist.
pub const BUNDLE_FORMAT_VERSION: u32 = 3;
/// The largest archived command envelope, in bytes.
pub const ARCHIVED_COMMAND_BYTES_MAX: usize = civmesh_certs::ENVELOPE_BYTES_MAX + 1024;

/// What checkpoint signers sign: the tree at a size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// How many access entries the tree holds.
    pub tree_size: u64,
    /// Its RFC 6962 root (SHA-256).
    pub root: [u8; 32],
    /// The policy-log index the opener had applied.
    pub log_index: u64,
}

/// A checkpoint collecting cosignatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCheckpoint {
    /// What is signed.
    pub body: CheckpointBody,
    /// When it was opened (entry time).
    pub opened_at_ms: UnixMillis,
    /// Who cosigned so far.
    pub cosigners: BTreeSet<NodeId>,
}

/// A checkpoint a majority of signers cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCheckpoint {
    /// What was signed.
    pub body: CheckpointBody,
    /// Who cosigned (nodes that still counted as signers when it became
    /// final).
    pub cosigners: BTreeSet<NodeId>,
    /// Their organisations: a quorum counts organisations, not nodes, so a
    /// department running several nodes counts once.
    pub cosigning_orgs: BTreeSet<OrgId>,
    /// How many organisations had a signer in force when it became final.
    pub signer_orgs_in_force: u64,
    /// When it became final (entry time).
    pub final_at_ms: UnixMillis,
}

/// Whether a member cosigns checkpoints: hubs and departments, the
/// organisations that run the federation's voters.
pub fn signs_checkpoints(member: &Member) -> bool {
    matches!(member.role, Role::Hub | Role::Department)
}

/// Where a leaf's command stands in the log: what its leaf binds besides
/// the command's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafPosition {
    /// [`crate::PolicyState::digest`] before the command: every earlier
    /// command, its entry time and its outcome.
    pub digest_before: [u8; 32],
    /// The command's sequence number (1 for genesis).
    pub sequence: u64,
    /// The entry time it was applied at.
    pub entry_time_ms: UnixMillis,
}

/// The leaf input of an access entry or a correction outcome:
/// SHA-256(digest before || sequence u64 LE || entry time u64 LE ||
/// the signed command's wire bytes, which are canonical). The tree hashes
/// it as `SHA-256(0x00 || leaf)`.
pub fn leaf_of(position: &LeafPosition, envelope: &SignedCommand) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(position.digest_before);
    hasher.update(position.sequence.to_le_bytes());
    hasher.update(position.entry_time_ms.to_le_bytes());
    hasher.update(envelope.to_bytes().unwrap_or_default());
    hasher.finalize().into()
}
