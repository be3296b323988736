//! Personal-information impact assessments (PIPL Art. 55-56), kept by the
//! dataset's owner: for a dataset and some of its fields, the purpose, why
//! the processing is necessary, its risks and the measures against them,
//! and the officer who signed it. A grant of sensitive fields names the
//! assessment that covers them by its digest ([`AssessmentDigest`]), and
//! the owner node checks it before signing the grant ([`check_grant`]).
//!
//! The node signs each assessment with its key (a [`SignedEnvelope`] whose
//! payload starts with the tag `civmesh/assessment/v1`, so that its
//! signature can never be read as one over a command). Its digest is the
//! SHA-256 of the envelope's signed body: the canonical encoding of the
//! payload, the signer, the time and the nonce, which the signature covers.
//! It does not depend on the signature's bytes, so anyone holding the
//! envelope recomputes it from what was signed.
//!
//! [`AssessmentStore`] keeps them write-once in `NODE_DIR/assessments/`.
//! The node never deletes one: PIPL Art. 56 asks that they be kept at
//! least three years, and a grant may name one for as long as it lives.
//!
//! [`SignedEnvelope`]: civmesh_certs::SignedEnvelope

mod check;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use civmesh_certs::UnixMillis;
pub use civmesh_policy::deletion::AssessmentDigest;
use civmesh_policy::model::{DatasetId, FieldName, NAME_BYTES_MAX, SCHEMA_FIELDS_MAX};
use serde::{Deserialize, Serialize};

pub use check::{check_grant, ProtectionMissing};
pub use store::{AssessmentError, AssessmentStore, ASSESSMENTS_DIR, ASSESSMENT_FILE_BYTES_MAX};

/// The most assessments one node keeps.
pub const ASSESSMENTS_MAX: usize = 1_000;
/// The most fields one assessment covers (a dataset's fields at most).
pub const ASSESSMENT_FIELDS_MAX: usize = SCHEMA_FIELDS_MAX;
/// The longest statement of necessity, in bytes of UTF-8.
pub const NECESSITY_BYTES_MAX: usize = 4_096;
/// The longest statement of risks, in bytes of UTF-8.
pub const RISKS_BYTES_MAX: usize = 4_096;
/// The longest statement of measures, in bytes of UTF-8.
pub const MEASURES_BYTES_MAX: usize = 4_096;
/// The longest officer's name, in bytes of UTF-8.
pub const OFFICER_BYTES_MAX: usize = 128;

/// An impact assessment as the officer writes it (the node adds the time
/// when it signs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// The dataset it assesses.
    pub dataset: DatasetId,
    /// The fields it covers: a grant may release those of them that are
    /// sensitive.
    pub fields: BTreeSet<FieldName>,
    /// The purpose of processing, as the grants it covers name it (e.g.
    /// `street-inspection`).
    pub purpose: String,
    /// Why the processing is lawful, legitimate and necessary.
    pub necessity: String,
    /// The risks to the individuals' rights and interests.
    pub risks: String,
    /// The protective measures, and why they are adequate.
    pub measures: String,
    /// The officer who signed it, by name.
    pub officer: String,
}

/// Why an assessment cannot be kept as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssessmentInvalid {
    /// The dataset is empty, too long or has control characters.
    #[error("the dataset must be 1 to {NAME_BYTES_MAX} bytes, without control characters")]
    Dataset,
    /// No field, or more than a dataset has.
    #[error("name 1 to {ASSESSMENT_FIELDS_MAX} fields the assessment covers")]
    FieldCount,
    /// A field name is empty, too long or has control characters.
    #[error("each field must be 1 to {NAME_BYTES_MAX} bytes, without control characters")]
    Field,
    /// The purpose, a statement or the officer's name is empty, too long or
    /// has control characters (other than line breaks and tabs in
    /// statements).
    #[error("the {what} must be 1 to {bytes_max} bytes of text, without control characters")]
    Text {
        /// Which one.
        what: &'static str,
        /// Its bound.
        bytes_max: usize,
    },
}

