//! `/audit/subject`: the subject-access report for one record key (PIPL
//! Art. 45), computed as `civmesh audit subject` does: this node's log,
//! exported and replayed, with the record key hashed for every (owner,
//! requester) pair through the federation's subject-key secret, which is
//! checked against the commitment the CA logged. Shown as a page, or
//! downloaded as a PDF. The key travels only in POST bodies.

use std::time::Duration;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use civmesh_policy::audit::{
    checked_subject_accesses, Collect, SubjectAccess, SubjectAccessOutcome, SubjectReportError,
};
use civmesh_policy::evaluation::format_time;
use civmesh_policy::subject_keys::SubjectLookup;
use civmesh_policy::{AccessKind, PolicyState};
use serde::Deserialize;

use super::files::{self, FileError, OwnBundleError, ReplayError, Replayed};
use super::summary::basis_key;
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::render;
use crate::console::{Frame, Visit};
use crate::records::RECORD_KEY_BYTES_MAX;

/// How long a report waits for a verification running on this node, in ms.
const REPLAY_WAIT_MS_MAX: u64 = 120_000;

/// One access to the subject's records, for the page and the PDF.
pub(super) struct SubjectRow {
    /// The access entry, if any.
    pub entry: u64,
    /// When the owner decided.
    pub when: String,
    /// The requesting organisation.
    pub requester: String,
    /// The organisation that released (or denied).
    pub owner: String,
    /// The fields concerned.
    pub fields: String,
    /// For what.
    pub purpose: String,
    /// The grant (`#id`), or empty for none.
    pub grant: String,
    /// The legal basis's message key.
    pub basis_key: Option<&'static str>,
    /// Released or denied (a message key).
    pub outcome_key: &'static str,
    /// Query, listing or push (a message key).
    pub kind_key: &'static str,
    /// Whether a final checkpoint covers it.
    pub anchored: bool,
}

/// A subject-access report.
pub(super) struct SubjectReport {
    /// The dataset.
    pub dataset: String,
    /// The subject's record key.
    pub record_key: String,
    /// The federation's name.
    pub federation: String,
    /// When the report was made.
    pub generated_at: String,
    /// The accesses, in log order.
    pub rows: Vec<SubjectRow>,
    /// Leaves a final checkpoint covers, of all leaves: the report is
    /// complete up to there.
    pub anchored_leaves: u64,
    /// Leaves of the audit tree.
    pub leaves: u64,
}

/// The subject-access form, and the report or the messages.
#[derive(Template)]
#[template(path = "console/subject.html")]
struct SubjectPage {
    frame: Frame,
    datasets: Vec<String>,
    dataset: String,
    record_key: String,
    dataset_error: Option<&'static str>,
    key_error: Option<&'static str>,
    failure: Option<(&'static str, String)>,
    report: Option<SubjectReport>,
}

impl SubjectPage {
    fn new(state: &Shared, visit: &Visit) -> Self {
        let datasets = state.log.state().read(|applied| applied.policy.datasets.keys().cloned().collect());
        SubjectPage {
            frame: Frame::of(visit),
            datasets,
            dataset: String::new(),
            record_key: String::new(),
            dataset_error: None,
            key_error: None,
            failure: None,
            report: None,
        }
    }
}

/// `GET /audit/subject`: the form.
pub(super) async fn form(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::Auditor]) {
        return *refused;
    }
    render(&SubjectPage::new(&state, &visit), StatusCode::OK)
}

/// The form: the dataset and the record key.
#[derive(Debug, Deserialize)]
pub(super) struct SubjectForm {
    csrf: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    record_key: String,
}

/// `POST /audit/subject`: the report as a page.
pub(super) async fn report(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<SubjectForm>,
) -> Response {
    match checked_report(&state, &headers, form).await {
        Ok((_, page)) => {
            render(&page, if page.report.is_some() { StatusCode::OK } else { failed_status(&page) })
        }
        Err(refused) => *refused.1,
    }
}

/// `POST /audit/subject.pdf`: the report as a PDF download; the page with
/// the reason if there is none.
pub(super) async fn download(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<SubjectForm>,
) -> Response {
    let (visit, page) = match checked_report(&state, &headers, form).await {
        Ok(done) => done,
        Err(refused) => return *refused.1,
    };
    let Some(report) = &page.report else { return render(&page, failed_status(&page)) };
    let pdf = super::pdf::subject_pdf(visit.t(), report);
    let headers = [
        (header::CONTENT_TYPE, "application/pdf"),
        (header::CONTENT_DISPOSITION, "attachment; filename=\"subject-access-report.pdf\""),
    ];
    (headers, pdf).into_response()
}

fn failed_status(page: &SubjectPage) -> StatusCode {
    match page.failure {
        Some(("subject.busy", _)) => StatusCode::SERVICE_UNAVAILABLE,
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
        None => StatusCode::BAD_REQUEST,
    }
}

