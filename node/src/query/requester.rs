//! The requester's side of a query: sign the header, send it with the
//! keys to the owner, and check the owner's signed answer.

use std::time::Duration;

use civmesh_certs::codec::CodecError;
use civmesh_certs::{codec, now_unix_millis, EnvelopeError, NodeKey, SignedEnvelope};
use civmesh_consensus::{RaftPeer, TransportError};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::QueryHeader;
use serde::de::DeserializeOwned;
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
    /// Keep the records released in this node's received store (under
    /// the grant, which it then needs), until they must be deleted.
    #[serde(default)]
    pub keep: bool,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The query could not be signed, or the answer does not decode.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The query could not be encoded.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The owner did not answer.
    #[error("the owner did not answer: {0}")]
    NoAnswer(#[source] TransportError),
    /// The answer's signature does not verify.
    #[error("the answer's signature: {0}")]
    Signature(#[source] EnvelopeError),
    /// Someone other than the owner signed the answer.
    #[error("the answer is not signed by the owner")]
    NotFromOwner,
    /// The owner refused, with why.
    #[error("the owner refused: {0}")]
    Refused(String),
    /// The answer is bound to another query.
    #[error("the answer is for another query")]
    OtherQuery,
    /// The owner refused a page of a listing, with the typed reason.
    #[error("{0}")]
    ListRefused(crate::query::ListRefusal),
}

/// The requester's side: signs a header naming the keys hashed under
/// `pair_key` (the owner's key for this node's organisation), sends it with
/// the keys to `owner`, and checks the owner's signed answer.
pub async fn ask(
    swarm: &SwarmClient,
    key: &NodeKey,
    pair_key: &crate::query::SubjectKey,
    owner: &RaftPeer,
    spec: QuerySpec,
) -> Result<QueryAnswer, AskError> {
    let QuerySpec { dataset, keys, fields, purpose, grant, keep: _ } = spec;
    let subjects = keys.iter().map(|key| SubjectKeyHash::of(pair_key, key)).collect();
    let header = QueryHeader { dataset, subjects, fields, purpose, grant };
    let envelope = SignedEnvelope::sign(key, &header, now_unix_millis())?;
    let digest = envelope.digest();
    let wire = QueryWire { header: envelope.to_bytes()?, keys };
    let body: SignedAnswerBody = owner_answer(swarm, owner, &QueryProtocolMessage::Query(wire)).await?;
    match body.answer {
        QueryAnswer::Refused { reason } => Err(AskError::Refused(reason)),
        answer if body.request_digest == digest => Ok(answer),
        _ => Err(AskError::OtherQuery),
    }
}

/// Sends `message` to `owner` and returns its answer, once its signature
/// verifies as the owner's.
pub(super) async fn owner_answer<B: Serialize + DeserializeOwned>(
    swarm: &SwarmClient,
    owner: &RaftPeer,
    message: &QueryProtocolMessage,
) -> Result<B, AskError> {
    let bytes = codec::encode(message)?;
    let answer = swarm
        .request_on(Protocol::Query, owner, bytes, Duration::from_millis(QUERY_TIMEOUT_MS))
        .await
        .map_err(AskError::NoAnswer)?;
    let signed = SignedEnvelope::<B>::from_bytes(&answer)?;
    let body = signed.verify_signature().map_err(AskError::Signature)?;
    if body.signer != owner.node_id {
        return Err(AskError::NotFromOwner);
    }
    Ok(body.payload)
}
