//! The HTTP routes of corrections (`/v1/corrections...`): submit at the
//! street; list, show, accept and reject at the owner; statistics anywhere.
//! Registered in [`crate::api::router`], behind the same bearer token.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use civmesh_policy::correction::{correction_stats, CorrectionStats};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, ApiState, READ_INDEX_TIMEOUT_MS};
use crate::corrections::{hex_id, parse_id, CorrectionError, CorrectionSpec, CorrectionView};

type Shared = std::sync::Arc<ApiState>;

/// How long a submission waits to catch up with the leader, at most.
pub const SUBMIT_CATCH_UP_MS: u64 = 1_000;
/// The most corrections one list returns.
pub const CORRECTIONS_LISTED_MAX: usize = 1_000;

impl From<CorrectionError> for ApiError {
    fn from(error: CorrectionError) -> Self {
        let status = match &error {
            CorrectionError::Invalid(_) => StatusCode::BAD_REQUEST,
            CorrectionError::Unknown(_) => StatusCode::NOT_FOUND,
            CorrectionError::NotReviewable { .. } => StatusCode::CONFLICT,
            CorrectionError::Full => StatusCode::SERVICE_UNAVAILABLE,
            CorrectionError::Store(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        ApiError::new(status, error.to_string())
    }
}

/// The answer of `POST /v1/corrections`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Submitted {
    /// The correction id, hex.
    pub correction: String,
}

/// `POST /v1/corrections`: sign and queue a correction for the owner.
pub async fn submit(
    State(state): State<Shared>,
    Json(spec): Json<CorrectionSpec>,
) -> Result<Json<Submitted>, ApiError> {
    // Catch up with the catalog if the leader can be reached; a street cut
    // off from the quorum still takes corrections into its outbox.
    let _ = state.log.linearizable_read_index(Duration::from_millis(SUBMIT_CATCH_UP_MS)).await;
    let id = state.corrections.submit(spec).await?;
    Ok(Json(Submitted { correction: hex_id(&id) }))
}

/// `?status=NAME&limit=N`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only corrections in this status (e.g. `awaiting_review`).
    #[serde(default)]
    pub status: Option<String>,
}

/// `GET /v1/corrections`: this node's inbox and outbox, newest first.
pub async fn list(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<CorrectionView>>, ApiError> {
    Ok(Json(state.corrections.list(query.status.as_deref(), CORRECTIONS_LISTED_MAX)?))
}

/// `GET /v1/corrections/{id}`: one correction, beside the record's base
/// and current versions at the owner.
pub async fn show(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<CorrectionView>, ApiError> {
    Ok(Json(state.corrections.view(&parse_id(&id)?)?))
}

/// `POST /v1/corrections/{id}/accept`.
pub async fn accept(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<CorrectionView>, ApiError> {
    Ok(Json(state.corrections.review(&parse_id(&id)?, true, "").await?))
}

/// The body of `POST /v1/corrections/{id}/reject`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rejection {
    /// Why, for the submitter.
    pub reason: String,
}

/// `POST /v1/corrections/{id}/reject`.
pub async fn reject(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(rejection): Json<Rejection>,
) -> Result<Json<CorrectionView>, ApiError> {
    Ok(Json(state.corrections.review(&parse_id(&id)?, false, &rejection.reason).await?))
}

/// `GET /v1/corrections/stats`: per owner and dataset, from the policy log
/// (after a linearizable read, so every node answers alike).
pub async fn stats(State(state): State<Shared>) -> Result<Json<Vec<CorrectionStats>>, ApiError> {
    state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
    Ok(Json(state.log.state().read(|applied| correction_stats(&applied.policy.corrections))))
}
