//! The README's main command keeps working: `civmesh demo --check` runs the
//! demo federation to the end and checks every step it claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_demo_runs_and_checks_every_step() {
    let civmesh = civmesh_testnet::civmesh_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(&civmesh)
        .args(["demo", "--check", "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("demo: steps 1-7 and the replicated access log verified"), "{stdout}");
    assert!(
        !stdout.contains("demo: closed loop verified"),
        "the loop is not closed yet; the demo must not claim it"
    );
    assert!(
        dir.path().join("demo").join("hub").join("civmesh.toml").exists(),
        "--dir keeps the data directories"
    );
}
