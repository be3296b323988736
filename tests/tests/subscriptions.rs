//! Subscriptions between real processes: a street with a grant subscribes to
//! the enterprise registry; when market supervision writes a new version,
//! the street receives it masked per the grant, and the push is on every
//! replica's access log. Without a grant the subscription is refused. A
//! push is kept only from the owner, for one's own subscription, as logged,
//! once. A subscription starts with every record in its scope. A change
//! the owner could not push before a kill -9 is pushed after its restart.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::MaskingRule;
use civmesh_policy::{Applied, Command};
use civmesh_testnet::city::{
    city, enterprise_dataset, enterprises_on, street_inspection_grant, street_scoped_grant, ENTERPRISES,
};
use civmesh_testnet::{wait_until, Testnet};
use civmesh_tests::subscriptions::{street_subscribed, subscription_state};

#[test]
fn a_subscriber_receives_new_versions_masked_and_every_push_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    let market = NodeKey::load(&net.nodes[1].data_dir.join("node.key")).unwrap();
    let sign = |command: Command| SignedEnvelope::sign(&market, &command, now_unix_millis()).unwrap();
    net.api(1).unwrap().submit(&[sign(Command::PublishDataset(enterprise_dataset()))]).unwrap();
    let subscription = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": null,
    });
    // Refused for want of a grant (once the street reaches the owner at all).
    let mut refusal = String::new();
    wait_until("a refusal naming the missing grant", Duration::from_secs(10), || {
        let refused =
            net.api(3).ok()?.send::<_, serde_json::Value>("POST", "/v1/subscriptions", &subscription);
        refusal = refused.err()?.to_string();
        refusal.contains("grant_required").then_some(())
    })
    .unwrap_or_else(|_| panic!("last refusal: {refusal}"));

    let grant = street_inspection_grant(
        "street/jingansi",
        &["name", "operating_address"],
        &[("operating_address", MaskingRule::KeepFirst(2))],
    )
    .unwrap();
    let outcome = net.api(1).unwrap().submit(&[sign(Command::IssueGrant(grant))]).unwrap();
    let Ok(Applied::GrantIssued(grant_id)) = outcome.outcomes[0] else { panic!("{:?}", outcome.outcomes) };
    let subscription = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": grant_id,
    });
    let subscribed: serde_json::Value =
        wait_until("the grant to reach the owner", Duration::from_secs(10), || {
            net.api(3).unwrap().send("POST", "/v1/subscriptions", &subscription).ok()
        })
        .unwrap();
    assert_eq!(subscribed["subscription"].as_str().unwrap().len(), 64);

    let csv = dir.path().join("update.csv");
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,12 Wuding Road,13800001111,,\n").unwrap();
    net.import(1, ENTERPRISES, &csv).unwrap();

    let pushes: Vec<serde_json::Value> = wait_until("the push to arrive", Duration::from_secs(20), || {
        let pushes: Vec<serde_json::Value> = net.api(3).ok()?.get("/v1/subscriptions/updates").ok()?;
        (!pushes.is_empty()).then_some(pushes)
    })
    .unwrap();
    let record = &pushes[0]["body"]["records"][0];
    // The grant does not release the key field (credit_code), so the push
    // carries no plain key.
    assert_eq!(record["key"], "");
    assert_eq!(record["version"], 1);
    assert_eq!(record["fields"]["name"], "Jing'an Tea House");
    assert_eq!(record["fields"]["operating_address"], "12************");
    assert!(record["fields"].get("legal_rep_phone").is_none());
    assert_eq!(pushes[0]["subscription"], subscribed["subscription"]);

    // The initial listing's page and the push, in either order.
    let logs = wait_until("the push on every replica's access log", Duration::from_secs(20), || {
        let totals: Vec<u64> = (0..4).map(|i| net.access_log_total(i).ok()).collect::<Option<_>>()?;
        let (owner, street) = (net.access_log(1).ok()?, net.access_log(3).ok()?);
        (totals == [2; 4] && owner.len() == 2 && owner == street).then_some(owner)
    })
    .unwrap();
    let kinds: std::collections::BTreeSet<&str> =
        logs.iter().filter_map(|log| log["kind"].as_str()).collect();
    assert_eq!(kinds, ["listing", "push"].into());
    let logs: Vec<&serde_json::Value> = logs.iter().filter(|log| log["kind"] == "push").collect();
    assert_eq!(logs[0]["outcome"], "permit");
    assert_eq!(logs[0]["requester"], net.nodes[3].peer_id.as_str());
    assert_eq!(logs[0]["released"][0][1], serde_json::json!(["name", "operating_address"]));

    // Both sides keep the subscription across a restart of the subscriber.
    net.stop(3).unwrap();
    net.start(3).unwrap();
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,3 Yanping Road,,,\n")
        .unwrap();
    net.import(1, ENTERPRISES, &csv).unwrap();
    let pushes: Vec<serde_json::Value> =
        wait_until("a push after the restart", Duration::from_secs(20), || {
            let pushes: Vec<serde_json::Value> = net.api(3).ok()?.get("/v1/subscriptions/updates").ok()?;
            (!pushes.is_empty()).then_some(pushes)
        })
        .unwrap();
    assert_eq!(pushes[0]["body"]["records"][0]["version"], 2);
    assert_eq!(pushes[0]["body"]["records"][0]["fields"]["operating_address"], "3 ************");

    // A push to a subscriber that is down is kept and delivered when it is back.
    net.stop(3).unwrap();
    let access_log_length = || net.access_log_total(0).ok();
    let logged_before = access_log_length().unwrap();
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,9 Kangding Road,,,\n")
        .unwrap();
    net.import(1, ENTERPRISES, &csv).unwrap();
    // The owner logs a push before it sends it: once logged, the send is
    // under way while the subscriber is down.
    wait_until("the push logged while the subscriber is down", Duration::from_secs(20), || {
        (access_log_length()? > logged_before).then_some(())
    })
    .unwrap();
    net.start(3).unwrap();
    let versions_received = || -> Option<Vec<u64>> {
        let pushes: Vec<serde_json::Value> = net.api(3).ok()?.get("/v1/subscriptions/updates").ok()?;
        Some(pushes.iter().filter_map(|push| push["body"]["records"][0]["version"].as_u64()).collect())
    };
    wait_until("the push kept while the subscriber was down", Duration::from_secs(30), || {
        versions_received().filter(|versions| !versions.is_empty())
    })
    .unwrap();
    // A later change, pushed after it, bounds the wait for a duplicate.
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,11 Kangding Road,,,\n")
        .unwrap();
    net.import(1, ENTERPRISES, &csv).unwrap();
    let versions = wait_until("the next push", Duration::from_secs(30), || {
        versions_received().filter(|versions| versions.contains(&4))
    })
    .unwrap();
    assert_eq!(versions, [3, 4], "each version delivered once, in order");

    // No release without a committed access record: each push names an
    // entry of the replicated access log releasing it to this street.
    let pushes: Vec<serde_json::Value> = net.api(3).unwrap().get("/v1/subscriptions/updates").unwrap();
    let log = net.access_log(1).unwrap();
    for push in &pushes {
        let position = push["body"]["access_log_position"].as_u64().unwrap();
        let entry = log.iter().find(|entry| entry["sequence"] == position).expect("the push's access record");
        assert_eq!(
            (&entry["outcome"], &entry["requester"], entry["released"].as_array().map(Vec::len)),
            (&serde_json::json!("permit"), &serde_json::json!(net.nodes[3].peer_id), Some(1)),
            "{entry}"
        );
    }
}

