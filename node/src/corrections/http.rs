//! The HTTP routes of corrections (`/v1/corrections...`): submit at the
//! street; list, show, accept and reject at the owner; statistics and the
//! evaluation of departments (`/v1/evaluation`) anywhere.
//! Rows of [`crate::api::routes::routes`], behind the same bearer token.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use civmesh_policy::correction::CorrectionStats;
use civmesh_policy::correction_tally::correction_stats;
use civmesh_policy::evaluation::{Evaluation, EvaluationFacts, EvaluationQuery};
use serde::{Deserialize, Serialize};

use crate::api::{
    ApiError, ApiState, JsonBody, PathParams, QueryParams, RawBody, TokenHolder, READ_INDEX_TIMEOUT_MS,
};
use crate::corrections::attachments::{content_type, AttachmentError, Uploaded};
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
            CorrectionError::StatusUnknown(_) => StatusCode::BAD_REQUEST,
            CorrectionError::Attachment(AttachmentError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            CorrectionError::Attachment(
                AttachmentError::IndexUnknown { .. } | AttachmentError::NotArrived { .. },
            ) => StatusCode::NOT_FOUND,
            CorrectionError::Attachment(_) => StatusCode::BAD_REQUEST,
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
    holder: Option<Extension<TokenHolder>>,
    JsonBody(mut spec): JsonBody<CorrectionSpec>,
) -> Result<Json<Submitted>, ApiError> {
    spec.operator = operator(holder, Some(&spec.operator))?;
    let id = submit_caught_up(&state, spec).await?;
    Ok(Json(Submitted { correction: hex_id(&id) }))
}

/// Submits `spec` after catching up with the catalog if the leader can be
/// reached (a street cut off from the quorum still takes corrections into
/// its outbox). The API's and the console's one way in.
pub(crate) async fn submit_caught_up(
    state: &Shared,
    spec: CorrectionSpec,
) -> Result<civmesh_policy::correction::CorrectionId, CorrectionError> {
    let _ = state.log.linearizable_read_index(Duration::from_millis(SUBMIT_CATCH_UP_MS)).await;
    state.corrections.submit(spec).await
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
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Vec<CorrectionView>>, ApiError> {
    if let Some(wanted) = &query.status {
        crate::corrections::check_status_filter(wanted)?;
    }
    let mut views = state.corrections.list(query.status.as_deref(), CORRECTIONS_LISTED_MAX)?;
    state.corrections.annotate(&mut views);
    Ok(Json(views))
}

/// `GET /v1/corrections/{id}`: one correction, beside the record's base
/// and current versions at the owner.
pub async fn show(
    State(state): State<Shared>,
    PathParams(id): PathParams<String>,
) -> Result<Json<CorrectionView>, ApiError> {
    Ok(Json(state.corrections.view(&parse_id(&id)?)?))
}

/// The person accountable for a submission or review: the named holder of
/// a scoped token (with the person it names, if any, as "person (holder)"),
/// or, with the admin token, the person the body names (required).
fn operator(holder: Option<Extension<TokenHolder>>, named: Option<&str>) -> Result<String, ApiError> {
    let named = named.map(str::trim).filter(|named| !named.is_empty());
    match (holder, named) {
        (Some(Extension(TokenHolder(holder))), Some(named)) => Ok(format!("{named} ({holder})")),
        (Some(Extension(TokenHolder(holder))), None) => Ok(holder),
        (None, Some(named)) => Ok(named.to_string()),
        (None, None) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name the operator: `operator` in the body (the admin token names no one)",
        )),
    }
}

/// The body of `POST /v1/corrections/{id}/accept`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Acceptance {
    /// Who accepts (required with the admin token).
    #[serde(default)]
    pub operator: Option<String>,
}

/// `POST /v1/corrections/attachments`: keeps a file (the raw body) at this
/// node by its SHA-256, for a correction to name; at most the node's
/// `attachment_bytes_max`.
pub async fn upload_attachment(
    State(state): State<Shared>,
    RawBody(body): RawBody,
) -> Result<Json<Uploaded>, ApiError> {
    let digest = state.corrections.upload_attachment(&body)?;
    Ok(Json(Uploaded {
        sha256: hex_id(&digest),
        bytes: body.len() as u64,
        content_type: content_type(&body).to_string(),
    }))
}

