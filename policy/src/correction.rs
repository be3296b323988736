//! Corrections: a street's signed request to change a record another
//! organisation owns, and the lifecycle the policy log keeps of it.
//!
//! The request itself (with the new values, which may be personal data)
//! travels only between the submitter and the owner. The log keeps each
//! stage as metadata and the SHA-256 of the signed request, so every replica
//! can compute the same turnaround and acceptance figures without ever
//! holding the changed data.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{NodeId, OrgId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::model::{DatasetId, FieldName, FieldValue, SubjectKeyHash};
pub use crate::reason_code::{CorrectionReasonCode, ReasonCodeUnknown};

/// A correction's id: the SHA-256 digest of the submitter's signed request.
pub type CorrectionId = [u8; 32];

/// The most fields one correction may change.
pub const CORRECTION_CHANGES_MAX: usize = 64;
/// The most attachment hashes one correction may carry.
pub const CORRECTION_ATTACHMENTS_MAX: usize = 32;
/// The longest reason, evidence text or operator name, in bytes.
pub const CORRECTION_TEXT_BYTES_MAX: usize = 4 * 1024;

/// What a street signs and sends to the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionRequest {
    /// The dataset.
    pub dataset: DatasetId,
    /// The record key (plain: it travels only to the owner).
    pub record_key: String,
    /// The version the submitter saw.
    pub base_version: u64,
    /// The new value of each changed field.
    pub changes: BTreeMap<FieldName, FieldValue>,
    /// Why the record is wrong.
    pub reason: String,
    /// What the submitter saw, in words.
    pub evidence_text: String,
    /// SHA-256 of each attachment (photos, scans); the bytes travel to the
    /// owner beside the request and are checked against these.
    #[serde(with = "crate::hex_digest::many")]
    pub attachment_sha256: Vec<[u8; 32]>,
    /// The person who submitted it.
    pub operator: String,
}

impl CorrectionRequest {
    /// Checks the request's own bounds (not the schema, which the owner
    /// checks against its catalog).
    pub fn check_bounds(&self) -> Result<(), CorrectionBoundsError> {
        if self.changes.is_empty() || self.changes.len() > CORRECTION_CHANGES_MAX {
            return Err(CorrectionBoundsError::ChangeCount);
        }
        if self.attachment_sha256.len() > CORRECTION_ATTACHMENTS_MAX {
            return Err(CorrectionBoundsError::TooManyAttachments);
        }
        for (what, text) in
            [("reason", &self.reason), ("operator", &self.operator), ("record key", &self.record_key)]
        {
            if text.trim().is_empty() || text.len() > CORRECTION_TEXT_BYTES_MAX {
                return Err(CorrectionBoundsError::TextLength(what));
            }
        }
        if self.evidence_text.len() > CORRECTION_TEXT_BYTES_MAX {
            return Err(CorrectionBoundsError::EvidenceTooLong);
        }
        Ok(())
    }
}

/// Why a correction request is out of its own bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorrectionBoundsError {
    /// Too few or too many changed fields.
    #[error("a correction changes 1..={CORRECTION_CHANGES_MAX} fields")]
    ChangeCount,
    /// Too many attachments.
    #[error("at most {CORRECTION_ATTACHMENTS_MAX} attachments")]
    TooManyAttachments,
    /// The named text is empty or too long.
    #[error("the {0} must be 1..={CORRECTION_TEXT_BYTES_MAX} bytes")]
    TextLength(&'static str),
    /// The evidence text is too long.
    #[error("the evidence text is over {CORRECTION_TEXT_BYTES_MAX} bytes")]
    EvidenceTooLong,
}

/// The stages of a correction's life, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionStage {
    /// The submitter signed it and put it in its outbox.
    Submitted,
    /// The owner received it and keeps it in its inbox.
    Delivered,
    /// The owner (an operator or an auto-accept rule) accepted it.
    Accepted,
    /// The owner rejected it, with a reason.
    Rejected,
    /// The record changed after the base version.
    Conflict,
    /// The record has a new version whose provenance is the correction.
    Applied,
    /// The submitter received the owner's signed outcome.
    OutcomeDelivered,
}

impl CorrectionStage {
    /// Whether the owner (rather than the submitter) logs this stage.
    pub fn logged_by_owner(self) -> bool {
        !matches!(self, CorrectionStage::Submitted | CorrectionStage::OutcomeDelivered)
    }

