//! The street worker's corrections: this organisation's submissions, newest
//! first, each with its state, and a badge for outcomes she has not seen
//! (`/corrections`); one correction's status timeline (`/corrections/{id}`).
//!
//! "Not seen" is per operator: this node remembers, in memory, when each
//! operator last opened the list ([`SeenTimes`], at most
//! [`SEEN_OPERATORS_MAX`] operators, the one seen longest ago forgotten
//! first; a forgotten operator, or one after a restart, sees every outcome
//! as new once). An outcome counts from the time the policy log recorded
//! that it reached this node (its `outcome_delivered` stage); until then
//! it is new.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use civmesh_certs::UnixMillis;
use civmesh_policy::correction::{CorrectionStage, CorrectionTrack};

use super::super::operators::Role;
use super::super::pages::{error_page, render};
use super::super::{Frame, Visit};
use super::{fields_line, grant_on, log_track, short_id, state_key, time, track_of, view_on};
use crate::api::Shared;
use crate::corrections::{CorrectionState, CorrectionView, EntryStatus, OutcomeStatus, Side};

/// Operators whose last look at their corrections this node remembers.
pub const SEEN_OPERATORS_MAX: usize = 1_024;
/// Corrections the list shows at most, newest first.
const CORRECTIONS_LISTED_MAX: usize = 200;

/// When each operator last saw their corrections' outcomes, bounded.
#[derive(Debug, Default)]
pub struct SeenTimes {
    by_operator: BTreeMap<String, UnixMillis>,
}

impl SeenTimes {
    /// When `operator` last looked (0: never, as far as this node knows).
    pub fn get(&self, operator: &str) -> UnixMillis {
        self.by_operator.get(operator).copied().unwrap_or(0)
    }

    /// Records that `operator` looked at `at_ms`; past the bound, forgets
    /// the operator who looked longest ago.
    pub fn set(&mut self, operator: &str, at_ms: UnixMillis) {
        if !self.by_operator.contains_key(operator) && self.by_operator.len() >= SEEN_OPERATORS_MAX {
            let oldest = self.by_operator.iter().min_by_key(|(_, at)| **at).map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                self.by_operator.remove(&oldest);
            }
        }
        self.by_operator.insert(operator.to_string(), at_ms);
    }
}

/// When `operator` last looked, and records that they look now.
fn look(state: &Shared, operator: &str, now_ms: UnixMillis) -> UnixMillis {
    let Ok(mut times) = state.console.seen.lock() else { return 0 };
    let before = times.get(operator);
    times.set(operator, now_ms);
    before
}

/// Whether the view is an owner's outcome (applied, rejected, conflict).
fn decided(view: &CorrectionView) -> bool {
    matches!(view.state, CorrectionState::Applied | CorrectionState::Rejected | CorrectionState::Conflict)
}

/// One of my corrections.
struct CorrectionRow {
    id: String,
    short: String,
    dataset: String,
    fields: String,
    state_key: &'static str,
    submitted: String,
    /// An outcome this operator has not seen.
    new: bool,
}

/// `/corrections`.
#[derive(Template)]
#[template(path = "console/corrections.html")]
struct CorrectionsPage {
    frame: Frame,
    rows: Vec<CorrectionRow>,
    unseen: usize,
}

/// `GET /corrections`: this node's submissions, newest first; marks their outcomes seen.
pub(super) async fn list(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require(&[Role::StreetWorker]) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let outbox = |view: &CorrectionView| view.side == Side::Outbox;
    let Ok(views) = state.corrections.list_where(outbox, CORRECTIONS_LISTED_MAX) else {
        return error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
    };
    let last_seen_ms = look(&state, &session.operator, civmesh_certs::now_unix_millis());
    // When each decided one's outcome reached this node, in one read of the log's state.
    let arrivals: Vec<Option<u64>> = state.log.state().read(|applied| {
        views
            .iter()
            .map(|view| {
                log_track(&applied.policy, view)
                    .filter(|_| decided(view))
                    .and_then(|track| track.reached_at(CorrectionStage::OutcomeDelivered))
            })
            .collect()
    });
    let rows: Vec<CorrectionRow> = views
        .iter()
        .zip(arrivals)
        .map(|(view, arrived)| CorrectionRow {
            id: view.id.clone(),
            short: short_id(view),
            dataset: view.request.dataset.clone(),
            fields: fields_line(&view.request.changes),
            state_key: state_key(view.state),
            submitted: time(view.created_at_ms),
            new: decided(view) && arrived.is_none_or(|at| at > last_seen_ms),
        })
        .collect();
    let unseen = rows.iter().filter(|row| row.new).count();
    render(&CorrectionsPage { frame: Frame::of(&visit), rows, unseen }, StatusCode::OK)
}

/// One step of a timeline.
struct Step {
    /// Its stable id (`step-delivered`).
    id: &'static str,
    /// Its name's key.
    name: &'static str,
    /// `done`, `current`, `pending` or `refused`.
    class: &'static str,
    /// Its state in words (a key), beside the class.
    status: &'static str,
    /// When, if known.
    at: String,
    /// More, in the node's or the reviewer's words (a version, a reason).
    detail: String,
}

