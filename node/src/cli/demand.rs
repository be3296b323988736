//! `civmesh demand ...`: file a demand for data, list the demands and
//! where each stands, and (at the dataset's owner) refuse one.

use std::collections::BTreeSet;

use anyhow::Context;
use civmesh_certs::UnixMillis;
use civmesh_policy::evaluation::{format_date, format_date_end, parse_date_end};
use civmesh_policy::model::LegalBasis;
use civmesh_policy::{DemandSpec, DemandStatus};
use clap::Subcommand;

use crate::api::{DemandView, Reason};
use crate::cli::args::{parse_purpose, LegalBasisArg, NodeDir};
use crate::client::NodeApi;

/// `civmesh demand ...`.
#[derive(Debug, Subcommand)]
pub enum DemandCommand {
    /// File a demand for a dataset's fields, for this node's organisation;
    /// prints the demand's number.
    File(FileArgs),
    /// Every demand: who asked for which fields, for what, on which basis,
    /// and whether it waits, was granted (and by which grant) or refused.
    List {
        /// Any node.
        #[command(flatten)]
        node_dir: NodeDir,
    },
    /// Refuse a demand no grant answers yet, with a reason the requester
    /// sees in `demand list` (at the dataset's owner; logged).
    Refuse {
        /// A node of the dataset's owner (its key signs the refusal).
        #[command(flatten)]
        node_dir: NodeDir,
        /// The demand's number, as `demand list` shows it.
        #[arg(value_name = "DEMAND")]
        demand: u64,
        /// Why, for the requester.
        #[arg(long, value_name = "REASON")]
        reason: String,
    },
}

/// Arguments of `civmesh demand file`.
#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// The requesting node (its key signs the demand).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset needed.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// A field needed (repeatable).
    #[arg(long = "field", value_name = "FIELD", required = true)]
    pub fields: Vec<String>,
    /// For what, as lowercase words (e.g. street-inspection).
    #[arg(long, value_name = "PURPOSE", value_parser = parse_purpose)]
    pub purpose: String,
    /// The legal basis (PIPL Art. 13).
    #[arg(long, value_name = "LEGAL_BASIS", value_enum)]
    pub legal_basis: LegalBasisArg,
    /// Why the data is needed, for the owner who decides.
    #[arg(long, value_name = "REASON")]
    pub reason: String,
    /// The last day the data is needed, YYYY-MM-DD (Asia/Shanghai).
    #[arg(long, value_name = "UNTIL_DATE", value_parser = parse_date_end)]
    pub until: Option<UnixMillis>,
}

pub(super) fn execute(command: DemandCommand) -> anyhow::Result<()> {
    match command {
        DemandCommand::File(args) => file(args),
        DemandCommand::List { node_dir } => {
            let demands: Vec<DemandView> = NodeApi::open(&node_dir.path)?.get("/v1/demands")?;
            for demand in &demands {
                println!("{}", demand_line(demand));
            }
            if demands.is_empty() {
                println!("no demands");
            }
            Ok(())
        }
        DemandCommand::Refuse { node_dir, demand, reason } => {
            let path = format!("/v1/demands/{demand}/refuse");
            let _: serde_json::Value =
                NodeApi::open(&node_dir.path)?.send("POST", &path, &Reason { reason })?;
            println!("refused demand {demand}");
            Ok(())
        }
    }
}

fn file(args: FileArgs) -> anyhow::Result<()> {
    let FileArgs { node_dir, dataset, fields, purpose, legal_basis, reason, until } = args;
    let fields: BTreeSet<String> = fields.into_iter().collect();
    let legal_basis = LegalBasis::from(legal_basis);
    let spec = DemandSpec { dataset, fields, purpose, legal_basis, reason, until_ms: until };
    let filed: serde_json::Value = NodeApi::open(&node_dir.path)?.send("POST", "/v1/demands", &spec)?;
    let id = filed["demand"].as_u64().context("the node answered no demand number")?;
    println!("filed demand {id}");
    Ok(())
}

/// One demand on one line, e.g. `#3 street/nanjingxilu market/registry
/// [name,address] street-inspection statutory_duty filed 2026-12-01 until
/// 2026-12-31: waiting "to visit every enterprise"`.
pub(super) fn demand_line(demand: &DemandView) -> String {
    let basis = super::serde_word(&demand.legal_basis);
    let until = demand.until_ms.map(|until_ms| format!(" until {}", format_date_end(until_ms)));
    let status = match &demand.status {
        DemandStatus::Waiting => "waiting".to_string(),
        DemandStatus::Granted { grant } => format!("granted by grant {grant}"),
        DemandStatus::Refused { reason } => format!("refused: {reason}"),
    };
    let reason = demand.reason.as_ref().map(|reason| format!(" (reason: {reason})"));
    format!(
        "#{} {} {} [{}] {} {} filed {}{}: {status}{}",
        demand.id,
        demand.requester,
        demand.dataset,
        demand.fields.join(","),
        demand.purpose,
        basis,
        format_date(demand.filed_at_ms),
        until.unwrap_or_default(),
        reason.unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: DemandStatus) -> DemandView {
        DemandView {
            id: 3,
            requester: "street/nanjingxilu".into(),
            dataset: "market/enterprises".into(),
            fields: vec!["address".into(), "name".into()],
            purpose: "street-inspection".into(),
            legal_basis: LegalBasis::StatutoryDuty,
            reason: Some("visit every enterprise".into()),
            filed_at_ms: parse_date_end("2026-11-30").unwrap(),
            until_ms: Some(parse_date_end("2026-12-31").unwrap()),
            status,
        }
    }

    #[test]
    fn a_demand_line_shows_fields_basis_dates_and_status() {
        assert_eq!(
            demand_line(&view(DemandStatus::Waiting)),
            "#3 street/nanjingxilu market/enterprises [address,name] street-inspection statutory_duty \
             filed 2026-12-01 until 2026-12-31: waiting (reason: visit every enterprise)"
        );
        assert!(demand_line(&view(DemandStatus::Granted { grant: 7 })).contains(": granted by grant 7"));
        let refused = view(DemandStatus::Refused { reason: "not necessary".into() });
        assert!(demand_line(&refused).contains(": refused: not necessary"));
    }
}
