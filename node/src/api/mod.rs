//! The node's HTTP API (axum), for operators, department systems and the
//! `civmesh cluster` commands. Every route needs the node's API token as a
//! bearer token. Bodies are JSON, bounded by [`API_REQUEST_BYTES_MAX`];
//! errors are `{"error": "..."}` with a fitting status code.

pub mod metrics;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use civmesh_certs::{NodeId, SignedEnvelope, VerifiedIdentity};
use civmesh_consensus::{PolicyLog, RaftPeer, Status, SubmitError};
use civmesh_policy::SignedCommand;
use serde::{Deserialize, Serialize};

use crate::corrections::http as correction_api;
use crate::records::{validate_row, Provenance, RecordStore, RecordVersion};
use crate::swarm::SwarmClient;

/// The largest request body accepted, in bytes.
pub const API_REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The most rows one import request may carry.
pub const IMPORT_ROWS_PER_REQUEST_MAX: usize = 5_000;
/// How long a linearizable read may wait.
pub const READ_INDEX_TIMEOUT_MS: u64 = 5_000;

/// What the handlers share.
pub struct ApiState {
    /// The policy-log member.
    pub log: PolicyLog<SwarmClient>,
    /// The swarm.
    pub swarm: SwarmClient,
    /// The admin bearer token (every scope).
    pub api_token: String,
    /// Scoped tokens.
    pub scoped_tokens: crate::api::tokens::TokenRegistry,
    /// This node's certificate.
    pub certificate_pem: String,
    /// What the certificate proves.
    pub identity: VerifiedIdentity,
    /// This organisation's authoritative records.
    pub records: Arc<RecordStore>,
    /// Queries: this node's key, secret and owner-side service.
    pub query: Arc<crate::query::QueryService>,
    /// Corrections: the inbox, the outbox and their worker.
    pub corrections: Arc<crate::corrections::CorrectionService>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::api::metrics::Metrics>,
}

type Shared = Arc<ApiState>;

/// An API error: a status code and a message.
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        let status = match error {
            SubmitError::Refused(_) => StatusCode::BAD_REQUEST,
            SubmitError::NoLeader(_) | SubmitError::CommitTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            SubmitError::Raft(_) => StatusCode::CONFLICT,
        };
        ApiError(status, error.to_string())
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// The API's routes.
pub fn router(state: Shared) -> Router {
    // An attachment is uploaded whole, so its route takes larger bodies.
    let attachment_bytes_max = state.corrections.attachment_limits().attachment_bytes_max;
    let limit = DefaultBodyLimit::max(usize::try_from(attachment_bytes_max).unwrap_or(usize::MAX));
    Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/certificate", get(certificate))
        .route("/v1/cluster/initialize", post(initialize))
        .route("/v1/cluster/learners", post(add_learner))
        .route("/v1/cluster/voters", put(change_voters))
        .route("/v1/commands", post(submit_commands))
        .route("/v1/read-index", get(read_index))
        .route("/v1/policy/summary", get(policy_summary))
        .route("/v1/policy/demands", get(policy_demands))
        .route("/v1/datasets", get(datasets))
        .route("/v1/policy/match", get(policy_match))
        .route("/v1/records", get(read_record))
        .route("/v1/records/import", post(import_records))
        .route("/v1/query", post(query_owner))
        .route("/v1/access-log", get(access_log))
        .route("/v1/subscriptions", post(subscribe))
        .route("/v1/subscriptions/updates", get(subscription_updates))
        .route("/v1/audit/commands", get(audit_commands))
        .route("/v1/audit/checkpoints", get(audit_checkpoints))
        .route("/v1/corrections", post(correction_api::submit))
        .route("/v1/corrections", get(correction_api::list))
        .route("/v1/corrections/stats", get(correction_api::stats))
        .route("/v1/evaluation", get(correction_api::evaluation))
        .route("/v1/corrections/{id}", get(correction_api::show))
        .route("/v1/corrections/{id}/accept", post(correction_api::accept))
        .route("/v1/corrections/{id}/reject", post(correction_api::reject))
        .route("/v1/corrections/attachments", post(correction_api::upload_attachment).layer(limit))
        .route("/v1/corrections/{id}/attachments/{index}", get(correction_api::attachment))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(API_REQUEST_BYTES_MAX))
        .with_state(state)
}

