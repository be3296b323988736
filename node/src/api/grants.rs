//! Demands, grants and the catalog as a node's caller sees them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use civmesh_certs::{now_unix_millis, UnixMillis};
use civmesh_policy::model::{FieldName, FieldSpec, Grant, GrantId, LegalBasis, SharingCategory};
use civmesh_policy::{DemandStatus, GrantSpec, GrantWarning};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, JsonBody, PathParams, Shared};

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

pub(crate) async fn demands(State(state): State<Shared>) -> Json<Vec<DemandView>> {
    Json(state.log.state().read(|applied| {
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
    }))
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
    let now_ms = now_unix_millis();
    Json(state.log.state().read(|applied| applied.policy.grant_warnings(&spec, now_ms)))
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
    let (org, now_ms) = (state.identity.org.clone(), now_unix_millis());
    Json(state.log.state().read(|applied| {
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
    }))
}
