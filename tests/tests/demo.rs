//! The README's main command keeps working: `civmesh demo --check` runs the
//! demo federation through all eleven steps of the loop, checks each, and
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
    for step in 1..=11 {
        assert!(stdout.contains(&format!("\n[{step}] ")), "step {step} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("    ok: ").count(), 19, "every step checked:\n{stdout}");
    for role in ["street-worker", "reviewer", "policy-officer", "auditor", "admin"] {
        let line = stdout
            .lines()
            .find(|line| line.contains(&format!(" {role} ")) && line.contains("enrolment for"))
            .unwrap_or_default();
        assert!(
            line.contains("/enrol and enter the one-time code "),
            "no console operator {role}:\n{stdout}"
        );
    }
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
/// most once, identical replicas and a verified audit bundle. The
/// operations it ran are exactly the start of its seed's schedule, as
/// `--soak-plan` prints it without running anything: a seed replays a soak.
#[test]
fn a_short_soak_with_random_faults_ends_consistent_and_verified_and_replays_from_its_seed() {
    let civmesh = civmesh_testnet::civmesh_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let output = std::process::Command::new(&civmesh)
        .args(["demo", "--check", "--soak-seconds", "15", "--seed", "7", "--dir"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let soak = stdout.split("[soak]").nth(1).expect("the soak ran");
    assert!(soak.contains("seed 7 (replay: civmesh demo --soak-seconds 15 --seed 7)"), "{soak}");
    assert!(soak.contains("ok: every node up, every correction decided"), "{soak}");
    assert!(soak.contains("query released"), "{soak}");

    let ran = std::fs::read_to_string(root.join("soak-schedule.log")).unwrap();
    let count = ran.lines().count();
    assert!(count >= 5, "the soak ran {count} operations:\n{ran}");
    let plan = std::process::Command::new(&civmesh)
        .args(["demo", "--seed", "7", "--soak-plan", &count.to_string()])
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    assert_eq!(String::from_utf8_lossy(&plan.stdout), ran, "the soak ran another schedule than its seed's");
    let other = std::process::Command::new(&civmesh)
        .args(["demo", "--seed", "8", "--soak-plan", &count.to_string()])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&other.stdout), ran, "the schedule does not depend on the seed");
}

/// SIGTERM to `civmesh demo` mid-run reaches the demo, which stops its seven
/// nodes, and `civmesh demo` exits only after them: no process is left.
#[test]
fn sigterm_to_the_demo_leaves_no_process() {
    use std::time::{Duration, Instant};
    let civmesh = civmesh_testnet::civmesh_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("demo");
    let mut demo = std::process::Command::new(&civmesh)
        .args(["demo", "--dir"])
        .arg(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Every node has written its node.json: all seven are running.
    const NODES: usize = 7;
    civmesh_testnet::wait_until("seven running nodes", Duration::from_secs(120), || {
        let started = std::fs::read_dir(&root)
            .ok()?
            .filter_map(Result::ok)
            .filter(|entry| entry.path().join("node.json").exists())
            .count();
        (started == NODES).then_some(())
    })
    .unwrap();
    let status = std::process::Command::new("kill").arg("-TERM").arg(demo.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(90);
    let exited = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "civmesh demo did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!exited.success(), "an interrupted demo is not a verified one");
    // No live process (the demo, a node, a CLI call) names the demo's directory.
    let root_text = root.to_str().unwrap().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| civmesh_testnet::process_alive(*pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&root_text).then(|| format!("{pid}: {cmdline}"))
        })
        .collect();
    assert!(left.is_empty(), "processes left after SIGTERM: {left:?}");
}
