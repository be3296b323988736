//! Demands, grants and the catalog as a node's caller sees them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use civmesh_certs::{now_unix_millis, SignedEnvelope, UnixMillis};
use civmesh_policy::model::{DemandId, FieldName, FieldSpec, Grant, GrantId, LegalBasis, SharingCategory};
use civmesh_policy::{Applied, Command, DemandSpec, DemandStatus, GrantSpec, GrantWarning};
use serde::{Deserialize, Serialize};

use crate::api::metrics::Metrics;
use crate::api::{ApiError, ApiState, JsonBody, PathParams, Shared};
use crate::assessments::ProtectionMissing;

/// One entry of `GET /v1/demands`: what was asked for, why, and where it
/// stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandView {
    /// The demand's id.
    pub id: u64,
    /// Who filed it.
    pub requester: String,
    /// The dataset.
    pub dataset: String,
    /// The fields asked for.
    pub fields: Vec<FieldName>,
    /// For what.
    pub purpose: String,
    /// Under which legal basis.
    pub legal_basis: LegalBasis,
    /// Why, if the requester said.
    pub reason: Option<String>,
    /// When it was filed.
    pub filed_at_ms: UnixMillis,
    /// Until when the data is needed, if the requester said.
    pub until_ms: Option<UnixMillis>,
    /// Waiting, granted (with the grant) or refused (with the reason).
    pub status: DemandStatus,
}

/// Every demand in the policy log, with where it stands, in the order filed.
pub(crate) fn demand_views(state: &ApiState) -> Vec<DemandView> {
    state.log.state().read(|applied| {
        let policy = &applied.policy;
        policy
            .demands
            .values()
            .map(|demand| DemandView {
                id: demand.id,
                requester: demand.requester.to_string(),
                dataset: demand.dataset.clone(),
                fields: demand.fields.iter().cloned().collect(),
                purpose: demand.purpose.clone(),
                legal_basis: demand.legal_basis,
                reason: demand.reason.clone(),
                filed_at_ms: demand.filed_at_ms,
                until_ms: demand.until_ms,
                status: policy.demand_status(demand),
            })
            .collect()
    })
}

pub(crate) async fn demands(State(state): State<Shared>) -> Json<Vec<DemandView>> {
    Json(demand_views(&state))
}

/// `GET /v1/grants`: every grant in the policy log, revoked and expired
/// ones included, in the order issued.
pub(crate) async fn grants(State(state): State<Shared>) -> Json<Vec<Grant>> {
    Json(state.log.state().read(|applied| applied.policy.grants.values().cloned().collect()))
}

/// `GET /v1/grants/{id}`: one grant; a 404 if there is none.
pub(crate) async fn grant(
    State(state): State<Shared>,
    PathParams(id): PathParams<GrantId>,
) -> Result<Json<Grant>, ApiError> {
    let grant = state.log.state().read(|applied| applied.policy.grants.get(&id).cloned());
    grant.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no grant {id}")))
}

/// `POST /v1/grants/check`: what the owner should confirm before issuing
/// this grant now (`PolicyState::grant_warnings`); issuing it is a signed
/// `IssueGrant` command, as any other.
pub(crate) async fn check_grant(
    State(state): State<Shared>,
    JsonBody(spec): JsonBody<GrantSpec>,
) -> Json<Vec<GrantWarning>> {
    Json(grant_warnings_now(&state, &spec))
}

/// What the owner should confirm before issuing `spec` now
/// (`PolicyState::grant_warnings` on this replica).
pub(crate) fn grant_warnings_now(state: &ApiState, spec: &GrantSpec) -> Vec<GrantWarning> {
    let now_ms = now_unix_millis();
    state.log.state().read(|applied| applied.policy.grant_warnings(spec, now_ms))
}

/// One dataset of `GET /v1/catalog`, as this node's organisation sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The dataset's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The organisation that owns it.
    pub owner: String,
    /// Its sharing category.
    pub sharing: SharingCategory,
    /// Its fields, each with the grants that cover it.
    pub fields: Vec<CatalogField>,
}

/// One field of a [`CatalogEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogField {
    /// The field's name, type and class.
    #[serde(flatten)]
    pub spec: FieldSpec,
    /// This organisation's grants, usable now, that release it.
    pub granted_by: Vec<GrantId>,
}

/// `GET /v1/catalog`: every dataset with its fields, their classes and
/// owners, and which of this node's organisation's grants (usable now)
/// cover each field.
pub(crate) async fn catalog(State(state): State<Shared>) -> Json<Vec<CatalogEntry>> {
    Json(catalog_entries(&state))
}

