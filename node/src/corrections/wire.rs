//! What travels on `/civmesh/correction/1`: the messages, their
//! acknowledgement and the owner's signed outcome.

use civmesh_certs::NodeId;
use civmesh_certs::{SignedEnvelope, UnixMillis};
use civmesh_policy::correction::CorrectionId;
use serde::{Deserialize, Serialize};

use crate::corrections::attachments::AttachmentChunk;

/// The largest message on the correction protocol, in bytes.
pub const CORRECTION_MESSAGE_BYTES_MAX: usize = 256 * 1024;

/// Every message on `/civmesh/correction/1`.
#[derive(Debug, Serialize, Deserialize)]
pub enum CorrectionMessage {
    /// A signed [`CorrectionRequest`], to the owner.
    Deliver(Vec<u8>),
    /// A signed [`CorrectionOutcome`], to the submitter.
    Outcome(Vec<u8>),
    /// One chunk of an attachment, to the owner, after the request.
    Attachment(AttachmentChunk),
}

/// The answer to a [`CorrectionMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CorrectionAck {
    /// Kept durably (or kept before: a duplicate).
    Stored,
    /// Not kept, with why. The sender may try again later.
    Refused(String),
}

/// What the owner decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The record has a new version.
    Applied {
        /// The new version.
        version: u64,
    },
    /// Not applied.
    Rejected {
        /// A stable code.
        reason_code: civmesh_policy::CorrectionReasonCode,
        /// In words.
        reason: String,
    },
    /// The record changed after the base version; resubmit on `current_version`.
    Conflict {
        /// The version now.
        current_version: u64,
    },
}

/// The owner's signed answer to a correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionOutcome {
    /// The correction.
    #[serde(with = "civmesh_policy::hex_digest")]
    pub correction: CorrectionId,
    /// The dataset.
    pub dataset: String,
    /// The decision.
    pub status: OutcomeStatus,
    /// When it was decided.
    pub decided_at_ms: UnixMillis,
}

/// Decodes a signed `what` from `peer` and checks that `peer` signed it.
pub(super) fn open_from<T: serde::de::DeserializeOwned + Serialize>(
    peer: NodeId,
    bytes: &[u8],
    what: &str,
) -> Result<(SignedEnvelope<T>, civmesh_certs::VerifiedEnvelope<T>), CorrectionAck> {
    let envelope = SignedEnvelope::<T>::from_bytes(bytes)
        .map_err(|error| CorrectionAck::Refused(format!("malformed {what}: {error}")))?;
    match envelope.verify_signature() {
        Ok(verified) if verified.signer == peer => Ok((envelope, verified)),
        Ok(_) => Err(CorrectionAck::Refused(format!("the {what} is signed by another node"))),
        Err(error) => Err(CorrectionAck::Refused(format!("the {what}'s signature: {error}"))),
    }
}
