//! The console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`) against a real federation.
//! A street worker enrols with a one-time code from `civmesh operator add`,
//! sees her grants, lists exactly her street's enterprises page by page,
//! is refused a reviewer's page (403) and a form without its CSRF token,
//! switches to English, signs out, and locks her account with five wrong
//! passwords. Screenshots of each page go to `$CARGO_TARGET_DIR/console-screenshots/`.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use civmesh_policy::Command as PolicyCommand;
use civmesh_testnet::city::{
    city, enterprise_dataset, enterprises_on, street_scoped_grant, write_enterprises, ENTERPRISES,
};
use civmesh_testnet::{free_port, wait_until, Testnet};
use fantoccini::{Client, ClientBuilder, Locator};

const ENTERPRISE_COUNT: usize = 3_000;
const MARKET: usize = 1;
const JINGANSI: usize = 3;
/// Records on one console page (the console's own page size).
const CONSOLE_PAGE_RECORDS: usize = 100;

/// chromedriver, killed when the test ends however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> (Driver, u16) {
    let port = free_port().unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)");
    let driver = Driver(child);
    wait_until("chromedriver to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap();
    (driver, port)
}

async fn browser(port: u16) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,768"],
        }),
    );
    // The node's certificate is from the federation's own CA.
    capabilities.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = PathBuf::from(target).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}")).text().await.unwrap()
}

