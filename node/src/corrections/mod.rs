//! Corrections, both sides of the loop over `/civmesh/correction/1`.
//!
//! The submitter signs a
//! [`CorrectionRequest`](civmesh_policy::correction::CorrectionRequest), keeps it in a persistent
//! outbox and delivers it to the dataset's owner at least once. The owner
//! keeps it in a persistent inbox keyed by correction id (the request's
//! digest), so it is decided and applied at most once, however often it
//! arrives. Each entry is a small state machine that a single worker task
//! advances; every step is idempotent, so a crash between two steps only
//! repeats the step. Each stage also goes into the policy log, as metadata
//! and the payload hash. The owner's signed outcome travels back the same way.
//!
//! Personal data (the record key and the new values) stays in the two
//! nodes' stores and on the wire; it is never traced and never logged.
//!
//! Where things are: `wire` (the messages), `submitter` (the outbox side),
//! `owner` (the inbox side: checks, review, the corrected version),
//! `worker` (the task that advances entries), `views` (what the API shows),
//! [`attachments`] (evidence files, both sides) and [`http`] (the routes).

pub mod attachments;
pub mod http;
mod owner;
mod submitter;
mod views;
mod wire;
mod worker;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, UnixMillis};
use civmesh_consensus::PolicyLog;
use civmesh_policy::correction::{CorrectionId, CorrectionStage};
use civmesh_policy::model::SubjectKeyHash;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::corrections::attachments::{
    AttachmentError, ATTACHMENTS_MAX_DEFAULT, ATTACHMENT_BYTES_MAX_DEFAULT,
};
use crate::query::QueryService;
use crate::records::RecordStore;
use crate::swarm::SwarmClient;

pub use submitter::CorrectionSpec;
pub use views::{check_status_filter, status_name, CorrectionState, CorrectionView, ENTRY_STATUS_NAMES};
pub use wire::{
    CorrectionAck, CorrectionMessage, CorrectionOutcome, OutcomeStatus, CORRECTION_MESSAGE_BYTES_MAX,
};

/// Open corrections (not yet closed) one node keeps at most, both sides.
pub const CORRECTIONS_OPEN_MAX: usize = 100_000;
/// The first retry waits this long.
pub const RETRY_BACKOFF_MS_MIN: u64 = 100;
/// Retries never wait longer than this.
pub const RETRY_BACKOFF_MS_MAX: u64 = 10_000;
/// The worker looks for due entries at least this often.
pub const CORRECTION_WORKER_TICK_MS: u64 = 250;
/// How long logging a step's stages may take before the step is retried
/// (a stage that did commit meanwhile counts as logged on the retry).
pub const CORRECTION_LOG_TIMEOUT_MS: u64 = 5_000;
/// How long one delivery waits for the peer's acknowledgement.
pub const CORRECTION_SEND_TIMEOUT_MS: u64 = 5_000;
/// Entries the worker advances at once at most.
pub const CORRECTION_STEPS_IN_FLIGHT_MAX: usize = 16;
/// How long an accept or reject waits for the worker to decide.
pub const REVIEW_WAIT_MS_MAX: u64 = 5_000;
/// The longest reason a rejection carries, in bytes.
pub const REJECT_REASON_BYTES_MAX: usize = 1024;

/// Which side of a correction this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// This node submitted it.
    Outbox,
    /// This node owns the record.
    Inbox,
}

/// Where an entry is in its life at this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Outbox: not yet stored by the owner.
    AwaitingDelivery,
    /// Outbox: stored by the owner; waiting for its outcome.
    AwaitingOutcome,
    /// Outbox: the outcome arrived; its receipt is being logged.
    OutcomeReceived,
    /// Outbox: the submission itself was refused by the log.
    Failed {
        /// Why.
        reason: String,
    },
    /// Inbox: kept; not yet checked.
    Received,
    /// Inbox: valid; waiting for an operator.
    AwaitingReview,
    /// Inbox: accepted; being applied.
    Accepted,
    /// Inbox: decided; the stage is being logged and the outcome signed.
    Decided(OutcomeStatus),
    /// Inbox: the signed outcome is being delivered to the submitter.
    OutcomeReady,
    /// Either side: nothing left to do.
    Closed,
    /// Inbox: awaiting review, but an import wrote a newer version of the
    /// record that leaves the corrected fields as they were at the base
    /// version; accepting applies the correction on top of it.
    SupersededByImport {
        /// The version the import wrote.
        import_version: u64,
    },
    /// Outbox: stored by the owner; its attachments are being sent, this
    /// one next.
    SendingAttachments {
        /// The index of the next attachment to send.
        next: u32,
    },
}