/// The admin token may do everything; a scoped token only what its scopes
/// name (`tokens::required_scope`); anything else is refused.
async fn require_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = presented else {
        return ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".to_string())
            .into_response();
    };
    if constant_time_equal(token.as_bytes(), state.api_token.as_bytes()) {
        return next.run(request).await;
    }
    let needed = crate::api::tokens::required_scope(request.method().as_str(), request.uri().path());
    match state.scoped_tokens.token_of(token) {
        Some(scoped) if scoped.scopes.contains(&needed) => {
            // Handlers that record a person (corrections) read the holder.
            let mut request = request;
            request.extensions_mut().insert(TokenHolder(scoped.name));
            next.run(request).await
        }
        Some(_) => ApiError(
            StatusCode::FORBIDDEN,
            format!("this token lacks the {needed:?} scope this request needs"),
        )
        .into_response(),
        None => {
            ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".to_string()).into_response()
        }
    }
}

/// The named holder of the scoped token a request presented (absent for the
/// admin token), set by the token check for the handlers.
#[derive(Debug, Clone)]
pub struct TokenHolder(pub String);

fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's PeerId.
    pub peer_id: String,
    /// Its organisation.
    pub org: String,
    /// Its role.
    pub role: String,
    /// Its libp2p address as Raft knows it.
    pub p2p_address: String,
    /// Peers connected now.
    pub connected_peers: Vec<String>,
    /// The policy log as this node sees it.
    pub raft: Status,
}

async fn status(State(state): State<Shared>) -> Json<NodeStatus> {
    Json(NodeStatus {
        peer_id: state.identity.node_id.to_string(),
        org: state.identity.org.to_string(),
        role: state.identity.role.to_string(),
        p2p_address: state.log.me().address.clone(),
        connected_peers: state.swarm.connected_peers().await.iter().map(ToString::to_string).collect(),
        raft: state.log.status(),
    })
}

async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let status = state.log.status_with_hash(false);
    let peers = state.swarm.connected_peers().await.len();
    let access_log_length = state.log.state().read(|applied| applied.policy.access_log.len());
    let text = state.metrics.render(&status, peers, access_log_length);
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// The OpenAPI 3 document of this API, kept beside the code.
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI_DOCUMENT)
}

async fn certificate(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "certificate_pem": state.certificate_pem }))
}

/// A member as the cluster routes name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerAddress {
    /// Its PeerId.
    pub peer_id: String,
    /// Its libp2p multiaddr.
    pub address: String,
}

fn raft_peer(peer: &PeerAddress) -> Result<RaftPeer, ApiError> {
    let node_id: NodeId =
        peer.peer_id.parse().map_err(|error: civmesh_certs::IdentityError| bad_request(error.to_string()))?;
    peer.address
        .parse::<libp2p::Multiaddr>()
        .map_err(|error| bad_request(format!("address {}: {error}", peer.address)))?;
    Ok(RaftPeer { node_id, address: peer.address.clone() })
}

/// `POST /v1/cluster/initialize`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitializeRequest {
    /// The founding voters, this node among them.
    pub voters: Vec<PeerAddress>,
}

async fn initialize(
    State(state): State<Shared>,
    Json(request): Json<InitializeRequest>,
) -> Result<Json<Status>, ApiError> {
    let voters = request.voters.iter().map(raft_peer).collect::<Result<Vec<_>, _>>()?;
    if !voters.iter().any(|voter| voter.node_id == state.log.me().node_id) {
        return Err(bad_request("the voters must include this node"));
    }
    state.log.initialize(voters).await?;
    Ok(Json(state.log.status()))
}

async fn add_learner(
    State(state): State<Shared>,
    Json(peer): Json<PeerAddress>,
) -> Result<Json<Status>, ApiError> {
    let peer = raft_peer(&peer)?;
    state.log.add_learner(peer).await?;
    Ok(Json(state.log.status()))
}

/// `PUT /v1/cluster/voters`.
#[derive(Debug, Serialize, Deserialize)]
pub struct VotersRequest {
    /// The PeerIds that are to be the voters.
    pub peer_ids: Vec<String>,
}