impl Assessment {
    /// The assessment with its texts trimmed, if every part is within its
    /// bounds.
    pub fn checked(self) -> Result<Assessment, AssessmentInvalid> {
        let name =
            |text: &str| !text.is_empty() && text.len() <= NAME_BYTES_MAX && !text.contains(char::is_control);
        if !name(&self.dataset) {
            return Err(AssessmentInvalid::Dataset);
        }
        if self.fields.is_empty() || self.fields.len() > ASSESSMENT_FIELDS_MAX {
            return Err(AssessmentInvalid::FieldCount);
        }
        if !self.fields.iter().all(|field| name(field)) {
            return Err(AssessmentInvalid::Field);
        }
        Ok(Assessment {
            purpose: text(&self.purpose, "purpose", NAME_BYTES_MAX, |c| c.is_control())?,
            necessity: statement(&self.necessity, "necessity", NECESSITY_BYTES_MAX)?,
            risks: statement(&self.risks, "risks", RISKS_BYTES_MAX)?,
            measures: statement(&self.measures, "measures", MEASURES_BYTES_MAX)?,
            officer: text(&self.officer, "officer", OFFICER_BYTES_MAX, |c| c.is_control())?,
            ..self
        })
    }
}

/// A statement: trimmed, 1..=`bytes_max` bytes, line breaks and tabs only
/// among control characters.
fn statement(value: &str, what: &'static str, bytes_max: usize) -> Result<String, AssessmentInvalid> {
    text(value, what, bytes_max, |c| c.is_control() && c != '\n' && c != '\t')
}

/// `value` trimmed, if it is 1..=`bytes_max` bytes with no `refused`
/// character.
fn text(
    value: &str,
    what: &'static str,
    bytes_max: usize,
    refused: impl Fn(char) -> bool,
) -> Result<String, AssessmentInvalid> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.len() > bytes_max || trimmed.contains(refused) {
        return Err(AssessmentInvalid::Text { what, bytes_max });
    }
    Ok(trimmed.to_string())
}

/// An assessment as the node keeps it: its digest, when it was signed, and
/// the signed envelope for anyone who wants to check the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentRecord {
    /// The digest a grant names.
    pub digest: AssessmentDigest,
    /// When the node signed it.
    pub signed_at_ms: UnixMillis,
    /// What it says.
    pub assessment: Assessment,
    /// The signed envelope, base64 of its wire form.
    pub envelope: String,
}

/// One line of the list of assessments: what it covers, without its
/// statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentSummary {
    /// The digest a grant names.
    pub digest: AssessmentDigest,
    /// When the node signed it.
    pub signed_at_ms: UnixMillis,
    /// The dataset.
    pub dataset: DatasetId,
    /// The fields it covers.
    pub fields: BTreeSet<FieldName>,
    /// The purpose.
    pub purpose: String,
    /// Who signed it.
    pub officer: String,
}

impl From<&AssessmentRecord> for AssessmentSummary {
    fn from(record: &AssessmentRecord) -> Self {
        let assessment = &record.assessment;
        AssessmentSummary {
            digest: record.digest,
            signed_at_ms: record.signed_at_ms,
            dataset: assessment.dataset.clone(),
            fields: assessment.fields.clone(),
            purpose: assessment.purpose.clone(),
            officer: assessment.officer.clone(),
        }
    }
}

/// `text` as a digest if it is 64 lowercase hex digits, as this node
/// writes them.
pub fn parse_digest(text: &str) -> Option<AssessmentDigest> {
    let hex = text.len() == 64 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| civmesh_policy::hex_digest::from_hex(text)).flatten().map(AssessmentDigest)
}

/// `digest` as 64 lowercase hex digits.
pub fn digest_hex(digest: &AssessmentDigest) -> String {
    civmesh_policy::hex_digest::to_hex(&digest.0)
}
