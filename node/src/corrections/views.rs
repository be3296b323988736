//! Corrections as people and the API see them: states, the status
//! filter, and the views of entries.

use std::collections::BTreeSet;

use civmesh_certs::{SignedEnvelope, UnixMillis};
use civmesh_policy::correction::{CorrectionId, CorrectionRequest, CorrectionStage};
use serde::{Deserialize, Serialize};

use crate::corrections::attachments::AttachmentView;
use crate::corrections::{
    decode_entry, hex_id, CorrectionEntry, CorrectionError, CorrectionOutcome, CorrectionService,
    EntryStatus, OutcomeStatus, Side,
};
use crate::records::RecordVersion;

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
    /// Whether a reviewer may decide it now: awaiting review, or superseded
    /// by an import (the reviewer decides against the new version).
    pub fn reviewable(self) -> bool {
        matches!(self, CorrectionState::AwaitingReview | CorrectionState::SupersededByImport)
    }

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

impl CorrectionView {
    /// Whether it is in `status`: its entry's status name
    /// (`awaiting_review`, ...) or its state's name.
    pub fn is_in(&self, status: &str) -> bool {
        status_name(&self.status) == status || self.state.name() == status
    }
}

impl CorrectionService {
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
        self.list_where(|view| status.is_none_or(|wanted| view.is_in(wanted)), limit)
    }

    /// The corrections at this node that `keep` keeps, newest first, at
    /// most `limit`: one pass over the store, filtered before the limit.
    pub fn list_where(
        &self,
        keep: impl Fn(&CorrectionView) -> bool,
        limit: usize,
    ) -> Result<Vec<CorrectionView>, CorrectionError> {
        let mut views = Vec::new();
        for (id, bytes) in
            self.records.corrections().map_err(|error| CorrectionError::Store(error.to_string()))?
        {
            let view = view_of(&id, &decode_entry(&bytes)?)?;
            if keep(&view) {
                views.push(view);
            }
        }
        views.sort_by_key(|view| std::cmp::Reverse(view.created_at_ms));
        views.truncate(limit);
        Ok(views)
    }
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
