//! The correction form of the record page (`POST /records/correct`,
//! multipart): the changed fields, a reason, evidence in words and photos
//! from the browser. The CSRF token is the form's first part and is checked
//! before anything else is read. Everything is checked before anything is
//! kept: each problem goes next to its field (400) and nothing is stored.
//! Then the photos are uploaded (by content, as `POST
//! /v1/corrections/attachments` does) and the correction submitted, naming
//! the signed-in operator; the browser goes on to the correction's page.

use std::collections::BTreeMap;

use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use civmesh_policy::correction::{CorrectionId, CORRECTION_CHANGES_MAX, CORRECTION_TEXT_BYTES_MAX};
use civmesh_policy::model::{FieldType, FieldValue};

use super::super::operators::Role;
use super::super::pages::{csrf_matches, error_page, grants_to_me, render};
use super::super::Visit;
use super::record::{field_rows, schema_of, FieldRow, FormErrors, RecordPage};
use crate::api::{ApiError, Shared};
use crate::corrections::attachments::{content_type, AttachmentLimits};
use crate::corrections::{hex_id, CorrectionError, CorrectionSpec};
use crate::records::RECORD_KEY_BYTES_MAX;

/// Parts (fields and files) one form has at most.
const FORM_PARTS_MAX: usize = 512;
/// The bytes of one text part at most (a longer one refuses the form).
const TEXT_PART_BYTES_MAX: u64 = 64 * 1024;
/// The bytes of all text parts together at most.
const FORM_TEXT_BYTES_MAX: u64 = 1024 * 1024;
/// The bytes of one field's new value at most.
pub(super) const FIELD_VALUE_BYTES_MAX: usize = 1024;
/// The name of the photo input.
const PHOTOS_PART: &str = "photos";

/// What the form posted.
#[derive(Debug, Default)]
pub(super) struct Posted {
    /// The text parts by name.
    pub(super) texts: BTreeMap<String, String>,
    /// The photos kept (within the count and byte bounds).
    pub(super) photos: Vec<Vec<u8>>,
    /// The photos chosen, kept or not.
    pub(super) photos_chosen: usize,
    /// Whether a photo over the byte bound was dropped.
    pub(super) photo_too_large: bool,
}

impl Posted {
    /// The text part `name`, empty if absent.
    fn text(&self, name: &str) -> &str {
        self.texts.get(name).map_or("", String::as_str)
    }
}

/// Why a form was not read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// The first part is not the session's CSRF token.
    Forged,
    /// Not a form this page sends.
    Malformed,
    /// Over the bounds on parts or bytes.
    TooLarge,
}

/// Reads the form, the CSRF token first, within `limits`: a photo over the
/// byte bound is read to its end and dropped (and said so), photos past
/// the count bound are counted and dropped; past every photo's bound and
/// the text's, the form is refused.
async fn read_form(
    multipart: &mut Multipart,
    csrf: &str,
    limits: AttachmentLimits,
) -> Result<Posted, ReadError> {
    let files_bytes_max = limits.attachment_bytes_max.saturating_mul(limits.attachments_max as u64 + 1);
    let mut budget = files_bytes_max.saturating_add(FORM_TEXT_BYTES_MAX);
    let mut posted = Posted::default();
    let mut parts = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(|_| ReadError::Malformed)? {
        parts += 1;
        if parts > FORM_PARTS_MAX {
            return Err(ReadError::TooLarge);
        }
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        if parts == 1 {
            let token = read_text(&mut field, &mut budget).await?;
            if name != "csrf" || !csrf_matches(csrf, &token) {
                return Err(ReadError::Forged);
            }
            continue;
        }
        match file_name {
            Some(file_name) if name == PHOTOS_PART => {
                let (bytes, over) = read_part(&mut field, limits.attachment_bytes_max, &mut budget).await?;
                if file_name.is_empty() && bytes.is_empty() {
                    continue; // no file chosen
                }
                posted.photos_chosen += 1;
                if over {
                    posted.photo_too_large = true;
                } else if posted.photos.len() < limits.attachments_max {
                    posted.photos.push(bytes);
                }
            }
            Some(_) => return Err(ReadError::Malformed),
            None => {
                let text = read_text(&mut field, &mut budget).await?;
                posted.texts.insert(name, text);
            }
        }
    }
    Ok(posted)
}

