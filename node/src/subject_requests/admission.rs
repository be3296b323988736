//! The owner's checks of a subject's request before it looks the record
//! up: the whole command against this replica's state, as the log will
//! check it (the signer's authority and `validate_subject_request`), and
//! what this node adds (it owns the dataset, holds the pair key, and the
//! key hashes to the signed subject). So a refusal never depends on
//! whether the record exists: only a command the log would take can learn
//! that.

use civmesh_certs::{NodeId, OrgId, UnixMillis};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::state::{
    RejectionCode, COMMAND_SKEW_MS_MAX, SUBJECT_REQUESTS_OPEN_MAX, SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX,
};
use civmesh_policy::subject_request::{
    SubjectRequestSpec, SUBJECT_REQUEST_DEADLINE_MS_MAX, SUBJECT_REQUEST_DEADLINE_MS_MIN,
};
use civmesh_policy::{PolicyState, Rejection};

use super::OwnerOutcome;
use crate::query::SubjectKeys;

/// How much later than the owner's clock the log's entry time for the
/// request may be, in ms: the checks a later entry time makes harder (a
/// stale signature, an expiring certificate, the earliest deadline) are
/// made against it, so a request admitted here is not rejected there.
pub const ENTRY_SLACK_MS: u64 = 60_000;

/// What the owner checks one request against.
pub(super) struct Candidate<'a> {
    /// The intake node that signed it (the peer that sent it).
    pub signer: &'a NodeId,
    /// When it says it was signed.
    pub issued_at_ms: UnixMillis,
    /// The signed request.
    pub spec: &'a SubjectRequestSpec,
    /// The plain record key sent with it.
    pub record_key: &'a str,
}

fn rejected(code: RejectionCode, detail: impl Into<String>) -> OwnerOutcome {
    OwnerOutcome::Rejected(Rejection { code, detail: detail.into() })
}

fn refused(reason: &str) -> OwnerOutcome {
    OwnerOutcome::Refused(reason.to_string())
}

/// Checks `candidate` on `policy` for owner node `me`, with the log's
/// entry time from `now_ms` to [`ENTRY_SLACK_MS`] later; returns the
/// intake's organisation. A check the log makes is refused with the log's
/// code.
pub(super) fn admit(
    policy: &PolicyState,
    keys: &SubjectKeys,
    me: &NodeId,
    candidate: &Candidate<'_>,
    now_ms: UnixMillis,
) -> Result<OrgId, OwnerOutcome> {
    let spec = candidate.spec;
    let entry_latest_ms = now_ms.saturating_add(ENTRY_SLACK_MS);
    if candidate.issued_at_ms > now_ms.saturating_add(COMMAND_SKEW_MS_MAX) {
        return Err(rejected(RejectionCode::FutureDated, "the request is signed in the future"));
    }
    if candidate.issued_at_ms < entry_latest_ms.saturating_sub(COMMAND_SKEW_MS_MAX) {
        return Err(rejected(RejectionCode::Stale, "the request was signed too long ago"));
    }
    let intake = policy
        .members
        .get(candidate.signer)
        .ok_or_else(|| rejected(RejectionCode::SignerUnknown, "the intake is not a member"))?;
    if intake.revoked.is_some() {
        return Err(rejected(RejectionCode::SignerRevoked, "the intake was revoked"));
    }
    if intake.certificate_not_after_ms <= entry_latest_ms {
        return Err(rejected(RejectionCode::SignerCertificateExpired, "the intake's certificate expired"));
    }
    let dataset = policy
        .datasets
        .get(&spec.dataset)
        .ok_or_else(|| rejected(RejectionCode::DatasetUnknown, format!("no dataset {}", spec.dataset)))?;
    let earliest_ms = entry_latest_ms.saturating_add(SUBJECT_REQUEST_DEADLINE_MS_MIN);
    let latest_ms = now_ms.saturating_add(SUBJECT_REQUEST_DEADLINE_MS_MAX);
    if !(earliest_ms..=latest_ms).contains(&spec.deadline_ms) {
        return Err(rejected(RejectionCode::InvalidArgument, "the deadline is 1 to 60 days after filing"));
    }
    if policy.subject_requests.contains_key(&spec.id) {
        return Err(rejected(RejectionCode::SubjectRequestDuplicate, "a request with this id is open"));
    }
    if policy.subject_requests.len() >= SUBJECT_REQUESTS_OPEN_MAX {
        return Err(rejected(RejectionCode::Overloaded, "too many subject requests are open"));
    }
    let open = policy.subject_requests_open_by_intake.get(&intake.org).copied().unwrap_or(0);
    if open >= SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX {
        return Err(rejected(
            RejectionCode::Overloaded,
            format!("{} has {SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX} subject requests open", intake.org),
        ));
    }
    let mine = policy.active_member(me).ok_or_else(|| refused("the owner node is no active member"))?;
    if mine.org != dataset.owner {
        return Err(refused("this node's organisation does not own the dataset"));
    }
    let pair_key = keys
        .for_requester(&intake.org)
        .ok_or_else(|| refused("this node holds no subject key for its organisation"))?;
    if SubjectKeyHash::of(&pair_key, candidate.record_key) != spec.subject {
        return Err(refused("the record key does not match the signed subject"));
    }
    Ok(intake.org.clone())
}

/// The security event a reply to a peer's request counts, if any: every
/// request that learns a record does not exist, and every one refused or
/// rejected before it was logged.
pub fn security_event(outcome: &OwnerOutcome) -> Option<&'static str> {
    match outcome {
        OwnerOutcome::RecordUnknown => Some("subject_request_record_unknown"),
        OwnerOutcome::Refused(_) => Some("subject_request_refused"),
        OwnerOutcome::Rejected(_) => Some("subject_request_rejected"),
        OwnerOutcome::Filed | OwnerOutcome::Unavailable(_) => None,
    }
}
