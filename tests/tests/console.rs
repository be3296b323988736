//! The console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`) against a real federation.
//! A street worker enrols with a one-time code from `civmesh operator add`,
//! sees her grants, lists exactly her street's enterprises page by page,
//! is refused a reviewer's page (403) and a form without its CSRF token,
//! switches to English, signs out, and locks her account with five wrong
//! passwords. Screenshots of each page go to `$CARGO_TARGET_DIR/console-screenshots/`.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_testnet::city::{enterprises_on, ENTERPRISES};
use civmesh_tests::browser::{
    click, code_in, enrol_with_code, fill, screenshot, sign_in, text, ConsoleNet, ENTERPRISE_COUNT, JINGANSI,
};
use fantoccini::Locator;

/// Records on one console page (the console's own page size).
const CONSOLE_PAGE_RECORDS: usize = 100;

async fn listed_keys(client: &fantoccini::Client) -> Vec<String> {
    civmesh_tests::browser::texts(client, "#records td.key").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_worker_enrols_lists_her_street_and_is_held_to_her_role_in_a_real_browser() {
    let console = ConsoleNet::launch();
    let net = &console.net;
    let node_dir = console.node_dir(JINGANSI);
    let printed = console.add_operator(JINGANSI, "李伟", "street-worker");
    let code = code_in(&printed);
    let base = console.base(JINGANSI);
    assert!(printed.contains(&format!("{base}/enrol")), "{printed}");
    let client = console.browser().await;

    // Enrol with the one-time code: signed in, in Chinese.
    client.goto(&format!("{base}/enrol")).await.unwrap();
    screenshot(&client, "enrol-zh").await;
    enrol_with_code(&client, &base, "李伟", &code, "jingansi-2026").await;
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

    // A prefix search: "jingan" begins her street's name and no other's here.
    fill(&client, "#filter_value", "jingan").await;
    civmesh_tests::browser::select(&client, "#filter_match", "prefix").await;
    click(&client, "#list").await;
    assert_eq!(listed_keys(&client).await, expected[..CONSOLE_PAGE_RECORDS]);

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
    client.goto(&format!("{base}/review")).await.unwrap();
    assert_eq!(text(&client, "#error").await, "Your role may not open this page.");
    screenshot(&client, "forbidden-en").await;
    client.goto(&format!("{base}/")).await.unwrap();
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
    enrol_with_code(&client, &base, "李伟", &code_in(&printed), "a-new-password").await;
    assert_eq!(text(&client, "#welcome").await, "欢迎使用");

    // The pages before sign-in, in English too.
    click(&client, "#switch-lang").await;
    click(&client, "#sign-out").await;
    assert_eq!(text(&client, "#sign-in").await, "Sign in");
    screenshot(&client, "sign-in-en").await;
    client.goto(&format!("{base}/enrol")).await.unwrap();
    screenshot(&client, "enrol-en").await;
    client.close().await.unwrap();
}
