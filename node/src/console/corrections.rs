//! The correction loop in the console (issue #18).
//!
//! The street worker (街道工作人员) lists her records (`/records`), opens one
//! (`/records/open`: the owner releases and logs it, as for `POST
//! /v1/query`), submits a correction with photos (`/records/correct`) and
//! follows it (`/corrections`, `/corrections/{id}`). The owner's reviewer
//! (部门审核员) works through the inbox oldest first (`/review`), opens a
//! correction beside the record as this node holds it (`/review/{id}`),
//! accepts or rejects it, accepts identical ones at once, and keeps the
//! auto-accept rules (`/review/rules`). Record keys travel in POST bodies;
//! the only ids in paths are correction ids (hex digests, opaque).
//!
//! Modules: `record` (the record page), `submit` (the correction form),
//! `status` (my corrections and their timeline), `inbox`, `detail` and
//! `rules` (the reviewer's pages).

#[path = "review_detail.rs"]
mod detail;
#[path = "review_inbox.rs"]
mod inbox;
#[path = "corrections_record.rs"]
mod record;
#[path = "review_rules.rs"]
mod rules;
#[path = "corrections_status.rs"]
mod status;
#[path = "corrections_submit.rs"]
mod submit;

pub(super) use status::SeenTimes;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use civmesh_policy::correction::CorrectionId;
use civmesh_policy::model::Grant;

use axum::http::StatusCode;
use axum::response::Response;
use civmesh_policy::correction::CorrectionTrack;
use civmesh_policy::PolicyState;

use super::pages::{error_page, grants_to_me};
use super::Visit;
use crate::api::Shared;
use crate::corrections::{CorrectionState, CorrectionView, Side};

/// This area's routes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/records", get(super::records::records_form).post(super::records::records))
        .route("/records/open", post(record::open))
        // The photos come in the form itself: `submit` bounds what it reads
        // by this node's attachment limits, as it reads.
        .route("/records/correct", post(submit::submit).layer(DefaultBodyLimit::disable()))
        .route("/corrections", get(status::list))
        .route("/corrections/{id}", get(status::show))
        .route("/review", get(inbox::inbox))
        .route("/review/bulk-accept", post(inbox::bulk_accept))
        .route("/review/rules", get(rules::page).post(rules::add))
        .route("/review/rules/remove", post(rules::remove))
        .route("/review/{id}", get(detail::show))
        .route("/review/{id}/accept", post(detail::accept))
        .route("/review/{id}/reject", post(detail::reject))
        .route("/review/{id}/photos/{index}", get(detail::photo))
}

/// The correction a path names (64 hex digits), if it is one.
fn correction_id(text: &str) -> Option<CorrectionId> {
    crate::corrections::parse_id(text).ok()
}

/// The correction `id` names on `side` of this node (the street's outbox,
/// the owner's inbox), or the 404 page.
fn view_on(state: &Shared, visit: &Visit, id: &str, side: Side) -> Result<CorrectionView, Box<Response>> {
    let view = correction_id(id).and_then(|id| state.corrections.view(&id).ok());
    view.filter(|view| view.side == side)
        .ok_or_else(|| Box::new(error_page(visit, StatusCode::NOT_FOUND, "corrections.not-found")))
}

/// The first 12 hex digits of a correction's id, as lists show it.
fn short_id(view: &CorrectionView) -> String {
    view.id.chars().take(12).collect()
}

/// Who submitted a correction: its organisation, else the submitting node.
fn submitter(view: &CorrectionView) -> String {
    view.submitter_org.clone().unwrap_or_else(|| view.submitter.clone())
}

/// The policy log's track of the correction `view` shows: under its id,
/// from its submitter (a day after it closed, the log releases it, and a
/// submission may reuse the id).
fn log_track<'a>(policy: &'a PolicyState, view: &CorrectionView) -> Option<&'a CorrectionTrack> {
    let id = correction_id(&view.id)?;
    policy.corrections.get(&id).filter(|track| track.submitter.to_string() == view.submitter)
}

/// [`log_track`] in this node's replica now.
fn track_of(state: &Shared, view: &CorrectionView) -> Option<CorrectionTrack> {
    state.log.state().read(|applied| log_track(&applied.policy, view).cloned())
}

/// The message key of a correction's state.
fn state_key(state: CorrectionState) -> &'static str {
    match state {
        CorrectionState::Submitted => "corrections.state-submitted",
        CorrectionState::AwaitingReview => "corrections.state-awaiting-review",
        CorrectionState::SupersededByImport => "corrections.state-superseded",
        CorrectionState::Accepted => "corrections.state-accepted",
        CorrectionState::Applied => "corrections.state-applied",
        CorrectionState::Rejected => "corrections.state-rejected",
        CorrectionState::Conflict => "corrections.state-conflict",
        CorrectionState::Failed => "corrections.state-failed",
    }
}

/// A time as a person reads it: ISO 8601 in Asia/Shanghai.
fn time(ms: u64) -> String {
    civmesh_policy::evaluation::format_time(ms)
}

/// A grant this organisation may use now on `dataset` (the oldest), to
/// open a record under.
fn grant_on(state: &Shared, dataset: &str) -> Option<Grant> {
    grants_to_me(state).into_iter().find(|grant| grant.dataset == dataset)
}

/// The changed fields of a correction, as one line.
fn fields_line(changes: &std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>) -> String {
    changes.keys().cloned().collect::<Vec<_>>().join(", ")
}