    /// The stages that may directly precede this one.
    fn may_follow(self) -> &'static [CorrectionStage] {
        use CorrectionStage::*;
        match self {
            Submitted => &[],
            Delivered => &[Submitted],
            Accepted | Rejected | Conflict => &[Delivered],
            Applied => &[Accepted],
            OutcomeDelivered => &[Rejected, Conflict, Applied],
        }
    }

    /// Whether this stage is the owner's outcome (applied, rejected,
    /// conflict): a leaf of the audit tree.
    pub fn is_owner_outcome(self) -> bool {
        matches!(self, CorrectionStage::Applied | CorrectionStage::Rejected | CorrectionStage::Conflict)
    }

    /// Whether the owner logs this stage as its decision (accepted,
    /// rejected, conflict, applied): the stages that carry the checked
    /// record version's write time.
    pub fn is_owner_decision(self) -> bool {
        self == CorrectionStage::Accepted || self.is_owner_outcome()
    }
}

/// The payload of [`crate::Command::RecordCorrectionEvent`]: one stage of
/// one correction, as metadata. Never the changed values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionEvent {
    /// The correction.
    #[serde(with = "crate::hex_digest")]
    pub correction: CorrectionId,
    /// The dataset.
    pub dataset: DatasetId,
    /// The record's subject, as a keyed hash.
    pub subject: SubjectKeyHash,
    /// The node that signed the request.
    pub submitter: NodeId,
    /// The stage reached.
    pub stage: CorrectionStage,
    /// SHA-256 of the signed request (equal to the id; checked).
    #[serde(with = "crate::hex_digest")]
    pub payload_sha256: [u8; 32],
    /// The fields the correction changes (names only).
    pub fields: BTreeSet<FieldName>,
    /// For `Rejected`: why. Otherwise `None` (an empty string on the wire).
    #[serde(with = "crate::reason_code::or_empty")]
    pub reason_code: Option<CorrectionReasonCode>,
    /// For `Applied`: the record's new version; for `Conflict`: the current one.
    pub version: Option<u64>,
    /// The person accountable for this stage: the submitting operator for
    /// `Submitted`, the reviewer for an `Accepted` or `Rejected` that a
    /// person decided; empty for a step taken automatically (delivery, an
    /// auto-accept rule, a rejection for the submitter's own mistake). At
    /// most [`CORRECTION_TEXT_BYTES_MAX`] bytes.
    pub operator: String,
    /// At the owner's decision stages (`Accepted`, `Rejected`, `Conflict`,
    /// `Applied`): when the record version the correction was checked
    /// against was written in the owner's record store, in Unix ms (for
    /// `Applied`, the version the correction was written on; for
    /// `Conflict`, the current version it met). `None` at other stages, or
    /// when the record is unknown. Not after the entry time (beyond
    /// [`crate::state::COMMAND_SKEW_MS_MAX`]).
    pub record_written_at_ms: Option<UnixMillis>,
}

/// What the log knows of one correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionTrack {
    /// The dataset.
    pub dataset: DatasetId,
    /// The dataset's owner when it was submitted.
    pub owner: OrgId,
    /// The submitter's organisation.
    pub submitter_org: OrgId,
    /// The submitting node.
    pub submitter: NodeId,
    /// The subject, as a keyed hash.
    pub subject: SubjectKeyHash,
    /// The fields changed.
    pub fields: BTreeSet<FieldName>,
    /// Each stage reached, with its log entry time.
    pub stages: Vec<(CorrectionStage, UnixMillis)>,
    /// Why it was rejected, if it was (an empty string on the wire if not).
    #[serde(with = "crate::reason_code::or_empty")]
    pub reason_code: Option<CorrectionReasonCode>,
    /// The new version, once applied.
    pub applied_version: Option<u64>,
    /// When the record version the owner checked the correction against
    /// was written, in Unix ms, from its decision events (see
    /// [`CorrectionEvent::record_written_at_ms`]).
    pub record_written_at_ms: Option<UnixMillis>,
}

impl CorrectionTrack {
    /// The latest stage reached.
    pub fn stage(&self) -> CorrectionStage {
        self.stages.last().map_or(CorrectionStage::Submitted, |(stage, _)| *stage)
    }

    /// When a stage was reached.
    pub fn reached_at(&self, stage: CorrectionStage) -> Option<UnixMillis> {
        self.stages.iter().find(|(reached, _)| *reached == stage).map(|(_, at)| *at)
    }