async fn change_voters(
    State(state): State<Shared>,
    Json(request): Json<VotersRequest>,
) -> Result<Json<Status>, ApiError> {
    let voters = request
        .peer_ids
        .iter()
        .map(|text| text.parse::<NodeId>().map_err(|error| bad_request(error.to_string())))
        .collect::<Result<_, _>>()?;
    state.log.change_voters(voters).await?;
    Ok(Json(state.log.status()))
}

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

async fn submit_commands(
    State(state): State<Shared>,
    Json(request): Json<CommandsRequest>,
) -> Result<Json<CommandsResponse>, ApiError> {
    let mut commands: Vec<SignedCommand> = Vec::with_capacity(request.envelopes.len());
    for (index, text) in request.envelopes.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| bad_request(format!("envelope {index}: not base64: {error}")))?;
        let envelope = SignedEnvelope::from_bytes(&bytes)
            .map_err(|error| bad_request(format!("envelope {index}: {error}")))?;
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

async fn read_index(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let index = state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
    Ok(Json(serde_json::json!({ "read_index": index, "applied_index": state.log.status().applied_index })))
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
    /// SHA-256 of the policy state, hex.
    pub state_hash: String,
}

async fn policy_summary(State(state): State<Shared>) -> Json<PolicySummary> {
    let state_hash = state.log.status().state_hash;
    Json(state.log.state().read(|applied| PolicySummary {
        applied_index: applied.applied_index,
        commands_applied: applied.policy.commands_applied,
        members: applied.policy.members.len(),
        revoked_members: applied.policy.members.values().filter(|m| m.revoked.is_some()).count(),
        datasets: applied.policy.datasets.len(),
        demands: applied.policy.demands.len(),
        grants: applied.policy.grants.len(),
        consents: applied.policy.consents.len(),
        state_hash,
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

async fn policy_demands(State(state): State<Shared>) -> Json<Vec<DemandEntry>> {
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

async fn datasets(State(state): State<Shared>) -> Json<Vec<civmesh_policy::model::Dataset>> {
    Json(state.log.state().read(|applied| applied.policy.datasets.values().cloned().collect()))
}

/// The dataset `id` if this node's organisation owns it.
fn owned_dataset(state: &ApiState, id: &str) -> Result<civmesh_policy::model::Dataset, ApiError> {
    let dataset = state
        .log
        .state()
        .read(|applied| applied.policy.datasets.get(id).cloned())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no dataset {id} in the catalog")))?;
    if dataset.owner != state.identity.org {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{} does not own {id}; {} does", state.identity.org, dataset.owner),
        ));
    }
    Ok(dataset)
}

/// `POST /v1/records/import?dataset=ID`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The import batch id, recorded as each version's provenance.
    pub batch: String,
    /// The source line number of the first row (for error reports).
    pub first_line: u64,
    /// The rows, as JSON objects of field name to value; each names every
    /// declared field.
    pub rows: Vec<std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>>,
    /// Only check the rows and report; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Write the rows that pass even if others are refused (by default a
    /// request with any refused row writes nothing).
    #[serde(default)]
    pub partial: bool,
}

/// A row that was refused, by source line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowFailure {
    /// The source line.
    pub line: u64,
    /// Why.
    pub error: String,
}

/// The answer to an import request.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportResponse {
    /// Rows written (each as a new version).
    pub written: usize,
    /// Rows equal to the record now, or to what the last import wrote: no
    /// version written, nothing pushed.
    #[serde(default)]
    pub unchanged: usize,
    /// Rows refused; none of them was written (nor any other row, unless
    /// `partial`).
    pub failures: Vec<RowFailure>,
    /// Corrections awaiting review on a changed record whose corrected
    /// fields the import left alone: now `superseded_by_import`, still
    /// reviewable on top of the new version.
    #[serde(default)]
    pub corrections_superseded: usize,
    /// Corrections awaiting review whose corrected fields the import changed
    /// too: decided as conflicts.
    #[serde(default)]
    pub corrections_in_conflict: usize,
}

/// `?dataset=ID[&key=KEY][&at_ms=T]`.
#[derive(Debug, Deserialize)]
pub struct RecordQuery {
    /// The dataset.
    pub dataset: String,
    /// The record key.
    #[serde(default)]
    pub key: Option<String>,
    /// Answer as of this time.
    #[serde(default)]
    pub at_ms: Option<u64>,
}

