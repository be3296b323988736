//! The records routes: import this organisation's records, read one with its history.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::api::{
    ApiError, ApiState, JsonBody, QueryParams, Shared, IMPORT_BATCH_CHARS_MAX, IMPORT_ROWS_PER_REQUEST_MAX,
};
use crate::query::PUSH_QUEUE_WRITES_MAX;
use crate::records::{validate_row, Provenance, RecordVersion};

/// The dataset `id` if this node's organisation owns it.
fn owned_dataset(state: &ApiState, id: &str) -> Result<civmesh_policy::model::Dataset, ApiError> {
    let dataset = state
        .log
        .state()
        .read(|applied| applied.policy.datasets.get(id).cloned())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no dataset {id} in the catalog")))?;
    if dataset.owner != state.identity.org {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} does not own {id}; {} does", state.identity.org, dataset.owner),
        ));
    }
    Ok(dataset)
}

/// `POST /v1/records/import?dataset=ID`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The import batch id, recorded as each version's provenance.
    pub batch: String,
    /// The source line number of the first row (for error reports).
    pub first_line: u64,
    /// The rows, as JSON objects of field name to value; each names every
    /// declared field.
    pub rows: Vec<std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>>,
    /// Only check the rows and report; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Write the rows that pass even if others are refused (by default a
    /// request with any refused row writes nothing).
    #[serde(default)]
    pub partial: bool,
}

/// A row that was refused, by source line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowFailure {
    /// The source line.
    pub line: u64,
    /// Why.
    pub error: String,
}

/// The answer to an import request.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportResponse {
    /// Rows written (each as a new version).
    pub written: usize,
    /// Rows equal to the record now, or to what the last import wrote: no
    /// version written, nothing pushed.
    #[serde(default)]
    pub unchanged: usize,
    /// Rows refused; none of them was written (nor any other row, unless
    /// `partial`).
    pub failures: Vec<RowFailure>,
    /// Corrections awaiting review on a changed record whose corrected
    /// fields the import left alone: now `superseded_by_import`, still
    /// reviewable on top of the new version.
    #[serde(default)]
    pub corrections_superseded: usize,
    /// Corrections awaiting review whose corrected fields the import changed
    /// too: decided as conflicts.
    #[serde(default)]
    pub corrections_in_conflict: usize,
}

/// `?dataset=ID`: nothing else goes in a URL (a record key may be
/// personal data).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetQuery {
    /// The dataset.
    pub dataset: String,
}

/// The body of `POST /v1/records/show`: which record, and when.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLookup {
    /// The dataset.
    pub dataset: String,
    /// The record key.
    pub key: String,
    /// Answer as of this time (Unix milliseconds); the newest version if absent.
    #[serde(default)]
    pub at_ms: Option<u64>,
}

pub(crate) async fn import_records(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<DatasetQuery>,
    JsonBody(request): JsonBody<ImportRequest>,
) -> Result<Json<ImportResponse>, ApiError> {
    let dataset = owned_dataset(&state, &query.dataset)?;
    if request.rows.len() > IMPORT_ROWS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!("at most {IMPORT_ROWS_PER_REQUEST_MAX} rows per request")));
    }
    if request.batch.trim().is_empty() || request.batch.chars().count() > IMPORT_BATCH_CHARS_MAX {
        return Err(ApiError::bad_request(format!(
            "the batch id must be 1..={IMPORT_BATCH_CHARS_MAX} characters"
        )));
    }
    let store_error = |error: crate::records::RecordStoreError| {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("nothing written: {error}"))
    };
    let mut valid = Vec::with_capacity(request.rows.len());
    let mut failures = Vec::new();
    let mut first_line_of_key = std::collections::BTreeMap::new();
    for (offset, row) in request.rows.iter().enumerate() {
        // Line numbers are for reports only: a first line near u64::MAX saturates.
        let line = request.first_line.saturating_add(offset as u64);
        let checked = check_import_row(&dataset, row).and_then(|(key, fields)| {
            match first_line_of_key.insert(key.clone(), line) {
                Some(first) => {
                    first_line_of_key.insert(key, first);
                    Err(ImportRowError::KeyRepeated { key_field: dataset.subject_key_field.clone(), first })
                }
                None => Ok((key, fields)),
            }
        });
        match checked {
            Ok(valid_row) => valid.push(valid_row),
            Err(error) => failures.push(RowFailure { line, error: error.to_string() }),
        }
    }
    let nothing = |failures| ImportResponse {
        written: 0,
        unchanged: 0,
        failures,
        corrections_superseded: 0,
        corrections_in_conflict: 0,
    };
    if request.dry_run || (!failures.is_empty() && !request.partial) {
        return Ok(Json(nothing(failures)));
    }
    // An unchanged row writes nothing: equal to the record now, or to what
    // the last import wrote (a correction applied since stays).
    let mut changed_rows = Vec::with_capacity(valid.len());
    let mut unchanged = 0;
    for (key, fields) in valid {
        let history = state.records.history(&dataset.id, &key).map_err(store_error)?;
        let last_imported =
            history.iter().rev().find(|version| matches!(version.provenance, Provenance::Import { .. }));
        if history.last().is_some_and(|latest| latest.fields == fields)
            || last_imported.is_some_and(|imported| imported.fields == fields)
        {
            unchanged += 1;
        } else {
            changed_rows.push((key, fields));
        }
    }
    if changed_rows.is_empty() {
        return Ok(Json(ImportResponse { unchanged, ..nothing(failures) }));
    }
    check_push_backlog(&state)?;
    let written = changed_rows.len();
    let provenance = Provenance::Import { batch: request.batch };
    let now_ms = civmesh_certs::now_unix_millis();
    let versions =
        state.records.write(&dataset, changed_rows.clone(), &provenance, now_ms).map_err(store_error)?;
    state.metrics.records_imported.inc_by(written as u64);
    let changed: Vec<(String, RecordVersion)> = changed_rows
        .into_iter()
        .zip(versions)
        .map(|((key, fields), version)| {
            (key, RecordVersion { version, written_at_ms: now_ms, provenance: provenance.clone(), fields })
        })
        .collect();
    // Corrections awaiting review on these records learn of the new versions.
    let (corrections_superseded, corrections_in_conflict) =
        state.corrections.records_imported(&dataset.id, &changed).await;
    // Subscribers hear of the new versions, each push logged first.
    state.query.changes_queued();
    Ok(Json(ImportResponse { written, unchanged, failures, corrections_superseded, corrections_in_conflict }))
}

