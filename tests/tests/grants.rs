//! Demands and grants from the command line, without JSON: a street files a
//! demand with flags, sees it in `demand list`, and the owner refuses one
//! with a reason the street sees, or issues a grant answering it, confirming
//! each warning; anyone lists and shows grants; the owner revokes one.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::evaluation::format_date;
use civmesh_policy::Command;
use civmesh_testnet::city::{
    city, enterprise_dataset, resident_dataset, ENTERPRISES, RESIDENTS, STREET_INSPECTION,
};
use civmesh_testnet::{wait_until, Testnet};

const MARKET: usize = 1;
const CIVIL: usize = 2;
const STREET: usize = 3;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn node_dir(net: &Testnet, index: usize) -> String {
    net.nodes[index].data_dir.to_str().unwrap().to_string()
}

/// `civmesh demand file` at node `index` for the enterprise registry's
/// `fields`, with `extra` arguments; the number it prints.
fn file_demand(net: &Testnet, index: usize, fields: &[&str], extra: &[&str]) -> anyhow::Result<u64> {
    file_demand_for(net, index, ENTERPRISES, STREET_INSPECTION, fields, extra)
}

/// `civmesh demand file` at node `index` for `fields` of `dataset`, for
/// `purpose` under a statutory duty, with `extra` arguments; the number it
/// prints.
fn file_demand_for(
    net: &Testnet,
    index: usize,
    dataset: &str,
    purpose: &str,
    fields: &[&str],
    extra: &[&str],
) -> anyhow::Result<u64> {
    let dir = node_dir(net, index);
    let mut args = vec!["demand", "file", "--node-dir", &dir, "--dataset", dataset];
    for field in fields {
        args.extend(["--field", field]);
    }
    args.extend(["--purpose", purpose, "--legal-basis", "statutory_duty"]);
    args.extend(["--reason", "visit every enterprise in the street"]);
    args.extend(extra);
    let out = net.cli(&args)?;
    let number = out.trim().strip_prefix("filed demand ").unwrap_or_else(|| panic!("{out}"));
    Ok(number.parse()?)
}

/// The day `days` from today, `YYYY-MM-DD` in Asia/Shanghai.
fn day(days: i64) -> String {
    format_date(now_unix_millis().saturating_add_signed(days * DAY_MS as i64))
}

/// A federation of the hub, both departments (each with its dataset
/// published) and the Nanjing West Road street.
fn launch(dir: &std::path::Path) -> Testnet {
    let net = Testnet::launch(dir, &city(&["hub", "market", "civil", "nanjingxilu"])).unwrap();
    for (index, spec) in [(MARKET, enterprise_dataset()), (CIVIL, resident_dataset())] {
        let key = NodeKey::load(&net.nodes[index].data_dir.join("node.key")).unwrap();
        let publish = SignedEnvelope::sign(&key, &Command::PublishDataset(spec), now_unix_millis()).unwrap();
        assert!(net.api(index).unwrap().submit(&[publish]).unwrap().outcomes[0].is_ok());
    }
    net
}

/// `civmesh grant issue` at node `index` answering `demand`, with `extra`
/// arguments.
fn issue_grant(net: &Testnet, index: usize, demand: u64, extra: &[&str]) -> anyhow::Result<String> {
    let (dir, demand) = (node_dir(net, index), demand.to_string());
    net.cli(&[&["grant", "issue", "--node-dir", &dir, "--demand", &demand], extra].concat())
}

fn grant_list(net: &Testnet, index: usize) -> Vec<String> {
    let out = net.cli(&["grant", "list", "--node-dir", &node_dir(net, index)]).unwrap();
    out.lines().map(str::to_string).collect()
}

fn demand_list(net: &Testnet, index: usize) -> Vec<String> {
    let out = net.cli(&["demand", "list", "--node-dir", &node_dir(net, index)]).unwrap();
    out.lines().map(str::to_string).collect()
}

