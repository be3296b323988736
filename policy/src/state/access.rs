//! Access records at apply time: the requester's signature and the
//! re-justification of a logged permit, then the access log entry.

use std::collections::{BTreeMap, BTreeSet};

use civmesh_certs::{NodeId, NonceStore, OrgId, UnixMillis, VerifiedEnvelope};

use super::membership::check_certificate_current;
use super::rejection::{reject, Rejection, RejectionCode};
use super::replay::COMMAND_SKEW_MS_MAX;
use super::{Applied, PolicyState, SignatureCheck};
use crate::access::{
    AccessKind, AccessLogEntry, AccessOutcome, AccessRecord, QueryHeader, SubjectRelease, QUERY_SUBJECTS_MAX,
};
use crate::command::SignedCommand;
use crate::decide::ConsentCoverage;
use crate::model::{Dataset, FieldClass, Grant, Member, SharingCategory, SubjectKeyHash};

/// The requester's verified query.
type Query = VerifiedEnvelope<QueryHeader>;

fn unjustified(why: impl Into<String>) -> Rejection {
    reject(RejectionCode::PermitNotJustified, why)
}

/// One logged access, as the owner signed it.
pub(super) struct LoggedAccess<'a> {
    pub envelope: &'a SignedCommand,
    pub record: &'a AccessRecord,
    /// A query's answer, a listing's page or a push under a subscription.
    pub kind: AccessKind,
    pub owner: NodeId,
}

/// How an access record is checked: what it logs, whether its signatures
/// were verified already, and its entry's time.
#[derive(Clone, Copy)]
struct AccessCheck {
    kind: AccessKind,
    check: SignatureCheck,
    entry_time_ms: UnixMillis,
}

impl PolicyState {
    /// Rejects an owner node logging an access to a dataset its
    /// organisation does not own.
    pub(super) fn check_access_owner(&self, org: &OrgId, record: &AccessRecord) -> Result<(), Rejection> {
        // Authority is decided before the requester's signature is checked
        // (in validation, which follows and rejects a forgery).
        let header = record.request.unverified_payload().map_err(|error| {
            reject(RejectionCode::SignatureInvalid, format!("the requester's query: {error}"))
        })?;
        self.check_owner(org, &header.dataset)
    }

    /// Validates an access record, spends a query's nonce, counts the entry
    /// in the access log and adds its leaf to the audit tree. Returns the
    /// entry, which the state does not keep.
    pub(super) fn log_access(
        &mut self,
        nonces: &mut dyn NonceStore,
        access: LoggedAccess<'_>,
        check: SignatureCheck,
        entry_time_ms: UnixMillis,
    ) -> Result<(Applied, AccessLogEntry), Rejection> {
        let checked = AccessCheck { kind: access.kind, check, entry_time_ms };
        let (requester, header) = self.validate_access(&*nonces, access.record, checked)?;
        if access.kind.spends_nonce() {
            // The requester's request is logged once, whoever logs it. Its
            // nonce was checked in validation and is spent only now, when
            // the record is accepted: the last check before the mutation.
            self.check_replay(
                nonces,
                &requester.signer,
                &requester.nonce,
                requester.issued_at_ms,
                entry_time_ms,
            )?;
            debug_assert_eq!(header, requester.payload);
        }
        let sequence = self.access_log_length;
        let entry = AccessLogEntry {
            sequence,
            envelope: access.envelope.clone(),
            requester: requester.signer,
            owner: access.owner,
            header,
            outcome: access.record.outcome.clone(),
            decided_at_ms: access.record.decided_at_ms,
        };
        self.access_log_length += 1;
        if let (AccessOutcome::Permit { released }, Some(grant)) = (&entry.outcome, entry.header.grant) {
            if !released.is_empty() {
                self.note_release(grant, entry.requester, entry_time_ms);
            }
        }
        Ok((Applied::AccessLogged(sequence), entry))
    }

    /// Verifies an access record: the requester's signature, its time and
    /// nonce (checked, not yet spent), the decision time, and that a permit
    /// is justified by this state. A listing's page and a push answer a
    /// header naming no subjects, so any subject may be released, within
    /// the same grant, fields and consents; a push only releases. Returns
    /// the verified header.
    ///
    /// The grant and consent rules are [`crate::model::Grant::check_usable`]
    /// and [`PolicyState::check_consent`], the ones `decide` applies, at the
    /// decision time the owner logged (which must lie within
    /// `COMMAND_SKEW_MS_MAX` of the entry time).
    fn validate_access(
        &self,
        nonces: &dyn NonceStore,
        record: &AccessRecord,
        checked: AccessCheck,
    ) -> Result<(Query, QueryHeader), Rejection> {
        let AccessCheck { kind, check, entry_time_ms } = checked;
        let request = open_query(record, check, entry_time_ms)?;
        let header = request.payload.clone();
        let dataset = self
            .datasets
            .get(&header.dataset)
            .ok_or_else(|| reject(RejectionCode::DatasetUnknown, format!("no dataset {}", header.dataset)))?;
        let requester = self.members.get(&request.signer).ok_or_else(|| {
            reject(RejectionCode::SignerUnknown, format!("requester {} is not a member", request.signer))
        })?;
        if kind.spends_nonce() {
            // A query or a listing's page is logged once: its time and
            // nonce are checked here and spent when the record is accepted.
            // A subscription header is reused by every push under it.
            self.check_query_fresh(
                nonces,
                &request.signer,
                &request.nonce,
                request.issued_at_ms,
                entry_time_ms,
            )?;
        }
        if !kind.names_subjects() && !header.subjects.is_empty() {
            return Err(unjustified("a listing or a push answers a request naming no subjects"));
        }
        if kind == AccessKind::Push && !matches!(record.outcome, AccessOutcome::Permit { .. }) {
            return Err(unjustified("a push only releases records"));
        }
        if let AccessOutcome::Permit { released } = &record.outcome {
            if released.len() > QUERY_SUBJECTS_MAX {
                return Err(reject(
                    RejectionCode::InvalidArgument,
                    format!("one access record releases at most {QUERY_SUBJECTS_MAX} subjects"),
                ));
            }
            let permit =
                Permit { header: &header, requester, dataset, decided_at_ms: record.decided_at_ms, kind };
            self.justify_permit(&permit, released, entry_time_ms)?;
        }
        Ok((request, header))
    }