async fn import_records(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<RecordQuery>,
    Json(request): Json<ImportRequest>,
) -> Result<Json<ImportResponse>, ApiError> {
    let dataset = owned_dataset(&state, &query.dataset)?;
    if request.rows.len() > IMPORT_ROWS_PER_REQUEST_MAX {
        return Err(bad_request(format!("at most {IMPORT_ROWS_PER_REQUEST_MAX} rows per request")));
    }
    if request.batch.trim().is_empty() || request.batch.len() > 128 {
        return Err(bad_request("the batch id must be 1..=128 bytes"));
    }
    let store_error = |error: crate::records::RecordStoreError| {
        ApiError(StatusCode::INSUFFICIENT_STORAGE, format!("nothing written: {error}"))
    };
    let mut valid = Vec::with_capacity(request.rows.len());
    let mut failures = Vec::new();
    let mut first_line_of_key = std::collections::BTreeMap::new();
    for (offset, row) in request.rows.iter().enumerate() {
        let line = request.first_line + offset as u64;
        let checked = check_import_row(&dataset, row).and_then(|(key, fields)| {
            match first_line_of_key.insert(key.clone(), line) {
                Some(first) => {
                    first_line_of_key.insert(key, first);
                    Err(format!(
                        "the same {} as line {first}: a key once per import",
                        dataset.subject_key_field
                    ))
                }
                None => Ok((key, fields)),
            }
        });
        match checked {
            Ok(valid_row) => valid.push(valid_row),
            Err(error) => failures.push(RowFailure { line, error }),
        }
    }
    let nothing = |failures| ImportResponse {
        written: 0,
        unchanged: 0,
        failures,
        corrections_superseded: 0,
        corrections_in_conflict: 0,
    };
    if request.dry_run || (!failures.is_empty() && !request.partial) {
        return Ok(Json(nothing(failures)));
    }
    // An unchanged row writes nothing: equal to the record now, or to what
    // the last import wrote (a correction applied since stays).
    let mut changed_rows = Vec::with_capacity(valid.len());
    let mut unchanged = 0;
    for (key, fields) in valid {
        let history = state.records.history(&dataset.id, &key).map_err(store_error)?;
        let last_imported =
            history.iter().rev().find(|version| matches!(version.provenance, Provenance::Import { .. }));
        if history.last().is_some_and(|latest| latest.fields == fields)
            || last_imported.is_some_and(|imported| imported.fields == fields)
        {
            unchanged += 1;
        } else {
            changed_rows.push((key, fields));
        }
    }
    if changed_rows.is_empty() {
        return Ok(Json(ImportResponse { unchanged, ..nothing(failures) }));
    }
    let written = changed_rows.len();
    let provenance = Provenance::Import { batch: request.batch };
    let now_ms = civmesh_certs::now_unix_millis();
    let versions =
        state.records.write(&dataset.id, changed_rows.clone(), &provenance, now_ms).map_err(store_error)?;
    state.metrics.records_imported.inc_by(written as u64);
    let changed: Vec<(String, RecordVersion)> = changed_rows
        .into_iter()
        .zip(versions)
        .map(|((key, fields), version)| {
            (key, RecordVersion { version, written_at_ms: now_ms, provenance: provenance.clone(), fields })
        })
        .collect();
    // Corrections awaiting review on these records learn of the new versions.
    let (corrections_superseded, corrections_in_conflict) =
        state.corrections.records_imported(&dataset.id, &changed).await;
    // Subscribers hear of the new versions, each push logged first.
    let query = state.query.clone();
    let dataset_id = dataset.id.clone();
    tokio::spawn(async move { query.push_changes(&dataset_id, &changed).await });
    Ok(Json(ImportResponse { written, unchanged, failures, corrections_superseded, corrections_in_conflict }))
}

/// An import row: every declared field given, and valid for the schema.
fn check_import_row(
    dataset: &civmesh_policy::model::Dataset,
    row: &std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>,
) -> Result<(String, std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>), String> {
    if let Some(missing) = dataset.fields.iter().find(|field| !row.contains_key(&field.name)) {
        return Err(format!("the declared field {:?} is missing (give it, null for no value)", missing.name));
    }
    validate_row(dataset, row).map_err(|error| error.to_string())
}