/// One correction as a node keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrectionEntry {
    /// Which side this node is.
    pub side: Side,
    /// The submitter's signed request (wire bytes).
    pub request_bytes: Vec<u8>,
    /// The submitting node.
    pub submitter: NodeId,
    /// The record's subject, as the owner's pair key for the submitter's
    /// organisation hashes it; an outbox entry has it once the owner gave
    /// the key (before the submission is logged).
    pub subject: Option<SubjectKeyHash>,
    /// Where it is.
    pub status: EntryStatus,
    /// The owner's signed outcome, once there is one.
    pub outcome_bytes: Option<Vec<u8>>,
    /// The stages this node has logged.
    pub stages_logged: BTreeSet<CorrectionStage>,
    /// Failed attempts at the current step.
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt_ms: UnixMillis,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When this node first kept it.
    pub created_at_ms: UnixMillis,
    /// Inbox: the operator who accepted or rejected it (empty when no
    /// person did), logged with the stage.
    pub reviewer: String,
}

impl CorrectionEntry {
    /// A new entry: awaiting delivery in an outbox, received in an inbox.
    fn new(side: Side, request_bytes: Vec<u8>, submitter: NodeId, subject: Option<SubjectKeyHash>) -> Self {
        CorrectionEntry {
            side,
            request_bytes,
            submitter,
            subject,
            status: match side {
                Side::Outbox => EntryStatus::AwaitingDelivery,
                Side::Inbox => EntryStatus::Received,
            },
            outcome_bytes: None,
            stages_logged: BTreeSet::new(),
            attempts: 0,
            next_attempt_ms: 0,
            last_error: String::new(),
            created_at_ms: now_unix_millis(),
            reviewer: String::new(),
        }
    }
}