#[test]
fn a_street_files_demands_from_flags_and_sees_the_owners_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let net = launch(dir.path());

    let first =
        file_demand(&net, STREET, &["name", "operating_address"], &["--until", "2026-12-31"]).unwrap();
    let second = file_demand(&net, STREET, &["name"], &[]).unwrap();
    let lines = demand_list(&net, MARKET);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("#{first} street/nanjingxilu {ENTERPRISES} [name,operating_address]"))
    );
    assert!(lines[0].contains("street-inspection statutory_duty"), "{}", lines[0]);
    assert!(lines[0].contains("until 2026-12-31: waiting"), "{}", lines[0]);
    assert!(lines[0].contains("(reason: visit every enterprise in the street)"), "{}", lines[0]);

    // Bad input names the flag.
    let error = file_demand(&net, STREET, &["name"], &["--until", "31/12/2026"]).unwrap_err().to_string();
    assert!(error.contains("--until"), "{error}");
    let street_dir = node_dir(&net, STREET);
    let bad_basis =
        ["demand", "file", "--node-dir", &street_dir, "--dataset", ENTERPRISES, "--field", "name"];
    let bad_basis = [&bad_basis[..], &["--purpose", "p", "--legal-basis", "whim", "--reason", "r"]].concat();
    let error = net.cli(&bad_basis).unwrap_err().to_string();
    assert!(error.contains("--legal-basis") && error.contains("statutory_duty"), "{error}");
    let error = file_demand(&net, STREET, &["shoe_size"], &[]).unwrap_err().to_string();
    assert!(error.contains("shoe_size"), "{error}");

    // Only the owner refuses, with a reason the street sees.
    let second_number = second.to_string();
    let refuse = |index: usize| {
        let dir = node_dir(&net, index);
        net.cli(&[
            "demand",
            "refuse",
            "--node-dir",
            &dir,
            &second_number,
            "--reason",
            "name is public already",
        ])
    };
    let error = refuse(STREET).unwrap_err().to_string();
    assert!(error.contains("NotAuthorised"), "{error}");
    assert!(refuse(MARKET).unwrap().contains(&format!("refused demand {second}")));
    let lines = demand_list(&net, STREET);
    assert!(
        lines[1]
            .ends_with(": refused: name is public already (reason: visit every enterprise in the street)"),
        "{}",
        lines[1]
    );
    assert!(lines[0].contains(": waiting"), "{}", lines[0]);
    assert!(refuse(MARKET).unwrap_err().to_string().contains("already refused"));
}

