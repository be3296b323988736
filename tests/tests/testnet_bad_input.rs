//! The testnet and the demo refuse bad set-ups with a clear error before
//! anything starts: a port already in use, a directory that already holds
//! a federation, and a missing `civmesh` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_testnet::city::city;
use civmesh_testnet::{SnapshotPolicy, Testnet};

#[test]
fn a_taken_port_stops_the_start_before_any_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::create(dir.path(), &city(&["hub", "market"]), SnapshotPolicy::default()).unwrap();
    let config = civmesh_node::config::NodeConfig::load(&net.nodes[1].data_dir).unwrap();
    let _taken = std::net::TcpListener::bind(config.node.api_listen.as_str()).unwrap();
    let error = net.start_all().unwrap_err().to_string();
    assert!(error.contains("already in use") && error.contains("market's API port"), "{error}");
    assert!(!net.is_running(0) && !net.is_running(1), "nothing was started");
}

#[test]
fn a_directory_holding_a_federation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Testnet::create(dir.path(), &city(&["hub"]), SnapshotPolicy::default()).unwrap();
    let error =
        Testnet::create(dir.path(), &city(&["hub"]), SnapshotPolicy::default()).err().unwrap().to_string();
    assert!(error.contains("already holds a civmesh federation"), "{error}");
    let demo = std::process::Command::new(civmesh_testnet::civmesh_binary().unwrap())
        .args(["demo", "--check", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!demo.status.success());
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(stderr.contains("already holds a civmesh federation"), "{stderr}");
}

#[test]
fn a_missing_binary_is_named() {
    let civmesh = civmesh_testnet::civmesh_binary().unwrap();
    let demo = civmesh.with_file_name("civmesh-demo");
    let output = std::process::Command::new(demo)
        .args(["--check"])
        .env("CIVMESH_BIN", "/nonexistent/civmesh")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the civmesh binary is missing at /nonexistent/civmesh"), "{stderr}");
}
