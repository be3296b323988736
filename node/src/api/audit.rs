//! The audit routes: the command archive, the checkpoints of the access
//! log, and proofs from its stored tree.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use civmesh_policy::audit::TreeReadError;
use serde::{Deserialize, Serialize};

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

/// `?leaf=N&tree_size=N` of `GET /v1/audit/proofs/inclusion`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The leaf, from 0.
    pub leaf: u64,
    /// The tree's size; the latest final checkpoint's when absent.
    pub tree_size: Option<u64>,
}

/// `?from=N&tree_size=N` of `GET /v1/audit/proofs/consistency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The earlier tree's size (at least 1).
    pub from: u64,
    /// The later tree's size; the latest final checkpoint's when absent.
    pub tree_size: Option<u64>,
}

/// An RFC 6962 inclusion proof, hashes in hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionAnswer {
    /// The tree's size.
    pub tree_size: u64,
    /// Its root.
    #[serde(with = "civmesh_policy::hex_digest")]
    pub root: [u8; 32],
    /// The leaf, from 0.
    pub leaf: u64,
    /// The leaf's value (the access entry's commitment).
    #[serde(with = "civmesh_policy::hex_digest")]
    pub leaf_value: [u8; 32],
    /// The audit path, deepest sibling first.
    #[serde(with = "civmesh_policy::hex_digest::many")]
    pub proof: Vec<[u8; 32]>,
}

/// An RFC 6962 consistency proof, hashes in hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyAnswer {
    /// The earlier tree's size.
    pub from: u64,
    /// Its root.
    #[serde(with = "civmesh_policy::hex_digest")]
    pub from_root: [u8; 32],
    /// The later tree's size.
    pub tree_size: u64,
    /// Its root.
    #[serde(with = "civmesh_policy::hex_digest")]
    pub root: [u8; 32],
    /// The proof.
    #[serde(with = "civmesh_policy::hex_digest::many")]
    pub proof: Vec<[u8; 32]>,
}

/// The tree size asked for, or the latest final checkpoint's (the applied
/// tree's before any); not found past what this replica applied.
fn proof_size(state: &Shared, asked: Option<u64>) -> Result<u64, ApiError> {
    let (applied, anchored) = state.log.state().read(|applied| {
        let policy = &applied.policy;
        let anchored = policy.last_checkpoint.as_ref().map(|last| last.body.tree_size);
        (policy.audit_frontier.size(), anchored)
    });
    let size = asked.or(anchored).unwrap_or(applied);
    if size > applied {
        let message = format!("the audit tree has {applied} leaves here, not {size}");
        return Err(ApiError::new(StatusCode::NOT_FOUND, message));
    }
    Ok(size)
}

fn tree_error(error: TreeReadError<civmesh_consensus::HistoryError>) -> ApiError {
    match error {
        TreeReadError::OutOfRange(message) => ApiError::bad_request(message),
        TreeReadError::NotHeld(_) => ApiError::new(StatusCode::NOT_FOUND, error.to_string()),
        TreeReadError::Store(error) => ApiError::internal(error),
    }
}

/// `GET /v1/audit/proofs/inclusion`: the proof that a leaf is in the tree
/// of a size, read from this replica's stored tree.
pub(crate) async fn inclusion_proof(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<InclusionQuery>,
) -> Result<Json<InclusionAnswer>, ApiError> {
    let tree_size = proof_size(&state, query.tree_size)?;
    let history = state.log.history();
    let proof = history.inclusion_proof(query.leaf, tree_size).map_err(tree_error)?;
    let root = history.tree_root(tree_size).map_err(tree_error)?;
    let leaf_values = history.audit_leaves(query.leaf, 1).map_err(ApiError::internal)?;
    let Some(&leaf_value) = leaf_values.first() else {
        let message = format!("this replica does not hold leaf {} (it joined by snapshot)", query.leaf);
        return Err(ApiError::new(StatusCode::NOT_FOUND, message));
    };
    Ok(Json(InclusionAnswer { tree_size, root, leaf: query.leaf, leaf_value, proof }))
}

/// `GET /v1/audit/proofs/consistency`: the proof that the tree of one size
/// is a prefix of the tree of a later one.
pub(crate) async fn consistency_proof(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<ConsistencyQuery>,
) -> Result<Json<ConsistencyAnswer>, ApiError> {
    let tree_size = proof_size(&state, query.tree_size)?;
    let history = state.log.history();
    let proof = history.consistency_proof(query.from, tree_size).map_err(tree_error)?;
    Ok(Json(ConsistencyAnswer {
        from: query.from,
        from_root: history.tree_root(query.from).map_err(tree_error)?,
        tree_size,
        root: history.tree_root(tree_size).map_err(tree_error)?,
        proof,
    }))
}
