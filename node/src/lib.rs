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
pub mod correction_attachments;
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
        cli::Command::Evaluate { node_dir, from, to, bucket, format } => {
            correction_commands::evaluate(&node_dir, from.as_deref(), to.as_deref(), &bucket, format)
        }
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
/// status on. SIGINT and SIGTERM are forwarded to it (it stops its nodes
/// and then exits), and this waits for it.
fn run_demo(args: &[String]) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let exe = std::env::current_exe()?;
    let demo = exe.with_file_name("civmesh-demo");
    anyhow::ensure!(demo.exists(), "{} is missing: build it with `cargo build --bins`", demo.display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async {
        // Listening before the child starts: no signal falls between.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut child = tokio::process::Command::new(&demo).args(args).spawn()?;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("the demo exited at once"))?;
        loop {
            let forward = tokio::select! {
                status = child.wait() => return anyhow::Ok(status?),
                _ = interrupt.recv() => "-INT",
                _ = terminate.recv() => "-TERM",
            };
            // `kill` rather than a libc call: this crate has no unsafe code.
            let _ = tokio::process::Command::new("kill").arg(forward).arg(pid.to_string()).status().await;
        }
    })?;
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
