//! Requests from the subject (PIPL Art. 44-47), on a node.
//!
//! - **Intake** (any node, typically a street's service window): the
//!   resident asks for access to, correction of, or deletion of their
//!   record at a dataset's owner. The node hashes the record key under the
//!   pair key of the owner's organisation and its own (as its queries do),
//!   signs `Command::FileSubjectRequest`, and sends it with the plain key
//!   to an owner node over `/civmesh/query/1` ([`file()`]); when its own
//!   organisation owns the dataset it takes the request itself.
//! - **Owner** ([`take()`]): checks the signature, that the key hashes to the
//!   signed subject and that the record exists, keeps the plain key (synced,
//!   in [`kept`]) and logs the intake's command. An unknown record is
//!   refused, and nothing is logged.
//! - **Answer** ([`answer()`]): the owner acts by kind (the access report
//!   from its replica's access log, or the record deleted; a correction
//!   travels through the correction loop), logs
//!   `Command::AnswerSubjectRequest`, and forgets the key.
//!
//! The log holds metadata only: kind, dataset, keyed subject hash,
//! deadline, answer. The plain key never enters a log, a URL or a log line.

mod admission;
mod answer;
pub mod kept;
mod report;
mod views;

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, OrgId, SignedEnvelope};
use civmesh_consensus::RaftPeer;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::state::RejectionCode;
use civmesh_policy::subject_request::{SubjectRequestId, SubjectRequestKind, SubjectRequestSpec};
use civmesh_policy::{Applied, Command, Rejection, SignedCommand};
use serde::{Deserialize, Serialize};

use crate::query::QueryService;
use crate::records::RECORD_KEY_BYTES_MAX;

pub use admission::{security_event, ENTRY_SLACK_MS};
pub use answer::{answer, AnswerError, AnswerRequest, Answered};
pub use report::{AccessReport, ReportedAccess, REPORT_ACCESSES_MAX, REPORT_ENTRIES_SCANNED_MAX};
pub use views::{list, SubjectRequestList, SubjectRequestView, SUBJECT_REQUESTS_LISTED_MAX};

/// How long an owner may take to log a request after the intake signed
/// it, in ms: the log's bound on a command's age. A deadline is counted
/// from the intake's clock plus this, so the log (which counts from its
/// entry time) finds it within its bounds.
pub const FILING_MARGIN_MS: u64 = civmesh_policy::state::COMMAND_SKEW_MS_MAX;
/// A day, in ms.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest dataset id a request may name, in bytes.
pub const DATASET_ID_BYTES_MAX: usize = civmesh_policy::model::NAME_BYTES_MAX;
/// How long the intake waits to catch up with the log to find a dataset
/// published a moment ago, in ms.
const CATCH_UP_MS: u64 = 5_000;

/// `POST /v1/subject-requests`: what the resident asks, as the intake
/// takes it. The record key travels in the body only.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeRequest {
    /// Access, correction or deletion.
    pub kind: SubjectRequestKind,
    /// The dataset holding the resident's record.
    pub dataset: String,
    /// The record's key (e.g. the citizen id).
    pub record_key: String,
    /// Days the owner has to answer (1 to 60); the node's
    /// `[subject_requests] deadline_days` if absent.
    #[serde(default)]
    pub deadline_days: Option<u64>,
    /// For a correction: what the resident says is wrong, submitted into
    /// the correction loop with the resident as its origin.
    #[serde(default)]
    pub correction: Option<ResidentCorrection>,
    /// Who took the request at the window, recorded with a correction
    /// (required then with the admin token; a scoped token's holder is
    /// recorded too).
    #[serde(default)]
    pub operator: Option<String>,
}

/// The correction a resident asks for (Art. 46).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidentCorrection {
    /// The version of the record the resident was shown.
    pub base_version: u64,
    /// The new value of each field the resident says is wrong.
    pub changes: std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>,
    /// What the resident says, in words.
    pub reason: String,
}

