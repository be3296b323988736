//! `civmesh records ...`: a department's own records, through the running
//! node's API: import a file, show a record and its history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use civmesh_certs::now_unix_millis;
use civmesh_policy::model::{Dataset, FieldType, FieldValue};
use clap::{Args, Subcommand};

use crate::api::{ImportRequest, ImportResponse, RecordAnswer, RowFailure};
use crate::cli::args::NodeDir;
use crate::client::NodeApi;

/// `civmesh records ...`, through the running node in `--node-dir`.
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Import rows from a .csv (header row naming every declared field) or
    /// .jsonl file. Each row is validated against the dataset's schema and
    /// every refused row is reported by line number; by default nothing is
    /// written if any row is refused. A row equal to the record now (or to
    /// what the last import wrote) writes no version.
    Import(ImportArgs),
    /// Show a record and its history.
    Show {
        /// The owner node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The dataset id.
        #[arg(long, value_name = "DATASET")]
        dataset: String,
        /// The record key.
        #[arg(long, value_name = "RECORD_KEY")]
        record_key: String,
        /// Show the version in force at this time (ms since the epoch).
        #[arg(long, value_name = "AT_MS")]
        at_ms: Option<u64>,
    },
    /// List, a page at a time, another organisation's records that a
    /// grant lets this node see (each page is logged by the owner before
    /// it is released). Without --all, prints one page and the cursor of
    /// the next.
    List(super::listing::ListArgs),
}

/// Arguments of `civmesh records import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The owner node.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset id.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// A name for this import, recorded as each version's provenance.
    #[arg(long, value_name = "BATCH")]
    pub batch: Option<String>,
    /// Write the rows that pass and report the others (exit 0).
    #[arg(long)]
    pub partial: bool,
    /// The file's encoding: utf-8 (the default), gbk or gb18030 (Excel
    /// on Chinese Windows saves GBK).
    #[arg(long, value_name = "ENCODING")]
    pub encoding: Option<String>,
    /// The file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Rows sent per import request (at most the node's
/// [`crate::api::IMPORT_ROWS_PER_REQUEST_MAX`]).
const IMPORT_ROWS_PER_CHUNK: usize = 1_000;
/// The JSON bytes of one import request's rows at most: half the API's
/// bound on a request, so wide rows go in more requests, not refused ones.
const IMPORT_REQUEST_ROWS_BYTES_MAX: usize = crate::api::API_REQUEST_BYTES_MAX / 2;

type Row = BTreeMap<String, FieldValue>;
/// Rows that parsed, by source line, and lines that did not.
type ParsedRows = (Vec<(u64, Row)>, Vec<RowFailure>);

