//! Corrections, both sides of the loop over `/civmesh/correction/1`.
//!
//! The submitter signs a [`CorrectionRequest`], keeps it in a persistent
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

pub mod attachments;
pub mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, SignedEnvelope, UnixMillis};
use civmesh_consensus::PolicyLog;
use civmesh_policy::correction::{
    CorrectionEvent, CorrectionId, CorrectionRequest, CorrectionStage, CORRECTION_TEXT_BYTES_MAX,
};
use civmesh_policy::model::{Dataset, SubjectKeyHash};
use civmesh_policy::{Command, CorrectionReasonCode, PolicyState, RejectionCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::corrections::attachments::{
    chunks, fit, sha256, AttachmentChunk, AttachmentError, AttachmentLimits, AttachmentView, ChunkFit,
    ATTACHMENTS_MAX_DEFAULT, ATTACHMENT_BYTES_MAX_DEFAULT, ATTACHMENT_WAIT_MS_MAX,
};
use crate::query::QueryService;
use crate::records::{validate_row, Provenance, RecordStore, RecordVersion};
use crate::swarm::{Protocol, SwarmClient};

/// The largest message on the correction protocol, in bytes.
pub const CORRECTION_MESSAGE_BYTES_MAX: usize = 256 * 1024;
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

/// Every message on `/civmesh/correction/1`.
#[derive(Debug, Serialize, Deserialize)]
pub enum CorrectionMessage {
    /// A signed [`CorrectionRequest`], to the owner.
    Deliver(Vec<u8>),
    /// A signed [`CorrectionOutcome`], to the submitter.
    Outcome(Vec<u8>),
    /// One chunk of an attachment, to the owner, after the request.
    Attachment(AttachmentChunk),
}

/// The answer to a [`CorrectionMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CorrectionAck {
    /// Kept durably (or kept before: a duplicate).
    Stored,
    /// Not kept, with why. The sender may try again later.
    Refused(String),
}

/// What the owner decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The record has a new version.
    Applied {
        /// The new version.
        version: u64,
    },
    /// Not applied.
    Rejected {
        /// A stable code.
        reason_code: CorrectionReasonCode,
        /// In words.
        reason: String,
    },
    /// The record changed after the base version; resubmit on `current_version`.
    Conflict {
        /// The version now.
        current_version: u64,
    },
}

/// The owner's signed answer to a correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionOutcome {
    /// The correction.
    #[serde(with = "civmesh_policy::hex_digest")]
    pub correction: CorrectionId,
    /// The dataset.
    pub dataset: String,
    /// The decision.
    pub status: OutcomeStatus,
    /// When it was decided.
    pub decided_at_ms: UnixMillis,
}

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

/// Where a correction stands, as a person reads it (`CorrectionView::state`
/// and the `--status` filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionState {
    /// At the submitter: on its way to the owner, or waiting for its decision.
    Submitted,
    /// At the owner: waiting for a reviewer.
    AwaitingReview,
    /// At the owner: waiting for a reviewer, and an import wrote a newer
    /// version that left the corrected fields alone.
    SupersededByImport,
    /// Accepted; being applied.
    Accepted,
    /// The record has a new version whose provenance is the correction.
    Applied,
    /// Rejected, with a reason (in the outcome).
    Rejected,
    /// The corrected fields changed after the base version.
    Conflict,
    /// The policy log refused the submission.
    Failed,
}

impl CorrectionState {
    /// Every state, for the `--status` filter.
    pub const ALL: [CorrectionState; 8] = [
        CorrectionState::Submitted,
        CorrectionState::AwaitingReview,
        CorrectionState::SupersededByImport,
        CorrectionState::Accepted,
        CorrectionState::Applied,
        CorrectionState::Rejected,
        CorrectionState::Conflict,
        CorrectionState::Failed,
    ];

    /// The stable name (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            CorrectionState::Submitted => "submitted",
            CorrectionState::AwaitingReview => "awaiting_review",
            CorrectionState::SupersededByImport => "superseded_by_import",
            CorrectionState::Accepted => "accepted",
            CorrectionState::Applied => "applied",
            CorrectionState::Rejected => "rejected",
            CorrectionState::Conflict => "conflict",
            CorrectionState::Failed => "failed",
        }
    }

    /// The state of an entry with its outcome, if known.
    pub fn of(status: &EntryStatus, outcome: Option<&OutcomeStatus>) -> Self {
        let decided = |outcome: &OutcomeStatus| match outcome {
            OutcomeStatus::Applied { .. } => CorrectionState::Applied,
            OutcomeStatus::Rejected { .. } => CorrectionState::Rejected,
            OutcomeStatus::Conflict { .. } => CorrectionState::Conflict,
        };
        if let Some(outcome) = outcome {
            return decided(outcome);
        }
        match status {
            EntryStatus::AwaitingReview => CorrectionState::AwaitingReview,
            EntryStatus::SupersededByImport { .. } => CorrectionState::SupersededByImport,
            EntryStatus::Accepted => CorrectionState::Accepted,
            EntryStatus::Decided(outcome) => decided(outcome),
            EntryStatus::Failed { .. } => CorrectionState::Failed,
            EntryStatus::AwaitingDelivery
            | EntryStatus::AwaitingOutcome
            | EntryStatus::OutcomeReceived
            | EntryStatus::Received
            | EntryStatus::OutcomeReady
            | EntryStatus::SendingAttachments { .. }
            | EntryStatus::Closed => CorrectionState::Submitted,
        }
    }
}

/// The progress names of [`EntryStatus`], also accepted by the filter.
pub const ENTRY_STATUS_NAMES: [&str; 12] = [
    "sending_attachments",
    "awaiting_delivery",
    "awaiting_outcome",
    "outcome_received",
    "failed",
    "received",
    "awaiting_review",
    "accepted",
    "decided",
    "outcome_ready",
    "closed",
    "superseded_by_import",
];

