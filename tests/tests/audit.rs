//! The auditor's tools against real processes: checkpoints become final on
//! their own, `audit export` writes a bundle from a voter's archive, `audit
//! verify` passes offline and remembers the checkpoint, a later export is
//! consistent with it (also after a voter was killed and restarted), a
//! damaged bundle and another federation's CA are refused, and `audit
//! subject` lists the accesses to one subject; every voter's archive holds
//! the same commands.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_policy::{Applied, Command};
use civmesh_testnet::city::{city, enterprise_dataset, street_inspection_grant, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};
use serde_json::Value;

const MARKET: usize = 1;
const STREET: usize = 3;

fn query(net: &Testnet, key: &str, grant: Option<u64>) -> Value {
    let body = serde_json::json!({
        "dataset": ENTERPRISES, "keys": [key], "fields": ["name"], "purpose": "street-inspection", "grant": grant,
    });
    net.api(STREET).unwrap().send("POST", "/v1/query", &body).unwrap()
}

/// Waits until node `index` holds a final checkpoint over `entries` entries.
fn wait_for_checkpoint(net: &Testnet, index: usize, entries: u64) -> Value {
    wait_until("a final checkpoint over every entry", Duration::from_secs(30), || {
        let checkpoints: Value = net.api(index).ok()?.get("/v1/audit/checkpoints").ok()?;
        let last = checkpoints["final"].as_array()?.last()?.clone();
        (last["tree_size"] == entries && checkpoints["leaves"] == entries).then_some(last)
    })
    .unwrap()
}

#[test]
fn export_verify_and_subject_access_over_a_live_federation() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name"], &[]).unwrap();
    let Applied::GrantIssued(grant) =
        net.sign_and_submit(MARKET, MARKET, Command::IssueGrant(grant)).unwrap()
    else {
        panic!("no grant id")
    };
    let csv = dir.path().join("enterprises.csv");
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,,,,\n91310106B,Nanjing Bakery,,,,,\n")
        .unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    wait_until("the grant at the street", Duration::from_secs(10), || {
        let body = serde_json::json!({
            "dataset": ENTERPRISES, "keys": ["91310106A"], "fields": ["name"], "purpose": "street-inspection", "grant": grant,
        });
        net.api(STREET).ok()?.send::<_, Value>("POST", "/v1/query", &body).ok()?.get("Released").map(|_| ())
    })
    .unwrap();
    query(&net, "91310106B", Some(grant));
    assert!(query(&net, "91310106B", None).get("Denied").is_some());
    let checkpoint = wait_for_checkpoint(&net, 0, 3);
    assert!(checkpoint["cosigners"].as_array().unwrap().len() >= 2, "{checkpoint}");

    let hub_dir = net.nodes[0].data_dir.to_str().unwrap().to_string();
    let ca = net.ca_dir.join("ca.pem");
    let seen = dir.path().join("seen.json");
    let bundle = dir.path().join("first.bundle");

    net.cli(&["audit", "export", "--node-dir", &hub_dir, "--out", bundle.to_str().unwrap()]).unwrap();
    let printed = net.audit_verify(&bundle, &ca, &seen).unwrap();
    assert!(printed.contains("access entries:   3 (2 permits, 1 denials)"), "{printed}");

    // The archive is the same on every voter: their exports hold the same
    // commands, byte for byte, once they have applied the same entries.
    let archives = wait_until("the same archive on every voter", Duration::from_secs(20), || {
        let archives: Vec<Vec<civmesh_policy::audit::ArchivedCommand>> = (0..3)
            .map(|index| {
                let out = dir.path().join(format!("voter-{index}.bundle"));
                net.audit_export(index, &out).ok()?;
                Some(civmesh_policy::audit::decode_bundle(&std::fs::read(&out).ok()?).ok()?.commands)
            })
            .collect::<Option<_>>()?;
        archives.iter().all(|archive| *archive == archives[0]).then_some(archives)
    })
    .unwrap();
    assert!(
        archives[0].len() >= 6,
        "publish, grant, import and three accesses at least: {}",
        archives[0].len()
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(bundle.with_extension("report.json")).unwrap()).unwrap();
    assert_eq!((report["ok"].as_bool(), report["checkpoints"].as_u64()), (Some(true), Some(1)));
    assert!(std::fs::read_to_string(&seen).unwrap().contains(checkpoint["root"].as_str().unwrap()));

    // PIPL Art. 45: every access to 91310106B, from the bundle alone, with
    // the federation's secret (the auditor's; no member node holds it).
    let secret = net.ca_dir.join("subject-key.secret");
    assert!(!net.nodes[STREET].data_dir.join("subject-key.secret").exists());
    let accesses: Vec<Value> =
        serde_json::from_str(&subject_report(&net, &bundle, &ca, &secret).unwrap()).unwrap();
    assert_eq!(accesses.len(), 2, "{accesses:?}");
    assert_eq!(
        (accesses[0]["outcome"].as_str(), accesses[1]["outcome"].as_str()),
        (Some("permit"), Some("deny"))
    );
    assert_eq!(accesses[0]["requester_org"], "street/jingansi");
    assert_eq!(accesses[0]["legal_basis"], "statutory_duty");
    assert_eq!(accesses[0]["fields_released"], serde_json::json!(["name"]));

    // A ranged export: the history is all there, the report covers entries 2..3.
    let ranged = dir.path().join("ranged.bundle");
    net.cli(&[
        "audit",
        "export",
        "--node-dir",
        &hub_dir,
        "--out",
        ranged.to_str().unwrap(),
        "--from-entry",
        "2",
        "--until-entry",
        "3",
    ])
    .unwrap();
    let printed = net.audit_verify(&ranged, &ca, &seen).unwrap();
    assert!(printed.contains("exported range:   entries 2..3"), "{printed}");
    let in_range: Vec<Value> =
        serde_json::from_str(&subject_report(&net, &ranged, &ca, &secret).unwrap()).unwrap();
    assert_eq!(in_range.len(), 1, "only the denial, entry 2: {in_range:?}");

    // A secret that is not the federation's is refused (exit non-zero), not
    // answered with "0 accesses".
    let wrong = dir.path().join("wrong.secret");
    std::fs::write(&wrong, "00".repeat(32)).unwrap();
    let error = subject_report(&net, &bundle, &ca, &wrong).unwrap_err().to_string();
    assert!(error.contains("is not this federation's subject-key secret"), "{error}");

    // More entries, a voter killed and restarted: the next bundle verifies
    // and is consistent with the checkpoint seen before.
    net.kill9(0).unwrap();
    query(&net, "91310106A", Some(grant));
    net.start(0).unwrap();
    query(&net, "91310106A", Some(grant));
    wait_for_checkpoint(&net, 0, 5);
    let second = dir.path().join("second.bundle");
    net.cli(&["audit", "export", "--node-dir", &hub_dir, "--out", second.to_str().unwrap()]).unwrap();
    let printed = net.audit_verify(&second, &ca, &seen).unwrap();
    assert!(printed.contains("checked against:  1 checkpoint(s) seen before"), "{printed}");

    // Without a bundle: the voters (of three organisations) prove that
    // their latest final checkpoints extend both checkpoints seen so far
    // and one another, and that the subject's accesses (the report's
    // leaves) are in the first checkpoint seen.
    let leaves: Vec<String> = accesses.iter().map(|access| access["leaf"].to_string()).collect();
    let printed = prove(&net, &[0, 1, 2], &ca, &seen, &leaves).unwrap();
    assert!(printed.contains("latest final checkpoint 5 leaves"), "{printed}");
    assert!(printed.contains("in the checkpoint seen at 3 leaves"), "{printed}");
    assert!(printed.contains("proved: 3 node(s), 2 seen checkpoint(s), 2 leaf(s)"), "{printed}");
    // A checkpoint seen with another root is not a prefix, and a leaf no
    // checkpoint seen covers is refused: both fail the run.
    let bent_root: String = checkpoint["root"].as_str().unwrap().chars().rev().collect();
    let bent = dir.path().join("bent-seen.json");
    let text = std::fs::read_to_string(&seen).unwrap();
    std::fs::write(&bent, text.replace(checkpoint["root"].as_str().unwrap(), &bent_root)).unwrap();
    let error = prove(&net, &[1], &ca, &bent, &[]).unwrap_err().to_string();
    assert!(error.contains("the checkpoint seen at 3 leaves") && error.contains("rewritten"), "{error}");
    let error = prove(&net, &[1], &ca, &seen, &["5".to_string()]).unwrap_err().to_string();
    assert!(error.contains("leaf 5: no checkpoint seen before covers it"), "{error}");

    // Damage and another federation are refused with clear errors.
    let mut bytes = std::fs::read(&second).unwrap();
    bytes.truncate(bytes.len() - 10);
    let truncated = dir.path().join("truncated.bundle");
    std::fs::write(&truncated, &bytes).unwrap();
    let error = net.audit_verify(&truncated, &ca, &seen).unwrap_err().to_string();
    assert!(error.contains("truncated or corrupt"), "{error}");
    let other = dir.path().join("other-ca");
    net.cli(&["ca", "init", "--ca-dir", other.to_str().unwrap(), "--name", "another city"]).unwrap();
    let error = net.audit_verify(&second, &other.join("ca.pem"), &seen).unwrap_err().to_string();
    assert!(error.contains("another federation"), "{error}");
}

