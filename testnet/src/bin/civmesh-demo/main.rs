//! `civmesh-demo` (also `civmesh demo`): a local federation of real
//! processes, seeded with synthetic data, walking the loop step by step and
//! checking each step against the nodes' real answers.
//!
//! The steps: a federation of seven processes, the seed data, a demand and
//! its grant, the street listing the enterprises in its scope, a street
//! query with masked fields, a correction from the
//! street through review to the new version and back, the replicated access
//! log, the auditor's offline verification and a subject-access report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, OrgId};
use civmesh_policy::model::{LegalBasis, MaskingRule};
use civmesh_policy::{Applied, Command, GrantSpec};
use civmesh_testnet::city::{
    enterprise_dataset, enterprise_key, resident_dataset, resident_key, whole_city, write_enterprises,
    write_residents, Enterprise, ENTERPRISES, RESIDENTS,
};
use civmesh_testnet::{wait_until, SnapshotPolicy, Testnet};

const ENTERPRISE_COUNT: usize = 10_000;
const RESIDENT_COUNT: usize = 50_000;
const PURPOSE: &str = "street-inspection";
/// The longest soak, in seconds (a day).
const SOAK_SECONDS_MAX: u64 = 86_400;

mod retention;
mod soak;

struct Options {
    check: bool,
    dir: Option<PathBuf>,
    soak_seconds: Option<u64>,
    /// The soak's seed; the clock's if not given.
    seed: Option<u64>,
    /// `--soak-plan COUNT`: print the schedule, run nothing.
    soak_plan: Option<u64>,
}

const USAGE: &str =
    "usage: civmesh demo [--check] [--dir DIR] [--soak-minutes N | --soak-seconds N] [--seed N] \
    [--soak-plan COUNT]";

fn options() -> anyhow::Result<Options> {
    let mut options = Options { check: false, dir: None, soak_seconds: None, seed: None, soak_plan: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => options.check = true,
            "--dir" => options.dir = Some(args.next().context("--dir needs a directory")?.into()),
            "--seed" => {
                options.seed = Some(args.next().context("--seed needs a number")?.parse().context("--seed")?)
            }
            "--soak-plan" => {
                let count: u64 =
                    args.next().context("--soak-plan needs a count")?.parse().context("--soak-plan")?;
                let max = soak::SOAK_PLAN_OPERATIONS_MAX;
                anyhow::ensure!(count <= max, "--soak-plan prints at most {max} operations");
                options.soak_plan = Some(count);
            }
            "--soak-minutes" | "--soak-seconds" => {
                let amount: u64 = args.next().context("--soak-minutes needs a number")?.parse()?;
                let seconds = if arg == "--soak-minutes" { amount * 60 } else { amount };
                anyhow::ensure!(seconds <= SOAK_SECONDS_MAX, "a soak runs at most {SOAK_SECONDS_MAX} s");
                options.soak_seconds = Some(seconds);
            }
            other => anyhow::bail!("unknown argument {other}; {USAGE}"),
        }
    }
    Ok(options)
}

fn step(number: &str, text: &str) {
    println!("\n[{number}] {text}");
}

fn ok(text: &str) {
    println!("    ok: {text}");
}

/// Set once the loop is verified: an interrupt after it is a normal end.
static VERIFIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set by the first interrupt; later ones are ignored while it stops the nodes.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The exit status of a demo interrupted before it was verified (128 + SIGINT).
const INTERRUPTED_EXIT_CODE: i32 = 130;

/// On SIGINT or SIGTERM, at any step: stop every node (SIGTERM, waiting for
/// each to exit), remove a temporary directory, and only then exit.
fn stop_on_interrupt(temporary: Option<PathBuf>) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    ctrlc::set_handler(move || {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            return;
        }
        println!("\nstopping the federation");
        civmesh_testnet::stop_every_node();
        if let Some(dir) = &temporary {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::io::stdout().flush();
        std::process::exit(if VERIFIED.load(Ordering::SeqCst) { 0 } else { INTERRUPTED_EXIT_CODE });
    })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    if let Some(count) = options.soak_plan {
        let seed = options.seed.context("--soak-plan needs --seed")?;
        soak::print_plan(seed, count);
        return Ok(());
    }
    let (root, temporary) = demo_root(&options)?;
    stop_on_interrupt(temporary.as_ref().map(|temporary| temporary.0.clone()))?;
    let mut net = start_federation(&root)?;
    seed(&net, &root)?;
    let grant_id = demand_and_grant(&net)?;
    street_listing(&net, grant_id)?;
    let record = street_query(&net, grant_id)?;
    correction_loop(&net, grant_id, &record)?;
    replicated_access_log(&net)?;
    audit(&net, &root)?;
    retention::revoked_copies_deleted(&net)?;
    print_evaluation(&net)?;
    console_operators(&net)?;
    println!("\ndemo: closed loop verified");
    VERIFIED.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(seconds) = options.soak_seconds {
        let seed = options.seed.unwrap_or_else(now_unix_millis);
        soak::soak(&mut net, &root, seconds, seed, grant_id)?;
    }
    if options.check {
        return Ok(());
    }
    print_api_urls(&net)?;
    wait_for_interrupt()
}