/// A text part, UTF-8, at most [`TEXT_PART_BYTES_MAX`].
async fn read_text(field: &mut Field<'_>, budget: &mut u64) -> Result<String, ReadError> {
    match read_part(field, TEXT_PART_BYTES_MAX, budget).await? {
        (_, true) => Err(ReadError::TooLarge),
        (bytes, false) => String::from_utf8(bytes).map_err(|_| ReadError::Malformed),
    }
}

/// A part's bytes, kept up to `keep_bytes_max` (beyond, dropped and
/// `true`), each byte read counted against `budget`.
async fn read_part(
    field: &mut Field<'_>,
    keep_bytes_max: u64,
    budget: &mut u64,
) -> Result<(Vec<u8>, bool), ReadError> {
    let (mut kept, mut over, mut read) = (Vec::new(), false, 0u64);
    while let Some(chunk) = field.chunk().await.map_err(|_| ReadError::Malformed)? {
        let length = chunk.len() as u64;
        *budget = budget.checked_sub(length).ok_or(ReadError::TooLarge)?;
        read += length;
        if read > keep_bytes_max {
            (over, kept) = (true, Vec::new());
        } else {
            kept.extend_from_slice(&chunk);
        }
    }
    Ok((kept, over))
}

/// The value typed for a field of input type `input`; the key of what is
/// wrong with it otherwise. Empty is no value.
pub(super) fn parse_value(input: &str, text: &str) -> Result<FieldValue, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(FieldValue::Null);
    }
    match input {
        "number" => text.parse().map(FieldValue::Integer).map_err(|_| "correction.not-a-number"),
        "boolean" => match text {
            "true" => Ok(FieldValue::Boolean(true)),
            "false" => Ok(FieldValue::Boolean(false)),
            _ => Err("correction.not-a-boolean"),
        },
        "date" => {
            let value = FieldValue::Text(text.to_string());
            if value.fits(FieldType::Date) {
                Ok(value)
            } else {
                Err("correction.not-a-date")
            }
        }
        _ => Ok(FieldValue::Text(text.to_string())),
    }
}

/// Checks the posted form against the page's rows: each editable field's
/// new value (only changed ones count), the reason, the evidence and the
/// photos (by content). Marks each problem on its field or in `errors`;
/// returns the changes.
pub(super) fn check(
    rows: &mut [FieldRow],
    posted: &Posted,
    limits: AttachmentLimits,
    errors: &mut FormErrors,
) -> BTreeMap<String, FieldValue> {
    let mut changes = BTreeMap::new();
    for row in rows.iter_mut().filter(|row| row.editable) {
        let current = row.current.clone().unwrap_or_default();
        row.proposed = posted.texts.get(&format!("new.{}", row.name)).cloned().unwrap_or(current.clone());
        if row.proposed.len() > FIELD_VALUE_BYTES_MAX {
            row.error = Some("correction.too-long");
        } else if row.proposed != current && row.proposed.trim() != current {
            match parse_value(row.input, &row.proposed) {
                Ok(value) => {
                    changes.insert(row.name.clone(), value);
                }
                Err(key) => row.error = Some(key),
            }
        }
    }
    let field_errors = rows.iter().any(|row| row.error.is_some());
    if changes.is_empty() && !field_errors {
        errors.changes = Some("correction.nothing-changed");
    } else if changes.len() > CORRECTION_CHANGES_MAX {
        errors.changes = Some("correction.too-many-changes");
    }
    let reason = posted.text("reason").trim();
    if reason.is_empty() {
        errors.reason = Some("correction.reason-required");
    } else if reason.len() > CORRECTION_TEXT_BYTES_MAX {
        errors.reason = Some("correction.too-long");
    }
    if posted.text("evidence").trim().len() > CORRECTION_TEXT_BYTES_MAX {
        errors.evidence = Some("correction.too-long");
    }
    errors.photos = if posted.photo_too_large {
        Some("correction.photo-too-large")
    } else if posted.photos_chosen > limits.attachments_max {
        Some("correction.photos-too-many")
    } else if posted.photos.iter().any(|photo| !content_type(photo).starts_with("image/")) {
        Some("correction.photo-not-image")
    } else {
        None
    };
    changes
}

