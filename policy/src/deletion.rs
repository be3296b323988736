//! Retention and deletion (PIPL Art. 15, 19, 47): how long a grantee may
//! keep what it received, and the receipts its nodes log once they deleted
//! it. Receipts carry metadata only: counts, a commitment to the subjects,
//! never a record.

use civmesh_certs::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::model::{GrantId, SubjectKeyHash};

/// The shortest retention or deletion bound a grant may state, in ms.
pub const RETENTION_MS_MIN: u64 = 1_000;
/// The longest a grantee may keep received copies, in ms (ten years).
pub const RETENTION_KEEP_MS_MAX: u64 = 10 * 365 * DAY_MS;
/// The longest a holder may take to delete what is due, in ms (30 days).
pub const DELETION_WITHIN_MS_MAX: u64 = 30 * DAY_MS;
/// How long a holder has to delete copies of a grant that states no
/// retention (one without personal fields), once it ended, in ms.
pub const DELETION_WITHIN_MS_DEFAULT: u64 = DAY_MS;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How long a grantee's nodes may keep copies received under a grant, and
/// how long they then have to delete them. Required on grants of personal
/// fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// How long a copy may be kept after it was received (its release's
    /// entry time), in ms.
    pub keep_ms: u64,
    /// How long a holder then has to delete it and log the receipt, in ms;
    /// after that the deletion is overdue.
    pub delete_within_ms: u64,
}

impl Retention {
    /// Whether both bounds are within [`RETENTION_MS_MIN`] and their maxima.
    pub fn is_valid(&self) -> bool {
        (RETENTION_MS_MIN..=RETENTION_KEEP_MS_MAX).contains(&self.keep_ms)
            && (RETENTION_MS_MIN..=DELETION_WITHIN_MS_MAX).contains(&self.delete_within_ms)
    }
}

/// The SHA-256 of a personal-information impact assessment (Art. 55-56)
/// that the owner keeps: a grant of sensitive fields names one. Hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssessmentDigest(#[serde(with = "crate::hex_digest")] pub [u8; 32]);

impl std::fmt::Debug for AssessmentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssessmentDigest({})", crate::hex_digest::to_hex(&self.0))
    }
}

/// Why a holder deleted copies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionCause {
    /// The retention ended for every copy received before this time.
    RetentionEnded {
        /// Copies released before this entry time are deleted.
        received_before_ms: UnixMillis,
    },
    /// The grant was revoked or its window ended: every copy is deleted.
    GrantEnded,
    /// The subject withdrew the consent the copies relied on.
    ConsentWithdrawn {
        /// The subject (its keyed hash, as in the consent).
        subject: SubjectKeyHash,
    },
}

/// The payload of [`crate::Command::ConfirmDeletion`]: a holder node's
/// statement that it deleted, physically, the copies `cause` made due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionReceipt {
    /// The grant the copies were received under.
    pub grant: GrantId,
    /// Why they were deleted.
    pub cause: DeletionCause,
    /// How many records were deleted (0 when the node kept none).
    pub records_deleted: u64,
    /// A [`SubjectsCommitment`] to the deleted subjects' keyed hashes, in
    /// the order the holder deleted them: one the holder can open to an
    /// auditor, which names nobody in the log.
    #[serde(with = "crate::hex_digest")]
    pub subjects_commitment: [u8; 32],
    /// When the deletion and its compaction finished, by the holder's clock.
    pub deleted_at_ms: UnixMillis,
    /// After a retention deletion, when the earliest copy the holder still
    /// keeps under the grant was received (at or after the cutoff); `None`
    /// when it keeps none. The next retention falls due from it, since the
    /// log does not keep every release's time. `None` for other causes.
    pub earliest_held_ms: Option<UnixMillis>,
}

/// The commitment a receipt carries to the subjects deleted: a hash chain,
/// `c0 = SHA-256(label)`, `c(i) = SHA-256(label, c(i-1), subject i)`. A
/// chain rather than one hash over all, so a holder deleting millions of
/// copies in bounded batches keeps 32 bytes between them, across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectsCommitment(#[serde(with = "crate::hex_digest")] pub [u8; 32]);

/// The label that starts every step of a [`SubjectsCommitment`].
pub const SUBJECTS_COMMITMENT_LABEL: &[u8] = b"civmesh/deleted-subjects/v1\0";

impl Default for SubjectsCommitment {
    fn default() -> Self {
        use sha2::Digest;
        SubjectsCommitment(sha2::Sha256::digest(SUBJECTS_COMMITMENT_LABEL).into())
    }
}

impl SubjectsCommitment {
    /// The chain moved on by one deleted subject.
    pub fn add(&mut self, subject: &[u8; 32]) {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(SUBJECTS_COMMITMENT_LABEL);
        hasher.update(self.0);
        hasher.update(subject);
        self.0 = hasher.finalize().into();
    }
}

/// What one holder node holds under one grant, as the log knows it: when
/// it was released records, and which deletions it confirmed. The state
/// keeps one per (grant, holder node), so it grows with grants, not with
/// the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The entry time of the latest release to the node.
    pub last_release_ms: UnixMillis,
    /// The earliest time from which the node may hold copies it has not
    /// yet confirmed deleted for retention; `None` once it holds none. After
    /// a retention receipt it is the receipt's `earliest_held_ms` (never
    /// earlier than before): the log does not keep every release's time.
    pub retained_since_ms: Option<UnixMillis>,
    /// The latest retention receipt's `received_before_ms`.
    pub deleted_before_ms: UnixMillis,
    /// When the node confirmed deleting everything after the grant ended.
    pub ended_deleted_at_ms: Option<UnixMillis>,
    /// Subjects whose consent was withdrawn, with when their deletion is
    /// due; each leaves with its receipt.
    pub withdrawals_due: std::collections::BTreeMap<SubjectKeyHash, UnixMillis>,
    /// How many receipts the node logged for the grant.
    pub receipts: u64,
}

/// A deletion that is due and has no receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueDeletion {
    /// The grant.
    pub grant: GrantId,
    /// The holder node.
    pub holder: civmesh_certs::NodeId,
    /// What is due.
    pub cause: DeletionCause,
    /// When it was due (entry time).
    pub due_at_ms: UnixMillis,
}