/// The directory the federation lives in: `--dir` (empty or new), or a
/// temporary one removed at the end.
fn demo_root(options: &Options) -> anyhow::Result<(PathBuf, Option<TemporaryDir>)> {
    let Some(dir) = &options.dir else {
        let temporary = std::env::temp_dir().join(format!("civmesh-demo-{}", std::process::id()));
        return Ok((temporary.clone(), Some(TemporaryDir(temporary))));
    };
    anyhow::ensure!(
        !dir.join("ca").join("ca.pem").exists(),
        "{} already holds a civmesh federation; give --dir an empty or new directory",
        dir.display()
    );
    anyhow::ensure!(
        !dir.exists() || std::fs::read_dir(dir)?.next().is_none(),
        "{} is not empty; give --dir an empty or new directory",
        dir.display()
    );
    Ok((dir.clone(), None))
}

/// Step 0: seven processes, three of them voters, and a leader.
fn start_federation(root: &std::path::Path) -> anyhow::Result<Testnet> {
    step(
        "0",
        "a federation of 7 civmesh processes: 3 voters (hub, market supervision, civil affairs), 4 learners",
    );
    let mut net = Testnet::create(root, &whole_city(), SnapshotPolicy::default())?;
    net.configure(3, |config| config.retention.sweep_interval_ms = retention::STREET_SWEEP_INTERVAL_MS)?;
    net.start_all()?;
    net.bootstrap()?;
    let leader = net.leader(Duration::from_secs(10))?;
    ok(&format!("policy log up, leader {}", net.nodes[leader].spec.name));
    Ok(net)
}

/// The seed: both departments publish their datasets and import them.
fn seed(net: &Testnet, root: &std::path::Path) -> anyhow::Result<()> {
    step("seed", "catalog and synthetic data: 10,000 enterprises, 50,000 residents");
    net.sign_and_submit(1, 1, Command::PublishDataset(enterprise_dataset()))?;
    net.sign_and_submit(2, 2, Command::PublishDataset(resident_dataset()))?;
    let enterprises_csv = root.join("enterprises.csv");
    write_enterprises(&enterprises_csv, ENTERPRISE_COUNT)?;
    let residents_csv = root.join("residents.csv");
    write_residents(&residents_csv, RESIDENT_COUNT)?;
    let imports = [
        (1, ENTERPRISES, &enterprises_csv, ENTERPRISE_COUNT),
        (2, RESIDENTS, &residents_csv, RESIDENT_COUNT),
    ];
    for (index, dataset, file, generated) in imports {
        let printed = net.import(index, dataset, file)?;
        let (written, refused) =
            (format!("{generated} rows written to {dataset} (batch "), "), 0 unchanged, 0 refused;");
        anyhow::ensure!(
            printed.starts_with(&written) && printed.contains(refused),
            "expected {generated} rows written and none refused; the import printed {printed}"
        );
        ok(&format!("{generated} rows written to {dataset}, as generated; none refused"));
    }
    Ok(())
}