/// Checks the role, the CSRF token and the fields, then computes the
/// report: the page to show (with the report, or the messages), or the
/// refusal (sign-in, 403).
async fn checked_report(
    state: &Shared,
    headers: &HeaderMap,
    form: SubjectForm,
) -> Result<(Visit, SubjectPage), (Visit, Box<Response>)> {
    let visit = Visit::of(state, headers);
    let operator = match visit.require_posted(&[Role::Auditor], &form.csrf) {
        Ok(session) => session.operator.clone(),
        Err(refused) => return Err((visit, refused)),
    };
    let mut page = SubjectPage::new(state, &visit);
    page.dataset = form.dataset.trim().to_string();
    page.record_key = form.record_key.trim().to_string();
    if !page.datasets.contains(&page.dataset) {
        page.dataset_error = Some("subject.dataset-unknown");
    }
    if page.record_key.is_empty() {
        page.key_error = Some("subject.key-missing");
    } else if page.record_key.len() > RECORD_KEY_BYTES_MAX {
        page.key_error = Some("subject.key-too-long");
    }
    if page.dataset_error.is_none() && page.key_error.is_none() {
        match compute(state, &operator, &page.dataset, &page.record_key).await {
            Ok(report) => page.report = Some(report),
            Err(failure) => page.failure = Some(failure),
        }
    }
    Ok((visit, page))
}

/// The report for `record_key` in `dataset`, or why there is none (a
/// message key and the detail). Each lookup is logged with the operator
/// and the dataset (never the key), so lookups are accountable.
async fn compute(
    state: &Shared,
    operator: &str,
    dataset: &str,
    record_key: &str,
) -> Result<SubjectReport, (&'static str, String)> {
    let secret = files::subject_key_secret(state).map_err(|error| match error {
        FileError::NoSecret => ("subject.no-secret", String::new()),
        FileError::Io(detail) => ("subject.failed", detail),
    })?;
    let wait = tokio::time::timeout(
        Duration::from_millis(REPLAY_WAIT_MS_MAX),
        std::sync::Arc::clone(&state.console.audit.replays).acquire_owned(),
    )
    .await;
    let Ok(Ok(permit)) = wait else { return Err(("subject.busy", String::new())) };
    tracing::info!(operator, dataset, "console subject-access report started");
    let (state, dataset, record_key) = (state.clone(), dataset.to_string(), record_key.to_string());
    // The permit goes with the replay: a client that leaves does not free
    // it while the replay still runs.
    let computed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        replay(&state, &secret, &dataset, &record_key)
    })
    .await;
    let report = computed.map_err(|error| ("subject.failed", error.to_string()))??;
    tracing::info!(operator, accesses = report.rows.len(), "console subject-access report");
    Ok(report)
}

/// Exports this node's log, replays it for the record key and checks the
/// secret and the verdict.
fn replay(
    state: &Shared,
    secret: &str,
    dataset: &str,
    record_key: &str,
) -> Result<SubjectReport, (&'static str, String)> {
    let failed = |detail: String| ("subject.failed", detail);
    let (_dir, path) = files::own_log_bundle(state, &mut |_, _| {}).map_err(|error| match error {
        OwnBundleError::File(error) => failed(error.to_string()),
        OwnBundleError::Export(error) => failed(error.to_string()),
    })?;
    let mut lookup = SubjectLookup::new(secret.as_bytes(), record_key);
    let collect = Collect { subject: Some(&mut lookup), tally: None };
    let Replayed { header, report, state: replayed, accesses, .. } =
        files::replay_bundle(state, &path, &mut |_, _| {}, collect).map_err(|error| match error {
            ReplayError::File(error) => failed(error.to_string()),
            ReplayError::Bundle(error) => failed(error.to_string()),
        })?;
    let accesses = checked_subject_accesses(secret.as_bytes(), &header, &report, &replayed, accesses)
        .map_err(|error| match error {
            SubjectReportError::NotVerified(_) => ("subject.not-verified", error.to_string()),
            SubjectReportError::NoCommitment => ("subject.no-commitment", error.to_string()),
            SubjectReportError::WrongSecret => ("subject.wrong-secret", String::new()),
        })?;
    let rows = accesses
        .iter()
        .filter(|access| access.dataset == dataset)
        .map(|access| row(&replayed, access))
        .collect();
    Ok(SubjectReport {
        dataset: dataset.to_string(),
        record_key: record_key.to_string(),
        federation: report.federation_name,
        generated_at: format_time(civmesh_certs::now_unix_millis()),
        rows,
        anchored_leaves: report.anchored_leaves,
        leaves: report.leaves,
    })
}

fn row(state: &PolicyState, access: &SubjectAccess) -> SubjectRow {
    let owner = state
        .datasets
        .get(&access.dataset)
        .map_or_else(|| access.owner.clone(), |dataset| dataset.owner.to_string());
    SubjectRow {
        entry: access.access_entry,
        when: format_time(access.decided_at_ms),
        requester: access
            .requester_org
            .as_ref()
            .map_or_else(|| access.requester.clone(), ToString::to_string),
        owner,
        fields: access.fields_released.join(", "),
        purpose: access.purpose.clone(),
        grant: access.grant.map(|id| format!("#{id}")).unwrap_or_default(),
        basis_key: access.legal_basis.map(basis_key),
        outcome_key: match access.outcome {
            SubjectAccessOutcome::Permit => "subject.outcome-permit",
            SubjectAccessOutcome::Deny => "subject.outcome-deny",
        },
        kind_key: match access.kind {
            AccessKind::Query => "subject.kind-query",
            AccessKind::Listing => "subject.kind-listing",
            AccessKind::Push => "subject.kind-push",
        },
        anchored: access.anchored,
    }
}
