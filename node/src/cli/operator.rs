//! `civmesh operator ...`: the people who sign in to the node's console.

use clap::Subcommand;

use crate::cli::args::NodeDir;
use crate::console::operators::{OperatorStore, Role};

/// `civmesh operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator; prints the console's enrolment page and a one-time
    /// code (valid 7 days) with which they set their password.
    Add {
        /// The node whose console they use.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The name they sign in with, e.g. 李伟.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What they do.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List the operators with their role and state.
    List {
        /// The node.
        #[command(flatten)]
        node_dir: NodeDir,
    },
    /// Disable an operator: they can no longer sign in.
    Disable {
        /// The node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The operator.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Unlock or re-enable an operator with a new one-time code; their
    /// password is cleared.
    Reset {
        /// The node.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The operator.
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

/// Where the node's console is, from its runtime file, if it runs.
fn enrolment_page(node_dir: &std::path::Path) -> String {
    let runtime: Option<serde_json::Value> =
        std::fs::read(node_dir.join("node.json")).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    match runtime.as_ref().and_then(|runtime| runtime["api_url"].as_str()) {
        Some(url) => format!("{}/enrol", url.trim_end_matches('/')),
        None => "the node's console at /enrol (the node is not running)".to_string(),
    }
}

fn print_enrolment(node_dir: &std::path::Path, name: &str, code: &str) {
    println!(
        "enrolment for {name}: open {} and enter the one-time code {code} (valid 7 days)",
        enrolment_page(node_dir)
    );
}

pub(super) fn execute(command: OperatorCommand) -> anyhow::Result<()> {
    let now_ms = civmesh_certs::now_unix_millis();
    match command {
        OperatorCommand::Add { node_dir, name, role } => {
            let code = OperatorStore::new(&node_dir.path).add(&name, role, now_ms)?;
            print_enrolment(&node_dir.path, &name, &code);
        }
        OperatorCommand::List { node_dir } => {
            for operator in OperatorStore::new(&node_dir.path).list()? {
                let role = serde_json::to_value(operator.role)?;
                println!("{}  {}  {}", operator.name, role.as_str().unwrap_or_default(), operator.state);
            }
        }
        OperatorCommand::Disable { node_dir, name } => {
            OperatorStore::new(&node_dir.path).disable(&name)?;
            println!("{name} disabled");
        }
        OperatorCommand::Reset { node_dir, name } => {
            let code = OperatorStore::new(&node_dir.path).reset(&name, now_ms)?;
            print_enrolment(&node_dir.path, &name, &code);
        }
    }
    Ok(())
}