pub(super) fn execute(command: RecordsCommand) -> anyhow::Result<()> {
    match command {
        RecordsCommand::Import(args) => import(args),
        RecordsCommand::List(args) => super::listing::execute(args),
        RecordsCommand::Show { node_dir, dataset, record_key, at_ms } => {
            let api = NodeApi::open(&node_dir.path)?;
            let lookup = crate::api::RecordLookup { dataset, key: record_key, at_ms };
            let answer: RecordAnswer = api.send("POST", "/v1/records/show", &lookup)?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Why a file cannot be imported at all (as opposed to rows refused by line).
#[derive(Debug, thiserror::Error)]
pub enum ImportFileError {
    /// `--encoding` names no encoding this tool knows.
    #[error("unknown encoding {0:?}: use utf-8, gbk or gb18030")]
    EncodingUnknown(String),
    /// The bytes are not UTF-8 and no encoding was given.
    #[error(
        "{path} is not UTF-8 (first bad byte on line {line}); a file saved by Excel on Chinese \
         Windows is usually GBK: add --encoding gbk"
    )]
    NotUtf8 {
        /// The file.
        path: String,
        /// The line of the first byte that is not UTF-8.
        line: u64,
    },
    /// The bytes are not valid in the encoding given.
    #[error("{path} is not valid {encoding} (first bad byte on line {line})")]
    Malformed {
        /// The file.
        path: String,
        /// The encoding.
        encoding: String,
        /// The line of the first bad byte.
        line: u64,
    },
    /// The file holds no rows.
    #[error("{0} holds no rows: nothing to import")]
    Empty(String),
    /// A column the dataset declares is not in the CSV header.
    #[error("line 1: the header lacks the declared column {0:?} (give the column, empty for no value)")]
    ColumnMissing(String),
    /// A CSV header column the dataset does not declare.
    #[error("line 1: the header names {0:?}, which the dataset does not declare")]
    ColumnUnknown(String),
    /// The extension is neither .csv nor .jsonl.
    #[error("cannot import .{0} files: use .csv or .jsonl")]
    FormatUnknown(String),
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CSV header cannot be parsed.
    #[error("line 1: {0}")]
    Header(String),
}

/// The largest file `records import` reads, in bytes.
const IMPORT_FILE_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let ImportArgs { node_dir, dataset: dataset_id, batch, partial, encoding, file } = args;
    let api = NodeApi::open(&node_dir.path)?;
    // A linearizable read first: the local catalog then includes every
    // dataset published before this command started.
    let _: serde_json::Value = api.get("/v1/read-index")?;
    let datasets: Vec<Dataset> = api.get("/v1/datasets")?;
    let dataset = datasets
        .into_iter()
        .find(|d| d.id == dataset_id)
        .with_context(|| format!("no dataset {dataset_id} in the catalog"))?;
    let text = read_text(&file, encoding.as_deref())?;
    let (rows, mut failures) = read_rows(&dataset, &file, &text)?;
    let batch = batch.unwrap_or_else(|| format!("import-{}", now_unix_millis()));
    let path = format!("/v1/records/import?dataset={}", encode(&dataset_id));
    let requests = |dry_run: bool| import_requests(&rows, &batch, dry_run, partial);
    // Atomic by default: every row is checked by the node first, and
    // nothing is written if any is refused.
    // More than one request (many rows, wide rows, or lines that are not
    // consecutive) is checked whole first, so nothing is half-written.
    let many = requests(true).len() > 1;
    if !partial && (many || !failures.is_empty()) {
        for request in requests(true) {
            let answer: ImportResponse = api.send("POST", &path, &request)?;
            failures.extend(answer.failures);
        }
        if !failures.is_empty() {
            report_failures(&mut failures);
            anyhow::bail!(
                "nothing written: {} rows were refused (fix them, or write the good rows with --partial)",
                failures.len()
            );
        }
    }
    let progress = indicatif::ProgressBar::new(rows.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut written, mut unchanged, mut superseded, mut conflicts) = (0, 0, 0, 0);
    for request in requests(false) {
        let count = request.rows.len() as u64;
        let answer: ImportResponse = api.send("POST", &path, &request)?;
        written += answer.written;
        unchanged += answer.unchanged;
        superseded += answer.corrections_superseded;
        conflicts += answer.corrections_in_conflict;
        let refused = !answer.failures.is_empty();
        failures.extend(answer.failures);
        progress.inc(count);
        if refused && !partial {
            break;
        }
    }
    progress.finish_and_clear();
    report_failures(&mut failures);
    println!(
        "{written} rows written to {dataset_id} (batch {batch}), {unchanged} unchanged, {} refused; \
         corrections awaiting review: {superseded} superseded by this import, {conflicts} now in conflict",
        failures.len()
    );
    if !partial && !failures.is_empty() {
        if written == 0 {
            anyhow::bail!(
                "nothing written: {} rows were refused (fix them, or write the good rows with --partial)",
                failures.len()
            );
        }
        // Only if the node refused a row its own check passed (the schema
        // changed meanwhile): the requests before it were written; running
        // the import again writes only what is still missing.
        anyhow::bail!("{} rows were refused after {written} rows were written", failures.len());
    }
    Ok(())
}

