//! Routes about the node itself: status, metrics, certificate, read index.

use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use civmesh_consensus::Status;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Shared, READ_INDEX_TIMEOUT_MS};

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

pub(crate) async fn status(State(state): State<Shared>) -> Json<NodeStatus> {
    Json(NodeStatus {
        peer_id: state.identity.node_id.to_string(),
        org: state.identity.org.to_string(),
        role: state.identity.role.to_string(),
        p2p_address: state.log.me().address.clone(),
        connected_peers: state.swarm.connected_peers().await.iter().map(ToString::to_string).collect(),
        raft: state.log.status(),
    })
}

pub(crate) async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let status = state.log.status();
    let peers = state.swarm.connected_peers().await.len();
    let me = state.identity.node_id;
    let now_ms = civmesh_certs::now_unix_millis();
    let storage_memory = state.log.history().storage_memory();
    let figures = state.log.state().read(|applied| {
        let overdue = applied.policy.deletions_overdue(now_ms);
        crate::api::metrics::LogFigures {
            access_log_length: applied.policy.access_log_length,
            deletions_overdue: overdue.len() as u64,
            deletions_overdue_here: overdue.iter().filter(|deletion| deletion.holder == me).count() as u64,
            subject_requests_overdue: applied.policy.subject_requests_overdue(now_ms).len() as u64,
            storage_memory,
        }
    });
    let text = state.metrics.render(&status, peers, figures, &state.log.stage_times());
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

pub(crate) async fn certificate(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "certificate_pem": state.certificate_pem }))
}

pub(crate) async fn read_index(State(state): State<Shared>) -> Result<Json<serde_json::Value>, ApiError> {
    let index = state.log.linearizable_read_index(Duration::from_millis(READ_INDEX_TIMEOUT_MS)).await?;
    Ok(Json(serde_json::json!({ "read_index": index, "applied_index": state.log.status().applied_index })))
}
