//! `civmesh policy ...`: signs a policy command with the node's key and
//! commits it through the node's API.

use std::path::PathBuf;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::Command;
use clap::Subcommand;

use crate::cli::args::NodeDir;
use crate::client::NodeApi;
use crate::config::NodeConfig;

/// The largest command file read, in bytes.
const COMMAND_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// `civmesh policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Sign the command in a JSON file (e.g. `{"PublishDataset": {...}}`)
    /// with the node's key and commit it; prints the outcome.
    Submit {
        /// The node whose key signs.
        #[command(flatten)]
        node_dir: NodeDir,
        /// The JSON file holding one command.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub(super) fn execute(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Submit { node_dir: NodeDir { path: node_dir }, file } => {
            anyhow::ensure!(
                std::fs::metadata(&file)?.len() <= COMMAND_FILE_BYTES_MAX,
                "{} is too large",
                file.display()
            );
            let command: Command = serde_json::from_slice(&std::fs::read(&file)?)
                .with_context(|| format!("{} is not a policy command", file.display()))?;
            let config = NodeConfig::load(&node_dir)?;
            let key = NodeKey::load(&NodeConfig::resolve(&node_dir, &config.node.key_file))?;
            let envelope = SignedEnvelope::sign(&key, &command, now_unix_millis())?;
            let response = NodeApi::open(&node_dir)?.submit(&[envelope])?;
            println!("{}", serde_json::to_string_pretty(&response.outcomes)?);
            anyhow::ensure!(
                response.outcomes.iter().all(Result::is_ok),
                "the policy log rejected the command"
            );
            Ok(())
        }
    }
}
