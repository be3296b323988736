//! The subjects' requests (PIPL Art. 44-47): file one at the intake, list
//! the open ones, answer one at the owner. Record keys travel in bodies
//! only. See [`crate::subject_requests`].

use axum::extract::State;
use axum::Json;

use civmesh_policy::subject_request::SubjectRequestKind;

use crate::api::{ApiError, JsonBody, PathParams, Shared};
use crate::corrections::CorrectionSpec;
use crate::subject_requests::{AnswerRequest, Answered, Filed, IntakeRequest, SubjectRequestList};

/// `POST /v1/subject-requests`: take a resident's request and file it at
/// the dataset's owner; its id and deadline.
pub(crate) async fn file(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<IntakeRequest>,
) -> Result<Json<Filed>, ApiError> {
    let default_days = configured_deadline_days(&state)?;
    let correction = match (&request.kind, request.correction.clone()) {
        (SubjectRequestKind::Correction, correction) => correction,
        (_, None) => None,
        (_, Some(_)) => return Err(ApiError::bad_request("only a correction request carries a correction")),
    };
    let (dataset, record_key) = (request.dataset.clone(), request.record_key.clone());
    let mut filed = crate::subject_requests::file(&state.query, request, default_days)
        .await
        .map_err(|error| ApiError::new(error.status(), error.to_string()))?;
    if let Some(correction) = correction {
        let spec = CorrectionSpec {
            dataset,
            record_key,
            base_version: correction.base_version,
            changes: correction.changes,
            reason: correction.reason,
            evidence_text: format!(
                "居民本人申请更正 / requested by the resident (subject request {})",
                filed.id
            ),
            attachment_sha256: Vec::new(),
            operator: RESIDENT_OPERATOR.to_string(),
        };
        let id = crate::corrections::http::submit_caught_up(&state, spec).await?;
        filed.correction = Some(civmesh_policy::hex_digest::to_hex(&id));
    }
    Ok(Json(filed))
}

/// Who a correction a resident asked for names as its submitter.
pub const RESIDENT_OPERATOR: &str = "居民本人 (resident)";

/// `GET /v1/subject-requests`: the open requests this node's organisation
/// answers or took.
pub(crate) async fn list(State(state): State<Shared>) -> Result<Json<SubjectRequestList>, ApiError> {
    crate::subject_requests::list(&state.query).map(Json).map_err(ApiError::internal)
}

/// `POST /v1/subject-requests/{id}/answer`: `{"done": true}` or
/// `{"refuse": "why"}`, at the owner.
pub(crate) async fn answer(
    State(state): State<Shared>,
    PathParams(id): PathParams<String>,
    JsonBody(request): JsonBody<AnswerRequest>,
) -> Result<Json<Answered>, ApiError> {
    crate::subject_requests::answer(&state.query, &id, request)
        .await
        .map(Json)
        .map_err(|error| ApiError::new(error.status(), error.to_string()))
}

/// The node's `[subject_requests] deadline_days` (its directory holds the
/// record store and the config).
fn configured_deadline_days(state: &crate::api::ApiState) -> Result<u64, ApiError> {
    let node_dir = state
        .records
        .directory()
        .parent()
        .ok_or_else(|| ApiError::internal("the node directory is unknown"))?;
    let config = crate::config::NodeConfig::load(node_dir).map_err(ApiError::internal)?;
    config.subject_requests.deadline_days().map_err(ApiError::internal)
}