/// `POST /records/correct`: checks the form, then uploads the photos and submits.
pub(super) async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require(&[Role::StreetWorker]) {
        Ok(session) => session.clone(),
        Err(refused) => return *refused,
    };
    let Ok(mut multipart) = multipart else {
        return error_page(&visit, StatusCode::BAD_REQUEST, "correction.form-malformed");
    };
    let limits = state.corrections.attachment_limits();
    let posted = match read_form(&mut multipart, &session.csrf, limits).await {
        Ok(posted) => posted,
        Err(ReadError::Forged) => return error_page(&visit, StatusCode::FORBIDDEN, "error.form-expired"),
        Err(ReadError::Malformed) => {
            return error_page(&visit, StatusCode::BAD_REQUEST, "correction.form-malformed")
        }
        Err(ReadError::TooLarge) => {
            return error_page(&visit, StatusCode::PAYLOAD_TOO_LARGE, "correction.form-too-large")
        }
    };
    let mut page = match page_of(&visit, &state, &posted) {
        Ok(page) => page,
        Err(refused) => return *refused,
    };
    let changes = check(&mut page.fields, &posted, limits, &mut page.errors);
    if page.has_errors() {
        return render(&page, StatusCode::BAD_REQUEST);
    }
    match send(&state, &page, changes, posted.photos, &session.operator).await {
        Ok(id) => Redirect::to(&format!("/corrections/{}", hex_id(&id))).into_response(),
        Err(error) => {
            page.errors.submit_detail = error.to_string();
            if matches!(error, CorrectionError::Attachment(_)) {
                page.errors.photos = Some("correction.photo-refused");
            } else {
                page.errors.submit = Some("correction.refused");
            }
            render(&page, ApiError::from(error).status())
        }
    }
}

/// The record page the form was posted from, rebuilt from the form (the
/// values shown travel in it, so the owner is not asked again).
fn page_of(visit: &Visit, state: &Shared, posted: &Posted) -> Result<RecordPage, Box<Response>> {
    let bad = |key| Box::new(error_page(visit, StatusCode::BAD_REQUEST, key));
    let grant_id: u64 = posted.text("grant").parse().map_err(|_| bad("correction.form-malformed"))?;
    let base_version: u64 =
        posted.text("base_version").parse().map_err(|_| bad("correction.form-malformed"))?;
    let grant = grants_to_me(state)
        .into_iter()
        .find(|grant| grant.id == grant_id)
        .ok_or_else(|| bad("records.no-grant"))?;
    let key = posted.text("key").trim().to_string();
    if key.is_empty() || key.len() > RECORD_KEY_BYTES_MAX {
        return Err(bad("record.key-invalid"));
    }
    let current: BTreeMap<String, String> = grant
        .fields
        .iter()
        .filter_map(|field| {
            posted.texts.get(&format!("old.{field}")).map(|value| (field.clone(), value.clone()))
        })
        .collect();
    let mut page = RecordPage::new(visit, state, &grant, key);
    page.version = base_version;
    page.fields = field_rows(schema_of(state, &grant.dataset).as_ref(), &grant, &current);
    page.reason = posted.text("reason").to_string();
    page.evidence = posted.text("evidence").to_string();
    Ok(page)
}

