//! Queries: a requester asks a dataset's owner for records over
//! `/civmesh/query/1`; the owner verifies, decides on its replica, projects
//! and masks, logs the access through group commit, and only then answers,
//! signed. No release without a committed access record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, ReplayGuard, SignedEnvelope};
use civmesh_consensus::{PolicyLog, RaftPeer};
use civmesh_policy::model::{FieldValue, SubjectKeyHash};
use civmesh_policy::{
    decide, AccessOutcome, AccessRecord, AccessRequest, Command, Decision, FieldAction, QueryHeader,
    ReasonCode, RecordFacts, RecordPlan, SubjectRelease,
};
use serde::{Deserialize, Serialize};

use crate::group_commit::GroupCommitter;
use crate::records::{RecordStore, RecordVersion};
use crate::swarm::{Protocol, SwarmClient};

/// The largest query or answer on the wire, in bytes.
pub const QUERY_MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long an owner waits to catch up before re-deciding a denial.
pub const STALE_GRANT_CATCH_UP_MS: u64 = 2_000;
/// How long a requester waits for the owner's answer.
pub const QUERY_TIMEOUT_MS: u64 = 15_000;
/// One peer's query and subscription nonces the owner remembers at most,
/// so no one peer can fill the replay guard that protects every peer.
pub const QUERY_NONCES_PER_PEER_MAX: usize = 100_000;
/// How long an owner waits for its own replica to apply an access record
/// the leader says is committed, before it refuses to release.
pub const OWN_REPLICA_APPLY_WAIT_MS: u64 = 5_000;

/// What travels to the owner: the signed header and, beside it, the plain
/// keys (which never enter the log).
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryWire {
    /// `SignedEnvelope<QueryHeader>` wire bytes.
    pub header: Vec<u8>,
    /// The record keys, in the order of the header's subjects.
    pub keys: Vec<String>,
}

/// Every message on `/civmesh/query/1`.
#[derive(Debug, Serialize, Deserialize)]
pub enum QueryProtocolMessage {
    /// A query, to the owner.
    Query(QueryWire),
    /// A subscription (`SignedEnvelope<QueryHeader>` naming no subjects), to the owner.
    Subscribe(Vec<u8>),
    /// A push (`SignedEnvelope<PushBody>`), from the owner to a subscriber.
    Push(Vec<u8>),
}

/// What the owner answers a subscription with (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeAck {
    /// The digest of the subscriber's signed request: the subscription's id.
    pub subscription: [u8; 32],
    /// Accepted, or why not.
    pub outcome: Result<(), String>,
}

/// Records pushed to a subscriber because they changed (signed by the owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushBody {
    /// The subscription.
    pub subscription: [u8; 32],
    /// The dataset.
    pub dataset: String,
    /// The new versions, masked per the grant.
    pub records: Vec<ReleasedRecord>,
    /// Where the push was logged.
    pub access_log_position: u64,
}

/// A push as the subscriber keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedPush {
    /// The subscription, hex.
    pub subscription: String,
    /// The owner node that pushed.
    pub owner: String,
    /// What it pushed.
    pub body: PushBody,
}

/// A logged push not yet delivered, as kept for retry.
#[derive(Debug, Serialize, Deserialize)]
struct PendingPush {
    subscriber: NodeId,
    message: Vec<u8>,
    first_attempt_ms: u64,
}

/// How often undelivered pushes are retried.
pub const PUSH_RETRY_TICK_MS: u64 = 1_000;
/// Undelivered pushes retried per tick at most.
pub const PUSH_RETRIES_PER_TICK_MAX: usize = 64;
/// An undelivered push is dropped after this long (the subscriber can query).
pub const PUSH_RETRY_AGE_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// Pushes a subscriber keeps for its API at most; older ones are dropped.
pub const RECEIVED_PUSHES_KEPT_MAX: usize = 10_000;
/// Records in one push at most.
pub const PUSH_RECORDS_MAX: usize = 1_000;

/// A subscription the owner serves.
struct Subscription {
    digest: [u8; 32],
    subscriber: NodeId,
    envelope: SignedEnvelope<QueryHeader>,
    header: QueryHeader,
}

