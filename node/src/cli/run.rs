//! `civmesh run`: runs a node ([`crate::run::run`]) until SIGINT or SIGTERM.

use clap::Args;

use crate::cli::args::NodeDir;

/// Arguments of `civmesh run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node to run (made by `civmesh init`).
    #[command(flatten)]
    pub node_dir: NodeDir,
}

pub(super) fn execute(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(crate::run::run(args.node_dir.path, shutdown_signal()))
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
