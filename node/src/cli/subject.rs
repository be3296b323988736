//! `civmesh subject`: requests from the subject (PIPL Art. 44-47), through
//! the node's API. `request` at the organisation that meets the resident
//! (a street's or a department's service window) files it at the dataset's
//! owner; `list` shows the open ones; `answer` at the owner acts on one
//! (the access report, the record deleted; a correction travels through
//! the correction loop) and logs the answer. Not to be confused with
//! `civmesh audit subject`, the auditor's report from a bundle.

use std::path::PathBuf;

use anyhow::Context;
use civmesh_policy::subject_request::{SubjectRequestKind, SubjectRequestOutcome};
use clap::{Args, Subcommand, ValueEnum};

use crate::cli::args::NodeDir;
use crate::client::NodeApi;
use crate::subject_requests::{
    AnswerRequest, Answered, Filed, IntakeRequest, ResidentCorrection, SubjectRequestList, SubjectRequestView,
};

/// `civmesh subject ...`.
#[derive(Debug, Subcommand)]
pub enum SubjectCommand {
    /// Take a resident's request and file it at the dataset's owner, which
    /// logs it if it holds the record; prints its id and deadline.
    Request(RequestArgs),
    /// The open requests this organisation answers or took, with their
    /// deadlines; overdue ones are flagged.
    List {
        /// This node.
        #[command(flatten)]
        node_dir: NodeDir,
    },
    /// At the owner: answer an open request, done (after acting on it) or
    /// refused with why.
    Answer(AnswerArgs),
}

/// What the resident asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Who accessed their record (Art. 45): the owner answers with a report.
    Access,
    /// A correction of their record (Art. 46).
    Correction,
    /// Deletion of their record (Art. 47), where the law allows it.
    Deletion,
}

impl From<KindArg> for SubjectRequestKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Access => SubjectRequestKind::Access,
            KindArg::Correction => SubjectRequestKind::Correction,
            KindArg::Deletion => SubjectRequestKind::Deletion,
        }
    }
}

/// Arguments of `civmesh subject request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The intake node (its key signs the request).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// What the resident asks for.
    #[arg(long, value_name = "REQUEST_KIND", value_enum)]
    pub kind: KindArg,
    /// The dataset holding the resident's record.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// The record's key (e.g. the citizen id); sent in the request's body
    /// only.
    #[arg(long = "record-key", value_name = "RECORD_KEY")]
    pub record_key: String,
    /// Days the owner has to answer, 1 to 60 (default: the node's
    /// `[subject_requests] deadline_days`, 15 unless configured).
    #[arg(long, value_name = "DEADLINE_DAYS", value_parser = parse_deadline_days)]
    pub deadline_days: Option<u64>,
    /// For a correction: a change the resident asks for, `FIELD=VALUE`
    /// (repeatable); it enters the correction loop with the resident as
    /// its origin.
    #[arg(long = "set", value_name = "FIELD=VALUE", requires = "base_version")]
    pub changes: Vec<String>,
    /// For a correction: the record version the resident was shown.
    #[arg(long, value_name = "BASE_VERSION", requires_all = ["reason", "operator"])]
    pub base_version: Option<u64>,
    /// For a correction: what the resident says is wrong.
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
    /// For a correction: who took it at the window; the correction names
    /// the resident as its origin, taken by this person.
    #[arg(long, value_name = "OPERATOR")]
    pub operator: Option<String>,
}

/// Arguments of `civmesh subject answer`.
#[derive(Debug, Args)]
pub struct AnswerArgs {
    /// The owner node (its key signs the answer).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The request's id (hex, as `subject request` or `subject list` shows it).
    #[arg(long, value_name = "SUBJECT_REQUEST_ID")]
    pub id: String,
    /// Done: make the access report, delete the record, or record that the
    /// correction was decided.
    #[arg(long, conflicts_with = "refuse", required_unless_present = "refuse")]
    pub done: bool,
    /// Refuse it, with the legal reason (e.g. a retention duty, Art. 47).
    #[arg(long, value_name = "REFUSAL_REASON")]
    pub refuse: Option<String>,
    /// Where to write an access request's report (JSON).
    #[arg(long, value_name = "SUBJECT_REPORT_FILE")]
    pub report_out: Option<PathBuf>,
}

/// Days the owner has to answer: a whole number from 1 to 60.
fn parse_deadline_days(text: &str) -> Result<u64, String> {
    let days: u64 = text.trim().parse().map_err(|_| format!("{text:?} is not a whole number of days"))?;
    if !crate::config::DEADLINE_DAYS_RANGE.contains(&days) {
        return Err(format!("a deadline is 1 to 60 days, not {days}"));
    }
    Ok(days)
}

