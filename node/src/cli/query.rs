//! `civmesh query`: asks a dataset's owner for records, under a grant,
//! through this node's API.

use civmesh_certs::now_unix_millis;
use civmesh_policy::model::{Grant, GrantId};
use clap::Args;

use crate::api::NodeStatus;
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
    /// The grant relied on; if not given, this organisation's only grant
    /// usable now for the dataset and purpose (it says which).
    #[arg(long, value_name = "GRANT")]
    pub grant: Option<u64>,
    /// Keep the records released in this node's received store, under the
    /// grant, until its retention or end makes them due for deletion.
    #[arg(long)]
    pub keep: bool,
}

/// Prints the owner's answer; exits non-zero unless records were released.
pub(super) fn execute(args: QueryArgs) -> anyhow::Result<()> {
    let QueryArgs { node_dir, dataset, record_keys: keys, fields, purpose, grant, keep } = args;
    let api = NodeApi::open(&node_dir.path)?;
    let grant = match grant {
        Some(grant) => Some(grant),
        None => only_usable_grant(&api, &dataset, Some(&purpose))?,
    };
    let spec = QuerySpec { dataset, keys, fields, purpose, grant, keep };
    let answer: QueryAnswer = api.send("POST", "/v1/query", &spec)?;
    super::print_json(&answer)?;
    match answer {
        QueryAnswer::Released { .. } => Ok(()),
        QueryAnswer::Denied { reason, access_log_position } => anyhow::bail!(
            "the query was denied ({}; logged at access-log position {access_log_position})",
            crate::query::reason_name(reason).unwrap_or_else(|| "denied".to_string())
        ),
        QueryAnswer::Refused { reason } => anyhow::bail!("the query was refused: {reason}"),
    }
}

/// This node's organisation's only grant usable now for `dataset` (and
/// `purpose`, if given), said on stderr; `None` if there is none; an error
/// naming them if there are several.
pub(super) fn only_usable_grant(
    api: &NodeApi,
    dataset: &str,
    purpose: Option<&str>,
) -> anyhow::Result<Option<GrantId>> {
    let org: civmesh_certs::OrgId = api.get::<NodeStatus>("/v1/status")?.org.parse()?;
    let grants: Vec<Grant> = api.get("/v1/grants")?;
    let now_ms = now_unix_millis();
    let usable: Vec<GrantId> = grants
        .iter()
        .filter(|grant| grant.check_usable(&org, dataset, purpose, now_ms).is_ok())
        .map(|grant| grant.id)
        .collect();
    let what = match purpose {
        Some(purpose) => format!("{dataset} and {purpose}"),
        None => dataset.to_string(),
    };
    match usable.as_slice() {
        [] => {
            eprintln!("{org} holds no grant usable now for {what}; asking without one");
            Ok(None)
        }
        [grant] => {
            eprintln!("using grant {grant}, {org}'s only grant usable now for {what}");
            Ok(Some(*grant))
        }
        several => {
            let numbers: Vec<String> = several.iter().map(|grant| format!("#{grant}")).collect();
            anyhow::bail!(
                "{org} holds several grants usable now for {what} ({}): choose one with --grant",
                numbers.join(", ")
            )
        }
    }
}
