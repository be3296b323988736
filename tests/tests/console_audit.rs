//! The auditor's pages and the evaluation dashboard in a real browser
//! (headless Chromium over WebDriver) against a real federation. The street
//! of Jing'an Temple lists its enterprises and queries one (a permit and a
//! denial); it corrects two records, the market department accepts one and
//! rejects the other. An auditor on the hub verifies the log (a progress
//! bar, then the summary and what each department released), is refused a
//! file that is not a bundle and verifies an exported one, reads the
//! subject-access report of one enterprise and downloads it as a PDF; the
//! dashboard shows the market department's turnaround chart and its week's
//! p50, and downloads as CSV. Screenshots of each page in both languages go
//! to `$CARGO_TARGET_DIR/console-screenshots/`.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use civmesh_testnet::city::{enterprise_key, ENTERPRISES};
use civmesh_testnet::wait_until;
use civmesh_tests::browser::{click, has, screenshot, text, texts, ConsoleNet, HUB, JINGANSI, MARKET};
use fantoccini::{Client, Locator};
use serde_json::Value;

/// The auditor's password (a test's).
const PASSWORD: &str = "audit-2026-secret";

/// Waits until the audit page shows a summary (it refreshes itself while a
/// verification runs); whether it showed the progress bar on the way.
async fn summary_after_progress(client: &Client, name: &str) -> bool {
    let start = Instant::now();
    let mut saw_progress = false;
    loop {
        if has(client, "#audit-running progress").await {
            if !saw_progress {
                screenshot(client, name).await;
            }
            saw_progress = true;
        } else if has(client, "#audit-summary").await {
            return saw_progress;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no summary after two minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Commands appended to a bundle to make its verification last.
const REPLAYED_COMMANDS: u64 = 40_000;

/// The bundle at `path` with its smallest member-signed command appended
/// `copies` times, each marked rejected (a replay the log refused, as the
/// replay does): a history as valid as the original, only longer. Its
/// original command count and where it is written.
fn with_rejected_replays(path: &std::path::Path, copies: u64) -> (u64, std::path::PathBuf) {
    let mut bundle = civmesh_policy::audit::decode_bundle(&std::fs::read(path).unwrap()).unwrap();
    let original = bundle.commands.len() as u64;
    let last = bundle.commands.last().unwrap().clone();
    let replayed = bundle.commands[1..]
        .iter()
        .filter(|command| command.accepted)
        .min_by_key(|command| command.envelope.len())
        .unwrap()
        .clone();
    for copy in 1..=copies {
        bundle.commands.push(civmesh_policy::audit::ArchivedCommand {
            sequence: last.sequence + copy,
            log_index: last.log_index + copy,
            entry_time_ms: last.entry_time_ms,
            envelope: replayed.envelope.clone(),
            accepted: false,
        });
    }
    let padded = path.with_extension("long.bundle");
    std::fs::write(&padded, civmesh_policy::audit::encode_bundle(&bundle).unwrap()).unwrap();
    (original, padded)
}

/// Whether an archived command logs an access.
fn is_access(command: &civmesh_policy::audit::ArchivedCommand) -> bool {
    civmesh_certs::SignedEnvelope::<civmesh_policy::Command>::from_bytes(&command.envelope)
        .and_then(|envelope| envelope.unverified_payload())
        .is_ok_and(|command| command.access().is_some())
}

/// The session's CSRF token, from the sign-out form every page carries.
async fn session_csrf(client: &Client) -> String {
    client
        .find(Locator::Css("form[action='/logout'] input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap()
}

/// Scrolls the element `css` names to the top of the window.
async fn scroll_to(client: &Client, css: &str) {
    let script = "document.querySelector(arguments[0]).scrollIntoView({ block: 'center' })";
    client.execute(script, vec![Value::from(css)]).await.unwrap();
}

/// The hub's audit checkpoints: (access entries, leaves, the latest final
/// checkpoint's size).
fn checkpoints(console: &ConsoleNet) -> Option<(u64, u64, u64)> {
    let checkpoints: Value = console.net.api(HUB).ok()?.get("/v1/audit/checkpoints").ok()?;
    Some((
        checkpoints["access_entries"].as_u64()?,
        checkpoints["leaves"].as_u64()?,
        checkpoints["latest"]["tree_size"].as_u64()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_verifies_the_log_reads_a_subject_report_and_the_dashboard_shows_each_department() {
    let console = ConsoleNet::launch();
    let net = &console.net;
    let street_dir = console.node_dir(JINGANSI);
    let subject = enterprise_key(1);
    assert!(subject.ends_with("000001"), "enterprise 1 is on Jing'an Temple street");

    // Accesses: the street lists its enterprises five to a page (a hundred
    // pages), queries enterprise 1 under its grant (a permit) and for
    // another purpose (no grant: a denial).
    let listed = net
        .cli(&[
            "records",
            "list",
            "--node-dir",
            &street_dir,
            "--dataset",
            ENTERPRISES,
            "--page-size",
            "5",
            "--all",
        ])
        .unwrap();
    assert!(listed.contains(&subject), "the street's listing holds enterprise 1");
    let query = |purpose: &str| {
        net.cli(&[
            "query",
            "--node-dir",
            &street_dir,
            "--dataset",
            ENTERPRISES,
            "--record-key",
            &subject,
            "--field",
            "name",
            "--field",
            "street",
            "--purpose",
            purpose,
        ])
    };
    query("street-inspection").unwrap();
    assert!(query("marketing").unwrap_err().to_string().contains("denied"));

    // Corrections: two from the street, one accepted and one rejected by
    // the market department's reviewer.
    let market_dir = console.node_dir(MARKET);
    let mut decided = Vec::new();
    for (index, change, verb) in
        [(1, "operating_address=8 Changde Road", "accept"), (7, "name=Tea House 7", "reject")]
    {
        let view = net.submit_correction(JINGANSI, &enterprise_key(index), 1, &[change], 0, &[]).unwrap();
        let id = view["correction"].as_str().unwrap().to_string();
        wait_until("the correction awaiting review", Duration::from_secs(30), || {
            let view: Value = net.api(MARKET).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
            (view["state"] == "awaiting_review").then_some(())
        })
        .unwrap();
        let mut args = vec!["correction", verb, "--node-dir", &market_dir, &id, "--operator", "王芳"];
        if verb == "reject" {
            args.extend(["--reason", "名称与营业执照一致"]);
        }
        net.cli(&args).unwrap();
        decided.push(id);
    }

    // Every access entry and outcome under a final checkpoint at the hub.
    let (entries, _, _) = wait_until("every leaf anchored at the hub", Duration::from_secs(60), || {
        let (entries, leaves, anchored) = checkpoints(&console)?;
        (entries >= 102 && leaves >= entries + 2 && anchored == leaves).then_some((entries, leaves, anchored))
    })
    .unwrap();

    // The auditor's node holds the federation's subject-key secret, as
    // `civmesh init` gives it to a node of the auditor role; here the hub
    // serves the auditor.
    let hub_dir = net.nodes[HUB].data_dir.clone();
    std::fs::copy(net.ca_dir.join("subject-key.secret"), hub_dir.join("subject-key.secret")).unwrap();
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(hub_dir.join("subject-key.secret"), private).unwrap();

    let client = console.browser().await;
    let base = console.base(HUB);
    console.enrol(&client, HUB, "审计员赵敏", "auditor", PASSWORD).await;
    client.goto(&format!("{base}/audit")).await.unwrap();
    assert!(has(&client, "#verify-own").await);
    screenshot(&client, "audit-zh").await;

    // Verify this node's log: (a progress bar while it runs,) the summary.
    click(&client, "#verify-own").await;
    summary_after_progress(&client, "audit-progress-zh").await;
    assert!(text(&client, "#audit-verdict").await.starts_with("核验通过"));
    assert!(text(&client, "#audit-entries").await.starts_with(&format!("{entries} ")), "{entries} entries");
    let checkpoints_final: u64 = text(&client, "#audit-checkpoints").await.parse().unwrap();
    assert!(checkpoints_final >= 1);
    assert!(text(&client, "#audit-anchored").await.contains("未锚定 0"), "every leaf anchored");
    let department = texts(&client, "#audit-departments tbody tr:first-child > *").await;
    assert_eq!(
        department[..2],
        ["dept/market-supervision".to_string(), entries.to_string()],
        "{department:?}"
    );
    let grants = texts(&client, "#audit-grants tbody th").await;
    assert_eq!(grants, ["无授权（公开字段）", "#1"], "the denial named no grant");
    assert!(text(&client, "#audit-grants tbody tr:last-child").await.contains("street/jingansi"));
    assert!(has(&client, "#audit-no-flags").await, "no sensitive field, no late release");
    screenshot(&client, "audit-summary-zh").await;
    scroll_to(&client, "#audit-departments").await;
    screenshot(&client, "audit-tables-zh").await;

    // A file that is not a bundle is refused next to the field.
    let not_a_bundle = console.dir.path().join("notes.bundle");
    std::fs::write(&not_a_bundle, "这不是审计包").unwrap();
    client
        .find(Locator::Css("#bundle"))
        .await
        .unwrap()
        .send_keys(not_a_bundle.to_str().unwrap())
        .await
        .unwrap();
    click(&client, "#verify-upload").await;
    assert!(text(&client, "#bundle-error").await.contains("不是审计包"));
    screenshot(&client, "audit-upload-error-zh").await;

    // A long history: the hub's bundle, then the same command replayed
    // many times, each rejected by the log (as the archive says) and by
    // the replay. Its verification shows its progress, refuses a second
    // start while it runs, and passes.
    let bundle = console.dir.path().join("hub.bundle");
    net.audit_export(HUB, &bundle).unwrap();
    let (commands, padded) = with_rejected_replays(&bundle, REPLAYED_COMMANDS);
    let https = console.session_of(HUB, &client).await;
    let csrf = session_csrf(&client).await;
    client.find(Locator::Css("#bundle")).await.unwrap().send_keys(padded.to_str().unwrap()).await.unwrap();
    click(&client, "#verify-upload").await;
    assert!(has(&client, "#audit-running progress").await, "the progress bar");
    screenshot(&client, "audit-progress-zh").await;
    let (status, _, _, page) = https.post("/audit/verify", &[("csrf", &csrf)]);
    assert_eq!(status, 409, "one verification at a time");
    assert!(String::from_utf8(page).unwrap().contains("已有一次核验正在进行"));
    assert!(summary_after_progress(&client, "audit-progress-later-zh").await);
    assert!(text(&client, "#audit-summary").await.contains("上传的审计包"));
    assert!(text(&client, "#audit-verdict").await.starts_with("核验通过"));
    assert_eq!(text(&client, "#audit-commands").await, (commands + REPLAYED_COMMANDS).to_string());

    // A history that says the log refused an access the policy allowed
    // fails, with its typed reason and the detail.
    let mut tampered = civmesh_policy::audit::decode_bundle(&std::fs::read(&bundle).unwrap()).unwrap();
    let access =
        tampered.commands.iter().rposition(|command| command.accepted && is_access(command)).unwrap();
    tampered.commands[access].accepted = false;
    let tampered_path = console.dir.path().join("tampered.bundle");
    std::fs::write(&tampered_path, civmesh_policy::audit::encode_bundle(&tampered).unwrap()).unwrap();
    client
        .find(Locator::Css("#bundle"))
        .await
        .unwrap()
        .send_keys(tampered_path.to_str().unwrap())
        .await
        .unwrap();
    click(&client, "#verify-upload").await;
    summary_after_progress(&client, "audit-progress-tampered-zh").await;
    assert_eq!(text(&client, "#audit-verdict").await, "核验未通过。");
    let reason = text(&client, "#audit-reason").await;
    assert!(reason.starts_with("日志拒绝了一条重放时可接受的命令。"), "{reason}");
    assert!(text(&client, "#audit-failures").await.contains(&(access + 1).to_string()), "the command named");
    screenshot(&client, "audit-failed-zh").await;

    // The subject-access report of enterprise 1: its listing page, the
    // query released and the query denied, with the fields and the grant.
    client.goto(&format!("{base}/audit/subject")).await.unwrap();
    screenshot(&client, "subject-form-zh").await;
    civmesh_tests::browser::select(&client, "#dataset", ENTERPRISES).await;
    civmesh_tests::browser::fill(&client, "#record_key", &subject).await;
    click(&client, "#subject-show").await;
    assert_eq!(client.current_url().await.unwrap().path(), "/audit/subject", "no key in the URL");
    assert!(client.current_url().await.unwrap().query().is_none());
    let rows = texts(&client, "#subject-accesses tbody tr").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows
        .iter()
        .all(|row| row.contains("street/jingansi") && row.contains("dept/market-supervision")));
    let kinds: Vec<bool> =
        ["列表", "查询"].iter().map(|kind| rows.iter().any(|row| row.contains(kind))).collect();
    assert_eq!(kinds, [true, true], "{rows:?}");
    assert!(rows
        .iter()
        .any(|row| row.contains("name, street") && row.contains("#1") && row.contains("已提供")));
    assert!(rows.iter().any(|row| row.contains("已拒绝")), "{rows:?}");
    screenshot(&client, "subject-zh").await;
    scroll_to(&client, "#subject-accesses").await;
    screenshot(&client, "subject-table-zh").await;

    // The same report as a PDF naming the accesses.
    let csrf = client
        .find(Locator::Css("#pdf-form input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let form = [("csrf", csrf.as_str()), ("dataset", ENTERPRISES), ("record_key", subject.as_str())];
    let (status, kind, disposition, pdf) = https.post("/audit/subject.pdf", &form);
    assert_eq!((status, kind.as_str()), (200, "application/pdf"));
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(pdf.starts_with(b"%PDF-"));
    let holds = |needle: &[u8]| pdf.windows(needle.len()).any(|window| window == needle);
    assert!(holds(b"street/jingansi") && holds(subject.as_bytes()) && holds(b"STSong-Light"));
    let under_grant = pdf.windows(b": #1 ".len()).filter(|window| *window == b": #1 ").count();
    assert_eq!(under_grant, 2, "the listing page and the query released under grant 1");
    std::fs::write(civmesh_tests::browser::screenshots_dir().join("subject-report-zh.pdf"), &pdf).unwrap();
    let (refused, ..) = https.post(
        "/audit/subject.pdf",
        &[("csrf", "forged"), ("dataset", ENTERPRISES), ("record_key", &subject)],
    );
    assert_eq!(refused, 403);

    // The dashboard: the market department's turnaround chart (an SVG
    // that loads) beside its table, whose week shows the p50 the API gives.
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    let owners = texts(&client, "section.department h2").await;
    let market = owners
        .iter()
        .position(|owner| owner.starts_with("dept/market-supervision"))
        .expect("the market section");
    let image = format!("#dept-{market}-turnaround");
    let loaded = client
        .execute(
            &format!(
                "const img = document.querySelector('{image}'); return img.complete && img.naturalWidth"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert!(loaded.as_u64().unwrap_or(0) > 0, "the chart loaded: {loaded}");
    let src = client.find(Locator::Css(&image)).await.unwrap().attr("src").await.unwrap().unwrap();
    let (status, kind, _, svg) = https.get(&src);
    assert_eq!((status, kind.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(svg).unwrap().contains("更正处理时长"));
    let week = civmesh_policy::evaluation::format_date(civmesh_policy::evaluation::week_start(
        civmesh_certs::now_unix_millis(),
    ));
    let evaluation: Value =
        net.api(HUB).unwrap().get(&format!("/v1/evaluation?bucket=week&from={week}")).unwrap();
    let row = evaluation["departments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["owner"] == "dept/market-supervision")
        .unwrap()
        .clone();
    assert_eq!((row["applied"].as_u64(), row["rejected_by_owner"].as_u64()), (Some(1), Some(1)));
    let p50 = row["turnaround_ms_p50"].as_u64().unwrap();
    let cell = client
        .find(Locator::Css(&format!("#dept-{market}-table tr[data-week='{week}'] td.p50")))
        .await
        .unwrap();
    assert_eq!(cell.attr("data-ms").await.unwrap(), Some(p50.to_string()));
    assert_ne!(cell.text().await.unwrap(), "-");
    let acceptance = text(&client, &format!("#dept-{market}-table tr[data-week='{week}']")).await;
    assert!(acceptance.contains("50%"), "{acceptance}");
    assert!(text(&client, "#streets-table").await.contains("street/jingansi"));
    screenshot(&client, "dashboard-zh").await;
    scroll_to(&client, &format!("#dept-{market}-table tr[data-week='{week}']")).await;
    screenshot(&client, "dashboard-table-zh").await;
    let (status, kind, disposition, csv) = https.get("/dashboard.csv");
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.starts_with("bucket,owner,dataset,submitted,applied,rejected_by_owner,acceptance_rate,"),
        "{csv}"
    );
    assert!(csv.lines().any(|line| line.starts_with(&format!("{week},dept/market-supervision,"))), "{csv}");
    let (status, kind, _, streets) = https.get("/dashboard/streets.csv");
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    assert!(String::from_utf8(streets).unwrap().contains("street/jingansi"));

    // English: the same pages.
    client.goto(&format!("{base}/lang/en")).await.unwrap();
    client.goto(&format!("{base}/audit")).await.unwrap();
    assert_eq!(text(&client, "#audit-verdict").await, "Verification failed.");
    assert!(text(&client, "#audit-reason")
        .await
        .starts_with("The log rejected a command the replay accepts."));
    screenshot(&client, "audit-failed-en").await;
    client.find(Locator::Css("#bundle")).await.unwrap().send_keys(padded.to_str().unwrap()).await.unwrap();
    click(&client, "#verify-upload").await;
    assert!(summary_after_progress(&client, "audit-progress-en").await, "the progress bar, in English");
    assert!(text(&client, "#audit-verdict").await.starts_with("Verified"));
    screenshot(&client, "audit-summary-en").await;
    client.goto(&format!("{base}/audit/subject")).await.unwrap();
    civmesh_tests::browser::fill(&client, "#record_key", &subject).await;
    click(&client, "#subject-show").await;
    assert_eq!(texts(&client, "#subject-accesses tbody tr").await.len(), 3);
    screenshot(&client, "subject-en").await;
    scroll_to(&client, "#subject-accesses").await;
    screenshot(&client, "subject-table-en").await;
    client.goto(&format!("{base}/audit")).await.unwrap();
    scroll_to(&client, "#audit-departments").await;
    screenshot(&client, "audit-tables-en").await;
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    assert!(text(&client, "h1").await.contains("Department evaluation"));
    screenshot(&client, "dashboard-en").await;
    scroll_to(&client, &format!("#dept-{market}-table tr[data-week='{week}']")).await;
    screenshot(&client, "dashboard-table-en").await;

    // Bad input, next to its field, in the operator's language.
    client.goto(&format!("{base}/audit/subject")).await.unwrap();
    click(&client, "#subject-show").await;
    assert_eq!(text(&client, "#record-key-error").await, "Enter a record key.");
    screenshot(&client, "subject-error-en").await;
    client.goto(&format!("{base}/dashboard?from=2026-02-30&to=")).await.unwrap();
    assert!(text(&client, "#from-error").await.starts_with("Not a date"));

    // A street worker may see the dashboard, not the auditor's pages.
    // Signed out first (waiting for it: its redirect to /login would
    // otherwise race the enrolment page).
    civmesh_tests::browser::sign_out(&client).await;
    console.enrol(&client, HUB, "李伟", "street-worker", "street-2026-secret").await;
    client.goto(&format!("{base}/audit")).await.unwrap();
    assert!(has(&client, "#error").await, "403 for a street worker");
    client.goto(&format!("{base}/dashboard")).await.unwrap();
    assert!(has(&client, "section.department").await);
    assert_eq!(decided.len(), 2);
    client.close().await.unwrap();
}
