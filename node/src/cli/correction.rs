//! `civmesh correction ...`: the street operator's and the owner's commands
//! for corrections, through the running node's API.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey, OrgId, SignedEnvelope};
use civmesh_policy::correction::AutoAcceptRule;
use civmesh_policy::model::FieldValue;
use civmesh_policy::Command;
use clap::{Args, Subcommand, ValueEnum};

use crate::cli::args::NodeDir;
use crate::cli::print_json;
use crate::client::NodeApi;
use crate::config::NodeConfig;
use crate::corrections::attachments::{content_type, extension, AttachmentError, AttachmentLimits, Uploaded};
use crate::corrections::http::{Acceptance, Rejection, Submitted};
use crate::corrections::{CorrectionError, CorrectionSpec, CorrectionState, CorrectionView, EntryStatus};

/// `civmesh correction ...`, through the running node in `--node-dir`.
#[derive(Debug, Subcommand)]
pub enum CorrectionCommand {
    /// Sign a correction with this node's key and send it to the dataset's
    /// owner (kept in the outbox and retried until delivered); prints its id.
    Submit(SubmitArgs),
    /// List this node's corrections (inbox and outbox), newest first.
    List {
        /// The node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// Only this status: awaiting_review, superseded_by_import, accepted,
        /// applied, rejected, conflict, submitted, failed, or a step of
        /// progress such as awaiting_outcome.
        #[arg(long, value_name = "STATUS", value_parser = parse_status)]
        status: Option<StatusFilter>,
    },
    /// Show one correction; at the owner, beside the record's base and
    /// current versions.
    Show {
        /// The node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The correction id (hex).
        #[arg(value_name = "CORRECTION_ID")]
        id: String,
        /// Save the attachments this node holds into this directory, as
        /// ID-INDEX.EXT (the extension from the bytes' content type).
        #[arg(long, value_name = "ATTACHMENTS_DIR")]
        save_attachments: Option<PathBuf>,
    },
    /// Accept a correction awaiting review or superseded by an import (at
    /// the owner); the operator is recorded in the signed event.
    Accept {
        /// The owner node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The correction id (hex).
        #[arg(value_name = "CORRECTION_ID")]
        id: String,
        /// The reviewer's name.
        #[arg(long, value_name = "OPERATOR")]
        operator: String,
    },
    /// Reject a correction awaiting review, with a reason (at the owner).
    Reject {
        /// The owner node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The correction id (hex).
        #[arg(value_name = "CORRECTION_ID")]
        id: String,
        /// Why, for the submitter.
        #[arg(long, value_name = "REASON")]
        reason: String,
        /// The reviewer's name.
        #[arg(long, value_name = "OPERATOR")]
        operator: String,
    },
    /// Per owner and dataset: corrections by stage, median and p90
    /// turnaround, acceptance rate; computed from the policy log.
    Stats {
        /// Any node.
        #[command(flatten)]
        node_dir: NodeDir,
    },
    /// Declare (or with --remove, withdraw) an auto-accept rule: corrections
    /// from SUBMITTER to DATASET changing only these fields need no review.
    AutoAccept(AutoAcceptArgs),
}

/// Arguments of `civmesh correction submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The submitting node.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// The record key.
    #[arg(long, value_name = "RECORD_KEY")]
    pub record_key: String,
    /// The record version this correction is based on.
    #[arg(long, value_name = "BASE_VERSION")]
    pub base_version: u64,
    /// A change, `FIELD=VALUE` (repeatable). VALUE is read as JSON when
    /// it parses (12, true, null, "text"), otherwise as text.
    #[arg(long = "set", value_name = "FIELD=VALUE", required = true)]
    pub changes: Vec<String>,
    /// Why the record is wrong.
    #[arg(long, value_name = "REASON")]
    pub reason: String,
    /// What was seen, in words.
    #[arg(long, value_name = "EVIDENCE", default_value = "")]
    pub evidence: String,
    /// A photo or PDF as evidence (repeatable; at most `attachments_max`
    /// files of `attachment_bytes_max` bytes each, from `[corrections]`
    /// in civmesh.toml). Its SHA-256 is signed; the bytes follow the
    /// correction to the owner.
    #[arg(long = "attachment", value_name = "ATTACHMENT_FILE")]
    pub attachments: Vec<PathBuf>,
    /// The operator's name.
    #[arg(long, value_name = "OPERATOR")]
    pub operator: String,
    /// Wait this long for the owner's outcome, and print it.
    #[arg(long, value_name = "WAIT_MS", default_value_t = 0)]
    pub wait_ms: u64,
}

