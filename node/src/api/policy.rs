//! The policy routes: signed commands, and reads of the replicated policy state.

use axum::extract::State;
use axum::Json;
use base64::Engine;
use civmesh_certs::SignedEnvelope;
use civmesh_policy::SignedCommand;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, JsonBody, QueryParams, Shared};

/// `POST /v1/commands`: signed envelopes, base64 of their wire bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandsRequest {
    /// The envelopes, committed together in one log entry, in order.
    pub envelopes: Vec<String>,
}

/// The answer: one outcome per command, and the state version after them.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandsResponse {
    /// Per command: `{"Ok": ...}` or `{"Err": {"code": ..., "detail": ...}}`.
    pub outcomes: Vec<Result<civmesh_policy::Applied, civmesh_policy::Rejection>>,
    /// The number of commands the state has applied.
    pub state_version: u64,
}

pub(crate) async fn submit_commands(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<CommandsRequest>,
) -> Result<Json<CommandsResponse>, ApiError> {
    let mut commands: Vec<SignedCommand> = Vec::with_capacity(request.envelopes.len());
    for (index, text) in request.envelopes.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| ApiError::bad_request(format!("envelope {index}: not base64: {error}")))?;
        let envelope = SignedEnvelope::from_bytes(&bytes)
            .map_err(|error| ApiError::bad_request(format!("envelope {index}: {error}")))?;
        commands.push(envelope);
    }
    let result = state.log.submit(commands).await.inspect_err(|_| {
        crate::api::metrics::Metrics::count(&state.metrics.commands_submitted, "failed");
    })?;
    for outcome in &result.outcomes {
        let label = if outcome.is_ok() { "accepted" } else { "rejected" };
        crate::api::metrics::Metrics::count(&state.metrics.commands_submitted, label);
    }
    Ok(Json(CommandsResponse { outcomes: result.outcomes, state_version: result.state_version }))
}

/// `GET /v1/policy/summary`: sizes of the replicated policy state.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolicySummary {
    /// The applied index.
    pub applied_index: u64,
    /// Commands applied (accepted or rejected).
    pub commands_applied: u64,
    /// Members, revoked ones included.
    pub members: usize,
    /// Revoked members.
    pub revoked_members: usize,
    /// Datasets.
    pub datasets: usize,
    /// Demands.
    pub demands: usize,
    /// Grants.
    pub grants: usize,
    /// Consent records.
    pub consents: usize,
    /// The applied state's digest, hex.
    pub state_digest: String,
}

pub(crate) async fn policy_summary(State(state): State<Shared>) -> Json<PolicySummary> {
    Json(state.log.state().read(|applied| PolicySummary {
        applied_index: applied.applied_index,
        commands_applied: applied.policy.commands_applied,
        members: applied.policy.members.len(),
        revoked_members: applied.policy.members.values().filter(|m| m.revoked.is_some()).count(),
        datasets: applied.policy.datasets.len(),
        demands: applied.policy.demands.len(),
        grants: applied.policy.grants.len(),
        consents: applied.policy.consents.len(),
        state_digest: hex::encode(applied.policy.digest),
    }))
}

/// One entry of `GET /v1/policy/demands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandEntry {
    /// The demand's id.
    pub id: u64,
    /// Who filed it.
    pub requester: String,
    /// The dataset.
    pub dataset: String,
    /// For what.
    pub purpose: String,
}

pub(crate) async fn policy_demands(State(state): State<Shared>) -> Json<Vec<DemandEntry>> {
    Json(state.log.state().read(|applied| {
        applied
            .policy
            .demands
            .values()
            .map(|demand| DemandEntry {
                id: demand.id,
                requester: demand.requester.to_string(),
                dataset: demand.dataset.clone(),
                purpose: demand.purpose.clone(),
            })
            .collect()
    }))
}

pub(crate) async fn datasets(State(state): State<Shared>) -> Json<Vec<civmesh_policy::model::Dataset>> {
    Json(state.log.state().read(|applied| applied.policy.datasets.values().cloned().collect()))
}

/// `?expiry_days=N`.
#[derive(Debug, Deserialize)]
pub struct MatchQuery {
    /// Report grants expiring within this many days.
    #[serde(default = "default_expiry_days")]
    pub expiry_days: u32,
}

fn default_expiry_days() -> u32 {
    30
}

pub(crate) async fn policy_match(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<MatchQuery>,
) -> Json<civmesh_policy::CatalogMatch> {
    let now_ms = civmesh_certs::now_unix_millis();
    Json(
        state
            .log
            .state()
            .read(|applied| civmesh_policy::catalog_match(&applied.policy, now_ms, query.expiry_days)),
    )
}