/// Uploads the photos, then submits the correction as `operator`.
async fn send(
    state: &Shared,
    page: &RecordPage,
    changes: BTreeMap<String, FieldValue>,
    photos: Vec<Vec<u8>>,
    operator: &str,
) -> Result<CorrectionId, CorrectionError> {
    let mut attachment_sha256 = Vec::with_capacity(photos.len());
    for photo in &photos {
        attachment_sha256.push(hex_id(&state.corrections.upload_attachment(photo)?));
    }
    let spec = CorrectionSpec {
        dataset: page.dataset.clone(),
        record_key: page.key.clone(),
        base_version: page.version,
        changes,
        reason: page.reason.trim().to_string(),
        evidence_text: page.evidence.trim().to_string(),
        attachment_sha256,
        operator: operator.to_string(),
    };
    crate::corrections::http::submit_caught_up(state, spec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AttachmentLimits = AttachmentLimits { attachments_max: 2, attachment_bytes_max: 100 };

    fn row(name: &str, current: &str, input: &'static str) -> FieldRow {
        FieldRow {
            name: name.into(),
            current: Some(current.into()),
            editable: true,
            input,
            proposed: current.into(),
            note: None,
            error: None,
        }
    }

    fn posted(texts: &[(&str, &str)], photos: Vec<Vec<u8>>) -> Posted {
        let texts = texts.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        Posted { texts, photos_chosen: photos.len(), photos, photo_too_large: false }
    }

    #[test]
    fn only_changed_fields_are_changes_and_each_problem_is_named() {
        let mut rows = vec![row("name", "Tea House", "text"), row("staff", "3", "number")];
        rows.push(FieldRow { editable: false, ..row("credit_code", "9131", "text") });
        let form = posted(
            &[
                ("new.name", "Tea House "),
                ("new.staff", "4"),
                ("new.credit_code", "x"),
                ("reason", " moved "),
            ],
            vec![b"\x89PNG\r\n".to_vec()],
        );
        let mut errors = FormErrors::default();
        let changes = check(&mut rows, &form, LIMITS, &mut errors);
        assert_eq!(changes, BTreeMap::from([("staff".to_string(), FieldValue::Integer(4))]));
        assert!(!errors.any(), "trailing blanks are no change; the key field is not editable");

        let form = posted(&[("new.staff", "four"), ("evidence", &"x".repeat(5000))], vec![b"hello".to_vec()]);
        let mut errors = FormErrors::default();
        let changes = check(&mut rows, &form, LIMITS, &mut errors);
        assert!(changes.is_empty());
        assert_eq!(rows[1].error, Some("correction.not-a-number"));
        assert_eq!(errors.reason, Some("correction.reason-required"));
        assert_eq!(errors.evidence, Some("correction.too-long"));
        assert_eq!(errors.photos, Some("correction.photo-not-image"), "checked by content, not by name");
        assert_eq!(errors.changes, None, "the field's own error says it");
    }

    #[test]
    fn nothing_changed_and_photo_bounds_are_refused() {
        let mut rows = vec![row("name", "Tea House", "text")];
        let mut form = posted(&[("reason", "r")], vec![]);
        form.photos_chosen = 3;
        let mut errors = FormErrors::default();
        assert!(check(&mut rows, &form, LIMITS, &mut errors).is_empty());
        assert_eq!(errors.changes, Some("correction.nothing-changed"));
        assert_eq!(errors.photos, Some("correction.photos-too-many"));
        form.photo_too_large = true;
        check(&mut rows, &form, LIMITS, &mut errors);
        assert_eq!(errors.photos, Some("correction.photo-too-large"));
    }

    #[test]
    fn values_are_typed_by_their_field() {
        assert_eq!(parse_value("number", " -12 "), Ok(FieldValue::Integer(-12)));
        assert_eq!(parse_value("date", "2026-02-30"), Ok(FieldValue::Text("2026-02-30".into())));
        assert_eq!(parse_value("date", "30/02/2026"), Err("correction.not-a-date"));
        assert_eq!(parse_value("boolean", "yes"), Err("correction.not-a-boolean"));
        assert_eq!(parse_value("text", "  "), Ok(FieldValue::Null));
    }
}
