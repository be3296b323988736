//! The things the policy log is about: members, datasets and their schemas,
//! the demand and negative lists, grants, consents, and record values.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{NodeId, OrgId, Role, UnixMillis};
use serde::{Deserialize, Serialize};

/// A dataset's id, `owner-name/dataset-name`, e.g.
/// `market-supervision/enterprise-registry`.
pub type DatasetId = String;
/// A field's name within a dataset's schema.
pub type FieldName = String;
/// A purpose of processing, e.g. `elderly-care-visits` (PIPL Art. 6: specific
/// and explicit).
pub type Purpose = String;
/// A grant's id, assigned by the policy log in order of issue.
pub type GrantId = u64;
/// A demand's id, assigned by the policy log in order of filing.
pub type DemandId = u64;

/// The longest id, name or purpose accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// The most fields a dataset schema may have.
pub const SCHEMA_FIELDS_MAX: usize = 256;
/// The most scope fields (indexed text fields) one dataset declares.
pub const SCOPE_FIELDS_MAX: usize = 8;
/// The longest free-text reason accepted, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;

/// A member node of the federation, admitted with a CA-issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's key (its PeerId).
    pub node_id: NodeId,
    /// Its organisation.
    pub org: OrgId,
    /// Its role.
    pub role: Role,
    /// The certificate it was admitted with (DER).
    pub certificate_der: Vec<u8>,
    /// The certificate's serial number.
    pub certificate_serial: Vec<u8>,
    /// When the certificate expires.
    pub certificate_not_after_ms: UnixMillis,
    /// When it was admitted (entry time).
    pub admitted_at_ms: UnixMillis,
    /// Set once the member is revoked; a revoked member never returns.
    pub revoked: Option<Revocation>,
}

/// Why and when a member or grant was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When (entry time).
    pub at_ms: UnixMillis,
    /// Who revoked it.
    pub by: NodeId,
    /// The operator's reason.
    pub reason: String,
}

/// How a field may be shared, by PIPL class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldClass {
    /// Published information, shareable with any member.
    Public,
    /// Internal government information; needs a grant.
    Internal,
    /// Personal information (PIPL Art. 4); needs a grant.
    Personal,
    /// Sensitive personal information (PIPL Art. 28); needs a grant, and on a
    /// consent basis a separate consent (Art. 29).
    Sensitive(SensitiveCategory),
}

impl FieldClass {
    /// Personal information (Art. 4), sensitive personal information included.
    pub fn is_personal(self) -> bool {
        matches!(self, FieldClass::Personal | FieldClass::Sensitive(_))
    }

    /// Sensitive personal information (Art. 28).
    pub fn is_sensitive(self) -> bool {
        matches!(self, FieldClass::Sensitive(_))
    }
}

/// The categories of sensitive personal information in PIPL Art. 28.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensitiveCategory {
    /// Biometric identification.
    Biometrics,
    /// Religious belief.
    Religion,
    /// Specific identity (e.g. disability status, living alone in old age).
    SpecificIdentity,
    /// Medical and health.
    MedicalHealth,
    /// Financial accounts.
    FinancialAccount,
    /// Whereabouts and tracks.
    Whereabouts,
    /// Personal information of minors under 14.
    Minor,
}

/// A field's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// UTF-8 text.
    Text,
    /// A signed 64-bit integer.
    Integer,
    /// true or false.
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
}

/// One field of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The field's name.
    pub name: FieldName,
    /// Its type.
    pub field_type: FieldType,
    /// Its class.
    pub class: FieldClass,
}

/// A dataset's sharing category in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingCategory {
    /// Public fields go to any member without a grant (无条件共享).
    Unconditional,
    /// Only with a grant (有条件共享).
    Conditional,
    /// Never shared (不予共享).
    NotShared,
}

