//! `civmesh correction ...`: the street operator's and the owner's commands
//! for corrections, through the running node's API.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey, OrgId, SignedEnvelope};
use civmesh_policy::correction::AutoAcceptRule;
use civmesh_policy::model::FieldValue;
use civmesh_policy::Command;

use civmesh_policy::evaluation::{Bucket, Evaluation, EvaluationQuery};

use crate::cli::{CorrectionCommand, EvaluationFormat};
use crate::client::NodeApi;
use crate::config::NodeConfig;
use crate::corrections::attachments::{content_type, extension, AttachmentError, AttachmentLimits, Uploaded};
use crate::corrections::http::{Acceptance, Rejection, Submitted};
use crate::corrections::{CorrectionSpec, CorrectionState, CorrectionView, EntryStatus};

/// How often `submit --wait-ms` asks for the outcome.
const OUTCOME_POLL_MS: u64 = 50;
/// The exit status of `submit --wait-ms` when the wait ends before the
/// outcome: the correction was sent and stays in the outbox (EX_TEMPFAIL).
pub const WAIT_EXPIRED_EXIT_CODE: i32 = 75;

pub(crate) fn correction(command: CorrectionCommand) -> anyhow::Result<()> {
    match command {
        CorrectionCommand::Submit {
            node_dir,
            dataset,
            key,
            base_version,
            changes,
            reason,
            evidence,
            attachments,
            operator,
            wait_ms,
        } => {
            let changes = changes.iter().map(|change| parse_change(change)).collect::<anyhow::Result<_>>()?;
            let attachment_sha256 = upload_attachments(&node_dir, &attachments)?;
            let spec = CorrectionSpec {
                dataset,
                record_key: key,
                base_version,
                changes,
                reason,
                evidence_text: evidence,
                attachment_sha256,
                operator,
            };
            submit(&node_dir, &spec, wait_ms)
        }
        CorrectionCommand::List { node_dir, status } => {
            let path = match status {
                Some(status) => {
                    crate::corrections::check_status_filter(&status)?;
                    format!("/v1/corrections?status={status}")
                }
                None => "/v1/corrections".to_string(),
            };
            print_json(&NodeApi::open(&node_dir)?.get::<serde_json::Value>(&path)?)
        }
        CorrectionCommand::Show { node_dir, id, save_attachments } => {
            let api = NodeApi::open(&node_dir)?;
            let view: CorrectionView = api.get(&format!("/v1/corrections/{id}"))?;
            print_json(&view)?;
            if let Some(dir) = save_attachments {
                save_attachments_to(&api, &view, &dir, &node_dir)?;
            }
            Ok(())
        }
        CorrectionCommand::Accept { node_dir, id, operator } => {
            let view: CorrectionView = NodeApi::open(&node_dir)?.send(
                "POST",
                &format!("/v1/corrections/{id}/accept"),
                &Acceptance { operator: Some(operator) },
            )?;
            print_json(&view)?;
            decided(&view, "accepted")
        }
        CorrectionCommand::Reject { node_dir, id, reason, operator } => {
            let view: CorrectionView = NodeApi::open(&node_dir)?.send(
                "POST",
                &format!("/v1/corrections/{id}/reject"),
                &Rejection { reason, operator: Some(operator) },
            )?;
            print_json(&view)?;
            decided(&view, "rejected")
        }
        CorrectionCommand::Stats { node_dir } => {
            print_json(&NodeApi::open(&node_dir)?.get::<serde_json::Value>("/v1/corrections/stats")?)
        }
        CorrectionCommand::AutoAccept { node_dir, dataset, submitter, fields, remove } => {
            let submitter = OrgId::new(&submitter).with_context(|| format!("submitter {submitter}"))?;
            let command = if remove {
                Command::RemoveAutoAcceptRule { dataset, submitter }
            } else {
                anyhow::ensure!(!fields.is_empty(), "name at least one --field");
                Command::SetAutoAcceptRule(AutoAcceptRule {
                    dataset,
                    submitter,
                    fields: fields.into_iter().collect(),
                })
            };
            let config = NodeConfig::load(&node_dir)?;
            let key = NodeKey::load(&NodeConfig::resolve(&node_dir, &config.node.key_file))?;
            let envelope = SignedEnvelope::sign(&key, &command, now_unix_millis())?;
            let response = NodeApi::open(&node_dir)?.submit(&[envelope])?;
            print_json(&response.outcomes)?;
            anyhow::ensure!(response.outcomes.iter().all(Result::is_ok), "the policy log rejected the rule");
            Ok(())
        }
    }
}

/// After a review: an error unless the correction was decided as asked (an
/// accept that ends in a conflict is not a success).
fn decided(view: &CorrectionView, asked: &str) -> anyhow::Result<()> {
    let wanted = if asked == "accepted" { CorrectionState::Applied } else { CorrectionState::Rejected };
    match view.state {
        state if state == wanted => Ok(()),
        CorrectionState::Accepted if asked == "accepted" => {
            anyhow::bail!("accepted; {} is still being applied: check with `correction show`", view.id)
        }
        other => anyhow::bail!("correction {} was not {asked}: it is {}", view.id, other.name()),
    }
}