/// Runs one `civmesh subject` command.
pub(super) fn execute(command: SubjectCommand) -> anyhow::Result<()> {
    match command {
        SubjectCommand::Request(args) => {
            let api = NodeApi::open(&args.node_dir.path)?;
            let correction = match (args.base_version, args.reason) {
                (Some(base_version), Some(reason)) => Some(ResidentCorrection {
                    base_version,
                    changes: args
                        .changes
                        .iter()
                        .map(|change| super::correction::parse_change(change))
                        .collect::<anyhow::Result<_>>()?,
                    reason,
                }),
                _ => None,
            };
            let request = IntakeRequest {
                kind: args.kind.into(),
                dataset: args.dataset,
                record_key: args.record_key,
                deadline_days: args.deadline_days,
                correction,
                operator: args.operator,
            };
            let filed: Filed = api.send("POST", "/v1/subject-requests", &request)?;
            println!(
                "filed subject request {} at {}; answer due by {}",
                filed.id, filed.owner_org, filed.deadline
            );
            if let Some(correction) = &filed.correction {
                println!("the resident's correction {correction} is on its way to {}", filed.owner_org);
            }
            Ok(())
        }
        SubjectCommand::List { node_dir } => {
            let list: SubjectRequestList = NodeApi::open(&node_dir.path)?.get("/v1/subject-requests")?;
            print_list(&list);
            Ok(())
        }
        SubjectCommand::Answer(args) => answer(args),
    }
}

fn answer(args: AnswerArgs) -> anyhow::Result<()> {
    let api = NodeApi::open(&args.node_dir.path)?;
    let request = AnswerRequest { done: args.done, refuse: args.refuse };
    let path = format!("/v1/subject-requests/{}/answer", args.id.trim());
    let answered: Answered = api.send("POST", &path, &request)?;
    let late = if answered.late { " (late)" } else { "" };
    match &answered.outcome {
        SubjectRequestOutcome::Done => {
            println!("answered {} request {}: done{late}", kind_word(answered.kind), answered.id)
        }
        SubjectRequestOutcome::Refused { reason } => {
            println!(
                "answered {} request {}: refused ({reason}){late}",
                kind_word(answered.kind),
                answered.id
            );
        }
    }
    if let Some(versions) = answered.versions_deleted {
        println!("deleted the record from {} ({versions} versions)", answered.dataset);
    }
    if answered.kind == SubjectRequestKind::Correction && answered.outcome == SubjectRequestOutcome::Done {
        println!("the correction itself travels through the correction loop (civmesh correction)");
    }
    if let Some(report) = &answered.report {
        println!("{} accesses to the record in {}", report.accesses.len(), report.dataset);
        match &args.report_out {
            Some(path) => {
                std::fs::write(path, serde_json::to_vec_pretty(report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote the report to {}", path.display());
            }
            None => super::print_json(report)?,
        }
    }
    Ok(())
}

fn kind_word(kind: SubjectRequestKind) -> String {
    super::serde_word(&kind)
}

fn print_list(list: &SubjectRequestList) {
    if list.requests.is_empty() {
        println!("no open subject requests");
    }
    for request in &list.requests {
        println!("{}", request_line(request));
    }
    if list.total > list.requests.len() as u64 {
        println!("... {} open in all", list.total);
    }
    let answered = &list.answered;
    println!(
        "{} open, {} overdue; answered {} ({} late, {} refused)",
        list.total, list.overdue, answered.answered, answered.answered_late, answered.refused
    );
}

fn request_line(request: &SubjectRequestView) -> String {
    let overdue = if request.overdue { "  OVERDUE" } else { "" };
    format!(
        "{}  {:<10} {}  owner {}  taken by {}  filed {}  due {}{overdue}",
        request.id,
        kind_word(request.kind),
        request.dataset,
        request.owner_org,
        request.intake_org,
        request.filed_at,
        request.deadline,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;

    #[test]
    fn deadline_days_are_whole_days_from_1_to_60() {
        for (text, expected) in [
            ("1", Some(1)),
            ("15", Some(15)),
            (" 60 ", Some(60)),
            ("0", None),
            ("61", None),
            ("1.5", None),
            ("-3", None),
        ] {
            assert_eq!(parse_deadline_days(text).ok(), expected, "{text}");
        }
    }

    #[test]
    fn an_answer_is_either_done_or_refused() {
        let parse = |args: &[&str]| {
            let mut all = vec!["civmesh", "subject", "answer", "--node-dir", "n", "--id", "ab"];
            all.extend_from_slice(args);
            crate::cli::Cli::try_parse_from(all)
        };
        assert!(parse(&["--done"]).is_ok());
        assert!(parse(&["--refuse", "retention duty"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--done", "--refuse", "both"]).is_err());
    }

    #[test]
    fn a_residents_correction_names_who_took_it() {
        let parse = |args: &[&str]| {
            let mut all = vec!["civmesh", "subject", "request", "--node-dir", "n", "--kind", "correction"];
            all.extend_from_slice(&["--dataset", "residents", "--record-key", "k"]);
            all.extend_from_slice(args);
            crate::cli::Cli::try_parse_from(all)
        };
        let correction = ["--set", "name=Wang", "--base-version", "1", "--reason", "misspelt"];
        assert!(parse(&correction).is_err(), "no operator");
        assert!(parse(&[&correction[..], &["--operator", "Li Na"]].concat()).is_ok());
        assert!(parse(&[]).is_ok(), "a correction request without a correction");
    }
}