/// One released record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedRecord {
    /// The record key.
    pub key: String,
    /// Its version.
    pub version: u64,
    /// The released fields, masked per the grant.
    pub fields: BTreeMap<String, FieldValue>,
    /// The requested fields withheld, with why.
    pub withheld: BTreeMap<String, ReasonCode>,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryAnswer {
    /// Records released (some may be withheld whole, or missing).
    Released {
        /// The released records.
        records: Vec<ReleasedRecord>,
        /// Keys with no record.
        not_found: Vec<String>,
        /// Where the access was logged.
        access_log_position: u64,
    },
    /// Nothing released, and the denial was logged.
    Denied {
        /// Why.
        reason: ReasonCode,
        /// Where the denial was logged.
        access_log_position: u64,
    },
    /// Not answered: the query was malformed or could not be logged.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What the owner signs: the answer bound to the query it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnswerBody {
    /// The digest of the requester's signed header.
    pub request_digest: [u8; 32],
    /// The answer.
    pub answer: QueryAnswer,
}

/// Both sides of queries and subscriptions.
pub struct QueryService {
    /// The policy-log member.
    pub log: PolicyLog<SwarmClient>,
    /// This node's key, which signs access records and answers.
    pub key: Arc<NodeKey>,
    /// This organisation's records.
    pub records: Arc<RecordStore>,
    /// Logs access records.
    pub committer: GroupCommitter,
    /// Rejects replayed queries.
    pub replay_guard: Mutex<ReplayGuard>,
    /// The federation's subject-key secret.
    pub subject_key_secret: Vec<u8>,
    /// Counts answered queries and security events.
    pub metrics: Arc<crate::api::metrics::Metrics>,
    /// What one peer may ask of this node.
    pub limits: Arc<crate::security::PeerLimits>,
    /// Sends pushes to subscribers.
    pub swarm: SwarmClient,
    /// The subscriptions this owner serves.
    subscriptions: Mutex<Vec<Subscription>>,
    /// Subscriptions this node made: digest to dataset.
    my_subscriptions: Mutex<BTreeMap<[u8; 32], String>>,
    /// Pushes this node received, newest last.
    received: Mutex<std::collections::VecDeque<ReceivedPush>>,
}

/// The metrics label of an answer.
pub fn outcome_label(answer: &QueryAnswer) -> &'static str {
    match answer {
        QueryAnswer::Released { .. } => "released",
        QueryAnswer::Denied { .. } => "denied",
        QueryAnswer::Refused { .. } => "refused",
    }
}

struct Facts<'a> {
    subject: SubjectKeyHash,
    record: &'a RecordVersion,
}

impl RecordFacts for Facts<'_> {
    fn subject(&self) -> SubjectKeyHash {
        self.subject
    }
    fn value(&self, field: &str) -> Option<&FieldValue> {
        self.record.fields.get(field)
    }
}

/// Why the query service could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot load subscriptions: {0}")]
pub struct QueryServiceError(String);

