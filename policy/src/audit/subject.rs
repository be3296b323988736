//! Subject-access reports: every access to one subject's records.

use civmesh_certs::{OrgId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::access::{AccessKind, AccessLogEntry, AccessOutcome};
use crate::model::{LegalBasis, SubjectKeyHash};
use crate::state::PolicyState;

/// One access to a subject's records, for a subject-access report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAccess {
    /// The access entry.
    pub access_entry: u64,
    /// When the owner decided.
    pub decided_at_ms: UnixMillis,
    /// Who asked (node).
    pub requester: String,
    /// Its organisation.
    pub requester_org: Option<OrgId>,
    /// The owner node that answered.
    pub owner: String,
    /// The dataset.
    pub dataset: String,
    /// For what.
    pub purpose: String,
    /// Under which grant.
    pub grant: Option<u64>,
    /// The grant's legal basis.
    pub legal_basis: Option<LegalBasis>,
    /// Permit or deny.
    pub outcome: SubjectAccessOutcome,
    /// The fields released (none for a denial).
    pub fields_released: Vec<String>,
    /// A query or a subscription push.
    pub kind: AccessKind,
    /// Its leaf in the audit tree.
    pub leaf: u64,
    /// Whether a final checkpoint covers it. An unanchored access is one
    /// the exporter could have left out: a report is complete only up to
    /// the latest final checkpoint.
    pub anchored: bool,
}

/// Whether an access released the subject's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectAccessOutcome {
    /// Records were released.
    Permit,
    /// The query was denied.
    Deny,
}

impl SubjectAccessOutcome {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectAccessOutcome::Permit => "permit",
            SubjectAccessOutcome::Deny => "deny",
        }
    }
}

/// The access `entry` made to `subject`'s records, if it named or
/// released them; `state` is the state it was logged in, `leaf` its leaf.
/// Whether it is anchored is known only at the bundle's end.
pub(crate) fn subject_access(
    state: &PolicyState,
    entry: &AccessLogEntry,
    leaf: u64,
    subject: &SubjectKeyHash,
) -> Option<SubjectAccess> {
    let fields_released: Vec<String> = match &entry.outcome {
        AccessOutcome::Permit { released } => {
            released.iter().find(|release| release.subject == *subject).map(|release| release.fields.clone())
        }
        AccessOutcome::Deny { .. } => entry.header.subjects.contains(subject).then(Vec::new),
    }?;
    let grant = entry.header.grant.and_then(|id| state.grants.get(&id));
    Some(SubjectAccess {
        access_entry: entry.sequence,
        decided_at_ms: entry.decided_at_ms,
        requester: entry.requester.to_string(),
        requester_org: state.members.get(&entry.requester).map(|member| member.org.clone()),
        owner: entry.owner.to_string(),
        dataset: entry.header.dataset.clone(),
        purpose: entry.header.purpose.clone(),
        grant: entry.header.grant,
        legal_basis: grant.map(|grant| grant.legal_basis),
        outcome: if matches!(entry.outcome, AccessOutcome::Permit { .. }) {
            SubjectAccessOutcome::Permit
        } else {
            SubjectAccessOutcome::Deny
        },
        fields_released,
        kind: entry.kind(),
        leaf,
        anchored: false,
    })
}
