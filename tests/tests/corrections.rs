//! Corrections between real processes: a street corrects an enterprise's
//! operating address at market supervision, and the loop closes (applied,
//! outcome back, subscriber pushed, stages on every replica); review with
//! rejection and conflict; bad input rejected as outcomes; the owner down at
//! submission; duplicates applied once; forgeries refused.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_consensus::RaftPeer;
use civmesh_node::corrections::{CorrectionAck, CorrectionMessage};
use civmesh_node::swarm::{self, Protocol};
use civmesh_policy::correction::{CorrectionEvent, CorrectionRequest, CorrectionStage};
use civmesh_policy::model::FieldValue;
use civmesh_policy::{Applied, Command};
use civmesh_testnet::city::{city, enterprise_dataset, street_inspection_grant, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};
use serde_json::Value;

const KEY: &str = "91310106A";
const MARKET: usize = 1;
const STREET: usize = 3;
const OTHER_STREET: usize = 4;
const OLD_ADDRESS: &str = "12 Wuding Road";
const NEW_ADDRESS: &str = "88 Yanping Road";
const LEASE: &[u8] = b"%PDF-1.4 lease";

/// Hub, market, civil (voters), jingansi and nanjingxilu (learners), with the
/// enterprise registry published and one enterprise imported, and a grant
/// for jingansi on name and operating address.
fn enterprise_city(dir: &Path) -> Testnet {
    let net = Testnet::launch(dir, &city(&["hub", "market", "civil", "jingansi", "nanjingxilu"])).unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name", "operating_address"], &[]).unwrap();
    assert!(matches!(
        net.sign_and_submit(MARKET, MARKET, Command::IssueGrant(grant)),
        Ok(Applied::GrantIssued(1))
    ));
    let csv = dir.join("enterprises.csv");
    std::fs::write(
        &csv,
        format!("credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n{KEY},Jing'an Tea House,1 Huashan Road,{OLD_ADDRESS},,jingan,\n91310106B,Nanjing Bakery,2 Nanjing Road,2 Nanjing Road,,jingan,\n"),
    )
    .unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    net
}

fn dir_of(net: &Testnet, index: usize) -> &str {
    net.nodes[index].data_dir.to_str().unwrap()
}

fn submit(
    net: &Testnet,
    index: usize,
    key: &str,
    base: u64,
    changes: &[&str],
    wait_ms: u64,
) -> anyhow::Result<Value> {
    net.submit_correction(index, key, base, changes, wait_ms, &[])
}

/// `civmesh correction accept|reject` at the owner by its reviewer, with
/// `extra` arguments (e.g. `--reason`).
fn review(net: &Testnet, verb: &str, id: &str, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["correction", verb, "--node-dir", dir_of(net, MARKET), id, "--operator", "Wang Fang"];
    args.extend_from_slice(extra);
    net.cli(&args)
}

fn history(net: &Testnet, key: &str) -> Vec<Value> {
    net.record_history(MARKET, ENTERPRISES, key).unwrap()
}

/// The statistics on every node, once they agree and satisfy `done`.
fn stats_everywhere(net: &Testnet, done: impl Fn(&Value) -> bool) -> Value {
    wait_until("equal correction statistics on every node", Duration::from_secs(20), || {
        let all: Vec<Value> = (0..net.nodes.len())
            .map(|i| net.api(i).ok()?.get("/v1/corrections/stats").ok())
            .collect::<Option<_>>()?;
        (all.iter().all(|stats| *stats == all[0]) && done(&all[0])).then(|| all[0].clone())
    })
    .unwrap()
}

