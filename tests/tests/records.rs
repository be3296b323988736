//! A department's authoritative records through the real `civmesh` binary:
//! the dataset is published with `civmesh policy submit`, rows come in with
//! `civmesh records import` (CSV and JSONL), bad rows are reported by line
//! and not written, and every version is kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_testnet::city::city;
use civmesh_testnet::{SnapshotPolicy, Testnet};

const DATASET: &str = "market-supervision/enterprise-registry";

fn publish_command() -> serde_json::Value {
    serde_json::json!({ "PublishDataset": {
        "id": DATASET,
        "title": "Enterprise registry",
        "subject_key_field": "credit_code",
        "sharing": "conditional",
        "fields": [
            { "name": "credit_code", "field_type": "text", "class": "public" },
            { "name": "name", "field_type": "text", "class": "public" },
            { "name": "registered_address", "field_type": "text", "class": "public" },
            { "name": "operating_address", "field_type": "text", "class": "internal" },
            { "name": "employees", "field_type": "integer", "class": "internal" }
        ]
    }})
}

#[test]
fn records_are_imported_validated_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "jingansi"]);
    let mut net = Testnet::create(dir.path(), &specs, SnapshotPolicy::default()).unwrap();
    net.start_all().unwrap();
    net.bootstrap().unwrap();
    let node_dir = |index: usize| net.nodes[index].data_dir.to_str().unwrap().to_string();
    let market = node_dir(1);

    let command_file = dir.path().join("publish.json");
    std::fs::write(&command_file, publish_command().to_string()).unwrap();
    net.cli(&["policy", "submit", "--node-dir", &market, command_file.to_str().unwrap()]).unwrap();

    let csv = dir.path().join("enterprises.csv");
    std::fs::write(
        &csv,
        "credit_code,name,registered_address,operating_address,employees\n\
         91310106A,Jing'an Tea House,1 Nanjing West Rd,1 Nanjing West Rd,12\n\
         91310106B,Temple Books,2 Yuyuan Rd,88 Changde Rd,many\n\
         91310106C,Silk Lane,3 Huashan Rd,,4\n",
    )
    .unwrap();
    let refused = net.cli(&[
        "records",
        "import",
        "--node-dir",
        &market,
        "--dataset",
        DATASET,
        "--batch",
        "registry-2026",
        csv.to_str().unwrap(),
    ]);
    let error = refused.unwrap_err().to_string();
    assert!(error.contains("line 3") && error.contains("employees"), "{error}");
    assert!(error.contains("1 rows were refused"), "{error}");

    let jsonl = dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"credit_code\":\"91310106A\",\"name\":\"Jing'an Tea House\",\"operating_address\":\"9 Wuding Rd\"}\n\
         {\"credit_code\":\"91310106D\",\"colour\":\"red\"}\n\
         not json\n",
    )
    .unwrap();
    let error = net
        .cli(&["records", "import", "--node-dir", &market, "--dataset", DATASET, jsonl.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 2") && error.contains("colour"), "{error}");
    assert!(error.contains("line 3"), "{error}");

    let shown = net
        .cli(&["records", "show", "--node-dir", &market, "--dataset", DATASET, "--key", "91310106A"])
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(answer["count"], 2, "{answer}");
    assert_eq!(answer["history"].as_array().unwrap().len(), 2);
    assert_eq!(answer["record"]["version"], 2);
    assert_eq!(answer["record"]["fields"]["operating_address"], "9 Wuding Rd");
    assert_eq!(answer["history"][0]["fields"]["operating_address"], "1 Nanjing West Rd");
    assert_eq!(answer["history"][0]["provenance"]["import"]["batch"], "registry-2026");
    let never = net
        .cli(&["records", "show", "--node-dir", &market, "--dataset", DATASET, "--key", "91310106B"])
        .unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&never).unwrap()["record"], serde_json::Value::Null);

    // Only the owner writes its records.
    let street = node_dir(3);
    let error = net
        .cli(&["records", "import", "--node-dir", &street, "--dataset", DATASET, csv.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not own"), "{error}");
    let error = net
        .cli(&["records", "import", "--node-dir", &market, "--dataset", "x/unknown", csv.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no dataset"), "{error}");
}
