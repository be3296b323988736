//! `civmesh pia ...`: personal-information impact assessments (PIPL Art.
//! 55-56) at the dataset's owner: record one (signed by the node; its
//! digest is what `grant issue --assessment` names), show one, list them.
//! Through the node's API when it runs, else on its store directly (the
//! store is files any process of the node's directory may add to).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey};
use civmesh_policy::evaluation::format_time;
use clap::Subcommand;

use crate::api::AssessmentCreated;
use crate::assessments::{
    digest_hex, Assessment, AssessmentDigest, AssessmentRecord, AssessmentStore, AssessmentSummary,
};
use crate::cli::args::NodeDir;
use crate::cli::grant::parse_assessment;
use crate::client::NodeApi;
use crate::config::NodeConfig;

/// `civmesh pia ...`.
#[derive(Debug, Subcommand)]
pub enum PiaCommand {
    /// Record an impact assessment of some fields of one of this
    /// organisation's datasets, signed by this node; prints its digest,
    /// which a grant of sensitive fields names (`grant issue --assessment`).
    /// Kept at least three years; the node never deletes it.
    Add(AddArgs),
    /// One assessment: what it covers, who signed it and when, and its
    /// statements.
    Show {
        /// A node of the organisation that keeps it.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The assessment's digest, as `pia add` or `pia list` prints it.
        #[arg(value_name = "ASSESSMENT", value_parser = parse_assessment)]
        assessment: AssessmentDigest,
    },
    /// Every assessment the node keeps, the oldest first, one per line.
    List {
        /// A node of the organisation that keeps them.
        #[command(flatten)]
        node_dir: NodeDir,
        /// Only assessments of this dataset.
        #[arg(long, value_name = "DATASET")]
        dataset: Option<String>,
    },
}

/// Arguments of `civmesh pia add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// A node of the dataset's owner (its key signs the assessment).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset assessed.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// A field the assessment covers (repeatable).
    #[arg(long = "field", value_name = "FIELD", required = true)]
    pub fields: Vec<String>,
    /// The purpose of processing, as the grants it covers name it (e.g.
    /// street-inspection).
    #[arg(long, value_name = "PURPOSE")]
    pub purpose: String,
    /// Why the processing is lawful, legitimate and necessary.
    #[arg(long, value_name = "NECESSITY")]
    pub necessity: String,
    /// The risks to the individuals' rights and interests.
    #[arg(long, value_name = "RISKS")]
    pub risks: String,
    /// The protective measures, and why they are adequate.
    #[arg(long, value_name = "MEASURES")]
    pub measures: String,
    /// The officer who signs it, by name.
    #[arg(long, value_name = "OFFICER")]
    pub officer: String,
}

/// Where the assessments are reached: the running node, or its files.
enum Access {
    Api(NodeApi),
    Store(AssessmentStore),
}