fn report_failures(failures: &mut [RowFailure]) {
    failures.sort_by_key(|failure| failure.line);
    for failure in failures.iter() {
        eprintln!("line {}: {}", failure.line, failure.error);
    }
}

/// The file as text: UTF-8 (a byte-order mark is dropped) unless
/// `encoding` names another, e.g. `gbk` for Excel on Chinese Windows.
fn read_text(file: &Path, encoding: Option<&str>) -> Result<String, ImportFileError> {
    let path = file.display().to_string();
    let read_error = |source| ImportFileError::Read { path: path.clone(), source };
    let length = std::fs::metadata(file).map_err(read_error)?.len();
    if length > IMPORT_FILE_BYTES_MAX {
        return Err(read_error(std::io::Error::other(format!(
            "{length} bytes, over {IMPORT_FILE_BYTES_MAX}"
        ))));
    }
    let bytes = std::fs::read(file).map_err(read_error)?;
    decode_text(&bytes, encoding, &path)
}

/// `bytes` as text in `encoding` (UTF-8 when `None`).
fn decode_text(bytes: &[u8], encoding: Option<&str>, path: &str) -> Result<String, ImportFileError> {
    let line_of = |offset: usize| bytes[..offset].iter().filter(|byte| **byte == b'\n').count() as u64 + 1;
    let text = match encoding {
        None => std::str::from_utf8(bytes)
            .map_err(|error| ImportFileError::NotUtf8 {
                path: path.to_string(),
                line: line_of(error.valid_up_to()),
            })?
            .to_string(),
        Some(label) => {
            let found = encoding_rs::Encoding::for_label(label.trim().as_bytes())
                .ok_or_else(|| ImportFileError::EncodingUnknown(label.to_string()))?;
            let (text, had_errors) = found.decode_without_bom_handling(bytes);
            if had_errors {
                // The first replacement character's line: count the lines before it.
                let line = text.find('\u{FFFD}').map_or(1, |at| text[..at].matches('\n').count() as u64 + 1);
                return Err(ImportFileError::Malformed {
                    path: path.to_string(),
                    encoding: found.name().to_string(),
                    line,
                });
            }
            text.into_owned()
        }
    };
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

/// The import requests for `rows`: bounded in rows and bytes, each a run
/// of consecutive lines (unparsable lines are already out, so lines need
/// not be contiguous).
fn import_requests(rows: &[(u64, Row)], batch: &str, dry_run: bool, partial: bool) -> Vec<ImportRequest> {
    let row_bytes = |(_, row): &(u64, Row)| serde_json::to_vec(row).map_or(usize::MAX, |json| json.len());
    let mut requests = Vec::new();
    for chunk in crate::bounded_chunks::bounded_chunks(
        rows,
        IMPORT_ROWS_PER_CHUNK,
        IMPORT_REQUEST_ROWS_BYTES_MAX,
        row_bytes,
    ) {
        for run in chunk.chunk_by(|a, b| b.0 == a.0 + 1) {
            requests.push(ImportRequest {
                batch: batch.to_string(),
                first_line: run[0].0,
                rows: run.iter().map(|(_, row)| row.clone()).collect(),
                dry_run,
                partial,
            });
        }
    }
    requests
}

/// Reads `.csv` or `.jsonl` text into rows with their line numbers. A line
/// that does not parse, a row without a declared field and a key that
/// repeats an earlier row's are failures already; a file-level problem (no
/// rows, a header without a declared column) is an error.
fn read_rows(dataset: &Dataset, file: &Path, text: &str) -> Result<ParsedRows, ImportFileError> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ImportFileError::Empty(file.display().to_string()));
    }
    match extension {
        "csv" => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers =
                reader.headers().map_err(|error| ImportFileError::Header(error.to_string()))?.clone();
            if let Some(unknown) = headers.iter().find(|name| dataset.field(name).is_none()) {
                return Err(ImportFileError::ColumnUnknown(unknown.to_string()));
            }
            if let Some(missing) =
                dataset.fields.iter().find(|field| !headers.iter().any(|name| name == field.name))
            {
                return Err(ImportFileError::ColumnMissing(missing.name.clone()));
            }
            let mut record = csv::StringRecord::new();
            loop {
                let line = reader.position().line();
                match reader.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => rows.push((
                        record.position().map_or(line, |p| p.line()),
                        csv_row(dataset, &headers, &record),
                    )),
                    Err(error) => failures.push(RowFailure { line, error: error.to_string() }),
                }
            }
        }
        "jsonl" | "ndjson" => {
            for (index, text) in text.lines().enumerate() {
                let line = index as u64 + 1;
                if text.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Row>(text) {
                    Ok(row) => rows.push((line, row)),
                    Err(error) => failures.push(RowFailure {
                        line,
                        error: format!("not a JSON object of field values: {error}"),
                    }),
                }
            }
        }
        other => return Err(ImportFileError::FormatUnknown(other.to_string())),
    }
    if rows.is_empty() && failures.is_empty() {
        return Err(ImportFileError::Empty(file.display().to_string()));
    }
    // Every declared field in every row, and each key once in the file.
    let mut first_line_of_key: BTreeMap<String, u64> = BTreeMap::new();
    rows.retain(|(line, row)| {
        if let Some(missing) = dataset.fields.iter().find(|field| !row.contains_key(&field.name)) {
            failures.push(RowFailure {
                line: *line,
                error: format!(
                    "the declared field {:?} is missing (give it, null for no value)",
                    missing.name
                ),
            });
            return false;
        }
        if let Some(FieldValue::Text(key)) = row.get(&dataset.subject_key_field) {
            if let Some(first) = first_line_of_key.get(key) {
                failures.push(RowFailure {
                    line: *line,
                    error: format!(
                        "the same {} as line {first}: a key once per file",
                        dataset.subject_key_field
                    ),
                });
                return false;
            }
            first_line_of_key.insert(key.clone(), *line);
        }
        true
    });
    Ok((rows, failures))
}

