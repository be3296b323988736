//! The access decision: a pure function of the policy state, the request,
//! the candidate records' facts and the time. Deny by default; every
//! withheld field and record carries a reason code.

use civmesh_certs::{NodeId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::model::{
    DatasetId, FieldClass, FieldName, FieldValue, Grant, GrantId, MaskingRule, Purpose, SharingCategory,
    SubjectKeyHash,
};

/// How far a subject's consent reaches, for a grant that may need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentCoverage {
    /// No consent is needed, or the consent includes the separate consent
    /// for sensitive fields: every granted field may be released.
    AllFields,
    /// Consent is given without the separate consent for sensitive fields:
    /// those are withheld.
    NotSensitive,
}

use crate::state::PolicyState;

/// A request to read records of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// The requesting node.
    pub requester: NodeId,
    /// The dataset.
    pub dataset: DatasetId,
    /// The fields wanted.
    pub fields: Vec<FieldName>,
    /// For what.
    pub purpose: Purpose,
    /// The grant relied on; `None` asks for public fields of an
    /// unconditionally shared dataset.
    pub grant: Option<GrantId>,
}

/// What the decision needs to know about one candidate record.
pub trait RecordFacts {
    /// The keyed hash of the record's subject key.
    fn subject(&self) -> SubjectKeyHash;
    /// The record's value of `field`, for scope conditions.
    fn value(&self, field: &str) -> Option<&FieldValue>;
}

/// The stable reason codes of a denial or a withholding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The requester is not a member.
    RequesterNotMember,
    /// The requester was revoked.
    RequesterRevoked,
    /// No such dataset.
    DatasetUnknown,
    /// A requested field is not in the schema.
    FieldUnknown,
    /// The dataset is not shared.
    DatasetNotShared,
    /// The dataset or field is on the negative list.
    NegativeListed,
    /// A grant is required and none was named.
    GrantRequired,
    /// No such grant.
    GrantUnknown,
    /// The grant is for another dataset.
    GrantDatasetMismatch,
    /// The grant is for another organisation.
    GrantNotForRequester,
    /// The grant was revoked.
    GrantRevoked,
    /// The grant's validity has not started.
    GrantNotYetValid,
    /// The grant's validity has ended.
    GrantExpired,
    /// The request's purpose is not the grant's.
    PurposeMismatch,
    /// The field is not in the grant.
    FieldNotGranted,
    /// The record is outside the grant's scope.
    OutOfScope,
    /// The subject has no active consent.
    ConsentMissing,
    /// The field is sensitive and the subject gave no separate consent.
    SensitiveConsentMissing,
    /// No field of any record could be released.
    NothingReleasable,
    /// The request asked for no fields, or too many.
    RequestInvalid,
    /// The requester's certificate has expired.
    RequesterCertificateExpired,
}

/// What happens to one requested field, for all records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAction {
    /// Released as stored.
    Release,
    /// Released masked.
    Mask(MaskingRule),
    /// Not released.
    Withhold(ReasonCode),
}

/// One field of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldPlan {
    /// The field.
    pub field: FieldName,
    /// Its action.
    pub action: FieldAction,
    /// Whether it is sensitive personal information.
    pub sensitive: bool,
}

/// What happens to one candidate record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordPlan {
    /// Released with the field plan, except sensitive fields when the
    /// subject gave no separate consent.
    Release {
        /// Sensitive fields withheld for this record alone.
        sensitive_withheld: bool,
    },
    /// Not released.
    Withhold(ReasonCode),
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Nothing is released.
    Deny(ReasonCode),
    /// Released per the plan.
    Permit {
        /// The grant relied on, if any.
        grant: Option<GrantId>,
        /// Per requested field, in request order.
        fields: Vec<FieldPlan>,
        /// Per candidate record, in input order.
        records: Vec<RecordPlan>,
    },
}

impl Decision {
    /// Whether anything is released.
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit { .. })
    }

    /// The action for `field` on record `index`: what a projection applies.
    pub fn action_for(&self, index: usize, field: &str) -> FieldAction {
        let Decision::Permit { fields, records, .. } = self else {
            return FieldAction::Withhold(ReasonCode::NothingReleasable);
        };
        let Some(plan) = fields.iter().find(|plan| plan.field == field) else {
            return FieldAction::Withhold(ReasonCode::FieldNotGranted);
        };
        match records.get(index) {
            Some(RecordPlan::Release { sensitive_withheld }) => {
                if plan.sensitive && *sensitive_withheld {
                    FieldAction::Withhold(ReasonCode::SensitiveConsentMissing)
                } else {
                    plan.action
                }
            }
            Some(RecordPlan::Withhold(reason)) => FieldAction::Withhold(*reason),
            None => FieldAction::Withhold(ReasonCode::NothingReleasable),
        }
    }
}

/// The most fields one request may name.
pub const REQUEST_FIELDS_MAX: usize = 256;

