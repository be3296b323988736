//! `civmesh subject list` and `GET /v1/subject-requests`: the open
//! requests of this node's organisation (as the owner who answers, or the
//! intake that took them), as people read them.

use civmesh_certs::now_unix_millis;
use civmesh_policy::evaluation::format_time;
use civmesh_policy::subject_request::{SubjectRequestCounts, SubjectRequestKind};
use serde::{Deserialize, Serialize};

use super::kept::{blocking, KeepError, KeptKeys};
use crate::query::QueryService;

/// The most requests one list shows (the earliest deadlines first).
pub const SUBJECT_REQUESTS_LISTED_MAX: usize = 1_000;

/// One open request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRequestView {
    /// Its id, hex.
    pub id: String,
    /// What is asked.
    pub kind: SubjectRequestKind,
    /// The dataset.
    pub dataset: String,
    /// The owner, who answers (`dept/civil-affairs`).
    pub owner_org: String,
    /// The organisation that took it (`street/jingansi`).
    pub intake_org: String,
    /// When it was logged (ISO 8601, Asia/Shanghai).
    pub filed_at: String,
    /// By when the owner must answer (ISO 8601, Asia/Shanghai).
    pub deadline: String,
    /// Open past its deadline.
    pub overdue: bool,
    /// This node's organisation answers it.
    pub to_answer_here: bool,
    /// This node keeps the record's key, so it can act on it.
    pub record_key_kept: bool,
}

/// `GET /v1/subject-requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRequestList {
    /// The open requests (at most [`SUBJECT_REQUESTS_LISTED_MAX`]), the
    /// earliest deadline first.
    pub requests: Vec<SubjectRequestView>,
    /// How many are open for this organisation in all.
    pub total: u64,
    /// Of those, how many are overdue.
    pub overdue: u64,
    /// The requests this organisation answered as the owner.
    pub answered: SubjectRequestCounts,
}

/// The open requests this node's organisation answers or took.
pub async fn list(query: &QueryService) -> Result<SubjectRequestList, KeepError> {
    let keys = KeptKeys::of(&query.records)?;
    let kept = blocking(move || keys.ids()).await?;
    let me = query.key.node_id();
    let now_ms = now_unix_millis();
    Ok(query.log.state().read(|applied| {
        let policy = &applied.policy;
        let Some(org) = policy.active_member(&me).map(|member| member.org.clone()) else {
            return SubjectRequestList {
                requests: Vec::new(),
                total: 0,
                overdue: 0,
                answered: SubjectRequestCounts::default(),
            };
        };
        let mut mine: Vec<_> = policy
            .subject_requests
            .values()
            .filter(|request| request.owner == org || request.intake == org)
            .collect();
        mine.sort_by_key(|request| (request.spec.deadline_ms, request.spec.id));
        let overdue = mine.iter().filter(|request| request.spec.deadline_ms < now_ms).count() as u64;
        let total = mine.len() as u64;
        let requests = mine
            .into_iter()
            .take(SUBJECT_REQUESTS_LISTED_MAX)
            .map(|request| {
                let id = hex::encode(request.spec.id);
                SubjectRequestView {
                    record_key_kept: kept.contains(&id),
                    id,
                    kind: request.spec.kind,
                    dataset: request.spec.dataset.clone(),
                    owner_org: request.owner.to_string(),
                    intake_org: request.intake.to_string(),
                    filed_at: format_time(request.filed_at_ms),
                    deadline: format_time(request.spec.deadline_ms),
                    overdue: request.spec.deadline_ms < now_ms,
                    to_answer_here: request.owner == org,
                }
            })
            .collect();
        let answered = policy.subject_request_counts.get(&org).copied().unwrap_or_default();
        SubjectRequestList { requests, total, overdue, answered }
    }))
}
