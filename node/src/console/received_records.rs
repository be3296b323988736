//! `POST /received/records`: a page of one source's received records, read
//! from this node's store (`QueryService::copy_page`), never from the
//! owner. The source and the cursor travel in the POST body; each record's
//! subject stays a hash, its key is shown only where the copy holds it,
//! and masked values are shown as held.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use civmesh_policy::hex_digest::{from_hex, to_hex};
use serde::Deserialize;

use super::SourceRow;
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::{error_page, render};
use crate::console::{Frame, Visit};
use crate::query::ReleasedRecord;

/// Records on one page.
const RECEIVED_PAGE_RECORDS: usize = 100;
/// Hex digits of a subject's hash shown in the table (the whole hash is the cursor).
const SUBJECT_SHOWN_CHARS: usize = 16;

/// The posted form: which source, and where the last page ended.
#[derive(Debug, Deserialize)]
pub(super) struct RecordsForm {
    csrf: String,
    /// The source's id (64 hex digits).
    source: String,
    /// The last subject of the previous page (64 hex digits); empty for the first page.
    #[serde(default)]
    cursor: String,
}

/// One value of a record: as held, or withheld by the owner.
struct Cell {
    value: String,
    withheld: bool,
}

/// One record: its subject's hash (shortened), its key if held, its version, its values by column.
struct RecordRow {
    subject: String,
    key: String,
    version: u64,
    cells: Vec<Cell>,
}

/// `/received/records`.
#[derive(Template)]
#[template(path = "console/received_records.html")]
struct RecordsPage {
    frame: Frame,
    source: SourceRow,
    columns: Vec<String>,
    /// Whether any record on the page carries its key.
    show_key: bool,
    rows: Vec<RecordRow>,
    /// The cursor of the next page; none on the last.
    next_cursor: Option<String>,
}

/// The columns of a page: the source's fields in their order, then any
/// other field a record holds, by name.
fn columns(fields: &[String], records: &[ReleasedRecord]) -> Vec<String> {
    let mut columns = fields.to_vec();
    let others: std::collections::BTreeSet<&String> = records
        .iter()
        .flat_map(|record| record.fields.keys().chain(record.withheld.keys()))
        .filter(|name| !fields.contains(name))
        .collect();
    columns.extend(others.into_iter().cloned());
    columns
}

/// A record as a row under `columns`.
fn row(record: &ReleasedRecord, columns: &[String]) -> RecordRow {
    let hex = to_hex(&record.subject.0);
    RecordRow {
        subject: format!("{}…", hex.get(..SUBJECT_SHOWN_CHARS).unwrap_or(&hex)),
        key: record.key.clone(),
        version: record.version,
        cells: columns
            .iter()
            .map(|column| Cell {
                value: record.fields.get(column).map(ToString::to_string).unwrap_or_default(),
                withheld: !record.fields.contains_key(column) && record.withheld.contains_key(column),
            })
            .collect(),
    }
}

/// Splits a page read one record long: the page, and the next page's
/// cursor if there is more.
fn split_page(mut records: Vec<ReleasedRecord>) -> (Vec<ReleasedRecord>, Option<String>) {
    if records.len() <= RECEIVED_PAGE_RECORDS {
        return (records, None);
    }
    records.truncate(RECEIVED_PAGE_RECORDS);
    let next = records.last().map(|record| to_hex(&record.subject.0));
    (records, next)
}

/// `POST /received/records`: one page of a source's records.
pub(super) async fn page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<RecordsForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require_posted(&[Role::StreetWorker], &form.csrf) {
        return *refused;
    }
    let Some(digest) = from_hex(form.source.trim()) else {
        return error_page(&visit, StatusCode::NOT_FOUND, "received.unknown-source");
    };
    let after = match form.cursor.trim() {
        "" => None,
        cursor => match from_hex(cursor) {
            Some(after) => Some(after),
            None => return error_page(&visit, StatusCode::BAD_REQUEST, "received.bad-cursor"),
        },
    };
    let sources = match super::sources(&state, &visit) {
        Ok(sources) => sources,
        Err(failed) => return *failed,
    };
    let id = to_hex(&digest);
    let Some(source) = sources.into_iter().find(|source| source.id == id) else {
        return error_page(&visit, StatusCode::NOT_FOUND, "received.unknown-source");
    };
    let records = match state.query.copy_page(&digest, after.as_ref(), RECEIVED_PAGE_RECORDS + 1) {
        Ok(records) => records,
        Err(error) => {
            tracing::warn!(%error, "a received copy could not be read");
            return error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
        }
    };
    let (records, next_cursor) = split_page(records);
    let columns = columns(&source.fields, &records);
    let rows: Vec<RecordRow> = records.iter().map(|record| row(record, &columns)).collect();
    let show_key = rows.iter().any(|row| !row.key.is_empty());
    let page = RecordsPage { frame: Frame::of(&visit), source, columns, show_key, rows, next_cursor };
    render(&page, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use civmesh_policy::model::{FieldValue, SubjectKeyHash};

    use super::*;

    fn record(subject: u8, key: &str, fields: &[(&str, &str)], withheld: &[&str]) -> ReleasedRecord {
        ReleasedRecord {
            key: key.into(),
            subject: SubjectKeyHash([subject; 32]),
            version: 1,
            fields: fields
                .iter()
                .map(|(name, value)| (name.to_string(), FieldValue::Text(value.to_string())))
                .collect(),
            withheld: withheld
                .iter()
                .map(|name| (name.to_string(), civmesh_policy::ReasonCode::FieldNotGranted))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn columns_follow_the_sources_fields_then_any_other_by_name() {
        let fields = vec!["name".to_string(), "phone".to_string()];
        let records = [record(1, "", &[("phone", "****1234"), ("street", "jingansi")], &["age"])];
        assert_eq!(columns(&fields, &records), ["name", "phone", "age", "street"]);
        let row = row(&records[0], &columns(&fields, &records));
        let cells: Vec<(&str, bool)> =
            row.cells.iter().map(|cell| (cell.value.as_str(), cell.withheld)).collect();
        assert_eq!(cells, [("", false), ("****1234", false), ("", true), ("jingansi", false)]);
        assert_eq!(row.subject, format!("{}…", "01".repeat(8)), "the subject stays a hash");
        assert!(row.key.is_empty());
    }

    #[test]
    fn a_page_read_one_long_has_a_next_cursor_at_its_last_record() {
        let many: Vec<ReleasedRecord> =
            (0..=RECEIVED_PAGE_RECORDS as u8).map(|subject| record(subject, "k", &[], &[])).collect();
        let (page, next) = split_page(many);
        assert_eq!(page.len(), RECEIVED_PAGE_RECORDS);
        assert_eq!(next, Some(to_hex(&[RECEIVED_PAGE_RECORDS as u8 - 1; 32])));
        let (page, next) = split_page(vec![record(1, "k", &[], &[])]);
        assert_eq!((page.len(), next), (1, None));
    }
}
