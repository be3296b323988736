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

use civmesh_certs::{codec, NodeId, Role, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::model::Member;
use crate::SignedCommand;

mod bundle;
mod subject;
mod tree;
mod verify;

pub use crate::access::AccessKind;
pub use bundle::{decode_bundle, encode_bundle, ArchivedCommand, AuditBundle, BundleError};
pub use subject::{SubjectAccess, SubjectAccessOutcome};
pub use tree::{AccessTree, CompactRange, ConsistencyError, COMPACT_RANGE_HASHES_MAX};
pub use verify::{
    verify_bundle, verify_bundle_for_subject, verify_bundle_on, AuditFailure, AuditReport, FailureKind,
    SeenCheckpoint, PROGRESS_COMMANDS_INTERVAL,
};

/// A signer treats an open checkpoint it cannot cosign as abandoned after
/// this long, in ms, and opens its own. (The state keeps several open at
/// once, so an abandoned one blocks nobody.)
pub const CHECKPOINT_PENDING_MS_MAX: u64 = 30_000;
/// The first bytes of every bundle file.
pub const BUNDLE_MAGIC: [u8; 8] = *b"CIVAUDIT";
/// The bundle format this code writes and reads.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;
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
    /// Who cosigned.
    pub cosigners: BTreeSet<NodeId>,
    /// How many signers were in force when it became final.
    pub signers_in_force: u64,
    /// When it became final (entry time).
    pub final_at_ms: UnixMillis,
}

/// Whether a member cosigns checkpoints: hubs and departments, the
/// organisations that run the federation's voters.
pub fn signs_checkpoints(member: &Member) -> bool {
    matches!(member.role, Role::Hub | Role::Department)
}

/// The leaf input of an access entry or a correction outcome: SHA-256 of
/// the signed command (wire bytes). The tree hashes it as
/// `SHA-256(0x00 || leaf)`.
pub fn leaf_of(envelope: &SignedCommand) -> [u8; 32] {
    codec::sha256(&envelope.to_bytes().unwrap_or_default())
}