/// Refuses an import while too many record writes wait to be pushed to
/// subscribers (503): the push queue stays bounded.
fn check_push_backlog(state: &Shared) -> Result<(), ApiError> {
    let queued = state.records.queued_count().map_err(|error| {
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("nothing written: {error}"))
    })?;
    if queued < PUSH_QUEUE_WRITES_MAX {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{queued} record writes wait to be pushed to subscribers (at most {PUSH_QUEUE_WRITES_MAX}): nothing \
             of this request was written; try again shortly (rows already written stay)"
        ),
    ))
}

/// Why an import refused a row.
#[derive(Debug, thiserror::Error)]
enum ImportRowError {
    /// A declared field is not given.
    #[error("the declared field {0:?} is missing (give it, null for no value)")]
    FieldMissing(String),
    /// The row does not fit the schema.
    #[error(transparent)]
    Invalid(#[from] crate::records::RowError),
    /// The row's key was on an earlier line of the same import.
    #[error("the same {key_field} as line {first}: a key once per import")]
    KeyRepeated {
        /// The dataset's key field.
        key_field: String,
        /// The line it was first on.
        first: u64,
    },
}

/// An import row: every declared field given, and valid for the schema.
fn check_import_row(
    dataset: &civmesh_policy::model::Dataset,
    row: &std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>,
) -> Result<(String, std::collections::BTreeMap<String, civmesh_policy::model::FieldValue>), ImportRowError> {
    if let Some(missing) = dataset.fields.iter().find(|field| !row.contains_key(&field.name)) {
        return Err(ImportRowError::FieldMissing(missing.name.clone()));
    }
    Ok(validate_row(dataset, row)?)
}

/// The answer of `GET /v1/records` and `POST /v1/records/show`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordAnswer {
    /// The dataset.
    pub dataset: String,
    /// Records in the dataset.
    pub count: u64,
    /// The version asked for (latest, or as of `at_ms`); none for a count.
    pub record: Option<RecordVersion>,
    /// Every version, oldest first; none for a count.
    pub history: Vec<RecordVersion>,
}

/// `GET /v1/records?dataset=ID`: how many records the dataset holds.
pub(crate) async fn count_records(
    State(state): State<Shared>,
    QueryParams(query): QueryParams<DatasetQuery>,
) -> Result<Json<RecordAnswer>, ApiError> {
    let dataset = owned_dataset(&state, &query.dataset)?;
    let count = state.records.count(&dataset.id).map_err(ApiError::internal)?;
    Ok(Json(RecordAnswer { dataset: dataset.id, count, record: None, history: vec![] }))
}

/// `POST /v1/records/show`: one record and its history; the key travels in
/// the body, never in the URL.
pub(crate) async fn show_record(
    State(state): State<Shared>,
    JsonBody(lookup): JsonBody<RecordLookup>,
) -> Result<Json<RecordAnswer>, ApiError> {
    let dataset = owned_dataset(&state, &lookup.dataset)?;
    let internal = |error: crate::records::RecordStoreError| ApiError::internal(error);
    let count = state.records.count(&dataset.id).map_err(internal)?;
    let history = state.records.history(&dataset.id, &lookup.key).map_err(internal)?;
    let record = match lookup.at_ms {
        Some(at_ms) => history.iter().rev().find(|version| version.written_at_ms <= at_ms).cloned(),
        None => history.last().cloned(),
    };
    Ok(Json(RecordAnswer { dataset: dataset.id, count, record, history }))
}