#[test]
fn an_owner_issues_grants_from_demands_confirming_each_warning() {
    let dir = tempfile::tempdir().unwrap();
    let net = launch(dir.path());
    let until = day(60);
    let demand = file_demand(&net, STREET, &["name", "operating_address"], &["--until", &until]).unwrap();

    // Defaults from the demand; masking and a scope by flag; no warning.
    let out = issue_grant(
        &net,
        MARKET,
        demand,
        &["--mask", "operating_address=keep_last:4", "--scope", "district=jingan"],
    )
    .unwrap();
    assert_eq!(out.trim(), format!("issued grant 1 answering demand {demand}"));
    let lines = grant_list(&net, STREET);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let expected = format!(
        "#1 dept/market-supervision → street/nanjingxilu {ENTERPRISES} [name,operating_address] \
         {STREET_INSPECTION} statutory_duty {}..{until}: active (demand {demand})",
        day(0)
    );
    assert_eq!(lines[0], expected);
    let shown = net.cli(&["grant", "show", "--node-dir", &node_dir(&net, STREET), "1"]).unwrap();
    assert!(shown.contains("fields:  name, operating_address (masked: keep_last:4)"), "{shown}");
    assert!(shown.contains("scope:   district = jingan"), "{shown}");
    assert!(shown.contains(&format!("valid:   {} to {until}", day(0))), "{shown}");
    let catalog = net.cli(&["catalog", "show", "--node-dir", &node_dir(&net, STREET)]).unwrap();
    let line =
        |field: &str| catalog.lines().find(|line| line.trim_start().starts_with(field)).unwrap().to_string();
    assert!(
        catalog.contains(&format!(
            "{ENTERPRISES} \"Enterprise registry\" (owner dept/market-supervision, conditional)"
        )),
        "{catalog}"
    );
    assert!(
        line("operating_address").contains("internal")
            && line("operating_address").ends_with("granted by #1"),
        "{catalog}"
    );
    assert!(line("legal_rep_phone").ends_with("not granted"), "{catalog}");
    assert!(line("lives_alone_80_plus").contains("sensitive: specific_identity"), "{catalog}");
    assert!(demand_list(&net, STREET)[0]
        .ends_with(": granted by grant 1 (reason: visit every enterprise in the street)"));

    // A query without --grant relies on the street's only usable grant.
    let csv = dir.path().join("enterprises.csv");
    let header = "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street";
    std::fs::write(
        &csv,
        format!("{header}\n91310106A,Jing'an Tea House,,88 Changde Road,13800001111,jingan,\n"),
    )
    .unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    let street_dir = node_dir(&net, STREET);
    let query = ["query", "--node-dir", &street_dir, "--dataset", ENTERPRISES, "--record-key", "91310106A"];
    let query = [&query[..], &["--field", "name", "--purpose", STREET_INSPECTION]].concat();
    let answer = net.cli(&query).unwrap();
    assert!(answer.contains("Jing'an Tea House"), "{answer}");

    // Each warning stops the grant until --yes confirms it.
    let warned = |index: usize, demand: u64, extra: &[&str], warning: &str| {
        let error = issue_grant(&net, index, demand, extra).unwrap_err().to_string();
        assert!(error.contains(warning) && error.contains("--yes"), "{error}");
    };
    let (past_from, past_until) = (day(-10), day(-2));
    warned(
        MARKET,
        demand,
        &["--from", &past_from, "--until", &past_until],
        &format!("the grant ended on {past_until}"),
    );
    let soon = day(3);
    warned(MARKET, demand, &["--until", &soon], &format!("the grant ends on {soon}, within 7 days"));
    warned(
        MARKET,
        demand,
        &["--field", "name", "--field", "legal_rep_phone"],
        &format!("broader than demand {demand}: fields it did not ask for (legal_rep_phone)"),
    );
    warned(MARKET, demand, &["--until", &day(90)], "a window past the date it needs the data until");
    assert_eq!(grant_list(&net, MARKET).len(), 1, "a warned grant was issued");
    let fields = ["name", "lives_alone_80_plus"];
    let residents =
        file_demand_for(&net, STREET, RESIDENTS, "elderly-care", &fields, &["--until", &until]).unwrap();
    warned(CIVIL, residents, &[], "sensitive fields without consent required: lives_alone_80_plus");
    let assessment = net.add_assessment(CIVIL, RESIDENTS, &fields, "elderly-care").unwrap();
    let protected = ["--consent-required", "--retain-days", "30", "--assessment", &assessment];
    assert_eq!(
        issue_grant(&net, CIVIL, residents, &protected).unwrap().trim(),
        format!("issued grant 2 answering demand {residents}")
    );
    let out = issue_grant(&net, MARKET, demand, &["--until", &soon, "--yes"]).unwrap();
    assert_eq!(out.trim(), format!("issued grant 3 answering demand {demand}"));

    let error = net.cli(&query).unwrap_err().to_string();
    assert!(error.contains("several grants usable now") && error.contains("(#1, #3)"), "{error}");

    // Only the owner revokes; the list shows the reason.
    let revoke = |index: usize| {
        net.cli(&["grant", "revoke", "--node-dir", &node_dir(&net, index), "1", "--reason", "visits done"])
    };
    assert!(revoke(STREET).unwrap_err().to_string().contains("NotAuthorised"));
    assert_eq!(revoke(MARKET).unwrap().trim(), "revoked grant 1");
    assert!(grant_list(&net, STREET)[0].ends_with(&format!(": revoked: visits done (demand {demand})")));

    // Bad input names what is wrong.
    let error = issue_grant(&net, MARKET, demand, &["--mask", "operating_address"]).unwrap_err().to_string();
    assert!(error.contains("--mask") && error.contains("keep_last:N"), "{error}");
    let error = issue_grant(&net, MARKET, 99, &[]).unwrap_err().to_string();
    assert!(error.contains("there is no demand 99"), "{error}");
    let error =
        net.cli(&["grant", "show", "--node-dir", &node_dir(&net, STREET), "42"]).unwrap_err().to_string();
    assert!(error.contains("404") && error.contains("no grant 42"), "{error}");
}

