//! The submitter's side: sign a correction, keep it in the outbox, and
//! take the owner's outcome once the policy log shows it.

use std::collections::BTreeMap;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, SignedEnvelope};
use civmesh_policy::correction::{CorrectionId, CorrectionRequest, CorrectionStage};
use civmesh_policy::PolicyState;
use serde::{Deserialize, Serialize};

use crate::corrections::attachments::AttachmentError;
use crate::corrections::wire::open_from;
use crate::corrections::{
    decode_entry, hex_id, CorrectionAck, CorrectionEntry, CorrectionError, CorrectionOutcome,
    CorrectionService, EntryStatus, OutcomeStatus, Side, CORRECTIONS_OPEN_MAX, CORRECTION_SEND_TIMEOUT_MS,
};

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

impl CorrectionService {
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
            None,
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
    pub(super) async fn receive_outcome(&self, peer: NodeId, bytes: &[u8]) -> CorrectionAck {
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
        // Kept already (a resend): the log may have released the track since.
        if entry.outcome_bytes.is_some() {
            return CorrectionAck::Stored;
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
