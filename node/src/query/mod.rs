//! Queries: a requester asks a dataset's owner for records over
//! `/civmesh/query/1`; the owner verifies, decides on its replica, projects
//! and masks, logs the access through group commit, and only then answers,
//! signed. No release without a committed access record.
//!
//! Where things are: `wire` (the messages and answers), `owner` (answering
//! a query), `requester` ([`ask`]), `subscriptions` (both sides) and
//! `pushes` (sending, retrying and receiving changed records).

pub mod cursor;
mod listing;
mod owner;
mod push_worker;
mod pushes;
mod read_ahead;
mod received;
mod requester;
mod subject_keys;
mod subject_requests;
mod subscriptions;
mod sync;
mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civmesh_certs::{codec, EnvelopeError, NodeId, NodeKey, ReplayGuard, SignedEnvelope};
use civmesh_consensus::PolicyLog;
use civmesh_policy::model::{FieldValue, SubjectKeyHash};
use civmesh_policy::{AccessRequest, QueryHeader, RecordFacts};

use crate::group_commit::GroupCommitter;
use crate::records::{RecordStore, RecordStoreError, RecordVersion};
use crate::swarm::SwarmClient;
use tokio_util::task::TaskTracker;

pub use listing::{list, ListSpec, ListingBounds, LIST_FILTERS_MAX, LIST_FILTER_BYTES_MAX};
pub use owner::AnswerError;
pub use pushes::{PushError, SendPushError};
pub use pushes::{
    ReceivedPush, PUSH_QUEUE_READ_MAX, PUSH_QUEUE_WRITES_MAX, PUSH_RECORDS_MAX, PUSH_RETRIES_PER_TICK_MAX,
    PUSH_RETRY_AGE_MS_MAX, PUSH_RETRY_TICK_MS, RECEIVED_PUSHES_KEPT_MAX,
};
pub use received::KeptSource;
pub use requester::{ask, AskError, QuerySpec};
pub use subject_keys::{SubjectKey, SubjectKeys, PAIR_KEYS_KEPT_MAX};
pub use subscriptions::{SubscribeError, SubscribeToError, SubscriptionSpec};
pub use sync::{CopyError, InitialSync, Progress, COPY_PAGE_RECORDS_MAX, SYNC_RETRY_BACKOFF_MS_MAX};
pub use wire::{
    outcome_label, reason_name, ListAnswer, ListFilter, ListRefusal, ListWire, PairKeyAnswer, PushBody,
    QueryAnswer, QueryProtocolMessage, QueryWire, ReleasedRecord, SignedAnswerBody, SignedListBody,
    SubscribeAck, QUERY_MESSAGE_BYTES_MAX,
};

/// How long an owner waits to catch up before re-deciding a denial.
pub const STALE_GRANT_CATCH_UP_MS: u64 = 2_000;
/// How long a requester waits for the owner's answer.
pub const QUERY_TIMEOUT_MS: u64 = 15_000;
/// One peer's query and subscription nonces the owner remembers at most,
/// so no one peer can fill the replay guard that protects every peer.
pub const QUERY_NONCES_PER_PEER_MAX: usize = 100_000;
/// How long an owner waits for its own replica to apply an access record
/// the leader says is committed, before it refuses to release (a push is
/// kept and sent once its replica has).
pub const OWN_REPLICA_APPLY_WAIT_MS: u64 = 5_000;

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
    /// This organisation's subject key and the pair keys owners gave.
    pub subject_keys: SubjectKeys,
    /// Counts answered queries and security events.
    pub metrics: Arc<crate::api::metrics::Metrics>,
    /// What one peer may ask of this node.
    pub limits: Arc<crate::security::PeerLimits>,
    /// Sends pushes to subscribers.
    pub swarm: SwarmClient,
    /// Seals and opens listing cursors.
    cursors: cursor::CursorSealer,
    /// The bounds on listings.
    listing: ListingBounds,
    /// Listing pages read ahead.
    read_aheads: read_ahead::ReadAheads,
    /// The subscriptions this owner serves.
    subscriptions: Mutex<Vec<Subscription>>,
    /// Subscriptions this node made: digest to dataset.
    my_subscriptions: Mutex<BTreeMap<[u8; 32], String>>,
    /// Pushes this node received, newest last.
    received: Mutex<std::collections::VecDeque<ReceivedPush>>,
    /// Serialises changes to a subscription's progress (pages and pushes).
    progress_lock: Mutex<()>,
    /// Runs listing pages read ahead in the background, so shutdown can
    /// wait for them.
    tasks: TaskTracker,
    /// Wakes the push worker when a record write queued changes.
    changes_queued: tokio::sync::Notify,
    /// Subscribers that left a push unanswered, until when they are not
    /// waited on.
    unreachable_until_ms: Mutex<BTreeMap<NodeId, u64>>,
}

