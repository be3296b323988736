//! Requests from the subject (PIPL Art. 44-47) between real processes: a
//! resident at the Jingansi street office asks the civil-affairs bureau,
//! which owns the resident registry. A request naming an unknown record is
//! refused with a typed error, nothing is logged, and the owner counts a
//! security event for the street; an access request is answered with a
//! report that lists the street's own query; a deletion request is logged
//! (metadata only), decided by the owner, and the record leaves the
//! owner's store; a request carrying a correction needs a token with the
//! corrections scope, and the correction names who took it.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, OrgId, SignedEnvelope};
use civmesh_policy::audit::ArchivedCommand;
use civmesh_policy::fixtures::{resident_dataset, statutory_grant, RESIDENTS};
use civmesh_policy::{Command, CommandKind};
use civmesh_testnet::city::{city, resident_key, write_residents};
use civmesh_testnet::{wait_until, Testnet};
use serde_json::{json, Value};

const HUB: usize = 0;
const CIVIL: usize = 2;
const STREET: usize = 3;

/// The subject requests in node `node`'s command archive, each with
/// whether the log accepted it.
fn filed_in_archive(net: &Testnet, node: usize) -> Vec<bool> {
    let bytes_max = 64 * 1024 * 1024;
    let page = net.api(node).unwrap().get_bytes("/v1/audit/commands?from=1&limit=2000", bytes_max).unwrap();
    let archived: Vec<ArchivedCommand> =
        civmesh_certs::codec::decode_exact(&page, bytes_max as usize).unwrap();
    archived
        .iter()
        .filter(|entry| {
            let envelope = SignedEnvelope::<Command>::from_bytes(&entry.envelope).unwrap();
            envelope.unverified_payload().unwrap().kind() == CommandKind::FileSubjectRequest
        })
        .map(|entry| entry.accepted)
        .collect()
}

/// Waits until the hub's archive holds exactly the subject requests
/// `accepted` says, each accepted or not.
fn archive_holds(net: &Testnet, accepted: &[bool]) {
    wait_until("the subject requests in the hub's archive", Duration::from_secs(10), || {
        (filed_in_archive(net, HUB) == accepted).then_some(())
    })
    .unwrap_or_else(|_| panic!("the hub's archive holds {:?}", filed_in_archive(net, HUB)));
}

/// Node `node`'s `GET /v1/subject-requests`.
fn requests(net: &Testnet, node: usize) -> Value {
    net.api(node).unwrap().get("/v1/subject-requests").unwrap()
}

/// Node `node`'s open request `id`, once its replica lists it.
fn listed(net: &Testnet, node: usize, id: &str) -> Value {
    wait_until("the request in the list", Duration::from_secs(10), || {
        let list: Value = net.api(node).ok()?.get("/v1/subject-requests").ok()?;
        list["requests"].as_array()?.iter().find(|request| request["id"] == id).cloned()
    })
    .unwrap()
}

fn cli_at(net: &Testnet, node: usize, args: &[&str]) -> anyhow::Result<String> {
    let node_dir = net.nodes[node].data_dir.to_str().unwrap().to_string();
    let mut all = vec!["subject"];
    all.extend_from_slice(&args[..1]);
    all.extend_from_slice(&["--node-dir", node_dir.as_str()]);
    all.extend_from_slice(&args[1..]);
    net.cli(&all)
}

/// The id a `civmesh subject request` printed.
fn printed_id(printed: &str) -> String {
    let id = printed.split_whitespace().nth(3).unwrap().to_string();
    assert_eq!(id.len(), 64, "{printed}");
    id
}

/// Node `node`'s count of security events of `kind`.
fn security_events(net: &Testnet, node: usize, kind: &str) -> u64 {
    let text = net.api(node).unwrap().get_text("/metrics").unwrap();
    let series = format!("civmesh_security_events_total{{outcome=\"{kind}\"}}");
    civmesh_testnet::metric_value(&text, &series).unwrap_or(0.0) as u64
}