/// A push a member forges with its own key on a real libp2p peer: only the
/// owner's push for the subscriber's own subscription, as the replicated
/// access log holds it, is kept (each version once: the test above).
#[test]
fn pushes_are_kept_only_from_the_owner_for_ones_own_subscription_as_logged() {
    use civmesh_node::query::{PushBody, QueryProtocolMessage, ReleasedRecord};
    use civmesh_node::swarm::Protocol;
    use civmesh_policy::model::FieldValue;
    use civmesh_testnet::hostile::HostilePeer;

    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    net.sign_and_submit(1, 1, Command::PublishDataset(enterprise_dataset())).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name"], &[]).unwrap();
    let Applied::GrantIssued(grant_id) = net.sign_and_submit(1, 1, Command::IssueGrant(grant)).unwrap()
    else {
        panic!("no grant")
    };
    let spec = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name"], "purpose": "street-inspection", "grant": grant_id,
    });
    let subscribed = wait_until("the subscription", Duration::from_secs(10), || {
        net.api(3).ok()?.send::<_, serde_json::Value>("POST", "/v1/subscriptions", &spec).ok()
    })
    .unwrap();
    let mut subscription = [0u8; 32];
    let hex = subscribed["subscription"].as_str().unwrap();
    for (index, byte) in subscription.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).unwrap();
    }

    let street = net.raft_peer(3).unwrap();
    let push = |from: usize, subscription: [u8; 32], position: u64, name: &str| {
        let peer = HostilePeer::of(&net, from).unwrap();
        let body = PushBody {
            subscription,
            dataset: ENTERPRISES.into(),
            records: vec![ReleasedRecord {
                key: String::new(),
                subject: civmesh_policy::model::SubjectKeyHash([7; 32]),
                version: 9,
                fields: [("name".to_string(), FieldValue::Text(name.into()))].into(),
                withheld: Default::default(),
            }],
            access_log_position: position,
        };
        let message = QueryProtocolMessage::Push(peer.sign(&body).unwrap().to_bytes().unwrap());
        peer.send(Protocol::Query, &street, &civmesh_certs::codec::encode(&message).unwrap()).unwrap()
    };
    let names = || -> Vec<String> {
        let pushes: Vec<serde_json::Value> = net.api(3).unwrap().get("/v1/subscriptions/updates").unwrap();
        pushes
            .iter()
            .map(|push| push["body"]["records"][0]["fields"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        push(2, subscription, 1_000, "from another department").is_empty(),
        "a non-owner's push was acknowledged"
    );
    assert!(
        push(1, [7; 32], 1_001, "for another subscription").is_empty(),
        "a push for another subscription was acknowledged"
    );
    assert!(
        push(1, subscription, 1_002, "from the owner, but not on the log").is_empty(),
        "a push the access log does not hold was acknowledged"
    );
    assert!(names().is_empty(), "no push kept: {:?}", names());
}

/// Every record of subscription `id`'s copy at node `index`, page by page.
fn copy_of(net: &Testnet, index: usize, id: &str) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let body = serde_json::json!({ "after": after, "page_size": 64 });
        let page: serde_json::Value =
            net.api(index).unwrap().send("POST", &format!("/v1/subscriptions/{id}/records"), &body).unwrap();
        records.extend(page["records"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return records,
        }
    }
}

