//! `civmesh catalog ...`: the catalog as this organisation sees it, and
//! reports on the catalog and the three lists.

use civmesh_policy::model::FieldClass;
use clap::Subcommand;

use crate::api::CatalogEntry;
use crate::cli::args::NodeDir;
use crate::client::NodeApi;

/// `civmesh catalog ...`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Every dataset with its owner, fields and classes, and which of this
    /// node's organisation's grants (usable now) cover each field.
    Show {
        /// The node whose organisation's grants are shown.
        #[command(flatten)]
        node_dir: NodeDir,
    },
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
        CatalogCommand::Show { node_dir } => {
            let catalog: Vec<CatalogEntry> = NodeApi::open(&node_dir.path)?.get("/v1/catalog")?;
            for entry in &catalog {
                println!("{}", catalog_text(entry));
            }
            if catalog.is_empty() {
                println!("no datasets");
            }
            Ok(())
        }
        CatalogCommand::Match { node_dir, expiry_days } => {
            let report: serde_json::Value =
                NodeApi::open(&node_dir.path)?.get(&format!("/v1/policy/match?expiry_days={expiry_days}"))?;
            super::print_json(&report)
        }
    }
}

/// One dataset as `catalog show` prints it: a header line, then one line
/// per field with its class and the grants that cover it.
fn catalog_text(entry: &CatalogEntry) -> String {
    let sharing = super::serde_word(&entry.sharing);
    let mut lines = vec![format!("{} \"{}\" (owner {}, {sharing})", entry.id, entry.title, entry.owner)];
    for field in &entry.fields {
        let class = match field.spec.class {
            FieldClass::Public => "public".to_string(),
            FieldClass::Internal => "internal".to_string(),
            FieldClass::Personal => "personal".to_string(),
            FieldClass::Sensitive(category) => format!("sensitive: {}", super::serde_word(&category)),
        };
        let grants: Vec<String> = field.granted_by.iter().map(|grant| format!("#{grant}")).collect();
        let covered = if grants.is_empty() {
            "not granted".to_string()
        } else {
            format!("granted by {}", grants.join(", "))
        };
        lines.push(format!("  {:<24} {class:<28} {covered}", field.spec.name));
    }
    lines.join("\n")
}
