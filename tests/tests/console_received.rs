//! What the street's node holds, in a real browser: Jing'an Temple street
//! subscribes to its street's enterprises under its grant and keeps one
//! query's answer; the street worker sees both sources with their counts,
//! owner, grant and retention (`/received`), pages through the copy's
//! records, each subject a hash, keys as held and phones masked as
//! released (`/received/records`, the source and cursor in POST bodies,
//! CSRF-checked), and looking asks the owner nothing, so the access log
//! does not grow. When the market department revokes the grant, the page
//! says the copies go at the next sweep, then shows 0 records held.
//! Screenshots in both languages go to `$CARGO_TARGET_DIR/console-screenshots/`.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use civmesh_policy::Command;
use civmesh_testnet::city::{enterprises_on, ENTERPRISES, STREET_INSPECTION};
use civmesh_testnet::{wait_until, Testnet};
use civmesh_tests::browser::{
    click, screenshot, text, texts, ConsoleNet, ENTERPRISE_COUNT, JINGANSI, MARKET,
};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

/// Records on one page of `/received/records`.
const PAGE_RECORDS: usize = 100;
/// The street's deletion sweep in this test: long enough to see a revoked
/// grant's copies before they go, short enough to wait for.
const SWEEP_INTERVAL_MS: u64 = 5_000;
/// The subscription's fields, in the order its columns show.
const FIELDS: [&str; 5] = ["credit_code", "name", "operating_address", "legal_rep_phone", "street"];

/// The street's grant of its own street's enterprises (the fixture's).
fn street_grant(net: &Testnet) -> u64 {
    let grants: Vec<Value> = net.api(JINGANSI).unwrap().get("/v1/grants").unwrap();
    grants.iter().find(|grant| grant["grantee"] == "street/jingansi").unwrap()["id"].as_u64().unwrap()
}

/// The street's sources as its API has them.
fn received(net: &Testnet) -> Option<Vec<Value>> {
    net.api(JINGANSI).ok()?.get("/v1/received").ok()
}

/// Entries in the access log, as the owner's replica counts them.
fn access_log_length(net: &Testnet) -> u64 {
    let metrics = net.api(MARKET).unwrap().get_text("/metrics").unwrap();
    civmesh_testnet::metric_value(&metrics, "civmesh_access_log_length").unwrap() as u64
}

/// The rows of `/received`, one text per column class, index-aligned.
async fn column(client: &Client, class: &str) -> Vec<String> {
    texts(client, &format!("#received td.{class}")).await
}

/// The record keys on a page of `/received/records`.
async fn page_keys(client: &Client) -> Vec<String> {
    texts(client, "#received-records td.record-key").await
}