/// A dataset in the catalog, as its owner published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Its id.
    pub id: DatasetId,
    /// The organisation that owns it and alone writes it.
    pub owner: OrgId,
    /// A human title.
    pub title: String,
    /// The field holding the subject key (citizen id or credit code).
    pub subject_key_field: FieldName,
    /// Its sharing category.
    pub sharing: SharingCategory,
    /// Its fields.
    pub fields: Vec<FieldSpec>,
    /// The text fields grants may scope by (street, committee, grid) and
    /// listings may filter on: the owner keeps a secondary index on each.
    pub scope_fields: Vec<FieldName>,
    /// Incremented each time the owner republishes it.
    pub version: u64,
}

impl Dataset {
    /// The schema entry for `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Whether `name` is a sensitive field of this dataset (Art. 28).
    pub fn is_sensitive(&self, name: &str) -> bool {
        self.field(name).is_some_and(|field| field.class.is_sensitive())
    }
}

/// A demand-list entry: what a requester says it needs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    /// Its id.
    pub id: DemandId,
    /// Who needs it.
    pub requester: OrgId,
    /// Which dataset (it may not exist yet: a demand with no producer).
    pub dataset: DatasetId,
    /// Which fields.
    pub fields: BTreeSet<FieldName>,
    /// For what.
    pub purpose: Purpose,
    /// Under which legal basis.
    pub legal_basis: LegalBasis,
    /// When it was filed (entry time).
    pub filed_at_ms: UnixMillis,
    /// Why, if the requester said.
    pub reason: Option<String>,
    /// Until when the data is needed, if the requester said.
    pub until_ms: Option<UnixMillis>,
    /// Set once the owner refused it: when, by whom and why.
    pub refused: Option<Revocation>,
}

/// A negative-list entry: a dataset, or one field of it, never shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeListEntry {
    /// The dataset.
    pub dataset: DatasetId,
    /// The field, or `None` for the whole dataset.
    pub field: Option<FieldName>,
    /// Why it is never shared.
    pub reason: String,
}

/// The legal bases for processing in PIPL Art. 13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// Art. 13(1): the individual's consent.
    Consent,
    /// Art. 13(2): necessary for a contract or for human-resources management.
    Contract,
    /// Art. 13(3): necessary to perform a statutory duty or obligation.
    StatutoryDuty,
    /// Art. 13(4): necessary for a public-health emergency or to protect life,
    /// health and property in an emergency.
    PublicHealthEmergency,
    /// Art. 13(5): news reporting and supervision in the public interest.
    PublicInterestReporting,
    /// Art. 13(6): information the individual disclosed or lawfully disclosed.
    LawfullyDisclosed,
    /// Art. 13(7): other circumstances provided by laws and regulations.
    OtherLaw,
}

/// A scope condition: the record's `field` must equal one of `allowed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeCondition {
    /// The field tested.
    pub field: FieldName,
    /// The values that put a record in scope.
    pub allowed: BTreeSet<FieldValue>,
}

/// How a released field is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskingRule {
    /// Keep the last `n` characters, replace the rest with `*`.
    KeepLast(u8),
    /// Keep the first `n` characters, replace the rest with `*`.
    KeepFirst(u8),
    /// Replace the whole value with `***`.
    Redact,
}

impl MaskingRule {
    /// The masked form of `value`. Non-text values become text when masked.
    pub fn apply(&self, value: &FieldValue) -> FieldValue {
        if *value == FieldValue::Null {
            return FieldValue::Null;
        }
        let text = value.to_string();
        let characters: Vec<char> = text.chars().collect();
        let masked: String = match *self {
            MaskingRule::Redact => "***".to_string(),
            MaskingRule::KeepLast(keep) => {
                let keep_from = characters.len().saturating_sub(usize::from(keep));
                characters.iter().enumerate().map(|(i, c)| if i >= keep_from { *c } else { '*' }).collect()
            }
            MaskingRule::KeepFirst(keep) => characters
                .iter()
                .enumerate()
                .map(|(i, c)| if i < usize::from(keep) { *c } else { '*' })
                .collect(),
        };
        FieldValue::Text(masked)
    }
}