#[test]
fn the_operating_address_loop_closes_with_auto_accept() {
    let dir = tempfile::tempdir().unwrap();
    let net = enterprise_city(dir.path());
    net.auto_accept(MARKET, ENTERPRISES, "street/jingansi", "operating_address").unwrap();
    // The street subscribes, then queries and sees the stale address.
    let subscription = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": 1,
    });
    let _: Value = net.api(STREET).unwrap().send("POST", "/v1/subscriptions", &subscription).unwrap();
    let query = serde_json::json!({
        "dataset": ENTERPRISES, "keys": [KEY], "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": 1,
    });
    let answer: Value = net.api(STREET).unwrap().send("POST", "/v1/query", &query).unwrap();
    let record = &answer["Released"]["records"][0];
    assert_eq!(
        (record["version"].as_u64(), record["fields"]["operating_address"].as_str()),
        (Some(1), Some(OLD_ADDRESS))
    );

    // A 5 MiB photo of the shop sign goes with it; one over the bound does not.
    let photo = dir.path().join("sign.jpg");
    let photo_bytes: Vec<u8> = [0xff, 0xd8, 0xff, 0xe0]
        .into_iter()
        .chain((0..5u32 << 20).map(|i| (i * 7 + i / 4093) as u8))
        .collect();
    std::fs::write(&photo, &photo_bytes).unwrap();
    let huge = dir.path().join("huge.pdf");
    std::fs::File::create(&huge).unwrap().set_len((20 << 20) + 1).unwrap();
    let change = format!("operating_address={NEW_ADDRESS}");
    let error = net
        .submit_correction(STREET, KEY, 1, &[&change], 0, &["--attachment", huge.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(error.contains("huge.pdf is 20971521 bytes, over the bound of 20971520 bytes"), "{error}");
    let list: Vec<Value> = net.api(STREET).unwrap().get("/v1/corrections").unwrap();
    assert!(list.is_empty(), "nothing kept: {list:?}");

    let view = net
        .submit_correction(STREET, KEY, 1, &[&change], 30_000, &["--attachment", photo.to_str().unwrap()])
        .unwrap();
    assert_eq!(view["outcome"]["status"], serde_json::json!({ "applied": { "version": 2 } }), "{view}");
    let id = view["id"].as_str().unwrap().to_string();
    let digest = civmesh_node::corrections::attachments::sha256(&photo_bytes);
    assert_eq!(view["request"]["attachment_sha256"][0], civmesh_policy::hex_digest::to_hex(&digest), "hex");
    // The owner decided with the photo in hand: intact, served with its type.
    let owner_view: Value = net.api(MARKET).unwrap().get(&format!("/v1/corrections/{id}")).unwrap();
    assert_eq!(owner_view["attachments"][0]["held"], true, "{owner_view}");
    let served =
        net.api(MARKET).unwrap().get_bytes(&format!("/v1/corrections/{id}/attachments/0"), 32 << 20).unwrap();
    assert!(served == photo_bytes, "the photo arrived intact");
    let saved = dir.path().join("evidence");
    net.cli(&[
        "correction",
        "show",
        "--node-dir",
        dir_of(&net, MARKET),
        &id,
        "--save-attachments",
        saved.to_str().unwrap(),
    ])
    .unwrap();
    assert!(std::fs::read(saved.join(format!("{id}-0.jpg"))).unwrap() == photo_bytes);

    let versions = history(&net, KEY);
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["fields"]["operating_address"], NEW_ADDRESS);
    assert_eq!(versions[1]["fields"]["registered_address"], "1 Huashan Road", "other fields are kept");
    assert_eq!(versions[1]["provenance"], serde_json::json!({ "correction": { "id": id } }));

    let pushes: Vec<Value> = wait_until("the corrected version pushed", Duration::from_secs(20), || {
        let pushes: Vec<Value> = net.api(STREET).ok()?.get("/v1/subscriptions/updates").ok()?;
        pushes.into_iter().find(|push| push["body"]["records"][0]["version"] == 2).map(|push| vec![push])
    })
    .unwrap();
    assert_eq!(pushes[0]["body"]["records"][0]["fields"]["operating_address"], NEW_ADDRESS);

    let stats = stats_everywhere(&net, |stats| stats[0]["by_stage"]["outcome_delivered"] == 1);
    assert_eq!(stats[0]["owner"], "dept/market-supervision");
    assert_eq!(stats[0]["acceptance_rate"], 1.0);
    assert!(stats[0]["turnaround_ms_p50"].as_u64().is_some());
    let owner_view: Value = net.api(MARKET).unwrap().get(&format!("/v1/corrections/{id}")).unwrap();
    assert_eq!(owner_view["status"], "closed");
    let logged: BTreeSet<String> = serde_json::from_value(owner_view["stages_logged"].clone()).unwrap();
    assert_eq!(logged, BTreeSet::from(["delivered", "accepted", "applied"].map(String::from)));
    let stats_cli: Value = serde_json::from_str(
        &net.cli(&["correction", "stats", "--node-dir", dir_of(&net, OTHER_STREET)]).unwrap(),
    )
    .unwrap();
    assert_eq!(stats_cli, stats);
}

