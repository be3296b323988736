//! Demands and grants through the console, in a real browser (headless
//! Chromium over WebDriver) against a real federation. A street worker of
//! Jing'an Temple street files a demand for the market department's
//! enterprise registry through the two-step form; the market department's
//! policy officer sees it waiting with its catalog match, issues a grant
//! from it (the form defaults to the demand's fields; the expiry warning is
//! shown and confirmed), and the street sees the grant; the officer revokes
//! it and the street no longer sees it; another demand is refused and the
//! street sees the reason. Bad input (an invalid date, over-long text, no
//! field, an empty reason) is shown next to its field with a 400 and
//! nothing committed; a street worker gets 403 on the officer's page; and
//! the policy log names the operator of every decision. Screenshots of each
//! page in both languages go to `$CARGO_TARGET_DIR/console-screenshots/`.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use civmesh_certs::SignedEnvelope;
use civmesh_policy::audit::ArchivedCommand;
use civmesh_policy::Command;
use civmesh_testnet::city::ENTERPRISES;
use civmesh_tests::browser::{
    click, fill, has, screenshot, select, text, tick, ConsoleNet, JINGANSI, MARKET,
};
use fantoccini::{Client, Locator};

/// How long a page may take to show what another node committed.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// Whether the checkbox `css` names is ticked.
async fn ticked(client: &Client, css: &str) -> bool {
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}")).is_selected().await.unwrap()
}

/// The current value of the input or select `css` names.
async fn value(client: &Client, css: &str) -> String {
    let field = client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("no {css}"));
    field.prop("value").await.unwrap().unwrap_or_default()
}

/// Sets a date input by script: typing into one depends on the browser's
/// locale. With `as_text`, the input becomes a text field first, so that
/// a date the browser would refuse reaches the server.
async fn set_date(client: &Client, css: &str, date: &str, as_text: bool) {
    let script = "const field = document.querySelector(arguments[0]); \
                  if (arguments[2]) { field.type = 'text'; } field.value = arguments[1];";
    client.execute(script, vec![css.into(), date.into(), as_text.into()]).await.unwrap();
}

/// Scrolls the element `css` names into the middle of the window and
/// saves a screenshot as `name`.
async fn screenshot_at(client: &Client, css: &str, name: &str) {
    let script = "document.querySelector(arguments[0]).scrollIntoView({ block: 'center' });";
    client.execute(script, vec![css.into()]).await.unwrap();
    screenshot(client, name).await;
}

