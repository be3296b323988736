//! The worker: advances each open entry, one step at a time, logging each
//! stage and delivering each message until the entry waits or closes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civmesh_certs::codec::CodecError;
use civmesh_certs::{codec, now_unix_millis, EnvelopeError, SignedEnvelope, UnixMillis};
use civmesh_consensus::TransportError;
use civmesh_policy::correction::{CorrectionEvent, CorrectionId, CorrectionRequest, CorrectionStage};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{Command, CorrectionReasonCode, RejectionCode};

use crate::corrections::attachments::{SendAttachmentError, ATTACHMENT_WAIT_MS_MAX};
use crate::corrections::owner::WriteError;
use crate::corrections::{
    hex_id, needs_work, CorrectionAck, CorrectionEntry, CorrectionMessage, CorrectionService, EntryStatus,
    OutcomeStatus, Side, CORRECTION_LOG_TIMEOUT_MS, CORRECTION_MESSAGE_BYTES_MAX, CORRECTION_SEND_TIMEOUT_MS,
    CORRECTION_STEPS_IN_FLIGHT_MAX, CORRECTION_WORKER_TICK_MS, RETRY_BACKOFF_MS_MAX, RETRY_BACKOFF_MS_MIN,
};
use crate::records::{Provenance, RecordStoreError};
use crate::swarm::Protocol;

