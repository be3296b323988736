//! Retention between real processes: a street's copies of a registry,
//! received under a grant, are deleted physically when their retention
//! ends or their grant is revoked, and each deletion is confirmed by a
//! receipt in the log. A holder down at the time deletes at restart before
//! it answers anything; meanwhile every replica shows the deletion overdue.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use civmesh_policy::deletion::Retention;
use civmesh_policy::Command;
use civmesh_testnet::city::{
    city, enterprise_dataset, street_inspection_grant, write_enterprises, ENTERPRISES,
};
use civmesh_testnet::{wait_until, SnapshotPolicy, Testnet};
use serde_json::Value;

const HUB: usize = 0;
const MARKET: usize = 1;
const STREET: usize = 3;
const ENTERPRISES_IMPORTED: usize = 20;

/// A federation whose street sweeps every second, with the registry
/// published and imported.
fn federation(dir: &Path) -> Testnet {
    let mut net =
        Testnet::create(dir, &city(&["hub", "market", "civil", "jingansi"]), SnapshotPolicy::default())
            .unwrap();
    net.configure(STREET, |config| config.retention.sweep_interval_ms = 1_000).unwrap();
    net.start_all().unwrap();
    net.bootstrap().unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let csv = dir.join("enterprises.csv");
    write_enterprises(&csv, ENTERPRISES_IMPORTED).unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    net
}

/// Issues a grant of names and addresses to the street with `retention`,
/// subscribes the street under it, and waits for its whole copy; the
/// grant's id and the subscription's.
fn subscribed(net: &Testnet, retention: Retention) -> (u64, String) {
    let mut spec = street_inspection_grant("street/jingansi", &["name", "operating_address"], &[]).unwrap();
    spec.retention = Some(retention);
    let grant = net.issue_grant(MARKET, spec, STREET).unwrap();
    let request = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": grant,
    });
    let subscribed: Value = net.api(STREET).unwrap().send("POST", "/v1/subscriptions", &request).unwrap();
    let subscription = subscribed["subscription"].as_str().unwrap().to_string();
    wait_until("the street's whole copy", Duration::from_secs(30), || {
        (held(net, &subscription)? == ENTERPRISES_IMPORTED as u64).then_some(())
    })
    .unwrap();
    (grant, subscription)
}

/// How many records the street's copy holds, by its API.
fn held(net: &Testnet, subscription: &str) -> Option<u64> {
    let view: Value = net.api(STREET).ok()?.get(&format!("/v1/subscriptions/{subscription}")).ok()?;
    view["records_held"].as_u64()
}

/// The street's holding under `grant`, as node `node`'s replica has it.
fn holding(net: &Testnet, node: usize, grant: u64) -> Option<Value> {
    let deletions: Value = net.api(node).ok()?.get("/v1/deletions").ok()?;
    deletions["holdings"].as_array()?.iter().find(|row| row["grant"] == grant).cloned()
}

fn overdue(net: &Testnet, node: usize) -> Option<Vec<Value>> {
    let deletions: Value = net.api(node).ok()?.get("/v1/deletions").ok()?;
    deletions["overdue"].as_array().cloned()
}

/// The records the street's store holds in `subscription`'s copy, read by
/// opening the store itself (the node must be stopped).
fn copies_on_disk(net: &Testnet, subscription: &str) -> usize {
    let store =
        civmesh_node::records::RecordStore::open(&net.nodes[STREET].data_dir.join("records")).unwrap();
    let digest = civmesh_policy::hex_digest::from_hex(subscription).unwrap();
    store.copies(&digest, None, 1_000).unwrap().len()
}

#[test]
fn copies_past_their_retention_are_deleted_and_a_receipt_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = federation(dir.path());
    let retention = Retention { keep_ms: 8_000, delete_within_ms: 12_000 };
    let (grant, subscription) = subscribed(&net, retention);
    let held_at_first = holding(&net, HUB, grant).unwrap();
    assert_eq!(held_at_first["holder_org"], "street/jingansi");
    assert_eq!(held_at_first["receipts"], 0);

    let receipt = wait_until("the retention receipt on the hub's replica", Duration::from_secs(40), || {
        let row = holding(&net, HUB, grant)?;
        (row["receipts"].as_u64()? >= 1 && row["retained_since_ms"].is_null()).then_some(row)
    })
    .unwrap();
    assert!(
        receipt["deleted_before_ms"].as_u64().unwrap() > held_at_first["last_release_ms"].as_u64().unwrap()
    );
    assert_eq!(held(&net, &subscription), Some(0));
    assert_eq!(overdue(&net, HUB).unwrap(), Vec::<Value>::new());

    net.stop(STREET).unwrap();
    assert_eq!(copies_on_disk(&net, &subscription), 0, "deleted from the store, not only from the count");
}

