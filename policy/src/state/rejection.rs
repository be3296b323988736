//! Why a command was rejected: the stable codes, and the checks of plain
//! values every domain shares.

use serde::{Deserialize, Serialize};

/// Why a command was rejected. The code is stable; the detail is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct Rejection {
    /// What kind of failure.
    pub code: RejectionCode,
    /// What exactly, for an operator.
    pub detail: String,
}

/// The stable reason codes of a rejected command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// The envelope is malformed or its signature does not verify.
    SignatureInvalid,
    /// The command's timestamp is too far ahead of the entry time.
    FutureDated,
    /// The command's timestamp is too far behind the entry time.
    Stale,
    /// The same signed command was applied before.
    Replayed,
    /// The signer is not a member (and not the CA where the CA may sign).
    SignerUnknown,
    /// The signer was revoked.
    SignerRevoked,
    /// The signer may not issue this command.
    NotAuthorised,
    /// Genesis was sent to a log that has one, or another command to one
    /// that has none.
    GenesisOrder,
    /// A certificate failed verification.
    CertificateInvalid,
    /// The node is already a member.
    AlreadyMember,
    /// No such member.
    MemberUnknown,
    /// No such dataset.
    DatasetUnknown,
    /// A field is not in the dataset's schema.
    FieldUnknown,
    /// No such grant.
    GrantUnknown,
    /// The grant is already revoked.
    GrantAlreadyRevoked,
    /// No such demand.
    DemandUnknown,
    /// No such negative-list entry.
    NegativeListEntryUnknown,
    /// A field is on the negative list and cannot be granted.
    NegativeListed,
    /// The dataset is not shared and cannot be granted.
    DatasetNotShared,
    /// A value is malformed, empty, too long or out of range.
    InvalidArgument,
    /// The replay cache is full of commands still in the window, or the
    /// signer has used up its own share of it.
    Overloaded,
    /// A logged permit is not justified by the policy state.
    PermitNotJustified,
    /// No correction with this id was submitted.
    CorrectionUnknown,
    /// A correction with this id was submitted before.
    CorrectionDuplicate,
    /// The stage does not follow the correction's current stage (it may
    /// have been logged already).
    CorrectionStageOutOfOrder,
    /// No such auto-accept rule.
    AutoAcceptRuleUnknown,
    /// The signer already cosigned this checkpoint.
    CheckpointDuplicate,
    /// No longer produced: several checkpoints may be open at once, and
    /// each signer's latest cosignature counts for one of them. Kept so
    /// the codes stay stable.
    CheckpointConflict,
    /// The entry time is earlier than one already applied: the log's time
    /// never goes back.
    EntryTimeWentBack,
    /// The signer's (or, in a logged permit, the requester's) certificate
    /// expired at or before the entry time.
    SignerCertificateExpired,
    /// An access record's decision time is more than `COMMAND_SKEW_MS_MAX`
    /// from the entry time.
    DecisionTimeOutOfWindow,
    /// A correction's submitter holds no usable grant on the dataset that
    /// shows it every field the correction changes, unmasked.
    CorrectionNotGranted,
    /// A grant of personal fields states no retention (Art. 19, 47), or
    /// states one out of bounds.
    RetentionMissing,
    /// A grant of sensitive fields names no impact assessment (Art. 55).
    AssessmentMissing,
    /// A deletion receipt's signer is not a node that was released records
    /// under the grant.
    DeletionNotHolder,
    /// A deletion receipt for a deletion that is not due: the grant has
    /// not ended, states no retention, or no withdrawn consent awaits it.
    DeletionNotDue,
    /// A deletion receipt for copies already confirmed deleted.
    DeletionDuplicate,
    /// No open subject request with this id.
    SubjectRequestUnknown,
    /// A subject request with this id is open already.
    SubjectRequestDuplicate,
}

pub(super) fn reject(code: RejectionCode, detail: impl Into<String>) -> Rejection {
    Rejection { code, detail: detail.into() }
}

/// Rejects empty text, or text over `bytes_max` bytes.
pub(super) fn check_text(what: &str, text: &str, bytes_max: usize) -> Result<(), Rejection> {
    if text.trim().is_empty() {
        return Err(reject(RejectionCode::InvalidArgument, format!("{what} is empty")));
    }
    if text.len() > bytes_max {
        return Err(reject(
            RejectionCode::InvalidArgument,
            format!("{what} is {} bytes, over {bytes_max}", text.len()),
        ));
    }
    Ok(())
}
