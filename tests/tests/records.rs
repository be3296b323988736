//! A department's authoritative records through the real `civmesh` binary:
//! the dataset is published with `civmesh policy submit`, rows come in with
//! `civmesh records import` (CSV and JSONL, UTF-8 or GBK), bad rows are
//! reported by line and, by default, nothing is written; unchanged rows write
//! no version; every version is kept.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_testnet::city::city;
use civmesh_testnet::Testnet;

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
    let net = Testnet::launch(dir.path(), &specs).unwrap();
    let node_dir = |index: usize| net.nodes[index].data_dir.to_str().unwrap().to_string();
    let market = node_dir(1);

    let command_file = dir.path().join("publish.json");
    std::fs::write(&command_file, publish_command().to_string()).unwrap();
    net.cli(&["policy", "submit", "--node-dir", &market, command_file.to_str().unwrap()]).unwrap();

    let import = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["records", "import", "--node-dir", &market, "--dataset", DATASET];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        net.cli(&args)
    };
    let show = |key: &str| -> serde_json::Value {
        let shown = net
            .cli(&["records", "show", "--node-dir", &market, "--dataset", DATASET, "--record-key", key])
            .unwrap();
        serde_json::from_str(&shown).unwrap()
    };

    // Atomic by default: one bad row, and nothing is written.
    let csv = dir.path().join("enterprises.csv");
    std::fs::write(
        &csv,
        "credit_code,name,registered_address,operating_address,employees\n\
         91310106A,Jing'an Tea House,1 Nanjing West Rd,1 Nanjing West Rd,12\n\
         91310106B,Temple Books,2 Yuyuan Rd,88 Changde Rd,many\n\
         91310106C,Silk Lane,3 Huashan Rd,,4\n",
    )
    .unwrap();
    let error = import(&csv, &["--batch", "registry-2026"]).unwrap_err().to_string();
    assert!(error.contains("line 3") && error.contains("employees"), "{error}");
    assert!(error.contains("nothing written: 1 rows were refused"), "{error}");
    assert_eq!(show("91310106A")["record"], serde_json::Value::Null, "nothing was written");

    // A first line number at the top of its range is answered, not a
    // dropped connection (found by schemathesis): line numbers saturate.
    let rows =
        serde_json::json!({ "batch": "edge", "first_line": u64::MAX, "rows": [{}, {}], "dry_run": true });
    let path = format!("/v1/records/import?dataset={}", DATASET.replace('/', "%2F"));
    let answer: serde_json::Value = net.api(1).unwrap().send("POST", &path, &rows).unwrap();
    assert_eq!(answer["failures"].as_array().map(Vec::len), Some(2), "{answer}");

    // --partial writes the good rows and reports the bad one.
    let printed = import(&csv, &["--batch", "registry-2026", "--partial"]).unwrap();
    assert!(printed.contains("2 rows written") && printed.contains("1 refused"), "{printed}");
    // The same file again (a nightly sync): no version, nothing written.
    let printed = import(&csv, &["--partial"]).unwrap();
    assert!(printed.contains("0 rows written") && printed.contains("2 unchanged"), "{printed}");
    let answer = show("91310106A");
    assert_eq!(answer["count"], 2, "{answer}");
    assert_eq!(answer["history"].as_array().unwrap().len(), 1, "an unchanged row writes no version");
    assert_eq!(answer["history"][0]["provenance"]["import"]["batch"], "registry-2026");
    // A record key never goes in a URL: GET /v1/records counts, and a key there is refused.
    let count: serde_json::Value = net.api(1).unwrap().get(&path.replace("/import", "")).unwrap();
    assert_eq!((count["count"].as_u64(), &count["record"]), (Some(2), &serde_json::Value::Null), "{count}");
    let keyed = format!("{}&key=91310106A", path.replace("/import", ""));
    let error = net.api(1).unwrap().get::<serde_json::Value>(&keyed).unwrap_err().to_string();
    assert!(error.contains("answered 400") && error.contains("unknown field `key`"), "{error}");

    // A missing declared column and a key twice in one file are refused by line.
    let missing = dir.path().join("missing.csv");
    std::fs::write(
        &missing,
        "credit_code,name,registered_address,operating_address\n91310106D,Bund Cafe,,\n",
    )
    .unwrap();
    let error = import(&missing, &[]).unwrap_err().to_string();
    assert!(error.contains("line 1") && error.contains("\"employees\""), "{error}");
    let twice = dir.path().join("twice.csv");
    std::fs::write(
        &twice,
        "credit_code,name,registered_address,operating_address,employees\n\
         91310106D,Bund Cafe,,,1\n\
         91310106D,Bund Cafe II,,,2\n",
    )
    .unwrap();
    let error = import(&twice, &[]).unwrap_err().to_string();
    assert!(error.contains("line 3: the same credit_code as line 2"), "{error}");
    assert_eq!(show("91310106D")["record"], serde_json::Value::Null);

    // JSONL: every bad line reported, nothing written.
    let jsonl = dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"credit_code\":\"91310106A\",\"name\":\"Jing'an Tea House\",\"registered_address\":null,\"operating_address\":\"9 Wuding Rd\",\"employees\":12}\n\
         {\"credit_code\":\"91310106D\",\"colour\":\"red\"}\n\
         not json\n",
    )
    .unwrap();
    let error = import(&jsonl, &[]).unwrap_err().to_string();
    assert!(error.contains("line 2") && error.contains("line 3"), "{error}");
    assert_eq!(show("91310106A")["history"].as_array().unwrap().len(), 1);
    std::fs::write(&jsonl, "{\"credit_code\":\"91310106A\",\"name\":\"Jing'an Tea House\",\"registered_address\":null,\"operating_address\":\"9 Wuding Rd\",\"employees\":12}\n").unwrap();
    import(&jsonl, &[]).unwrap();
    let answer = show("91310106A");
    assert_eq!(answer["record"]["version"], 2);
    assert_eq!(answer["record"]["fields"]["operating_address"], "9 Wuding Rd");
    assert_eq!(answer["history"][0]["fields"]["operating_address"], "1 Nanjing West Rd");

    // GBK from Excel on Chinese Windows: refused with a hint, read with --encoding gbk.
    let gbk = dir.path().join("gbk.csv");
    let mut bytes = b"credit_code,name,registered_address,operating_address,employees\n91310106E,".to_vec();
    bytes.extend_from_slice(&[0xbe, 0xb2, 0xb0, 0xb2, 0xb2, 0xe8, 0xb9, 0xdd]); // 静安茶馆
    bytes.extend_from_slice(b",,,3\n");
    std::fs::write(&gbk, &bytes).unwrap();
    let error = import(&gbk, &[]).unwrap_err().to_string();
    assert!(
        error.contains("not UTF-8") && error.contains("line 2") && error.contains("--encoding gbk"),
        "{error}"
    );
    let error = import(&gbk, &["--encoding", "klingon"]).unwrap_err().to_string();
    assert!(error.contains("unknown encoding \"klingon\""), "{error}");
    import(&gbk, &["--encoding", "gbk"]).unwrap();
    assert_eq!(show("91310106E")["record"]["fields"]["name"], "静安茶馆");

    // An empty file is an error, not "0 rows written".
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let error = import(&empty, &[]).unwrap_err().to_string();
    assert!(error.contains("holds no rows"), "{error}");
    std::fs::write(&empty, "credit_code,name,registered_address,operating_address,employees\n").unwrap();
    let error = import(&empty, &[]).unwrap_err().to_string();
    assert!(error.contains("holds no rows"), "{error}");

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
