//! Listings between real processes: two streets each page through the
//! enterprises of their own street, as the generator placed them, and
//! nothing else; every page is on the owner's access log, naming every
//! subject released, before the page arrives; bad filters, page sizes and
//! cursors get typed errors naming what is wrong; a page the owner read
//! ahead is not served once a record on it changed; the access log pages.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::Command;
use civmesh_testnet::city::{
    city, enterprise_dataset, enterprises_on, street_scoped_grant, write_enterprises, ENTERPRISES,
};
use civmesh_testnet::Testnet;

const ENTERPRISE_COUNT: usize = 3_000;
const MARKET: usize = 1;
const JINGANSI: usize = 3;
const NANJINGXILU: usize = 4;

fn list(net: &Testnet, street: usize, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    net.api(street)?.send("POST", "/v1/query/list", body)
}

/// Every page of `grant`'s listing at `street`, `page_size` at a time;
/// checks each page is on the owner's access log, naming exactly the page's
/// subjects, when it arrives. Returns the keys in order and the pages.
fn list_all(net: &Testnet, street: usize, grant: u64, page_size: u32) -> (Vec<String>, usize) {
    let pair_key = net.pair_key(MARKET, street).unwrap();
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = serde_json::json!({
            "dataset": ENTERPRISES, "grant": grant, "page_size": page_size, "cursor": cursor,
        });
        let answer = list(net, street, &body).unwrap();
        let page = &answer["Page"];
        let records = page["records"].as_array().expect("a page");
        assert!(records.len() <= page_size as usize);
        pages += 1;
        let page_keys: Vec<String> = records.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
        // Already on the owner's replica when the page arrived.
        let position = page["access_log_position"].as_u64().unwrap();
        let entry = net.access_log_entry(MARKET, position).unwrap().expect("the page's entry");
        assert_eq!(entry["requester_org"], net.nodes[street].spec.org.as_str());
        let released: BTreeSet<String> = entry["released"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect();
        let expected: BTreeSet<String> =
            page_keys.iter().map(|key| hex(&SubjectKeyHash::of(&pair_key, key).0)).collect();
        assert_eq!(released, expected, "page {pages} logged exactly its subjects");
        for record in records {
            let phone = record["fields"]["legal_rep_phone"].as_str().unwrap();
            assert!(phone.starts_with("*******"), "the phone is masked: {phone}");
        }
        keys.extend(page_keys);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (keys, pages),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn refusal(net: &Testnet, street: usize, body: serde_json::Value) -> String {
    let error = list(net, street, &body).expect_err("refused").to_string();
    assert!(error.contains("answered 400"), "{error}");
    error
}

#[test]
fn each_street_lists_exactly_its_own_enterprises_page_by_page_and_every_page_is_logged_first() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "jingansi", "nanjingxilu"]);
    let net = Testnet::launch(dir.path(), &specs).unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let csv = dir.path().join("enterprises.csv");
    write_enterprises(&csv, ENTERPRISE_COUNT).unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    let nanjing_grant =
        net.issue_grant(MARKET, street_scoped_grant("nanjingxilu").unwrap(), NANJINGXILU).unwrap();
    let temple_grant = net.issue_grant(MARKET, street_scoped_grant("jingansi").unwrap(), JINGANSI).unwrap();

    // Exactly the generator's set for each street, in pages, in key order.
    let nanjing = enterprises_on("nanjingxilu", ENTERPRISE_COUNT);
    assert_eq!(nanjing.len(), 500);
    let (listed, pages) = list_all(&net, NANJINGXILU, nanjing_grant, 100);
    assert_eq!(listed, nanjing);
    assert_eq!(pages, 5, "5 full pages, the last one without a cursor: the owner saw the end");
    let (temple, _) = list_all(&net, JINGANSI, temple_grant, 300);
    assert_eq!(temple, enterprises_on("jingansi", ENTERPRISE_COUNT));
    assert!(temple.iter().all(|key| !nanjing.contains(key)), "another street's records never appear");

    // A filter on the street's own street, and on another street.
    let filtered = |value: &str| {
        serde_json::json!({
            "dataset": ENTERPRISES, "grant": nanjing_grant,
            "filters": [{ "equals": { "field": "street", "value": value } }],
        })
    };
    let own = list(&net, NANJINGXILU, &filtered("nanjingxilu")).unwrap();
    assert_eq!(own["Page"]["records"].as_array().unwrap().len(), 500, "the default page holds 500");
    let other = list(&net, NANJINGXILU, &filtered("jingansi")).unwrap();
    assert_eq!(other["Page"]["records"], serde_json::json!([]), "{other}");
    assert_eq!(other["Page"]["next_cursor"], serde_json::Value::Null);
    let by_prefix = serde_json::json!({
        "dataset": ENTERPRISES, "grant": nanjing_grant,
        "filters": [{ "prefix": { "field": "street", "prefix": "nanjing" } }], "page_size": 1000,
    });
    let answer = list(&net, NANJINGXILU, &by_prefix).unwrap();
    assert_eq!(answer["Page"]["records"].as_array().unwrap().len(), 500);

    // The CLI pages through the whole scope without JSON.
    let node_dir = net.nodes[NANJINGXILU].data_dir.to_str().unwrap().to_string();
    let printed = net
        .cli(&[
            "records",
            "list",
            "--node-dir",
            &node_dir,
            "--dataset",
            ENTERPRISES,
            "--where",
            "street=nanjingxilu",
            "--page-size",
            "200",
            "--all",
        ])
        .unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 500, "{printed}");
    let first_line = format!("{} v1  credit_code=\"{}\"  legal_rep_phone=\"*******", nanjing[0], nanjing[0]);
    assert!(lines[0].starts_with(&first_line), "{}", lines[0]);

    // Bad input: a typed error naming what is wrong.
    let with_filter = |field: &str| {
        serde_json::json!({
            "dataset": ENTERPRISES, "grant": nanjing_grant,
            "filters": [{ "equals": { "field": field, "value": "x" } }],
        })
    };
    let cases = [
        (with_filter("district"), "cannot filter on \\\"district\\\": the grant does not give it"),
        (with_filter("legal_rep_phone"), "cannot filter on \\\"legal_rep_phone\\\": the grant masks it"),
        (with_filter("name"), "cannot filter on \\\"name\\\": it is not a scope field"),
        (
            serde_json::json!({ "dataset": ENTERPRISES, "grant": nanjing_grant, "page_size": 5000 }),
            "a page holds at most 1000 records; 5000 were asked for",
        ),
    ];
    for (body, expected) in cases {
        let error = refusal(&net, NANJINGXILU, body);
        assert!(error.contains(expected), "expected {expected:?} in {error}");
    }
    let first = list(
        &net,
        NANJINGXILU,
        &serde_json::json!({
            "dataset": ENTERPRISES, "grant": nanjing_grant, "page_size": 10,
        }),
    )
    .unwrap();
    let cursor = first["Page"]["next_cursor"].as_str().unwrap().to_string();
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cursor_cases = [
        (NANJINGXILU, nanjing_grant, tampered.as_str(), "not one this owner made, or it was altered"),
        (NANJINGXILU, nanjing_grant, "zz", "not one this owner made"),
        (JINGANSI, temple_grant, cursor.as_str(), "belongs to another listing"),
    ];
    for (street, grant, cursor, expected) in cursor_cases {
        let body = serde_json::json!({ "dataset": ENTERPRISES, "grant": grant, "cursor": cursor });
        let error = refusal(&net, street, body);
        assert!(error.contains(expected), "expected {expected:?} in {error}");
    }

    // The owner read the next page ahead; a record on it changes before it
    // is asked for, and the page holds the new version.
    let changed = &nanjing[10];
    let row = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .find(|line| line.starts_with(&format!("{changed},")))
        .unwrap()
        .replacen(",Enterprise ", ",Renamed Enterprise ", 1);
    let header = std::fs::read_to_string(&csv).unwrap().lines().next().unwrap().to_string();
    let update = dir.path().join("update.csv");
    std::fs::write(&update, format!("{header}\n{row}\n")).unwrap();
    net.import(MARKET, ENTERPRISES, &update).unwrap();
    let body = serde_json::json!({
        "dataset": ENTERPRISES, "grant": nanjing_grant, "page_size": 10, "cursor": cursor,
    });
    let second = list(&net, NANJINGXILU, &body).unwrap();
    let record = &second["Page"]["records"][0];
    assert_eq!(record["key"].as_str(), Some(changed.as_str()));
    assert!(record["fields"]["name"].as_str().unwrap().starts_with("Renamed "), "{record}");
    assert_eq!(record["version"], 2, "{record}");

    // The access log comes a bounded page at a time, in order, without gap.
    let log = net.access_log(MARKET).unwrap();
    let sequences: Vec<u64> = log.iter().map(|entry| entry["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.len() > 10 && sequences.iter().copied().eq(0..sequences.len() as u64), "{sequences:?}");
    let api = net.api(MARKET).unwrap();
    let page: serde_json::Value = api.get("/v1/access-log?from=3&limit=2").unwrap();
    assert_eq!((page["entries"][0]["sequence"].as_u64(), page["next_from"].as_u64()), (Some(3), Some(5)));
    assert_eq!(page["entries"][1], log[4]);
    let last = sequences.len() - 1;
    let page: serde_json::Value = api.get(&format!("/v1/access-log?from={last}&limit=0")).unwrap();
    assert_eq!(
        (page["entries"].as_array().unwrap().len(), &page["next_from"]),
        (1, &serde_json::Value::Null)
    );
    let past: serde_json::Value = api.get("/v1/access-log?from=1000000").unwrap();
    assert_eq!(
        past,
        serde_json::json!({ "entries": [], "next_from": null, "total": sequences.len(), "held_from": 0 })
    );
    let error = api.get::<serde_json::Value>("/v1/access-log?subject=x").unwrap_err().to_string();
    assert!(error.contains("answered 400"), "{error}");
}
