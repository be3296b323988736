//! Demands, grants and the catalog as a node's caller sees them.

use axum::extract::State;
use axum::Json;
use civmesh_certs::UnixMillis;
use civmesh_policy::model::{FieldName, LegalBasis};
use civmesh_policy::DemandStatus;
use serde::{Deserialize, Serialize};

use crate::api::Shared;

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
