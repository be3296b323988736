//! `civmesh consent ...`: the dataset's owner records a subject's consent,
//! or its withdrawal, through this node's API (which hashes the record key
//! under the key shared with the grantee; only the hash is logged).

use clap::{Args, Subcommand};

use crate::api::ConsentRequest;
use crate::cli::args::NodeDir;
use crate::client::NodeApi;

/// `civmesh consent ...`.
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record that the subject consents to the grantee's access for the purpose.
    Give(ConsentArgs),
    /// Record the subject's withdrawal (Art. 15): no further release relies
    /// on the consent, and every holder deletes that subject's copies.
    Withdraw(ConsentArgs),
}

/// Whose consent, for whom and what.
#[derive(Debug, Args)]
pub struct ConsentArgs {
    /// A node of the dataset's owner (its key signs).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// The subject's record key.
    #[arg(long, value_name = "RECORD_KEY")]
    pub record_key: String,
    /// The organisation whose access it allows, e.g. street/jingansi.
    #[arg(long, value_name = "GRANTEE")]
    pub grantee: String,
    /// For what, as the grant names it.
    #[arg(long, value_name = "PURPOSE")]
    pub purpose: String,
    /// It includes the separate consent for sensitive fields (Art. 29).
    #[arg(long)]
    pub covers_sensitive: bool,
    /// How it was taken, e.g. street_window or online_form.
    #[arg(long, value_name = "CHANNEL", default_value = "street_window")]
    pub channel: String,
}

pub(super) fn execute(command: ConsentCommand) -> anyhow::Result<()> {
    let (args, given) = match command {
        ConsentCommand::Give(args) => (args, true),
        ConsentCommand::Withdraw(args) => (args, false),
    };
    let request = ConsentRequest {
        dataset: args.dataset,
        record_key: args.record_key,
        grantee: args.grantee,
        purpose: args.purpose,
        given,
        covers_sensitive: args.covers_sensitive,
        channel: args.channel,
    };
    let _: serde_json::Value = NodeApi::open(&args.node_dir.path)?.send("POST", "/v1/consents", &request)?;
    println!(
        "consent {} for {} ({})",
        if given { "recorded" } else { "withdrawn" },
        request.grantee,
        request.purpose
    );
    Ok(())
}