fn submit(node_dir: &Path, spec: &CorrectionSpec, wait_ms: u64) -> anyhow::Result<()> {
    let api = NodeApi::open(node_dir)?;
    let submitted: Submitted = api.send("POST", "/v1/corrections", spec)?;
    if wait_ms == 0 {
        return print_json(&submitted);
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let view: CorrectionView = api.get(&format!("/v1/corrections/{}", submitted.correction))?;
        if view.outcome.is_some() {
            return print_json(&view);
        }
        if let EntryStatus::Failed { reason } = &view.status {
            // Refused for good (the policy log would not take it): waiting
            // longer changes nothing.
            print_json(&view)?;
            anyhow::bail!("correction {} was refused: {reason}", view.id);
        }
        if Instant::now() >= deadline {
            // Sent, not lost: print the id to check later, and exit with a
            // status of its own so a script does not submit it again.
            print_json(&submitted)?;
            eprintln!(
                "no outcome within {wait_ms} ms; correction {} stays in the outbox (status {}{}). \
                 Check later: civmesh correction show --node-dir {} {}",
                submitted.correction,
                crate::corrections::status_name(&view.status),
                if view.last_error.is_empty() {
                    String::new()
                } else {
                    format!(", last error: {}", view.last_error)
                },
                node_dir.display(),
                submitted.correction
            );
            std::io::Write::flush(&mut std::io::stdout())?;
            std::process::exit(WAIT_EXPIRED_EXIT_CODE);
        }
        std::thread::sleep(Duration::from_millis(OUTCOME_POLL_MS));
    }
}

/// `FIELD=VALUE`, VALUE as JSON when it parses, otherwise as text.
fn parse_change(change: &str) -> anyhow::Result<(String, FieldValue)> {
    let (field, value) = change.split_once('=').with_context(|| format!("{change:?} is not FIELD=VALUE"))?;
    anyhow::ensure!(!field.trim().is_empty(), "{change:?} names no field");
    let value =
        serde_json::from_str::<FieldValue>(value).unwrap_or_else(|_| FieldValue::Text(value.to_string()));
    Ok((field.trim().to_string(), value))
}

/// Checks the files against this node's bounds (before anything is sent),
/// uploads each to the node and returns their SHA-256 digests, hex.
fn upload_attachments(node_dir: &Path, files: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let limits: AttachmentLimits = NodeConfig::load(node_dir)?.corrections.into();
    if files.len() > limits.attachments_max {
        return Err(AttachmentError::TooMany { count: files.len(), max: limits.attachments_max }.into());
    }
    for file in files {
        let bytes = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
        if bytes > limits.attachment_bytes_max {
            let name = file.display().to_string();
            return Err(AttachmentError::TooLarge { name, bytes, max: limits.attachment_bytes_max }.into());
        }
    }
    let api = NodeApi::open(node_dir)?;
    let mut digests = Vec::with_capacity(files.len());
    for file in files {
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|mut opened| opened.read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", file.display()))?;
        let uploaded: Uploaded = api.send_bytes("/v1/corrections/attachments", &bytes)?;
        digests.push(uploaded.sha256);
    }
    Ok(digests)
}

/// Writes each attachment this node holds into `dir`.
fn save_attachments_to(
    api: &NodeApi,
    view: &CorrectionView,
    dir: &Path,
    node_dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let limits: AttachmentLimits = NodeConfig::load(node_dir)?.corrections.into();
    for attachment in view.attachments.iter().filter(|attachment| attachment.held) {
        let bytes = api.get_bytes(
            &format!("/v1/corrections/{}/attachments/{}", view.id, attachment.index),
            limits.attachment_bytes_max,
        )?;
        let path = dir.join(format!("{}-{}.{}", view.id, attachment.index, extension(content_type(&bytes))));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("attachment {} ({} bytes): {}", attachment.index, bytes.len(), path.display());
    }
    Ok(())
}

/// `civmesh evaluate`: asks the node for the evaluation and prints it.
pub(crate) fn evaluate(
    node_dir: &Path,
    from: Option<&str>,
    to: Option<&str>,
    bucket: &str,
    format: EvaluationFormat,
) -> anyhow::Result<()> {
    // Refuse a bad date or bucket here, naming it, before asking the node.
    EvaluationQuery::from_dates(from, to, Some(bucket))?;
    let mut path = format!("/v1/evaluation?bucket={bucket}");
    for (name, value) in [("from", from), ("to", to)] {
        if let Some(value) = value {
            path.push_str(&format!("&{name}={value}"));
        }
    }
    let evaluation: Evaluation = NodeApi::open(node_dir)?.get(&path)?;
    match format {
        EvaluationFormat::Json => print_json(&evaluation),
        EvaluationFormat::Table => {
            print!("{}", evaluation_table(&evaluation));
            Ok(())
        }
        EvaluationFormat::Csv => write_csv(&evaluation.departments),
        EvaluationFormat::StreetsCsv => write_csv(&evaluation.streets),
    }
}

