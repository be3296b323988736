//! Access records at apply time: the requester's signature and the
//! re-justification of a logged permit.

use super::*;

impl PolicyState {
    /// Verifies an access record: the requester's signature, and that a
    /// permit is justified by this state. A push answers a subscription (a
    /// header naming no subjects), so any subject may be released, within
    /// the same grant, fields and consents. Returns the verified header.
    pub(super) fn validate_access(
        &self,
        record: &AccessRecord,
        push: bool,
        check: SignatureCheck,
    ) -> Result<(civmesh_certs::VerifiedEnvelope<QueryHeader>, QueryHeader), Rejection> {
        let request = check.open(&record.request).map_err(|error| {
            reject(RejectionCode::SignatureInvalid, format!("the requester's query: {error}"))
        })?;
        let header = request.payload.clone();
        if header.subjects.len() > QUERY_SUBJECTS_MAX || header.fields.is_empty() {
            return Err(reject(
                RejectionCode::InvalidArgument,
                "a query names 1 or more fields and a bounded number of subjects",
            ));
        }
        let requester = self.members.get(&request.signer).ok_or_else(|| {
            reject(RejectionCode::SignerUnknown, format!("requester {} is not a member", request.signer))
        })?;
        if push && (!header.subjects.is_empty() || !matches!(record.outcome, AccessOutcome::Permit { .. })) {
            return Err(reject(
                RejectionCode::PermitNotJustified,
                "a push releases records under a subscription, which names no subjects",
            ));
        }
        let AccessOutcome::Permit { released } = &record.outcome else {
            return Ok((request, header));
        };
        let unjustified = |why: String| reject(RejectionCode::PermitNotJustified, why);
        if requester.revoked.is_some() {
            return Err(unjustified("released to a revoked member".to_string()));
        }
        let dataset = self
            .datasets
            .get(&header.dataset)
            .ok_or_else(|| unjustified("released from an unknown dataset".to_string()))?;
        if dataset.sharing == crate::model::SharingCategory::NotShared
            || self.negative_list.contains_key(&(dataset.id.clone(), None))
        {
            return Err(unjustified(format!("{} may not be shared", dataset.id)));
        }
        let grant = match header.grant {
            Some(grant_id) => {
                let grant =
                    self.grants.get(&grant_id).ok_or_else(|| unjustified(format!("no grant {grant_id}")))?;
                let usable = grant.dataset == dataset.id
                    && grant.grantee == requester.org
                    && grant.revoked.is_none()
                    && grant.valid_from_ms <= record.decided_at_ms
                    && record.decided_at_ms < grant.valid_until_ms
                    && grant.purpose == header.purpose;
                if !usable {
                    return Err(unjustified(format!("grant {grant_id} did not allow this query")));
                }
                Some(grant)
            }
            None => None,
        };
        for release in released {
            if !push && !header.subjects.contains(&release.subject) {
                return Err(unjustified("released a subject the query did not name".to_string()));
            }
            let consent = grant.filter(|grant| grant.needs_consent()).map(|grant| {
                self.consents.get(&crate::model::ConsentKey {
                    subject: release.subject,
                    dataset: dataset.id.clone(),
                    grantee: grant.grantee.clone(),
                    purpose: grant.purpose.clone(),
                })
            });
            if let Some(consent) = &consent {
                if !consent.is_some_and(|consent| consent.given) {
                    return Err(unjustified("released a subject without active consent".to_string()));
                }
            }
            for field in &release.fields {
                let spec = dataset
                    .field(field)
                    .ok_or_else(|| unjustified(format!("released unknown field {field:?}")))?;
                let allowed = header.fields.contains(field)
                    && !self.negative_list.contains_key(&(dataset.id.clone(), Some(field.clone())))
                    && match grant {
                        Some(grant) => grant.fields.contains(field),
                        None => {
                            dataset.sharing == crate::model::SharingCategory::Unconditional
                                && spec.class == crate::model::FieldClass::Public
                        }
                    }
                    && (!matches!(spec.class, crate::model::FieldClass::Sensitive(_))
                        || consent
                            .as_ref()
                            .is_none_or(|consent| consent.is_some_and(|consent| consent.covers_sensitive)));
                if !allowed {
                    return Err(unjustified(format!("released field {field:?} that the policy withholds")));
                }
            }
        }
        Ok((request, header))
    }
}

/// The owner of the dataset an access record is about, if it exists.
pub(super) fn record_dataset_owner<'a>(state: &'a PolicyState, record: &AccessRecord) -> Option<&'a OrgId> {
    // Authority is decided before the requester's signature is checked (in
    // validation, which follows and rejects a forgery).
    let header = record.request.unverified_payload().ok()?;
    state.datasets.get(&header.dataset).map(|dataset| &dataset.owner)
}
