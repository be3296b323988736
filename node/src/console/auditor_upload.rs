//! `POST /audit/upload`: a bundle from the auditor's computer, streamed to
//! a private working file a chunk at a time (never whole in memory), at
//! most [`BUNDLE_UPLOAD_BYTES_MAX`], refused unless it starts like a bundle
//! (checked by content, not by name); then verified in the background.

use std::io::Write;

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use civmesh_policy::audit::BUNDLE_MAGIC;

use super::jobs::{self, Input};
use super::page::{started, AuditPage};
use super::{files, BUNDLE_UPLOAD_BYTES_MAX};
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::{csrf_matches, error_page, render};
use crate::console::Visit;

/// The longest CSRF field read, in bytes.
const CSRF_FIELD_BYTES_MAX: usize = 256;

/// Why an upload was refused, as a message key next to the file field.
#[derive(Debug)]
enum Refusal {
    /// No file was chosen.
    Missing,
    /// Over the bound.
    TooLarge,
    /// It does not start like a bundle.
    NotABundle,
    /// The upload broke off or could not be stored.
    Failed(String),
}

/// `POST /audit/upload` (multipart: `csrf` first, then `bundle`).
pub(super) async fn upload(
    State(state): State<Shared>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require(&[Role::Auditor]) {
        Ok(session) => session.clone(),
        Err(refused) => return *refused,
    };
    // The CSRF token comes first, and is checked before any file is read.
    let csrf = read_csrf(&mut multipart).await;
    if !csrf_matches(&session.csrf, &csrf) {
        return error_page(&visit, StatusCode::FORBIDDEN, "error.form-expired");
    }
    // Nothing is received while a verification or another upload runs.
    let Ok(_uploading) = state.console.audit.uploads.try_acquire() else {
        return started(&state, &visit, false);
    };
    if matches!(jobs::status(&state), jobs::Slot::Running(..)) {
        return started(&state, &visit, false);
    }
    match receive(&state, &mut multipart).await {
        Ok((dir, path)) => {
            started(&state, &visit, jobs::start(&state, &session.operator, Input::Upload(dir, path)))
        }
        Err(refusal) => {
            let mut page = AuditPage::now(&state, &visit);
            let (key, detail, status) = match refusal {
                Refusal::Missing => ("audit.upload-missing", String::new(), StatusCode::BAD_REQUEST),
                Refusal::TooLarge => ("audit.upload-too-large", String::new(), StatusCode::PAYLOAD_TOO_LARGE),
                Refusal::NotABundle => ("audit.upload-not-a-bundle", String::new(), StatusCode::BAD_REQUEST),
                Refusal::Failed(detail) => ("audit.upload-failed", detail, StatusCode::BAD_REQUEST),
            };
            page.upload_error = Some(key);
            page.upload_detail = detail;
            render(&page, status)
        }
    }
}

/// The first part's value if it is `csrf` and at most
/// [`CSRF_FIELD_BYTES_MAX`] bytes; else "" (which no session's token is).
async fn read_csrf(multipart: &mut Multipart) -> String {
    let Ok(Some(mut field)) = multipart.next_field().await else { return String::new() };
    if field.name() != Some("csrf") {
        return String::new();
    }
    let mut value = Vec::new();
    while let Ok(Some(chunk)) = field.chunk().await {
        value.extend_from_slice(&chunk);
        if value.len() > CSRF_FIELD_BYTES_MAX {
            return String::new();
        }
    }
    String::from_utf8(value).unwrap_or_default()
}

/// Streams the `bundle` field to a new file in a private working directory.
async fn receive(
    state: &Shared,
    multipart: &mut Multipart,
) -> Result<(tempfile::TempDir, std::path::PathBuf), Refusal> {
    let too_large = |error: axum::extract::multipart::MultipartError| {
        if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::TooLarge
        } else {
            Refusal::Failed(error.body_text())
        }
    };
    let mut field = loop {
        match multipart.next_field().await.map_err(too_large)? {
            Some(field) if field.name() == Some("bundle") => break field,
            Some(_) => continue,
            None => return Err(Refusal::Missing),
        }
    };
    let dir = files::work_dir(state).map_err(|error| Refusal::Failed(error.to_string()))?;
    let path = dir.path().join("upload.bundle");
    let failed = |error: std::io::Error| Refusal::Failed(error.to_string());
    let mut file = std::io::BufWriter::new(std::fs::File::create_new(&path).map_err(failed)?);
    let (mut bytes, mut start) = (0u64, Vec::with_capacity(BUNDLE_MAGIC.len()));
    while let Some(chunk) = field.chunk().await.map_err(too_large)? {
        bytes += chunk.len() as u64;
        if bytes > BUNDLE_UPLOAD_BYTES_MAX {
            return Err(Refusal::TooLarge);
        }
        if start.len() < BUNDLE_MAGIC.len() {
            let wanted = (BUNDLE_MAGIC.len() - start.len()).min(chunk.len());
            start.extend_from_slice(&chunk[..wanted]);
            if !BUNDLE_MAGIC.starts_with(&start) {
                return Err(Refusal::NotABundle);
            }
        }
        // A chunk is at most a few kilobytes: written on the async worker.
        file.write_all(&chunk).map_err(failed)?;
    }
    if bytes == 0 {
        return Err(Refusal::Missing);
    }
    if start.len() < BUNDLE_MAGIC.len() {
        return Err(Refusal::NotABundle);
    }
    file.flush().map_err(failed)?;
    Ok((dir, path))
}
