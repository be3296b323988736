//! The street worker's record page: one record as its owner releases it
//! under one of this organisation's grants (asked through the same path as
//! `POST /v1/query`, so the owner decides and logs the access), its
//! version, this node's corrections on it, and the correction form (posted
//! to `corrections_submit.rs`).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use civmesh_policy::model::{Dataset, FieldType, Grant};
use serde::Deserialize;

use super::super::operators::Role;
use super::super::pages::{error_page, grants_to_me, render};
use super::super::{Frame, Visit};
use super::{fields_line, short_id, state_key, time};
use crate::api::Shared;
use crate::corrections::attachments::AttachmentLimits;
use crate::corrections::{CorrectionView, Side};
use crate::query::{QueryAnswer, QuerySpec, ReleasedRecord};

/// This node's corrections a record page lists at most, newest first.
const RECORD_HISTORY_MAX: usize = 50;

/// One field of the record, as the page shows it and the form takes it.
pub(super) struct FieldRow {
    /// The field's name (as the catalog has it).
    pub(super) name: String,
    /// The released value as shown; `None` when the owner withheld it.
    pub(super) current: Option<String>,
    /// Whether the street may correct it: released unmasked, not the key.
    pub(super) editable: bool,
    /// The input's type: `text`, `number`, `date` or `boolean`.
    pub(super) input: &'static str,
    /// What the form holds: the current value, or what was typed.
    pub(super) proposed: String,
    /// Why it cannot be corrected (a key).
    pub(super) note: Option<&'static str>,
    /// What is wrong with what was typed (a key).
    pub(super) error: Option<&'static str>,
}

/// One of this node's corrections on the record.
pub(super) struct HistoryRow {
    /// The correction id, hex.
    pub(super) id: String,
    /// Its first characters, to read.
    pub(super) short: String,
    /// Its state's key.
    pub(super) state_key: &'static str,
    /// The fields it changes.
    pub(super) fields: String,
    /// When this node kept it.
    pub(super) submitted: String,
}

/// What is wrong with a posted correction, each next to its field (keys).
#[derive(Default)]
pub(super) struct FormErrors {
    /// No field changed.
    pub(super) changes: Option<&'static str>,
    /// The reason.
    pub(super) reason: Option<&'static str>,
    /// The evidence text.
    pub(super) evidence: Option<&'static str>,
    /// The photos.
    pub(super) photos: Option<&'static str>,
    /// The node refused the submission.
    pub(super) submit: Option<&'static str>,
    /// The node's words for that.
    pub(super) submit_detail: String,
}

impl FormErrors {
    /// Whether anything is wrong.
    pub(super) fn any(&self) -> bool {
        self.changes.is_some()
            || self.reason.is_some()
            || self.evidence.is_some()
            || self.photos.is_some()
            || self.submit.is_some()
    }
}

/// The record page.
#[derive(Template)]
#[template(path = "console/record.html")]
pub(super) struct RecordPage {
    pub(super) frame: Frame,
    /// The grant it is opened under.
    pub(super) grant: u64,
    pub(super) dataset: String,
    pub(super) key: String,
    /// The version shown: the correction's base version.
    pub(super) version: u64,
    pub(super) fields: Vec<FieldRow>,
    pub(super) history: Vec<HistoryRow>,
    pub(super) reason: String,
    pub(super) evidence: String,
    pub(super) errors: FormErrors,
    /// The photo bounds, to read ("5 × 20 MiB").
    pub(super) photos_limit: String,
    /// The bytes of the reason and the evidence at most.
    pub(super) text_bytes_max: usize,
    /// Why the record is not shown (a key), and the owner's words.
    pub(super) error: Option<&'static str>,
    pub(super) detail: String,
}

impl RecordPage {
    /// An empty page for `key` under `grant`.
    pub(super) fn new(visit: &Visit, state: &Shared, grant: &Grant, key: String) -> Self {
        RecordPage {
            frame: Frame::of(visit),
            grant: grant.id,
            dataset: grant.dataset.clone(),
            history: history(state, &grant.dataset, &key),
            key,
            version: 0,
            fields: Vec::new(),
            reason: String::new(),
            evidence: String::new(),
            errors: FormErrors::default(),
            photos_limit: photos_limit(state.corrections.attachment_limits()),
            text_bytes_max: civmesh_policy::correction::CORRECTION_TEXT_BYTES_MAX,
            error: None,
            detail: String::new(),
        }
    }
}

impl RecordPage {
    /// Whether the posted form had anything wrong (the summary above it says so).
    pub(super) fn has_errors(&self) -> bool {
        self.errors.any() || self.fields.iter().any(|field| field.error.is_some())
    }
}

/// "5 × 20 MiB": how many photos, and how large each.
pub(super) fn photos_limit(limits: AttachmentLimits) -> String {
    /// A mebibyte.
    const MIB: u64 = 1024 * 1024;
    let size = match limits.attachment_bytes_max {
        bytes if bytes >= MIB && bytes % MIB == 0 => format!("{} MiB", bytes / MIB),
        bytes if bytes >= 1024 => format!("{} KiB", bytes / 1024),
        bytes => format!("{bytes} B"),
    };
    format!("{} × {size}", limits.attachments_max)
}