/// POSTs `body` to node `node`'s `path` with `token`; the status and the answer.
fn post_with_token(net: &Testnet, node: usize, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let data_dir = &net.nodes[node].data_dir;
    let ca_pem = std::fs::read_to_string(data_dir.join("ca.pem")).unwrap();
    let ca_der = civmesh_certs::CaCertificate::from_pem(&ca_pem).unwrap().der().to_vec();
    let roots = ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(&ca_der).to_owned()]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build()
        .into();
    let url = format!("{}{path}", net.api(node).unwrap().runtime().api_url);
    let mut response =
        agent.post(&url).header("Authorization", format!("Bearer {}", token.trim())).send_json(body).unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap())
}

/// A scoped token for node `node`, named `name`, with `scopes`.
fn token(net: &Testnet, node: usize, name: &str, scopes: &[&str]) -> String {
    let data_dir = net.nodes[node].data_dir.to_str().unwrap().to_string();
    let mut args = vec!["token", "create", "--node-dir", data_dir.as_str(), "--name", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    net.cli(&args).unwrap().trim().to_string()
}

fn log_text(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join(format!("{name}.log"))).unwrap_or_default()
}

#[test]
fn a_residents_requests_are_logged_answered_by_the_owner_and_an_unknown_record_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    net.sign_and_submit(CIVIL, CIVIL, Command::PublishDataset(resident_dataset())).unwrap();
    let csv = dir.path().join("residents.csv");
    write_residents(&csv, 6).unwrap();
    net.import(CIVIL, RESIDENTS, &csv).unwrap();
    let street = OrgId::new("street/jingansi").unwrap();
    let now_ms = now_unix_millis();
    let spec = statutory_grant(
        RESIDENTS,
        &street,
        &["name", "age"],
        "elderly-care",
        now_ms - 60_000..now_ms + 86_400_000,
    );
    let grant = net.issue_grant(CIVIL, spec, STREET).unwrap();

    // (b) An unknown record: a typed refusal, and nothing in the log.
    let unknown = json!({ "kind": "deletion", "dataset": RESIDENTS, "record_key": "310106199900000000" });
    let refused = wait_until("the owner's refusal of an unknown record", Duration::from_secs(15), || {
        let error = net.api(STREET).ok()?.send::<_, Value>("POST", "/v1/subject-requests", &unknown).err()?;
        let error = error.to_string();
        error.contains("record_unknown").then_some(error)
    })
    .unwrap();
    assert!(refused.contains("404"), "{refused}");
    assert!(!refused.contains("310106199900000000"), "the error does not repeat the key: {refused}");
    assert!(security_events(&net, CIVIL, "subject_request_record_unknown") >= 1, "the owner counts the miss");
    let bad = json!({ "kind": "deletion", "dataset": RESIDENTS, "record_key": "x", "deadline_days": 61 });
    let error = net.api(STREET).unwrap().send::<_, Value>("POST", "/v1/subject-requests", &bad).unwrap_err();
    assert!(error.to_string().contains("400"), "{error}");
    assert_eq!(filed_in_archive(&net, HUB), Vec::<bool>::new(), "nothing was logged, not even rejected");
    assert_eq!(requests(&net, CIVIL)["total"], 0);

    // (c) Access: the street queried the resident; the report lists it.
    let accessed = resident_key(1);
    let query = json!({
        "dataset": RESIDENTS, "keys": [accessed], "fields": ["name", "age"], "purpose": "elderly-care", "grant": grant,
    });
    let answer: Value = net.api(STREET).unwrap().send("POST", "/v1/query", &query).unwrap();
    assert!(answer.get("Released").is_some(), "{answer}");
    let filed: Value = net
        .api(STREET)
        .unwrap()
        .send(
            "POST",
            "/v1/subject-requests",
            &json!({ "kind": "access", "dataset": RESIDENTS, "record_key": accessed }),
        )
        .unwrap();
    let access_id = filed["id"].as_str().unwrap().to_string();
    assert!(filed["deadline"].as_str().unwrap().ends_with("+08:00"), "{filed}");
    let fifteen_days_ms = 15 * 86_400_000;
    let deadline_ms = filed["deadline_ms"].as_u64().unwrap();
    assert!(
        (now_ms + fifteen_days_ms..now_ms + fifteen_days_ms + 3_600_000).contains(&deadline_ms),
        "{filed}"
    );
    assert_eq!(filed["owner_org"], "dept/civil-affairs");
    archive_holds(&net, &[true]); // only the request for a known record was logged
    let at_owner = listed(&net, CIVIL, &access_id);
    assert_eq!(
        (&at_owner["kind"], &at_owner["to_answer_here"], &at_owner["record_key_kept"], &at_owner["overdue"]),
        (&json!("access"), &json!(true), &json!(true), &json!(false))
    );
    let report_file = dir.path().join("access-report.json");
    let printed = cli_at(
        &net,
        CIVIL,
        &["answer", "--id", &access_id, "--done", "--report-out", report_file.to_str().unwrap()],
    )
    .unwrap();
    assert!(printed.contains("done"), "{printed}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    let accesses = report["accesses"].as_array().unwrap();
    assert_eq!(accesses.len(), 1, "{report}");
    assert_eq!(accesses[0]["requester_org"], "street/jingansi");
    assert_eq!(accesses[0]["kind"], "query");
    assert_eq!(accesses[0]["purpose"], "elderly-care");
    assert_eq!(accesses[0]["outcome"], "permit");
    assert_eq!(accesses[0]["fields"], json!(["age", "name"]));
    assert!(accesses[0]["at"].as_str().unwrap().ends_with("+08:00"));
    assert_eq!(report["complete"], true);
    assert_eq!(report["from_entry"], report["held_from"], "{report}");
    assert!(report["to_entry"].as_u64().unwrap() >= accesses[0]["sequence"].as_u64().unwrap(), "{report}");

    // (a) Deletion, through the CLI at the street and at the owner.
    let deleted = resident_key(2);
    assert_eq!(net.record_history(CIVIL, RESIDENTS, &deleted).unwrap().len(), 1);
    let printed = cli_at(
        &net,
        STREET,
        &["request", "--kind", "deletion", "--dataset", RESIDENTS, "--record-key", &deleted],
    )
    .unwrap();
    let deletion_id = printed_id(&printed);
    let at_owner = listed(&net, CIVIL, &deletion_id);
    assert_eq!(at_owner["kind"], "deletion");
    assert_eq!(at_owner["dataset"], RESIDENTS);
    assert_eq!(at_owner["intake_org"], "street/jingansi");
    assert_eq!(at_owner["owner_org"], "dept/civil-affairs");
    assert!(at_owner["filed_at"].as_str().unwrap().ends_with("+08:00"));
    let at_intake = listed(&net, STREET, &deletion_id);
    assert_eq!((&at_intake["to_answer_here"], &at_intake["record_key_kept"]), (&json!(false), &json!(false)));
    let listing = cli_at(&net, CIVIL, &["list"]).unwrap();
    assert!(listing.contains(&deletion_id) && listing.contains("street/jingansi"), "{listing}");

    let printed = cli_at(&net, CIVIL, &["answer", "--id", &deletion_id, "--done"]).unwrap();
    assert!(printed.contains("deleted the record"), "{printed}");
    let shown: Value = net
        .api(CIVIL)
        .unwrap()
        .send("POST", "/v1/records/show", &json!({ "dataset": RESIDENTS, "key": deleted }))
        .unwrap();
    assert_eq!(
        (&shown["record"], &shown["history"]),
        (&Value::Null, &json!([])),
        "gone from the owner's store"
    );
    assert_eq!(shown["count"], 5);
    let closed = wait_until("the answers on the owner's replica", Duration::from_secs(10), || {
        let list: Value = net.api(CIVIL).ok()?.get("/v1/subject-requests").ok()?;
        (list["answered"]["answered"] == 2).then_some(list)
    })
    .unwrap();
    assert_eq!(closed["total"], 0);
    assert_eq!(closed["answered"], json!({ "answered": 2, "answered_late": 0, "refused": 0 }));
    let again =
        cli_at(&net, CIVIL, &["answer", "--id", &deletion_id, "--refuse", "answered already"]).unwrap_err();
    assert!(again.to_string().contains("404"), "{again}");
    archive_holds(&net, &[true, true]);

    // The owner's own service window takes a request without a peer hop;
    // refusing it needs no record key.
    let corrected = resident_key(3);
    let own =
        json!({ "kind": "correction", "dataset": RESIDENTS, "record_key": corrected, "deadline_days": 1 });
    let filed: Value = net.api(CIVIL).unwrap().send("POST", "/v1/subject-requests", &own).unwrap();
    let own_id = filed["id"].as_str().unwrap().to_string();
    let at_owner = listed(&net, CIVIL, &own_id);
    assert_eq!(
        (&at_owner["intake_org"], &at_owner["record_key_kept"]),
        (&json!("dept/civil-affairs"), &json!(true))
    );
    let answered: Value = net
        .api(CIVIL)
        .unwrap()
        .send(
            "POST",
            &format!("/v1/subject-requests/{own_id}/answer"),
            &json!({ "refuse": "the record is correct" }),
        )
        .unwrap();
    assert_eq!(answered["outcome"], json!({ "refused": { "reason": "the record is correct" } }));
    assert_eq!((&answered["report"], &answered["versions_deleted"]), (&Value::Null, &Value::Null));
    wait_until("the refusal counted", Duration::from_secs(10), || {
        let counts = requests(&net, CIVIL)["answered"].clone();
        (counts == json!({ "answered": 3, "answered_late": 0, "refused": 1 })).then_some(())
    })
    .unwrap();
    assert_eq!(
        net.record_history(CIVIL, RESIDENTS, &corrected).unwrap().len(),
        1,
        "a refusal changes nothing"
    );
    archive_holds(&net, &[true, true, true]);

    // A correction the resident asks for at the street enters the
    // correction loop, with the resident as its origin and the person who
    // took it named. It needs the corrections scope besides the query
    // scope; the admin token names the person in the body.
    let misspelt = resident_key(4);
    let mut asked = json!({
        "kind": "correction", "dataset": RESIDENTS, "record_key": misspelt,
        "correction": { "base_version": 1, "changes": { "name": "Resident Four" }, "reason": "my name is misspelt" },
    });
    let query_only = token(&net, STREET, "window-query", &["query"]);
    let (status, refused) = post_with_token(&net, STREET, &query_only, "/v1/subject-requests", &asked);
    assert_eq!(status, 403, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("Corrections"), "{refused}");
    let unnamed =
        net.api(STREET).unwrap().send::<_, Value>("POST", "/v1/subject-requests", &asked).unwrap_err();
    assert!(unnamed.to_string().contains("400"), "the admin token names no one: {unnamed}");
    archive_holds(&net, &[true, true, true]); // neither was filed
    let window = token(&net, STREET, "window-3", &["query", "corrections"]);
    asked["operator"] = json!("Li Na");
    let (status, filed) = post_with_token(&net, STREET, &window, "/v1/subject-requests", &asked);
    assert_eq!(status, 200, "{filed}");
    let correction = filed["correction"].as_str().unwrap().to_string();
    let delivered = wait_until("the resident's correction at the owner", Duration::from_secs(20), || {
        let inbox: Value = net.api(CIVIL).ok()?.get("/v1/corrections").ok()?;
        let text = inbox.to_string();
        text.contains(&correction).then_some(text)
    })
    .unwrap();
    assert!(
        delivered.contains("居民本人 (resident), taken by Li Na (window-3)"),
        "the resident is its origin, and the window named: {delivered}"
    );
    let metrics = net.api(HUB).unwrap().get_text("/metrics").unwrap();
    assert!(metrics.lines().any(|line| line == "civmesh_subject_requests_overdue 0"), "{metrics}");
    for name in ["civil", "jingansi", "hub"] {
        let log = log_text(dir.path(), name);
        for key in [&accessed, &deleted, &misspelt, "310106199900000000"] {
            assert!(!log.contains(key), "{name}'s log names a record key");
        }
    }
}