/// `GET /v1/corrections/{id}/attachments/{index}`: the attachment's bytes,
/// with the content type its bytes show.
pub async fn attachment(
    State(state): State<Shared>,
    PathParams((id, index)): PathParams<(String, u32)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let bytes = state.corrections.attachment(&parse_id(&id)?, index)?;
    let kind = content_type(&bytes);
    Ok(([(axum::http::header::CONTENT_TYPE, kind)], bytes).into_response())
}

/// `POST /v1/corrections/{id}/accept`.
pub async fn accept(
    State(state): State<Shared>,
    holder: Option<Extension<TokenHolder>>,
    PathParams(id): PathParams<String>,
    JsonBody(acceptance): JsonBody<Option<Acceptance>>,
) -> Result<Json<CorrectionView>, ApiError> {
    let operator = operator(holder, acceptance.unwrap_or_default().operator.as_deref())?;
    Ok(Json(state.corrections.review(&parse_id(&id)?, true, "", &operator).await?))
}

/// The body of `POST /v1/corrections/{id}/reject`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rejection {
    /// Why, for the submitter.
    pub reason: String,
    /// Who rejects (required with the admin token).
    #[serde(default)]
    pub operator: Option<String>,
}

/// `POST /v1/corrections/{id}/reject`.
pub async fn reject(
    State(state): State<Shared>,
    holder: Option<Extension<TokenHolder>>,
    PathParams(id): PathParams<String>,
    JsonBody(rejection): JsonBody<Rejection>,
) -> Result<Json<CorrectionView>, ApiError> {
    let operator = operator(holder, rejection.operator.as_deref())?;
    Ok(Json(state.corrections.review(&parse_id(&id)?, false, &rejection.reason, &operator).await?))
}

