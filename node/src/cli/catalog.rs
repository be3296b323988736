//! `civmesh catalog ...`: reports on the catalog and the three lists.

use clap::Subcommand;

use crate::cli::args::NodeDir;
use crate::client::NodeApi;

/// `civmesh catalog ...`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// The catalog-match report: demands with no producer, demands waiting
    /// for a grant, grants about to expire, datasets nobody demands.
    Match {
        /// Any node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// Report grants that expire within this many days.
        #[arg(long, value_name = "EXPIRY_DAYS", default_value_t = 30)]
        expiry_days: u32,
    },
}

pub(super) fn execute(command: CatalogCommand) -> anyhow::Result<()> {
    match command {
        CatalogCommand::Match { node_dir, expiry_days } => {
            let report: serde_json::Value =
                NodeApi::open(&node_dir.path)?.get(&format!("/v1/policy/match?expiry_days={expiry_days}"))?;
            super::print_json(&report)
        }
    }
}