/// Steps 1 and 2: the street files a demand, the catalog match lists it as
/// waiting, market supervision grants it, and the match lists it no more.
/// Returns the grant's id.
fn demand_and_grant(net: &Testnet) -> anyhow::Result<u64> {
    step(
        "1",
        "demand: Jing'an Temple street asks market supervision for enterprise codes, names and operating addresses",
    );
    let demand = net.sign_and_submit(
        3,
        3,
        Command::FileDemand {
            dataset: ENTERPRISES.into(),
            fields: BTreeSet::from([
                "credit_code".to_string(),
                "name".to_string(),
                "operating_address".to_string(),
            ]),
            purpose: PURPOSE.into(),
            legal_basis: LegalBasis::StatutoryDuty,
        },
    )?;
    let Applied::DemandFiled(demand_id) = demand else { anyhow::bail!("no demand id: {demand:?}") };
    let report: serde_json::Value = net.api(0)?.get("/v1/policy/match")?;
    anyhow::ensure!(
        report["demands_without_grant"].as_array().is_some_and(|d| d.contains(&serde_json::json!(demand_id))),
        "the demand is not listed as waiting: {report}"
    );
    ok(&format!("demand {demand_id} filed; catalog match lists it as waiting for a grant"));

    step("2", "grant: market supervision grants those fields and the legal representative's phone (masked), for Jing'an Temple street only");
    let Applied::GrantIssued(grant_id) =
        net.sign_and_submit(1, 1, Command::IssueGrant(street_grant(demand_id)?))?
    else {
        anyhow::bail!("no grant id")
    };
    let report: serde_json::Value = net.api(0)?.get("/v1/policy/match")?;
    anyhow::ensure!(
        report["demands_without_grant"].as_array().is_some_and(|d| d.is_empty()),
        "the demand still waits: {report}"
    );
    ok(&format!("grant {grant_id} issued; the demand is now covered"));
    Ok(grant_id)
}

/// The grant of step 2: names, operating addresses and the masked phone of
/// the enterprises of Jing'an Temple street, for 90 days, answering demand
/// `demand_id`; copies are kept a year.
fn street_grant(demand_id: u64) -> anyhow::Result<GrantSpec> {
    Ok(GrantSpec {
        dataset: ENTERPRISES.into(),
        grantee: OrgId::new("street/jingansi")?,
        fields: BTreeSet::from([
            "credit_code".to_string(),
            "name".to_string(),
            "operating_address".to_string(),
            "legal_rep_phone".to_string(),
        ]),
        purpose: PURPOSE.into(),
        legal_basis: LegalBasis::StatutoryDuty,
        scope: vec![civmesh_policy::model::ScopeCondition {
            field: "street".into(),
            allowed: BTreeSet::from([civmesh_policy::model::FieldValue::Text("jingansi".into())]),
        }],
        valid_from_ms: now_unix_millis().saturating_sub(60_000),
        valid_until_ms: now_unix_millis() + 90 * 86_400_000,
        masking: BTreeMap::from([("legal_rep_phone".to_string(), MaskingRule::KeepLast(4))]),
        consent_required: false,
        demand: Some(demand_id),
        retention: Some(civmesh_policy::fixtures::RETENTION),
        assessment: None,
    })
}

/// Step 3: before its visits, the street lists the enterprises in its
/// scope, page by page: exactly those the generator put on Jing'an Temple
/// street, each page logged before it was released. Nanjing West Road
/// street, granted its own street, lists exactly its own, and the one
/// street cannot list under the other's grant.
fn street_listing(net: &Testnet, grant_id: u64) -> anyhow::Result<()> {
    step("3", "the street lists the enterprises in its scope before its visits: a count and the first page");
    let (keys, pages) = list_whole(net, 3, grant_id, true)?;
    let expected = civmesh_testnet::city::enterprises_on("jingansi", ENTERPRISE_COUNT);
    anyhow::ensure!(
        keys == expected,
        "listed {} enterprises, expected Jing'an Temple street's {}",
        keys.len(),
        expected.len()
    );
    ok(&format!(
        "{} enterprises listed in {pages} pages of up to 500, each page logged before release: exactly Jing'an Temple street's",
        keys.len()
    ));
    let other = net.issue_grant(1, civmesh_testnet::city::street_scoped_grant("nanjingxilu")?, 4)?;
    let (their_keys, _) = list_whole(net, 4, other, false)?;
    let theirs = civmesh_testnet::city::enterprises_on("nanjingxilu", ENTERPRISE_COUNT);
    anyhow::ensure!(
        their_keys == theirs && their_keys.iter().all(|key| !keys.contains(key)),
        "Nanjing West Road street listed {} enterprises, expected its own {}",
        their_keys.len(),
        theirs.len()
    );
    let body = serde_json::json!({ "dataset": ENTERPRISES, "grant": other });
    let answer: serde_json::Value = net.api(3)?.send("POST", "/v1/query/list", &body)?;
    anyhow::ensure!(
        answer.get("Denied").is_some(),
        "Jing'an Temple listed under another street's grant: {answer}"
    );
    ok(&format!(
        "Nanjing West Road street, granted its own street, lists its {} and none of Jing'an Temple's; \
         Jing'an Temple street is denied under that grant (logged)",
        their_keys.len()
    ));
    Ok(())
}

