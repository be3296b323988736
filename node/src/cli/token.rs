//! `civmesh token ...`: scoped API tokens for department systems.

use clap::Subcommand;

use crate::api::tokens::{create_token, Scope};
use crate::cli::args::NodeDir;

/// `civmesh token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token that may do only what its scopes name; prints it once
    /// (only its hash is kept, in NODE_DIR/api-tokens.json). A running node
    /// picks it up at once.
    Create {
        /// The node the token is for.
        #[command(flatten)]
        node_dir: NodeDir,
        /// Who holds it, e.g. the department system's name.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// A scope (repeatable).
        #[arg(long = "scope", value_name = "SCOPE", value_enum, required = true)]
        scopes: Vec<Scope>,
    },
}

pub(super) fn execute(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { node_dir, name, scopes } => {
            println!("{}", create_token(&node_dir.path, &name, scopes.into_iter().collect())?);
            Ok(())
        }
    }
}
