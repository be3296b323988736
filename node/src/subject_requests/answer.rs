//! The owner's answer to an open request: act by its kind when it is done
//! (the access report; the record deleted; a correction travels through
//! the correction loop, so the answer only records the decision), log
//! `Command::AnswerSubjectRequest`, and forget the record key.

use std::time::Duration;

use civmesh_certs::{now_unix_millis, SignedEnvelope};
use civmesh_policy::evaluation::format_time;
use civmesh_policy::model::{SubjectKeyHash, REASON_BYTES_MAX};
use civmesh_policy::state::RejectionCode;
use civmesh_policy::subject_request::{SubjectRequest, SubjectRequestKind, SubjectRequestOutcome};
use civmesh_policy::{Applied, Command, Rejection};
use serde::{Deserialize, Serialize};

use super::kept::{blocking, Kept, KeptKeys};
use super::report::{access_report, AccessReport};
use crate::query::{QueryService, SubjectKey};

/// How long the owner waits to catch up with the log to find a request
/// logged a moment ago, in ms.
const CATCH_UP_MS: u64 = 5_000;

/// `POST /v1/subject-requests/{id}/answer`: `{"done": true}` or
/// `{"refuse": "why"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// Done: the report made, the record deleted, the correction decided.
    #[serde(default)]
    pub done: bool,
    /// Refused, with the legal reason (1 to 1,024 bytes).
    #[serde(default)]
    pub refuse: Option<String>,
}

impl AnswerRequest {
    /// The outcome it asks for: exactly one of `done` and `refuse`.
    pub fn outcome(&self) -> Result<SubjectRequestOutcome, AnswerError> {
        match (self.done, &self.refuse) {
            (true, None) => Ok(SubjectRequestOutcome::Done),
            (false, Some(reason)) => {
                let reason = reason.trim();
                if reason.is_empty()
                    || reason.len() > REASON_BYTES_MAX
                    || reason.chars().any(char::is_control)
                {
                    return Err(AnswerError::Invalid(format!(
                        "a refusal's reason is 1 to {REASON_BYTES_MAX} bytes without control characters"
                    )));
                }
                Ok(SubjectRequestOutcome::Refused { reason: reason.to_string() })
            }
            _ => Err(AnswerError::Invalid("answer with either done: true or refuse: REASON".to_string())),
        }
    }
}

/// What the owner answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// The request's id, hex.
    pub id: String,
    /// What was asked.
    pub kind: SubjectRequestKind,
    /// The dataset.
    pub dataset: String,
    /// Done, or refused with why.
    pub outcome: SubjectRequestOutcome,
    /// When (ISO 8601, Asia/Shanghai).
    pub answered_at: String,
    /// After the deadline.
    pub late: bool,
    /// An access request's report.
    pub report: Option<AccessReport>,
    /// A deletion request's versions deleted from the record store.
    pub versions_deleted: Option<u64>,
}

/// Why a request could not be answered. Each message starts with a stable
/// code word.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The id or the answer is wrong.
    #[error("invalid_answer: {0}")]
    Invalid(String),
    /// No open request with this id.
    #[error("subject_request_unknown: no open subject request {0}")]
    NotOpen(String),
    /// This node's organisation does not own the request's dataset.
    #[error("not_owner: only the dataset's owner answers a subject request")]
    NotOwner,
    /// This node does not keep the record key (another node of the
    /// organisation took it): it can refuse, not act.
    #[error("record_key_not_kept: this node does not keep the request's record key; answer it where it was taken, or refuse it")]
    KeyNotKept,
    /// The kept key is not the one the request names (it does not hash to
    /// the logged subject under the intake's pair key, or names another
    /// dataset or kind): nothing was acted on.
    #[error(
        "record_key_mismatch: the kept record key is not the request's subject; nothing was done, refuse it"
    )]
    KeyMismatch,
    /// The record is no longer in this node's store: nothing was deleted.
    #[error(
        "record_gone: the record is no longer in this node's store; nothing was deleted, refuse it with why"
    )]
    RecordGone,
    /// The log refused the answer.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The log could not be reached.
    #[error("log_unavailable: {0}")]
    Log(#[from] civmesh_consensus::SubmitError),
    /// This node failed (its store, its key file, the report).
    #[error("owner_failed: {0}")]
    Internal(String),
}