/// `GET /v1/corrections/stats`: per owner and dataset, from the policy log
/// (after a linearizable read, so every node answers alike).
pub async fn stats(State(state): State<Shared>) -> Result<Json<Vec<CorrectionStats>>, ApiError> {
    state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
    Ok(Json(state.log.state().read(|applied| correction_stats(&applied.policy.correction_tallies))))
}

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD&bucket=day|week|month` (Asia/Shanghai,
/// both days included).
#[derive(Debug, Default, Deserialize)]
pub struct EvaluationParams {
    /// The first day; the first event in the log if absent.
    #[serde(default)]
    pub from: Option<String>,
    /// The last day; up to the last event in the log if absent.
    #[serde(default)]
    pub to: Option<String>,
    /// The bucket length (day if absent).
    #[serde(default)]
    pub bucket: Option<String>,
}

/// `GET /v1/evaluation`: per owner, dataset and time bucket, and per street,
/// from the policy log (after a linearizable read, so every node that holds
/// the period's history answers alike; the notes say what a node does not).
pub async fn evaluation(
    State(state): State<Shared>,
    QueryParams(params): QueryParams<EvaluationParams>,
) -> Result<Json<Evaluation>, ApiError> {
    let query =
        EvaluationQuery::from_dates(params.from.as_deref(), params.to.as_deref(), params.bucket.as_deref())
            .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.to_string()))?;
    Ok(Json(evaluation_of(&state, &query).await?))
}

/// The evaluation `query` asks for, from the policy log after a
/// linearizable read (so nodes holding the period's history answer alike);
/// a query the log cannot answer (too many buckets, say) is a 400.
pub(crate) async fn evaluation_of(state: &Shared, query: &EvaluationQuery) -> Result<Evaluation, ApiError> {
    state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
    Ok(evaluation_as_applied(state, query).await?.1)
}

/// The most corrections one evaluation counts: those open, closed within
/// a day, and those that closed in the period or after it.
pub const EVALUATION_CORRECTIONS_MAX: usize = 1_000_000;

/// The evaluation `query` asks for, of the state this replica has applied
/// now (no read of the leader), with that state's log index. Only the copy
/// of what the evaluation reads ([`EvaluationFacts`]: one pass over the
/// corrections, demands and grants) is made under the state's read lock;
/// the corrections that left the state (closed a day before), from the
/// period's start on, are read from the history and the figures computed
/// on a blocking thread.
pub(crate) async fn evaluation_as_applied(
    state: &Shared,
    query: &EvaluationQuery,
) -> Result<(u64, Evaluation), ApiError> {
    let (index, facts) =
        state.log.state().read(|applied| (applied.applied_index, EvaluationFacts::of(&applied.policy)));
    let history = state.log.history().clone();
    let query = query.clone();
    tokio::task::spawn_blocking(move || {
        let pruned_before = history.closed_corrections_pruned_before().map_err(ApiError::internal)?;
        let read_from_ms = query.from_ms.unwrap_or(0).max(pruned_before.unwrap_or(0));
        let facts = with_closed_corrections(facts, &history, read_from_ms)?;
        let mut evaluation = facts
            .evaluate(&query)
            .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.to_string()))?;
        evaluation.notes.extend(history_note(&history)?);
        evaluation.notes.extend(pruned_note(pruned_before, query.from_ms.unwrap_or(0)));
        Ok((index, evaluation))
    })
    .await
    .map_err(ApiError::internal)?
}

/// `facts` and the corrections that left the state and closed at
/// `from_ms` or later (those closed before count in no bucket from
/// `from_ms` on), read after the state was copied: one that left in
/// between is in both, and counts once.
fn with_closed_corrections(
    mut facts: EvaluationFacts,
    history: &civmesh_consensus::History,
    from_ms: u64,
) -> Result<EvaluationFacts, ApiError> {
    let mut after = None;
    loop {
        let closed = history
            .closed_corrections(from_ms, after, civmesh_consensus::history::HISTORY_READ_ITEMS_MAX)
            .map_err(ApiError::internal)?;
        facts.add_closed(closed.read.iter().map(|(id, track)| (id, track)));
        if facts.corrections_copied() > EVALUATION_CORRECTIONS_MAX {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the period holds more than {EVALUATION_CORRECTIONS_MAX} corrections: start it later"
                ),
            ));
        }
        if closed.last.is_none() {
            return Ok(facts);
        }
        after = closed.last;
    }
}

/// What this replica no longer counts: the corrections that closed before
/// its retention (`[retention] closed_corrections_kept_days`), when the
/// period starts before it.
fn pruned_note(pruned_before: Option<u64>, from_ms: u64) -> Option<String> {
    pruned_before.filter(|before_ms| from_ms < *before_ms).map(|before_ms| {
        format!(
            "corrections that closed before {} are past this node's retention \
             ([retention] closed_corrections_kept_days) and are not counted",
            civmesh_policy::evaluation::format_time(before_ms)
        )
    })
}

/// What this replica cannot count: a node that installed a snapshot (to
/// join, or to catch up) holds the corrections that left the state from
/// then on only.
fn history_note(history: &civmesh_consensus::History) -> Result<Option<String>, ApiError> {
    let installed = history.snapshot_installed_at().map_err(ApiError::internal)?;
    // A node that installed one before the mark was kept: its first command.
    let first = history.commands(0, 1).map_err(ApiError::internal)?;
    let joined = first.first().map(|command| command.sequence.saturating_sub(1)).filter(|before| *before > 0);
    Ok(installed.or(joined).map(|commands| {
        format!(
            "this node installed a snapshot after command {commands} and holds the log from then on: \
             corrections that closed a day or more before then are not counted; a node that holds the \
             log from before then (and has not pruned it) counts them"
        )
    }))
}

#[cfg(test)]
mod tests {
    /// An evaluation says when its period starts before the corrections
    /// this node pruned, with the time in Asia/Shanghai, and not otherwise.
    #[test]
    fn an_evaluation_names_the_corrections_past_the_retention() {
        assert_eq!(super::pruned_note(None, 0), None, "nothing pruned");
        let before_ms = civmesh_policy::evaluation::parse_date("2026-05-28").unwrap();
        let note = super::pruned_note(Some(before_ms), before_ms - 1).expect("a period from before");
        assert!(note.contains("2026-05-28T00:00:00+08:00"), "{note}");
        assert!(note.contains("closed_corrections_kept_days"), "{note}");
        assert_eq!(super::pruned_note(Some(before_ms), before_ms), None, "a period from after");
    }
}