/// A CSV record as typed values: the schema says how to read each column;
/// a value that does not read stays text, for the node to refuse by line.
fn csv_row(dataset: &Dataset, headers: &csv::StringRecord, record: &csv::StringRecord) -> Row {
    headers
        .iter()
        .zip(record.iter())
        .map(|(name, text)| {
            let value = match (dataset.field(name).map(|f| f.field_type), text) {
                (_, "") => FieldValue::Null,
                (Some(FieldType::Integer), text) => {
                    text.parse().map(FieldValue::Integer).unwrap_or(FieldValue::Text(text.into()))
                }
                (Some(FieldType::Boolean), "true") => FieldValue::Boolean(true),
                (Some(FieldType::Boolean), "false") => FieldValue::Boolean(false),
                (_, text) => FieldValue::Text(text.into()),
            };
            (name.to_string(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_utf8_or_the_encoding_named_and_bad_bytes_say_where() {
        let gbk = [b'a', b'\n', 0xbe, 0xb2, 0xb0, 0xb2]; // "a\n静安"
        assert_eq!(decode_text(&gbk, Some("gbk"), "f").unwrap(), "a\n静安");
        assert!(matches!(decode_text(&gbk, None, "f"), Err(ImportFileError::NotUtf8 { line: 2, .. })));
        let hint = decode_text(&gbk, None, "f").unwrap_err().to_string();
        assert!(hint.contains("--encoding gbk"), "{hint}");
        assert!(matches!(
            decode_text(b"x", Some("klingon"), "f"),
            Err(ImportFileError::EncodingUnknown(name)) if name == "klingon"
        ));
        assert_eq!(decode_text("\u{feff}id\n".as_bytes(), None, "f").unwrap(), "id\n", "a BOM is dropped");
        assert!(matches!(
            decode_text(&[b'o', b'k', b'\n', 0x81, b'\n'], Some("gbk"), "f"),
            Err(ImportFileError::Malformed { line: 2, .. })
        ));
    }
}