/// Lists, through node `node`'s API under grant `grant_id`, every
/// enterprise page by page; the keys and the number of pages. Prints the
/// first page when `show`.
fn list_whole(net: &Testnet, node: usize, grant_id: u64, show: bool) -> anyhow::Result<(Vec<String>, usize)> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = serde_json::json!({ "dataset": ENTERPRISES, "grant": grant_id, "cursor": cursor });
        let answer: serde_json::Value =
            wait_until("the grant to reach the street", Duration::from_secs(10), || {
                net.api(node).ok()?.send::<_, serde_json::Value>("POST", "/v1/query/list", &body).ok()
            })?;
        let page = answer["Page"]["records"].as_array().with_context(|| format!("not a page: {answer}"))?;
        if show && pages == 0 {
            println!("    first page ({} records), the first three:", page.len());
            for record in page.iter().take(3) {
                println!("    {} {}", record["key"], serde_json::to_string(&record["fields"])?);
            }
        }
        pages += 1;
        keys.extend(page.iter().filter_map(|record| record["key"].as_str().map(str::to_string)));
        match answer["Page"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    Ok((keys, pages))
}

/// Step 4: the street's query releases exactly the granted fields, masked;
/// a record out of scope answers like an unknown key; residents without a
/// grant are denied. Returns the released record.
fn street_query(net: &Testnet, grant_id: u64) -> anyhow::Result<serde_json::Value> {
    step(
        "4",
        &format!(
            "a street query: enterprise {} (Jing'an Temple street), four fields asked",
            enterprise_key(7)
        ),
    );
    let query = serde_json::json!({
        "dataset": ENTERPRISES, "keys": [enterprise_key(7)],
        "fields": ["name", "operating_address", "registered_address", "legal_rep_phone"],
        "purpose": PURPOSE, "grant": grant_id,
    });
    let answer: serde_json::Value =
        wait_until("the grant to reach the street", Duration::from_secs(10), || {
            net.api(3)
                .ok()?
                .send::<_, serde_json::Value>("POST", "/v1/query", &query)
                .ok()
                .filter(|a| a.get("Released").is_some())
        })?;
    let record = &answer["Released"]["records"][0];
    println!("    {}", serde_json::to_string(&record["fields"])?);
    let generated = Enterprise::generated(7);
    let expected = serde_json::json!({
        "name": generated.name,
        "operating_address": generated.operating_address,
        // keep_last:4 of an 11-digit phone.
        "legal_rep_phone": format!("*******{}", &generated.phone[7..]),
    });
    anyhow::ensure!(record["fields"] == expected, "released {}, expected {expected}", record["fields"]);
    anyhow::ensure!(
        record["withheld"] == serde_json::json!({ "registered_address": "field_not_granted" }),
        "withheld {}, expected only the registered address",
        record["withheld"]
    );
    anyhow::ensure!(
        record["version"] == 1,
        "enterprise 7 is at version {}, not its first",
        record["version"]
    );
    ok("exactly the granted fields, the phone masked, the registered address withheld");
    let outside = serde_json::json!({ "dataset": ENTERPRISES, "keys": [enterprise_key(8)], "fields": ["name"], "purpose": PURPOSE, "grant": grant_id });
    let answer: serde_json::Value = net.api(3)?.send("POST", "/v1/query", &outside)?;
    anyhow::ensure!(
        answer["Released"]["records"].as_array().is_some_and(Vec::is_empty)
            && answer["Released"]["not_found"] == serde_json::json!([enterprise_key(8)]),
        "a record outside the scope was released or revealed: {answer}"
    );
    ok("an enterprise outside Jing'an Temple street answers like an unknown key (out of scope: no existence, no version)");
    let unauthorised = serde_json::json!({ "dataset": RESIDENTS, "keys": [resident_key(80)], "fields": ["name"], "purpose": PURPOSE });
    let answer: serde_json::Value = net.api(3)?.send("POST", "/v1/query", &unauthorised)?;
    anyhow::ensure!(
        answer["Denied"]["reason"] == "grant_required",
        "residents were released without a grant: {answer}"
    );
    ok("residents without a grant: denied (grant_required), and the denial logged");
    Ok(record.clone())
}

