//! `civmesh query`: asks a dataset's owner for records, under a grant,
//! through this node's API.

use clap::Args;

use crate::cli::args::NodeDir;
use crate::client::NodeApi;
use crate::query::{QueryAnswer, QuerySpec};

/// Arguments of `civmesh query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// This node (its key signs the query).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The dataset.
    #[arg(long, value_name = "DATASET")]
    pub dataset: String,
    /// A record key (repeatable).
    #[arg(long = "record-key", value_name = "RECORD_KEY", required = true)]
    pub record_keys: Vec<String>,
    /// A field wanted (repeatable).
    #[arg(long = "field", value_name = "FIELD", required = true)]
    pub fields: Vec<String>,
    /// The purpose, as the grant names it.
    #[arg(long, value_name = "PURPOSE")]
    pub purpose: String,
    /// The grant relied on.
    #[arg(long, value_name = "GRANT")]
    pub grant: Option<u64>,
}

/// Prints the owner's answer; exits non-zero unless records were released.
pub(super) fn execute(args: QueryArgs) -> anyhow::Result<()> {
    let QueryArgs { node_dir, dataset, record_keys: keys, fields, purpose, grant } = args;
    let spec = QuerySpec { dataset, keys, fields, purpose, grant };
    let answer: QueryAnswer = NodeApi::open(&node_dir.path)?.send("POST", "/v1/query", &spec)?;
    super::print_json(&answer)?;
    match answer {
        QueryAnswer::Released { .. } => Ok(()),
        QueryAnswer::Denied { reason, access_log_position } => anyhow::bail!(
            "the query was denied ({}; logged at access-log position {access_log_position})",
            serde_json::to_value(reason)?.as_str().unwrap_or("denied")
        ),
        QueryAnswer::Refused { reason } => anyhow::bail!("the query was refused: {reason}"),
    }
}