/// Every dataset of the catalog as this node's organisation sees it (see
/// [`CatalogEntry`]).
pub(crate) fn catalog_entries(state: &ApiState) -> Vec<CatalogEntry> {
    let (org, now_ms) = (state.identity.org.clone(), now_unix_millis());
    state.log.state().read(|applied| {
        let policy = &applied.policy;
        let usable: Vec<&Grant> = policy
            .grants
            .values()
            .filter(|grant| grant.check_usable(&org, &grant.dataset, None, now_ms).is_ok())
            .collect();
        policy
            .datasets
            .values()
            .map(|dataset| CatalogEntry {
                id: dataset.id.clone(),
                title: dataset.title.clone(),
                owner: dataset.owner.to_string(),
                sharing: dataset.sharing,
                fields: dataset
                    .fields
                    .iter()
                    .map(|spec| CatalogField {
                        spec: spec.clone(),
                        granted_by: usable
                            .iter()
                            .filter(|grant| grant.dataset == dataset.id && grant.fields.contains(&spec.name))
                            .map(|grant| grant.id)
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    })
}

/// The body of `POST /v1/demands/{id}/refuse` and `POST /v1/grants/{id}/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Why, for the other organisation.
    pub reason: String,
}

/// The body of `POST /v1/grants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The grant.
    pub grant: GrantSpec,
    /// Issue it even if there are warnings.
    #[serde(default)]
    pub confirm: bool,
}

/// The answer of `POST /v1/grants`: the grant's number if it was issued
/// (none while warnings wait for `confirm`), and the warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantIssue {
    /// The new grant, if issued.
    pub grant: Option<GrantId>,
    /// What the owner was asked to confirm.
    pub warnings: Vec<GrantWarning>,
}

/// Signs `command` with this node's key and commits it: the log's outcome,
/// or its rejection as a 409 naming the code.
pub(crate) async fn commit_as_node(state: &ApiState, command: Command) -> Result<Applied, ApiError> {
    let envelope =
        SignedEnvelope::sign(&state.query.key, &command, now_unix_millis()).map_err(ApiError::internal)?;
    let result = state.log.submit(vec![envelope]).await?;
    let outcome = result
        .outcomes
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the log answered no outcome"))?;
    let label = if outcome.is_ok() { "accepted" } else { "rejected" };
    Metrics::count(&state.metrics.commands_submitted, label);
    outcome.map_err(|rejection| ApiError::new(StatusCode::CONFLICT, rejection.to_string()))
}

/// `POST /v1/demands`: this node's organisation files a demand (signed by
/// this node).
pub(crate) async fn file_demand(
    State(state): State<Shared>,
    JsonBody(spec): JsonBody<DemandSpec>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match commit_as_node(&state, Command::FileDemandWithReason(spec)).await? {
        Applied::DemandFiled(id) => Ok(Json(serde_json::json!({ "demand": id }))),
        other => Err(ApiError::internal(format!("the log answered {other:?}, not a demand"))),
    }
}

/// `POST /v1/demands/{id}/refuse`: the dataset's owner refuses a demand.
pub(crate) async fn refuse_demand(
    State(state): State<Shared>,
    PathParams(id): PathParams<DemandId>,
    JsonBody(Reason { reason }): JsonBody<Reason>,
) -> Result<Json<serde_json::Value>, ApiError> {
    commit_as_node(&state, Command::RefuseDemand { demand_id: id, reason }).await?;
    Ok(Json(serde_json::json!({ "demand": id })))
}

/// Whether this node, as the dataset's owner, may sign `spec` as far as
/// retention and impact assessment go (`assessments::check_grant` against
/// this node's store and its replica's catalog).
pub(crate) async fn check_protection_now(
    state: &Shared,
    spec: &GrantSpec,
) -> Result<Result<(), ProtectionMissing>, ApiError> {
    let dataset = state.log.state().read(|applied| applied.policy.datasets.get(&spec.dataset).cloned());
    let spec = spec.clone();
    super::assessments::on_store(state, move |store| {
        crate::assessments::check_grant(store, dataset.as_ref(), &spec)
    })
    .await
}

impl From<ProtectionMissing> for ApiError {
    fn from(missing: ProtectionMissing) -> Self {
        match missing {
            ProtectionMissing::Store(error) => error.into(),
            // A semantic refusal of a well-formed request, as the API's others.
            missing => ApiError::bad_request(missing.to_string()),
        }
    }
}

/// `POST /v1/grants`: the dataset's owner issues a grant, unless it has
/// warnings that `confirm` does not accept, or lacks a retention or an
/// assessment it needs (a 400 naming what is missing, before anything is
/// signed).
pub(crate) async fn issue_grant(
    State(state): State<Shared>,
    JsonBody(GrantRequest { grant, confirm }): JsonBody<GrantRequest>,
) -> Result<Json<GrantIssue>, ApiError> {
    let warnings = grant_warnings_now(&state, &grant);
    if !warnings.is_empty() && !confirm {
        return Ok(Json(GrantIssue { grant: None, warnings }));
    }
    check_protection_now(&state, &grant).await??;
    match commit_as_node(&state, Command::IssueGrant(grant)).await? {
        Applied::GrantIssued(id) => Ok(Json(GrantIssue { grant: Some(id), warnings })),
        other => Err(ApiError::internal(format!("the log answered {other:?}, not a grant"))),
    }
}

/// `POST /v1/grants/{id}/revoke`: the dataset's owner revokes a grant.
pub(crate) async fn revoke_grant(
    State(state): State<Shared>,
    PathParams(id): PathParams<GrantId>,
    JsonBody(Reason { reason }): JsonBody<Reason>,
) -> Result<Json<serde_json::Value>, ApiError> {
    commit_as_node(&state, Command::RevokeGrant { grant_id: id, reason }).await?;
    Ok(Json(serde_json::json!({ "grant": id })))
}