impl std::fmt::Debug for ResidentCorrection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ResidentCorrection")
            .field("base_version", &self.base_version)
            .field("fields", &self.changes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IntakeRequest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IntakeRequest")
            .field("kind", &self.kind)
            .field("dataset", &self.dataset)
            .field("record_key", &format_args!("<{} bytes>", self.record_key.len()))
            .field("deadline_days", &self.deadline_days)
            .field("correction", &self.correction)
            .field("operator_named", &self.operator.is_some())
            .finish()
    }
}

/// What the intake answers once the owner logged the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filed {
    /// The request's id (64 hex digits).
    pub id: String,
    /// By when the owner must answer (ISO 8601, Asia/Shanghai).
    pub deadline: String,
    /// The same, in ms since the epoch.
    pub deadline_ms: u64,
    /// The owner's organisation.
    pub owner_org: String,
    /// The correction submitted with a correction request, if any.
    #[serde(default)]
    pub correction: Option<String>,
}

/// What travels to the owner in
/// [`crate::query::QueryProtocolMessage::SubjectRequest`], encoded.
#[derive(Clone, Serialize, Deserialize)]
pub struct SubjectRequestWire {
    /// The intake's `SignedEnvelope<Command>` (a `FileSubjectRequest`), wire bytes.
    pub envelope: Vec<u8>,
    /// The plain record key, which never enters the log.
    pub record_key: String,
}

impl std::fmt::Debug for SubjectRequestWire {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SubjectRequestWire")
            .field("envelope", &format_args!("<{} bytes>", self.envelope.len()))
            .field("record_key", &format_args!("<{} bytes>", self.record_key.len()))
            .finish()
    }
}

/// The owner's answer to a subject request (signed by the owner node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerReply {
    /// The digest of the intake's envelope (zero if it did not decode).
    pub request: [u8; 32],
    /// What became of it.
    pub outcome: OwnerOutcome,
}

/// What became of a request at the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerOutcome {
    /// Logged; open until the owner answers.
    Filed,
    /// The owner holds no such record: nothing was logged.
    RecordUnknown,
    /// The log refused it, with its code.
    Rejected(Rejection),
    /// Not taken: the request is wrong (signature, subject, dataset, rate).
    Refused(String),
    /// Not taken, or not known to be logged: the owner failed (its store,
    /// the log).
    Unavailable(String),
}

impl OwnerReply {
    /// A refusal of a request that did not decode (or was over a limit).
    pub fn refused(reason: String) -> Self {
        OwnerReply { request: [0; 32], outcome: OwnerOutcome::Refused(reason) }
    }
}

/// Why the intake could not file a request. Each message starts with a
/// stable code word.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The request is wrong (kind, dataset, key, deadline).
    #[error("invalid_request: {0}")]
    Invalid(String),
    /// No dataset with this id in the catalog.
    #[error("dataset_unknown: no dataset {0} in the catalog")]
    DatasetUnknown(String),
    /// The owner holds no such record: nothing was logged.
    #[error("record_unknown: the owner holds no such record in {0}; nothing was logged")]
    RecordUnknown(String),
    /// No owner node could be reached, or it failed.
    #[error("owner_unreachable: {0}")]
    OwnerUnreachable(String),
    /// The owner refused the request.
    #[error("owner_refused: {0}")]
    Refused(String),
    /// The log refused it.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// This node failed (its key, its randomness, its store).
    #[error("intake_failed: {0}")]
    Internal(String),
}