/// Pages through an open source from its first page to its last; every
/// key listed.
async fn every_key(client: &Client) -> Vec<String> {
    let mut keys = page_keys(client).await;
    while client.find(Locator::Css("#next-page")).await.is_ok() {
        click(client, "#next-page").await;
        keys.extend(page_keys(client).await);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_worker_sees_the_copies_her_node_holds_and_their_deletion_after_a_revocation() {
    let mut console = ConsoleNet::launch();
    // The street sweeps every few seconds: restarted with that setting,
    // before it holds anything.
    console.net.stop(JINGANSI).unwrap();
    console.net.configure(JINGANSI, |config| config.retention.sweep_interval_ms = SWEEP_INTERVAL_MS).unwrap();
    console.net.start(JINGANSI).unwrap();
    let net = &console.net;
    let grant = street_grant(net);
    let street = enterprises_on("jingansi", ENTERPRISE_COUNT);
    assert!(street.len() > 3 * PAGE_RECORDS, "{} enterprises", street.len());

    // A subscription under the grant, copied whole; and one kept answer.
    let api = net.api(JINGANSI).unwrap();
    let request =
        json!({ "dataset": ENTERPRISES, "fields": FIELDS, "purpose": STREET_INSPECTION, "grant": grant });
    let subscribed: Value = api.send("POST", "/v1/subscriptions", &request).unwrap();
    let subscription = subscribed["subscription"].as_str().unwrap().to_string();
    wait_until("the street's whole copy", Duration::from_secs(60), || {
        let sources = received(net)?;
        let copy = sources.iter().find(|source| source["id"] == subscription.as_str())?;
        (copy["records_held"] == street.len() as u64).then_some(())
    })
    .unwrap();
    let kept_keys = [street[0].clone(), street[1].clone()];
    let query = json!({
        "dataset": ENTERPRISES, "keys": kept_keys, "fields": ["name", "legal_rep_phone"],
        "purpose": STREET_INSPECTION, "grant": grant, "keep": true,
    });
    let answer: Value = api.send("POST", "/v1/query", &query).unwrap();
    assert_eq!(answer["Released"]["records"].as_array().map(Vec::len), Some(2), "{answer}");
    let logged_before = access_log_length(net);

    // The street worker's page: both sources, the subscription first (older).
    let base = console.base(JINGANSI);
    let client = console.browser().await;
    console.enrol(&client, JINGANSI, "李伟", "street-worker", "jingansi-2026").await;
    let nav = texts(&client, "nav a").await;
    assert_eq!(nav[..3], ["首页", "我的授权", "已接收数据"], "after the grants: {nav:?}");
    click(&client, "nav a[href='/received']").await;
    assert_eq!(column(&client, "kind").await, ["订阅", "保存的查询结果"]);
    assert_eq!(column(&client, "dataset").await, [ENTERPRISES, ENTERPRISES]);
    assert_eq!(column(&client, "owner").await, ["dept/market-supervision", "dept/market-supervision"]);
    assert_eq!(column(&client, "grant").await, [format!("#{grant}"), format!("#{grant}")]);
    assert_eq!(column(&client, "held").await, [street.len().to_string(), "2".to_string()]);
    assert!(column(&client, "since").await.iter().all(|since| since.ends_with("+08:00")));
    assert_eq!(column(&client, "retention").await, ["365 天", "365 天"]);
    assert_eq!(column(&client, "grant-state").await, ["有效", "有效"]);
    screenshot(&client, "received-zh").await;

    // The copy's records, a hundred a page, the source and cursor posted.
    click(&client, "#open-0").await;
    assert_eq!(text(&client, "#source-held").await, street.len().to_string());
    assert_eq!(text(&client, "#count").await, PAGE_RECORDS.to_string());
    let headers = texts(&client, "#received-records th").await;
    assert_eq!(headers[..3], ["主体（哈希）", "记录标识", "版本"]);
    assert_eq!(headers[3..], FIELDS);
    for subject in texts(&client, "#received-records td.subject").await {
        assert!(subject.len() == 16 + '…'.len_utf8() && subject[..16].chars().all(|c| c.is_ascii_hexdigit()));
    }
    // The phone as released: masked to its last four digits.
    for phone in texts(&client, "#received-records td:nth-child(7)").await {
        let (masked, last) = phone.split_at(phone.len() - 4);
        assert!(!masked.is_empty() && masked.chars().all(|c| c == '*'), "{phone}");
        assert!(last.chars().all(|c| c.is_ascii_digit()), "{phone}");
    }
    screenshot(&client, "received-records-zh").await;
    let keys = every_key(&client).await;
    assert_eq!(keys.len(), street.len(), "each subject once");
    assert_eq!(keys.iter().collect::<BTreeSet<_>>(), street.iter().collect::<BTreeSet<_>>());
    assert!(client.find(Locator::Css("#last-page")).await.is_ok());
    let current = client.current_url().await.unwrap();
    assert_eq!(current.path(), "/received/records", "no source or cursor in the URL");
    assert!(current.query().is_none());

    // The kept answer: its two records, its two fields.
    click(&client, "#back").await;
    click(&client, "#open-1").await;
    assert_eq!(text(&client, "#source-kind").await, "保存的查询结果");
    assert_eq!(
        page_keys(&client).await.into_iter().collect::<BTreeSet<_>>(),
        kept_keys.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(texts(&client, "#received-records th").await[3..], ["name", "legal_rep_phone"]);

    // Looking asked the owner nothing: no access was logged.
    assert_eq!(access_log_length(net), logged_before, "reading the received store is not an access");

    // A form without its CSRF token, a source it does not hold, and a GET.
    let session = console.session_of(JINGANSI, &client).await;
    let csrf =
        client.find(Locator::Css("input[name=csrf]")).await.unwrap().attr("value").await.unwrap().unwrap();
    let (status, ..) = session.post("/received/records", &[("csrf", "forged"), ("source", &subscription)]);
    assert_eq!(status, 403);
    let unknown = "ab".repeat(32);
    let (status, _, _, body) = session.post("/received/records", &[("csrf", &csrf), ("source", &unknown)]);
    assert_eq!(status, 404);
    assert!(String::from_utf8(body).unwrap().contains("本节点没有这一来源的数据副本"));
    let (status, ..) =
        session.post("/received/records", &[("csrf", &csrf), ("source", &subscription), ("cursor", "x")]);
    assert_eq!(status, 400);
    assert_eq!(session.get("/received/records").0, 405);

    // English.
    click(&client, "#switch-lang").await;
    client.goto(&format!("{base}/received")).await.unwrap();
    assert_eq!(column(&client, "kind").await, ["Subscription", "Kept query results"]);
    assert_eq!(column(&client, "retention").await, ["365 days", "365 days"]);
    assert_eq!(column(&client, "grant-state").await, ["In force", "In force"]);
    screenshot(&client, "received-en").await;
    click(&client, "#open-0").await;
    assert_eq!(text(&client, "#count").await, PAGE_RECORDS.to_string());
    screenshot(&client, "received-records-en").await;
    client.goto(&format!("{base}/")).await.unwrap();
    click(&client, "#switch-lang").await;

    // The owner revokes the grant: the copies are marked for the next
    // sweep, then deleted.
    net.sign_and_submit(
        MARKET,
        MARKET,
        Command::RevokeGrant { grant_id: grant, reason: "inspection over".into() },
    )
    .unwrap();
    wait_until("the revocation at the street", Duration::from_secs(20), || {
        received(net)?.iter().all(|source| source["grant_in_force"] == false).then_some(())
    })
    .unwrap();
    client.goto(&format!("{base}/received")).await.unwrap();
    let (held, states) = (column(&client, "held").await, column(&client, "grant-state").await);
    for (held, state) in held.iter().zip(&states) {
        let expected = if held == "0" {
            "授权已终止，副本已删除"
        } else {
            "授权已终止，将在下次清理时删除"
        };
        assert_eq!(state, expected, "{held} held");
    }
    screenshot(&client, "received-revoked-zh").await;
    wait_until("the copies deleted", Duration::from_secs(30), || {
        received(net)?.iter().all(|source| source["records_held"] == 0).then_some(())
    })
    .unwrap();
    client.refresh().await.unwrap();
    assert_eq!(column(&client, "held").await, ["0", "0"]);
    assert_eq!(column(&client, "grant-state").await, ["授权已终止，副本已删除", "授权已终止，副本已删除"]);
    screenshot(&client, "received-deleted-zh").await;
    click(&client, "#open-0").await;
    assert_eq!(text(&client, "#count").await, "0");
    assert!(client.find(Locator::Css("#received-records")).await.is_err());
    assert!(client.find(Locator::Css("#last-page")).await.is_ok());

    // Another role may not look.
    click(&client, "#sign-out").await;
    console.enrol(&client, JINGANSI, "王芳", "reviewer", "reviewer-2026").await;
    client.goto(&format!("{base}/received")).await.unwrap();
    assert_eq!(text(&client, "#error").await, "您的角色无权访问此页面。");
    assert!(!texts(&client, "nav a").await.contains(&"已接收数据".to_string()));
}
