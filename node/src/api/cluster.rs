//! The cluster routes: initialise the policy log, add learners, change voters.

use axum::extract::State;
use axum::Json;
use civmesh_certs::NodeId;
use civmesh_consensus::{RaftPeer, Status};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, JsonBody, Shared};

/// A member as the cluster routes name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerAddress {
    /// Its PeerId.
    pub peer_id: String,
    /// Its libp2p multiaddr.
    pub address: String,
}

fn raft_peer(peer: &PeerAddress) -> Result<RaftPeer, ApiError> {
    let node_id: NodeId = peer
        .peer_id
        .parse()
        .map_err(|error: civmesh_certs::IdentityError| ApiError::bad_request(error.to_string()))?;
    peer.address
        .parse::<libp2p::Multiaddr>()
        .map_err(|error| ApiError::bad_request(format!("address {}: {error}", peer.address)))?;
    Ok(RaftPeer { node_id, address: peer.address.clone() })
}

/// `POST /v1/cluster/initialize`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitializeRequest {
    /// The founding voters, this node among them.
    pub voters: Vec<PeerAddress>,
}

pub(crate) async fn initialize(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<InitializeRequest>,
) -> Result<Json<Status>, ApiError> {
    let voters = request.voters.iter().map(raft_peer).collect::<Result<Vec<_>, _>>()?;
    if !voters.iter().any(|voter| voter.node_id == state.log.me().node_id) {
        return Err(ApiError::bad_request("the voters must include this node"));
    }
    state.log.initialize(voters).await?;
    Ok(Json(state.log.status()))
}

pub(crate) async fn add_learner(
    State(state): State<Shared>,
    JsonBody(peer): JsonBody<PeerAddress>,
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

pub(crate) async fn change_voters(
    State(state): State<Shared>,
    JsonBody(request): JsonBody<VotersRequest>,
) -> Result<Json<Status>, ApiError> {
    let voters = request
        .peer_ids
        .iter()
        .map(|text| text.parse::<NodeId>().map_err(|error| ApiError::bad_request(error.to_string())))
        .collect::<Result<_, _>>()?;
    state.log.change_voters(voters).await?;
    Ok(Json(state.log.status()))
}
