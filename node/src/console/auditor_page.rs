//! `/audit`: start a verification of this node's log (or, see
//! [`super::upload`], of an uploaded bundle), watch its progress (the page
//! refreshes itself each second while it runs), then read its summary.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::jobs::{self, Input, Phase, Slot};
use super::summary::SummaryView;
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::render;
use crate::console::{Frame, Visit};

/// A running verification, for the page.
pub(super) struct RunningView {
    /// What it is doing (a message key).
    pub phase_key: &'static str,
    /// Commands done.
    pub done: u64,
    /// Of how many (0 while not known).
    pub total: u64,
    /// Who started it.
    pub started_by: String,
    /// When.
    pub started_at: String,
}

/// The audit page: a verification running, or the start forms and the last summary.
#[derive(Template)]
#[template(path = "console/audit.html")]
pub(super) struct AuditPage {
    /// The page's frame.
    pub frame: Frame,
    /// The verification running, if one is.
    pub running: Option<RunningView>,
    /// The last verification, if one ended.
    pub summary: Option<SummaryView>,
    /// A message at the top (a key), e.g. that a verification runs already.
    pub notice: Option<&'static str>,
    /// A message next to the upload field (a key), and its detail.
    pub upload_error: Option<&'static str>,
    /// The upload error's detail.
    pub upload_detail: String,
    /// The upload bound, in MiB.
    pub upload_bytes_max_mib: u64,
}

impl AuditPage {
    /// The page as the slot stands now.
    pub(super) fn now(state: &Shared, visit: &Visit) -> Self {
        let (running, summary) = match jobs::status(state) {
            Slot::Idle => (None, None),
            Slot::Running(started, progress) => {
                let (phase, done, total) = progress.read();
                let phase_key = match phase {
                    Phase::Waiting => "audit.phase-waiting",
                    Phase::Exporting => "audit.phase-exporting",
                    Phase::Verifying => "audit.phase-verifying",
                };
                let started_at = civmesh_policy::evaluation::format_time(started.at_ms);
                (Some(RunningView { phase_key, done, total, started_by: started.operator, started_at }), None)
            }
            Slot::Finished(finished) => (None, Some(SummaryView::of(state, &finished))),
        };
        AuditPage {
            frame: Frame::of(visit),
            running,
            summary,
            notice: None,
            upload_error: None,
            upload_detail: String::new(),
            upload_bytes_max_mib: super::BUNDLE_UPLOAD_BYTES_MAX / (1024 * 1024),
        }
    }
}

/// `GET /audit`.
pub(super) async fn show(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::Auditor]) {
        return *refused;
    }
    render(&AuditPage::now(&state, &visit), StatusCode::OK)
}

/// The verify form: its CSRF token only.
#[derive(Debug, Deserialize)]
pub(super) struct VerifyForm {
    csrf: String,
}

/// `POST /audit/verify`: verifies this node's log in the background, then
/// back to `/audit`; if one runs already, the page says so (409).
pub(super) async fn verify_own_log(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<VerifyForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require_posted(&[Role::Auditor], &form.csrf) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    started(&state, &visit, jobs::start(&state, &session.operator, Input::OwnLog))
}

/// After a start: to `/audit` (303), or the page saying one runs already.
pub(super) fn started(state: &Shared, visit: &Visit, started: bool) -> Response {
    if started {
        return Redirect::to("/audit").into_response();
    }
    let mut page = AuditPage::now(state, visit);
    page.notice = Some("audit.busy");
    render(&page, StatusCode::CONFLICT)
}
