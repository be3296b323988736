//! The auditor's pages (审计员). `/audit` verifies the federation's log as
//! this node holds it, or an uploaded bundle, the way `civmesh audit
//! export` and `audit verify` do (a bundle written a command at a time and
//! replayed as a stream through `civmesh_policy::audit`), in a background
//! task, one at a time per node, with a progress bar; then the summary,
//! what each department released and under which grant, and the accesses
//! to look at. `/audit/subject` is the subject-access report for one record
//! key (PIPL Art. 45) through the federation's subject-key secret, which an
//! auditor's node holds, as a page and as a PDF. Record keys travel only in
//! POST bodies and are never logged.

#[path = "auditor_files.rs"]
mod files;
#[path = "auditor_jobs.rs"]
mod jobs;

pub(super) use jobs::AuditJobs;
#[path = "auditor_page.rs"]
mod page;
#[path = "auditor_pdf.rs"]
mod pdf;
#[path = "auditor_subject.rs"]
mod subject;
#[path = "auditor_summary.rs"]
mod summary;
#[path = "auditor_upload.rs"]
mod upload;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::api::Shared;

/// The largest bundle an auditor may upload, in bytes.
const BUNDLE_UPLOAD_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// What a multipart upload may add to the bundle: boundaries, headers and
/// the CSRF field, in bytes.
const UPLOAD_OVERHEAD_BYTES_MAX: u64 = 64 * 1024;

/// This area's routes.
pub(super) fn router() -> Router<Shared> {
    let upload_limit =
        usize::try_from(BUNDLE_UPLOAD_BYTES_MAX + UPLOAD_OVERHEAD_BYTES_MAX).unwrap_or(usize::MAX);
    Router::new()
        .route("/audit", get(page::show))
        .route("/audit/verify", post(page::verify_own_log))
        .route("/audit/upload", post(upload::upload).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/audit/subject", get(subject::form).post(subject::report))
        .route("/audit/subject.pdf", post(subject::download))
}