/// What the node's configuration gives the query service.
pub struct QuerySettings {
    /// This organisation's subject key, if the node has one.
    pub org_subject_key: Option<SubjectKey>,
    /// What one peer may ask of this node.
    pub limits: Arc<crate::security::PeerLimits>,
    /// Seals and opens listing cursors.
    pub cursors: cursor::CursorSealer,
    /// The bounds on listings.
    pub listing: ListingBounds,
}

/// A subscription the owner serves.
struct Subscription {
    digest: [u8; 32],
    subscriber: NodeId,
    envelope: SignedEnvelope<QueryHeader>,
    header: QueryHeader,
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
pub enum QueryServiceError {
    /// The kept subscriptions could not be read.
    #[error("cannot load subscriptions: {0}")]
    Store(#[from] RecordStoreError),
    /// A kept subscription does not decode or verify.
    #[error("cannot load subscriptions: {0}")]
    SubscriptionCorrupt(#[from] EnvelopeError),
}

/// Why an access record could not be logged; nothing is released then.
#[derive(Debug, thiserror::Error)]
pub enum LogAccessError {
    /// The log applied it as something else.
    #[error("unexpected log outcome {0:?}; nothing released")]
    Unexpected(Box<civmesh_policy::Applied>),
    /// The log refused it.
    #[error("the access record was rejected ({0}); nothing released")]
    Rejected(civmesh_policy::Rejection),
    /// It could not be committed.
    #[error("the access could not be logged ({0}); nothing released")]
    NotLogged(civmesh_consensus::SubmitError),
    /// This node's replica did not apply it in time.
    #[error("this replica has not applied the access record; nothing released")]
    NotAppliedHere,
    /// The replica holds another record at the position the leader gave.
    #[error("the log holds another access record at that position; nothing released")]
    AnotherAtPosition,
}

impl QueryService {
    /// The service, with the subscriptions kept in `records` reloaded.
    pub fn new(
        log: PolicyLog<SwarmClient>,
        key: Arc<NodeKey>,
        records: Arc<RecordStore>,
        swarm: SwarmClient,
        metrics: Arc<crate::api::metrics::Metrics>,
        settings: QuerySettings,
        tasks: TaskTracker,
    ) -> Result<Self, QueryServiceError> {
        let QuerySettings { org_subject_key, limits, cursors, listing } = settings;
        // Both sides are kept in one place: subscriptions this node signed
        // are its own; the others it serves as an owner.
        let mut subscriptions = Vec::new();
        let mut mine = BTreeMap::new();
        for bytes in records.subscriptions()? {
            let envelope = SignedEnvelope::<QueryHeader>::from_bytes(&bytes)?;
            let verified = envelope.verify_signature()?;
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
            committer: GroupCommitter::start(log.clone(), &tasks),
            log,
            key,
            records,
            replay_guard: Mutex::new(ReplayGuard::with_signer_quota(
                ReplayGuard::SKEW_MS_MAX_DEFAULT,
                ReplayGuard::NONCES_MAX_DEFAULT,
                QUERY_NONCES_PER_PEER_MAX,
            )),
            subject_keys: SubjectKeys::new(org_subject_key),
            metrics,
            limits,
            swarm,
            cursors,
            listing,
            read_aheads: read_ahead::ReadAheads::default(),
            subscriptions: Mutex::new(subscriptions),
            my_subscriptions: Mutex::new(mine),
            received: Mutex::new(std::collections::VecDeque::new()),
            progress_lock: Mutex::new(()),
            tasks,
            changes_queued: tokio::sync::Notify::new(),
            unreachable_until_ms: Mutex::new(BTreeMap::new()),
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
            Ok(QueryProtocolMessage::List(wire)) => match self.limits.allow_query(&peer) {
                Ok(()) => self.list(peer, wire).await,
                Err(refusal) => {
                    self.report(&peer, refusal.code());
                    let answer = ListAnswer::Refused(ListRefusal::Request(refusal.to_string()));
                    self.sign_list_answer([0; 32], answer)
                }
            },
            Ok(QueryProtocolMessage::PairKey) => match self.limits.allow_query(&peer) {
                Ok(()) => self.answer_pair_key(&peer),
                Err(refusal) => {
                    self.report(&peer, refusal.code());
                    self.signed(&PairKeyAnswer::Refused(refusal.to_string()))
                }
            },
            Ok(QueryProtocolMessage::SubjectRequest(wire)) => {
                match self.limits.allow_subject_request(&peer) {
                    Ok(()) => self.take_subject_request(peer, &wire).await,
                    Err(refusal) => {
                        self.report(&peer, refusal.code());
                        self.signed(&crate::subject_requests::OwnerReply::refused(refusal.to_string()))
                    }
                }
            }
            Err(_) => Vec::new(),
        }
    }

    /// Logs an access record (a query's or a listing page's) and
    /// returns its position once this node's own replica has applied it
    /// there: a leader's word that it committed is not enough to release
    /// on. This node signed the command over a request it verified at the
    /// edge (or when the subscription was made), so its own replica applies
    /// it without verifying either signature again.
    async fn log_access(&self, command: civmesh_policy::SignedCommand) -> Result<u64, LogAccessError> {
        let digest = command.digest();
        let position = self.commit_access(command).await?;
        self.confirm_access(position, digest).await?;
        Ok(position)
    }

    /// Commits an access record this node signed; its position, as the
    /// leader gives it (not yet confirmed here).
    async fn commit_access(&self, command: civmesh_policy::SignedCommand) -> Result<u64, LogAccessError> {
        self.log.vouch(&command);
        match self.committer.commit(command).await {
            Ok(Ok(civmesh_policy::Applied::AccessLogged(position))) => Ok(position),
            Ok(Ok(other)) => Err(LogAccessError::Unexpected(Box::new(other))),
            Ok(Err(rejection)) => Err(LogAccessError::Rejected(rejection)),
            Err(error) => Err(LogAccessError::NotLogged(error)),
        }
    }

    /// Waits at most [`OWN_REPLICA_APPLY_WAIT_MS`] for this node's replica
    /// to apply the access record with `digest` at `position`, and confirms
    /// it is there.
    async fn confirm_access(&self, position: u64, digest: [u8; 32]) -> Result<(), LogAccessError> {
        self.log
            .wait_for_state(
                Duration::from_millis(OWN_REPLICA_APPLY_WAIT_MS),
                "own replica applies the access record",
                move |applied| applied.policy.access_log_length > position,
            )
            .await
            .map_err(|_| LogAccessError::NotAppliedHere)?;
        self.confirm_applied(position, &digest)
    }

    /// Confirms that this node's replica applied the access record with
    /// `digest` at `position`. The store holds an entry before the state
    /// counts it; a replica that installed a snapshot past the position
    /// holds no entry there: it cannot confirm, so nothing is released.
    fn confirm_applied(&self, position: u64, digest: &[u8; 32]) -> Result<(), LogAccessError> {
        let applied = self.log.state().read(|applied| applied.policy.access_log_length > position);
        if !applied {
            return Err(LogAccessError::NotAppliedHere);
        }
        let stored = self.log.history().access_entry(position).map_err(|_| LogAccessError::NotAppliedHere)?;
        if stored.ok_or(LogAccessError::NotAppliedHere)?.envelope.digest() != *digest {
            self.report(&self.key.node_id(), "access_record_not_at_position");
            return Err(LogAccessError::AnotherAtPosition);
        }
        Ok(())
    }

    /// `body` in an envelope signed by this node, as wire bytes; empty if
    /// it cannot be signed (the peer then sees no answer).
    fn signed<T: serde::Serialize + serde::de::DeserializeOwned>(&self, body: &T) -> Vec<u8> {
        SignedEnvelope::sign(&self.key, body, civmesh_certs::now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .unwrap_or_default()
    }

    fn report(&self, peer: &NodeId, kind: &'static str) {
        crate::security::report(&self.metrics, self.log.state(), peer, kind);
    }
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