impl FileError {
    /// The HTTP status the API answers it with.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            FileError::Invalid(_) => StatusCode::BAD_REQUEST,
            FileError::DatasetUnknown(_) | FileError::RecordUnknown(_) => StatusCode::NOT_FOUND,
            FileError::OwnerUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FileError::Rejected(rejection) if rejection.code == RejectionCode::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            FileError::Rejected(rejection) if rejection.code == RejectionCode::InvalidArgument => {
                StatusCode::BAD_REQUEST
            }
            FileError::Rejected(_) => StatusCode::CONFLICT,
            FileError::Refused(_) => StatusCode::BAD_GATEWAY,
            FileError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Checks a record key as the record store takes them.
pub fn check_record_key(record_key: &str) -> Result<(), String> {
    if record_key.is_empty() || record_key.len() > RECORD_KEY_BYTES_MAX || record_key.contains('\0') {
        return Err(format!("a record key is 1 to {RECORD_KEY_BYTES_MAX} bytes, without NUL"));
    }
    Ok(())
}

/// Checks `request`; returns its deadline in days (`default_days` if it names none).
pub fn check_intake(request: &IntakeRequest, default_days: u64) -> Result<u64, FileError> {
    if request.dataset.is_empty() || request.dataset.len() > DATASET_ID_BYTES_MAX {
        return Err(FileError::Invalid(format!("a dataset id is 1 to {DATASET_ID_BYTES_MAX} bytes")));
    }
    check_record_key(&request.record_key).map_err(FileError::Invalid)?;
    let days = request.deadline_days.unwrap_or(default_days);
    if !crate::config::DEADLINE_DAYS_RANGE.contains(&days) {
        return Err(FileError::Invalid("deadline_days is 1 to 60".to_string()));
    }
    Ok(days)
}

/// The deadline of a request signed at `now_ms` with `days` to answer:
/// `days` after it, plus [`FILING_MARGIN_MS`] (never past 60 days), so
/// the log, counting from its later entry time, finds it in bounds.
pub fn deadline_ms(now_ms: u64, days: u64) -> u64 {
    let latest_ms = now_ms.saturating_add(60 * DAY_MS);
    now_ms.saturating_add(days.saturating_mul(DAY_MS)).saturating_add(FILING_MARGIN_MS).min(latest_ms)
}

/// 32 random bytes from the system's source.
fn random_id() -> Result<SubjectRequestId, FileError> {
    let mut id = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| FileError::Internal("the system random source failed".to_string()))?;
    Ok(id)
}

/// The intake's side: files `request` at the dataset's owner, with
/// `default_days` to answer if it names no deadline. The owner logs it
/// only if it holds the record.
pub async fn file(
    query: &QueryService,
    request: IntakeRequest,
    default_days: u64,
) -> Result<Filed, FileError> {
    let days = check_intake(&request, default_days)?;
    let me = query.key.node_id();
    let owners = |query: &QueryService| {
        query.log.state().read(|applied| {
            let policy = &applied.policy;
            let dataset = policy.datasets.get(&request.dataset)?;
            let mine = policy.active_member(&me).map(|member| member.org.clone());
            let owner_node = policy
                .members
                .values()
                .find(|member| {
                    member.org == dataset.owner && member.revoked.is_none() && member.node_id != me
                })
                .map(|member| member.node_id);
            Some((dataset.owner.clone(), mine, owner_node))
        })
    };
    let mut found = owners(query);
    if found.is_none() {
        // Perhaps published a moment ago: catch up with the leader once.
        let _ = query.log.linearizable_read_index(Duration::from_millis(CATCH_UP_MS)).await;
        found = owners(query);
    }
    let (owner_org, mine, owner_node) =
        found.ok_or_else(|| FileError::DatasetUnknown(request.dataset.clone()))?;
    let mine = mine.ok_or_else(|| FileError::Internal("this node is no active member".to_string()))?;
    let local = mine == owner_org;
    let (pair_key, peer) = if local {
        let key = query.subject_keys.for_requester(&mine).ok_or_else(|| {
            FileError::Internal("this node holds no subject key for its organisation".to_string())
        })?;
        (key, None)
    } else {
        let node = owner_node
            .ok_or_else(|| FileError::OwnerUnreachable(format!("{owner_org} has no active node")))?;
        let peer = query
            .log
            .peer_of(&node)
            .ok_or_else(|| FileError::OwnerUnreachable("the owner's address is unknown".to_string()))?;
        let key = query.pair_key_for(&peer).await.map_err(|error| match error {
            crate::query::AskError::Refused(reason) => FileError::Refused(reason),
            other => FileError::OwnerUnreachable(other.to_string()),
        })?;
        (key, Some(peer))
    };
    let now_ms = now_unix_millis();
    let spec = SubjectRequestSpec {
        id: random_id()?,
        kind: request.kind,
        dataset: request.dataset.clone(),
        subject: SubjectKeyHash::of(&pair_key, &request.record_key),
        deadline_ms: deadline_ms(now_ms, days),
    };
    let envelope = SignedEnvelope::sign(&query.key, &Command::FileSubjectRequest(spec.clone()), now_ms)
        .map_err(|error| FileError::Internal(error.to_string()))?;
    let digest = envelope.digest();
    let wire = SubjectRequestWire {
        envelope: envelope.to_bytes().map_err(|error| FileError::Internal(error.to_string()))?,
        record_key: request.record_key,
    };
    let reply = match &peer {
        None => take(query, me, wire).await,
        Some(peer) => send(query, peer, &wire).await?,
    };
    filed(reply, digest, &spec, &owner_org)
}