    /// Checks a permit releases only what the policy allows the requester.
    fn justify_permit(
        &self,
        permit: &Permit<'_>,
        released: &[SubjectRelease],
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        if permit.requester.revoked.is_some() {
            return Err(unjustified("released to a revoked member"));
        }
        check_certificate_current(permit.requester, entry_time_ms)?;
        let dataset = permit.dataset;
        if dataset.sharing == SharingCategory::NotShared || self.negative_listed(&dataset.id, None) {
            return Err(unjustified(format!("{} may not be shared", dataset.id)));
        }
        let grant = self.permit_grant(permit)?;
        let releasable = self.releasable_fields(permit, grant);
        let named: BTreeSet<&SubjectKeyHash> = permit.header.subjects.iter().collect();
        for release in released {
            if permit.kind.names_subjects() && !named.contains(&release.subject) {
                return Err(unjustified("released a subject the query did not name"));
            }
            self.check_release(grant, &releasable, release)?;
        }
        Ok(())
    }

    /// The fields asked for that the policy lets this permit release, each
    /// with whether it is sensitive: the same for every subject.
    fn releasable_fields<'a>(&self, permit: &Permit<'a>, grant: Option<&Grant>) -> BTreeMap<&'a str, bool> {
        let dataset = permit.dataset;
        permit
            .header
            .fields
            .iter()
            .filter_map(|field| {
                let spec = dataset.field(field)?;
                let allowed = !self.negative_listed(&dataset.id, Some(field))
                    && match grant {
                        Some(grant) => grant.fields.contains(field),
                        None => {
                            dataset.sharing == SharingCategory::Unconditional
                                && spec.class == FieldClass::Public
                        }
                    };
                allowed.then_some((field.as_str(), spec.class.is_sensitive()))
            })
            .collect()
    }

    /// The grant the query names, usable by the requester at the decision time.
    fn permit_grant(&self, permit: &Permit<'_>) -> Result<Option<&Grant>, Rejection> {
        let Some(grant_id) = permit.header.grant else { return Ok(None) };
        let grant = self.grants.get(&grant_id).ok_or_else(|| unjustified(format!("no grant {grant_id}")))?;
        grant
            .check_usable(
                &permit.requester.org,
                &permit.dataset.id,
                Some(&permit.header.purpose),
                permit.decided_at_ms,
            )
            .map_err(|reason| {
                unjustified(format!("grant {grant_id} did not allow this query: {reason:?}"))
            })?;
        Ok(Some(grant))
    }

    /// Checks one subject's release: consented, and every field one the
    /// policy releases (`releasable`, with whether it is sensitive).
    fn check_release(
        &self,
        grant: Option<&Grant>,
        releasable: &BTreeMap<&str, bool>,
        release: &SubjectRelease,
    ) -> Result<(), Rejection> {
        let coverage = match grant {
            Some(grant) => self
                .check_consent(grant, &release.subject)
                .map_err(|_| unjustified("released a subject without active consent"))?,
            None => ConsentCoverage::AllFields,
        };
        for field in &release.fields {
            let allowed = releasable
                .get(field.as_str())
                .is_some_and(|sensitive| !sensitive || coverage == ConsentCoverage::AllFields);
            if !allowed {
                return Err(unjustified(format!("released field {field:?} that the policy withholds")));
            }
        }
        Ok(())
    }
}

/// What a permit is checked against.
struct Permit<'a> {
    header: &'a QueryHeader,
    requester: &'a Member,
    dataset: &'a Dataset,
    decided_at_ms: UnixMillis,
    kind: AccessKind,
}

/// Opens the requester's query and checks its shape and the decision time.
fn open_query(
    record: &AccessRecord,
    check: SignatureCheck,
    entry_time_ms: UnixMillis,
) -> Result<Query, Rejection> {
    let request = check.open(&record.request).map_err(|error| {
        reject(RejectionCode::SignatureInvalid, format!("the requester's query: {error}"))
    })?;
    if request.payload.subjects.len() > QUERY_SUBJECTS_MAX || request.payload.fields.is_empty() {
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
    Ok(request)
}