impl CorrectionService {
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
                self.tasks.spawn(async move {
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
                Err(error) => {
                    entry.attempts = entry.attempts.saturating_add(1);
                    entry.next_attempt_ms = now_unix_millis() + backoff_ms(entry.attempts);
                    tracing::debug!(correction = %hex_id(id), %error, attempts = entry.attempts, "correction step failed");
                    entry.last_error = error.to_string();
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
    async fn step(&self, id: &CorrectionId, entry: &mut CorrectionEntry) -> Result<(), StepError> {
        use CorrectionStage::*;
        let request = SignedEnvelope::<CorrectionRequest>::from_bytes(&entry.request_bytes)
            .and_then(|envelope| envelope.unverified_payload())
            .map_err(StepError::RequestCorrupt)?;
        match entry.status.clone() {
            EntryStatus::AwaitingDelivery => self.deliver(id, entry, &request).await?,
            EntryStatus::SendingAttachments { next } => {
                self.send_attachment(id, &request, next).await?;
                entry.status = if (next as usize + 1) < request.attachment_sha256.len() {
                    EntryStatus::SendingAttachments { next: next + 1 }
                } else {
                    EntryStatus::AwaitingOutcome
                };
            }
            EntryStatus::OutcomeReceived => {
                self.log_stages(id, entry, &request, &[(OutcomeDelivered, None, None)]).await?;
                entry.status = EntryStatus::Closed;
            }
            // The evidence first: a reviewer or a rule decides with it.
            EntryStatus::Received
                if !self.attachments_held(&request)
                    && now_unix_millis().saturating_sub(entry.created_at_ms) < ATTACHMENT_WAIT_MS_MAX =>
            {
                return Err(StepError::AttachmentsPending);
            }
            EntryStatus::Received => match self.evaluate(id, entry.submitter, &request)? {
                EntryStatus::Accepted => self.accept_and_apply(id, entry, &request).await?,
                EntryStatus::Decided(status) => self.record_decision(id, entry, &request, status).await?,
                next => {
                    self.log_stages(id, entry, &request, &[(Delivered, None, None)]).await?;
                    entry.status = next;
                }
            },
            EntryStatus::Accepted => match self.conflicting_version(id, &request)? {
                Some(current) => {
                    let conflict = OutcomeStatus::Conflict { current_version: current };
                    self.record_decision(id, entry, &request, conflict).await?
                }
                None => self.accept_and_apply(id, entry, &request).await?,
            },
            EntryStatus::Decided(status) => self.record_decision(id, entry, &request, status).await?,
            EntryStatus::OutcomeReady => self.deliver_outcome(entry).await?,
            EntryStatus::AwaitingOutcome
            | EntryStatus::AwaitingReview
            | EntryStatus::SupersededByImport { .. }
            | EntryStatus::Failed { .. }
            | EntryStatus::Closed => {}
        }
        Ok(())
    }

    /// The submitter's first step: logs the submission (a refusal fails the
    /// entry for good), then delivers the request to the owner.
    async fn deliver(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
    ) -> Result<(), StepError> {
        if entry.subject.is_none() {
            // The owner keys the subject for this node's organisation.
            let owner = self.owner_peer(&request.dataset)?;
            let pair_key = self.query.pair_key_for(&owner).await.map_err(StepError::SubjectKey)?;
            entry.subject = Some(SubjectKeyHash::of(&pair_key, &request.record_key));
        }
        let submitted = [(CorrectionStage::Submitted, None, None)];
        match self.log_stages(id, entry, request, &submitted).await {
            Err(StageError::Refused(reason)) => {
                entry.status = EntryStatus::Failed { reason };
                return Ok(());
            }
            other => other?,
        }
        let message = CorrectionMessage::Deliver(entry.request_bytes.clone());
        entry.status = match self.send_to_owner(&request.dataset, &message).await? {
            CorrectionAck::Stored if request.attachment_sha256.is_empty() => EntryStatus::AwaitingOutcome,
            CorrectionAck::Stored => EntryStatus::SendingAttachments { next: 0 },
            CorrectionAck::Refused(reason) => return Err(StepError::OwnerRefused(reason)),
        };
        Ok(())
    }

    /// The owner's last step: delivers the signed outcome to the submitter.
    async fn deliver_outcome(&self, entry: &mut CorrectionEntry) -> Result<(), StepError> {
        let bytes = entry.outcome_bytes.clone().ok_or(StepError::OutcomeMissing)?;
        let peer = self.log.peer_of(&entry.submitter).ok_or(StepError::SubmitterAddressUnknown)?;
        match self.send(&peer, &CorrectionMessage::Outcome(bytes)).await? {
            CorrectionAck::Stored => entry.status = EntryStatus::Closed,
            CorrectionAck::Refused(reason) => return Err(StepError::SubmitterRefused(reason)),
        }
        Ok(())
    }

    /// Logs stages of a correction, in order, in one policy-log entry; each
    /// at most once. A stage the log already has (a retry after a crash)
    /// counts as logged.
    pub(super) async fn log_stages(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
        stages: &[(CorrectionStage, Option<u64>, Option<CorrectionReasonCode>)],
    ) -> Result<(), StageError> {
        let mut commands = Vec::new();
        let mut logging = Vec::new();
        let subject = entry
            .subject
            .ok_or_else(|| StageError::Unavailable("the subject is not keyed yet".to_string()))?;
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
                subject,
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
                // A receipt logged before, whose track the log released a
                // day after it closed.
                Err(rejection)
                    if stage == CorrectionStage::OutcomeDelivered
                        && rejection.code == RejectionCode::CorrectionUnknown => {}
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

    pub(super) async fn send_to_owner(
        &self,
        dataset: &str,
        message: &CorrectionMessage,
    ) -> Result<CorrectionAck, SendError> {
        let peer = self.owner_peer(dataset)?;
        self.send(&peer, message).await
    }

    /// An active node of `dataset`'s owner, and its address.
    fn owner_peer(&self, dataset: &str) -> Result<civmesh_consensus::RaftPeer, SendError> {
        let owner = self.log.state().read(|applied| {
            let owner = &applied.policy.datasets.get(dataset)?.owner;
            applied
                .policy
                .members
                .values()
                .find(|member| member.org == *owner && member.revoked.is_none())
                .map(|member| member.node_id)
        });
        let owner = owner.ok_or(SendError::NoActiveOwner)?;
        self.log.peer_of(&owner).ok_or(SendError::OwnerAddressUnknown)
    }

    pub(super) async fn send(
        &self,
        peer: &civmesh_consensus::RaftPeer,
        message: &CorrectionMessage,
    ) -> Result<CorrectionAck, SendError> {
        let bytes = codec::encode(message)?;
        let answer = self
            .swarm
            .request_on(Protocol::Correction, peer, bytes, Duration::from_millis(CORRECTION_SEND_TIMEOUT_MS))
            .await
            .map_err(SendError::NotDelivered)?;
        Ok(codec::decode_exact(&answer, CORRECTION_MESSAGE_BYTES_MAX)?)
    }
}

fn backoff_ms(attempts: u32) -> u64 {
    RETRY_BACKOFF_MS_MIN.saturating_mul(1u64 << attempts.min(16)).min(RETRY_BACKOFF_MS_MAX)
}

/// Why a worker step failed; the step is retried after a backoff, and the
/// text is kept as the entry's `last_error`.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// The stored request does not decode.
    #[error("{0}")]
    RequestCorrupt(#[source] EnvelopeError),
    /// A stage could not be logged.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A message did not reach its peer.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The owner refused the request.
    #[error("the owner refused: {0}")]
    OwnerRefused(String),
    /// An attachment could not be sent.
    #[error(transparent)]
    Attachment(#[from] SendAttachmentError),
    /// The owner waits for the attachments before deciding.
    #[error("waiting for the attachments")]
    AttachmentsPending,
    /// The record store failed.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// The corrected version could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The outcome could not be signed.
    #[error("{0}")]
    Sign(#[source] EnvelopeError),
    /// An entry ready to deliver its outcome has none.
    #[error("the outcome is missing")]
    OutcomeMissing,
    /// The policy log names no address for the submitter.
    #[error("the submitter's address is unknown")]
    SubmitterAddressUnknown,
    /// The submitter refused the outcome.
    #[error("the submitter refused: {0}")]
    SubmitterRefused(String),
    /// The owner gave no key for the subject (unreachable, or refused).
    #[error("the owner's subject key: {0}")]
    SubjectKey(#[source] crate::query::AskError),
}

/// Why a correction message did not reach its peer.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// No active member of the owning organisation.
    #[error("the dataset has no active owner node")]
    NoActiveOwner,
    /// The policy log names no address for the owner.
    #[error("the owner's address is unknown")]
    OwnerAddressUnknown,
    /// The message could not be encoded, or the answer decoded.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The request failed.
    #[error("not delivered: {0}")]
    NotDelivered(#[source] TransportError),
}

/// Why a stage could not be logged.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    /// The log refused it for good.
    #[error("the policy log refused the event: {0}")]
    Refused(String),
    /// The log could not be reached; try again.
    #[error("the policy log is unavailable: {0}")]
    Unavailable(String),
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
}
