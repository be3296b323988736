//! Subscriptions, both sides: a subscriber signs a header naming no
//! subjects; the owner checks the grant allows it now, keeps it (synced)
//! and acknowledges, signed.

use std::time::Duration;

use civmesh_certs::codec::CodecError;
use civmesh_certs::{codec, now_unix_millis, EnvelopeError, NodeId, SignedEnvelope};
use civmesh_consensus::{RaftPeer, TransportError};
use civmesh_policy::{decide, Decision, QueryHeader};
use serde::{Deserialize, Serialize};

use crate::query::{
    access_request, Facts, InitialSync, Progress, QueryProtocolMessage, QueryService, SubscribeAck,
    Subscription, QUERY_TIMEOUT_MS,
};
use crate::records::RecordStoreError;
use crate::security::PeerRefusal;
use crate::swarm::Protocol;

/// Why an owner refused a subscription (the subscriber reads it in
/// [`SubscribeAck::outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The envelope does not decode or verify.
    #[error("{0}")]
    Envelope(#[source] EnvelopeError),
    /// The replay guard's lock is poisoned.
    #[error("replay guard unavailable")]
    ReplayGuardUnavailable,
    /// The header names subjects.
    #[error("a subscription names no subjects")]
    NamesSubjects,
    /// The peer is over its quota.
    #[error("{0}")]
    Refused(PeerRefusal),
    /// This node's organisation does not own the dataset.
    #[error("this node does not own {0}")]
    NotOwner(String),
    /// The policy denies it now, with the reason code.
    #[error("denied: {0}")]
    Denied(String),
    /// The record store failed.
    #[error("{0}")]
    Store(#[source] RecordStoreError),
}

/// Why subscribing at an owner failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeToError {
    /// The request could not be signed, or the answer does not decode or
    /// verify.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The request could not be encoded.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The subscription could not be kept.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// Its copy could not be started.
    #[error("{0}")]
    Copy(#[from] crate::query::CopyError),
    /// The owner did not answer.
    #[error("the owner did not answer: {0}")]
    NoAnswer(#[source] TransportError),
    /// A signed answer, but not the owner's to this subscription.
    #[error("the acknowledgement is not the owner's answer to this subscription")]
    NotTheAnswer,
    /// The owner refused, with why.
    #[error("the owner refused: {0}")]
    Refused(String),
}

impl QueryService {
    /// The owner's side of a subscription: verify, check the grant allows
    /// it now, keep it (synced), and acknowledge, signed.
    pub(super) async fn subscribe(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let (digest, outcome) = match self.accept_subscription(peer, bytes) {
            Ok(digest) => (digest, Ok(())),
            Err((digest, error)) => (digest, Err(error.to_string())),
        };
        self.sign_ack(SubscribeAck { subscription: digest, outcome })
    }

    /// Checks and keeps a subscription; the error comes with the
    /// subscription's digest (zero when the envelope does not decode).
    fn accept_subscription(
        &self,
        peer: NodeId,
        bytes: &[u8],
    ) -> Result<[u8; 32], ([u8; 32], SubscribeError)> {
        let envelope = SignedEnvelope::<QueryHeader>::from_bytes(bytes)
            .map_err(|error| ([0; 32], SubscribeError::Envelope(error)))?;
        let digest = envelope.digest();
        let fail = |error: SubscribeError| (digest, error);
        let verified = {
            let mut guard =
                self.replay_guard.lock().map_err(|_| fail(SubscribeError::ReplayGuardUnavailable))?;
            envelope
                .verify_from(&peer, &mut guard, now_unix_millis())
                .map_err(|error| fail(SubscribeError::Envelope(error)))?
        };
        let header = verified.payload;
        if !header.subjects.is_empty() {
            return Err(fail(SubscribeError::NamesSubjects));
        }
        let held = self.subscriptions.lock().map_or(usize::MAX, |subscriptions| {
            subscriptions.iter().filter(|s| s.subscriber == peer && s.digest != digest).count()
        });
        if held >= self.limits.subscriptions_per_peer_max {
            let refusal = PeerRefusal::QuotaExceeded;
            self.report(&peer, refusal.code());
            return Err(fail(SubscribeError::Refused(refusal)));
        }
        let request = access_request(peer, &header);
        let none: [Facts; 0] = [];
        let decision = self.log.state().read(|applied| {
            let owned = applied.policy.datasets.get(&header.dataset).is_some_and(|dataset| {
                applied.policy.active_member(&self.key.node_id()).is_some_and(|me| me.org == dataset.owner)
            });
            owned.then(|| decide(&applied.policy, &request, &none, now_unix_millis()))
        });
        match decision {
            None => return Err(fail(SubscribeError::NotOwner(header.dataset))),
            Some(Decision::Deny(reason)) => {
                let code = serde_json::to_value(reason).map(|code| code.to_string()).unwrap_or_default();
                return Err(fail(SubscribeError::Denied(code.trim_matches('"').to_string())));
            }
            Some(Decision::Permit { .. }) => {}
        }
        self.records.put_subscription(&digest, bytes).map_err(|error| fail(SubscribeError::Store(error)))?;
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.retain(|subscription| subscription.digest != digest);
            subscriptions.push(Subscription { digest, subscriber: peer, envelope, header });
        }
        Ok(digest)
    }

    pub(super) fn sign_ack(&self, ack: SubscribeAck) -> Vec<u8> {
        self.signed(&ack)
    }

    /// The requester's side: subscribe to `spec.dataset` at `owner`.
    pub async fn subscribe_to(
        &self,
        owner: &RaftPeer,
        spec: SubscriptionSpec,
    ) -> Result<String, SubscribeToError> {
        let SubscriptionSpec { dataset, fields, purpose, grant, page_size } = spec;
        let header_dataset = dataset.clone();
        let header = QueryHeader { dataset, subjects: Vec::new(), fields, purpose, grant };
        let progress = Progress {
            dataset: header.dataset.clone(),
            owner: owner.node_id,
            fields: header.fields.clone(),
            purpose: header.purpose.clone(),
            grant,
            page_size,
            started_at_ms: now_unix_millis(),
            initial_sync: InitialSync::Listing { cursor: None },
            pages: 0,
            records_listed: 0,
            records_held: 0,
            last_push_position: None,
            last_change_at_ms: None,
            last_push_lag_ms: None,
            last_error: None,
            kept: false,
        };
        let envelope = SignedEnvelope::sign(&self.key, &header, now_unix_millis())?;
        let digest = envelope.digest();
        let envelope_bytes = envelope.to_bytes()?;
        self.records.put_subscription(&digest, &envelope_bytes)?;
        if let Ok(mut mine) = self.my_subscriptions.lock() {
            mine.insert(digest, header_dataset);
        }
        let bytes = codec::encode(&QueryProtocolMessage::Subscribe(envelope_bytes))?;
        let answer = self
            .swarm
            .request_on(Protocol::Query, owner, bytes, Duration::from_millis(QUERY_TIMEOUT_MS))
            .await
            .map_err(SubscribeToError::NoAnswer)?;
        let ack = SignedEnvelope::<SubscribeAck>::from_bytes(&answer)?.verify_signature()?;
        if ack.signer != owner.node_id || ack.payload.subscription != digest {
            return Err(SubscribeToError::NotTheAnswer);
        }
        ack.payload.outcome.map_err(SubscribeToError::Refused)?;
        // Accepted: the copy starts with the data, listed in the background.
        self.start_copy(&digest, &progress)?;
        Ok(hex::encode(digest))
    }
}

/// What a subscriber asks for (`POST /v1/subscriptions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    /// The dataset.
    pub dataset: String,
    /// The fields wanted.
    pub fields: Vec<String>,
    /// For what.
    pub purpose: String,
    /// The grant relied on.
    pub grant: Option<u64>,
    /// Records per page of the initial listing; 0 or absent for the
    /// owner's default.
    #[serde(default)]
    pub page_size: u32,
}
