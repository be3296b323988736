//! Requests from the subject: filed by the intake, answered by the owner.

use civmesh_certs::{NodeId, OrgId, UnixMillis};

use super::rejection::{check_text, reject, Rejection, RejectionCode};
use super::{Applied, PolicyState};
use crate::model::REASON_BYTES_MAX;
use crate::subject_request::{
    SubjectRequest, SubjectRequestId, SubjectRequestOutcome, SubjectRequestSpec,
    SUBJECT_REQUEST_DEADLINE_MS_MAX, SUBJECT_REQUEST_DEADLINE_MS_MIN,
};

/// The most requests open at once, federation-wide.
pub const SUBJECT_REQUESTS_OPEN_MAX: usize = 100_000;
/// The most requests one intake organisation has open at once, so one
/// hostile member cannot fill the federation's bound.
pub const SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX: u64 = 1_000;

impl PolicyState {
    /// A request names a known dataset, a deadline 1 to 60 days after its
    /// entry, and an id not open already; the log holds at most
    /// [`SUBJECT_REQUESTS_OPEN_MAX`] open.
    pub(super) fn validate_subject_request(
        &self,
        spec: &SubjectRequestSpec,
        intake: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        if !self.datasets.contains_key(&spec.dataset) {
            return Err(reject(RejectionCode::DatasetUnknown, format!("no dataset {}", spec.dataset)));
        }
        let earliest_ms = entry_time_ms.saturating_add(SUBJECT_REQUEST_DEADLINE_MS_MIN);
        let latest_ms = entry_time_ms.saturating_add(SUBJECT_REQUEST_DEADLINE_MS_MAX);
        if !(earliest_ms..=latest_ms).contains(&spec.deadline_ms) {
            return Err(reject(RejectionCode::InvalidArgument, "the deadline is 1 to 60 days after filing"));
        }
        if self.subject_requests.contains_key(&spec.id) {
            return Err(reject(RejectionCode::SubjectRequestDuplicate, "a request with this id is open"));
        }
        if self.subject_requests.len() >= SUBJECT_REQUESTS_OPEN_MAX {
            return Err(reject(RejectionCode::Overloaded, "too many subject requests are open"));
        }
        let open = self.subject_requests_open_by_intake.get(intake).copied().unwrap_or(0);
        if open >= SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX {
            return Err(reject(
                RejectionCode::Overloaded,
                format!("{intake} has {SUBJECT_REQUESTS_OPEN_PER_INTAKE_MAX} subject requests open"),
            ));
        }
        Ok(())
    }

    pub(super) fn file_subject_request(
        &mut self,
        spec: SubjectRequestSpec,
        intake: OrgId,
        at_ms: UnixMillis,
    ) -> Applied {
        let Some(owner) = self.datasets.get(&spec.dataset).map(|dataset| dataset.owner.clone()) else {
            return Applied::Done;
        };
        *self.subject_requests_open_by_intake.entry(intake.clone()).or_default() += 1;
        let request = SubjectRequest { spec, owner, intake, filed_at_ms: at_ms };
        self.subject_requests.insert(request.spec.id, request);
        Applied::Done
    }

    /// Only the dataset's owner answers an open request; a refusal says why.
    pub(super) fn check_subject_request_owner(
        &self,
        org: &OrgId,
        id: &SubjectRequestId,
    ) -> Result<(), Rejection> {
        let request = self.subject_requests.get(id).ok_or_else(subject_request_unknown)?;
        self.check_owner(org, &request.spec.dataset)
    }

    pub(super) fn validate_subject_answer(
        &self,
        id: &SubjectRequestId,
        outcome: &SubjectRequestOutcome,
    ) -> Result<(), Rejection> {
        if !self.subject_requests.contains_key(id) {
            return Err(subject_request_unknown());
        }
        match outcome {
            SubjectRequestOutcome::Done => Ok(()),
            SubjectRequestOutcome::Refused { reason } => check_text("reason", reason, REASON_BYTES_MAX),
        }
    }

    /// Closes the request and counts its answer for its owner.
    pub(super) fn answer_subject_request(
        &mut self,
        id: &SubjectRequestId,
        outcome: &SubjectRequestOutcome,
        at_ms: UnixMillis,
    ) -> Applied {
        let Some(request) = self.subject_requests.remove(id) else { return Applied::Done };
        super::count_down(&mut self.subject_requests_open_by_intake, &request.intake);
        let counts = self.subject_request_counts.entry(request.owner).or_default();
        counts.answered += 1;
        if at_ms > request.spec.deadline_ms {
            counts.answered_late += 1;
        }
        if matches!(outcome, SubjectRequestOutcome::Refused { .. }) {
            counts.refused += 1;
        }
        Applied::Done
    }

    /// The open requests past their deadline at `now_ms`.
    pub fn subject_requests_overdue(&self, now_ms: UnixMillis) -> Vec<&SubjectRequest> {
        self.subject_requests.values().filter(|request| request.spec.deadline_ms < now_ms).collect()
    }

    /// The open requests a node of `owner` is to answer.
    pub fn subject_requests_for(&self, owner: &OrgId) -> Vec<&SubjectRequest> {
        self.subject_requests.values().filter(|request| request.owner == *owner).collect()
    }

    /// Whether `node`'s organisation took request `id` (the intake may see
    /// its own requests).
    pub fn subject_request_intake_is(&self, id: &SubjectRequestId, node: &NodeId) -> bool {
        let org = self.members.get(node).map(|member| &member.org);
        self.subject_requests.get(id).is_some_and(|request| Some(&request.intake) == org)
    }
}

fn subject_request_unknown() -> Rejection {
    reject(RejectionCode::SubjectRequestUnknown, "no open subject request with this id")
}
