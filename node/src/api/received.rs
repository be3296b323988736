//! `GET /v1/received`: what this node holds that other owners released to
//! it, by source (a subscription's copy, or the query answers and listing
//! pages it chose to keep), each under its grant and that grant's
//! retention. The records themselves: `POST /v1/received/{id}/records`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Shared};
use crate::query::CopyError;

/// One source of received copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSource {
    /// Its id (hex): a subscription's, or the kept answers'.
    pub id: String,
    /// `subscription` or `kept`.
    pub source: String,
    /// The dataset.
    pub dataset: String,
    /// The owner's organisation.
    pub owner_org: String,
    /// The grant they were released under.
    pub grant: Option<u64>,
    /// For what.
    pub purpose: String,
    /// The fields.
    pub fields: Vec<String>,
    /// Records held now.
    pub records_held: u64,
    /// Since when (ISO 8601, Asia/Shanghai).
    pub since: String,
    /// How long each copy may be kept, in days, if the grant says.
    pub retain_days: Option<f64>,
    /// Whether the grant still allows access; copies of an ended grant are
    /// deleted at the next sweep.
    pub grant_in_force: bool,
}

/// `GET /v1/received`.
pub(crate) async fn received(State(state): State<Shared>) -> Result<Json<Vec<ReceivedSource>>, ApiError> {
    let rows = received_rows(&state, civmesh_certs::now_unix_millis()).map_err(ApiError::internal)?;
    Ok(Json(rows))
}

/// Every source of received copies in this node's store, as `GET
/// /v1/received` and the console show it: the owner's organisation, the
/// grant's retention and whether it is in force at `now_ms`, from this
/// node's replica. Reads only this node (the owner is not asked).
pub(crate) fn received_rows(state: &Shared, now_ms: u64) -> Result<Vec<ReceivedSource>, CopyError> {
    let sources = state.query.received_sources()?;
    let rows = state.log.state().read(|applied| {
        let policy = &applied.policy;
        sources
            .into_iter()
            .map(|(digest, progress)| {
                let grant = progress.grant.and_then(|id| policy.grants.get(&id));
                ReceivedSource {
                    id: civmesh_policy::hex_digest::to_hex(&digest),
                    source: if progress.kept { "kept" } else { "subscription" }.to_string(),
                    owner_org: policy
                        .members
                        .get(&progress.owner)
                        .map(|m| m.org.to_string())
                        .unwrap_or_default(),
                    grant: progress.grant,
                    retain_days: grant
                        .and_then(|grant| grant.retention)
                        .map(|retention| retention.keep_ms as f64 / 86_400_000.0),
                    grant_in_force: grant.is_some_and(|grant| grant.ended_at_ms(now_ms).is_none()),
                    since: civmesh_policy::evaluation::format_time(progress.started_at_ms),
                    dataset: progress.dataset,
                    purpose: progress.purpose,
                    fields: progress.fields,
                    records_held: progress.records_held,
                }
            })
            .collect()
    });
    Ok(rows)
}
