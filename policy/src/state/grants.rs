//! The demand list and grants: what organisations ask for, and what owners
//! grant them.

use std::collections::BTreeSet;

use civmesh_certs::{OrgId, UnixMillis};
use serde::{Deserialize, Serialize};

use super::rejection::{check_text, reject, Rejection, RejectionCode};
use super::{Applied, PolicyState};
use crate::command::{DemandSpec, GrantSpec};
use crate::model::{
    DatasetId, Demand, DemandId, FieldClass, FieldName, Grant, GrantId, Purpose, Revocation, SharingCategory,
    NAME_BYTES_MAX, REASON_BYTES_MAX,
};

/// A grant ending within this many days of its issue is worth a warning.
pub const GRANT_EXPIRY_WARNING_DAYS: u64 = 7;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Something the owner should confirm before issuing a grant: it is valid
/// as a command, but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "warning")]
pub enum GrantWarning {
    /// The grant's window has already ended.
    Expired {
        /// The end of its window.
        valid_until_ms: UnixMillis,
    },
    /// The grant's window ends within [`GRANT_EXPIRY_WARNING_DAYS`].
    ExpiresSoon {
        /// The end of its window.
        valid_until_ms: UnixMillis,
    },
    /// Sensitive fields granted without each subject's consent.
    SensitiveWithoutConsent {
        /// The sensitive fields.
        fields: Vec<FieldName>,
    },
    /// The grant gives more than the demand it answers asked for.
    BroaderThanDemand {
        /// The demand.
        demand: DemandId,
        /// Fields the demand did not ask for.
        fields: Vec<FieldName>,
        /// Whether its purpose differs from the demand's.
        purpose_differs: bool,
        /// Whether it lasts past the date the demand needs the data until.
        outlasts_demand: bool,
    },
}

/// Where a demand stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DemandStatus {
    /// Neither granted nor refused yet.
    Waiting,
    /// A grant answers it.
    Granted {
        /// The first grant that answers it.
        grant: GrantId,
    },
    /// The owner refused it.
    Refused {
        /// The owner's reason.
        reason: String,
    },
}

/// A demand as filed.
pub(super) struct DemandFiling<'a> {
    pub dataset: &'a DatasetId,
    pub fields: &'a BTreeSet<FieldName>,
    pub purpose: &'a Purpose,
}

impl PolicyState {
    pub(super) fn validate_demand(&self, demand: DemandFiling<'_>) -> Result<(), Rejection> {
        check_text("dataset", demand.dataset, NAME_BYTES_MAX)?;
        check_text("purpose", demand.purpose, NAME_BYTES_MAX)?;
        if demand.fields.is_empty() {
            return Err(reject(RejectionCode::InvalidArgument, "a demand names at least one field"));
        }
        for field in demand.fields {
            check_text("field", field, NAME_BYTES_MAX)?;
        }
        // A demand may name a dataset nobody produces yet; if it exists,
        // its fields must be in the schema.
        if self.datasets.contains_key(demand.dataset) {
            self.check_fields(demand.dataset, demand.fields.iter())?;
        }
        Ok(())
    }

    pub(super) fn validate_demand_spec(&self, spec: &DemandSpec) -> Result<(), Rejection> {
        let DemandSpec { dataset, fields, purpose, reason, .. } = spec;
        self.validate_demand(DemandFiling { dataset, fields, purpose })?;
        check_text("reason", reason, REASON_BYTES_MAX)
    }

    /// Files `spec` for `requester`; an empty reason (the old
    /// [`crate::Command::FileDemand`] has none) is kept as none.
    pub(super) fn file_demand(&mut self, requester: OrgId, spec: DemandSpec, at_ms: UnixMillis) -> Applied {
        let id = self.next_demand_id;
        self.next_demand_id += 1;
        let DemandSpec { dataset, fields, purpose, legal_basis, reason, until_ms } = spec;
        let demand = Demand {
            id,
            requester,
            dataset,
            fields,
            purpose,
            legal_basis,
            filed_at_ms: at_ms,
            reason: (!reason.is_empty()).then_some(reason),
            until_ms,
            refused: None,
        };
        self.demands.insert(id, demand);
        Applied::DemandFiled(id)
    }