impl Access {
    /// The node's API if it answers, else its store (with its key).
    fn open(node_dir: &Path) -> anyhow::Result<Self> {
        if let Ok(api) = NodeApi::open(node_dir) {
            if api.get::<serde_json::Value>("/v1/status").is_ok() {
                return Ok(Access::Api(api));
            }
        }
        let config = NodeConfig::load(node_dir)?;
        let key_file = NodeConfig::resolve(node_dir, &config.node.key_file);
        let key = NodeKey::load(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
        Ok(Access::Store(AssessmentStore::new(node_dir, Arc::new(key))))
    }

    fn add(&self, assessment: Assessment) -> anyhow::Result<AssessmentDigest> {
        match self {
            Access::Api(api) => {
                let created: AssessmentCreated = api.send("POST", "/v1/assessments", &assessment)?;
                Ok(created.digest)
            }
            Access::Store(store) => Ok(store.add(assessment, now_unix_millis())?.digest),
        }
    }

    fn get(&self, digest: &AssessmentDigest) -> anyhow::Result<AssessmentRecord> {
        let hex = digest_hex(digest);
        match self {
            Access::Api(api) => api.get(&format!("/v1/assessments/{hex}")),
            Access::Store(store) => {
                store.get(digest)?.with_context(|| format!("this node keeps no impact assessment {hex}"))
            }
        }
    }

    fn list(&self) -> anyhow::Result<Vec<AssessmentSummary>> {
        match self {
            Access::Api(api) => api.get("/v1/assessments"),
            Access::Store(store) => Ok(store.list()?),
        }
    }
}

pub(super) fn execute(command: PiaCommand) -> anyhow::Result<()> {
    match command {
        PiaCommand::Add(args) => {
            let assessment = Assessment {
                dataset: args.dataset,
                fields: args.fields.into_iter().collect(),
                purpose: args.purpose,
                necessity: args.necessity,
                risks: args.risks,
                measures: args.measures,
                officer: args.officer,
            };
            let digest = Access::open(&args.node_dir.path)?.add(assessment)?;
            println!("{}", digest_hex(&digest));
        }
        PiaCommand::Show { node_dir, assessment } => {
            println!("{}", details(&Access::open(&node_dir.path)?.get(&assessment)?));
        }
        PiaCommand::List { node_dir, dataset } => {
            let mut summaries = Access::open(&node_dir.path)?.list()?;
            summaries.retain(|summary| dataset.as_ref().is_none_or(|dataset| &summary.dataset == dataset));
            for summary in &summaries {
                println!("{}", summary_line(summary));
            }
            if summaries.is_empty() {
                println!("no impact assessments");
            }
        }
    }
    Ok(())
}

/// One assessment on one line: digest, time, dataset, fields, purpose,
/// officer.
fn summary_line(summary: &AssessmentSummary) -> String {
    format!(
        "{} {} {} [{}] {} signed by {}",
        digest_hex(&summary.digest),
        format_time(summary.signed_at_ms),
        summary.dataset,
        summary.fields.iter().cloned().collect::<Vec<_>>().join(","),
        summary.purpose,
        summary.officer,
    )
}

/// An assessment as `pia show` prints it.
fn details(record: &AssessmentRecord) -> String {
    let assessment = &record.assessment;
    [
        format!("impact assessment {}", digest_hex(&record.digest)),
        format!("  dataset:   {}", assessment.dataset),
        format!("  fields:    {}", assessment.fields.iter().cloned().collect::<Vec<_>>().join(", ")),
        format!("  purpose:   {}", assessment.purpose),
        format!("  signed:    {} by {}", format_time(record.signed_at_ms), assessment.officer),
        statement("necessity", &assessment.necessity),
        statement("risks", &assessment.risks),
        statement("measures", &assessment.measures),
    ]
    .join("\n")
}

/// `label: text`, its later lines indented under its first.
fn statement(label: &str, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    format!("  {:<11}{}", format!("{label}:"), lines.join(&format!("\n{:13}", "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assessment_reads_with_its_time_in_shanghai_and_its_statements_indented() {
        let record = AssessmentRecord {
            digest: AssessmentDigest([0xab; 32]),
            signed_at_ms: civmesh_policy::evaluation::parse_date("2026-12-04").unwrap(),
            assessment: Assessment {
                dataset: "civil-affairs/residents".into(),
                fields: ["name".to_string(), "lives_alone_80_plus".to_string()].into(),
                purpose: "street-inspection".into(),
                necessity: "Visits need names.\nNothing less serves.".into(),
                risks: "Disclosure.".into(),
                measures: "Deleted after 30 days.".into(),
                officer: "王芳".into(),
            },
            envelope: String::new(),
        };
        let hex = "ab".repeat(32);
        assert_eq!(
            details(&record),
            format!(
                "impact assessment {hex}\n  dataset:   civil-affairs/residents\n  fields:    lives_alone_80_plus, \
                 name\n  purpose:   street-inspection\n  signed:    2026-12-04T00:00:00+08:00 by 王芳\n  \
                 necessity: Visits need names.\n             Nothing less serves.\n  risks:     Disclosure.\n  \
                 measures:  Deleted after 30 days."
            )
        );
        assert_eq!(
            summary_line(&AssessmentSummary::from(&record)),
            format!(
                "{hex} 2026-12-04T00:00:00+08:00 civil-affairs/residents [lives_alone_80_plus,name] \
                 street-inspection signed by 王芳"
            )
        );
    }
}