#[test]
fn a_holder_down_when_its_grant_is_revoked_deletes_at_restart_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = federation(dir.path());
    let retention = Retention { keep_ms: 365 * 86_400_000, delete_within_ms: 3_000 };
    let (grant, subscription) = subscribed(&net, retention);

    net.kill9(STREET).unwrap();
    net.sign_and_submit(
        MARKET,
        MARKET,
        Command::RevokeGrant { grant_id: grant, reason: "inspection over".into() },
    )
    .unwrap();
    let flagged =
        wait_until("the deletion overdue while the holder is down", Duration::from_secs(20), || {
            overdue(&net, HUB).filter(|overdue| !overdue.is_empty())
        })
        .unwrap();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0]["grant"], grant);
    assert_eq!(flagged[0]["holder_org"], "street/jingansi");
    assert_eq!(flagged[0]["cause"], "grant_ended");
    let metrics = net.api(HUB).unwrap().get_text("/metrics").unwrap();
    assert!(metrics.lines().any(|line| line == "civmesh_deletions_overdue 1"), "{metrics}");
    // The auditor's report, offline, from the log up to its latest entry
    // (an entry after the deadline, so the deadline has passed in the log).
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let audited = audit(&net, dir.path(), "while-down");
    assert!(audited.contains("OVERDUE: street/jingansi under grant"), "{audited}");

    // Back up: its copies are gone before its API answers at all.
    net.start(STREET).unwrap();
    assert_eq!(held(&net, &subscription), Some(0), "deleted before the node served anything");
    let confirmed = wait_until("the receipt on the hub's replica", Duration::from_secs(20), || {
        let row = holding(&net, HUB, grant)?;
        (!row["ended_deleted_at_ms"].is_null()).then_some(row)
    })
    .unwrap();
    assert_eq!(confirmed["receipts"], 1);
    wait_until("the flag cleared", Duration::from_secs(10), || {
        overdue(&net, HUB).filter(|overdue| overdue.is_empty())
    })
    .unwrap();
    let audited = audit(&net, dir.path(), "after");
    assert!(!audited.contains("OVERDUE"), "{audited}");
    assert!(audited.contains("street/jingansi: 1 grant(s) held, 1 receipt(s), 0 overdue"), "{audited}");
    net.stop(STREET).unwrap();
    assert_eq!(copies_on_disk(&net, &subscription), 0);
}

/// The hub's log exported as bundle `name` and verified offline; what the
/// verifier printed.
fn audit(net: &Testnet, dir: &Path, name: &str) -> String {
    let bundle = dir.join(format!("{name}.bundle"));
    net.audit_export(HUB, &bundle).unwrap();
    let ca = net.ca_dir.join("ca.pem");
    net.audit_verify(&bundle, &ca, &dir.join(format!("{name}-seen.json"))).unwrap()
}

#[test]
fn a_withdrawn_consent_stops_pushes_and_the_holder_deletes_that_subjects_copy() {
    use civmesh_policy::fixtures::{resident_dataset, statutory_grant, RESIDENTS};
    use civmesh_policy::model::LegalBasis;
    use civmesh_testnet::city::{resident_key, write_residents};
    const CIVIL: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let net = federation(dir.path());
    net.sign_and_submit(CIVIL, CIVIL, Command::PublishDataset(resident_dataset())).unwrap();
    let csv = dir.path().join("residents.csv");
    write_residents(&csv, 6).unwrap();
    net.import(CIVIL, RESIDENTS, &csv).unwrap();
    let now_ms = civmesh_certs::now_unix_millis();
    let street = civmesh_certs::OrgId::new("street/jingansi").unwrap();
    let mut spec = statutory_grant(
        RESIDENTS,
        &street,
        &["name", "age"],
        "elderly-care",
        now_ms - 60_000..now_ms + 86_400_000,
    );
    spec.legal_basis = LegalBasis::Consent;
    spec.retention = Some(Retention { keep_ms: 365 * 86_400_000, delete_within_ms: 3_000 });
    let grant = net.issue_grant(CIVIL, spec, STREET).unwrap();
    // The owner records each consent by record key; only its hash under
    // the key civil affairs shares with the street is logged.
    let consent = |index: usize, given: bool| {
        let request = serde_json::json!({
            "dataset": RESIDENTS, "record_key": resident_key(index), "grantee": "street/jingansi",
            "purpose": "elderly-care", "given": given, "channel": "street_window",
        });
        let _: Value = net.api(CIVIL).unwrap().send("POST", "/v1/consents", &request).unwrap();
    };
    for index in 0..3 {
        consent(index, true);
    }
    let request = serde_json::json!({
        "dataset": RESIDENTS, "fields": ["name", "age"], "purpose": "elderly-care", "grant": grant,
    });
    let subscribed: Value = wait_until("the consents at the owner", Duration::from_secs(10), || {
        net.api(STREET).ok()?.send("POST", "/v1/subscriptions", &request).ok()
    })
    .unwrap();
    let subscription = subscribed["subscription"].as_str().unwrap().to_string();
    wait_until("the consenting residents' copies", Duration::from_secs(30), || {
        (held(&net, &subscription)? == 3).then_some(())
    })
    .unwrap();

    consent(0, false);
    let confirmed =
        wait_until("the withdrawal's receipt on the hub's replica", Duration::from_secs(20), || {
            let row = holding(&net, HUB, grant)?;
            (row["receipts"].as_u64()? >= 1 && row["withdrawals_due"].as_object()?.is_empty()).then_some(row)
        })
        .unwrap();
    assert!(confirmed["ended_deleted_at_ms"].is_null(), "only that subject's copy: {confirmed}");
    assert_eq!(held(&net, &subscription), Some(2));

    // Both residents change; only the one still consenting is pushed.
    let changed = dir.path().join("changed.csv");
    let rows = std::fs::read_to_string(&csv).unwrap();
    let mut lines = rows.lines();
    let header = lines.next().unwrap();
    let renamed: Vec<String> = lines.take(2).map(|line| line.replacen("Resident ", "Renamed ", 1)).collect();
    std::fs::write(&changed, format!("{header}\n{}\n", renamed.join("\n"))).unwrap();
    net.import(CIVIL, RESIDENTS, &changed).unwrap();
    let records: Vec<Value> = wait_until("the consenting resident's push", Duration::from_secs(20), || {
        let page: Value = net
            .api(STREET)
            .ok()?
            .send("POST", &format!("/v1/subscriptions/{subscription}/records"), &serde_json::json!({}))
            .ok()?;
        let records = page["records"].as_array()?.clone();
        records.iter().any(|record| record["version"] == 2).then_some(records)
    })
    .unwrap();
    let withdrawn = net.subject_hash(CIVIL, STREET, &resident_key(0)).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|record| record["subject"] != serde_json::json!(withdrawn)), "{records:?}");
}