    /// Where the demand stands: refused, granted (by its first grant), or
    /// waiting.
    pub fn demand_status(&self, demand: &Demand) -> DemandStatus {
        if let Some(refusal) = &demand.refused {
            return DemandStatus::Refused { reason: refusal.reason.clone() };
        }
        match self.grants.values().find(|grant| grant.demand == Some(demand.id)) {
            Some(grant) => DemandStatus::Granted { grant: grant.id },
            None => DemandStatus::Waiting,
        }
    }

    /// What the owner should confirm before issuing `spec` at `now_ms`: an
    /// ended or ending window, sensitive fields without consent, more than
    /// the demand asked for. Empty when there is nothing to confirm.
    pub fn grant_warnings(&self, spec: &GrantSpec, now_ms: UnixMillis) -> Vec<GrantWarning> {
        let mut warnings = Vec::new();
        let valid_until_ms = spec.valid_until_ms;
        if valid_until_ms <= now_ms {
            warnings.push(GrantWarning::Expired { valid_until_ms });
        } else if valid_until_ms - now_ms <= GRANT_EXPIRY_WARNING_DAYS * DAY_MS {
            warnings.push(GrantWarning::ExpiresSoon { valid_until_ms });
        }
        let consent = spec.consent_required || spec.legal_basis == crate::model::LegalBasis::Consent;
        let sensitive: Vec<FieldName> = match self.datasets.get(&spec.dataset) {
            Some(dataset) if !consent => {
                spec.fields.iter().filter(|field| dataset.is_sensitive(field)).cloned().collect()
            }
            _ => Vec::new(),
        };
        if !sensitive.is_empty() {
            warnings.push(GrantWarning::SensitiveWithoutConsent { fields: sensitive });
        }
        if let Some(demand) = spec.demand.and_then(|id| self.demands.get(&id)) {
            let fields: Vec<FieldName> = spec.fields.difference(&demand.fields).cloned().collect();
            let purpose_differs = spec.purpose != demand.purpose;
            let outlasts_demand = demand.until_ms.is_some_and(|until_ms| valid_until_ms > until_ms);
            if !fields.is_empty() || purpose_differs || outlasts_demand {
                let demand = demand.id;
                warnings.push(GrantWarning::BroaderThanDemand {
                    demand,
                    fields,
                    purpose_differs,
                    outlasts_demand,
                });
            }
        }
        warnings
    }

    /// Rejects a signer whose organisation does not own the demand's dataset.
    pub(super) fn check_demand_owner(&self, org: &OrgId, demand_id: DemandId) -> Result<(), Rejection> {
        let demand = self.demands.get(&demand_id).ok_or_else(|| demand_unknown(demand_id))?;
        self.check_owner(org, &demand.dataset)
    }

    pub(super) fn validate_demand_refusal(&self, demand_id: DemandId, reason: &str) -> Result<(), Rejection> {
        check_text("reason", reason, REASON_BYTES_MAX)?;
        let demand = self.demands.get(&demand_id).ok_or_else(|| demand_unknown(demand_id))?;
        match self.demand_status(demand) {
            DemandStatus::Waiting => Ok(()),
            DemandStatus::Granted { grant } => Err(reject(
                RejectionCode::InvalidArgument,
                format!("demand {demand_id} is answered by grant {grant}"),
            )),
            DemandStatus::Refused { .. } => {
                Err(reject(RejectionCode::InvalidArgument, format!("demand {demand_id} is already refused")))
            }
        }
    }

    pub(super) fn refuse_demand(&mut self, demand_id: DemandId, refusal: Revocation) -> Applied {
        if let Some(demand) = self.demands.get_mut(&demand_id) {
            demand.refused = Some(refusal);
        }
        Applied::Done
    }

