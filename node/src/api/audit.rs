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

/// `GET /v1/audit/checkpoints`: final checkpoints and the open one.
pub(crate) async fn audit_checkpoints(State(state): State<Shared>) -> Json<serde_json::Value> {
    let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
    Json(state.log.state().read(|applied| {
        let policy = &applied.policy;
        let checkpoint = |body: &civmesh_policy::audit::CheckpointBody, cosigners: Vec<String>| {
            serde_json::json!({
                "tree_size": body.tree_size, "root": hex(&body.root), "log_index": body.log_index,
                "cosigners": cosigners,
            })
        };
        serde_json::json!({
            "access_entries": policy.access_log_length,
            "leaves": policy.audit_frontier.size(),
            "final": policy.checkpoints.iter().map(|c| checkpoint(&c.body, c.cosigners.iter().map(|n| n.to_string()).collect())).collect::<Vec<_>>(),
            "pending": policy.pending_checkpoint().map(|p| checkpoint(&p.body, p.cosigners.iter().map(|n| n.to_string()).collect())),
        })
    }))
}
