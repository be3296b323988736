//! The README's main command keeps working: `civmesh demo --check` runs the
//! demo federation through all nine steps of the loop, checks each, and
//! only then prints `demo: closed loop verified`.

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
    assert!(stdout.trim_end().ends_with("demo: closed loop verified"), "{stdout}");
    for step in 1..=9 {
        assert!(stdout.contains(&format!("\n[{step}] ")), "step {step} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("    ok: ").count(), 15, "every step checked:\n{stdout}");
    let bundle = dir.path().join("demo").join("audit.bundle");
    assert!(
        bundle.exists() && bundle.with_extension("report.json").exists(),
        "the auditor's bundle and report are kept"
    );
    assert!(
        dir.path().join("demo").join("hub").join("civmesh.toml").exists(),
        "--dir keeps the data directories"
    );
}

/// The soak mode: mixed load with random kill -9, restarts and frozen
/// voters, bounded in time, then every correction decided and applied at
/// most once, identical replicas and a verified audit bundle.
#[test]
fn a_short_soak_with_random_faults_ends_consistent_and_verified() {
    let civmesh = civmesh_testnet::civmesh_binary().unwrap();
    let output = std::process::Command::new(&civmesh)
        .args(["demo", "--check", "--soak-seconds", "15"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let soak = stdout.split("[soak]").nth(1).expect("the soak ran");
    assert!(soak.contains("ok: every node up, every correction decided"), "{soak}");
    assert!(soak.contains("query released"), "{soak}");
}