    /// The outcome the owner decided: `Applied`, `Rejected` or `Conflict`.
    pub fn decision(&self) -> Option<CorrectionStage> {
        self.stages.iter().rev().map(|(stage, _)| *stage).find(|stage| {
            matches!(stage, CorrectionStage::Applied | CorrectionStage::Rejected | CorrectionStage::Conflict)
        })
    }

    /// Whether `next` may follow the stages so far.
    pub fn allows(&self, next: CorrectionStage) -> bool {
        next.may_follow().contains(&self.stage())
    }
}

/// An owner's standing rule: corrections from `submitter` to `dataset`
/// that change only fields in `fields` are accepted without review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAcceptRule {
    /// The dataset.
    pub dataset: DatasetId,
    /// The submitting organisation.
    pub submitter: OrgId,
    /// The fields that may change without review.
    pub fields: BTreeSet<FieldName>,
}

/// Per owner and dataset: what `civmesh correction stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrectionStats {
    /// The owning organisation.
    pub owner: String,
    /// The dataset.
    pub dataset: DatasetId,
    /// How many corrections are in each stage now.
    pub by_stage: BTreeMap<CorrectionStage, u64>,
    /// Median from submitted to applied, in ms: the upper bound of its
    /// histogram bucket, at most an eighth above the true value.
    pub turnaround_ms_p50: Option<u64>,
    /// 90th percentile from submitted to applied, in ms, bucketed alike.
    pub turnaround_ms_p90: Option<u64>,
    /// Applied out of applied and rejected (conflicts are neither).
    pub acceptance_rate: Option<f64>,
}

/// The nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], percent: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let cases: [(&[u64], usize, Option<u64>); 5] = [
            (&[], 50, None),
            (&[7], 90, Some(7)),
            (&[1, 2, 3, 4], 50, Some(2)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, Some(9)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90, Some(10)),
        ];
        for (values, percent, expected) in cases {
            assert_eq!(percentile(values, percent), expected, "{values:?} p{percent}");
        }
    }

    fn track(stages: &[CorrectionStage]) -> CorrectionTrack {
        CorrectionTrack {
            dataset: "d".into(),
            owner: OrgId::new("dept/x").unwrap(),
            submitter_org: OrgId::new("street/y").unwrap(),
            submitter: NodeId([1; 32]),
            subject: SubjectKeyHash([0; 32]),
            fields: BTreeSet::new(),
            stages: stages.iter().map(|stage| (*stage, 0)).collect(),
            reason_code: None,
            applied_version: None,
            record_written_at_ms: None,
        }
    }

    #[test]
    fn the_acceptance_rate_counts_applied_against_rejected_and_is_none_before_either() {
        use CorrectionStage::*;
        let applied = [Submitted, Delivered, Accepted, Applied];
        let rejected = [Submitted, Delivered, Rejected];
        let cases: [(&[&[CorrectionStage]], Option<f64>); 4] = [
            (&[&[Submitted], &[Submitted, Delivered, Conflict]], None),
            (&[&applied], Some(1.0)),
            (&[&rejected], Some(0.0)),
            (&[&applied, &rejected, &rejected, &[Submitted]], Some(1.0 / 3.0)),
        ];
        for (stages, expected) in cases {
            let mut tally = crate::correction_tally::CorrectionTally::default();
            stages.iter().for_each(|stages| tally.add(&track(stages)));
            let (owner, dataset) = (OrgId::new("dept/x").unwrap(), DatasetId::from("d"));
            assert_eq!(tally.stats(&owner, &dataset).acceptance_rate, expected, "{stages:?}");
        }
    }

    #[test]
    fn stages_follow_their_order() {
        use CorrectionStage::*;
        let allowed = [
            (vec![Submitted], Delivered),
            (vec![Submitted, Delivered], Accepted),
            (vec![Submitted, Delivered], Conflict),
            (vec![Submitted, Delivered, Accepted], Applied),
            (vec![Submitted, Delivered, Rejected], OutcomeDelivered),
        ];
        for (stages, next) in allowed {
            assert!(track(&stages).allows(next), "{stages:?} then {next:?}");
        }
        let refused = [
            (vec![Submitted], Applied),
            (vec![Submitted, Delivered], Delivered),
            (vec![Submitted, Delivered, Accepted], Rejected),
            (vec![Submitted, Delivered, Accepted, Applied], Applied),
            (vec![Submitted, Delivered, Accepted, Applied, OutcomeDelivered], OutcomeDelivered),
        ];
        for (stages, next) in refused {
            assert!(!track(&stages).allows(next), "{stages:?} then {next:?}");
        }
    }
}