#[test]
fn kept_answers_are_held_under_their_grant_and_deleted_with_it() {
    use civmesh_testnet::city::enterprise_key;
    let dir = tempfile::tempdir().unwrap();
    let net = federation(dir.path());
    let mut spec = street_inspection_grant("street/jingansi", &["name", "operating_address"], &[]).unwrap();
    spec.retention = Some(Retention { keep_ms: 365 * 86_400_000, delete_within_ms: 3_000 });
    let grant = net.issue_grant(MARKET, spec, STREET).unwrap();
    let fields = ["name", "operating_address"];
    let query = serde_json::json!({
        "dataset": ENTERPRISES, "keys": [enterprise_key(0), enterprise_key(1)], "fields": fields,
        "purpose": "street-inspection", "grant": grant, "keep": true,
    });
    let api = net.api(STREET).unwrap();
    let answer: Value = api.send("POST", "/v1/query", &query).unwrap();
    assert_eq!(answer["Released"]["records"].as_array().map(Vec::len), Some(2), "{answer}");
    let unkept = serde_json::json!({
        "dataset": ENTERPRISES, "keys": [enterprise_key(2)], "fields": fields, "purpose": "street-inspection",
        "grant": grant,
    });
    let _: Value = api.send("POST", "/v1/query", &unkept).unwrap();
    let sources: Vec<Value> = api.get("/v1/received").unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(sources[0]["source"], "kept");
    assert_eq!(sources[0]["owner_org"], "dept/market-supervision");
    assert_eq!(sources[0]["grant"], grant);
    assert_eq!(sources[0]["records_held"], 2, "only the answer asked to be kept");
    let page = serde_json::json!({
        "dataset": ENTERPRISES, "grant": grant, "fields": fields, "purpose": "street-inspection", "keep": true,
        "page_size": 100,
    });
    let _: Value = api.send("POST", "/v1/query/list", &page).unwrap();
    let sources: Vec<Value> = api.get("/v1/received").unwrap();
    assert_eq!(sources[0]["records_held"], ENTERPRISES_IMPORTED, "the listing's page joins the same copy");
    let id = sources[0]["id"].as_str().unwrap().to_string();
    let copies: Value = api
        .send("POST", &format!("/v1/received/{id}/records"), &serde_json::json!({ "page_size": 5 }))
        .unwrap();
    assert_eq!(copies["records"].as_array().map(Vec::len), Some(5));
    // Without a grant nothing can be kept: its copies would fall under no retention.
    let refused = api.send::<_, Value>("POST", "/v1/query", &serde_json::json!({
        "dataset": ENTERPRISES, "keys": [enterprise_key(0)], "fields": ["name"], "purpose": "street-inspection",
        "keep": true,
    }));
    assert!(refused.unwrap_err().to_string().contains("needs the grant"));

    net.sign_and_submit(MARKET, MARKET, Command::RevokeGrant { grant_id: grant, reason: "done".into() })
        .unwrap();
    wait_until("the kept copies deleted and confirmed", Duration::from_secs(20), || {
        let sources: Vec<Value> = net.api(STREET).ok()?.get("/v1/received").ok()?;
        let row = holding(&net, HUB, grant)?;
        (sources[0]["records_held"] == 0 && !row["ended_deleted_at_ms"].is_null()).then_some(())
    })
    .unwrap();
}