/// Why an operation on corrections failed.
#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    /// The request is malformed or cannot go anywhere.
    #[error("{0}")]
    Invalid(String),
    /// No such correction at this node.
    #[error("no correction {0} at this node")]
    Unknown(String),
    /// The correction is not waiting for what was asked.
    #[error("correction {id} is {status}, not awaiting review")]
    NotReviewable {
        /// The correction.
        id: String,
        /// Its status.
        status: String,
    },
    /// Too many open corrections.
    #[error("{CORRECTIONS_OPEN_MAX} corrections are open; try later")]
    Full,
    /// An attachment was refused (nothing of it is kept).
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    /// A status filter that names no status.
    #[error(
        "unknown status {0:?}: use awaiting_review, superseded_by_import, accepted, applied, rejected, \
         conflict, submitted or failed"
    )]
    StatusUnknown(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// Both sides of corrections at one node.
pub struct CorrectionService {
    log: PolicyLog<SwarmClient>,
    key: Arc<NodeKey>,
    records: Arc<RecordStore>,
    swarm: SwarmClient,
    metrics: Arc<crate::api::metrics::Metrics>,
    query: Arc<QueryService>,
    /// Serialises changes to entries (the worker and the handlers).
    entries_lock: tokio::sync::Mutex<()>,
    /// Serialises the conflict check and write of corrected records.
    apply_lock: tokio::sync::Mutex<()>,
    /// Attachments per correction at most (from `civmesh.toml`).
    attachments_max: AtomicUsize,
    /// Bytes per attachment at most (from `civmesh.toml`).
    attachment_bytes_max: AtomicU64,
    /// Ids of entries with work left.
    open: Mutex<BTreeSet<CorrectionId>>,
    wake: Notify,
    /// Runs the worker's steps, so shutdown can wait for them.
    tasks: TaskTracker,
}

/// The id as hex.
pub fn hex_id(id: &CorrectionId) -> String {
    id.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Parses a hex id.
pub fn parse_id(text: &str) -> Result<CorrectionId, CorrectionError> {
    let bytes = hex::decode(text).map_err(|_| CorrectionError::Unknown(text.to_string()))?;
    bytes.try_into().map_err(|_| CorrectionError::Unknown(text.to_string()))
}

impl CorrectionService {
    /// The service, with the open entries in `records` reloaded.
    pub fn new(
        log: PolicyLog<SwarmClient>,
        key: Arc<NodeKey>,
        records: Arc<RecordStore>,
        swarm: SwarmClient,
        query: Arc<QueryService>,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, CorrectionError> {
        let mut open = BTreeSet::new();
        for (id, bytes) in records.corrections().map_err(|error| CorrectionError::Store(error.to_string()))? {
            let entry: CorrectionEntry = decode_entry(&bytes)?;
            if needs_work(&entry.status) {
                open.insert(id);
            }
        }
        Ok(Arc::new(CorrectionService {
            metrics: query.metrics.clone(),
            log,
            key,
            records,
            swarm,
            query,
            entries_lock: tokio::sync::Mutex::new(()),
            apply_lock: tokio::sync::Mutex::new(()),
            attachments_max: AtomicUsize::new(ATTACHMENTS_MAX_DEFAULT),
            attachment_bytes_max: AtomicU64::new(ATTACHMENT_BYTES_MAX_DEFAULT),
            open: Mutex::new(open),
            wake: Notify::new(),
            tasks,
        }))
    }

    fn load(&self, id: &CorrectionId) -> Result<Option<CorrectionEntry>, CorrectionError> {
        let bytes = self.records.correction(id).map_err(|error| CorrectionError::Store(error.to_string()))?;
        bytes.map(|bytes| decode_entry(&bytes)).transpose()
    }

    /// Keeps the entry (synced) and tracks whether it has work left.
    fn save(&self, id: &CorrectionId, entry: &CorrectionEntry) -> Result<(), CorrectionError> {
        let bytes = codec::encode(entry).map_err(|error| CorrectionError::Store(error.to_string()))?;
        self.records.put_correction(id, &bytes).map_err(|error| CorrectionError::Store(error.to_string()))?;
        if let Ok(mut open) = self.open.lock() {
            if needs_work(&entry.status) {
                open.insert(*id);
            } else {
                open.remove(id);
            }
        }
        Ok(())
    }

    fn open_count(&self) -> usize {
        self.open.lock().map(|open| open.len()).unwrap_or(CORRECTIONS_OPEN_MAX)
    }

    fn report(&self, peer: &NodeId, kind: &'static str) {
        crate::security::report(&self.query.metrics, self.log.state(), peer, kind);
    }

    /// Answers one message on the correction protocol from `peer`.
    pub async fn handle(&self, peer: NodeId, bytes: &[u8]) -> Vec<u8> {
        let ack = match codec::decode_exact::<CorrectionMessage>(bytes, CORRECTION_MESSAGE_BYTES_MAX) {
            Ok(CorrectionMessage::Deliver(request)) => match self.query.limits.allow_correction(&peer) {
                Ok(()) => self.receive_request(peer, &request).await,
                Err(refusal) => {
                    self.report(&peer, refusal.code());
                    CorrectionAck::Refused(refusal.to_string())
                }
            },
            Ok(CorrectionMessage::Outcome(outcome)) => self.receive_outcome(peer, &outcome).await,
            Ok(CorrectionMessage::Attachment(chunk)) => self.receive_attachment(peer, chunk).await,
            Err(error) => CorrectionAck::Refused(format!("malformed message: {error}")),
        };
        codec::encode(&ack).unwrap_or_default()
    }
}

fn needs_work(status: &EntryStatus) -> bool {
    !matches!(
        status,
        EntryStatus::AwaitingOutcome
            | EntryStatus::AwaitingReview
            | EntryStatus::SupersededByImport { .. }
            | EntryStatus::Failed { .. }
            | EntryStatus::Closed
    )
}

fn decode_entry(bytes: &[u8]) -> Result<CorrectionEntry, CorrectionError> {
    codec::decode_exact(bytes, CORRECTION_MESSAGE_BYTES_MAX * 2)
        .map_err(|error| CorrectionError::Store(format!("a stored correction is corrupt: {error}")))
}

#[cfg(test)]
mod tests {
    use civmesh_certs::SignedEnvelope;
    use civmesh_policy::correction::CorrectionRequest;

    use super::*;

    #[test]
    fn statuses_with_work_left() {
        let cases = [
            (EntryStatus::AwaitingDelivery, true),
            (EntryStatus::AwaitingOutcome, false),
            (EntryStatus::OutcomeReceived, true),
            (EntryStatus::Received, true),
            (EntryStatus::AwaitingReview, false),
            (EntryStatus::Accepted, true),
            (EntryStatus::Decided(OutcomeStatus::Conflict { current_version: 2 }), true),
            (EntryStatus::OutcomeReady, true),
            (EntryStatus::Failed { reason: "x".into() }, false),
            (EntryStatus::Closed, false),
        ];
        for (status, expected) in cases {
            assert_eq!(needs_work(&status), expected, "{status:?}");
        }
        assert_eq!(status_name(&EntryStatus::Decided(OutcomeStatus::Applied { version: 2 })), "decided");
        assert_eq!(status_name(&EntryStatus::AwaitingReview), "awaiting_review");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..512))| {
            let _ = codec::decode_exact::<CorrectionMessage>(&bytes, CORRECTION_MESSAGE_BYTES_MAX);
            let _ = SignedEnvelope::<CorrectionRequest>::from_bytes(&bytes);
            let _ = SignedEnvelope::<CorrectionOutcome>::from_bytes(&bytes);
        });
    }
}
