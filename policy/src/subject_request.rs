//! Requests from the subject (PIPL Art. 44-47): a resident asks the
//! organisation that meets them (a street, a department's service window)
//! for access to, correction of, or deletion of their records at an owner.
//! The log keeps metadata only: the kind, the dataset, the subject's keyed
//! hash, the deadline, and the owner's answer. Each request is open until
//! answered; an answer after the deadline is counted late, per owner.

use civmesh_certs::{OrgId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::model::{DatasetId, SubjectKeyHash};

/// A request's id: 32 random bytes the intake node draws.
pub type SubjectRequestId = [u8; 32];

/// The shortest deadline a request may have after it is filed, in ms (a day).
pub const SUBJECT_REQUEST_DEADLINE_MS_MIN: u64 = DAY_MS;
/// The longest, in ms (60 days).
pub const SUBJECT_REQUEST_DEADLINE_MS_MAX: u64 = 60 * DAY_MS;
/// The deadline when the intake's config names none, in days (Art. 50's
/// practice: 15 days).
pub const SUBJECT_REQUEST_DEADLINE_DAYS_DEFAULT: u64 = 15;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// What the subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRequestKind {
    /// Who accessed their records (Art. 45): answered with the report.
    Access,
    /// A correction of their record (Art. 46): it enters the correction loop.
    Correction,
    /// Deletion of their record (Art. 47), where the law allows it.
    Deletion,
}

/// The payload of [`crate::Command::FileSubjectRequest`]: signed by the
/// intake node, logged by the dataset's owner once it found the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRequestSpec {
    /// Its id.
    #[serde(with = "crate::hex_digest")]
    pub id: SubjectRequestId,
    /// What is asked.
    pub kind: SubjectRequestKind,
    /// The dataset holding the subject's record.
    pub dataset: DatasetId,
    /// The subject, hashed under the owner's key for the intake's
    /// organisation (as its queries are).
    pub subject: SubjectKeyHash,
    /// By when the owner must answer.
    pub deadline_ms: UnixMillis,
}

/// How the owner answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRequestOutcome {
    /// Done: the report produced, the correction made, the record deleted.
    Done,
    /// Refused, with the legal reason (e.g. a retention duty, Art. 47).
    Refused {
        /// Why (1..=`REASON_BYTES_MAX` bytes).
        reason: String,
    },
}

/// An open request, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRequest {
    /// What was asked.
    pub spec: SubjectRequestSpec,
    /// The dataset's owner, who answers.
    pub owner: OrgId,
    /// The organisation that took the request.
    pub intake: OrgId,
    /// When it was filed (entry time).
    pub filed_at_ms: UnixMillis,
}

/// One owner's answered requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRequestCounts {
    /// Answered (done or refused).
    pub answered: u64,
    /// Of those, answered after their deadline.
    pub answered_late: u64,
    /// Of those, refused.
    pub refused: u64,
}