/// The input type of a field of `field_type`.
fn input_of(field_type: Option<FieldType>) -> &'static str {
    match field_type {
        Some(FieldType::Integer) => "number",
        Some(FieldType::Date) => "date",
        Some(FieldType::Boolean) => "boolean",
        Some(FieldType::Text) | None => "text",
    }
}

/// The rows of the grant's fields, with the released values in `current`
/// (a field not there was withheld).
pub(super) fn field_rows(
    schema: Option<&Dataset>,
    grant: &Grant,
    current: &BTreeMap<String, String>,
) -> Vec<FieldRow> {
    grant
        .fields
        .iter()
        .map(|name| {
            let spec = schema.and_then(|schema| schema.field(name));
            let value = current.get(name).cloned();
            let note = if value.is_none() || spec.is_none() {
                Some("record.withheld")
            } else if schema.is_some_and(|schema| schema.subject_key_field == *name) {
                Some("record.key-field")
            } else if !grant.shows_unmasked(name) {
                Some("record.masked")
            } else {
                None
            };
            FieldRow {
                name: name.clone(),
                proposed: value.clone().unwrap_or_default(),
                current: value,
                editable: note.is_none(),
                input: input_of(spec.map(|spec| spec.field_type)),
                note,
                error: None,
            }
        })
        .collect()
}

/// This node's corrections on the record, newest first.
pub(super) fn history(state: &Shared, dataset: &str, key: &str) -> Vec<HistoryRow> {
    let on_record = |view: &CorrectionView| {
        view.side == Side::Outbox && view.request.dataset == dataset && view.request.record_key == key
    };
    let Ok(views) = state.corrections.list_where(on_record, RECORD_HISTORY_MAX) else {
        return Vec::new();
    };
    views
        .iter()
        .map(|view| HistoryRow {
            id: view.id.clone(),
            short: short_id(view),
            state_key: state_key(view.state),
            fields: fields_line(&view.request.changes),
            submitted: time(view.created_at_ms),
        })
        .collect()
}

/// The schema of `dataset` in the catalog.
pub(super) fn schema_of(state: &Shared, dataset: &str) -> Option<Dataset> {
    state.log.state().read(|applied| applied.policy.datasets.get(dataset).cloned())
}

/// `POST /records/open`: the grant and the record key, in the body.
#[derive(Debug, Deserialize)]
pub(super) struct OpenForm {
    csrf: String,
    grant: u64,
    key: String,
}

/// `POST /records/open`: the record page, the record asked of its owner under the grant.
pub(super) async fn open(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<OpenForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require_posted(&[Role::StreetWorker], &form.csrf) {
        return *refused;
    }
    let Some(grant) = grants_to_me(&state).into_iter().find(|grant| grant.id == form.grant) else {
        return error_page(&visit, StatusCode::BAD_REQUEST, "records.no-grant");
    };
    let key = form.key.trim().to_string();
    if key.is_empty() || key.len() > crate::records::RECORD_KEY_BYTES_MAX {
        return error_page(&visit, StatusCode::BAD_REQUEST, "record.key-invalid");
    }
    let mut page = RecordPage::new(&visit, &state, &grant, key);
    let status = match fetch(&state, &grant, &page.key).await {
        Fetched::Record(record) => {
            let current =
                record.fields.iter().map(|(name, value)| (name.clone(), value.to_string())).collect();
            page.version = record.version;
            page.fields = field_rows(schema_of(&state, &grant.dataset).as_ref(), &grant, &current);
            StatusCode::OK
        }
        Fetched::NotFound => {
            page.error = Some("record.not-found");
            StatusCode::NOT_FOUND
        }
        Fetched::Denied(reason) => {
            page.error = Some("records.denied");
            page.detail = reason;
            StatusCode::FORBIDDEN
        }
        Fetched::Failed(status, reason) => {
            page.error = Some("records.refused");
            page.detail = reason;
            status
        }
    };
    render(&page, status)
}

/// What the owner answered for one record.
enum Fetched {
    /// Released (some fields perhaps withheld or masked).
    Record(Box<ReleasedRecord>),
    /// No such record.
    NotFound,
    /// Denied, with the reason code's name.
    Denied(String),
    /// No answer, with the status to give and why.
    Failed(StatusCode, String),
}

/// Asks the owner for the record, under the grant's fields and purpose.
async fn fetch(state: &Shared, grant: &Grant, key: &str) -> Fetched {
    let spec = QuerySpec {
        dataset: grant.dataset.clone(),
        keys: vec![key.to_string()],
        fields: grant.fields.iter().cloned().collect(),
        purpose: grant.purpose.clone(),
        grant: Some(grant.id),
        keep: false,
    };
    match crate::api::ask_owner(state, spec).await {
        Ok(QueryAnswer::Released { records, .. }) => match records.into_iter().next() {
            Some(record) => Fetched::Record(Box::new(record)),
            None => Fetched::NotFound,
        },
        Ok(QueryAnswer::Denied { reason, .. }) => {
            Fetched::Denied(crate::query::reason_name(reason).unwrap_or_default())
        }
        Ok(QueryAnswer::Refused { reason }) => Fetched::Failed(StatusCode::BAD_GATEWAY, reason),
        Err(error) => Fetched::Failed(error.status(), error.message().to_string()),
    }
}
