//! Why an owner rejected a correction: one stable code from a fixed set.
//!
//! The code travels inside signed correction events and outcomes, so it is
//! serialized as its snake_case name in every format, the canonical binary
//! encoding included: a string on the wire, as it always was, and
//! signatures over it stay valid.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an owner rejected a correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CorrectionReasonCode {
    /// The owner's reviewer rejected it.
    RejectedByReviewer,
    /// The request is out of its own bounds.
    InvalidRequest,
    /// No such dataset.
    DatasetUnknown,
    /// The submitter is not an active member with a current certificate,
    /// or holds no usable grant on the dataset.
    DatasetNotVisible,
    /// A changed field is not in the schema.
    FieldUnknown,
    /// The change names the subject key field.
    SubjectKeyImmutable,
    /// No usable grant of the submitter includes a changed field.
    FieldNotVisible,
    /// The submitter's grants show a changed field only masked, or no one
    /// grant shows every changed field unmasked.
    FieldMasked,
    /// The record as it stands is outside the scope of every grant that
    /// shows the changed fields. The owner answers it as
    /// [`CorrectionReasonCode::RecordUnknown`], so it tells nothing of the
    /// record's existence.
    RecordOutOfScope,
    /// No such record.
    RecordUnknown,
    /// A new value does not fit its field's type.
    WrongType,
}

impl CorrectionReasonCode {
    /// Every code.
    pub const ALL: [CorrectionReasonCode; 11] = [
        CorrectionReasonCode::RejectedByReviewer,
        CorrectionReasonCode::InvalidRequest,
        CorrectionReasonCode::DatasetUnknown,
        CorrectionReasonCode::DatasetNotVisible,
        CorrectionReasonCode::FieldUnknown,
        CorrectionReasonCode::SubjectKeyImmutable,
        CorrectionReasonCode::FieldNotVisible,
        CorrectionReasonCode::FieldMasked,
        CorrectionReasonCode::RecordOutOfScope,
        CorrectionReasonCode::RecordUnknown,
        CorrectionReasonCode::WrongType,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CorrectionReasonCode::RejectedByReviewer => "rejected_by_reviewer",
            CorrectionReasonCode::InvalidRequest => "invalid_request",
            CorrectionReasonCode::DatasetUnknown => "dataset_unknown",
            CorrectionReasonCode::DatasetNotVisible => "dataset_not_visible",
            CorrectionReasonCode::FieldUnknown => "field_unknown",
            CorrectionReasonCode::SubjectKeyImmutable => "subject_key_immutable",
            CorrectionReasonCode::FieldNotVisible => "field_not_visible",
            CorrectionReasonCode::FieldMasked => "field_masked",
            CorrectionReasonCode::RecordOutOfScope => "record_out_of_scope",
            CorrectionReasonCode::RecordUnknown => "record_unknown",
            CorrectionReasonCode::WrongType => "wrong_type",
        }
    }

    /// Whether the rejection is an automatic one for the submitter's own
    /// mistake: it counts against the street, not the owner.
    pub fn is_submitter_mistake(self) -> bool {
        use CorrectionReasonCode::*;
        matches!(
            self,
            InvalidRequest
                | DatasetUnknown
                | DatasetNotVisible
                | FieldUnknown
                | FieldNotVisible
                | SubjectKeyImmutable
                | RecordUnknown
                | WrongType
        )
    }
}

impl std::fmt::Display for CorrectionReasonCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A name that is no [`CorrectionReasonCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a correction reason code")]
pub struct ReasonCodeUnknown(pub String);

impl std::str::FromStr for CorrectionReasonCode {
    type Err = ReasonCodeUnknown;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CorrectionReasonCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| ReasonCodeUnknown(text.to_string()))
    }
}

impl Serialize for CorrectionReasonCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CorrectionReasonCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An optional code as the name, or an empty string for none: use with
/// `#[serde(with = "crate::reason_code::or_empty")]`.
pub mod or_empty {
    use super::*;

    /// Serializes the code's name, or "".
    pub fn serialize<S: Serializer>(
        code: &Option<CorrectionReasonCode>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(code.map_or("", CorrectionReasonCode::as_str))
    }

    /// Deserializes a code's name, or "" as none.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<CorrectionReasonCode>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_snake_case() {
        for code in CorrectionReasonCode::ALL {
            assert_eq!(code.as_str().parse(), Ok(code));
            assert_eq!(serde_json::to_string(&code).ok(), Some(format!("\"{code}\"")));
            let snake = format!("{code:?}").chars().fold(String::new(), |mut name, letter| {
                if letter.is_uppercase() && !name.is_empty() {
                    name.push('_');
                }
                name.push(letter.to_ascii_lowercase());
                name
            });
            assert_eq!(code.as_str(), snake);
        }
        assert!("no_such_code".parse::<CorrectionReasonCode>().is_err());
    }

    #[test]
    fn the_canonical_encoding_is_the_name_as_a_string() {
        #[derive(Serialize)]
        struct Event {
            #[serde(with = "or_empty")]
            reason_code: Option<CorrectionReasonCode>,
        }
        let encode = civmesh_certs::codec::encode::<Event>;
        let as_text = civmesh_certs::codec::encode::<String>;
        for code in CorrectionReasonCode::ALL {
            assert_eq!(encode(&Event { reason_code: Some(code) }).ok(), as_text(&code.to_string()).ok());
        }
        assert_eq!(encode(&Event { reason_code: None }).ok(), as_text(&String::new()).ok());
    }
}