/// Sends `wire` to `peer` and returns its signed reply.
async fn send(
    query: &QueryService,
    peer: &RaftPeer,
    wire: &SubjectRequestWire,
) -> Result<OwnerReply, FileError> {
    let bytes = civmesh_certs::codec::encode(wire).map_err(|error| FileError::Internal(error.to_string()))?;
    query.send_subject_request(peer, bytes).await.map_err(|error| match error {
        crate::query::AskError::NoAnswer(_) => FileError::OwnerUnreachable(error.to_string()),
        other => FileError::Refused(other.to_string()),
    })
}

/// What the intake makes of the owner's reply to request `digest`.
fn filed(
    reply: OwnerReply,
    digest: [u8; 32],
    spec: &SubjectRequestSpec,
    owner_org: &civmesh_certs::OrgId,
) -> Result<Filed, FileError> {
    match reply.outcome {
        OwnerOutcome::Filed if reply.request == digest => Ok(Filed {
            id: hex::encode(spec.id),
            deadline: civmesh_policy::evaluation::format_time(spec.deadline_ms),
            deadline_ms: spec.deadline_ms,
            owner_org: owner_org.to_string(),
            correction: None,
        }),
        OwnerOutcome::Filed => Err(FileError::Refused("the owner answered another request".to_string())),
        OwnerOutcome::RecordUnknown => Err(FileError::RecordUnknown(spec.dataset.clone())),
        OwnerOutcome::Rejected(rejection) => Err(FileError::Rejected(rejection)),
        OwnerOutcome::Refused(reason) => Err(FileError::Refused(reason)),
        OwnerOutcome::Unavailable(reason) => Err(FileError::OwnerUnreachable(reason)),
    }
}

