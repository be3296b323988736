//! The civmesh node: the `civmesh` command line and the services behind it.
//!
//! `main.rs` only parses arguments and sets up tracing; everything else starts
//! from [`run`].

pub mod api;
pub mod api_tokens;
mod audit_commands;
pub mod checkpoints;
pub mod cli;
pub mod cluster_commands;
pub mod config;
pub mod correction_api;
mod correction_commands;
pub mod corrections;
pub mod group_commit;
mod identity_commands;
mod init_command;
pub mod metrics;
pub mod query;
pub mod records;
mod records_commands;
pub mod run;
pub mod security;
pub mod swarm;

/// Runs one `civmesh` command to completion.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Key(command) => identity_commands::key(command),
        cli::Command::Ca(command) => identity_commands::ca(command),
        cli::Command::Cert(command) => identity_commands::cert(command),
        cli::Command::Init(args) => init_command::init(args),
        cli::Command::Cluster(command) => cluster_commands::cluster(command),
        cli::Command::Records(command) => records_commands::records(command),
        cli::Command::Policy(command) => records_commands::policy(command),
        cli::Command::Catalog(command) => records_commands::catalog(command),
        cli::Command::Correction(command) => correction_commands::correction(command),
        cli::Command::Audit(command) => audit_commands::audit(command),
        cli::Command::Token(command) => match command {
            cli::TokenCommand::Create { node_dir, name, scopes } => {
                let token = api_tokens::create_token(&node_dir, &name, scopes.into_iter().collect())?;
                println!("{token}");
                Ok(())
            }
        },
        cli::Command::Demo { args } => run_demo(&args),
        cli::Command::Query { node_dir, dataset, keys, fields, purpose, grant } => {
            records_commands::query(query::QuerySpec { dataset, keys, fields, purpose, grant }, &node_dir)
        }
        cli::Command::Run { data_dir } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(run::run(data_dir, shutdown_signal()))
        }
    }
}

/// Runs `civmesh-demo`, which lives beside this binary, and passes its exit
/// status on.
fn run_demo(args: &[String]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let demo = exe.with_file_name("civmesh-demo");
    anyhow::ensure!(demo.exists(), "{} is missing: build it with `cargo build --bins`", demo.display());
    let status = std::process::Command::new(&demo).args(args).status()?;
    anyhow::ensure!(status.success(), "the demo failed ({status})");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