#[test]
fn review_rejects_conflicts_and_bad_input_reach_the_submitter_as_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let net = enterprise_city(dir.path());
    let change = format!("operating_address={NEW_ADDRESS}");
    // Awaiting review (no rule): the owner sees it beside the record.
    let first = submit(&net, STREET, KEY, 1, &[&change], 0).unwrap();
    let second = submit(&net, STREET, KEY, 1, &["operating_address=3 Changde Road"], 0).unwrap();
    let third = submit(&net, STREET, KEY, 1, &["operating_address=4 Jiaozhou Road"], 0).unwrap();
    let pending: Vec<Value> =
        wait_until("three corrections awaiting review", Duration::from_secs(20), || {
            let list: Vec<Value> =
                net.api(MARKET).ok()?.get("/v1/corrections?status=awaiting_review").ok()?;
            (list.len() == 3).then_some(list)
        })
        .unwrap();
    assert!(pending
        .iter()
        .all(|view| view["side"] == "inbox" && view["submitter"] == net.nodes[STREET].peer_id.as_str()));
    assert!(pending.iter().all(|view| view["submitter_org"] == "street/jingansi"), "named: {pending:?}");
    // The same content on the same base again: the same correction. A wait
    // that ends before the outcome exits 75 and prints the id to check later.
    let again = std::process::Command::new(civmesh_testnet::civmesh_binary().unwrap())
        .args([
            "correction",
            "submit",
            "--node-dir",
            dir_of(&net, STREET),
            "--dataset",
            ENTERPRISES,
            "--record-key",
            KEY,
        ])
        .args([
            "--base-version",
            "1",
            "--set",
            &change,
            "--reason",
            "operating address differs from registration",
        ])
        .args(["--evidence", "seen on inspection", "--operator", "Li Wei", "--wait-ms", "300"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(75), "{}", String::from_utf8_lossy(&again.stderr));
    let printed: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(printed["correction"], first["correction"], "the existing id");
    assert!(String::from_utf8_lossy(&again.stderr).contains("correction show"));
    let shown: Value = serde_json::from_str(
        &net.cli(&[
            "correction",
            "show",
            "--node-dir",
            dir_of(&net, MARKET),
            first["correction"].as_str().unwrap(),
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(shown["current_record"]["fields"]["operating_address"], OLD_ADDRESS);
    assert_eq!(shown["base_record"]["version"], 1);

    // Rejected with a reason.
    let rejected: Value = serde_json::from_str(
        &review(&net, "reject", first["correction"].as_str().unwrap(), &["--reason", "the shop moved back"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rejected["outcome"]["status"]["rejected"]["reason"], "the shop moved back");
    assert_eq!(
        (rejected["state"].as_str(), rejected["reviewer"].as_str()),
        (Some("rejected"), Some("Wang Fang"))
    );
    // Review needs a named operator; a misspelt status filter is an error naming it.
    let error = net
        .api(MARKET)
        .unwrap()
        .send::<_, Value>(
            "POST",
            &format!("/v1/corrections/{}/accept", second["correction"].as_str().unwrap()),
            &(),
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("name the operator"), "{error}");
    let error = net
        .cli(&["correction", "list", "--node-dir", dir_of(&net, MARKET), "--status", "awaiting_reveiw"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown status \"awaiting_reveiw\""), "{error}");
    let refused =
        net.api(MARKET).unwrap().get::<Value>("/v1/corrections?status=closd").unwrap_err().to_string();
    assert!(refused.contains("400") && refused.contains("closd"), "{refused}");
    // Accepted: applied as version 2. The third, on the same base, is then a conflict.
    let accepted: Value = net
        .api(MARKET)
        .unwrap()
        .send(
            "POST",
            &format!("/v1/corrections/{}/accept", second["correction"].as_str().unwrap()),
            &serde_json::json!({ "operator": "Wang Fang" }),
        )
        .unwrap();
    assert_eq!(accepted["outcome"]["status"], serde_json::json!({ "applied": { "version": 2 } }));
    // Accepting the third ends in a conflict: the CLI says so and exits non-zero.
    let error = review(&net, "accept", third["correction"].as_str().unwrap(), &[]).unwrap_err().to_string();
    assert!(error.contains("was not accepted: it is conflict"), "{error}");
    let conflict: Value = net
        .api(MARKET)
        .unwrap()
        .get(&format!("/v1/corrections/{}", third["correction"].as_str().unwrap()))
        .unwrap();
    assert_eq!(conflict["outcome"]["status"], serde_json::json!({ "conflict": { "current_version": 2 } }));
    // A stale base is a conflict at once; resubmitted on the new version, it goes through.
    let stale = submit(&net, STREET, KEY, 1, &["operating_address=5 Xikang Road"], 20_000).unwrap();
    assert_eq!(stale["outcome"]["status"], serde_json::json!({ "conflict": { "current_version": 2 } }));
    let resubmitted = submit(&net, STREET, KEY, 2, &["operating_address=5 Xikang Road"], 0).unwrap();
    wait_until("the resubmission awaiting review", Duration::from_secs(20), || {
        let view: Value = net
            .api(MARKET)
            .ok()?
            .get(&format!("/v1/corrections/{}", resubmitted["correction"].as_str()?))
            .ok()?;
        (view["status"] == "awaiting_review").then_some(())
    })
    .unwrap();
    review(&net, "accept", resubmitted["correction"].as_str().unwrap(), &[]).unwrap();
    let outcome = wait_until("the resubmission's outcome at the street", Duration::from_secs(20), || {
        let view: Value = net
            .api(STREET)
            .ok()?
            .get(&format!("/v1/corrections/{}", resubmitted["correction"].as_str()?))
            .ok()?;
        view["outcome"].is_object().then(|| view["outcome"]["status"].clone())
    })
    .unwrap();
    assert_eq!(outcome, serde_json::json!({ "applied": { "version": 3 } }));

    // Bad input: each rejected with its code, at the submitter; nothing applied.
    let cases: [(usize, &str, &str, &str); 2] =
        [(STREET, KEY, "name=5", "wrong_type"), (STREET, "91310199Z", "name=Ghost Ltd", "record_unknown")];
    for (index, key, change, code) in cases {
        let view = submit(&net, index, key, 3, &[change], 20_000).unwrap();
        assert_eq!(view["outcome"]["status"]["rejected"]["reason_code"], code, "{change}: {view}");
    }
    // A change no grant of the submitter shows (an unknown field, an
    // ungranted field, a dataset it holds no grant on) is refused by every
    // replica at submission: it never reaches the owner, and the CLI says
    // so at once with the log's code.
    let refused_at_submission: [(usize, &str); 3] =
        [(STREET, "colour=red"), (STREET, "legal_rep_phone=13800000000"), (OTHER_STREET, "name=Other")];
    for (index, change) in refused_at_submission {
        let error = submit(&net, index, KEY, 3, &[change], 20_000).unwrap_err().to_string();
        assert!(error.contains("was refused") && error.contains("CorrectionNotGranted"), "{change}: {error}");
    }
    assert_eq!(history(&net, KEY).len(), 3, "nothing more was applied");
    let stats = stats_everywhere(&net, |stats| stats[0]["by_stage"]["outcome_delivered"].as_u64() == Some(7));
    assert_eq!(stats[0]["acceptance_rate"], 2.0 / 5.0);

    // The evaluation, equal on every node: the street's two mistakes that
    // reached the owner count against the street, not the department (2
    // applied of 3 decided).
    let evaluation = wait_until("an equal evaluation on every node", Duration::from_secs(20), || {
        let all: Vec<Value> = (0..net.nodes.len())
            .map(|i| net.api(i).ok()?.get("/v1/evaluation?bucket=month").ok())
            .collect::<Option<_>>()?;
        all.iter().all(|evaluation| *evaluation == all[0]).then(|| all[0].clone())
    })
    .unwrap();
    let rows = evaluation["departments"].as_array().unwrap();
    let sum = |name: &str| rows.iter().map(|row| row[name].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("applied"), sum("rejected_by_owner"), sum("automatic_rejections"), sum("conflicts")),
        (2, 1, 2, 2),
        "{evaluation}"
    );
    if rows.len() == 1 {
        assert_eq!(rows[0]["acceptance_rate"], 2.0 / 3.0);
    }
    // Data freshness: the owner logged when each decided correction's
    // record version was written, so the age is computed, not noted.
    assert!(rows.iter().any(|row| row["record_age_ms_p50"].as_u64().is_some()), "{evaluation}");
    assert_eq!(evaluation["notes"], serde_json::json!([]), "{evaluation}");
    let streets = evaluation["streets"].as_array().unwrap();
    let jingansi = streets.iter().filter(|row| row["street"] == "street/jingansi");
    assert_eq!(jingansi.map(|row| row["mistakes"].as_u64().unwrap()).sum::<u64>(), 2);
    let csv = net.cli(&["evaluate", "--node-dir", dir_of(&net, OTHER_STREET), "--format", "csv"]).unwrap();
    assert!(
        csv.starts_with("bucket,owner,dataset,submitted,applied,rejected_by_owner,acceptance_rate,"),
        "{csv}"
    );
    assert!(csv.lines().next().unwrap().ends_with(",record_age_ms_p50,record_age_ms_p90"), "{csv}");
    let error =
        net.cli(&["evaluate", "--node-dir", dir_of(&net, MARKET), "--bucket", "fortnight"]).unwrap_err();
    assert!(error.to_string().contains("bucket \"fortnight\""), "{error}");
}

#[test]
fn imports_leave_pending_corrections_alone_unless_they_change_the_same_field() {
    let dir = tempfile::tempdir().unwrap();
    let net = enterprise_city(dir.path());
    let subscription = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": 1,
    });
    let _: Value = net.api(STREET).unwrap().send("POST", "/v1/subscriptions", &subscription).unwrap();
    let first = submit(&net, STREET, KEY, 1, &[&format!("operating_address={NEW_ADDRESS}")], 0).unwrap();
    let second = submit(&net, STREET, "91310106B", 1, &["operating_address=7 Yanping Road"], 0).unwrap();
    let (first, second) = (
        first["correction"].as_str().unwrap().to_string(),
        second["correction"].as_str().unwrap().to_string(),
    );
    let at_owner =
        |id: &str| -> Option<Value> { net.api(MARKET).ok()?.get(&format!("/v1/corrections/{id}")).ok() };
    wait_until("both corrections awaiting review", Duration::from_secs(20), || {
        let both = [&first, &second]
            .iter()
            .all(|id| at_owner(id).is_some_and(|view| view["status"] == "awaiting_review"));
        both.then_some(())
    })
    .unwrap();

    // The nightly sync of the same data: no version, corrections untouched.
    let printed = net.import(MARKET, ENTERPRISES, &dir.path().join("enterprises.csv")).unwrap();
    assert!(printed.contains("0 rows written") && printed.contains("2 unchanged"), "{printed}");
    assert_eq!(history(&net, KEY).len(), 1);
    assert_eq!(at_owner(&first).unwrap()["status"], "awaiting_review");

    // A real change: another field of the first record (district), the
    // corrected field of the second.
    let changed = dir.path().join("changed.csv");
    std::fs::write(
        &changed,
        format!(
            "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n\
             {KEY},Jing'an Tea House,1 Huashan Road,{OLD_ADDRESS},,putuo,\n\
             91310106B,Nanjing Bakery,2 Nanjing Road,2 Fuxing Road,,jingan,\n"
        ),
    )
    .unwrap();
    let printed = net.import(MARKET, ENTERPRISES, &changed).unwrap();
    assert!(printed.contains("2 rows written"), "{printed}");
    assert!(printed.contains("1 superseded by this import, 1 now in conflict"), "{printed}");
    let superseded = at_owner(&first).unwrap();
    assert_eq!(superseded["status"], serde_json::json!({ "superseded_by_import": { "import_version": 2 } }));
    assert_eq!(
        (superseded["base_record"]["version"].as_u64(), superseded["current_record"]["version"].as_u64()),
        (Some(1), Some(2)),
        "both versions shown: {superseded}"
    );
    let conflict = wait_until("the conflict at the street", Duration::from_secs(20), || {
        let view: Value = net.api(STREET).ok()?.get(&format!("/v1/corrections/{second}")).ok()?;
        view["outcome"].is_object().then(|| view["outcome"]["status"].clone())
    })
    .unwrap();
    assert_eq!(conflict, serde_json::json!({ "conflict": { "current_version": 2 } }));

    // Accepting the superseded one applies it on top of the import.
    let accepted: Value = serde_json::from_str(&review(&net, "accept", &first, &[]).unwrap()).unwrap();
    assert_eq!(
        accepted["outcome"]["status"],
        serde_json::json!({ "applied": { "version": 3 } }),
        "{accepted}"
    );
    let versions = history(&net, KEY);
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[2]["fields"]["operating_address"], NEW_ADDRESS);
    assert_eq!(versions[2]["fields"]["district"], "putuo", "the import's change is kept");
    // Pushes: the import's and the correction's versions, never a copy of version 1.
    let pushes: Vec<Value> = wait_until("the corrected version pushed", Duration::from_secs(20), || {
        let pushes: Vec<Value> = net.api(STREET).ok()?.get("/v1/subscriptions/updates").ok()?;
        pushes.iter().any(|push| push["body"]["records"][0]["version"] == 3).then_some(pushes)
    })
    .unwrap();
    assert!(
        pushes.iter().all(|push| push["body"]["records"][0]["version"].as_u64() >= Some(2)),
        "the unchanged import pushed nothing: {pushes:?}"
    );
}

#[test]
fn a_correction_waits_for_a_dead_owner_and_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = enterprise_city(dir.path());
    net.auto_accept(MARKET, ENTERPRISES, "street/jingansi", "operating_address").unwrap();
    net.kill9(MARKET).unwrap();
    let submitted = submit(&net, STREET, KEY, 1, &[&format!("operating_address={NEW_ADDRESS}")], 0).unwrap();
    let id = submitted["correction"].as_str().unwrap().to_string();
    wait_until("failed delivery attempts", Duration::from_secs(20), || {
        let view: Value = net.api(STREET).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
        (view["status"] == "awaiting_delivery" && view["attempts"].as_u64()? >= 2).then_some(())
    })
    .unwrap();
    // The street restarts too: its outbox survives.
    net.kill9(STREET).unwrap();
    net.start(STREET).unwrap();
    net.start(MARKET).unwrap();
    let outcome = wait_until("the outcome after both restarts", Duration::from_secs(40), || {
        let view: Value = net.api(STREET).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
        (view["status"] == "closed").then(|| view["outcome"]["status"].clone())
    })
    .unwrap();
    assert_eq!(outcome, serde_json::json!({ "applied": { "version": 2 } }));
    let versions = history(&net, KEY);
    let from_correction =
        versions.iter().filter(|version| version["provenance"]["correction"]["id"] == id.as_str()).count();
    assert_eq!((versions.len(), from_correction), (2, 1));
    stats_everywhere(&net, |stats| stats[0]["by_stage"]["outcome_delivered"] == 1);
}

