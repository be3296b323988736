//! The audit routes: the command archive and the checkpoints of the access log.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::{ApiError, QueryParams, Shared};

/// The most archived commands one `GET /v1/audit/commands` returns.
pub const AUDIT_COMMANDS_PER_REQUEST_MAX: usize = 2_000;
/// The bytes of one page of archived commands at most (one command may
/// exceed it alone).
pub const AUDIT_PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// `?from=SEQ&limit=N`.
#[derive(Debug, Deserialize)]
pub struct AuditCommandsQuery {
    /// The first sequence number wanted (1 = genesis).
    #[serde(default = "first_sequence")]
    pub from: u64,
    /// How many at most.
    #[serde(default = "commands_per_request")]
    pub limit: usize,
}

fn first_sequence() -> u64 {
    1
}

fn commands_per_request() -> usize {
    AUDIT_COMMANDS_PER_REQUEST_MAX
}

/// `GET /v1/audit/commands`: the archive of applied commands, in order, as
/// the canonical (bincode) encoding of a list of `ArchivedCommand`.
pub(crate) async fn audit_commands(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<AuditCommandsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.clamp(1, AUDIT_COMMANDS_PER_REQUEST_MAX);
    let mut commands = state.log.history().commands(query.from.max(1), limit).map_err(ApiError::internal)?;
    // A page stays well inside the decoder's bound; the client asks again.
    let mut page_bytes = 0;
    let fits = commands
        .iter()
        .take_while(|command| {
            page_bytes += command.envelope.len() + 64;
            page_bytes <= AUDIT_PAGE_BYTES_MAX
        })
        .count()
        .max(1);
    commands.truncate(fits);
    let bytes = civmesh_certs::codec::encode(&commands).map_err(ApiError::internal)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// The most final checkpoints one `GET /v1/audit/checkpoints` page holds.
pub const CHECKPOINTS_PAGE_MAX: usize = 1_000;

/// `?from=N&limit=N` of `GET /v1/audit/checkpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsQuery {
    /// The first final checkpoint wanted, by number (0 = the first).
    #[serde(default)]
    pub from: u64,
    /// How many at most (clamped to 1..=`CHECKPOINTS_PAGE_MAX`).
    #[serde(default = "checkpoints_per_page")]
    pub limit: usize,
}

fn checkpoints_per_page() -> usize {
    CHECKPOINTS_PAGE_MAX
}

/// What the checkpoints page says of one checkpoint.
fn checkpoint_json(
    body: &civmesh_policy::audit::CheckpointBody,
    cosigners: &std::collections::BTreeSet<civmesh_certs::NodeId>,
) -> serde_json::Value {
    serde_json::json!({
        "tree_size": body.tree_size,
        "root": hex::encode(body.root),
        "log_index": body.log_index,
        "cosigners": cosigners.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// `GET /v1/audit/checkpoints`: the audit tree now, the latest final
/// checkpoint, a page of the final ones from `from`, and the open one.
pub(crate) async fn audit_checkpoints(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<CheckpointsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = query.limit.clamp(1, CHECKPOINTS_PAGE_MAX);
    let (first, page) = state.log.history().checkpoints(query.from, limit).map_err(ApiError::internal)?;
    Ok(Json(state.log.state().read(|applied| {
        let policy = &applied.policy;
        let next = first.saturating_add(page.len() as u64);
        serde_json::json!({
            "access_entries": policy.access_log_length,
            "leaves": policy.audit_frontier.size(),
            "root": hex::encode(policy.audit_frontier.root()),
            "final_count": policy.checkpoints_final,
            "latest": policy.last_checkpoint.as_ref().map(|last| checkpoint_json(&last.body, &last.cosigners)),
            "final": page.iter().map(|done| checkpoint_json(&done.body, &done.cosigners)).collect::<Vec<_>>(),
            "next_from": (next < policy.checkpoints_final && !page.is_empty()).then_some(next),
            "pending": policy.pending_checkpoint().map(|open| checkpoint_json(&open.body, &open.cosigners)),
        })
    })))
}
