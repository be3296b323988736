//! The owner's side: keep a delivered correction in the inbox, check it,
//! let a reviewer decide, write the corrected version and sign the outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeId, SignedEnvelope};
use civmesh_policy::correction::{
    CorrectionId, CorrectionRequest, CorrectionStage, CORRECTION_TEXT_BYTES_MAX,
};
use civmesh_policy::model::{Dataset, SubjectKeyHash};
use civmesh_policy::{CorrectionReasonCode, PolicyState};

use crate::corrections::wire::open_from;
use crate::corrections::worker::StepError;
use crate::corrections::{
    decode_entry, hex_id, status_name, CorrectionAck, CorrectionEntry, CorrectionError, CorrectionOutcome,
    CorrectionService, CorrectionView, EntryStatus, OutcomeStatus, Side, CORRECTIONS_OPEN_MAX,
    CORRECTION_SEND_TIMEOUT_MS, REVIEW_WAIT_MS_MAX,
};
use crate::records::{validate_row, Provenance, RecordStoreError, RecordVersion, RowError};

impl CorrectionService {
    /// The owner's side of a delivery from `peer`.
    pub(super) async fn receive_request(&self, peer: NodeId, bytes: &[u8]) -> CorrectionAck {
        let (envelope, verified) = match open_from::<CorrectionRequest>(peer, bytes, "correction") {
            Ok(opened) => opened,
            Err(refused) => return refused,
        };
        let id = envelope.digest();
        let request = verified.payload;
        let me = self.key.node_id();
        let check = |state: &PolicyState| -> Result<Option<SubjectKeyHash>, DeliveryRefusal> {
            if state.active_member(&peer).is_none() {
                return Err(DeliveryRefusal::NotMember);
            }
            let owned = state.datasets.get(&request.dataset).is_some_and(|dataset| {
                state.active_member(&me).is_some_and(|member| member.org == dataset.owner)
            });
            if !owned {
                return Err(DeliveryRefusal::NotOwner(request.dataset.clone()));
            }
            let logged = state.corrections.get(&id).filter(|track| track.submitter == peer);
            match (logged, self.query.subject_keys.for_member(state, &peer)) {
                (None, _) => Ok(None),
                (Some(_), None) => Err(DeliveryRefusal::NoSubjectKey),
                // The submitter names the record it corrects: the subject
                // it logged must be that record's.
                (Some(track), Some(pair_key))
                    if track.subject != SubjectKeyHash::of(&pair_key, &request.record_key) =>
                {
                    Err(DeliveryRefusal::OtherSubject)
                }
                (Some(track), Some(_)) => Ok(Some(track.subject)),
            }
        };
        let mut logged = self.log.state().read(|applied| check(&applied.policy));
        if matches!(logged, Ok(None)) {
            // The submission may be newer than this replica.
            let _ = self.log.linearizable_read_index(Duration::from_millis(CORRECTION_SEND_TIMEOUT_MS)).await;
            logged = self.log.state().read(|applied| check(&applied.policy));
        }
        let subject = match logged.and_then(|subject| subject.ok_or(DeliveryRefusal::NotLoggedYet)) {
            Err(refusal) => return CorrectionAck::Refused(refusal.to_string()),
            Ok(subject) => subject,
        };
        let _guard = self.entries_lock.lock().await;
        match self.load(&id) {
            Ok(Some(_)) => return CorrectionAck::Stored,
            Ok(None) => {}
            Err(error) => return CorrectionAck::Refused(error.to_string()),
        }
        if self.open_count() >= CORRECTIONS_OPEN_MAX {
            return CorrectionAck::Refused(DeliveryRefusal::InboxFull.to_string());
        }
        let entry = CorrectionEntry::new(Side::Inbox, bytes.to_vec(), peer, Some(subject));
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
        if !accept && (reason.trim().is_empty() || reason.len() > super::REJECT_REASON_BYTES_MAX) {
            return Err(CorrectionError::Invalid(format!(
                "a rejection needs a reason of 1..={} bytes",
                super::REJECT_REASON_BYTES_MAX
            )));
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

    /// Writes the new version, then logs delivered (if not yet), accepted
    /// and applied in one entry, and signs the outcome.
    pub(super) async fn accept_and_apply(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
    ) -> Result<(), StepError> {
        use CorrectionStage::*;
        let version = match self.write_corrected_version(id, request).await? {
            Written::Version(version) => version,
            Written::Moved(current_version) => {
                let conflict = OutcomeStatus::Conflict { current_version };
                return self.record_decision(id, entry, request, conflict).await;
            }
        };
        let stages = [(Delivered, None, None), (Accepted, None, None), (Applied, Some(version), None)];
        self.log_stages(id, entry, request, &stages).await?;
        // The write queued the new version for the subscribers.
        self.query.changes_queued();
        self.sign_outcome(id, entry, request, OutcomeStatus::Applied { version })
    }

    /// Logs a rejection or a conflict (with delivered, if not yet) and signs
    /// the outcome.
    pub(super) async fn record_decision(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
        status: OutcomeStatus,
    ) -> Result<(), StepError> {
        use CorrectionStage::*;
        let (stage, version, code) = match &status {
            OutcomeStatus::Applied { version } => (Applied, Some(*version), None),
            OutcomeStatus::Rejected { reason_code, .. } => (Rejected, None, Some(*reason_code)),
            OutcomeStatus::Conflict { current_version } => (Conflict, Some(*current_version), None),
        };
        self.log_stages(id, entry, request, &[(Delivered, None, None), (stage, version, code)]).await?;
        self.sign_outcome(id, entry, request, status)
    }

    fn sign_outcome(
        &self,
        id: &CorrectionId,
        entry: &mut CorrectionEntry,
        request: &CorrectionRequest,
        status: OutcomeStatus,
    ) -> Result<(), StepError> {
        let outcome = CorrectionOutcome {
            correction: *id,
            dataset: request.dataset.clone(),
            status,
            decided_at_ms: now_unix_millis(),
        };
        let signed = SignedEnvelope::sign(&self.key, &outcome, now_unix_millis())
            .and_then(|envelope| envelope.to_bytes())
            .map_err(StepError::Sign)?;
        entry.outcome_bytes = Some(signed);
        entry.status = EntryStatus::OutcomeReady;
        Ok(())
    }

    /// Checks a delivered request against the schema, the submitter's grants
    /// and the record; decides what happens next.
    pub(super) fn evaluate(
        &self,
        id: &CorrectionId,
        submitter: NodeId,
        request: &CorrectionRequest,
    ) -> Result<EntryStatus, RecordStoreError> {
        use CorrectionReasonCode as Code;
        let reject = |reason_code: Code, reason: String| {
            Ok(EntryStatus::Decided(OutcomeStatus::Rejected { reason_code, reason }))
        };
        if let Err(error) = request.check_bounds() {
            return reject(Code::InvalidRequest, error.to_string());
        }
        let now_ms = now_unix_millis();
        let current = self.records.latest(&request.dataset, &request.record_key)?;
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
            return reject(Code::WrongType, error.to_string());
        }
        if self.corrected_fields_moved(request, &current)? {
            return Ok(EntryStatus::Decided(OutcomeStatus::Conflict { current_version: current.version }));
        }
        Ok(if clearance.review_required { EntryStatus::AwaitingReview } else { EntryStatus::Accepted })
    }

    /// The record's current version if it moved past the base version
    /// (and not by this very correction).
    pub(super) fn conflicting_version(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
    ) -> Result<Option<u64>, RecordStoreError> {
        let Some(current) = self.records.latest(&request.dataset, &request.record_key)? else {
            return Ok(None);
        };
        if current.provenance == (Provenance::Correction { id: hex_id(id) }) {
            return Ok(None);
        }
        let moved = self.corrected_fields_moved(request, &current)?;
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
    /// as [`Written::Moved`] when the record moved past the base version.
    async fn write_corrected_version(
        &self,
        id: &CorrectionId,
        request: &CorrectionRequest,
    ) -> Result<Written, WriteError> {
        let _serialised = self.apply_lock.lock().await;
        let provenance = Provenance::Correction { id: hex_id(id) };
        let current =
            self.records.latest(&request.dataset, &request.record_key)?.ok_or(WriteError::RecordGone)?;
        if current.provenance == provenance {
            return Ok(Written::Version(current.version));
        }
        if self.corrected_fields_moved(request, &current)? {
            return Ok(Written::Moved(current.version));
        }
        let dataset = self
            .log
            .state()
            .read(|applied| applied.policy.datasets.get(&request.dataset).cloned())
            .ok_or(WriteError::DatasetGone)?;
        let (key, fields) = merged_row(&dataset, &current, request)?;
        let versions =
            self.records.write(&dataset, vec![(key.clone(), fields)], &provenance, now_unix_millis())?;
        let version = *versions.first().ok_or(WriteError::NothingWritten)?;
        debug_assert_eq!(version, current.version + 1);
        debug_assert_eq!(self.records.latest_version(&request.dataset, &key).ok().flatten(), Some(version));
        Ok(Written::Version(version))
    }
}

/// Why the owner refused a delivered request (the submitter reads it in
/// [`CorrectionAck::Refused`] and retries later).
#[derive(Debug, thiserror::Error)]
enum DeliveryRefusal {
    /// The submitter is not an active member.
    #[error("the submitter is not a current member")]
    NotMember,
    /// This node's organisation does not own the dataset.
    #[error("this node does not own {0}")]
    NotOwner(String),
    /// This replica does not show the submission yet.
    #[error("the submission is not in the policy log yet")]
    NotLoggedYet,
    /// [`CORRECTIONS_OPEN_MAX`] entries are open.
    #[error("the inbox is full")]
    InboxFull,
    /// This node holds no subject key for the submitter's organisation.
    #[error("this node holds no subject key for the submitter's organisation")]
    NoSubjectKey,
    /// The subject the submission logged is not the corrected record's.
    #[error("the logged subject is not the record's")]
    OtherSubject,
}

/// What writing the corrected version came to.
pub(super) enum Written {
    /// The record has this new version (written now, or before a crash).
    Version(u64),
    /// The corrected fields moved past the base version; the record is at
    /// this version, and nothing was written.
    Moved(u64),
}

/// Why the corrected version could not be written.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// The record store failed.
    #[error("{0}")]
    Store(#[from] RecordStoreError),
    /// The record is no longer there.
    #[error("the record disappeared")]
    RecordGone,
    /// The dataset is no longer in the catalog.
    #[error("the dataset disappeared")]
    DatasetGone,
    /// The corrected row does not fit the schema.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// The store wrote no version.
    #[error("nothing was written")]
    NothingWritten,
}

/// Why the changes do not make a valid row over the current record.
#[derive(Debug, thiserror::Error)]
pub(super) enum MergeError {
    /// A value does not fit the schema.
    #[error("{0}")]
    Row(#[from] RowError),
    /// The changes alter the record's key.
    #[error("the record key does not match")]
    KeyMismatch,
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
) -> Result<(String, BTreeMap<String, civmesh_policy::model::FieldValue>), MergeError> {
    let mut row = current.fields.clone();
    row.extend(request.changes.clone());
    let (key, fields) = validate_row(dataset, &row)?;
    if key != request.record_key {
        return Err(MergeError::KeyMismatch);
    }
    Ok((key, fields))
}