/// Decides `request` against `state` at `now_ms` for `records`.
pub fn decide<R: RecordFacts>(
    state: &PolicyState,
    request: &AccessRequest,
    records: &[R],
    now_ms: UnixMillis,
) -> Decision {
    match decide_inner(state, request, records, now_ms) {
        Ok(decision) => decision,
        Err(reason) => Decision::Deny(reason),
    }
}

fn decide_inner<R: RecordFacts>(
    state: &PolicyState,
    request: &AccessRequest,
    records: &[R],
    now_ms: UnixMillis,
) -> Result<Decision, ReasonCode> {
    if request.fields.is_empty() || request.fields.len() > REQUEST_FIELDS_MAX {
        return Err(ReasonCode::RequestInvalid);
    }
    let member = state.members.get(&request.requester).ok_or(ReasonCode::RequesterNotMember)?;
    if member.revoked.is_some() {
        return Err(ReasonCode::RequesterRevoked);
    }
    if member.certificate_not_after_ms <= now_ms {
        return Err(ReasonCode::RequesterCertificateExpired);
    }
    let dataset = state.datasets.get(&request.dataset).ok_or(ReasonCode::DatasetUnknown)?;
    let mut classes = Vec::with_capacity(request.fields.len());
    for field in &request.fields {
        classes.push(dataset.field(field).ok_or(ReasonCode::FieldUnknown)?.class);
    }
    if dataset.sharing == SharingCategory::NotShared {
        return Err(ReasonCode::DatasetNotShared);
    }
    if state.negative_list.contains_key(&(request.dataset.clone(), None)) {
        return Err(ReasonCode::NegativeListed);
    }
    let negative_listed = |field: &FieldName| {
        !state.negative_list.is_empty()
            && state.negative_list.contains_key(&(request.dataset.clone(), Some(field.clone())))
    };

    let grant = match request.grant {
        Some(grant_id) => Some(usable_grant(state, request, &member.org, grant_id, now_ms)?),
        None if dataset.sharing == SharingCategory::Unconditional => None,
        None => return Err(ReasonCode::GrantRequired),
    };

    let fields: Vec<FieldPlan> = request
        .fields
        .iter()
        .zip(&classes)
        .map(|(field, class)| {
            let action = if negative_listed(field) {
                FieldAction::Withhold(ReasonCode::NegativeListed)
            } else {
                match grant {
                    None if *class == FieldClass::Public => FieldAction::Release,
                    None => FieldAction::Withhold(ReasonCode::GrantRequired),
                    Some(grant) if !grant.fields.contains(field) => {
                        FieldAction::Withhold(ReasonCode::FieldNotGranted)
                    }
                    Some(grant) => {
                        grant.masking.get(field).map_or(FieldAction::Release, |rule| FieldAction::Mask(*rule))
                    }
                }
            };
            FieldPlan { field: field.clone(), action, sensitive: class.is_sensitive() }
        })
        .collect();
    let any_field_released = fields.iter().any(|plan| !matches!(plan.action, FieldAction::Withhold(_)));
    if !any_field_released {
        return Err(fields
            .iter()
            .find_map(|plan| match plan.action {
                FieldAction::Withhold(reason) => Some(reason),
                _ => None,
            })
            .unwrap_or(ReasonCode::NothingReleasable));
    }
    let only_sensitive_released =
        fields.iter().all(|plan| matches!(plan.action, FieldAction::Withhold(_)) || plan.sensitive);

    let records: Vec<RecordPlan> =
        records.iter().map(|record| record_plan(state, grant, record, only_sensitive_released)).collect();
    Ok(Decision::Permit { grant: request.grant, fields, records })
}

fn usable_grant<'a>(
    state: &'a PolicyState,
    request: &AccessRequest,
    requester_org: &civmesh_certs::OrgId,
    grant_id: GrantId,
    now_ms: UnixMillis,
) -> Result<&'a Grant, ReasonCode> {
    let grant = state.grants.get(&grant_id).ok_or(ReasonCode::GrantUnknown)?;
    grant.check_usable(requester_org, &request.dataset, Some(&request.purpose), now_ms)?;
    Ok(grant)
}

fn record_plan<R: RecordFacts>(
    state: &PolicyState,
    grant: Option<&Grant>,
    record: &R,
    only_sensitive_released: bool,
) -> RecordPlan {
    let Some(grant) = grant else {
        return RecordPlan::Release { sensitive_withheld: true };
    };
    if !grant.in_scope(|field| record.value(field)) {
        return RecordPlan::Withhold(ReasonCode::OutOfScope);
    }
    match state.check_consent(grant, &record.subject()) {
        Ok(ConsentCoverage::AllFields) => RecordPlan::Release { sensitive_withheld: false },
        Ok(ConsentCoverage::NotSensitive) if only_sensitive_released => {
            RecordPlan::Withhold(ReasonCode::SensitiveConsentMissing)
        }
        Ok(ConsentCoverage::NotSensitive) => RecordPlan::Release { sensitive_withheld: true },
        Err(reason) => RecordPlan::Withhold(reason),
    }
}