/// The answer of `GET /v1/records`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordAnswer {
    /// The dataset.
    pub dataset: String,
    /// Records in the dataset (with `key` absent).
    pub count: u64,
    /// The version asked for (latest, or as of `at_ms`).
    pub record: Option<RecordVersion>,
    /// Every version, oldest first (with `key`).
    pub history: Vec<RecordVersion>,
}

async fn read_record(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<RecordQuery>,
) -> Result<Json<RecordAnswer>, ApiError> {
    let dataset = owned_dataset(&state, &query.dataset)?;
    let internal = |error: crate::records::RecordStoreError| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    };
    let count = state.records.count(&dataset.id).map_err(internal)?;
    let Some(key) = query.key else {
        return Ok(Json(RecordAnswer { dataset: dataset.id, count, record: None, history: vec![] }));
    };
    let history = state.records.history(&dataset.id, &key).map_err(internal)?;
    let record = match query.at_ms {
        Some(at_ms) => history.iter().rev().find(|version| version.written_at_ms <= at_ms).cloned(),
        None => history.last().cloned(),
    };
    Ok(Json(RecordAnswer { dataset: dataset.id, count, record, history }))
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

async fn policy_match(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<MatchQuery>,
) -> Json<civmesh_policy::CatalogMatch> {
    let now_ms = civmesh_certs::now_unix_millis();
    Json(
        state
            .log
            .state()
            .read(|applied| civmesh_policy::catalog_match(&applied.policy, now_ms, query.expiry_days)),
    )
}

/// `POST /v1/query`: ask the dataset's owner for records.
async fn query_owner(
    State(state): State<Shared>,
    Json(request): Json<crate::query::QuerySpec>,
) -> Result<Json<crate::query::QueryAnswer>, ApiError> {
    if request.keys.is_empty() || request.keys.len() > civmesh_policy::access::QUERY_SUBJECTS_MAX {
        return Err(bad_request(format!(
            "a query names 1..={} keys",
            civmesh_policy::access::QUERY_SUBJECTS_MAX
        )));
    }
    if state.query.subject_key_secret.is_empty() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has no subject-key secret configured".to_string(),
        ));
    }
    let peer = owner_peer(&state, &request.dataset).await?;
    let answer =
        crate::query::ask(&state.swarm, &state.query.key, &state.query.subject_key_secret, &peer, request)
            .await
            .map_err(|reason| {
                crate::api::metrics::Metrics::count(&state.metrics.queries_asked, "refused");
                ApiError(StatusCode::BAD_GATEWAY, reason.to_string())
            })?;
    crate::api::metrics::Metrics::count(&state.metrics.queries_asked, crate::query::outcome_label(&answer));
    Ok(Json(answer))
}

/// One entry of `GET /v1/access-log` (subjects only as keyed hashes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessLogSummary {
    /// Position in the access log.
    pub sequence: u64,
    /// The requester's PeerId.
    pub requester: String,
    /// The requester's organisation, by name (`street/jingansi`).
    pub requester_org: String,
    /// The owner node's PeerId.
    pub owner: String,
    /// The owner's organisation, by name.
    pub owner_org: String,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// The grant relied on.
    pub grant: Option<u64>,
    /// "permit" or "deny".
    pub outcome: String,
    /// Why denied.
    pub reason: Option<civmesh_policy::ReasonCode>,
    /// Fields released per subject (keyed hashes, hex).
    pub released: Vec<(String, Vec<String>)>,
    /// When the owner decided.
    pub decided_at_ms: u64,
    /// The same, as ISO 8601 in Asia/Shanghai.
    pub decided_at: String,
}