/// Each street's node shows only the entries of its own requests.
fn each_street_sees_its_own(net: &Testnet, total: usize) -> anyhow::Result<()> {
    for (index, node) in net.nodes.iter().enumerate().filter(|(_, node)| node.spec.role == "street") {
        let shown = net.access_log(index)?;
        anyhow::ensure!(
            shown.iter().all(|entry| entry["requester_org"] == node.spec.org.as_str()),
            "{} is shown entries of other organisations",
            node.spec.org
        );
        println!(
            "    {} sees its own {} of the {} entries; counts are public",
            node.spec.org,
            shown.len(),
            total
        );
    }
    Ok(())
}

/// Step 9, the online half: every replica holds the same access log, with
/// no subject key or value in it; the auditor's node shows all of it, each
/// other node only what concerns its organisation.
fn replicated_access_log(net: &Testnet) -> anyhow::Result<()> {
    step("9", "the auditor verifies the log: the same on every replica, then offline from a bundle");
    let auditor = net.nodes.len() - 1;
    let logs = wait_until("the access log on every replica", Duration::from_secs(20), || {
        let totals: Vec<u64> =
            (0..net.nodes.len()).map(|i| net.access_log_total(i).ok()).collect::<Option<_>>()?;
        let all = net.access_log(auditor).ok()?;
        totals.iter().all(|total| *total == all.len() as u64).then_some(all)
    })?;
    each_street_sees_its_own(net, logs.len())?;
    // The listings (step 3's, and the subscription's initial one) apart.
    let (listings, logs): (Vec<serde_json::Value>, Vec<serde_json::Value>) =
        logs.into_iter().partition(|entry| entry["kind"] == "listing");
    let released_to = |org: &str| -> usize {
        listings
            .iter()
            .filter(|entry| entry["requester_org"] == org)
            .map(|entry| entry["released"].as_array().map_or(0, Vec::len))
            .sum()
    };
    let (listed, listed_there) = (released_to("street/jingansi"), released_to("street/nanjingxilu"));
    let in_scope = civmesh_testnet::city::enterprises_on("jingansi", ENTERPRISE_COUNT).len();
    let in_their_scope = civmesh_testnet::city::enterprises_on("nanjingxilu", ENTERPRISE_COUNT).len();
    let denied = listings.iter().filter(|entry| entry["outcome"] == "deny").count();
    anyhow::ensure!(
        listed == 2 * in_scope && listed_there == in_their_scope && denied == 1,
        "the listings released {listed} subjects to Jing'an Temple street (expected twice its {in_scope}) and \
         {listed_there} to Nanjing West Road street (expected its {in_their_scope}), with {denied} denied"
    );
    let listed = listed + listed_there;
    println!("    {} listing pages, {listed} subjects released, each named in its entry", listings.len());
    anyhow::ensure!(logs.len() == 4, "expected 4 accesses beside the listings, got {logs:?}");
    for entry in &logs {
        println!(
            "    #{} {} {} purpose={} reason={}",
            entry["sequence"], entry["outcome"], entry["dataset"], entry["purpose"], entry["reason"]
        );
    }
    let shape: Vec<(String, String, Vec<Vec<String>>)> = logs
        .iter()
        .map(|entry| {
            let released = entry["released"].as_array().map_or_else(Vec::new, |released| {
                released
                    .iter()
                    .map(|subject| serde_json::from_value(subject[1].clone()).unwrap_or_default())
                    .collect()
            });
            (
                entry["outcome"].as_str().unwrap_or("").into(),
                entry["dataset"].as_str().unwrap_or("").into(),
                released,
            )
        })
        .collect();
    let fields = |names: &[&str]| names.iter().map(ToString::to_string).collect::<Vec<_>>();
    let expected = vec![
        (
            "permit".to_string(),
            ENTERPRISES.to_string(),
            vec![fields(&["legal_rep_phone", "name", "operating_address"])],
        ),
        ("permit".to_string(), ENTERPRISES.to_string(), vec![]),
        ("deny".to_string(), RESIDENTS.to_string(), vec![]),
        ("permit".to_string(), ENTERPRISES.to_string(), vec![fields(&["name", "operating_address"])]),
    ];
    anyhow::ensure!(shape == expected, "the access log holds {shape:?}, expected {expected:?}");
    anyhow::ensure!(
        logs.iter().all(|entry| entry["requester_org"] == "street/jingansi")
            && logs[0]["released"][0][0] == logs[3]["released"][0][0],
        "the accesses are not the street's query and push of enterprise 7: {logs:?}"
    );
    let text = serde_json::to_string(&logs)?;
    anyhow::ensure!(
        !text.contains(&enterprise_key(7))
            && !text.contains("Enterprise 7")
            && !text.contains(&resident_key(80)),
        "personal data in the access log"
    );
    ok("4 access records (a release of enterprise 7, an out-of-scope query releasing nothing, the residents \
        denial, the push of version 2), identical on all 7 replicas, no subject key or value in them");
    Ok(())
}