    pub(super) fn validate_grant(&self, spec: &GrantSpec, signer_org: &OrgId) -> Result<(), Rejection> {
        check_text("purpose", &spec.purpose, NAME_BYTES_MAX)?;
        if spec.fields.is_empty() {
            return Err(reject(RejectionCode::InvalidArgument, "a grant names at least one field"));
        }
        if spec.valid_until_ms <= spec.valid_from_ms {
            return Err(reject(RejectionCode::InvalidArgument, "valid_until must be after valid_from"));
        }
        if *signer_org == spec.grantee {
            return Err(reject(
                RejectionCode::InvalidArgument,
                "an owner does not grant its own data to itself",
            ));
        }
        self.check_fields(&spec.dataset, spec.fields.iter())?;
        self.check_fields(&spec.dataset, spec.masking.keys())?;
        self.check_fields(&spec.dataset, spec.scope.iter().map(|condition| &condition.field))?;
        self.check_scope_declared(spec)?;
        if let Some(unreleased) = spec.masking.keys().find(|field| !spec.fields.contains(*field)) {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!("masking names {unreleased:?}, which is not granted"),
            ));
        }
        self.check_grantable(spec)?;
        self.check_protection(spec)?;
        if let Some(demand_id) = spec.demand {
            let demand = self.demands.get(&demand_id).ok_or_else(|| demand_unknown(demand_id))?;
            if demand.refused.is_some() {
                let detail = format!("demand {demand_id} was refused");
                return Err(reject(RejectionCode::InvalidArgument, detail));
            }
        }
        if !self.members.values().any(|member| member.org == spec.grantee && member.revoked.is_none()) {
            return Err(reject(
                RejectionCode::MemberUnknown,
                format!("{} has no active member node", spec.grantee),
            ));
        }
        Ok(())
    }

    /// Every scope condition names one of the dataset's declared scope
    /// fields (the ones its owner indexes), with 1 or more values.
    fn check_scope_declared(&self, spec: &GrantSpec) -> Result<(), Rejection> {
        let Some(dataset) = self.datasets.get(&spec.dataset) else { return Ok(()) };
        for condition in &spec.scope {
            if !dataset.scope_fields.contains(&condition.field) {
                return Err(reject(
                    RejectionCode::InvalidArgument,
                    format!("{} is not a scope field of {}", condition.field, spec.dataset),
                ));
            }
            if condition.allowed.is_empty() {
                return Err(reject(
                    RejectionCode::InvalidArgument,
                    format!("the scope on {} names no value", condition.field),
                ));
            }
        }
        Ok(())
    }

    /// Personal fields need a retention within bounds; sensitive ones an
    /// impact assessment too.
    fn check_protection(&self, spec: &GrantSpec) -> Result<(), Rejection> {
        let Some(dataset) = self.datasets.get(&spec.dataset) else { return Ok(()) };
        let classes = spec.fields.iter().filter_map(|field| dataset.field(field)).map(|field| field.class);
        check_protection_of(classes, spec.retention, spec.assessment)
    }

    /// Whether `grant` grants a field its dataset classes as sensitive.
    pub fn grants_sensitive_field(&self, grant: &Grant) -> bool {
        let dataset = self.datasets.get(&grant.dataset);
        dataset.is_some_and(|dataset| grant.fields.iter().any(|field| dataset.is_sensitive(field)))
    }

    /// A new version of a dataset may not make a field personal or
    /// sensitive under a grant still in force that lacks the retention or
    /// the assessment that would need: the owner revokes or reissues first.
    pub(super) fn check_republished_protection(
        &self,
        spec: &crate::command::DatasetSpec,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        let in_force = self
            .grants
            .values()
            .filter(|grant| grant.dataset == spec.id && grant.ended_at_ms(entry_time_ms).is_none());
        for grant in in_force {
            let classes = spec
                .fields
                .iter()
                .filter(|field| grant.fields.contains(&field.name))
                .map(|field| field.class);
            check_protection_of(classes, grant.retention, grant.assessment).map_err(|rejection| {
                Rejection {
                    detail: format!("grant {} would lack protection: {}", grant.id, rejection.detail),
                    ..rejection
                }
            })?;
        }
        Ok(())
    }

    /// The dataset is shared, and neither it nor a granted field is on the
    /// negative list.
    fn check_grantable(&self, spec: &GrantSpec) -> Result<(), Rejection> {
        if self
            .datasets
            .get(&spec.dataset)
            .is_some_and(|dataset| dataset.sharing == SharingCategory::NotShared)
        {
            return Err(reject(RejectionCode::DatasetNotShared, format!("{} is not shared", spec.dataset)));
        }
        if self.negative_listed(&spec.dataset, None) {
            return Err(reject(
                RejectionCode::NegativeListed,
                format!("{} is on the negative list", spec.dataset),
            ));
        }
        if let Some(field) = spec.fields.iter().find(|field| self.negative_listed(&spec.dataset, Some(field)))
        {
            return Err(reject(RejectionCode::NegativeListed, format!("{field:?} is on the negative list")));
        }
        Ok(())
    }

    pub(super) fn issue_grant(&mut self, spec: GrantSpec, grantor: OrgId, at_ms: UnixMillis) -> Applied {
        let id = self.next_grant_id;
        self.next_grant_id += 1;
        let grant = Grant {
            id,
            dataset: spec.dataset,
            grantor,
            grantee: spec.grantee,
            fields: spec.fields,
            purpose: spec.purpose,
            legal_basis: spec.legal_basis,
            scope: spec.scope,
            valid_from_ms: spec.valid_from_ms,
            valid_until_ms: spec.valid_until_ms,
            masking: spec.masking,
            consent_required: spec.consent_required,
            demand: spec.demand,
            retention: spec.retention,
            assessment: spec.assessment,
            issued_at_ms: at_ms,
            revoked: None,
        };
        self.grants.insert(id, grant);
        Applied::GrantIssued(id)
    }

    /// Rejects a signer whose organisation does not own the grant's dataset.
    pub(super) fn check_grant_owner(&self, org: &OrgId, grant_id: GrantId) -> Result<(), Rejection> {
        let grant = self.grants.get(&grant_id).ok_or_else(|| grant_unknown(grant_id))?;
        self.check_owner(org, &grant.dataset)
    }

    pub(super) fn validate_grant_revocation(&self, grant_id: GrantId, reason: &str) -> Result<(), Rejection> {
        check_text("reason", reason, REASON_BYTES_MAX)?;
        match self.grants.get(&grant_id) {
            Some(grant) if grant.revoked.is_some() => Err(reject(
                RejectionCode::GrantAlreadyRevoked,
                format!("grant {grant_id} is already revoked"),
            )),
            Some(_) => Ok(()),
            None => Err(grant_unknown(grant_id)),
        }
    }

    pub(super) fn revoke_grant(&mut self, grant_id: GrantId, revocation: Revocation) -> Applied {
        if let Some(grant) = self.grants.get_mut(&grant_id) {
            grant.revoked = Some(revocation);
        }
        Applied::Done
    }
}

