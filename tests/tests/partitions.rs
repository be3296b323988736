//! Partitions, with each node in a network namespace of its own: a voter and
//! a street cut off from the rest, then the owner cut off from the quorum.
//! Nothing acknowledged is lost, a correction made during the cut is
//! delivered and applied exactly once after the network heals, the owner
//! releases nothing it cannot log, the replicas converge, and the audit
//! bundle verifies afterwards. Needs root and `ip netns`.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_policy::model::LegalBasis;
use civmesh_policy::{Applied, Command};
use civmesh_testnet::city::{city, enterprise_dataset, street_inspection_grant, ENTERPRISES};
use civmesh_testnet::{netns, wait_until, SnapshotPolicy, Testnet};
use serde_json::Value;

const HUB: usize = 0;
const MARKET: usize = 1;
const CIVIL: usize = 2;
const STREET: usize = 3;

fn query(net: &Testnet, grant: u64) -> anyhow::Result<Value> {
    let body = serde_json::json!({
        "dataset": ENTERPRISES, "keys": ["91310106A"], "fields": ["name"], "purpose": "street-inspection", "grant": grant,
    });
    net.api(STREET)?.send("POST", "/v1/query", &body)
}

fn access_log_length(net: &Testnet, index: usize) -> usize {
    net.access_log_total(index).unwrap() as usize
}

/// With network namespaces (root, iproute2). Reported as ignored where
/// they are missing: `scripts/test.sh` runs it (`--ignored`) where
/// `ip netns` works; the loopback-proxy test covers partitions everywhere.
#[test]
#[ignore = "needs root and `ip netns`; scripts/test.sh runs it where namespaces work"]
fn partitions_over_network_namespaces() {
    assert!(netns::namespaces_available(), "network namespaces are not available here");
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::create_isolated(
        dir.path(),
        &city(&["hub", "market", "civil", "jingansi"]),
        SnapshotPolicy::default(),
    )
    .unwrap();
    partitions_heal_without_loss_duplicates_or_unlogged_releases(net, dir.path());
}

/// With the fault-injecting loopback proxy, everywhere.
#[test]
fn partitions_through_a_loopback_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::create_proxied(
        dir.path(),
        &city(&["hub", "market", "civil", "jingansi"]),
        SnapshotPolicy::default(),
    )
    .unwrap();
    partitions_heal_without_loss_duplicates_or_unlogged_releases(net, dir.path());
}

fn partitions_heal_without_loss_duplicates_or_unlogged_releases(mut net: Testnet, dir: &std::path::Path) {
    net.start_all().unwrap();
    net.bootstrap().unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name", "operating_address"], &[]).unwrap();
    let Applied::GrantIssued(grant) =
        net.sign_and_submit(MARKET, MARKET, Command::IssueGrant(grant)).unwrap()
    else {
        panic!("no grant id")
    };
    let csv = dir.join("enterprises.csv");
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,12 Wuding Road,,,\n")
        .unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    net.auto_accept(MARKET, ENTERPRISES, "street/jingansi", "operating_address").unwrap();
    wait_until("a first query", Duration::from_secs(20), || {
        query(&net, grant).ok()?.get("Released").map(|_| ())
    })
    .unwrap();

    // 1. A voter (civil) and the street cut off from the hub and the owner.
    net.partition(&[CIVIL, STREET], &[HUB, MARKET]).unwrap();
    let demand = Command::FileDemand {
        dataset: ENTERPRISES.into(),
        fields: ["name".to_string()].into(),
        purpose: "statistics".into(),
        legal_basis: LegalBasis::StatutoryDuty,
    };
    net.sign_and_submit(HUB, HUB, demand).expect("the majority side goes on");
    let correction = serde_json::json!({
        "dataset": ENTERPRISES, "record_key": "91310106A", "base_version": 1,
        "changes": {"operating_address": "88 Yanping Road"}, "reason": "moved", "operator": "Li Wei",
    });
    let submitted: Value = net.api(STREET).unwrap().send("POST", "/v1/corrections", &correction).unwrap();
    let id = submitted["correction"].as_str().unwrap().to_string();
    assert!(query(&net, grant).is_err(), "the street cannot reach the owner");
    wait_until("delivery attempts during the cut", Duration::from_secs(20), || {
        let view: Value = net.api(STREET).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
        (view["status"] == "awaiting_delivery" && view["attempts"].as_u64()? >= 2).then_some(())
    })
    .unwrap();
    net.heal().unwrap();
    let outcome = wait_until("the correction's outcome after the heal", Duration::from_secs(40), || {
        let view: Value = net.api(STREET).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
        (view["status"] == "closed").then(|| view["outcome"]["status"].clone())
    })
    .unwrap();
    assert_eq!(outcome, serde_json::json!({ "applied": { "version": 2 } }));
    let history = net.record_history(MARKET, "market-supervision/enterprise-registry", "91310106A").unwrap();
    let from_correction =
        history.iter().filter(|v| v["provenance"]["correction"]["id"] == id.as_str()).count();
    assert_eq!((history.len(), from_correction), (2, 1), "applied exactly once");

    // 2. The owner cut off from the other voters, not from the street: it
    // cannot log the access, so it releases nothing.
    let logged_before = access_log_length(&net, HUB);
    net.partition(&[MARKET], &[HUB, CIVIL]).unwrap();
    match query(&net, grant) {
        Ok(answer) => panic!("released without a committed access record: {answer}"),
        Err(error) => assert!(error.to_string().contains("nothing released"), "{error}"),
    }
    net.heal().unwrap();
    wait_until("queries again after the heal", Duration::from_secs(30), || {
        query(&net, grant).ok()?.get("Released").map(|_| ())
    })
    .unwrap();

    // 3. Every replica converges on the same state; the acknowledged demand is there.
    let state_hash = wait_until("identical replicas", Duration::from_secs(30), || {
        let all: Vec<_> = (0..4).map(|i| net.api(i).ok()?.status().ok()).collect::<Option<_>>()?;
        let same = all.iter().all(|s| {
            s.raft.applied_index == all[0].raft.applied_index
                && s.raft.state_digest == all[0].raft.state_digest
        });
        same.then(|| all[0].raft.state_digest.clone())
    })
    .unwrap();
    assert!(!state_hash.is_empty());
    let demands: Vec<Value> = net.api(CIVIL).unwrap().get("/v1/policy/demands").unwrap();
    assert!(
        demands.iter().any(|d| d["purpose"] == "statistics"),
        "the acknowledged demand is on the cut voter too"
    );
    assert!(access_log_length(&net, CIVIL) > logged_before);
    let stats: Value = net.api(CIVIL).unwrap().get("/v1/corrections/stats").unwrap();
    assert_eq!(stats[0]["by_stage"]["outcome_delivered"], 1, "{stats}");

    // 4. The audit bundle verifies.
    wait_until("a checkpoint over every leaf", Duration::from_secs(30), || {
        let checkpoints: Value = net.api(HUB).ok()?.get("/v1/audit/checkpoints").ok()?;
        (checkpoints["latest"]["tree_size"] == checkpoints["leaves"]).then_some(())
    })
    .unwrap();
    let bundle = dir.join("after.bundle");
    net.audit_export(HUB, &bundle).unwrap();
    net.audit_verify(&bundle, &net.ca_dir.join("ca.pem"), &dir.join("seen.json")).unwrap();
}
