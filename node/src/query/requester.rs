//! The requester's side of a query: sign the header, send it with the
//! keys to the owner, and check the owner's signed answer.

use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_consensus::RaftPeer;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::QueryHeader;
use serde::{Deserialize, Serialize};

use crate::query::{QueryAnswer, QueryProtocolMessage, QueryWire, SignedAnswerBody, QUERY_TIMEOUT_MS};
use crate::swarm::{Protocol, SwarmClient};

/// What a requester asks for (`POST /v1/query`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuerySpec {
    /// The dataset.
    pub dataset: String,
    /// The record keys.
    pub keys: Vec<String>,
    /// The fields wanted.
    pub fields: Vec<String>,
    /// For what.
    pub purpose: String,
    /// The grant relied on.
    #[serde(default)]
    pub grant: Option<u64>,
}

/// The requester's side: signs a header, sends it with the keys to `owner`,
/// and checks the owner's signed answer.
pub async fn ask(
    swarm: &SwarmClient,
    key: &NodeKey,
    subject_key_secret: &[u8],
    owner: &RaftPeer,
    spec: QuerySpec,
) -> Result<QueryAnswer, String> {
    let QuerySpec { dataset, keys, fields, purpose, grant } = spec;
    let subjects = keys.iter().map(|key| SubjectKeyHash::of(subject_key_secret, key)).collect();
    let header = QueryHeader { dataset, subjects, fields, purpose, grant };
    let envelope =
        SignedEnvelope::sign(key, &header, now_unix_millis()).map_err(|error| error.to_string())?;
    let digest = envelope.digest();
    let wire = QueryWire { header: envelope.to_bytes().map_err(|error| error.to_string())?, keys };
    let bytes = codec::encode(&QueryProtocolMessage::Query(wire)).map_err(|error| error.to_string())?;
    let answer = swarm
        .request_on(Protocol::Query, owner, bytes, Duration::from_millis(QUERY_TIMEOUT_MS))
        .await
        .map_err(|error| format!("the owner did not answer: {error}"))?;
    let signed =
        SignedEnvelope::<SignedAnswerBody>::from_bytes(&answer).map_err(|error| error.to_string())?;
    let body = signed.verify_signature().map_err(|error| format!("the answer's signature: {error}"))?;
    if body.signer != owner.node_id {
        return Err("the answer is not signed by the owner".to_string());
    }
    match body.payload.answer {
        QueryAnswer::Refused { reason } => Err(format!("the owner refused: {reason}")),
        answer if body.payload.request_digest == digest => Ok(answer),
        _ => Err("the answer is for another query".to_string()),
    }
}