/// The owner's side: takes the request `peer` sent (this node itself for
/// a request its own organisation took). First checks the whole command
/// as the log will, and that there is room to keep its key, so a refusal
/// never depends on the record; then logs it only if the record exists
/// here, keeping the plain key until the answer.
pub async fn take(query: &QueryService, peer: NodeId, wire: SubjectRequestWire) -> OwnerReply {
    let Ok(envelope) = SignedCommand::from_bytes(&wire.envelope) else {
        return OwnerReply::refused("the request does not decode".to_string());
    };
    let request = envelope.digest();
    let reply = |outcome| OwnerReply { request, outcome };
    let (spec, intake) = match checked(query, &peer, &envelope, &wire.record_key) {
        Ok(checked) => checked,
        Err(outcome) => return reply(outcome),
    };
    let store = match kept::KeptKeys::of(&query.records) {
        Ok(store) => store,
        Err(error) => return reply(OwnerOutcome::Unavailable(error.to_string())),
    };
    let keeping = kept::Kept::new(spec.id, &spec.dataset, spec.kind, &intake, &wire.record_key);
    let room = {
        let (store, keeping, is_open) = (store.clone(), keeping.clone(), is_open(query));
        kept::blocking(move || store.has_room(&keeping, is_open)).await
    };
    if let Err(error) = room {
        return reply(not_kept(error));
    }
    match query.records.latest(&spec.dataset, &wire.record_key) {
        Ok(Some(_)) => {}
        Ok(None) => return reply(OwnerOutcome::RecordUnknown),
        Err(error) => return reply(OwnerOutcome::Unavailable(error.to_string())),
    }
    let kept = {
        let (store, is_open) = (store.clone(), is_open(query));
        kept::blocking(move || store.keep(keeping, is_open)).await
    };
    if let Err(error) = kept {
        return reply(not_kept(error));
    }
    let outcome = match query.log.submit(vec![envelope]).await {
        Ok(result) => match result.outcomes.into_iter().next() {
            Some(Ok(Applied::Done)) => OwnerOutcome::Filed,
            Some(Ok(other)) => OwnerOutcome::Unavailable(format!("the log applied it as {other:?}")),
            Some(Err(rejection)) => OwnerOutcome::Rejected(rejection),
            None => OwnerOutcome::Unavailable("the log gave no outcome".to_string()),
        },
        // It may still commit: the key stays kept until it is known not
        // to have (`KeptKeys::keep` prunes it then).
        Err(error) => return reply(OwnerOutcome::Unavailable(error.to_string())),
    };
    if !matches!(outcome, OwnerOutcome::Filed) {
        let id = spec.id;
        if let Err(error) = kept::blocking(move || store.forget(&id)).await {
            tracing::warn!(%error, "could not forget a refused subject request's key");
        }
    }
    reply(outcome)
}

/// Whether the log holds request `id` open, on this replica (for the
/// blocking pool).
fn is_open(query: &QueryService) -> impl Fn(&SubjectRequestId) -> bool + Send + 'static {
    let state = query.log.state().clone();
    move |id| state.read(|applied| applied.policy.subject_requests.contains_key(id))
}

/// The reply to a request whose key cannot be kept.
fn not_kept(error: kept::KeepError) -> OwnerOutcome {
    match error {
        kept::KeepError::Taken => OwnerOutcome::Refused("a request with this id is being taken".to_string()),
        kept::KeepError::Full | kept::KeepError::IntakeFull(_) => {
            OwnerOutcome::Rejected(Rejection { code: RejectionCode::Overloaded, detail: error.to_string() })
        }
        other => OwnerOutcome::Unavailable(other.to_string()),
    }
}

/// The request `envelope` from `peer` and the intake's organisation, if it
/// is a subject request `peer` signed that the log would take now
/// ([`admission::admit`]), for a dataset this node's organisation owns,
/// naming the subject `record_key` hashes to under the pair key of the two
/// organisations.
fn checked(
    query: &QueryService,
    peer: &NodeId,
    envelope: &SignedCommand,
    record_key: &str,
) -> Result<(SubjectRequestSpec, OrgId), OwnerOutcome> {
    let verified = envelope.verify_signature().map_err(|error| OwnerOutcome::Refused(error.to_string()))?;
    if verified.signer != *peer {
        return Err(OwnerOutcome::Refused("the request is not signed by its sender".to_string()));
    }
    let Command::FileSubjectRequest(spec) = verified.payload else {
        return Err(OwnerOutcome::Refused("not a subject request".to_string()));
    };
    check_record_key(record_key).map_err(OwnerOutcome::Refused)?;
    let candidate =
        admission::Candidate { signer: peer, issued_at_ms: verified.issued_at_ms, spec: &spec, record_key };
    let me = query.key.node_id();
    let intake = query.log.state().read(|applied| {
        admission::admit(&applied.policy, &query.subject_keys, &me, &candidate, now_unix_millis())
    })?;
    Ok((spec, intake))
}

#[cfg(test)]
mod tests;
