//! What the owner node checks before it signs a grant, beyond the policy
//! log's rules (`PolicyState::check_protection`, which cannot see this
//! node's files): the assessment a grant names is one this node keeps, for
//! the grant's dataset and purpose, covering every sensitive field granted.
//! The log's own rules on retention are repeated here, so that the officer
//! reads which fields need what before anything is signed.

use civmesh_policy::model::{Dataset, FieldClass, FieldName};
use civmesh_policy::GrantSpec;

use super::{digest_hex, AssessmentDigest, AssessmentError, AssessmentStore};

/// What a grant lacks for the owner to sign it.
#[derive(Debug, thiserror::Error)]
pub enum ProtectionMissing {
    /// Personal fields, and no retention.
    #[error(
        "{} personal: state how long the grantee may keep the copies it receives, and how long it then \
         has to delete them",
        fields_are(.fields)
    )]
    Retention {
        /// The personal (and sensitive) fields granted.
        fields: Vec<FieldName>,
    },
    /// A retention outside the log's bounds.
    #[error(
        "the retention must keep copies 1 second to 10 years and delete them within 1 second to 30 days"
    )]
    RetentionOutOfRange,
    /// Sensitive fields, and no assessment.
    #[error(
        "{} sensitive: name the impact assessment that covers them (civmesh pia add prints its digest)",
        fields_are(.fields)
    )]
    Assessment {
        /// The sensitive fields granted.
        fields: Vec<FieldName>,
    },
    /// The assessment named is not one this node keeps.
    #[error("this node keeps no impact assessment {} (see civmesh pia list)", digest_hex(.0))]
    AssessmentUnknown(AssessmentDigest),
    /// The assessment is for another dataset.
    #[error("impact assessment {} is for dataset {assessed}, not {dataset}", digest_hex(.digest))]
    AssessmentOtherDataset {
        /// The assessment.
        digest: AssessmentDigest,
        /// Its dataset.
        assessed: String,
        /// The grant's.
        dataset: String,
    },
    /// The assessment is for another purpose.
    #[error("impact assessment {} is for purpose {assessed}, not {purpose}", digest_hex(.digest))]
    AssessmentOtherPurpose {
        /// The assessment.
        digest: AssessmentDigest,
        /// Its purpose.
        assessed: String,
        /// The grant's.
        purpose: String,
    },
    /// The assessment leaves sensitive fields granted out.
    #[error("impact assessment {} does not cover the sensitive {}", digest_hex(.digest), field_list(.fields))]
    AssessmentNotCovering {
        /// The assessment.
        digest: AssessmentDigest,
        /// The sensitive fields granted that it does not cover.
        fields: Vec<FieldName>,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] AssessmentError),
}

impl ProtectionMissing {
    /// Whether it concerns the retention (else the assessment, or the store).
    pub fn is_retention(&self) -> bool {
        matches!(self, ProtectionMissing::Retention { .. } | ProtectionMissing::RetentionOutOfRange)
    }
}

/// Whether the owner may sign `spec` as far as retention and assessment
/// go: `dataset` is the grant's dataset in the catalog (none: the log
/// refuses the grant anyway), `store` this node's assessments.
pub fn check_grant(
    store: &AssessmentStore,
    dataset: Option<&Dataset>,
    spec: &GrantSpec,
) -> Result<(), ProtectionMissing> {
    let Some(dataset) = dataset else { return Ok(()) };
    let granted = |wanted: fn(FieldClass) -> bool| -> Vec<FieldName> {
        let class = |field: &FieldName| dataset.field(field).map(|spec| spec.class);
        spec.fields.iter().filter(|field| class(field).is_some_and(wanted)).cloned().collect()
    };
    let personal = granted(FieldClass::is_personal);
    let sensitive = granted(FieldClass::is_sensitive);
    match spec.retention {
        Some(retention) if !retention.is_valid() => return Err(ProtectionMissing::RetentionOutOfRange),
        None if !personal.is_empty() => return Err(ProtectionMissing::Retention { fields: personal }),
        _ => {}
    }
    let Some(digest) = spec.assessment else {
        if sensitive.is_empty() {
            return Ok(());
        }
        return Err(ProtectionMissing::Assessment { fields: sensitive });
    };
    let assessed = store.get(&digest)?.ok_or(ProtectionMissing::AssessmentUnknown(digest))?.assessment;
    if assessed.dataset != spec.dataset {
        let dataset = spec.dataset.clone();
        return Err(ProtectionMissing::AssessmentOtherDataset {
            digest,
            assessed: assessed.dataset,
            dataset,
        });
    }
    if assessed.purpose != spec.purpose {
        let purpose = spec.purpose.clone();
        return Err(ProtectionMissing::AssessmentOtherPurpose {
            digest,
            assessed: assessed.purpose,
            purpose,
        });
    }
    let fields: Vec<FieldName> =
        sensitive.into_iter().filter(|field| !assessed.fields.contains(field)).collect();
    if !fields.is_empty() {
        return Err(ProtectionMissing::AssessmentNotCovering { digest, fields });
    }
    Ok(())
}

/// `field x is` or `fields x, y are`.
fn fields_are(fields: &[FieldName]) -> String {
    let verb = if fields.len() == 1 { "is" } else { "are" };
    format!("{} {verb}", field_list(fields))
}

/// `field x` or `fields x, y`.
fn field_list(fields: &[FieldName]) -> String {
    let noun = if fields.len() == 1 { "field" } else { "fields" };
    format!("{noun} {}", fields.join(", "))
}
