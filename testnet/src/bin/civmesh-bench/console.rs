//! `civmesh-bench console`: how long the console takes to render the
//! reviewer's inbox with 1,000 corrections waiting and a 500-record listing
//! page, p50 and p99, beside the API call for the same data measured in the
//! same run (goal: under 1.5× the API, p99 under 100 ms).

use civmesh_testnet::city::{enterprise_key, street_scoped_grant, write_enterprises, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};
use std::time::Duration;

use super::{enterprise_federation, measure, tempfile_dir, Figures};

/// Enterprises in the registry: Jing'an Temple street holds one in six.
const CONSOLE_ENTERPRISES: usize = 6_000;
/// Corrections waiting in the reviewer's inbox.
const INBOX_CORRECTIONS: usize = 1_000;
/// Records on the listing page measured.
const LISTING_PAGE_RECORDS: usize = 500;
/// The nodes: the market department owns the registry, Jing'an Temple street lists it.
const MARKET: usize = 1;
const JINGANSI: usize = 3;

/// Runs the console benchmark for `seconds` per row.
pub(super) fn console(seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let net = enterprise_federation(&dir)?;
    let csv = dir.join("enterprises.csv");
    write_enterprises(&csv, CONSOLE_ENTERPRISES)?;
    net.import(MARKET, ENTERPRISES, &csv)?;
    let grant = net.issue_grant(MARKET, street_scoped_grant("jingansi")?, JINGANSI)?;
    submit_corrections(&net)?;
    let reviewer = net.api(MARKET)?.console_enrol(
        "王芳",
        &enrolment_code(&net, MARKET, "王芳", "reviewer")?,
        PASSWORD,
    )?;
    let worker = net.api(JINGANSI)?.console_enrol(
        "李伟",
        &enrolment_code(&net, JINGANSI, "李伟", "street-worker")?,
        PASSWORD,
    )?;
    let (owner, street) = (net.api(MARKET)?, net.api(JINGANSI)?);

    let inbox_rows = reviewer.get("/review")?.matches("id=\"review-").count();
    anyhow::ensure!(inbox_rows > 0, "the inbox shows no correction");
    let inbox_console = measure(1, seconds, |_, _| reviewer.get("/review").map(drop))?;
    let inbox_api = measure(1, seconds, |_, _| {
        let path = format!("/v1/corrections?status=awaiting_review&limit={inbox_rows}");
        owner.get::<serde_json::Value>(&path).map(drop)
    })?;

    let (grant_text, page_text) = (grant.to_string(), LISTING_PAGE_RECORDS.to_string());
    let listing_form = [("grant", grant_text.as_str()), ("page_size", page_text.as_str())];
    let listed = worker.post("/records", &listing_form)?.matches("class=\"key\"").count();
    anyhow::ensure!(
        listed == LISTING_PAGE_RECORDS,
        "the console listed {listed} records, not {LISTING_PAGE_RECORDS}"
    );
    let listing_console = measure(1, seconds, |_, _| worker.post("/records", &listing_form).map(drop))?;
    let listing_body = serde_json::json!({
        "dataset": ENTERPRISES, "grant": grant, "page_size": LISTING_PAGE_RECORDS,
    });
    let listing_api = measure(1, seconds, |_, _| {
        street.send::<_, serde_json::Value>("POST", "/v1/query/list", &listing_body).map(drop)
    })?;

    println!("the console beside the API for the same data, {seconds} s per row, one client");
    println!(
        "{:<44} | {:>9} {:>9} | {:>9} {:>9} | {:>11}",
        "page", "p50 ms", "p99 ms", "API p50", "API p99", "p50 ÷ API"
    );
    print_row(
        &format!("reviewer's inbox ({inbox_rows} of {INBOX_CORRECTIONS} waiting)"),
        &inbox_console,
        &inbox_api,
    );
    print_row(
        &format!("listing page ({LISTING_PAGE_RECORDS} records, logged)"),
        &listing_console,
        &listing_api,
    );
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The demo-only password the benchmark's operators set.
const PASSWORD: &str = "bench-password-2026";

fn print_row(page: &str, console: &Figures, api: &Figures) {
    println!(
        "{page:<44} | {:>9.2} {:>9.2} | {:>9.2} {:>9.2} | {:>11.2}",
        console.p50_ms,
        console.p99_ms,
        api.p50_ms,
        api.p99_ms,
        console.p50_ms / api.p50_ms
    );
}

/// Adds a console operator with `civmesh operator add`: their one-time code.
fn enrolment_code(net: &Testnet, node: usize, name: &str, role: &str) -> anyhow::Result<String> {
    civmesh_testnet::one_time_code(&net.add_operator(node, name, role)?)
}

/// Jing'an Temple street submits one correction for each of its first
/// 1,000 enterprises; they wait for review at the market department.
fn submit_corrections(net: &Testnet) -> anyhow::Result<()> {
    let street = net.api(JINGANSI)?;
    let keys = (0..CONSOLE_ENTERPRISES).filter(|index| index % 6 == 1).map(enterprise_key);
    for (sequence, key) in keys.take(INBOX_CORRECTIONS).enumerate() {
        let body = serde_json::json!({
            "dataset": ENTERPRISES, "record_key": key, "base_version": 1,
            "changes": {"operating_address": format!("{sequence} Yanping Road")},
            "reason": "the enterprise moved", "operator": "李伟",
        });
        let _: serde_json::Value = street.send("POST", "/v1/corrections", &body)?;
    }
    let owner = net.api(MARKET)?;
    let path = format!("/v1/corrections?status=awaiting_review&limit={INBOX_CORRECTIONS}");
    wait_until("every correction waiting at the owner", Duration::from_secs(120), || {
        let waiting: Vec<serde_json::Value> = owner.get(&path).ok()?;
        (waiting.len() == INBOX_CORRECTIONS).then_some(())
    })
}