async fn fill(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}"));
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Clicks `css` and waits until the browser has left the page (every click
/// here submits a form or follows a link).
async fn click(client: &Client, css: &str) {
    let page = client.find(Locator::Css("html")).await.unwrap();
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}")).click().await.unwrap();
    let left = std::time::Instant::now();
    while page.tag_name().await.is_ok() {
        assert!(left.elapsed() < Duration::from_secs(20), "clicking {css} did not leave the page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn listed_keys(client: &Client) -> Vec<String> {
    let mut keys = Vec::new();
    for cell in client.find_all(Locator::Css("#records td.key")).await.unwrap() {
        keys.push(cell.text().await.unwrap());
    }
    keys
}

/// The one-time code `civmesh operator add` or `reset` printed.
fn code_in(printed: &str) -> String {
    let after = printed.split("one-time code ").nth(1).unwrap_or_else(|| panic!("no code in {printed}"));
    after.split_whitespace().next().unwrap().to_string()
}

async fn sign_in(client: &Client, base: &str, name: &str, password: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    fill(client, "#name", name).await;
    fill(client, "#password", password).await;
    click(client, "#sign-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_worker_enrols_lists_her_street_and_is_held_to_her_role_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "jingansi"]);
    let net = Testnet::launch(dir.path(), &specs).unwrap();
    net.sign_and_submit(MARKET, MARKET, PolicyCommand::PublishDataset(enterprise_dataset())).unwrap();
    let csv = dir.path().join("enterprises.csv");
    write_enterprises(&csv, ENTERPRISE_COUNT).unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    net.issue_grant(MARKET, street_scoped_grant("jingansi").unwrap(), JINGANSI).unwrap();
    let node_dir = net.nodes[JINGANSI].data_dir.to_str().unwrap().to_string();
    let printed = net
        .cli(&["operator", "add", "--node-dir", &node_dir, "--name", "李伟", "--role", "street-worker"])
        .unwrap();
    let code = code_in(&printed);
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.nodes[JINGANSI].data_dir.join("node.json")).unwrap())
            .unwrap();
    let base = runtime["api_url"].as_str().unwrap().trim_end_matches('/').to_string();
    assert!(printed.contains(&format!("{base}/enrol")), "{printed}");

    let (_driver, port) = start_driver();
    let client = browser(port).await;

    // Enrol with the one-time code: signed in, in Chinese.
    client.goto(&format!("{base}/enrol")).await.unwrap();
    screenshot(&client, "enrol-zh").await;
    fill(&client, "#name", "李伟").await;
    fill(&client, "#code", &code).await;
    fill(&client, "#password", "jingansi-2026").await;
    fill(&client, "#password_again", "jingansi-2026").await;
    click(&client, "#enrol").await;
    assert_eq!(text(&client, "#welcome").await, "欢迎使用");
    assert_eq!(text(&client, "#operator").await, "李伟 · 街道工作人员");
    screenshot(&client, "home-zh").await;

    // Her grants: the street-scoped grant, with its scope and expiry in Asia/Shanghai.
    client.goto(&format!("{base}/grants")).await.unwrap();
    let grants = text(&client, "#grants").await;
    assert!(grants.contains(ENTERPRISES) && grants.contains("street = jingansi"), "{grants}");
    assert!(grants.contains("dept/market-supervision") && grants.contains("+08:00"), "{grants}");
    screenshot(&client, "grants-zh").await;

    // Her street's enterprises, exactly, page by page.
    let expected = enterprises_on("jingansi", ENTERPRISE_COUNT);
    assert!(expected.len() > 2 * CONSOLE_PAGE_RECORDS);
    client.goto(&format!("{base}/records")).await.unwrap();
    click(&client, "#list").await;
    assert_eq!(text(&client, "#count").await, CONSOLE_PAGE_RECORDS.to_string());
    assert_eq!(listed_keys(&client).await, expected[..CONSOLE_PAGE_RECORDS]);
    screenshot(&client, "records-zh").await;
    click(&client, "#next-page").await;
    assert_eq!(listed_keys(&client).await, expected[CONSOLE_PAGE_RECORDS..2 * CONSOLE_PAGE_RECORDS]);
    let current = client.current_url().await.unwrap();
    assert_eq!(current.path(), "/records", "no key, filter or cursor in the URL");
    assert!(current.query().is_none());

    // A filter on another street finds nothing; on her own, her records.
    fill(&client, "#filter_field", "street").await;
    fill(&client, "#filter_value", "nanjingxilu").await;
    click(&client, "#list").await;
    assert_eq!(text(&client, "#count").await, "0");
    assert!(client.find(Locator::Css("#last-page")).await.is_ok());

    // A reviewer's page: 403, in her language.
    client.goto(&format!("{base}/review")).await.unwrap();
    assert_eq!(text(&client, "#error").await, "您的角色无权访问此页面。");
    screenshot(&client, "forbidden-zh").await;

    // A form without its CSRF token is refused.
    client.goto(&format!("{base}/records")).await.unwrap();
    client
        .execute("document.querySelector('#list-form input[name=csrf]').value = 'forged'", vec![])
        .await
        .unwrap();
    click(&client, "#list").await;
    assert!(text(&client, "#error").await.contains("表单已过期"));

    // English by a switch.
    client.goto(&format!("{base}/")).await.unwrap();
    click(&client, "#switch-lang").await;
    assert_eq!(text(&client, "#welcome").await, "Welcome");
    assert_eq!(text(&client, "#operator").await, "李伟 · Street worker");
    screenshot(&client, "home-en").await;
    client.goto(&format!("{base}/grants")).await.unwrap();
    screenshot(&client, "grants-en").await;
    client.goto(&format!("{base}/records")).await.unwrap();
    click(&client, "#list").await;
    screenshot(&client, "records-en").await;
    click(&client, "#switch-lang").await;

    // Signed out, the pages send her to sign in.
    click(&client, "#sign-out").await;
    assert_eq!(client.current_url().await.unwrap().path(), "/login");
    client.goto(&format!("{base}/records")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/login");
    screenshot(&client, "sign-in-zh").await;

    // Five wrong passwords lock the account; then even the right one is refused.
    for attempt in 1..=5 {
        sign_in(&client, &base, "李伟", "not-her-password").await;
        let error = text(&client, "#sign-in-error").await;
        let expected =
            if attempt < 5 { "用户名或密码不正确。" } else { "密码连续输错次数过多" };
        assert!(error.contains(expected), "attempt {attempt}: {error}");
    }
    sign_in(&client, &base, "李伟", "jingansi-2026").await;
    assert!(text(&client, "#sign-in-error").await.contains("账户已锁定"));
    screenshot(&client, "locked-zh").await;
    let listed = net.cli(&["operator", "list", "--node-dir", &node_dir]).unwrap();
    assert_eq!(listed.trim(), "李伟  street-worker  locked");

    // An administrator resets her; she enrols again and is back in.
    let printed = net.cli(&["operator", "reset", "--node-dir", &node_dir, "--name", "李伟"]).unwrap();
    client.goto(&format!("{base}/enrol")).await.unwrap();
    fill(&client, "#name", "李伟").await;
    fill(&client, "#code", &code_in(&printed)).await;
    fill(&client, "#password", "a-new-password").await;
    fill(&client, "#password_again", "a-new-password").await;
    click(&client, "#enrol").await;
    assert_eq!(text(&client, "#welcome").await, "欢迎使用");
    client.close().await.unwrap();
}