fn demand_unknown(demand_id: DemandId) -> Rejection {
    reject(RejectionCode::DemandUnknown, format!("no demand {demand_id}"))
}

fn grant_unknown(grant_id: GrantId) -> Rejection {
    reject(RejectionCode::GrantUnknown, format!("no grant {grant_id}"))
}

/// The protection `classes` of granted fields need: a retention within
/// bounds for personal ones, an assessment too for sensitive ones.
fn check_protection_of(
    classes: impl Iterator<Item = FieldClass>,
    retention: Option<crate::deletion::Retention>,
    assessment: Option<crate::deletion::AssessmentDigest>,
) -> Result<(), Rejection> {
    let classes: Vec<FieldClass> = classes.collect();
    let personal = classes.iter().any(|class| class.is_personal());
    let sensitive = classes.iter().any(|class| class.is_sensitive());
    match retention {
        Some(retention) if !retention.is_valid() => {
            return Err(reject(
                RejectionCode::RetentionMissing,
                "the retention must keep copies 1 s to 10 years and delete them within 1 s to 30 days",
            ))
        }
        None if personal => {
            return Err(reject(
                RejectionCode::RetentionMissing,
                "a grant of personal fields states how long copies are kept",
            ))
        }
        _ => {}
    }
    if sensitive && assessment.is_none() {
        return Err(reject(
            RejectionCode::AssessmentMissing,
            "a grant of sensitive fields names its impact assessment",
        ));
    }
    Ok(())
}