#[test]
fn a_new_subscription_starts_with_every_record_in_scope_across_a_restart_then_the_changes() {
    const COUNT: usize = 1_200;
    const MARKET: usize = 1;
    const STREET: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "nanjingxilu"])).unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let csv = dir.path().join("enterprises.csv");
    civmesh_testnet::city::write_enterprises(&csv, COUNT).unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    let grant = net.issue_grant(MARKET, street_scoped_grant("nanjingxilu").unwrap(), STREET).unwrap();
    let expected = enterprises_on("nanjingxilu", COUNT);
    assert_eq!(expected.len(), 200);

    // Two records a page, so the listing is still running when the street dies.
    let spec = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["credit_code", "name", "operating_address"],
        "purpose": "street-inspection", "grant": grant, "page_size": 2,
    });
    let subscribed: serde_json::Value =
        net.api(STREET).unwrap().send("POST", "/v1/subscriptions", &spec).unwrap();
    let id = subscribed["subscription"].as_str().unwrap().to_string();
    let state = |net: &Testnet| -> Option<serde_json::Value> {
        net.api(STREET).ok()?.get(&format!("/v1/subscriptions/{id}")).ok()
    };
    let before = wait_until("a few pages of the initial listing", Duration::from_secs(30), || {
        state(&net).filter(|state| state["pages"].as_u64() >= Some(5))
    })
    .unwrap();
    assert_eq!(before["initial_sync"], "listing", "{before}");
    net.kill9(STREET).unwrap();
    net.start(STREET).unwrap();
    let done = wait_until("the initial listing to finish", Duration::from_secs(120), || {
        state(&net).filter(|state| state["initial_sync"] == "done")
    })
    .unwrap();
    assert_eq!(done["records_held"], 200, "{done}");
    // Resumed from the kept cursor, not started over: at most the page in
    // flight at the kill is listed twice.
    assert!(done["pages"].as_u64().unwrap() <= 101, "{done}");
    assert!(done["records_listed"].as_u64().unwrap() <= 202, "{done}");
    assert_eq!(done["owner_org"], "dept/market-supervision");
    assert!(done["initial_sync_finished_at"].as_str().unwrap().ends_with("+08:00"), "{done}");

    // Every in-scope record once, at its version; nothing of another street.
    let copy = copy_of(&net, STREET, &id);
    let mut keys: Vec<String> =
        copy.iter().map(|record| record["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    assert_eq!(keys, expected, "no gap, no duplicate, no other street");
    assert!(copy.iter().all(|record| record["version"] == 1));

    // Then a change: the copy keeps the new version, still once.
    let changed = &expected[7];
    let index: usize = changed[6..].parse().unwrap();
    let generated = civmesh_testnet::city::Enterprise::generated(index);
    std::fs::write(
        &csv,
        format!(
            "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n\
             {changed},{},{},99 Moved Road,{},{},{}\n",
            generated.name,
            generated.registered_address,
            generated.phone,
            generated.district,
            generated.street
        ),
    )
    .unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    let after = wait_until("the change in the copy", Duration::from_secs(30), || {
        let copy = copy_of(&net, STREET, &id);
        copy.iter().any(|record| record["key"] == changed.as_str() && record["version"] == 2).then_some(copy)
    })
    .unwrap();
    assert_eq!(after.len(), 200);
    let moved = after.iter().find(|record| record["key"] == changed.as_str()).unwrap();
    assert_eq!(moved["fields"]["operating_address"], "99 Moved Road");
    let state = state(&net).unwrap();
    assert!(state["last_push_position"].is_u64() && state["last_change_at"].is_string(), "{state}");

    // An unknown subscription, and a malformed id.
    let api = net.api(STREET).unwrap();
    let unknown = api.get::<serde_json::Value>(&format!("/v1/subscriptions/{}", "0".repeat(64))).unwrap_err();
    assert!(unknown.to_string().contains("404"), "{unknown}");
    let malformed = api.get::<serde_json::Value>("/v1/subscriptions/xyz").unwrap_err();
    assert!(malformed.to_string().contains("400"), "{malformed}");
}

/// A write queues its changes for the subscribers in the same synced batch:
/// imported while the owner cannot commit a push (two of the three voters
/// stopped), and the owner then killed -9, the change still reaches the
/// subscriber once the federation is back.
#[test]
fn a_change_the_owner_could_not_push_before_a_kill_9_reaches_the_subscriber_after_its_restart() {
    const ROWS: usize = 3;
    const HUB: usize = 0;
    const MARKET: usize = 1;
    const CIVIL: usize = 2;
    const STREET: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    let id = street_subscribed(&net, MARKET, STREET);
    let state = |net: &Testnet| subscription_state(net, STREET, &id);

    // No quorum: the owner writes the rows, and cannot log a push.
    net.stop(HUB).unwrap();
    net.stop(CIVIL).unwrap();
    let rows: Vec<serde_json::Value> = (0..ROWS)
        .map(|index| {
            serde_json::json!({
                "credit_code": format!("91310600000000000{index}"), "name": format!("Enterprise {index}"),
                "registered_address": null, "operating_address": format!("{index} Yuyuan Road"),
                "legal_rep_phone": null, "district": "jingan", "street": "jingansi",
            })
        })
        .collect();
    let request = serde_json::json!({ "batch": "before-the-kill", "first_line": 2, "rows": rows });
    let path = format!("/v1/records/import?dataset={}", ENTERPRISES.replace('/', "%2F"));
    let answer: serde_json::Value = net.api(MARKET).unwrap().send("POST", &path, &request).unwrap();
    assert_eq!(answer["written"], ROWS, "{answer}");
    std::thread::sleep(Duration::from_secs(2));
    net.kill9(MARKET).unwrap();
    assert_eq!(state(&net).unwrap()["records_held"], 0, "nothing could be pushed");

    for index in [HUB, CIVIL, MARKET] {
        net.start(index).unwrap();
    }
    let done = wait_until("the imported rows at the subscriber", Duration::from_secs(120), || {
        state(&net).filter(|state| state["records_held"] == ROWS)
    })
    .unwrap();
    assert_eq!(done["records_held"], ROWS, "{done}");
}