/// `civmesh audit prove` through nodes `indices` with the checkpoints in
/// `seen`, for `leaves`: what it printed.
fn prove(
    net: &Testnet,
    indices: &[usize],
    ca: &std::path::Path,
    seen: &std::path::Path,
    leaves: &[String],
) -> anyhow::Result<String> {
    let node_dirs: Vec<String> = indices
        .iter()
        .map(|index| net.nodes[*index].data_dir.to_str().expect("a UTF-8 path").to_string())
        .collect();
    let (ca, seen) = (ca.to_str().expect("a UTF-8 path"), seen.to_str().expect("a UTF-8 path"));
    let mut args = vec!["audit", "prove", "--ca-cert", ca, "--seen", seen];
    for node_dir in &node_dirs {
        args.extend(["--node-dir", node_dir.as_str()]);
    }
    for leaf in leaves {
        args.extend(["--leaf", leaf.as_str()]);
    }
    net.cli(&args)
}

/// `civmesh audit subject` for 91310106B over `bundle`, with `secret`.
fn subject_report(
    net: &Testnet,
    bundle: &std::path::Path,
    ca: &std::path::Path,
    secret: &std::path::Path,
) -> anyhow::Result<String> {
    let path = |path: &std::path::Path| path.to_str().expect("a UTF-8 path").to_string();
    let (bundle, ca, secret) = (path(bundle), path(ca), path(secret));
    net.cli(&[
        "audit",
        "subject",
        "--bundle",
        &bundle,
        "--ca-cert",
        &ca,
        "--record-key",
        "91310106B",
        "--secret-file",
        &secret,
    ])
}