/// Checks a `--status` filter: a [`CorrectionState`] or an
/// [`EntryStatus`] name; anything else is an error naming it.
pub fn check_status_filter(name: &str) -> Result<(), CorrectionError> {
    let known =
        CorrectionState::ALL.iter().any(|state| state.name() == name) || ENTRY_STATUS_NAMES.contains(&name);
    if known {
        Ok(())
    } else {
        Err(CorrectionError::StatusUnknown(name.to_string()))
    }
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
    /// The record's subject, as a keyed hash.
    pub subject: SubjectKeyHash,
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
    fn new(side: Side, request_bytes: Vec<u8>, submitter: NodeId, subject: SubjectKeyHash) -> Self {
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

/// What an operator or a department system submits (`POST /v1/corrections`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrectionSpec {
    /// The dataset.
    pub dataset: String,
    /// The record key.
    pub record_key: String,
    /// The version the submitter saw.
    pub base_version: u64,
    /// The new values.
    pub changes: BTreeMap<String, civmesh_policy::model::FieldValue>,
    /// Why.
    pub reason: String,
    /// What was seen.
    #[serde(default)]
    pub evidence_text: String,
    /// SHA-256 of each attachment, hex.
    #[serde(default)]
    pub attachment_sha256: Vec<String>,
    /// Who submits (with a scoped token, its named holder is recorded too).
    #[serde(default)]
    pub operator: String,
}

/// A correction as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrectionView {
    /// The id, hex.
    pub id: String,
    /// Which side this node is.
    pub side: Side,
    /// Where it stands: awaiting_review, superseded_by_import, accepted,
    /// applied, rejected (the reason is in the outcome), conflict, or
    /// submitted / failed at the submitter.
    pub state: CorrectionState,
    /// Where it is at this node (the worker's progress).
    pub status: EntryStatus,
    /// The submitting node.
    pub submitter: String,
    /// The submitting organisation, by name (from the policy log).
    #[serde(default)]
    pub submitter_org: Option<String>,
    /// The request.
    pub request: CorrectionRequest,
    /// The owner's outcome, once known.
    pub outcome: Option<CorrectionOutcome>,
    /// Stages this node logged.
    pub stages_logged: BTreeSet<CorrectionStage>,
    /// Failed attempts at the current step.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When this node first kept it.
    pub created_at_ms: UnixMillis,
    /// At the owner: who accepted or rejected it (empty when no person did).
    #[serde(default)]
    pub reviewer: String,
    /// The attachments the request names, and whether this node holds each
    /// (`GET /v1/corrections/{id}/attachments/{index}`).
    #[serde(default)]
    pub attachments: Vec<AttachmentView>,
    /// At the owner: the version the submitter saw.
    pub base_record: Option<RecordVersion>,
    /// At the owner: the record now.
    pub current_record: Option<RecordVersion>,
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

fn backoff_ms(attempts: u32) -> u64 {
    RETRY_BACKOFF_MS_MIN.saturating_mul(1u64 << attempts.min(16)).min(RETRY_BACKOFF_MS_MAX)
}

impl CorrectionService {
    /// The service, with the open entries in `records` reloaded.
    pub fn new(
        log: PolicyLog<SwarmClient>,
        key: Arc<NodeKey>,
        records: Arc<RecordStore>,
        swarm: SwarmClient,
        query: Arc<QueryService>,
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

    // ----- the submitter's side -----

    /// Signs the request, keeps it in the outbox, logs the submission and
    /// wakes the worker to deliver it. Returns the correction id.
    pub async fn submit(&self, spec: CorrectionSpec) -> Result<CorrectionId, CorrectionError> {
        let request = request_from_spec(spec)?;
        request.check_bounds().map_err(|error| CorrectionError::Invalid(error.to_string()))?;
        let limits = self.attachment_limits();
        if request.attachment_sha256.len() > limits.attachments_max {
            return Err(AttachmentError::TooMany {
                count: request.attachment_sha256.len(),
                max: limits.attachments_max,
            }
            .into());
        }
        for digest in &request.attachment_sha256 {
            let held = self
                .records
                .attachment_len(digest)
                .map_err(|error| CorrectionError::Store(error.to_string()))?;
            match held {
                None => return Err(AttachmentError::NotUploaded(hex_id(digest)).into()),
                Some(bytes) if bytes > limits.attachment_bytes_max => {
                    return Err(AttachmentError::TooLarge {
                        name: hex_id(digest),
                        bytes,
                        max: limits.attachment_bytes_max,
                    }
                    .into())
                }
                Some(_) => {}
            }
        }
        if self.query.subject_key_secret.is_empty() {
            return Err(CorrectionError::Invalid("this node has no subject-key secret".to_string()));
        }
        let me = self.key.node_id();
        let known = self.log.state().read(|applied| {
            let dataset = applied.policy.datasets.get(&request.dataset)?;
            let member = applied.policy.active_member(&me)?;
            Some(dataset.owner != member.org)
        });
        match known {
            None => {
                return Err(CorrectionError::Invalid(format!(
                    "no dataset {} in the catalog, or this node is not an active member",
                    request.dataset
                )))
            }
            Some(false) => {
                return Err(CorrectionError::Invalid(
                    "this node's organisation owns the dataset: change the record directly".to_string(),
                ))
            }
            Some(true) => {}
        }
        let guard = self.entries_lock.lock().await;
        if let Some(existing) = self.same_submission(&request)? {
            // A resubmission of the same content on the same base version
            // (a retry after a timeout): the correction already under way.
            return Ok(existing);
        }
        if self.open_count() >= CORRECTIONS_OPEN_MAX {
            return Err(CorrectionError::Full);
        }
        let envelope = SignedEnvelope::sign(&self.key, &request, now_unix_millis())
            .map_err(|error| CorrectionError::Invalid(error.to_string()))?;
        let id = envelope.digest();
        let entry = CorrectionEntry::new(
            Side::Outbox,
            envelope.to_bytes().map_err(|error| CorrectionError::Invalid(error.to_string()))?,
            me,
            SubjectKeyHash::of(&self.query.subject_key_secret, &request.record_key),
        );
        self.save(&id, &entry)?;
        drop(guard);
        tracing::info!(correction = %hex_id(&id), dataset = %request.dataset, "correction submitted");
        self.wake.notify_one();
        Ok(id)
    }

    /// An outbox entry (not refused by the log) whose request has the same
    /// content as `request`: dataset, key, base version, changes, reason,
    /// evidence, attachments and operator.
    fn same_submission(&self, request: &CorrectionRequest) -> Result<Option<CorrectionId>, CorrectionError> {
        for (id, bytes) in
            self.records.corrections().map_err(|error| CorrectionError::Store(error.to_string()))?
        {
            let entry = decode_entry(&bytes)?;
            if entry.side != Side::Outbox || matches!(entry.status, EntryStatus::Failed { .. }) {
                continue;
            }
            let same = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
                .and_then(|envelope| envelope.unverified_payload())
                .is_ok_and(|stored| stored == *request);
            if same {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The submitter's side of an outcome from `peer`: accepted only for a
    /// correction in this outbox (matched by the request's digest), from a
    /// current member of the organisation that owned the dataset when the
    /// correction was submitted, and only once the policy log shows the
    /// owner's decision that the outcome reports.
    async fn receive_outcome(&self, peer: NodeId, bytes: &[u8]) -> CorrectionAck {
        let outcome = match open_from::<CorrectionOutcome>(peer, bytes, "outcome") {
            Ok((_, verified)) => verified.payload,
            Err(refused) => return refused,
        };
        let _guard = self.entries_lock.lock().await;
        let mut entry = match self.load(&outcome.correction) {
            Ok(Some(entry)) if entry.side == Side::Outbox => entry,
            Ok(_) => return CorrectionAck::Refused("no such correction in this outbox".to_string()),
            Err(error) => return CorrectionAck::Refused(error.to_string()),
        };
        let requested_dataset = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .and_then(|envelope| envelope.unverified_payload())
            .map(|request| request.dataset);
        if requested_dataset.as_ref().ok() != Some(&outcome.dataset) {
            self.report(&peer, "correction_outcome_mismatch");
            return CorrectionAck::Refused("the outcome names another dataset than the request".to_string());
        }
        let mut check = self.log.state().read(|applied| outcome_in_log(&applied.policy, &peer, &outcome));
        if check == Err(OutcomeCheck::NotLoggedYet) {
            // The decision may be newer than this replica.
            let _ = self.log.linearizable_read_index(Duration::from_millis(CORRECTION_SEND_TIMEOUT_MS)).await;
            check = self.log.state().read(|applied| outcome_in_log(&applied.policy, &peer, &outcome));
        }
        if let Err(refusal) = check {
            if refusal == OutcomeCheck::NotFromOwner {
                self.report(&peer, "correction_outcome_not_from_owner");
            }
            return CorrectionAck::Refused(refusal.to_string());
        }
        if entry.outcome_bytes.is_some() {
            return CorrectionAck::Stored;
        }
        entry.outcome_bytes = Some(bytes.to_vec());
        entry.status = EntryStatus::OutcomeReceived;
        entry.attempts = 0;
        entry.next_attempt_ms = 0;
        if let Err(error) = self.save(&outcome.correction, &entry) {
            return CorrectionAck::Refused(error.to_string());
        }
        tracing::info!(correction = %hex_id(&outcome.correction), "correction outcome received");
        self.wake.notify_one();
        CorrectionAck::Stored
    }

    // ----- the owner's side -----

    /// The owner's side of a delivery from `peer`.
    async fn receive_request(&self, peer: NodeId, bytes: &[u8]) -> CorrectionAck {
        let (envelope, verified) = match open_from::<CorrectionRequest>(peer, bytes, "correction") {
            Ok(opened) => opened,
            Err(refused) => return refused,
        };
        let id = envelope.digest();
        let request = verified.payload;
        let me = self.key.node_id();
        let check = |state: &PolicyState| -> Result<Option<SubjectKeyHash>, String> {
            if state.active_member(&peer).is_none() {
                return Err("the submitter is not a current member".to_string());
            }
            let owned = state.datasets.get(&request.dataset).is_some_and(|dataset| {
                state.active_member(&me).is_some_and(|member| member.org == dataset.owner)
            });
            if !owned {
                return Err(format!("this node does not own {}", request.dataset));
            }
            Ok(state.corrections.get(&id).filter(|track| track.submitter == peer).map(|track| track.subject))
        };
        let mut logged = self.log.state().read(|applied| check(&applied.policy));
        if matches!(logged, Ok(None)) {
            // The submission may be newer than this replica.
            let _ = self.log.linearizable_read_index(Duration::from_millis(CORRECTION_SEND_TIMEOUT_MS)).await;
            logged = self.log.state().read(|applied| check(&applied.policy));
        }
        let subject = match logged {
            Err(reason) => return CorrectionAck::Refused(reason),
            Ok(None) => {
                return CorrectionAck::Refused("the submission is not in the policy log yet".to_string())
            }
            Ok(Some(subject)) => subject,
        };
        let _guard = self.entries_lock.lock().await;
        match self.load(&id) {
            Ok(Some(_)) => return CorrectionAck::Stored,
            Ok(None) => {}
            Err(error) => return CorrectionAck::Refused(error.to_string()),
        }
        if self.open_count() >= CORRECTIONS_OPEN_MAX {
            return CorrectionAck::Refused("the inbox is full".to_string());
        }
        let entry = CorrectionEntry::new(Side::Inbox, bytes.to_vec(), peer, subject);
        if let Err(error) = self.save(&id, &entry) {
            return CorrectionAck::Refused(error.to_string());
        }
        tracing::info!(correction = %hex_id(&id), dataset = %request.dataset, "correction received");
        self.wake.notify_one();
        CorrectionAck::Stored
    }

    /// An operator's decision on a correction awaiting review; waits (a
    /// bounded time) for the worker to carry it out.
    pub async fn review(
        &self,
        id: &CorrectionId,
        accept: bool,
        reason: &str,
        operator: &str,
    ) -> Result<CorrectionView, CorrectionError> {
        if !accept && (reason.trim().is_empty() || reason.len() > 1024) {
            return Err(CorrectionError::Invalid("a rejection needs a reason of 1..=1024 bytes".to_string()));
        }
        if operator.trim().is_empty() || operator.len() > CORRECTION_TEXT_BYTES_MAX {
            return Err(CorrectionError::Invalid(format!(
                "name the operator who reviews it (1..={CORRECTION_TEXT_BYTES_MAX} bytes)"
            )));
        }
        {
            let _guard = self.entries_lock.lock().await;
            let mut entry = self.load(id)?.ok_or_else(|| CorrectionError::Unknown(hex_id(id)))?;
            let reviewable =
                matches!(entry.status, EntryStatus::AwaitingReview | EntryStatus::SupersededByImport { .. });
            if entry.side != Side::Inbox || !reviewable {
                return Err(CorrectionError::NotReviewable {
                    id: hex_id(id),
                    status: status_name(&entry.status),
                });
            }
            entry.status = if accept {
                EntryStatus::Accepted
            } else {
                EntryStatus::Decided(OutcomeStatus::Rejected {
                    reason_code: CorrectionReasonCode::RejectedByReviewer,
                    reason: reason.to_string(),
                })
            };
            entry.attempts = 0;
            entry.next_attempt_ms = 0;
            entry.reviewer = operator.trim().to_string();
            self.save(id, &entry)?;
        }
        self.wake.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(REVIEW_WAIT_MS_MAX);
        loop {
            let view = self.view(id)?;
            let settled = matches!(view.status, EntryStatus::OutcomeReady | EntryStatus::Closed);
            if settled || tokio::time::Instant::now() >= deadline {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ----- the worker -----

    /// Advances due entries until `stop`, up to
    /// [`CORRECTION_STEPS_IN_FLIGHT_MAX`] entries at once, each entry by one
    /// task at a time.
    pub async fn run_worker(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(CORRECTION_WORKER_TICK_MS));
        let permits = Arc::new(tokio::sync::Semaphore::new(CORRECTION_STEPS_IN_FLIGHT_MAX));
        let in_flight: Arc<Mutex<BTreeSet<CorrectionId>>> = Arc::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
            let due: Vec<CorrectionId> =
                self.open.lock().map(|open| open.iter().copied().collect()).unwrap_or_default();
            for id in due {
                let claimed = in_flight.lock().is_ok_and(|mut in_flight| in_flight.insert(id));
                if !claimed {
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (service, in_flight) = (self.clone(), in_flight.clone());
                tokio::spawn(async move {
                    service.advance(&id).await;
                    if let Ok(mut in_flight) = in_flight.lock() {
                        in_flight.remove(&id);
                    }
                    drop(permit);
                });
            }
        }
    }

    /// Runs steps of one entry until it waits for something or fails. Steps
    /// run without the entries lock (they wait on the log and the network);
    /// an outcome that arrived meanwhile is merged before saving.
    async fn advance(&self, id: &CorrectionId) {
        for _ in 0..8 {
            let Ok(Some(mut entry)) = self.load(id) else { return };
            if !needs_work(&entry.status) || entry.next_attempt_ms > now_unix_millis() {
                return;
            }
            let before = entry.status.clone();
            match self.step(id, &mut entry).await {
                Ok(()) => {
                    entry.attempts = 0;
                    entry.last_error.clear();
                }
                Err(reason) => {
                    entry.attempts = entry.attempts.saturating_add(1);
                    entry.next_attempt_ms = now_unix_millis() + backoff_ms(entry.attempts);
                    tracing::debug!(correction = %hex_id(id), %reason, attempts = entry.attempts, "correction step failed");
                    entry.last_error = reason;
                }
            }
            let _guard = self.entries_lock.lock().await;
            if let Ok(Some(stored)) = self.load(id) {
                if entry.side == Side::Outbox
                    && entry.outcome_bytes.is_none()
                    && stored.outcome_bytes.is_some()
                {
                    entry.outcome_bytes = stored.outcome_bytes;
                    entry.status = EntryStatus::OutcomeReceived;
                    entry.next_attempt_ms = 0;
                    entry.last_error.clear();
                }
            }
            let progressed = entry.status != before && entry.last_error.is_empty();
            if self.save(id, &entry).is_err() || !progressed {
                return;
            }
        }
    }

    /// One step of an entry's life. At the owner, the stages a step reaches
    /// go into the log together, as one entry.
    async fn step(&self, id: &CorrectionId, entry: &mut CorrectionEntry) -> Result<(), String> {
        use CorrectionStage::*;
        let envelope = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .map_err(|e| e.to_string())?;
        let request = envelope.unverified_payload().map_err(|error| error.to_string())?;
        match entry.status.clone() {
            EntryStatus::AwaitingDelivery => {
                match self.log_stages(id, entry, &request, &[(Submitted, None, None)]).await {
                    Err(StageError::Refused(reason)) => {
                        entry.status = EntryStatus::Failed { reason };
                        return Ok(());
                    }
                    other => other.map_err(|error| error.to_string())?,
                }
                let message = CorrectionMessage::Deliver(entry.request_bytes.clone());
                match self.send_to_owner(&request.dataset, &message).await? {
                    CorrectionAck::Stored if request.attachment_sha256.is_empty() => {
                        entry.status = EntryStatus::AwaitingOutcome
                    }
                    CorrectionAck::Stored => entry.status = EntryStatus::SendingAttachments { next: 0 },
                    CorrectionAck::Refused(reason) => return Err(format!("the owner refused: {reason}")),
                }
            }
            EntryStatus::SendingAttachments { next } => {
                self.send_attachment(id, &request, next).await?;
                entry.status = if (next as usize + 1) < request.attachment_sha256.len() {
                    EntryStatus::SendingAttachments { next: next + 1 }
                } else {
                    EntryStatus::AwaitingOutcome
                };
            }
            EntryStatus::OutcomeReceived => {
                self.log_stages(id, entry, &request, &[(OutcomeDelivered, None, None)])
                    .await
                    .map_err(|error| error.to_string())?;
                entry.status = EntryStatus::Closed;
            }
            // The evidence first: a reviewer or a rule decides with it.
            EntryStatus::Received
                if !self.attachments_held(&request)
                    && now_unix_millis().saturating_sub(entry.created_at_ms) < ATTACHMENT_WAIT_MS_MAX =>
            {
                return Err("waiting for the attachments".to_string());
            }
            EntryStatus::Received => match self.evaluate(id, entry.submitter, &request)? {
                EntryStatus::Accepted => self.accept_and_apply(id, entry, &request).await?,
                EntryStatus::Decided(status) => self.decide(id, entry, &request, status).await?,
                next => {
                    self.log_stages(id, entry, &request, &[(Delivered, None, None)])
                        .await
                        .map_err(|error| error.to_string())?;
                    entry.status = next;
                }
            },
            EntryStatus::Accepted => match self.conflicting_version(id, &request)? {
                Some(current) => {
                    let conflict = OutcomeStatus::Conflict { current_version: current };
                    self.decide(id, entry, &request, conflict).await?
                }
                None => self.accept_and_apply(id, entry, &request).await?,
            },
            EntryStatus::Decided(status) => self.decide(id, entry, &request, status).await?,
            EntryStatus::OutcomeReady => {
                let bytes = entry.outcome_bytes.clone().ok_or("the outcome is missing")?;
                let peer = self.log.peer_of(&entry.submitter).ok_or("the submitter's address is unknown")?;
                match self.send(&peer, &CorrectionMessage::Outcome(bytes)).await? {
                    CorrectionAck::Stored => entry.status = EntryStatus::Closed,
                    CorrectionAck::Refused(reason) => return Err(format!("the submitter refused: {reason}")),
                }
            }
            EntryStatus::AwaitingOutcome
            | EntryStatus::AwaitingReview
            | EntryStatus::SupersededByImport { .. }
            | EntryStatus::Failed { .. }
            | EntryStatus::Closed => {}
        }
        Ok(())
    }

    /// Writes the new version, then logs delivered (if not yet), accepted
    /// and applied in one entry, and signs the outcome.
    async fn accept_and_apply(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
    ) -> Result<(), String> {
        use CorrectionStage::*;
        let version = match self.apply(id, request).await? {
            Ok(version) => version,
            Err(current_version) => {
                return self.decide(id, entry, request, OutcomeStatus::Conflict { current_version }).await
            }
        };
        let stages = [(Delivered, None, None), (Accepted, None, None), (Applied, Some(version), None)];
        self.log_stages(id, entry, request, &stages).await.map_err(|error| error.to_string())?;
        self.push_version(id, request).await;
        self.sign_outcome(id, entry, request, OutcomeStatus::Applied { version })
    }

    /// Logs a rejection or a conflict (with delivered, if not yet) and signs
    /// the outcome.
    async fn decide(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
        status: OutcomeStatus,
    ) -> Result<(), String> {
        use CorrectionStage::*;
        let (stage, version, code) = match &status {
            OutcomeStatus::Applied { version } => (Applied, Some(*version), None),
            OutcomeStatus::Rejected { reason_code, .. } => (Rejected, None, Some(*reason_code)),
            OutcomeStatus::Conflict { current_version } => (Conflict, Some(*current_version), None),
        };
        self.log_stages(id, entry, request, &[(Delivered, None, None), (stage, version, code)])
            .await
            .map_err(|error| error.to_string())?;
        self.sign_outcome(id, entry, request, status)
    }

    fn sign_outcome(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
        status: OutcomeStatus,
    ) -> Result<(), String> {
        let outcome = CorrectionOutcome {
            correction: *id,
            dataset: request.dataset.clone(),
            status,
            decided_at_ms: now_unix_millis(),
        };
        let signed = SignedEnvelope::sign(&self.key, &outcome, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .map_err(|error| error.to_string())?;
        entry.outcome_bytes = Some(signed);
        entry.status = EntryStatus::OutcomeReady;
        Ok(())
    }

    /// Checks a delivered request against the schema, the submitter's grants
    /// and the record; decides what happens next.
    fn evaluate(
        &self,
        id: &CorrectionId,
        submitter: NodeId,
        request: &CorrectionRequest,
    ) -> Result<EntryStatus, String> {
        use CorrectionReasonCode as Code;
        let reject = |reason_code: Code, reason: String| {
            Ok(EntryStatus::Decided(OutcomeStatus::Rejected { reason_code, reason }))
        };
        if let Err(error) = request.check_bounds() {
            return reject(Code::InvalidRequest, error.to_string());
        }
        let now_ms = now_unix_millis();
        let current =
            self.records.latest(&request.dataset, &request.record_key).map_err(|error| error.to_string())?;
        let no_fields = BTreeMap::new();
        let current_fields = current.as_ref().map_or(&no_fields, |record| &record.fields);
        // One rule, in `policy`: a usable grant shows every changed field
        // unmasked and holds the record in its scope; touching a scope
        // field always needs review.
        let (dataset, clearance) = self.log.state().read(|applied| {
            let policy = &applied.policy;
            let clearance = policy.check_correction(
                &submitter,
                &request.dataset,
                current_fields,
                &request.changes,
                now_ms,
            );
            (policy.datasets.get(&request.dataset).cloned(), clearance)
        });
        let clearance = match clearance {
            Ok(clearance) => clearance,
            // Out of scope answers like an unknown record: no existence.
            Err(refusal) if refusal.code == Code::RecordOutOfScope => {
                return reject(Code::RecordUnknown, "no such record".to_string())
            }
            Err(refusal) => return reject(refusal.code, refusal.detail),
        };
        let Some(dataset) = dataset else {
            return reject(Code::DatasetUnknown, "no such dataset".to_string());
        };
        let Some(current) = current else {
            return reject(Code::RecordUnknown, "no such record".to_string());
        };
        if current.provenance == (Provenance::Correction { id: hex_id(id) }) {
            // Written before a crash, not yet logged: finish the job.
            return Ok(EntryStatus::Accepted);
        }
        if let Err(error) = merged_row(&dataset, &current, request) {
            return reject(Code::WrongType, error);
        }
        if self.corrected_fields_moved(request, &current).map_err(|error| error.to_string())? {
            return Ok(EntryStatus::Decided(OutcomeStatus::Conflict { current_version: current.version }));
        }
        Ok(if clearance.review_required { EntryStatus::AwaitingReview } else { EntryStatus::Accepted })
    }

    /// The record's current version if it moved past the base version
    /// (and not by this very correction).
    fn conflicting_version(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
    ) -> Result<Option<u64>, String> {
        let current =
            self.records.latest(&request.dataset, &request.record_key).map_err(|error| error.to_string())?;
        let Some(current) = current else { return Ok(None) };
        if current.provenance == (Provenance::Correction { id: hex_id(id) }) {
            return Ok(None);
        }
        let moved = self.corrected_fields_moved(request, &current).map_err(|error| error.to_string())?;
        Ok(moved.then_some(current.version))
    }

    /// Whether `current` differs from the request's base version in a field
    /// the correction changes (or the base version is not there): only then
    /// is it a conflict. A newer version that changed other fields (an
    /// import) is not.
    fn corrected_fields_moved(
        &self,
        request: &CorrectionRequest,
        current: &RecordVersion,
    ) -> Result<bool, crate::records::RecordStoreError> {
        if current.version == request.base_version {
            return Ok(false);
        }
        let history = self.records.history(&request.dataset, &request.record_key)?;
        let Some(base) = history.iter().find(|version| version.version == request.base_version) else {
            return Ok(true);
        };
        Ok(fields_moved(base, current, request))
    }

    /// An import wrote `changed` (key and new version) in `dataset`: each
    /// correction awaiting review on one of those records is now
    /// `superseded_by_import` if the import left its fields as they were at
    /// its base version, or decided as a conflict if it changed one of them.
    /// Returns how many of each. Best effort: a correction missed here (a
    /// crash) is still checked field by field when it is accepted.
    pub async fn records_imported(
        &self,
        dataset: &str,
        changed: &[(String, RecordVersion)],
    ) -> (usize, usize) {
        let changed: BTreeMap<&str, &RecordVersion> =
            changed.iter().map(|(key, version)| (key.as_str(), version)).collect();
        let (mut superseded, mut conflicts) = (0, 0);
        let _guard = self.entries_lock.lock().await;
        let Ok(stored) = self.records.corrections() else { return (0, 0) };
        for (id, bytes) in stored {
            let Ok(mut entry) = decode_entry(&bytes) else { continue };
            let reviewable =
                matches!(entry.status, EntryStatus::AwaitingReview | EntryStatus::SupersededByImport { .. });
            if entry.side != Side::Inbox || !reviewable {
                continue;
            }
            let Ok(request) = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
                .and_then(|envelope| envelope.unverified_payload())
            else {
                continue;
            };
            let Some(new) = changed.get(request.record_key.as_str()).filter(|_| request.dataset == dataset)
            else {
                continue;
            };
            let Ok(moved) = self.corrected_fields_moved(&request, new) else { continue };
            entry.status = if moved {
                conflicts += 1;
                EntryStatus::Decided(OutcomeStatus::Conflict { current_version: new.version })
            } else {
                superseded += 1;
                EntryStatus::SupersededByImport { import_version: new.version }
            };
            entry.attempts = 0;
            entry.next_attempt_ms = 0;
            if let Err(error) = self.save(&id, &entry) {
                tracing::warn!(correction = %hex_id(&id), %error, "a correction could not learn of an import");
            }
        }
        if conflicts > 0 {
            self.wake.notify_one();
        }
        (superseded, conflicts)
    }

    /// Writes the new version (once: a version with this correction's
    /// provenance means it was written before a crash) and pushes it to
    /// subscribers.
    /// Under the apply lock, so two corrections of one record cannot both
    /// build on the same base: returns the new version, or the current one
    /// as `Err` when the record moved past the base version.
    async fn apply(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
    ) -> Result<Result<u64, u64>, String> {
        let _serialised = self.apply_lock.lock().await;
        let provenance = Provenance::Correction { id: hex_id(id) };
        let current = self
            .records
            .latest(&request.dataset, &request.record_key)
            .map_err(|error| error.to_string())?
            .ok_or("the record disappeared")?;
        if current.provenance == provenance {
            return Ok(Ok(current.version));
        }
        if self.corrected_fields_moved(request, &current).map_err(|error| error.to_string())? {
            return Ok(Err(current.version));
        }
        let dataset = self
            .log
            .state()
            .read(|applied| applied.policy.datasets.get(&request.dataset).cloned())
            .ok_or("the dataset disappeared")?;
        let (key, fields) = merged_row(&dataset, &current, request)?;
        let versions = self
            .records
            .write(&request.dataset, vec![(key.clone(), fields)], &provenance, now_unix_millis())
            .map_err(|error| error.to_string())?;
        let version = *versions.first().ok_or("nothing was written")?;
        debug_assert_eq!(version, current.version + 1);
        debug_assert_eq!(self.records.latest_version(&request.dataset, &key).ok().flatten(), Some(version));
        Ok(Ok(version))
    }

    /// Pushes the corrected version to the dataset's subscribers (each push
    /// logged first), in the background.
    async fn push_version(&self, id: &CorrectionId, request: &CorrectionRequest) {
        let Ok(Some(latest)) = self.records.latest(&request.dataset, &request.record_key) else { return };
        if latest.provenance != (Provenance::Correction { id: hex_id(id) }) {
            return;
        }
        let changed = vec![(request.record_key.clone(), latest)];
        let (query, dataset) = (self.query.clone(), request.dataset.clone());
        tokio::spawn(async move { query.push_changes(&dataset, &changed).await });
    }

    /// Logs stages of a correction, in order, in one policy-log entry; each
    /// at most once. A stage the log already has (a retry after a crash)
    /// counts as logged.
    async fn log_stages(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
        stages: &[(CorrectionStage, Option<u64>, Option<CorrectionReasonCode>)],
    ) -> Result<(), StageError> {
        let mut commands = Vec::new();
        let mut logging = Vec::new();
        let decides = stages
            .iter()
            .any(|(stage, ..)| stage.is_owner_decision() && !entry.stages_logged.contains(stage));
        let record_written_at_ms =
            if decides { self.checked_version_written_at(id, request, stages) } else { None };
        for (stage, version, reason_code) in
            stages.iter().filter(|(stage, ..)| !entry.stages_logged.contains(stage))
        {
            let event = CorrectionEvent {
                correction: *id,
                dataset: request.dataset.clone(),
                subject: entry.subject,
                submitter: entry.submitter,
                stage: *stage,
                payload_sha256: *id,
                fields: request.changes.keys().cloned().collect(),
                reason_code: *reason_code,
                version: *version,
                operator: match stage {
                    CorrectionStage::Submitted => request.operator.clone(),
                    CorrectionStage::Accepted | CorrectionStage::Rejected => entry.reviewer.clone(),
                    _ => String::new(),
                },
                record_written_at_ms: record_written_at_ms.filter(|_| stage.is_owner_decision()),
            };
            let command = Command::RecordCorrectionEvent(event);
            commands.push(
                SignedEnvelope::sign(&self.key, &command, now_unix_millis())
                    .map_err(|error| StageError::Unavailable(error.to_string()))?,
            );
            logging.push(*stage);
        }
        if commands.is_empty() {
            return Ok(());
        }
        let submitted =
            tokio::time::timeout(Duration::from_millis(CORRECTION_LOG_TIMEOUT_MS), self.log.submit(commands));
        let result = submitted
            .await
            .map_err(|_| {
                StageError::Unavailable(format!("not committed within {CORRECTION_LOG_TIMEOUT_MS} ms"))
            })?
            .map_err(|error| StageError::Unavailable(error.to_string()))?;
        for (stage, outcome) in logging.into_iter().zip(result.outcomes) {
            match outcome {
                Ok(_) => {}
                Err(rejection)
                    if matches!(
                        rejection.code,
                        RejectionCode::CorrectionDuplicate | RejectionCode::CorrectionStageOutOfOrder
                    ) => {}
                Err(rejection) => return Err(StageError::Refused(rejection.to_string())),
            }
            entry.stages_logged.insert(stage);
            crate::api::metrics::Metrics::count(&self.metrics.correction_stages_logged, stage_label(stage));
        }
        Ok(())
    }

    /// When the record version the owner checked the correction against
    /// was written (for the evaluation's data freshness): for `Applied`,
    /// the version the correction was written on; for `Conflict`, the
    /// current version it met; otherwise the newest version not written by
    /// this correction. `None` when the record is unknown, or (logged) when
    /// the store fails.
    fn checked_version_written_at(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
        stages: &[(CorrectionStage, Option<u64>, Option<CorrectionReasonCode>)],
    ) -> Option<UnixMillis> {
        let history = match self.records.history(&request.dataset, &request.record_key) {
            Ok(history) => history,
            Err(error) => {
                tracing::warn!(correction = %hex_id(id), %error, "the record's write time is unknown");
                return None;
            }
        };
        let checked = stages.iter().find_map(|(stage, version, _)| match (stage, version) {
            (CorrectionStage::Applied, Some(version)) => version.checked_sub(1),
            (CorrectionStage::Conflict, Some(version)) => Some(*version),
            _ => None,
        });
        let own = Provenance::Correction { id: hex_id(id) };
        let version = match checked {
            Some(checked) => history.iter().find(|version| version.version == checked),
            None => history.iter().rev().find(|version| version.provenance != own),
        };
        version.map(|version| version.written_at_ms)
    }

    async fn send_to_owner(
        &self,
        dataset: &str,
        message: &CorrectionMessage,
    ) -> Result<CorrectionAck, String> {
        let owner = self.log.state().read(|applied| {
            let owner = &applied.policy.datasets.get(dataset)?.owner;
            applied
                .policy
                .members
                .values()
                .find(|member| member.org == *owner && member.revoked.is_none())
                .map(|member| member.node_id)
        });
        let owner = owner.ok_or("the dataset has no active owner node")?;
        let peer = self.log.peer_of(&owner).ok_or("the owner's address is unknown")?;
        self.send(&peer, message).await
    }

    async fn send(
        &self,
        peer: &civmesh_consensus::RaftPeer,
        message: &CorrectionMessage,
    ) -> Result<CorrectionAck, String> {
        let bytes = codec::encode(message).map_err(|error| error.to_string())?;
        let answer = self
            .swarm
            .request_on(Protocol::Correction, peer, bytes, Duration::from_millis(CORRECTION_SEND_TIMEOUT_MS))
            .await
            .map_err(|error| format!("not delivered: {error}"))?;
        codec::decode_exact(&answer, CORRECTION_MESSAGE_BYTES_MAX).map_err(|error| error.to_string())
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

    // ----- views -----

    /// Fills in the organisations' names from the policy log and which
    /// attachments this node holds.
    pub fn annotate(&self, views: &mut [CorrectionView]) {
        self.log.state().read(|applied| {
            for view in views.iter_mut() {
                let member = view.submitter.parse().ok().and_then(|node| applied.policy.members.get(&node));
                view.submitter_org = member.map(|member| member.org.to_string());
            }
        });
        for view in views.iter_mut() {
            for attachment in &mut view.attachments {
                let digest = civmesh_policy::hex_digest::from_hex(&attachment.sha256);
                let held = digest.and_then(|digest| self.records.attachment_len(&digest).ok().flatten());
                (attachment.held, attachment.bytes) = (held.is_some(), held);
            }
        }
    }

    /// Whether this node holds every attachment `request` names.
    fn attachments_held(&self, request: &CorrectionRequest) -> bool {
        request
            .attachment_sha256
            .iter()
            .all(|digest| self.records.attachment_len(digest).is_ok_and(|held| held.is_some()))
    }

    /// The bounds on attachments this node enforces.
    pub fn attachment_limits(&self) -> AttachmentLimits {
        AttachmentLimits {
            attachments_max: self.attachments_max.load(Ordering::Relaxed),
            attachment_bytes_max: self.attachment_bytes_max.load(Ordering::Relaxed),
        }
    }

    /// Sets the bounds (from `[corrections]` in `civmesh.toml`).
    pub fn set_attachment_limits(&self, limits: AttachmentLimits) {
        self.attachments_max.store(limits.attachments_max, Ordering::Relaxed);
        self.attachment_bytes_max.store(limits.attachment_bytes_max, Ordering::Relaxed);
    }

    /// Keeps an attachment at the submitter (synced), by its SHA-256, for a
    /// correction to name; returns the digest.
    pub fn upload_attachment(&self, bytes: &[u8]) -> Result<[u8; 32], CorrectionError> {
        let max = self.attachment_limits().attachment_bytes_max;
        if bytes.len() as u64 > max {
            return Err(AttachmentError::TooLarge {
                name: "uploaded".into(),
                bytes: bytes.len() as u64,
                max,
            }
            .into());
        }
        let digest = sha256(bytes);
        self.records
            .put_attachment(&digest, bytes)
            .map_err(|error| CorrectionError::Store(error.to_string()))?;
        Ok(digest)
    }

    /// Attachment `index` of correction `id`, as this node holds it.
    pub fn attachment(&self, id: &CorrectionId, index: u32) -> Result<Vec<u8>, CorrectionError> {
        let entry = self.load(id)?.ok_or_else(|| CorrectionError::Unknown(hex_id(id)))?;
        let request = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .and_then(|envelope| envelope.unverified_payload())
            .map_err(|error| CorrectionError::Store(error.to_string()))?;
        let digest = request
            .attachment_sha256
            .get(index as usize)
            .ok_or(AttachmentError::IndexUnknown { correction: hex_id(id), index })?;
        self.records
            .attachment(digest)
            .map_err(|error| CorrectionError::Store(error.to_string()))?
            .ok_or_else(|| AttachmentError::NotArrived { correction: hex_id(id), index }.into())
    }

    /// Sends attachment `index` to the owner, chunk by chunk.
    async fn send_attachment(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
        index: u32,
    ) -> Result<(), String> {
        let digest = request.attachment_sha256.get(index as usize).ok_or("no such attachment")?;
        let bytes = self
            .records
            .attachment(digest)
            .map_err(|error| error.to_string())?
            .ok_or_else(|| AttachmentError::NotUploaded(hex_id(digest)).to_string())?;
        for chunk in chunks(*id, index, &bytes) {
            match self.send_to_owner(&request.dataset, &CorrectionMessage::Attachment(chunk)).await? {
                CorrectionAck::Stored => {}
                CorrectionAck::Refused(reason) => {
                    return Err(format!("the owner refused attachment {index}: {reason}"))
                }
            }
        }
        Ok(())
    }

    /// The owner's side of an attachment chunk from `peer`: kept (synced)
    /// if it continues what arrived; the last one checked against the
    /// signed digest, and the whole kept only if it matches.
    async fn receive_attachment(&self, peer: NodeId, chunk: AttachmentChunk) -> CorrectionAck {
        let refused = |reason: String| CorrectionAck::Refused(reason);
        let id = chunk.correction;
        let _guard = self.entries_lock.lock().await;
        let entry = match self.load(&id) {
            Ok(Some(entry)) if entry.side == Side::Inbox && entry.submitter == peer => entry,
            Ok(_) => return refused("no such correction from this node in this inbox".to_string()),
            Err(error) => return refused(error.to_string()),
        };
        let Ok(request) = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .and_then(|envelope| envelope.unverified_payload())
        else {
            return refused("the stored request does not decode".to_string());
        };
        let limits = self.attachment_limits();
        let Some(signed) = request.attachment_sha256.get(chunk.index as usize) else {
            return refused(
                AttachmentError::IndexUnknown { correction: hex_id(&id), index: chunk.index }.to_string(),
            );
        };
        if request.attachment_sha256.len() > limits.attachments_max {
            let count = request.attachment_sha256.len();
            return refused(AttachmentError::TooMany { count, max: limits.attachments_max }.to_string());
        }
        match self.records.attachment_len(signed) {
            Ok(Some(_)) => return CorrectionAck::Stored,
            Ok(None) => {}
            Err(error) => return refused(error.to_string()),
        }
        let parts = match self.records.attachment_parts(&id, chunk.index) {
            Ok(parts) => parts,
            Err(error) => return refused(error.to_string()),
        };
        let received: u64 = parts.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let result = match fit(&chunk, received, limits) {
            Err(error) => Err(error.to_string()),
            Ok(ChunkFit::Repeat) => Ok(()),
            Ok(ChunkFit::Next) => self
                .records
                .put_attachment_part(&id, chunk.index, chunk.offset, &chunk.bytes)
                .map_err(|error| error.to_string()),
            Ok(ChunkFit::Last) => {
                let mut whole = Vec::with_capacity(chunk.total_bytes as usize);
                for (_, bytes) in parts {
                    whole.extend_from_slice(&bytes);
                }
                whole.extend_from_slice(&chunk.bytes);
                let _ = self.records.delete_attachment_parts(&id, chunk.index);
                let arrived = sha256(&whole);
                if arrived == *signed {
                    self.records.put_attachment(signed, &whole).map_err(|error| error.to_string())
                } else {
                    tracing::warn!(correction = %hex_id(&id), index = chunk.index, "an attachment does not match its signed digest; dropped");
                    Err(AttachmentError::DigestMismatch {
                        index: chunk.index,
                        signed: hex_id(signed),
                        received: hex_id(&arrived),
                    }
                    .to_string())
                }
            }
        };
        match result {
            Ok(()) => CorrectionAck::Stored,
            Err(reason) => refused(reason),
        }
    }

    /// One correction as this node knows it, with both record versions at the owner.
    pub fn view(&self, id: &CorrectionId) -> Result<CorrectionView, CorrectionError> {
        let entry = self.load(id)?.ok_or_else(|| CorrectionError::Unknown(hex_id(id)))?;
        let mut view = view_of(id, &entry)?;
        self.annotate(std::slice::from_mut(&mut view));
        if entry.side == Side::Inbox {
            let history = self
                .records
                .history(&view.request.dataset, &view.request.record_key)
                .map_err(|error| CorrectionError::Store(error.to_string()))?;
            view.base_record = history.iter().find(|v| v.version == view.request.base_version).cloned();
            view.current_record = history.last().cloned();
        }
        Ok(view)
    }

    /// The corrections at this node in `status` (all when `None`), newest
    /// first, at most `limit`: filtered before the limit is applied, so no
    /// number of others can hide the ones asked for.
    pub fn list(&self, status: Option<&str>, limit: usize) -> Result<Vec<CorrectionView>, CorrectionError> {
        let mut views = Vec::new();
        for (id, bytes) in
            self.records.corrections().map_err(|error| CorrectionError::Store(error.to_string()))?
        {
            let view = view_of(&id, &decode_entry(&bytes)?)?;
            if status.is_none_or(|wanted| status_name(&view.status) == wanted || view.state.name() == wanted)
            {
                views.push(view);
            }
        }
        views.sort_by_key(|view| std::cmp::Reverse(view.created_at_ms));
        views.truncate(limit);
        Ok(views)
    }
}

/// Why a stage could not be logged.
#[derive(Debug, thiserror::Error)]
enum StageError {
    /// The log refused it for good.
    #[error("the policy log refused the event: {0}")]
    Refused(String),
    /// The log could not be reached; try again.
    #[error("the policy log is unavailable: {0}")]
    Unavailable(String),
}

/// Why a submitter does not take an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum OutcomeCheck {
    /// The sender is not a current member of the owning organisation.
    #[error("the outcome is not from the organisation that owns the correction's dataset")]
    NotFromOwner,
    /// The log does not show the decision the outcome reports (yet).
    #[error("the policy log does not show this decision yet")]
    NotLoggedYet,
}

/// Checks an outcome from `peer` against the correction's track in the log.
fn outcome_in_log(
    state: &PolicyState,
    peer: &NodeId,
    outcome: &CorrectionOutcome,
) -> Result<(), OutcomeCheck> {
    let track = state.corrections.get(&outcome.correction).ok_or(OutcomeCheck::NotLoggedYet)?;
    let from_owner = state.active_member(peer).is_some_and(|member| member.org == track.owner);
    if !from_owner || track.dataset != outcome.dataset {
        return Err(OutcomeCheck::NotFromOwner);
    }
    let logged = match &outcome.status {
        OutcomeStatus::Applied { version } => {
            track.reached_at(CorrectionStage::Applied).is_some() && track.applied_version == Some(*version)
        }
        OutcomeStatus::Rejected { .. } => track.reached_at(CorrectionStage::Rejected).is_some(),
        OutcomeStatus::Conflict { .. } => track.reached_at(CorrectionStage::Conflict).is_some(),
    };
    if logged {
        Ok(())
    } else {
        Err(OutcomeCheck::NotLoggedYet)
    }
}

/// Decodes a signed `what` from `peer` and checks that `peer` signed it.
fn open_from<T: serde::de::DeserializeOwned + Serialize>(
    peer: NodeId,
    bytes: &[u8],
    what: &str,
) -> Result<(SignedEnvelope<T>, civmesh_certs::VerifiedEnvelope<T>), CorrectionAck> {
    let envelope = SignedEnvelope::<T>::from_bytes(bytes)
        .map_err(|error| CorrectionAck::Refused(format!("malformed {what}: {error}")))?;
    match envelope.verify_signature() {
        Ok(verified) if verified.signer == peer => Ok((envelope, verified)),
        Ok(_) => Err(CorrectionAck::Refused(format!("the {what} is signed by another node"))),
        Err(error) => Err(CorrectionAck::Refused(format!("the {what}'s signature: {error}"))),
    }
}

fn stage_label(stage: CorrectionStage) -> &'static str {
    match stage {
        CorrectionStage::Submitted => "submitted",
        CorrectionStage::Delivered => "delivered",
        CorrectionStage::Accepted => "accepted",
        CorrectionStage::Rejected => "rejected",
        CorrectionStage::Conflict => "conflict",
        CorrectionStage::Applied => "applied",
        CorrectionStage::OutcomeDelivered => "outcome_delivered",
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

/// The status's stable name (`awaiting_review`, `decided`, ...), as in JSON.
pub fn status_name(status: &EntryStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|value| match value {
            serde_json::Value::String(name) => Some(name),
            serde_json::Value::Object(map) => map.keys().next().cloned(),
            _ => None,
        })
        .unwrap_or_default()
}

fn decode_entry(bytes: &[u8]) -> Result<CorrectionEntry, CorrectionError> {
    codec::decode_exact(bytes, CORRECTION_MESSAGE_BYTES_MAX * 2)
        .map_err(|error| CorrectionError::Store(format!("a stored correction is corrupt: {error}")))
}

fn view_of(id: &CorrectionId, entry: &CorrectionEntry) -> Result<CorrectionView, CorrectionError> {
    let request = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
        .and_then(|envelope| envelope.unverified_payload())
        .map_err(|error| CorrectionError::Store(error.to_string()))?;
    let outcome = entry
        .outcome_bytes
        .as_ref()
        .map(|bytes| {
            SignedEnvelope::<CorrectionOutcome>::from_bytes(bytes).and_then(|e| e.unverified_payload())
        })
        .transpose()
        .map_err(|error| CorrectionError::Store(error.to_string()))?;
    let attachments = request
        .attachment_sha256
        .iter()
        .enumerate()
        .map(|(index, digest)| AttachmentView {
            index: index as u32,
            sha256: hex_id(digest),
            held: false,
            bytes: None,
        })
        .collect();
    Ok(CorrectionView {
        id: hex_id(id),
        side: entry.side,
        state: CorrectionState::of(&entry.status, outcome.as_ref().map(|outcome| &outcome.status)),
        status: entry.status.clone(),
        submitter: entry.submitter.to_string(),
        submitter_org: None,
        request,
        outcome,
        stages_logged: entry.stages_logged.clone(),
        attempts: entry.attempts,
        last_error: entry.last_error.clone(),
        created_at_ms: entry.created_at_ms,
        reviewer: entry.reviewer.clone(),
        attachments,
        base_record: None,
        current_record: None,
    })
}

fn request_from_spec(spec: CorrectionSpec) -> Result<CorrectionRequest, CorrectionError> {
    let attachment_sha256 = spec
        .attachment_sha256
        .iter()
        .map(|text| {
            hex::decode(text)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| CorrectionError::Invalid(format!("{text:?} is not a hex SHA-256")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorrectionRequest {
        dataset: spec.dataset,
        record_key: spec.record_key,
        base_version: spec.base_version,
        changes: spec.changes,
        reason: spec.reason,
        evidence_text: spec.evidence_text,
        attachment_sha256,
        operator: spec.operator,
    })
}

/// Whether a field the correction changes differs between two versions.
fn fields_moved(base: &RecordVersion, current: &RecordVersion, request: &CorrectionRequest) -> bool {
    request.changes.keys().any(|field| base.fields.get(field) != current.fields.get(field))
}

/// The current record with the changes laid over it, validated as a row.
fn merged_row(
    dataset: &Dataset,
    current: &RecordVersion,
    request: &CorrectionRequest,
) -> Result<(String, BTreeMap<String, civmesh_policy::model::FieldValue>), String> {
    let mut row = current.fields.clone();
    row.extend(request.changes.clone());
    let (key, fields) = validate_row(dataset, &row).map_err(|error| error.to_string())?;
    if key != request.record_key {
        return Err("the record key does not match".to_string());
    }
    Ok((key, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let waits: Vec<u64> = (1..=10).map(backoff_ms).collect();
        assert_eq!(&waits[..4], &[200, 400, 800, 1_600]);
        assert!(waits.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(backoff_ms(40), RETRY_BACKOFF_MS_MAX);
        assert_eq!(*waits.last().unwrap(), RETRY_BACKOFF_MS_MAX);
    }

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
