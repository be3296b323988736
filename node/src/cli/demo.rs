//! `civmesh demo`: runs `civmesh-demo`, which lives beside this binary.

/// Runs `civmesh-demo`, which lives beside this binary, and passes its exit
/// status on. SIGINT and SIGTERM are forwarded to it (it stops its nodes
/// and then exits), and this waits for it.
pub(super) fn run_demo(args: &[String]) -> anyhow::Result<()> {
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
pub(super) async fn shutdown_signal() {
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
