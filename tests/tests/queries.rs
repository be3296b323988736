//! Queries between real processes: a street asks market supervision for an
//! enterprise record over libp2p. Without a grant it is denied; with a grant
//! for two fields it gets exactly those, masked as granted; both accesses are
//! on every replica's access log; an owner cut off from the quorum refuses to
//! release anything.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::MaskingRule;
use civmesh_policy::Command;
use civmesh_testnet::city::{city, enterprise_dataset, street_inspection_grant, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};

fn sign(key: &NodeKey, command: Command) -> civmesh_policy::SignedCommand {
    SignedEnvelope::sign(key, &command, now_unix_millis()).unwrap()
}

fn query(net: &Testnet, index: usize, grant: Option<u64>) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({
        "dataset": ENTERPRISES,
        "keys": ["91310106A"],
        "fields": ["name", "operating_address", "legal_rep_phone"],
        "purpose": "street-inspection",
        "grant": grant,
    });
    net.api(index)?.send("POST", "/v1/query", &body)
}

fn access_log(net: &Testnet, index: usize) -> Vec<serde_json::Value> {
    net.access_log(index).unwrap()
}

#[test]
fn a_street_reads_exactly_what_its_grant_allows_and_every_access_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "jingansi"]);
    let net = Testnet::launch(dir.path(), &specs).unwrap();
    let market = NodeKey::load(&net.nodes[1].data_dir.join("node.key")).unwrap();
    let outcome =
        net.api(1).unwrap().submit(&[sign(&market, Command::PublishDataset(enterprise_dataset()))]).unwrap();
    assert!(outcome.outcomes[0].is_ok());
    let csv = dir.path().join("enterprises.csv");
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,88 Changde Road,13800001111,,\n").unwrap();
    net.import(1, ENTERPRISES, &csv).unwrap();

    // No grant: denied, and the denial is logged.
    let denied = query(&net, 3, None).unwrap();
    assert_eq!(denied["Denied"]["reason"], "grant_required", "{denied}");

    // A grant for two fields, one masked.
    let grant = street_inspection_grant(
        "street/jingansi",
        &["name", "operating_address"],
        &[("operating_address", MaskingRule::KeepFirst(2))],
    )
    .unwrap();
    let issued = net.api(1).unwrap().submit(&[sign(&market, Command::IssueGrant(grant))]).unwrap();
    let grant_id = issued.outcomes[0].as_ref().map(|applied| match applied {
        civmesh_policy::Applied::GrantIssued(id) => *id,
        other => panic!("{other:?}"),
    });
    let grant_id = grant_id.unwrap();
    let released = wait_until("the grant to reach the street", Duration::from_secs(10), || {
        query(&net, 3, Some(grant_id)).ok().filter(|answer| answer.get("Released").is_some())
    })
    .unwrap();
    let record = &released["Released"]["records"][0];
    let fields = record["fields"].as_object().unwrap();
    assert_eq!(fields.len(), 2, "{released}");
    assert_eq!(fields["name"], "Jing'an Tea House");
    assert_eq!(fields["operating_address"], "88*************");
    assert_eq!(record["withheld"]["legal_rep_phone"], "field_not_granted");

    // Both accesses are on every replica, which counts them; the owner and
    // the requester see the same two, the others none (they concern
    // neither the hub nor civil affairs).
    let expected = wait_until("the access log on every replica", Duration::from_secs(20), || {
        let totals: Vec<u64> = (0..4).map(|index| net.access_log_total(index).ok()).collect::<Option<_>>()?;
        let (owner, street) = (access_log(&net, 1), access_log(&net, 3));
        (totals == [2; 4] && owner.len() == 2 && owner == street).then_some(owner)
    })
    .unwrap();
    assert!(access_log(&net, 0).is_empty() && access_log(&net, 2).is_empty(), "others' entries shown");
    assert_eq!(expected[0]["outcome"], "deny");
    assert_eq!(expected[1]["outcome"], "permit");
    assert_eq!(expected[1]["released"][0][1], serde_json::json!(["name", "operating_address"]));
    let street_peer = &net.nodes[3].peer_id;
    assert!(expected.iter().all(|entry| entry["requester"] == *street_peer));
    // People read organisations, and dates in Asia/Shanghai.
    assert!(expected.iter().all(|entry| entry["requester_org"] == "street/jingansi"
        && entry["owner_org"] == "dept/market-supervision"
        && entry["decided_at"].as_str().is_some_and(|at| at.ends_with("+08:00"))));
    let log_text = serde_json::to_string(&expected).unwrap();
    assert!(
        !log_text.contains("91310106A") && !log_text.contains("Changde"),
        "personal data in the access log"
    );

    // The same through the CLI, and the catalog report.
    let street_dir = net.nodes[3].data_dir.to_str().unwrap().to_string();
    let grant_text = grant_id.to_string();
    let query_name = |purpose: &str, grant: &[&str]| {
        let mut args = vec![
            "query",
            "--node-dir",
            &street_dir,
            "--dataset",
            ENTERPRISES,
            "--record-key",
            "91310106A",
            "--field",
            "name",
            "--purpose",
            purpose,
        ];
        args.extend_from_slice(grant);
        net.cli(&args)
    };
    let printed = query_name("street-inspection", &["--grant", &grant_text]).unwrap();
    assert!(printed.contains("Jing'an Tea House") && !printed.contains("Changde"), "{printed}");
    let market_dir = net.nodes[1].data_dir.to_str().unwrap().to_string();
    let report: serde_json::Value =
        serde_json::from_str(&net.cli(&["catalog", "match", "--node-dir", &market_dir]).unwrap()).unwrap();
    assert_eq!(report["datasets_without_demand"], serde_json::json!([ENTERPRISES]), "{report}");

    // The owner counts what it answered; the requester what it asked.
    let owner_metrics = net.api(1).unwrap().get_text("/metrics").unwrap();
    assert!(
        owner_metrics.contains("civmesh_queries_answered_total{outcome=\"released\"} 2"),
        "{owner_metrics}"
    );
    assert!(
        owner_metrics.contains("civmesh_queries_answered_total{outcome=\"denied\"} 1"),
        "{owner_metrics}"
    );
    assert!(owner_metrics.contains("civmesh_records_imported_total 1"), "{owner_metrics}");
    let street_metrics = net.api(3).unwrap().get_text("/metrics").unwrap();
    assert!(
        street_metrics.contains("civmesh_queries_asked_total{outcome=\"released\"} 2"),
        "{street_metrics}"
    );
    assert!(street_metrics.contains("civmesh_raft_applied_index"), "{street_metrics}");
    // The policy log's database reports its memory: the memtables hold the
    // commands applied so far.
    let memtables = "civmesh_policy_log_storage_memory_bytes{kind=\"memtables\"}";
    let memtables_bytes = civmesh_testnet::metric_value(&street_metrics, memtables).unwrap();
    assert!(memtables_bytes > 0.0, "{street_metrics}");

    // The owner cut off from the quorum releases nothing.
    net.freeze(0).unwrap();
    net.freeze(2).unwrap();
    let refused = query(&net, 3, Some(grant_id));
    net.thaw(0).unwrap();
    net.thaw(2).unwrap();
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("nothing released"), "{error}");
    // A query that gets nothing exits non-zero.
    let denied = query_name("marketing", &[]).unwrap_err().to_string();
    assert!(denied.contains("the query was denied"), "{denied}");
}