/// A grant: the owner's permission for a grantee to read fields of a
/// dataset, for one purpose, on one legal basis, within a scope and a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its id.
    pub id: GrantId,
    /// The dataset.
    pub dataset: DatasetId,
    /// The owner organisation that issued it.
    pub grantor: OrgId,
    /// Who may read.
    pub grantee: OrgId,
    /// Which fields (minimum necessary, Art. 6).
    pub fields: BTreeSet<FieldName>,
    /// For what.
    pub purpose: Purpose,
    /// Under which legal basis.
    pub legal_basis: LegalBasis,
    /// Records outside these conditions are withheld.
    pub scope: Vec<ScopeCondition>,
    /// Start of validity.
    pub valid_from_ms: UnixMillis,
    /// End of validity.
    pub valid_until_ms: UnixMillis,
    /// Masking per field.
    pub masking: BTreeMap<FieldName, MaskingRule>,
    /// Whether each subject's consent is needed (always, on a consent basis).
    pub consent_required: bool,
    /// The demand it answers, if any.
    pub demand: Option<DemandId>,
    /// How long received copies may be kept (required with personal fields).
    pub retention: Option<crate::deletion::Retention>,
    /// The impact assessment it relies on (required with sensitive fields).
    pub assessment: Option<crate::deletion::AssessmentDigest>,
    /// When it was issued (entry time).
    pub issued_at_ms: UnixMillis,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
}

impl Grant {
    /// Whether a subject's consent is needed for each record.
    pub fn needs_consent(&self) -> bool {
        self.consent_required || self.legal_basis == LegalBasis::Consent
    }

    /// The one rule for whether `holder_org` may rely on this grant for
    /// `dataset` at `at_ms`: the grant is for that dataset and that
    /// organisation, unrevoked, inside its window, and (when `purpose` is
    /// given) for that purpose. `None` accepts any purpose: a correction
    /// serves no purpose of processing, only the grant's visibility counts.
    ///
    /// [`crate::decide`], the apply-time re-justification of access records
    /// and [`crate::PolicyState::check_correction`] all call it; the
    /// reasons are those of a denial, checked in this order.
    pub fn check_usable(
        &self,
        holder_org: &OrgId,
        dataset: &str,
        purpose: Option<&str>,
        at_ms: UnixMillis,
    ) -> Result<(), crate::decide::ReasonCode> {
        use crate::decide::ReasonCode;
        if self.dataset != dataset {
            return Err(ReasonCode::GrantDatasetMismatch);
        }
        if self.grantee != *holder_org {
            return Err(ReasonCode::GrantNotForRequester);
        }
        if self.revoked.is_some() {
            return Err(ReasonCode::GrantRevoked);
        }
        if at_ms < self.valid_from_ms {
            return Err(ReasonCode::GrantNotYetValid);
        }
        if at_ms >= self.valid_until_ms {
            return Err(ReasonCode::GrantExpired);
        }
        if purpose.is_some_and(|purpose| purpose != self.purpose) {
            return Err(ReasonCode::PurposeMismatch);
        }
        Ok(())
    }

    /// Whether the grant shows `field` as stored: granted and not masked.
    pub fn shows_unmasked(&self, field: &str) -> bool {
        self.fields.contains(field) && !self.masking.contains_key(field)
    }

    /// The fields its scope conditions test.
    pub fn scope_fields(&self) -> impl Iterator<Item = &FieldName> {
        self.scope.iter().map(|condition| &condition.field)
    }

    /// Whether a record with these values is inside the grant's scope
    /// (every condition's field holds one of its allowed values).
    pub fn in_scope<'a>(&self, value_of: impl Fn(&str) -> Option<&'a FieldValue>) -> bool {
        self.scope.iter().all(|condition| {
            value_of(&condition.field).is_some_and(|value| condition.allowed.contains(value))
        })
    }
}