impl QueryService {
    /// The service, with the subscriptions kept in `records` reloaded.
    pub fn new(
        log: PolicyLog<SwarmClient>,
        key: Arc<NodeKey>,
        records: Arc<RecordStore>,
        swarm: SwarmClient,
        subject_key_secret: Vec<u8>,
        metrics: Arc<crate::api::metrics::Metrics>,
        limits: Arc<crate::security::PeerLimits>,
    ) -> Result<Self, QueryServiceError> {
        // Both sides are kept in one place: subscriptions this node signed
        // are its own; the others it serves as an owner.
        let mut subscriptions = Vec::new();
        let mut mine = BTreeMap::new();
        for bytes in records.subscriptions().map_err(|error| QueryServiceError(error.to_string()))? {
            let envelope = SignedEnvelope::<QueryHeader>::from_bytes(&bytes)
                .map_err(|error| QueryServiceError(error.to_string()))?;
            let verified =
                envelope.verify_signature().map_err(|error| QueryServiceError(error.to_string()))?;
            if verified.signer == key.node_id() {
                mine.insert(envelope.digest(), verified.payload.dataset);
                continue;
            }
            subscriptions.push(Subscription {
                digest: envelope.digest(),
                subscriber: verified.signer,
                header: verified.payload,
                envelope,
            });
        }
        Ok(QueryService {
            committer: GroupCommitter::start(log.clone()),
            log,
            key,
            records,
            replay_guard: Mutex::new(ReplayGuard::with_signer_quota(
                ReplayGuard::SKEW_MS_MAX_DEFAULT,
                ReplayGuard::NONCES_MAX_DEFAULT,
                QUERY_NONCES_PER_PEER_MAX,
            )),
            subject_key_secret,
            metrics,
            limits,
            swarm,
            subscriptions: Mutex::new(subscriptions),
            my_subscriptions: Mutex::new(mine),
            received: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// Answers one message on the query protocol from `peer`.
    pub async fn handle(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        match codec::decode_exact::<QueryProtocolMessage>(bytes, QUERY_MESSAGE_BYTES_MAX) {
            Ok(QueryProtocolMessage::Query(wire)) => match self.limits.allow_query(&peer) {
                Ok(()) => self.answer(peer, wire).await,
                Err(refusal) => {
                    self.report(&peer, refusal.code());
                    self.sign_answer([0; 32], QueryAnswer::Refused { reason: refusal.to_string() })
                }
            },
            Ok(QueryProtocolMessage::Subscribe(header)) => match self.limits.allow_query(&peer) {
                Ok(()) => self.subscribe(peer, &header).await,
                Err(refusal) => {
                    self.report(&peer, refusal.code());
                    self.sign_ack(SubscribeAck { subscription: [0; 32], outcome: Err(refusal.to_string()) })
                }
            },
            Ok(QueryProtocolMessage::Push(push)) => self.receive_push(peer, &push),
            Err(_) => Vec::new(),
        }
    }

    /// Answers one query from `peer`; the answer is a signed envelope.
    async fn answer(&self, peer: NodeId, wire: QueryWire) -> Vec<u8> {
        let (digest, answer) = match self.answer_unsigned(peer, wire).await {
            Ok(answered) => answered,
            Err(reason) => ([0u8; 32], QueryAnswer::Refused { reason }),
        };
        self.sign_answer(digest, answer)
    }

    fn sign_answer(&self, request_digest: [u8; 32], answer: QueryAnswer) -> Vec<u8> {
        crate::api::metrics::Metrics::count(&self.metrics.queries_answered, outcome_label(&answer));
        let body = SignedAnswerBody { request_digest, answer };
        SignedEnvelope::sign(&self.key, &body, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    fn sign_ack(&self, ack: SubscribeAck) -> Vec<u8> {
        SignedEnvelope::sign(&self.key, &ack, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    fn report(&self, peer: &NodeId, kind: &'static str) {
        crate::security::report(&self.metrics, self.log.state(), peer, kind);
    }

    /// Logs an access record (a query's or a push's) and returns its
    /// position once this node's own replica has applied it there: a
    /// leader's word that it committed is not enough to release on.
    async fn log_access(&self, command: civmesh_policy::SignedCommand) -> Result<u64, String> {
        let position = match self.committer.commit(command.clone()).await {
            Ok(Ok(civmesh_policy::Applied::AccessLogged(position))) => position,
            Ok(Ok(other)) => return Err(format!("unexpected log outcome {other:?}; nothing released")),
            Ok(Err(rejection)) => {
                return Err(format!("the access record was rejected ({rejection}); nothing released"))
            }
            Err(error) => return Err(format!("the access could not be logged ({error}); nothing released")),
        };
        let index = usize::try_from(position).map_err(|_| "access-log position out of range".to_string())?;
        let digest = command.digest();
        self.log
            .wait_for_state(
                Duration::from_millis(OWN_REPLICA_APPLY_WAIT_MS),
                "own replica applies the access record",
                move |applied| applied.policy.access_log.len() > index,
            )
            .await
            .map_err(|_| "this replica has not applied the access record; nothing released".to_string())?;
        let ours = self.log.state().read(|applied| {
            applied.policy.access_log.get(index).is_some_and(|entry| entry.envelope.digest() == digest)
        });
        if !ours {
            self.report(&self.key.node_id(), "access_record_not_at_position");
            return Err("the log holds another access record at that position; nothing released".to_string());
        }
        Ok(position)
    }

    async fn answer_unsigned(
        &self,
        peer: NodeId,
        wire: QueryWire,
    ) -> Result<([u8; 32], QueryAnswer), String> {
        let envelope =
            SignedEnvelope::<QueryHeader>::from_bytes(&wire.header).map_err(|error| error.to_string())?;
        let verified = {
            let mut guard = self.replay_guard.lock().map_err(|_| "replay guard unavailable".to_string())?;
            envelope.verify_from(&peer, &mut guard, now_unix_millis()).map_err(|error| error.to_string())?
        };
        let header = verified.payload;
        if wire.keys.len() != header.subjects.len()
            || wire
                .keys
                .iter()
                .zip(&header.subjects)
                .any(|(key, subject)| SubjectKeyHash::of(&self.subject_key_secret, key) != *subject)
        {
            return Err("the keys do not match the signed subject hashes".to_string());
        }
        let digest = envelope.digest();
        let now_ms = now_unix_millis();
        // Records first (this node's own), then the decision on the replica.
        let mut found = Vec::new();
        let mut not_found = Vec::new();
        for (key, subject) in wire.keys.iter().zip(&header.subjects) {
            match self.records.latest(&header.dataset, key).map_err(|error| error.to_string())? {
                Some(record) => found.push((key.clone(), *subject, record)),
                None => not_found.push(key.clone()),
            }
        }
        let facts: Vec<Facts> =
            found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let request = access_request(peer, &header);
        let owner_org_matches = self.log.state().read(|applied| {
            applied.policy.datasets.get(&header.dataset).is_none_or(|dataset| {
                applied.policy.active_member(&self.key.node_id()).is_some_and(|me| me.org == dataset.owner)
            })
        });
        if !owner_org_matches {
            return Err(format!("this node does not own {}", header.dataset));
        }
        let mut decision = self.log.state().read(|applied| decide(&applied.policy, &request, &facts, now_ms));
        if matches!(decision, Decision::Deny(_)) && header.grant.is_some() {
            // The grant may be newer than this replica: catch up once and
            // decide again. (A stale permit is impossible: the access record
            // is re-justified when it is applied, after any revocation.)
            if self.log.linearizable_read_index(Duration::from_millis(STALE_GRANT_CATCH_UP_MS)).await.is_ok()
            {
                decision = self.log.state().read(|applied| decide(&applied.policy, &request, &facts, now_ms));
            }
        }
        let (outcome, records) = project(&decision, &header, &found);
        // Out-of-scope records answer exactly like unknown keys: no
        // existence, no version.
        let (records, hidden): (Vec<_>, Vec<_>) = records.into_iter().partition(|record| record.is_some());
        let records: Vec<ReleasedRecord> = records.into_iter().flatten().collect();
        let released_keys: std::collections::BTreeSet<&str> =
            records.iter().map(|record| record.key.as_str()).collect();
        let not_found: Vec<String> = if hidden.is_empty() {
            not_found
        } else {
            wire.keys.iter().filter(|key| !released_keys.contains(key.as_str())).cloned().collect()
        };
        let record = AccessRecord { request: envelope, outcome: outcome.clone(), decided_at_ms: now_ms };
        let command = SignedEnvelope::sign(&self.key, &Command::RecordAccess(record), now_ms)
            .map_err(|error| error.to_string())?;
        let position = self.log_access(command).await?;
        let answer = match outcome {
            AccessOutcome::Deny { reason } => QueryAnswer::Denied { reason, access_log_position: position },
            AccessOutcome::Permit { .. } => {
                QueryAnswer::Released { records, not_found, access_log_position: position }
            }
        };
        Ok((digest, answer))
    }
}

impl QueryService {
    /// The owner's side of a subscription: verify, check the grant allows
    /// it now, keep it (synced), and acknowledge, signed.
    async fn subscribe(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
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

    /// After records of `dataset` changed: push the new versions, masked per
    /// each subscriber's grant, to every subscriber, each push logged first.
    pub async fn push_changes(&self, dataset: &str, changed: &[(String, RecordVersion)]) {
        type Target = ([u8; 32], NodeId, SignedEnvelope<QueryHeader>, QueryHeader);
        let targets: Vec<Target> = match self.subscriptions.lock() {
            Ok(subscriptions) => subscriptions
                .iter()
                .filter(|subscription| subscription.header.dataset == dataset)
                .map(|s| (s.digest, s.subscriber, s.envelope.clone(), s.header.clone()))
                .collect(),
            Err(_) => return,
        };
        for (digest, subscriber, envelope, header) in targets {
            for chunk in changed.chunks(PUSH_RECORDS_MAX) {
                if let Err(reason) = self.push_chunk(digest, subscriber, &envelope, &header, chunk).await {
                    tracing::warn!(subscriber = %subscriber, %reason, "push not delivered");
                }
            }
        }
    }

    async fn push_chunk(
        &self,
        digest: [u8; 32],
        subscriber: NodeId,
        envelope: &SignedEnvelope<QueryHeader>,
        header: &QueryHeader,
        chunk: &[(String, RecordVersion)],
    ) -> Result<(), String> {
        let found: Vec<(String, SubjectKeyHash, RecordVersion)> = chunk
            .iter()
            .map(|(key, record)| {
                (key.clone(), SubjectKeyHash::of(&self.subject_key_secret, key), record.clone())
            })
            .collect();
        let facts: Vec<Facts> =
            found.iter().map(|(_, subject, record)| Facts { subject: *subject, record }).collect();
        let request = access_request(subscriber, header);
        let now_ms = now_unix_millis();
        let decision = self.log.state().read(|applied| decide(&applied.policy, &request, &facts, now_ms));
        let (outcome, records) = project(&decision, header, &found);
        let key_granted = self.key_field_released(&header.dataset, &decision);
        let records: Vec<ReleasedRecord> = records
            .into_iter()
            .flatten()
            .filter(|record| !record.fields.is_empty())
            .map(|record| if key_granted { record } else { ReleasedRecord { key: String::new(), ..record } })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        let record = AccessRecord { request: envelope.clone(), outcome, decided_at_ms: now_ms };
        let command = SignedEnvelope::sign(&self.key, &Command::RecordPush(record), now_ms)
            .map_err(|error| error.to_string())?;
        let position = self.log_access(command).await?;
        let body = PushBody {
            subscription: digest,
            dataset: header.dataset.clone(),
            records,
            access_log_position: position,
        };
        let push = SignedEnvelope::sign(&self.key, &body, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .map_err(|error| error.to_string())?;
        let message = codec::encode(&QueryProtocolMessage::Push(push)).map_err(|error| error.to_string())?;
        if let Err(reason) = self.send_push(&subscriber, message.clone()).await {
            // Logged, not delivered: kept (synced) and retried.
            let pending = PendingPush { subscriber, message, first_attempt_ms: now_unix_millis() };
            let bytes = codec::encode(&pending).map_err(|error| error.to_string())?;
            self.records.put_push(position, &bytes).map_err(|error| error.to_string())?;
            return Err(format!("{reason}; kept for retry"));
        }
        Ok(())
    }

    /// Whether `decision` releases the dataset's subject key field as
    /// stored: only then does a push carry plain record keys.
    fn key_field_released(&self, dataset: &str, decision: &Decision) -> bool {
        let Decision::Permit { fields, .. } = decision else { return false };
        let key_field = self
            .log
            .state()
            .read(|applied| applied.policy.datasets.get(dataset).map(|d| d.subject_key_field.clone()));
        key_field.is_some_and(|key_field| {
            fields.iter().any(|plan| plan.field == key_field && plan.action == FieldAction::Release)
        })
    }

    async fn send_push(&self, subscriber: &NodeId, message: Vec<u8>) -> Result<(), String> {
        let peer = self.log.peer_of(subscriber).ok_or("the subscriber's address is unknown")?;
        self.swarm
            .request_on(Protocol::Query, &peer, message, Duration::from_millis(QUERY_TIMEOUT_MS))
            .await
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Retries logged pushes that did not reach their subscriber (it was
    /// down or cut off), every `PUSH_RETRY_TICK_MS`, until delivered or
    /// older than `PUSH_RETRY_AGE_MS_MAX`; runs until `stop`.
    pub async fn run_push_retries(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(PUSH_RETRY_TICK_MS));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let Ok(pending) = self.records.pushes(PUSH_RETRIES_PER_TICK_MAX) else { continue };
            for (position, bytes) in pending {
                let Ok(push) = codec::decode_exact::<PendingPush>(&bytes, QUERY_MESSAGE_BYTES_MAX) else {
                    let _ = self.records.delete_push(position);
                    continue;
                };
                let expired = now_unix_millis().saturating_sub(push.first_attempt_ms) > PUSH_RETRY_AGE_MS_MAX;
                if expired {
                    tracing::warn!(subscriber = %push.subscriber, position, "push not delivered in time; dropped");
                    let _ = self.records.delete_push(position);
                } else if self.send_push(&push.subscriber, push.message).await.is_ok() {
                    let _ = self.records.delete_push(position);
                }
            }
        }
    }

    /// The subscriber's side of a push: only for its own subscription, from
    /// the owner of the dataset.
    fn receive_push(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let Ok(envelope) = SignedEnvelope::<PushBody>::from_bytes(bytes) else { return Vec::new() };
        let Ok(verified) = envelope.verify_signature() else { return Vec::new() };
        let dataset = self
            .my_subscriptions
            .lock()
            .ok()
            .and_then(|mine| mine.get(&verified.payload.subscription).cloned());
        // Only from a current member of the organisation that owns the dataset.
        let from_owner = dataset.is_some_and(|dataset| {
            dataset == verified.payload.dataset
                && self.log.state().read(|applied| {
                    let owner = applied.policy.datasets.get(&dataset).map(|d| d.owner.clone());
                    applied
                        .policy
                        .active_member(&peer)
                        .is_some_and(|member| Some(&member.org) == owner.as_ref())
                })
        });
        if verified.signer != peer || !from_owner {
            return Vec::new();
        }
        if let Ok(mut received) = self.received.lock() {
            let position = verified.payload.access_log_position;
            if received.iter().any(|push| push.body.access_log_position == position) {
                return vec![1];
            }
            if received.len() >= RECEIVED_PUSHES_KEPT_MAX {
                received.pop_front();
            }
            received.push_back(ReceivedPush {
                subscription: hex(&verified.payload.subscription),
                owner: peer.to_string(),
                body: verified.payload,
            });
        }
        vec![1]
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

    /// The pushes this node received, oldest first.
    pub fn received_pushes(&self) -> Vec<ReceivedPush> {
        self.received.lock().map(|received| received.iter().cloned().collect()).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The decision's view of a signed header from `requester`.
fn access_request(requester: NodeId, header: &QueryHeader) -> AccessRequest {
    AccessRequest {
        requester,
        dataset: header.dataset.clone(),
        fields: header.fields.clone(),
        purpose: header.purpose.clone(),
        grant: header.grant,
    }
}

/// Whether the decision withholds record `index` as outside the grant's scope.
fn out_of_scope(decision: &Decision, index: usize) -> bool {
    matches!(decision, Decision::Permit { records, .. }
        if records.get(index) == Some(&RecordPlan::Withhold(ReasonCode::OutOfScope)))
}

/// Projects and masks the found records per the decision. A record outside
/// the grant's scope projects to `None`: it must look like an unknown key.
fn project(
    decision: &Decision,
    header: &QueryHeader,
    found: &[(String, SubjectKeyHash, RecordVersion)],
) -> (AccessOutcome, Vec<Option<ReleasedRecord>>) {
    if let Decision::Deny(reason) = decision {
        return (AccessOutcome::Deny { reason: *reason }, Vec::new());
    }
    let mut released = Vec::new();
    let mut records = Vec::new();
    for (index, (key, subject, record)) in found.iter().enumerate() {
        if out_of_scope(decision, index) {
            records.push(None);
            continue;
        }
        let mut fields = BTreeMap::new();
        let mut withheld = BTreeMap::new();
        for field in &header.fields {
            let value = record.fields.get(field).cloned().unwrap_or(FieldValue::Null);
            match decision.action_for(index, field) {
                FieldAction::Release => {
                    fields.insert(field.clone(), value);
                }
                FieldAction::Mask(rule) => {
                    fields.insert(field.clone(), rule.apply(&value));
                }
                FieldAction::Withhold(reason) => {
                    withheld.insert(field.clone(), reason);
                }
            }
        }
        if !fields.is_empty() {
            released.push(SubjectRelease { subject: *subject, fields: fields.keys().cloned().collect() });
        }
        records.push(Some(ReleasedRecord { key: key.clone(), version: record.version, fields, withheld }));
    }
    (AccessOutcome::Permit { released }, records)
}

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