/// The same operations over HTTP, signed by the node the caller uses: a
/// demand filed, a grant whose warning waits for `confirm`, then issued,
/// revoked; the street may not revoke it (a 409 naming the code).
#[test]
fn demands_and_grants_over_http_are_signed_by_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let net = launch(dir.path());
    let street = net.api(STREET).unwrap();
    let market = net.api(MARKET).unwrap();
    let demand = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name"], "purpose": STREET_INSPECTION,
        "legal_basis": "statutory_duty", "reason": "visits",
    });
    let filed: serde_json::Value = street.send("POST", "/v1/demands", &demand).unwrap();
    let demand_id = filed["demand"].as_u64().unwrap();
    let until_ms = now_unix_millis() + 3 * DAY_MS;
    let grant = serde_json::json!({
        "dataset": ENTERPRISES, "grantee": "street/nanjingxilu", "fields": ["name"], "purpose": STREET_INSPECTION,
        "legal_basis": "statutory_duty", "scope": [], "valid_from_ms": now_unix_millis(), "valid_until_ms": until_ms,
        "masking": {}, "consent_required": false, "demand": demand_id,
    });
    let unconfirmed: serde_json::Value =
        market.send("POST", "/v1/grants", &serde_json::json!({ "grant": grant })).unwrap();
    assert_eq!(unconfirmed["grant"], serde_json::Value::Null, "{unconfirmed}");
    assert_eq!(unconfirmed["warnings"][0]["warning"], "expires_soon", "{unconfirmed}");
    let grants: Vec<serde_json::Value> = market.get("/v1/grants").unwrap();
    assert!(grants.is_empty(), "a grant with an unconfirmed warning was issued");
    let issued: serde_json::Value =
        market.send("POST", "/v1/grants", &serde_json::json!({ "grant": grant, "confirm": true })).unwrap();
    let grant_id = issued["grant"].as_u64().unwrap();
    // The street's replica shows the grant once it has applied it.
    let shown = |done: &dyn Fn(&serde_json::Value) -> bool| {
        wait_until("the grant at the street", Duration::from_secs(10), || {
            street
                .get::<serde_json::Value>(&format!("/v1/grants/{grant_id}"))
                .ok()
                .filter(|grant| done(grant))
        })
        .unwrap()
    };
    let granted = shown(&|_| true);
    assert_eq!(
        (granted["demand"].as_u64(), &granted["grantee"]),
        (Some(demand_id), &serde_json::json!("street/nanjingxilu"))
    );

    let reason = serde_json::json!({ "reason": "visits done" });
    let path = format!("/v1/grants/{grant_id}/revoke");
    let error = street.send::<_, serde_json::Value>("POST", &path, &reason).unwrap_err().to_string();
    assert!(error.contains("409") && error.contains("NotAuthorised"), "{error}");
    let _: serde_json::Value = market.send("POST", &path, &reason).unwrap();
    shown(&|grant| grant["revoked"]["reason"] == "visits done");
}