#[test]
fn duplicates_are_applied_once_and_forgeries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = enterprise_city(dir.path());
    net.auto_accept(MARKET, ENTERPRISES, "street/jingansi", "operating_address").unwrap();
    let street = NodeKey::load(&net.nodes[STREET].data_dir.join("node.key")).unwrap();
    let subject = net.subject_hash(MARKET, STREET, KEY).unwrap();
    let request = CorrectionRequest {
        dataset: ENTERPRISES.into(),
        record_key: KEY.into(),
        base_version: 1,
        changes: [("operating_address".to_string(), FieldValue::Text(NEW_ADDRESS.into()))].into(),
        reason: "moved".into(),
        evidence_text: String::new(),
        attachment_sha256: vec![civmesh_node::corrections::attachments::sha256(LEASE)],
        operator: "Li Wei".into(),
    };
    let envelope = SignedEnvelope::sign(&street, &request, now_unix_millis()).unwrap();
    let id = envelope.digest();
    let submitted = Command::RecordCorrectionEvent(CorrectionEvent {
        correction: id,
        dataset: ENTERPRISES.into(),
        subject,
        submitter: street.node_id(),
        stage: CorrectionStage::Submitted,
        payload_sha256: id,
        fields: BTreeSet::from(["operating_address".to_string()]),
        reason_code: None,
        version: None,
        operator: "Li Wei".into(),
        record_written_at_ms: None,
    });
    let logged = net
        .api(0)
        .unwrap()
        .submit(&[SignedEnvelope::sign(&street, &submitted, now_unix_millis()).unwrap()])
        .unwrap();
    assert!(logged.outcomes[0].is_ok(), "{:?}", logged.outcomes);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let node_json: Value =
        serde_json::from_slice(&std::fs::read(net.nodes[MARKET].data_dir.join("node.json")).unwrap())
            .unwrap();
    let owner = RaftPeer {
        node_id: net.nodes[MARKET].peer_id.parse().unwrap(),
        address: node_json["p2p_addresses"][0].as_str().unwrap().to_string(),
    };
    // Each send is a fresh libp2p client; a connection may close under a
    // request (the street's own process shares the identity), so a
    // legitimate sender tries again, a bounded number of times.
    let send_once = |key: &NodeKey, message: &CorrectionMessage| -> anyhow::Result<CorrectionAck> {
        runtime.block_on(async {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let (client, _inbound) = swarm::start(key.to_libp2p_keypair()?, "/ip4/127.0.0.1/tcp/0", stopped)?;
            client.set_allowed(BTreeSet::from([owner.node_id.to_peer_id()?])).await;
            let bytes = codec::encode(message)?;
            let answer =
                client.request_on(Protocol::Correction, &owner, bytes, Duration::from_secs(10)).await;
            let _ = stop.send(true);
            Ok(codec::decode_exact(&answer?, 1 << 20)?)
        })
    };
    let send = |key: &NodeKey, message: CorrectionMessage| -> anyhow::Result<CorrectionAck> {
        let mut last = None;
        for _ in 0..5 {
            match send_once(key, &message) {
                Ok(ack) => return Ok(ack),
                Err(error) => last = Some(error),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last.unwrap())
    };
    let wire = envelope.to_bytes().unwrap();
    // Forged: a flipped signature byte, and a request signed by a non-member relayed by a member.
    let mut bad_signature = wire.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let ack = send(&street, CorrectionMessage::Deliver(bad_signature)).unwrap();
    assert!(matches!(&ack, CorrectionAck::Refused(reason) if reason.contains("signature")), "{ack:?}");
    let stranger = NodeKey::generate().unwrap();
    let foreign = SignedEnvelope::sign(&stranger, &request, now_unix_millis()).unwrap().to_bytes().unwrap();
    let ack = send(&street, CorrectionMessage::Deliver(foreign.clone())).unwrap();
    assert!(matches!(&ack, CorrectionAck::Refused(reason) if reason.contains("another node")), "{ack:?}");
    assert!(
        send_once(&stranger, &CorrectionMessage::Deliver(foreign)).is_err(),
        "a non-member cannot even connect"
    );
    let garbage = send(&street, CorrectionMessage::Deliver(vec![7; 100])).unwrap();
    assert!(matches!(garbage, CorrectionAck::Refused(_)));
    assert_eq!(history(&net, KEY).len(), 1, "nothing changed");
    let inbox: Vec<Value> = net.api(MARKET).unwrap().get("/v1/corrections").unwrap();
    assert!(inbox.is_empty(), "nothing was kept: {inbox:?}");

    // The same correction, delivered twice: stored both times, applied once.
    for _ in 0..2 {
        assert_eq!(send(&street, CorrectionMessage::Deliver(wire.clone())).unwrap(), CorrectionAck::Stored);
    }
    // Its attachment: tampered bytes are refused and nothing is kept; the
    // signed bytes are kept (and only then does the owner decide).
    let chunk = |bytes: &[u8]| {
        let mut chunks = civmesh_node::corrections::attachments::chunks(id, 0, bytes);
        CorrectionMessage::Attachment(chunks.remove(0))
    };
    let ack = send(&street, chunk(b"%PDF-1.4 lease, altered")).unwrap();
    assert!(
        matches!(&ack, CorrectionAck::Refused(reason) if reason.contains("do not match its signed SHA-256")),
        "{ack:?}"
    );
    let id_hex = civmesh_policy::hex_digest::to_hex(&id);
    let path = format!("/v1/corrections/{id_hex}/attachments/0");
    assert!(net.api(MARKET).unwrap().get_bytes(&path, 1 << 20).is_err(), "nothing kept");
    assert_eq!(send(&street, chunk(LEASE)).unwrap(), CorrectionAck::Stored);
    assert_eq!(net.api(MARKET).unwrap().get_bytes(&path, 1 << 20).unwrap(), LEASE);
    let applied = wait_until("the correction applied", Duration::from_secs(20), || {
        let versions = history(&net, KEY);
        (versions.len() == 2).then_some(versions)
    })
    .unwrap();
    assert_eq!(applied[1]["fields"]["operating_address"], NEW_ADDRESS);
    assert_eq!(send(&street, CorrectionMessage::Deliver(wire)).unwrap(), CorrectionAck::Stored);
    // A later correction, applied after the third delivery was stored,
    // bounds the wait for a repeat of the first.
    net.submit_correction(STREET, KEY, 2, &["operating_address=77 Later Road"], 0, &[]).unwrap();
    let versions = wait_until("the later correction applied", Duration::from_secs(20), || {
        let versions = history(&net, KEY);
        (versions.len() >= 3).then_some(versions)
    })
    .unwrap();
    let from_first = versions
        .iter()
        .filter(|version| version["provenance"]["correction"]["id"] == id_hex.as_str())
        .count();
    assert_eq!((versions.len(), from_first), (3, 1), "a third delivery applies nothing: {versions:?}");
    assert_eq!(versions[2]["fields"]["operating_address"], "77 Later Road");
    // Each correction counted once, at its latest stage: the first (sent by
    // hand, so no outcome goes back) applied, the later one's outcome
    // delivered.
    stats_everywhere(&net, |stats| {
        stats[0]["by_stage"] == serde_json::json!({ "applied": 1, "outcome_delivered": 1 })
    });
}
