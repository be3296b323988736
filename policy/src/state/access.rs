//! Access records at apply time: the requester's signature and the
//! re-justification of a logged permit.

use super::*;
use crate::decide::ConsentCoverage;
use crate::model::{FieldClass, SharingCategory};

impl PolicyState {
    /// Verifies an access record: the requester's signature, its time and
    /// nonce (checked, not yet spent), the decision time, and that a permit
    /// is justified by this state. A push answers a subscription (a header
    /// naming no subjects), so any subject may be released, within the same
    /// grant, fields and consents. Returns the verified header.
    ///
    /// The grant and consent rules are [`crate::model::Grant::check_usable`]
    /// and [`PolicyState::check_consent`], the ones `decide` applies, at the
    /// decision time the owner logged (which must lie within
    /// `COMMAND_SKEW_MS_MAX` of the entry time).
    pub(super) fn validate_access(
        &self,
        record: &AccessRecord,
        push: bool,
        check: SignatureCheck,
        entry_time_ms: UnixMillis,
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
        if record.decided_at_ms.abs_diff(entry_time_ms) > COMMAND_SKEW_MS_MAX {
            return Err(reject(
                RejectionCode::DecisionTimeOutOfWindow,
                format!("decided at {} but entry time is {entry_time_ms}", record.decided_at_ms),
            ));
        }
        let dataset = self
            .datasets
            .get(&header.dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {}", header.dataset)))?;
        let requester = self.members.get(&request.signer).ok_or_else(|| {
            reject(RejectionCode::SignerUnknown, format!("requester {} is not a member", request.signer))
        })?;
        if !push {
            // A query is logged once: its time and nonce are checked here
            // and spent when the record is accepted. A subscription header
            // is reused by every push under it.
            match self.recent_commands.check(
                &request.signer,
                &request.nonce,
                request.issued_at_ms,
                entry_time_ms,
            ) {
                Ok(()) => {}
                Err(civmesh_certs::EnvelopeError::Replayed(_)) => {
                    return Err(reject(RejectionCode::Replayed, "this query was logged before"))
                }
                Err(other) => {
                    return Err(reject(RejectionCode::Stale, format!("the requester's query: {other}")))
                }
            }
        }
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
        check_certificate_current(requester, entry_time_ms)?;
        if dataset.sharing == SharingCategory::NotShared
            || self.negative_list.contains_key(&(dataset.id.clone(), None))
        {
            return Err(unjustified(format!("{} may not be shared", dataset.id)));
        }
        let grant = match header.grant {
            Some(grant_id) => {
                let grant =
                    self.grants.get(&grant_id).ok_or_else(|| unjustified(format!("no grant {grant_id}")))?;
                grant
                    .check_usable(&requester.org, &dataset.id, Some(&header.purpose), record.decided_at_ms)
                    .map_err(|reason| {
                        unjustified(format!("grant {grant_id} did not allow this query: {reason:?}"))
                    })?;
                Some(grant)
            }
            None => None,
        };
        for release in released {
            if !push && !header.subjects.contains(&release.subject) {
                return Err(unjustified("released a subject the query did not name".to_string()));
            }
            let coverage = match grant {
                Some(grant) => self
                    .check_consent(grant, &release.subject)
                    .map_err(|_| unjustified("released a subject without active consent".to_string()))?,
                None => ConsentCoverage::AllFields,
            };
            for field in &release.fields {
                let spec = dataset
                    .field(field)
                    .ok_or_else(|| unjustified(format!("released unknown field {field:?}")))?;
                let allowed = header.fields.contains(field)
                    && !self.negative_list.contains_key(&(dataset.id.clone(), Some(field.clone())))
                    && match grant {
                        Some(grant) => grant.fields.contains(field),
                        None => {
                            dataset.sharing == SharingCategory::Unconditional
                                && spec.class == FieldClass::Public
                        }
                    }
                    && (!matches!(spec.class, FieldClass::Sensitive(_))
                        || coverage == ConsentCoverage::AllFields);
                if !allowed {
                    return Err(unjustified(format!("released field {field:?} that the policy withholds")));
                }
            }
        }
        Ok((request, header))
    }
}
