//! `civmesh demo`: runs `civmesh-demo`, which lives beside this binary.

use clap::Args;

/// Arguments of `civmesh demo`: passed on to `civmesh-demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Arguments for the demo.
    #[arg(value_name = "DEMO_ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `civmesh-demo`, which lives beside this binary, and passes its exit
/// status on. SIGINT and SIGTERM are forwarded to it (it stops its nodes
/// and then exits), and this waits for it.
pub(super) fn execute(DemoArgs { args }: DemoArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let exe = std::env::current_exe()?;
    let demo = exe.with_file_name("civmesh-demo");
    anyhow::ensure!(demo.exists(), "{} is missing: build it with `cargo build --bins`", demo.display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async {
        // Listening before the child starts: no signal falls between.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut child = tokio::process::Command::new(&demo).args(&args).spawn()?;
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