/// Arguments of `civmesh correction auto-accept`.
#[derive(Debug, Args)]
pub struct AutoAcceptArgs {
    /// The owner node (its key signs the rule).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// The submitting organisation, e.g. street/jingansi.
    #[arg(long, value_name = "SUBMITTER")]
    pub submitter: String,
    /// A field that may change without review (repeatable).
    #[arg(long = "field", value_name = "FIELD")]
    pub fields: Vec<String>,
    /// Withdraw the rule instead.
    #[arg(long)]
    pub remove: bool,
}

/// A status `correction list` filters by: a correction's state, or a step
/// of its progress at the submitter or the owner (the names the node's
/// `?status=` filter takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum StatusFilter {
    /// At the submitter, before the owner's decision.
    Submitted,
    /// At the owner, waiting for a reviewer.
    AwaitingReview,
    /// Waiting for a reviewer; an import left the corrected fields alone.
    SupersededByImport,
    /// Accepted; being applied.
    Accepted,
    /// Applied as a new version.
    Applied,
    /// Rejected.
    Rejected,
    /// The corrected fields changed after the base version.
    Conflict,
    /// Refused for good.
    Failed,
    /// Progress at the submitter: sending attachments.
    SendingAttachments,
    /// Progress at the submitter: waiting to be delivered.
    AwaitingDelivery,
    /// Progress at the submitter: delivered, waiting for the outcome.
    AwaitingOutcome,
    /// Progress at the submitter: the outcome arrived.
    OutcomeReceived,
    /// Progress at the owner: received.
    Received,
    /// Progress at the owner: decided.
    Decided,
    /// Progress at the owner: the outcome is ready to send.
    OutcomeReady,
    /// Progress at the owner: the outcome was delivered.
    Closed,
}

impl StatusFilter {
    /// The name the node's filter takes.
    fn name(self) -> String {
        self.to_possible_value().map(|value| value.get_name().to_string()).unwrap_or_default()
    }
}

/// A status name, checked as the node checks it (the error names the
/// known states).
fn parse_status(text: &str) -> Result<StatusFilter, CorrectionError> {
    crate::corrections::check_status_filter(text)?;
    StatusFilter::from_str(text, false).map_err(|_| CorrectionError::StatusUnknown(text.to_string()))
}

/// How often `submit --wait-ms` asks for the outcome.
const OUTCOME_POLL_MS: u64 = 50;
/// The exit status of `submit --wait-ms` when the wait ends before the
/// outcome: the correction was sent and stays in the outbox (EX_TEMPFAIL).
pub const WAIT_EXPIRED_EXIT_CODE: i32 = 75;

pub(super) fn execute(command: CorrectionCommand) -> anyhow::Result<()> {
    match command {
        CorrectionCommand::Submit(args) => submit(args),
        CorrectionCommand::List { node_dir, status } => list(&node_dir.path, status),
        CorrectionCommand::Show { node_dir, id, save_attachments } => {
            show(&node_dir.path, &id, save_attachments.as_deref())
        }
        CorrectionCommand::Accept { node_dir, id, operator } => accept(&node_dir.path, &id, operator),
        CorrectionCommand::Reject { node_dir, id, reason, operator } => {
            reject(&node_dir.path, &id, reason, operator)
        }
        CorrectionCommand::Stats { node_dir } => {
            print_json(&NodeApi::open(&node_dir.path)?.get::<serde_json::Value>("/v1/corrections/stats")?)
        }
        CorrectionCommand::AutoAccept(args) => auto_accept(args),
    }
}

fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let node_dir = &args.node_dir.path;
    let changes = args.changes.iter().map(|change| parse_change(change)).collect::<anyhow::Result<_>>()?;
    let attachment_sha256 = upload_attachments(node_dir, &args.attachments)?;
    let spec = CorrectionSpec {
        dataset: args.dataset,
        record_key: args.record_key,
        base_version: args.base_version,
        changes,
        reason: args.reason,
        evidence_text: args.evidence,
        attachment_sha256,
        operator: args.operator,
    };
    submit_and_wait(node_dir, &spec, args.wait_ms)
}

fn list(node_dir: &Path, status: Option<StatusFilter>) -> anyhow::Result<()> {
    let path = match status {
        Some(status) => format!("/v1/corrections?status={}", status.name()),
        None => "/v1/corrections".to_string(),
    };
    print_json(&NodeApi::open(node_dir)?.get::<serde_json::Value>(&path)?)
}

fn show(node_dir: &Path, id: &str, save_attachments: Option<&Path>) -> anyhow::Result<()> {
    let api = NodeApi::open(node_dir)?;
    let view: CorrectionView = api.get(&format!("/v1/corrections/{id}"))?;
    print_json(&view)?;
    if let Some(dir) = save_attachments {
        save_attachments_to(&api, &view, dir, node_dir)?;
    }
    Ok(())
}

fn accept(node_dir: &Path, id: &str, operator: String) -> anyhow::Result<()> {
    let view: CorrectionView = NodeApi::open(node_dir)?.send(
        "POST",
        &format!("/v1/corrections/{id}/accept"),
        &Acceptance { operator: Some(operator) },
    )?;
    print_json(&view)?;
    decided(&view, "accepted")
}

fn reject(node_dir: &Path, id: &str, reason: String, operator: String) -> anyhow::Result<()> {
    let view: CorrectionView = NodeApi::open(node_dir)?.send(
        "POST",
        &format!("/v1/corrections/{id}/reject"),
        &Rejection { reason, operator: Some(operator) },
    )?;
    print_json(&view)?;
    decided(&view, "rejected")
}

fn auto_accept(args: AutoAcceptArgs) -> anyhow::Result<()> {
    let AutoAcceptArgs { node_dir: NodeDir { path: node_dir }, dataset, submitter, fields, remove } = args;
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

fn submit_and_wait(node_dir: &Path, spec: &CorrectionSpec, wait_ms: u64) -> anyhow::Result<()> {
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
pub(super) fn parse_change(change: &str) -> anyhow::Result<(String, FieldValue)> {
    let (field, value) = change.split_once('=').with_context(|| format!("{change:?} is not FIELD=VALUE"))?;
    anyhow::ensure!(!field.trim().is_empty(), "{change:?} names no field");
    let value =
        serde_json::from_str::<FieldValue>(value).unwrap_or_else(|_| FieldValue::Text(value.to_string()));
    Ok((field.trim().to_string(), value))
}

/// Checks the files against this node's bounds (before anything is sent),
/// uploads each to the node and returns their SHA-256 digests, hex.
fn upload_attachments(node_dir: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
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
    fn status_words_are_the_ones_the_node_takes() {
        use std::collections::BTreeSet;
        let words: BTreeSet<String> =
            StatusFilter::value_variants().iter().map(|status| status.name()).collect();
        let node: BTreeSet<String> = CorrectionState::ALL
            .iter()
            .map(|state| state.name())
            .chain(crate::corrections::ENTRY_STATUS_NAMES)
            .map(str::to_string)
            .collect();
        assert_eq!(words, node);
        for word in &words {
            assert_eq!(parse_status(word).unwrap().name(), *word);
        }
        let error = parse_status("awaiting_reveiw").unwrap_err().to_string();
        assert!(error.contains("unknown status \"awaiting_reveiw\""), "{error}");
    }
}