/// A keyed hash (HMAC-SHA256 under the federation's subject-key secret) of a
/// subject key. The log and the policy only ever hold these, never the key.
/// Hex in JSON, 32 raw bytes in the canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubjectKeyHash(#[serde(with = "crate::hex_digest")] pub [u8; 32]);

impl std::fmt::Debug for SubjectKeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SubjectKeyHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// The label whose keyed hash is the subject-key commitment. It holds a NUL
/// byte, which no record key may, so it is never a subject's hash.
pub const SUBJECT_KEY_COMMITMENT_LABEL: &[u8] = b"civmesh/subject-key-commitment/v1\0";

/// The commitment to the federation's subject-key secret that the CA logs
/// after genesis ([`crate::Command::CommitSubjectKeySecret`]): HMAC-SHA256 of
/// [`SUBJECT_KEY_COMMITMENT_LABEL`] under the secret. It reveals nothing of
/// the secret, and whoever holds a secret can check it is the federation's.
pub fn subject_key_commitment(secret: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::hmac::sign(&key, SUBJECT_KEY_COMMITMENT_LABEL).as_ref());
    out
}

impl SubjectKeyHash {
    /// HMAC-SHA256 of `subject_key` under `secret`.
    pub fn of(secret: &[u8], subject_key: &str) -> Self {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let tag = ring::hmac::sign(&key, subject_key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        SubjectKeyHash(out)
    }
}

/// Who a consent is for: one subject, dataset, grantee and purpose.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentKey {
    /// The subject.
    pub subject: SubjectKeyHash,
    /// The dataset.
    pub dataset: DatasetId,
    /// The organisation allowed to read.
    pub grantee: OrgId,
    /// For what.
    pub purpose: Purpose,
}

/// A subject's consent, as last recorded (Art. 14, withdrawable per Art. 15).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Given (true) or withdrawn (false).
    pub given: bool,
    /// Whether it includes the separate consent for sensitive fields (Art. 29).
    pub covers_sensitive: bool,
    /// The organisation that recorded it (the dataset's owner).
    pub recorded_by: OrgId,
    /// When (entry time).
    pub recorded_at_ms: UnixMillis,
    /// How the owner took it on the subject's behalf, e.g. `street_window`.
    pub channel: String,
}

pub use crate::field_value::FieldValue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_rules_are_applied_per_character() {
        let id = FieldValue::Text("310106195001011234".into());
        assert_eq!(MaskingRule::KeepLast(4).apply(&id), FieldValue::Text("**************1234".into()));
        assert_eq!(
            MaskingRule::KeepFirst(2).apply(&FieldValue::Text("静安寺街道".into())),
            FieldValue::Text("静安***".into())
        );
        assert_eq!(MaskingRule::Redact.apply(&FieldValue::Integer(42)), FieldValue::Text("***".into()));
        assert_eq!(
            MaskingRule::KeepLast(9).apply(&FieldValue::Text("ab".into())),
            FieldValue::Text("ab".into())
        );
        assert_eq!(MaskingRule::Redact.apply(&FieldValue::Null), FieldValue::Null);
    }

    #[test]
    fn subject_key_hash_is_keyed() {
        let a = SubjectKeyHash::of(b"secret-a", "310106195001011234");
        assert_eq!(a, SubjectKeyHash::of(b"secret-a", "310106195001011234"));
        assert_ne!(a, SubjectKeyHash::of(b"secret-b", "310106195001011234"));
        assert_ne!(a, SubjectKeyHash::of(b"secret-a", "310106195001011235"));
    }

    #[test]
    fn a_subject_key_hash_prints_only_its_first_four_bytes() {
        let mut hash = SubjectKeyHash([0xee; 32]);
        hash.0[..4].copy_from_slice(&[0x01, 0x23, 0xab, 0xcd]);
        assert_eq!(format!("{hash:?}"), "SubjectKeyHash(0123abcd…)");
    }
}
