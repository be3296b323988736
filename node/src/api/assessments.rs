//! `/v1/assessments`: the personal-information impact assessments this
//! node keeps (`crate::assessments`): record one, list them, read one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, JsonBody, PathParams, QueryParams, Shared};
use crate::assessments::{
    parse_digest, Assessment, AssessmentDigest, AssessmentError, AssessmentRecord, AssessmentStore,
    AssessmentSummary,
};

/// The answer of `POST /v1/assessments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentCreated {
    /// The digest a grant names.
    pub digest: AssessmentDigest,
}

/// The query of `GET /v1/assessments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessmentsQuery {
    /// Only the assessments of this dataset.
    pub dataset: Option<String>,
}

impl From<AssessmentError> for ApiError {
    fn from(error: AssessmentError) -> Self {
        let status = match error {
            AssessmentError::Invalid(_) => StatusCode::BAD_REQUEST,
            AssessmentError::Full => StatusCode::INSUFFICIENT_STORAGE,
            AssessmentError::Io { .. } | AssessmentError::Corrupt { .. } | AssessmentError::Sign(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, error.to_string())
    }
}

/// Runs `work` on the store off the async threads (it reads and syncs
/// files).
pub(crate) async fn on_store<T: Send + 'static, E: Send + 'static>(
    state: &Shared,
    work: impl FnOnce(&AssessmentStore) -> Result<T, E> + Send + 'static,
) -> Result<Result<T, E>, ApiError> {
    let store = state.assessments.clone();
    tokio::task::spawn_blocking(move || work(&store)).await.map_err(ApiError::internal)
}

/// `POST /v1/assessments`: this node signs and keeps an assessment; its
/// digest.
pub(crate) async fn create(
    State(state): State<Shared>,
    JsonBody(assessment): JsonBody<Assessment>,
) -> Result<Json<AssessmentCreated>, ApiError> {
    let now_ms = civmesh_certs::now_unix_millis();
    let record = on_store(&state, move |store| store.add(assessment, now_ms)).await??;
    Ok(Json(AssessmentCreated { digest: record.digest }))
}

/// `GET /v1/assessments`: every assessment this node keeps (at most
/// `ASSESSMENTS_MAX`), the oldest first, without their statements.
pub(crate) async fn list(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<AssessmentsQuery>,
) -> Result<Json<Vec<AssessmentSummary>>, ApiError> {
    let mut summaries = on_store(&state, AssessmentStore::list).await??;
    if let Some(dataset) = &query.dataset {
        summaries.retain(|summary| &summary.dataset == dataset);
    }
    Ok(Json(summaries))
}

/// `GET /v1/assessments/{id}`: one assessment, with its signed envelope; a
/// 400 for what is not a digest, a 404 if this node keeps none by it.
pub(crate) async fn show(
    State(state): State<Shared>,
    PathParams(id): PathParams<String>,
) -> Result<Json<AssessmentRecord>, ApiError> {
    let digest = parse_digest(&id)
        .ok_or_else(|| ApiError::bad_request("an assessment is named by 64 lowercase hex digits"))?;
    let record = on_store(&state, move |store| store.get(&digest)).await??;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no impact assessment {id}"));
    record.map(Json).ok_or_else(not_found)
}