fn write_csv<T: serde::Serialize>(rows: &[T]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()?;
    Ok(())
}

/// The evaluation as two text tables, durations in days, hours and minutes.
pub fn evaluation_table(evaluation: &Evaluation) -> String {
    let mut departments = vec![[
        "bucket",
        "owner",
        "dataset",
        "submitted",
        "applied",
        "rejected",
        "accepted",
        "p50",
        "p90",
        "auto-rejected",
        "conflicts",
        "backlog",
        "oldest",
        "demands granted",
        "grant p50",
        "waiting",
        "oldest demand",
        "record age p50",
        "record age p90",
    ]
    .map(String::from)
    .to_vec()];
    for row in &evaluation.departments {
        departments.push(vec![
            row.bucket.clone(),
            row.owner.clone(),
            row.dataset.clone(),
            row.submitted.to_string(),
            row.applied.to_string(),
            row.rejected_by_owner.to_string(),
            percent(row.acceptance_rate),
            duration(row.turnaround_ms_p50),
            duration(row.turnaround_ms_p90),
            row.automatic_rejections.to_string(),
            row.conflicts.to_string(),
            row.backlog.to_string(),
            duration(row.backlog_oldest_age_ms),
            row.demands_granted.to_string(),
            duration(row.demand_to_grant_ms_p50),
            row.demands_waiting.to_string(),
            duration(row.demands_waiting_oldest_age_ms),
            duration(row.record_age_ms_p50),
            duration(row.record_age_ms_p90),
        ]);
    }
    let mut streets =
        vec![["bucket", "street", "submitted", "applied", "accepted", "mistakes"].map(String::from).to_vec()];
    for row in &evaluation.streets {
        streets.push(vec![
            row.bucket.clone(),
            row.street.clone(),
            row.submitted.to_string(),
            row.applied.to_string(),
            percent(row.share_accepted),
            row.mistakes.to_string(),
        ]);
    }
    let bucket = match evaluation.bucket {
        Bucket::Day => "day",
        Bucket::Week => "week",
        Bucket::Month => "month",
    };
    let mut out = format!(
        "Evaluation of departments, {} to {} (by {bucket}; Asia/Shanghai)\n\n",
        evaluation.from, evaluation.to
    );
    out.push_str(&text_table(&departments));
    out.push_str("\nStreets\n\n");
    out.push_str(&text_table(&streets));
    for note in &evaluation.notes {
        out.push_str(&format!("\nNote: {note}\n"));
    }
    out
}

fn text_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter().filter_map(|row| row.get(column)).map(|cell| cell.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, &width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |rate| format!("{:.0}%", rate * 100.0))
}

/// `2d 3h`, `5h 20m`, `12m`, `40s`, `850ms`; `-` for none.
fn duration(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".to_string() };
    let (days, hours, minutes) = (ms / 86_400_000, ms / 3_600_000 % 24, ms / 60_000 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) if ms < 1000 => format!("{ms}ms"),
        (0, 0, 0) => format!("{}s", ms / 1000),
        (0, 0, minutes) => format!("{minutes}m"),
        (0, hours, minutes) => format!("{hours}h {minutes}m"),
        (days, hours, _) => format!("{days}d {hours}h"),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_json_values_or_text() {
        let cases = [
            ("employees=12", ("employees", FieldValue::Integer(12))),
            ("open=true", ("open", FieldValue::Boolean(true))),
            ("phone=null", ("phone", FieldValue::Null)),
            ("address=No. 5 Wuding Road", ("address", FieldValue::Text("No. 5 Wuding Road".into()))),
            ("code=\"0012\"", ("code", FieldValue::Text("0012".into()))),
            ("note=a=b", ("note", FieldValue::Text("a=b".into()))),
        ];
        for (input, (field, value)) in cases {
            assert_eq!(parse_change(input).unwrap(), (field.to_string(), value), "{input}");
        }
        assert!(parse_change("no-equals").is_err());
        assert!(parse_change("=5").is_err());
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let cases = [
            (None, "-"),
            (Some(850), "850ms"),
            (Some(40_000), "40s"),
            (Some(12 * 60_000), "12m"),
            (Some(5 * 3_600_000 + 20 * 60_000), "5h 20m"),
            (Some(50 * 3_600_000), "2d 2h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(ms), text, "{ms:?}");
        }
        assert_eq!(percent(Some(0.75)), "75%");
        assert_eq!(
            text_table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]]),
            "a    bb\nccc  d\n"
        );
    }
}