/// Opens `url` again and again until the element `css` names exists and
/// its text satisfies `wanted`; returns that text.
async fn reload_until(client: &Client, url: &str, css: &str, wanted: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        client.goto(url).await.unwrap();
        if let Ok(element) = client.find(Locator::Css(css)).await {
            let found = element.text().await.unwrap();
            if wanted(&found) {
                return found;
            }
        }
        assert!(started.elapsed() < REPLICATION_WAIT, "{url}: {css} never showed what was wanted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The number in a `#N` text.
fn number_in(text: &str) -> u64 {
    text.trim().trim_start_matches('#').parse().unwrap_or_else(|_| panic!("no number in {text}"))
}

/// The demands in the log, as `GET /v1/demands` at `node` lists them.
fn demands(console: &ConsoleNet, node: usize) -> Vec<serde_json::Value> {
    console.net.api(node).unwrap().get("/v1/demands").unwrap()
}

/// The grants in the log, as `GET /v1/grants` at `node` lists them.
fn grants(console: &ConsoleNet, node: usize) -> Vec<serde_json::Value> {
    console.net.api(node).unwrap().get("/v1/grants").unwrap()
}

/// POSTs `form` to the console at `node` as the browser's signed-in
/// operator, outside the browser, to read the status the browser does not
/// show; returns the status and the page.
async fn post_as(
    console: &ConsoleNet,
    node: usize,
    client: &Client,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, _, body) = console.session_of(node, client).await.post(path, form);
    (status, String::from_utf8(body).unwrap())
}

/// The session's CSRF token, from the page's sign-out form.
async fn csrf(client: &Client) -> String {
    let field = client.find(Locator::Css("form[action='/logout'] input[name=csrf]")).await.unwrap();
    field.attr("value").await.unwrap().unwrap()
}

/// Every `ByOperator` command in node `node`'s archive: (operator, the
/// inner command's kind, whether the log accepted it).
fn operator_commands(console: &ConsoleNet, node: usize) -> Vec<(String, &'static str, bool)> {
    let bytes_max = 64 * 1024 * 1024;
    let page =
        console.net.api(node).unwrap().get_bytes("/v1/audit/commands?from=1&limit=2000", bytes_max).unwrap();
    let archived: Vec<ArchivedCommand> =
        civmesh_certs::codec::decode_exact(&page, bytes_max as usize).unwrap();
    archived
        .iter()
        .filter_map(|entry| {
            let envelope = SignedEnvelope::<Command>::from_bytes(&entry.envelope).unwrap();
            match envelope.unverified_payload().unwrap() {
                Command::ByOperator { operator, command } => {
                    Some((operator, command.kind().as_str(), entry.accepted))
                }
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_demands_data_and_the_owners_officer_grants_refuses_and_revokes_in_a_real_browser() {
    let console = ConsoleNet::launch();
    let (street_base, market_base) = (console.base(JINGANSI), console.base(MARKET));
    let street = console.browser().await;
    console.enrol(&street, JINGANSI, "李伟", "street-worker", "jingansi-2026").await;
    let grants_before = grants(&console, MARKET).len();

    // Step 1: the datasets other organisations published.
    street.goto(&format!("{street_base}/demands/new")).await.unwrap();
    assert!(has(&street, "#no-own-demands").await);
    screenshot(&street, "demand-new-zh").await;
    select(&street, "#dataset", ENTERPRISES).await;
    click(&street, "#choose-dataset").await;

    // Step 2: the registry's fields, each with its class.
    let fields = text(&street, "#fields").await;
    assert!(fields.contains("legal_rep_phone 个人信息") && fields.contains("credit_code 公开"), "{fields}");
    assert!(fields.contains("已获授权"), "the street's grant covers some fields: {fields}");
    screenshot(&street, "demand-fields-zh").await;

    // Bad input: no field, an over-long purpose, an invalid date. Each is
    // said next to its field; nothing is filed.
    fill(&street, "#purpose", &"企业年报核查".repeat(10)).await;
    fill(&street, "#reason", "核对辖区企业的经营地址与联系电话").await;
    set_date(&street, "#until", "2026-02-30", true).await;
    click(&street, "#file-demand").await;
    assert_eq!(text(&street, "#fields-error").await, "请至少选择一个字段。");
    assert_eq!(text(&street, "#purpose-error").await, "内容过长，请缩短。");
    assert!(text(&street, "#until-error").await.contains("日期无效"));
    let described =
        street.find(Locator::Css("#until")).await.unwrap().attr("aria-describedby").await.unwrap();
    assert_eq!(described.as_deref(), Some("until-error"));
    assert_eq!(value(&street, "#reason").await, "核对辖区企业的经营地址与联系电话", "what was typed is kept");
    assert_eq!(text(&street, "#form-problems").await, "请更正下面标出的问题后再提交。");
    screenshot_at(&street, "#purpose-error", "demand-errors-zh").await;
    assert!(demands(&console, JINGANSI).is_empty(), "nothing was filed");

    // The same bad input outside the browser: a 400, and still nothing filed.
    let token = csrf(&street).await;
    let bad = [("csrf", token.as_str()), ("dataset", ENTERPRISES), ("field:name", "on")];
    let (status, page) = post_as(
        &console,
        JINGANSI,
        &street,
        "/demands/new",
        &[
            &bad[..],
            &[
                ("purpose", "企业年报核查"),
                ("legal_basis", "statutory_duty"),
                ("reason", "核对"),
                ("until", "2026-13-01"),
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("id=\"until-error\""), "{page}");
    assert!(demands(&console, JINGANSI).is_empty(), "nothing was filed");

    // A valid demand, needed for five more days.
    for field in ["name", "operating_address", "legal_rep_phone", "street"] {
        tick(&street, &format!("#field-{field}")).await;
    }
    fill(&street, "#purpose", "企业年报核查").await;
    select(&street, "#legal_basis", "statutory_duty").await;
    let until = civmesh_policy::evaluation::format_date(civmesh_certs::now_unix_millis() + 5 * 86_400_000);
    set_date(&street, "#until", &until, true).await;
    click(&street, "#file-demand").await;
    let first = number_in(&text(&street, "#filed-number").await);
    assert_eq!(text(&street, "#filed-state").await, "等待处理");
    let url = street.current_url().await.unwrap();
    assert_eq!((url.path(), url.query()), ("/demands/new", Some(format!("filed={first}").as_str())));
    let row = text(&street, &format!("#own-demand-{first}")).await;
    assert!(row.contains("企业年报核查") && row.contains(&until) && row.contains("等待处理"), "{row}");
    screenshot(&street, "demand-filed-zh").await;

    // A second demand, which the officer will refuse.
    street.goto(&format!("{street_base}/demands/new?dataset={ENTERPRISES}")).await.unwrap();
    tick(&street, "#field-registered_address").await;
    fill(&street, "#purpose", "消防安全检查").await;
    fill(&street, "#reason", "核对企业注册地址").await;
    click(&street, "#file-demand").await;
    let second = number_in(&text(&street, "#filed-number").await);
    assert_ne!(first, second);

    // In English, the same pages.
    click(&street, "#switch-lang").await;
    street.goto(&format!("{street_base}/demands/new")).await.unwrap();
    assert!(text(&street, &format!("#own-demand-{first}")).await.contains("Waiting"));
    screenshot(&street, "demand-new-en").await;
    street.goto(&format!("{street_base}/demands/new?dataset={ENTERPRISES}")).await.unwrap();
    assert!(text(&street, "#fields").await.contains("legal_rep_phone Personal information"));
    screenshot(&street, "demand-fields-en").await;
    click(&street, "#file-demand").await;
    assert_eq!(text(&street, "#fields-error").await, "Choose at least one field.");
    screenshot_at(&street, "#fields-error", "demand-errors-en").await;
    click(&street, "#switch-lang").await;

    // The officer's pages are not a street worker's: 403.
    street.goto(&format!("{street_base}/demands")).await.unwrap();
    assert_eq!(text(&street, "#error").await, "您的角色无权访问此页面。");
    let token = csrf(&street).await;
    let (status, _) = post_as(
        &console,
        JINGANSI,
        &street,
        "/demands/1/refuse",
        &[("csrf", token.as_str()), ("reason", "x")],
    )
    .await;
    assert_eq!(status, 403);

    // The market department's policy officer sees both waiting, oldest
    // first, with the catalog match.
    let officer = console.browser().await;
    console.enrol(&officer, MARKET, "王芳", "policy-officer", "market-2026-pw").await;
    let demands_url = format!("{market_base}/demands");
    reload_until(&officer, &demands_url, &format!("#demand-{second}"), |_| true).await;
    let order: Vec<String> = {
        let mut ids = Vec::new();
        for section in officer.find_all(Locator::Css("section.officer-demand")).await.unwrap() {
            ids.push(section.attr("id").await.unwrap().unwrap());
        }
        ids
    };
    assert_eq!(order, [format!("demand-{first}"), format!("demand-{second}")]);
    let header = text(&officer, &format!("#demand-{first}-title")).await;
    assert!(header.contains("street/jingansi") && header.contains(ENTERPRISES), "{header}");
    let matched = text(&officer, &format!("#match-{first}")).await;
    assert!(matched.contains("legal_rep_phone 个人信息") && matched.contains("name 公开"), "{matched}");
    let held = text(&officer, &format!("#held-{first}")).await;
    assert!(held.contains("#1") && held.contains("street-inspection"), "the street's grant: {held}");
    screenshot(&officer, "officer-demands-zh").await;

    // Refusing without a reason: the message next to the field, a 400, nothing committed.
    click(&officer, &format!("#refuse-{second}")).await;
    let error = text(&officer, &format!("#refuse-reason-{second}-error")).await;
    assert_eq!(error, "此项必填。");
    let token = csrf(&officer).await;
    let refuse_path = format!("/demands/{second}/refuse");
    let (status, _) =
        post_as(&console, MARKET, &officer, &refuse_path, &[("csrf", &token), ("reason", " ")]).await;
    assert_eq!(status, 400);
    let (status, _) =
        post_as(&console, MARKET, &officer, &refuse_path, &[("csrf", "forged"), ("reason", "x")]).await;
    assert_eq!(status, 403);
    assert!(demands(&console, MARKET).iter().all(|demand| demand["status"]["state"] == "waiting"));

    // In English: the waiting demands, and the warnings of the grant form.
    click(&officer, "#switch-lang").await;
    officer.goto(&demands_url).await.unwrap();
    assert!(text(&officer, &format!("#match-{first}")).await.contains("Personal information"));
    screenshot(&officer, "officer-demands-en").await;
    officer.goto(&format!("{market_base}/demands/{first}/grant")).await.unwrap();
    screenshot(&officer, "officer-grant-en").await;
    fill(&officer, "#retain_days", "30").await;
    click(&officer, "#issue-grant").await;
    assert!(text(&officer, "#warnings").await.contains("expires within 7 days"));
    screenshot_at(&officer, "#warnings", "officer-grant-warnings-en").await;
    click(&officer, "#switch-lang").await;

    // The grant form defaults to the demand: its fields, the street's
    // scope, its date, purpose and legal basis.
    officer.goto(&format!("{market_base}/demands/{first}/grant")).await.unwrap();
    for field in ["name", "operating_address", "legal_rep_phone", "street"] {
        assert!(ticked(&officer, &format!("#include-{field}")).await, "{field} is granted by default");
    }
    for field in ["credit_code", "registered_address", "district"] {
        assert!(!ticked(&officer, &format!("#include-{field}")).await, "{field} was not asked for");
    }
    assert_eq!(value(&officer, "#scope_field").await, "street");
    assert_eq!(value(&officer, "#scope_values").await, "jingansi");
    assert_eq!(value(&officer, "#valid_until").await, until);
    assert_eq!(value(&officer, "#purpose").await, "企业年报核查");
    assert_eq!(value(&officer, "#legal_basis").await, "statutory_duty");
    assert!(!ticked(&officer, "#consent").await);
    screenshot(&officer, "officer-grant-zh").await;

    // An invalid date: said next to the field, nothing issued.
    set_date(&officer, "#valid_from", "2026-02-30", true).await;
    click(&officer, "#issue-grant").await;
    assert!(text(&officer, "#valid_from-error").await.contains("日期无效"));
    assert_eq!(grants(&console, MARKET).len(), grants_before);

    // The phone masked to its last 4 digits; the warning (it ends within
    // a week) is shown, and nothing is issued until it is confirmed.
    // A personal field needs a retention: said next to the field, nothing issued.
    officer.goto(&format!("{market_base}/demands/{first}/grant")).await.unwrap();
    click(&officer, "#issue-grant").await;
    assert!(has(&officer, "#retain_days-error").await, "no retention, no grant");
    assert_eq!(grants(&console, MARKET).len(), grants_before);
    officer.goto(&format!("{market_base}/demands/{first}/grant")).await.unwrap();
    select(&officer, "#mask-legal_rep_phone", "keep_last").await;
    fill(&officer, "#retain_days", "30").await;
    click(&officer, "#issue-grant").await;
    let warnings = text(&officer, "#warnings").await;
    assert!(warnings.contains("授权将在 7 天内到期"), "{warnings}");
    assert_eq!(value(&officer, "#mask-legal_rep_phone").await, "keep_last", "the form keeps its values");
    assert_eq!(grants(&console, MARKET).len(), grants_before);
    screenshot_at(&officer, "#warnings", "officer-grant-warnings-zh").await;

    // A confirmation holds only for the warnings shown: with a later end
    // date, the warnings change and are shown again, nothing issued.
    let later = civmesh_policy::evaluation::format_date(civmesh_certs::now_unix_millis() + 30 * 86_400_000);
    set_date(&officer, "#valid_until", &later, false).await;
    tick(&officer, "#confirm").await;
    click(&officer, "#issue-confirmed").await;
    let warnings = text(&officer, "#warnings").await;
    assert!(
        warnings.contains("授权的截止日期晚于需求注明的日期") && !warnings.contains("7 天内"),
        "{warnings}"
    );
    assert_eq!(grants(&console, MARKET).len(), grants_before);

    // Back to the demand's date; its warning confirmed, the grant is issued.
    set_date(&officer, "#valid_until", &until, false).await;
    click(&officer, "#issue-grant").await;
    assert!(text(&officer, "#warnings").await.contains("授权将在 7 天内到期"));
    tick(&officer, "#confirm").await;
    click(&officer, "#issue-confirmed").await;
    let grant = number_in(&text(&officer, "#issued-number").await);
    let row = text(&officer, &format!("#issued-{grant}")).await;
    assert!(row.contains("street/jingansi") && row.contains("street = jingansi"), "{row}");
    assert!(row.contains("legal_rep_phone") && row.contains("+08:00") && row.contains("有效"), "{row}");
    screenshot(&officer, "issued-grants-zh").await;
    let issued = grants(&console, MARKET).into_iter().find(|g| g["id"] == grant).unwrap();
    assert_eq!(issued["demand"], first);
    assert_eq!(issued["masking"]["legal_rep_phone"], serde_json::json!({ "keep_last": 4 }));
    assert_eq!(issued["retention"]["keep_ms"], 30 * 86_400_000u64, "kept 30 days, as entered");

    // The street sees the new grant, and its demand granted.
    let street_grants = format!("{street_base}/grants");
    reload_until(&street, &street_grants, "#grants", |grants| grants.contains("企业年报核查")).await;
    screenshot(&street, "grants-with-demand-zh").await;
    let own = format!("{street_base}/demands/new");
    let row =
        reload_until(&street, &own, &format!("#own-demand-{first}"), |row| row.contains("已授权")).await;
    assert!(row.contains(&format!("#{grant}")), "{row}");

    // The officer refuses the second demand with a reason.
    officer.goto(&demands_url).await.unwrap();
    assert!(!has(&officer, &format!("#demand-{first}")).await, "a granted demand no longer waits");
    fill(&officer, &format!("#refuse-reason-{second}"), "请使用已有的授权 #1").await;
    click(&officer, &format!("#refuse-{second}")).await;
    assert!(text(&officer, "#demand-refused").await.contains(&format!("#{second}")));
    assert!(has(&officer, "#no-waiting").await);
    let row =
        reload_until(&street, &own, &format!("#own-demand-{second}"), |row| row.contains("已拒绝")).await;
    assert!(row.contains("请使用已有的授权 #1"), "{row}");
    screenshot(&street, "demand-refused-zh").await;

    // Revoking without a reason is refused next to the field; with one, the
    // grant is revoked and the street no longer sees it.
    officer.goto(&format!("{market_base}/issued-grants")).await.unwrap();
    click(&officer, &format!("#revoke-{grant}")).await;
    assert_eq!(text(&officer, &format!("#revoke-reason-{grant}-error")).await, "此项必填。");
    assert!(grants(&console, MARKET).iter().all(|g| g["revoked"].is_null()));
    fill(&officer, &format!("#revoke-reason-{grant}"), "年报核查已结束").await;
    click(&officer, &format!("#revoke-{grant}")).await;
    assert_eq!(number_in(&text(&officer, "#revoked-number").await), grant);
    let row = text(&officer, &format!("#issued-{grant}")).await;
    assert!(row.contains("已撤销") && row.contains("年报核查已结束"), "{row}");
    assert!(!has(&officer, &format!("#revoke-{grant}")).await);
    click(&officer, "#switch-lang").await;
    officer.goto(&format!("{market_base}/issued-grants")).await.unwrap();
    assert!(text(&officer, &format!("#issued-{grant}")).await.contains("Revoked"));
    screenshot(&officer, "issued-grants-en").await;
    reload_until(&street, &street_grants, "#grants", |grants| !grants.contains("企业年报核查")).await;

    // The log names the operator of each decision.
    let named = operator_commands(&console, MARKET);
    for expected in [
        ("李伟", "file_demand_with_reason"),
        ("王芳", "refuse_demand"),
        ("王芳", "issue_grant"),
        ("王芳", "revoke_grant"),
    ] {
        assert!(
            named
                .iter()
                .any(|(operator, kind, accepted)| (operator.as_str(), *kind) == expected && *accepted),
            "{expected:?} not in {named:?}"
        );
    }
    assert_eq!(named.iter().filter(|(_, kind, _)| *kind == "file_demand_with_reason").count(), 2);
    assert!(named.iter().all(|(_, _, accepted)| *accepted), "{named:?}");
    street.close().await.unwrap();
    officer.close().await.unwrap();
}
