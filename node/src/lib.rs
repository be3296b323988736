//! The civmesh node: the `civmesh` command line and the services behind it.
//!
//! `main.rs` only parses arguments and sets up tracing; everything else starts
//! from [`run`].

pub mod cli;
mod identity_commands;

/// Runs one `civmesh` command to completion.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Key(command) => identity_commands::key(command),
        cli::Command::Ca(command) => identity_commands::ca(command),
        cli::Command::Cert(command) => identity_commands::cert(command),
    }
}
