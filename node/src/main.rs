//! The `civmesh` binary: parses arguments, sets up tracing, and hands over to
//! [`civmesh_node::execute`].

/// jemalloc serves every allocation in the process: its `malloc` replaces
/// glibc's, so RocksDB's C++ allocations come here too. With glibc's
/// per-thread arenas a node at a million access records held about twice
/// the memory it used (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = civmesh_node::cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CIVMESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match civmesh_node::execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