/// Prints each node's API address, for the operator to try.
fn print_api_urls(net: &Testnet) -> anyhow::Result<()> {
    println!(
        "\nThe federation keeps running until Ctrl-C. Each address serves the HTTPS API (CA: DATA_DIR/ca.pem; bearer token: DATA_DIR/api-token) and the console at /:"
    );
    for (index, node) in net.nodes.iter().enumerate() {
        let runtime: serde_json::Value =
            serde_json::from_slice(&std::fs::read(node.data_dir.join("node.json"))?)?;
        println!(
            "    {:<12} {}  {}",
            node.spec.name,
            runtime["api_url"].as_str().unwrap_or("?"),
            net.nodes[index].data_dir.display()
        );
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// The console's people: one operator per role, each on the node of the
/// organisation they work for, with the one-time enrolment code
/// `civmesh operator add` prints (they choose their own password there).
fn console_operators(net: &Testnet) -> anyhow::Result<()> {
    println!("\nThe console (open in Chromium; the browser certificate is self-signed, accept it once):");
    let people = [
        (3, "李伟", "street-worker"),
        (1, "王芳", "reviewer"),
        (1, "张强", "policy-officer"),
        (6, "赵敏", "auditor"),
        (0, "陈静", "admin"),
    ];
    for (index, name, role) in people {
        let printed = net.add_operator(index, name, role)?;
        println!("    {:<12} {role:<15} {}", net.nodes[index].spec.name, printed.trim());
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// Steps 5-8: the street subscribes, finds enterprise 7's operating address
/// stale and submits a correction; market supervision reviews and accepts
/// it; the record gets a new version whose provenance is the correction; the
/// outcome reaches the street and the subscriber receives the new version.
fn correction_loop(net: &Testnet, grant_id: u64, seen: &serde_json::Value) -> anyhow::Result<()> {
    let street_dir = node_dir(net, 3)?;
    let subscription = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": PURPOSE, "grant": grant_id,
    });
    let subscribed: serde_json::Value = net.api(3)?.send("POST", "/v1/subscriptions", &subscription)?;
    anyhow::ensure!(subscribed["subscription"].is_string(), "the subscription was not made: {subscribed}");
    step(
        "5",
        &format!("a stale address: the inspector finds enterprise {} operating elsewhere", enterprise_key(7)),
    );
    let observed = "500 Yuyuan Road";
    println!("    the record says {}; the inspector saw {observed}", seen["fields"]["operating_address"]);
    anyhow::ensure!(
        seen["fields"]["operating_address"] == Enterprise::generated(7).operating_address
            && seen["fields"]["operating_address"] != observed
            && seen["version"] == 1,
        "the street does not hold the stale version 1: {seen}"
    );
    let id = subscribed["subscription"].as_str().unwrap_or_default();
    let copy = wait_until("the subscription's initial listing", Duration::from_secs(60), || {
        let state: serde_json::Value = net.api(3).ok()?.get(&format!("/v1/subscriptions/{id}")).ok()?;
        (state["initial_sync"] == "done").then_some(state)
    })?;
    let in_scope = civmesh_testnet::city::enterprises_on("jingansi", ENTERPRISE_COUNT).len();
    anyhow::ensure!(
        copy["records_held"] == in_scope,
        "the copy holds {}, not {in_scope}",
        copy["records_held"]
    );
    ok(&format!(
        "Jing'an Temple street subscribed: its copy started with its {in_scope} enterprises ({} pages), and the query holds the stale version 1",
        copy["pages"]
    ));

    step("6", "a correction: the street signs it and sends it to market supervision (persistent outbox)");
    let submitted: serde_json::Value = serde_json::from_str(&net.cli(&[
        "correction",
        "submit",
        "--node-dir",
        &street_dir,
        "--dataset",
        ENTERPRISES,
        "--record-key",
        &enterprise_key(7),
        "--base-version",
        "1",
        "--set",
        &format!("operating_address={observed}"),
        "--reason",
        "operating address differs from the registry",
        "--evidence",
        "shop sign and lease seen on inspection",
        "--operator",
        "Wang Fang",
    ])?)?;
    let id = submitted["correction"].as_str().context("no correction id")?.to_string();
    let pending: Vec<serde_json::Value> =
        wait_until("the correction in the owner's inbox", Duration::from_secs(20), || {
            let list: Vec<serde_json::Value> =
                net.api(1).ok()?.get("/v1/corrections?status=awaiting_review").ok()?;
            (list.iter().any(|view| view["id"] == id.as_str())).then_some(list)
        })?;
    ok(&format!(
        "correction {}… delivered; {} awaiting review at market supervision",
        &id[..12],
        pending.len()
    ));

    review_and_accept(net, &id, observed)?;
    outcome_returns(net, &id, observed)
}

/// Step 7: market supervision's operator reviews the correction beside the
/// record and accepts it; version 2 carries the correction as provenance.
fn review_and_accept(net: &Testnet, id: &str, observed: &str) -> anyhow::Result<()> {
    let market_dir = node_dir(net, 1)?;
    step("7", "the owner applies it: an operator reviews it beside the record and accepts");
    let shown: serde_json::Value =
        serde_json::from_str(&net.cli(&["correction", "show", "--node-dir", &market_dir, id])?)?;
    println!(
        "    base version {} says {}; the correction says {}",
        shown["base_record"]["version"], shown["current_record"]["fields"]["operating_address"], observed
    );
    let accepted: serde_json::Value = serde_json::from_str(&net.cli(&[
        "correction",
        "accept",
        "--node-dir",
        &market_dir,
        id,
        "--operator",
        "Wang Fang",
    ])?)?;
    anyhow::ensure!(
        accepted["outcome"]["status"] == serde_json::json!({ "applied": { "version": 2 } }),
        "not applied: {accepted}"
    );
    let record: serde_json::Value = serde_json::from_str(&net.cli(&[
        "records",
        "show",
        "--node-dir",
        &market_dir,
        "--dataset",
        ENTERPRISES,
        "--record-key",
        &enterprise_key(7),
    ])?)?;
    anyhow::ensure!(
        record["record"]["provenance"] == serde_json::json!({ "correction": { "id": id } })
            && record["record"]["fields"]["operating_address"] == observed,
        "the record does not carry the correction: {record}"
    );
    ok("version 2 written, its provenance the correction id; the history keeps version 1");
    Ok(())
}

/// Step 8: the signed outcome reaches the street, the subscriber receives
/// version 2, and every replica holds the same lifecycle.
fn outcome_returns(net: &Testnet, id: &str, observed: &str) -> anyhow::Result<()> {
    step("8", "the loop closes: the signed outcome reaches the street, and the subscriber sees version 2");
    let outcome = wait_until("the outcome at the street", Duration::from_secs(20), || {
        let view: serde_json::Value = net.api(3).ok()?.get(&format!("/v1/corrections/{id}")).ok()?;
        (view["status"] == "closed").then(|| view["outcome"]["status"].clone())
    })?;
    anyhow::ensure!(outcome == serde_json::json!({ "applied": { "version": 2 } }), "outcome {outcome}");
    let push = wait_until("the push of version 2", Duration::from_secs(20), || {
        let pushes: Vec<serde_json::Value> = net.api(3).ok()?.get("/v1/subscriptions/updates").ok()?;
        pushes.into_iter().find(|push| push["body"]["records"][0]["version"] == 2)
    })?;
    anyhow::ensure!(push["body"]["records"][0]["fields"]["operating_address"] == observed, "push {push}");
    let stats = wait_until("the lifecycle on every replica", Duration::from_secs(20), || {
        let all: Vec<serde_json::Value> = (0..net.nodes.len())
            .map(|i| net.api(i).ok()?.get("/v1/corrections/stats").ok())
            .collect::<Option<_>>()?;
        let done = all[0][0]["by_stage"]["outcome_delivered"] == 1;
        (done && all.iter().all(|stats| *stats == all[0])).then(|| all[0][0].clone())
    })?;
    println!(
        "    stats (from the log, equal on all 7 nodes): turnaround p50 {} ms, acceptance rate {}",
        stats["turnaround_ms_p50"], stats["acceptance_rate"]
    );
    ok("outcome applied at the street; the subscriber received version 2; all seven stages logged");
    Ok(())
}

/// Steps 9 (the offline half) and 10: once the hub and the departments have
/// cosigned a checkpoint over every entry, the auditor exports a bundle,
/// verifies it offline and answers a subject-access request from it.
fn audit(net: &Testnet, root: &std::path::Path) -> anyhow::Result<()> {
    let auditor = net.nodes.len() - 1;
    let checkpoint =
        wait_until("a final checkpoint over every access entry", Duration::from_secs(30), || {
            let checkpoints: serde_json::Value = net.api(auditor).ok()?.get("/v1/audit/checkpoints").ok()?;
            let last = checkpoints["latest"].clone();
            (last["tree_size"] == checkpoints["leaves"]).then_some(last)
        })?;
    let access_entries = net.access_log(auditor)?.len();
    println!(
        "    checkpoint: {} leaves ({access_entries} access entries, 1 correction outcome), root {}…, cosigned by {} of 3 signers",
        checkpoint["tree_size"],
        &checkpoint["root"].as_str().unwrap_or_default()[..16],
        checkpoint["cosigners"].as_array().map_or(0, Vec::len)
    );
    let bundle = root.join("audit.bundle");
    let bundle_path = bundle.to_str().context("path")?;
    let ca = net.ca_dir.join("ca.pem");
    let ca_path = ca.to_str().context("path")?;
    let printed = net.audit_export(0, &bundle)?;
    println!("    {}", printed.trim());
    let seen = root.join("auditor-seen-checkpoints.json");
    let verified = net.audit_verify(&bundle, &ca, &seen)?;
    for line in verified.lines() {
        println!("    {line}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.with_extension("report.json"))?)?;
    anyhow::ensure!(
        report["ok"] == true
            && report["access_entries"] == access_entries
            && report["leaves"] == access_entries + 1,
        "the bundle did not verify: {report}"
    );
    ok("every signature, every checkpoint root and quorum, and the policy behind every release verified offline");

    step("10", &format!("a subject-access report (PIPL Art. 45) for enterprise {}", enterprise_key(7)));
    let secret = net.nodes[auditor].data_dir.join("subject-key.secret");
    let accesses: Vec<serde_json::Value> = serde_json::from_str(&net.cli(&[
        "audit",
        "subject",
        "--bundle",
        bundle_path,
        "--ca-cert",
        ca_path,
        "--record-key",
        &enterprise_key(7),
        "--secret-file",
        secret.to_str().context("path")?,
        "--seen",
        seen.to_str().context("path")?,
    ])?)?;
    for access in &accesses {
        let anchored = if access["anchored"] == true { "anchored" } else { "not yet checkpointed" };
        println!(
            "    entry #{} {} {} by {} for {} ({}), fields {}, {anchored}",
            access["access_entry"],
            access["kind"],
            access["outcome"],
            access["requester_org"],
            access["purpose"],
            access["legal_basis"],
            access["fields_released"]
        );
    }
    let mut shape: Vec<(&str, &str, &str)> = accesses
        .iter()
        .map(|a| {
            let text = |key: &str| a[key].as_str().unwrap_or("");
            (text("kind"), text("requester_org"), text("legal_basis"))
        })
        .collect();
    shape.sort();
    let by_street = |kind| (kind, "street/jingansi", "statutory_duty");
    let expected = [by_street("listing"), by_street("listing"), by_street("push"), by_street("query")];
    anyhow::ensure!(
        shape == expected,
        "expected two listings, the query and the push of enterprise 7, got {accesses:?}"
    );
    ok("4 accesses: the street's listing, its query, its subscription's initial listing and the push of the corrected version, all under the statutory grant");
    Ok(())
}

fn node_dir(net: &Testnet, index: usize) -> anyhow::Result<String> {
    Ok(net.nodes[index].data_dir.to_str().context("a data directory that is not UTF-8")?.to_string())
}

/// Blocks until SIGINT or SIGTERM, whose handler ([`stop_on_interrupt`])
/// stops every node and exits.
fn wait_for_interrupt() -> anyhow::Result<()> {
    loop {
        std::thread::park();
    }
}

/// The evaluation of departments, as `civmesh evaluate` prints it, from the
/// hub's replica of the log.
fn print_evaluation(net: &Testnet) -> anyhow::Result<()> {
    println!("\nHow the departments served the streets (civmesh evaluate --node-dir hub):\n");
    let table = net.cli(&["evaluate", "--node-dir", &node_dir(net, 0)?])?;
    for line in table.lines() {
        println!("{}", format!("    {line}").trim_end());
    }
    Ok(())
}

struct TemporaryDir(PathBuf);

impl Drop for TemporaryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
