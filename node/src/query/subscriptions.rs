//! Subscriptions, both sides: a subscriber signs a header naming no
//! subjects; the owner checks the grant allows it now, keeps it (synced)
//! and acknowledges, signed.

use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, SignedEnvelope};
use civmesh_consensus::RaftPeer;
use civmesh_policy::{decide, Decision, QueryHeader};
use serde::{Deserialize, Serialize};

use crate::query::{
    access_request, hex, Facts, QueryProtocolMessage, QueryService, SubscribeAck, Subscription,
    QUERY_TIMEOUT_MS,
};
use crate::swarm::Protocol;

impl QueryService {
    /// The owner's side of a subscription: verify, check the grant allows
    /// it now, keep it (synced), and acknowledge, signed.
    pub(super) async fn subscribe(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let (digest, outcome) = match self.accept_subscription(peer, bytes) {
            Ok(digest) => (digest, Ok(())),
            Err((digest, reason)) => (digest, Err(reason)),
        };
        self.sign_ack(SubscribeAck { subscription: digest, outcome })
    }

    fn accept_subscription(&self, peer: NodeId, bytes: &[u8]) -> Result<[u8; 32], ([u8; 32], String)> {
        let envelope =
            SignedEnvelope::<QueryHeader>::from_bytes(bytes).map_err(|error| ([0; 32], error.to_string()))?;
        let digest = envelope.digest();
        let fail = |reason: String| (digest, reason);
        let verified = {
            let mut guard =
                self.replay_guard.lock().map_err(|_| fail("replay guard unavailable".to_string()))?;
            envelope
                .verify_from(&peer, &mut guard, now_unix_millis())
                .map_err(|error| fail(error.to_string()))?
        };
        let header = verified.payload;
        if !header.subjects.is_empty() {
            return Err(fail("a subscription names no subjects".to_string()));
        }
        let held = self.subscriptions.lock().map_or(usize::MAX, |subscriptions| {
            subscriptions.iter().filter(|s| s.subscriber == peer && s.digest != digest).count()
        });
        if held >= self.limits.subscriptions_per_peer_max {
            let refusal = crate::security::PeerRefusal::QuotaExceeded;
            self.report(&peer, refusal.code());
            return Err(fail(refusal.to_string()));
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
            None => return Err(fail(format!("this node does not own {}", header.dataset))),
            Some(Decision::Deny(reason)) => {
                let code = serde_json::to_value(reason).map(|code| code.to_string()).unwrap_or_default();
                return Err(fail(format!("denied: {}", code.trim_matches('"'))));
            }
            Some(Decision::Permit { .. }) => {}
        }
        self.records.put_subscription(&digest, bytes).map_err(|error| fail(error.to_string()))?;
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.retain(|subscription| subscription.digest != digest);
            subscriptions.push(Subscription { digest, subscriber: peer, envelope, header });
        }
        Ok(digest)
    }

    pub(super) fn sign_ack(&self, ack: SubscribeAck) -> Vec<u8> {
        SignedEnvelope::sign(&self.key, &ack, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    /// The requester's side: subscribe to `spec.dataset` at `owner`.
    pub async fn subscribe_to(&self, owner: &RaftPeer, spec: SubscriptionSpec) -> Result<String, String> {
        let SubscriptionSpec { dataset, fields, purpose, grant } = spec;
        let header_dataset = dataset.clone();
        let header = QueryHeader { dataset, subjects: Vec::new(), fields, purpose, grant };
        let envelope =
            SignedEnvelope::sign(&self.key, &header, now_unix_millis()).map_err(|error| error.to_string())?;
        let digest = envelope.digest();
        let envelope_bytes = envelope.to_bytes().map_err(|error| error.to_string())?;
        self.records.put_subscription(&digest, &envelope_bytes).map_err(|error| error.to_string())?;
        if let Ok(mut mine) = self.my_subscriptions.lock() {
            mine.insert(digest, header_dataset);
        }
        let message =
            QueryProtocolMessage::Subscribe(envelope.to_bytes().map_err(|error| error.to_string())?);
        let bytes = codec::encode(&message).map_err(|error| error.to_string())?;
        let answer = self
            .swarm
            .request_on(Protocol::Query, owner, bytes, Duration::from_millis(QUERY_TIMEOUT_MS))
            .await
            .map_err(|error| format!("the owner did not answer: {error}"))?;
        let ack = SignedEnvelope::<SubscribeAck>::from_bytes(&answer).map_err(|error| error.to_string())?;
        let ack = ack.verify_signature().map_err(|error| error.to_string())?;
        if ack.signer != owner.node_id || ack.payload.subscription != digest {
            return Err("the acknowledgement is not the owner's answer to this subscription".to_string());
        }
        ack.payload.outcome.map_err(|reason| format!("the owner refused: {reason}"))?;
        Ok(hex(&digest))
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
}