/// The timeline of a correction this node submitted: submitted, delivered,
/// under review, then applied (with the version), rejected (with the
/// reason) or in conflict.
fn timeline(view: &CorrectionView, track: Option<&CorrectionTrack>) -> Vec<Step> {
    let at = |stage| track.and_then(|track| track.reached_at(stage)).map(time).unwrap_or_default();
    let step = |id, name, class, status, at, detail| Step { id, name, class, status, at, detail };
    let failed = matches!(view.status, EntryStatus::Failed { .. });
    let delivered = !matches!(view.status, EntryStatus::AwaitingDelivery | EntryStatus::Failed { .. });
    let submitted = match &view.status {
        EntryStatus::Failed { reason } => step(
            "step-submitted",
            "timeline.submitted",
            "refused",
            "timeline.refused",
            at(CorrectionStage::Submitted),
            reason.clone(),
        ),
        _ => step(
            "step-submitted",
            "timeline.submitted",
            "done",
            "timeline.done",
            time(view.created_at_ms),
            String::new(),
        ),
    };
    let (class, status) = match (delivered, failed) {
        (true, _) => ("done", "timeline.done"),
        (false, false) => ("current", "timeline.in-progress"),
        (false, true) => ("pending", "timeline.pending"),
    };
    let delivered_step = step(
        "step-delivered",
        "timeline.delivered",
        class,
        status,
        at(CorrectionStage::Delivered),
        String::new(),
    );
    let outcome = view.outcome.as_ref();
    let (class, status) = match (outcome, delivered) {
        (Some(_), _) => ("done", "timeline.done"),
        (None, true) => ("current", "timeline.in-progress"),
        (None, false) => ("pending", "timeline.pending"),
    };
    let review = step("step-review", "timeline.review", class, status, String::new(), String::new());
    let decision = match outcome.map(|outcome| (&outcome.status, time(outcome.decided_at_ms))) {
        Some((OutcomeStatus::Applied { version }, at)) => {
            step("step-applied", "timeline.applied", "done", "timeline.done", at, version.to_string())
        }
        Some((OutcomeStatus::Rejected { reason, .. }, at)) => {
            step("step-rejected", "timeline.rejected", "refused", "timeline.refused", at, reason.clone())
        }
        Some((OutcomeStatus::Conflict { current_version }, at)) => step(
            "step-conflict",
            "timeline.conflict",
            "refused",
            "timeline.refused",
            at,
            current_version.to_string(),
        ),
        None => step(
            "step-decision",
            "timeline.decision",
            "pending",
            "timeline.pending",
            String::new(),
            String::new(),
        ),
    };
    vec![submitted, delivered_step, review, decision]
}

/// A changed field, old value unknown here: the new value.
struct ChangeRow {
    field: String,
    value: String,
}

/// `/corrections/{id}`.
#[derive(Template)]
#[template(path = "console/correction.html")]
struct CorrectionPage {
    frame: Frame,
    id: String,
    dataset: String,
    key: String,
    state_key: &'static str,
    base_version: u64,
    /// The version the correction made, once applied.
    new_version: Option<u64>,
    changes: Vec<ChangeRow>,
    reason: String,
    evidence: String,
    photos: usize,
    steps: Vec<Step>,
    /// A grant to open the record under again, if one is usable.
    grant: Option<u64>,
}

/// `GET /corrections/{id}`: one submission and its timeline.
pub(super) async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::StreetWorker]) {
        return *refused;
    }
    let view = match view_on(&state, &visit, &id, Side::Outbox) {
        Ok(view) => view,
        Err(refused) => return *refused,
    };
    let track = track_of(&state, &view);
    let new_version = match view.outcome.as_ref().map(|outcome| &outcome.status) {
        Some(OutcomeStatus::Applied { version }) => Some(*version),
        _ => None,
    };
    let page = CorrectionPage {
        frame: Frame::of(&visit),
        steps: timeline(&view, track.as_ref()),
        id: view.id.clone(),
        dataset: view.request.dataset.clone(),
        key: view.request.record_key.clone(),
        state_key: state_key(view.state),
        base_version: view.request.base_version,
        new_version,
        changes: view
            .request
            .changes
            .iter()
            .map(|(field, value)| ChangeRow { field: field.clone(), value: value.to_string() })
            .collect(),
        reason: view.request.reason.clone(),
        evidence: view.request.evidence_text.clone(),
        photos: view.request.attachment_sha256.len(),
        grant: grant_on(&state, &view.request.dataset).map(|grant| grant.id),
    };
    render(&page, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_times_are_per_operator_and_bounded() {
        let mut seen = SeenTimes::default();
        assert_eq!(seen.get("李伟"), 0);
        seen.set("李伟", 5);
        assert_eq!(seen.get("李伟"), 5);
        for index in 0..SEEN_OPERATORS_MAX {
            seen.set(&format!("operator {index}"), 10 + index as u64);
        }
        assert_eq!(seen.by_operator.len(), SEEN_OPERATORS_MAX);
        assert_eq!(seen.get("李伟"), 0, "the one seen longest ago is forgotten first");
        assert_eq!(seen.get("operator 0"), 10);
        seen.set("operator 0", 99);
        assert_eq!(seen.by_operator.len(), SEEN_OPERATORS_MAX, "seeing again takes no room");
    }
}
