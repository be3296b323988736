//! `civmesh records ...` and `civmesh policy ...`: the operator's commands
//! for a department's own records and for policy commands, through the
//! running node's API.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::{Dataset, FieldType, FieldValue};
use civmesh_policy::Command;

use crate::api::{ImportRequest, ImportResponse, RecordAnswer, RowFailure};
use crate::cli::{CatalogCommand, PolicyCommand, RecordsCommand};
use crate::cluster_commands::NodeApi;
use crate::config::NodeConfig;

/// Rows sent per import request.
const IMPORT_ROWS_PER_CHUNK: usize = 1_000;
/// The largest command file read, in bytes.
const COMMAND_FILE_BYTES_MAX: u64 = 1024 * 1024;

type Row = BTreeMap<String, FieldValue>;
/// Rows that parsed, by source line, and lines that did not.
type ParsedRows = (Vec<(u64, Row)>, Vec<RowFailure>);

pub(crate) fn records(command: RecordsCommand) -> anyhow::Result<()> {
    match command {
        RecordsCommand::Import { node_dir, dataset, batch, file } => {
            import(&node_dir, &dataset, batch, &file)
        }
        RecordsCommand::Show { node_dir, dataset, key, at_ms } => {
            let api = NodeApi::open(&node_dir)?;
            let mut path = format!("/v1/records?dataset={}&key={}", encode(&dataset), encode(&key));
            if let Some(at_ms) = at_ms {
                path.push_str(&format!("&at_ms={at_ms}"));
            }
            let answer: RecordAnswer = api.get(&path)?;
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

fn import(node_dir: &Path, dataset_id: &str, batch: Option<String>, file: &Path) -> anyhow::Result<()> {
    let api = NodeApi::open(node_dir)?;
    // A linearizable read first: the local catalog then includes every
    // dataset published before this command started.
    let _: serde_json::Value = api.get("/v1/read-index")?;
    let datasets: Vec<Dataset> = api.get("/v1/datasets")?;
    let dataset = datasets
        .into_iter()
        .find(|d| d.id == dataset_id)
        .with_context(|| format!("no dataset {dataset_id} in the catalog"))?;
    let (rows, mut failures) = read_rows(&dataset, file)?;
    let batch = batch.unwrap_or_else(|| format!("import-{}", now_unix_millis()));
    let progress = indicatif::ProgressBar::new(rows.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut written = 0;
    for chunk in rows.chunks(IMPORT_ROWS_PER_CHUNK) {
        // Lines need not be contiguous (unparsable lines are already out),
        // so send runs of consecutive lines.
        for run in chunk.chunk_by(|a, b| b.0 == a.0 + 1) {
            let request = ImportRequest {
                batch: batch.clone(),
                first_line: run[0].0,
                rows: run.iter().map(|(_, row)| row.clone()).collect(),
            };
            let answer: ImportResponse =
                api.send("POST", &format!("/v1/records/import?dataset={}", encode(dataset_id)), &request)?;
            written += answer.written;
            failures.extend(answer.failures);
            progress.inc(run.len() as u64);
        }
    }
    progress.finish_and_clear();
    failures.sort_by_key(|failure| failure.line);
    for failure in &failures {
        eprintln!("line {}: {}", failure.line, failure.error);
    }
    println!("{written} rows written to {dataset_id} (batch {batch}); {} rows refused", failures.len());
    anyhow::ensure!(failures.is_empty(), "{} rows were refused and not written", failures.len());
    Ok(())
}

/// Reads `.csv` or `.jsonl` into rows with their line numbers; lines that
/// do not parse at all are failures already.
fn read_rows(dataset: &Dataset, file: &Path) -> anyhow::Result<ParsedRows> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or_default();
    match extension {
        "csv" => {
            let mut reader =
                csv::Reader::from_path(file).with_context(|| format!("opening {}", file.display()))?;
            let headers = reader.headers()?.clone();
            for (index, record) in reader.records().enumerate() {
                let line = index as u64 + 2;
                match record {
                    Ok(record) => rows.push((line, csv_row(dataset, &headers, &record))),
                    Err(error) => failures.push(RowFailure { line, error: error.to_string() }),
                }
            }
        }
        "jsonl" | "ndjson" => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
            );
            for (index, text) in reader.lines().enumerate() {
                let line = index as u64 + 1;
                let text = text?;
                if text.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Row>(&text) {
                    Ok(row) => rows.push((line, row)),
                    Err(error) => failures.push(RowFailure {
                        line,
                        error: format!("not a JSON object of field values: {error}"),
                    }),
                }
            }
        }
        other => anyhow::bail!("cannot import .{other} files: use .csv or .jsonl"),
    }
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

pub(crate) fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Submit { node_dir, file } => {
            anyhow::ensure!(
                std::fs::metadata(&file)?.len() <= COMMAND_FILE_BYTES_MAX,
                "{} is too large",
                file.display()
            );
            let command: Command = serde_json::from_slice(&std::fs::read(&file)?)
                .with_context(|| format!("{} is not a policy command", file.display()))?;
            let config = NodeConfig::load(&node_dir)?;
            let key = NodeKey::load(&NodeConfig::resolve(&node_dir, &config.node.key_file))?;
            let envelope = SignedEnvelope::sign(&key, &command, now_unix_millis())?;
            let response = NodeApi::open(&node_dir)?.submit(&[envelope])?;
            println!("{}", serde_json::to_string_pretty(&response.outcomes)?);
            anyhow::ensure!(
                response.outcomes.iter().all(Result::is_ok),
                "the policy log rejected the command"
            );
            Ok(())
        }
    }
}

pub(crate) fn catalog(command: CatalogCommand) -> anyhow::Result<()> {
    match command {
        CatalogCommand::Match { node_dir, expiry_days } => {
            let report: serde_json::Value =
                NodeApi::open(&node_dir)?.get(&format!("/v1/policy/match?expiry_days={expiry_days}"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

pub(crate) fn query(spec: crate::query::QuerySpec, node_dir: &Path) -> anyhow::Result<()> {
    let answer: serde_json::Value = NodeApi::open(node_dir)?.send("POST", "/v1/query", &spec)?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