async fn access_log(State(state): State<Shared>) -> Json<Vec<AccessLogSummary>> {
    Json(state.log.state().read(|applied| {
        applied
            .policy
            .access_log
            .iter()
            .map(|entry| {
                let (outcome, reason, released) = match &entry.outcome {
                    civmesh_policy::AccessOutcome::Deny { reason } => ("deny", Some(*reason), Vec::new()),
                    civmesh_policy::AccessOutcome::Permit { released } => (
                        "permit",
                        None,
                        released
                            .iter()
                            .map(|r| {
                                (r.subject.0.iter().map(|b| format!("{b:02x}")).collect(), r.fields.clone())
                            })
                            .collect(),
                    ),
                };
                let org_of = |node: &civmesh_certs::NodeId| {
                    applied.policy.members.get(node).map_or_else(String::new, |member| member.org.to_string())
                };
                AccessLogSummary {
                    sequence: entry.sequence,
                    requester: entry.requester.to_string(),
                    requester_org: org_of(&entry.requester),
                    owner: entry.owner.to_string(),
                    owner_org: org_of(&entry.owner),
                    dataset: entry.header.dataset.clone(),
                    purpose: entry.header.purpose.clone(),
                    grant: entry.header.grant,
                    outcome: outcome.to_string(),
                    reason,
                    released,
                    decided_at_ms: entry.decided_at_ms,
                    decided_at: civmesh_policy::evaluation::format_time(entry.decided_at_ms),
                }
            })
            .collect()
    }))
}

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
async fn audit_commands(
    State(state): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<AuditCommandsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.clamp(1, AUDIT_COMMANDS_PER_REQUEST_MAX);
    let mut commands = state
        .log
        .archive()
        .read(query.from.max(1), limit)
        .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
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
    let bytes = civmesh_certs::codec::encode(&commands)
        .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `GET /v1/audit/checkpoints`: final checkpoints and the open one.
async fn audit_checkpoints(State(state): State<Shared>) -> Json<serde_json::Value> {
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
            "access_entries": policy.access_log.len(),
            "leaves": policy.audit_leaves.len(),
            "final": policy.checkpoints.iter().map(|c| checkpoint(&c.body, c.cosigners.iter().map(|n| n.to_string()).collect())).collect::<Vec<_>>(),
            "pending": policy.pending_checkpoint().map(|p| checkpoint(&p.body, p.cosigners.iter().map(|n| n.to_string()).collect())),
        })
    }))
}

/// The owner of `dataset` as Raft knows it (with its address).
async fn owner_peer(state: &ApiState, dataset: &str) -> Result<civmesh_consensus::RaftPeer, ApiError> {
    let find_owner = || {
        state.log.state().read(|applied| {
            let dataset = applied.policy.datasets.get(dataset)?;
            applied
                .policy
                .members
                .values()
                .find(|member| member.org == dataset.owner && member.revoked.is_none())
                .map(|member| member.node_id)
        })
    };
    let mut owner = find_owner();
    if owner.is_none() {
        // Perhaps published a moment ago: catch up with the leader once.
        state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
        owner = find_owner();
    }
    let owner = owner.ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("no active owner node for dataset {dataset}"))
    })?;
    state.log.peer_of(&owner).ok_or_else(|| {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "the owner's address is unknown".to_string())
    })
}

async fn subscribe(
    State(state): State<Shared>,
    Json(spec): Json<crate::query::SubscriptionSpec>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let owner = owner_peer(&state, &spec.dataset).await?;
    let subscription = state
        .query
        .subscribe_to(&owner, spec)
        .await
        .map_err(|reason| ApiError(StatusCode::BAD_GATEWAY, reason.to_string()))?;
    Ok(Json(serde_json::json!({ "subscription": subscription })))
}

async fn subscription_updates(State(state): State<Shared>) -> Json<Vec<crate::query::ReceivedPush>> {
    Json(state.query.received_pushes())
}

#[cfg(test)]
mod tests {
    /// Every route this file registers is documented, and nothing else is.
    #[test]
    fn the_openapi_document_names_exactly_the_routes() {
        let source = include_str!("mod.rs");
        let mut implemented = std::collections::BTreeSet::new();
        for line in source.lines().map(str::trim).filter(|line| line.starts_with(".route(\"")) {
            let path = line.split('"').nth(1).unwrap().to_string();
            let method = line.split(", ").nth(1).unwrap().split('(').next().unwrap().to_string();
            implemented.insert((path, method));
        }
        let document: serde_json::Value = serde_json::from_str(super::OPENAPI_DOCUMENT).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        for (path, methods) in document["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                documented.insert((path.clone(), method.clone()));
            }
        }
        assert_eq!(implemented.len(), 30, "{implemented:?}");
        assert_eq!(implemented, documented);
    }
}
