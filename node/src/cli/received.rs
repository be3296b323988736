//! `civmesh received ...`: what other owners released to this node and it
//! holds (subscriptions' copies and kept answers), under which grant and
//! retention, through this node's API.

use clap::Subcommand;

use crate::api::received::ReceivedSource;
use crate::cli::args::NodeDir;
use crate::client::NodeApi;

/// `civmesh received ...`.
#[derive(Debug, Subcommand)]
pub enum ReceivedCommand {
    /// Each source of received copies: dataset, owner, grant, how many
    /// records, how long they may be kept.
    List {
        /// This node.
        #[command(flatten)]
        node_dir: NodeDir,
    },
    /// One page of a source's copies, as JSON.
    Show {
        /// This node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The source, as `received list` prints it.
        #[arg(long, value_name = "SOURCE")]
        source: String,
        /// Records on the page.
        #[arg(long, value_name = "N", default_value_t = 100)]
        page_size: u32,
        /// Continue after this subject (the previous page's `next`).
        #[arg(long, value_name = "SUBJECT")]
        after: Option<String>,
    },
}

pub(super) fn execute(command: ReceivedCommand) -> anyhow::Result<()> {
    match command {
        ReceivedCommand::List { node_dir } => {
            let sources: Vec<ReceivedSource> = NodeApi::open(&node_dir.path)?.get("/v1/received")?;
            for source in &sources {
                let retention =
                    source.retain_days.map_or("no retention".to_string(), |days| format!("kept {days} days"));
                let status = if source.grant_in_force {
                    "grant in force"
                } else {
                    "grant ended: deleted at the next sweep"
                };
                println!(
                    "{}  {} from {} under grant {}: {} record(s), {retention}, {status} (since {})",
                    source.id,
                    source.source,
                    source.owner_org,
                    source.grant.map_or("-".to_string(), |grant| grant.to_string()),
                    source.records_held,
                    source.since
                );
            }
            if sources.is_empty() {
                println!("nothing received is held");
            }
            Ok(())
        }
        ReceivedCommand::Show { node_dir, source, page_size, after } => {
            let body = serde_json::json!({ "page_size": page_size, "after": after });
            let page: serde_json::Value = NodeApi::open(&node_dir.path)?.send(
                "POST",
                &format!("/v1/received/{source}/records"),
                &body,
            )?;
            super::print_json(&page)
        }
    }
}