impl AnswerError {
    /// The HTTP status the API answers it with.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            AnswerError::Invalid(_) => StatusCode::BAD_REQUEST,
            AnswerError::NotOpen(_) => StatusCode::NOT_FOUND,
            AnswerError::Rejected(rejection) if rejection.code == RejectionCode::SubjectRequestUnknown => {
                StatusCode::NOT_FOUND
            }
            AnswerError::Rejected(rejection) if rejection.code == RejectionCode::InvalidArgument => {
                StatusCode::BAD_REQUEST
            }
            AnswerError::NotOwner
            | AnswerError::KeyNotKept
            | AnswerError::KeyMismatch
            | AnswerError::RecordGone
            | AnswerError::Rejected(_) => StatusCode::CONFLICT,
            AnswerError::Log(_) => StatusCode::SERVICE_UNAVAILABLE,
            AnswerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn internal(error: impl std::fmt::Display) -> AnswerError {
    AnswerError::Internal(error.to_string())
}

/// Answers open request `id` (hex) as `request` says, acting on it first
/// when it is done; then forgets its record key.
pub async fn answer(query: &QueryService, id: &str, request: AnswerRequest) -> Result<Answered, AnswerError> {
    let id_bytes = civmesh_policy::hex_digest::from_hex(id)
        .ok_or_else(|| AnswerError::Invalid(format!("{id:?} is not a request id (64 hex digits)")))?;
    let outcome = request.outcome()?;
    let open = open_request(query, &id_bytes).await?;
    let kept = KeptKeys::of(&query.records).map_err(internal)?;
    let (mut report, mut versions_deleted) = (None, None);
    if outcome == SubjectRequestOutcome::Done && open.spec.kind != SubjectRequestKind::Correction {
        let key = {
            let kept = kept.clone();
            blocking(move || kept.get(&id_bytes)).await.map_err(internal)?.ok_or(AnswerError::KeyNotKept)?
        };
        let pair_key = query
            .subject_keys
            .for_requester(&open.intake)
            .ok_or_else(|| internal("this node holds no subject key for its organisation"))?;
        check_kept(&key, &open, &pair_key)?;
        match open.spec.kind {
            SubjectRequestKind::Access => {
                report = Some(access_report(query, &key.dataset, &key.record_key).await.map_err(internal)?);
            }
            SubjectRequestKind::Deletion => {
                versions_deleted = Some(delete(query, &key.dataset, key.record_key).await?);
            }
            SubjectRequestKind::Correction => {}
        }
    }
    let now_ms = now_unix_millis();
    let command = Command::AnswerSubjectRequest { id: id_bytes, outcome: outcome.clone() };
    let envelope = SignedEnvelope::sign(&query.key, &command, now_ms).map_err(internal)?;
    let result = query.log.submit(vec![envelope]).await?;
    match result.outcomes.into_iter().next() {
        Some(Ok(Applied::Done)) => {}
        Some(Ok(other)) => return Err(internal(format!("the log applied the answer as {other:?}"))),
        Some(Err(rejection)) => return Err(AnswerError::Rejected(rejection)),
        None => return Err(internal("the log gave no outcome")),
    }
    if let Err(error) = blocking(move || kept.forget(&id_bytes)).await {
        // Kept past its answer, it is dropped at the next request taken.
        tracing::warn!(%error, "could not forget an answered subject request's record key");
    }
    Ok(Answered {
        id: id.to_ascii_lowercase(),
        kind: open.spec.kind,
        dataset: open.spec.dataset,
        outcome,
        answered_at: format_time(now_ms),
        late: now_ms > open.spec.deadline_ms,
        report,
        versions_deleted,
    })
}

/// Open request `id`, if this node's organisation owns it (catching up
/// with the log once if this replica does not hold it open).
async fn open_request(query: &QueryService, id: &[u8; 32]) -> Result<SubjectRequest, AnswerError> {
    let me = query.key.node_id();
    let find = || {
        query.log.state().read(|applied| {
            let request = applied.policy.subject_requests.get(id)?.clone();
            let mine = applied.policy.active_member(&me).is_some_and(|member| member.org == request.owner);
            Some((request, mine))
        })
    };
    let mut found = find();
    if found.is_none() {
        let _ = query.log.linearizable_read_index(Duration::from_millis(CATCH_UP_MS)).await;
        found = find();
    }
    match found {
        None => Err(AnswerError::NotOpen(hex::encode(id))),
        Some((_, false)) => Err(AnswerError::NotOwner),
        Some((request, true)) => Ok(request),
    }
}

/// Whether `kept` is the key of `request`: the same dataset and kind, and
/// hashing to its subject under `pair_key` (the owner's key for the
/// intake's organisation). A key kept for another request, or corrupted,
/// is never acted on.
pub(super) fn check_kept(
    kept: &Kept,
    request: &SubjectRequest,
    pair_key: &SubjectKey,
) -> Result<(), AnswerError> {
    let spec = &request.spec;
    if kept.dataset != spec.dataset
        || kept.kind != spec.kind
        || SubjectKeyHash::of(pair_key, &kept.record_key) != spec.subject
    {
        return Err(AnswerError::KeyMismatch);
    }
    Ok(())
}

/// Deletes record `record_key` of `dataset` from this node's store (every
/// version and its index entries, then compaction); the versions deleted.
/// Refused, deleting nothing, if the record is no longer there.
async fn delete(query: &QueryService, dataset: &str, record_key: String) -> Result<u64, AnswerError> {
    let dataset = query
        .log
        .state()
        .read(|applied| applied.policy.datasets.get(dataset).cloned())
        .ok_or_else(|| internal("the dataset is no longer in the catalog"))?;
    let records = query.records.clone();
    tokio::task::spawn_blocking(move || {
        if records.latest_version(&dataset.id, &record_key).map_err(internal)?.is_none() {
            return Err(AnswerError::RecordGone);
        }
        records.delete_record(&dataset, &record_key).map_err(internal)
    })
    .await
    .map_err(internal)?
}
