//! Impact assessments (PIPL Art. 55-56) at the dataset's owner, with real
//! processes: `pia add` records one, signed by the node, and prints its
//! digest; a grant of a sensitive field is issued only when it names an
//! assessment the owner keeps, for the grant's dataset and purpose,
//! covering that field, and states a retention; `pia show` and `grant
//! show` print them readably; the store is read and added to while the
//! node is down, and the restarted node serves what was kept.

// A scripted scenario reads best in one piece: the 80-line bound is for
// non-test code.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::evaluation::format_date;
use civmesh_policy::Command;
use civmesh_testnet::city::{city, resident_dataset, RESIDENTS, STREET_INSPECTION};
use civmesh_testnet::Testnet;

const CIVIL: usize = 2;
const STREET: usize = 3;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const SENSITIVE: &str = "lives_alone_80_plus";

fn node_dir(net: &Testnet, index: usize) -> String {
    net.nodes[index].data_dir.to_str().unwrap().to_string()
}

/// `civmesh pia add` at node `index` for the residents' `fields`, for
/// `purpose`; what it printed.
fn pia_add(net: &Testnet, index: usize, fields: &[&str], purpose: &str) -> anyhow::Result<String> {
    net.add_assessment(index, RESIDENTS, fields, purpose)
}

fn grant_issue(net: &Testnet, demand: u64, extra: &[&str]) -> anyhow::Result<String> {
    let (dir, demand) = (node_dir(net, CIVIL), demand.to_string());
    let args = ["grant", "issue", "--node-dir", &dir, "--demand", &demand, "--consent-required", "--yes"];
    net.cli(&[&args[..], extra].concat())
}

#[test]
fn a_sensitive_grant_needs_an_assessment_the_owner_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "nanjingxilu"])).unwrap();
    let key = NodeKey::load(&net.nodes[CIVIL].data_dir.join("node.key")).unwrap();
    let publish =
        SignedEnvelope::sign(&key, &Command::PublishDataset(resident_dataset()), now_unix_millis()).unwrap();
    assert!(net.api(CIVIL).unwrap().submit(&[publish]).unwrap().outcomes[0].is_ok());
    let until = format_date(now_unix_millis() + 60 * DAY_MS);
    let street_dir = node_dir(&net, STREET);
    let demand = net
        .cli(&[
            "demand",
            "file",
            "--node-dir",
            &street_dir,
            "--dataset",
            RESIDENTS,
            "--field",
            "name",
            "--field",
            SENSITIVE,
            "--purpose",
            STREET_INSPECTION,
            "--legal-basis",
            "consent",
            "--reason",
            "visit residents over 80 who live alone",
            "--until",
            &until,
        ])
        .unwrap();
    let demand: u64 = demand.trim().strip_prefix("filed demand ").unwrap().parse().unwrap();
    let civil_dir = node_dir(&net, CIVIL);
    let list = |net: &Testnet| net.cli(&["pia", "list", "--node-dir", &node_dir(net, CIVIL)]).unwrap();
    assert_eq!(list(&net).trim(), "no impact assessments");

    // `pia add` prints the digest; bad input names what is wrong.
    let digest = pia_add(&net, CIVIL, &["name", SENSITIVE], STREET_INSPECTION).unwrap();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    let too_long = "险".repeat(1_400);
    let error = net
        .cli(&[
            "pia",
            "add",
            "--node-dir",
            &civil_dir,
            "--dataset",
            RESIDENTS,
            "--field",
            "name",
            "--purpose",
            STREET_INSPECTION,
            "--necessity",
            "n",
            "--risks",
            &too_long,
            "--measures",
            "m",
            "--officer",
            "o",
        ])
        .unwrap_err()
        .to_string();
    assert!(error.contains("answered 400") && error.contains("the risks must be 1 to 4096 bytes"), "{error}");
    let narrow = pia_add(&net, CIVIL, &["name"], STREET_INSPECTION).unwrap();
    let other_purpose = pia_add(&net, CIVIL, &["name", SENSITIVE], "elderly-care").unwrap();

    // Without an assessment, with one the owner does not keep, or one that
    // does not fit, the owner signs nothing and says what is missing.
    let unknown = "0".repeat(64);
    let refusals = [
        (vec!["--retain-days", "30"], format!("field {SENSITIVE} is sensitive: name the impact assessment")),
        (
            vec!["--retain-days", "30", "--assessment", &unknown],
            format!("this node keeps no impact assessment {}", "0".repeat(64)),
        ),
        (
            vec!["--retain-days", "30", "--assessment", &narrow],
            format!("does not cover the sensitive field {SENSITIVE}"),
        ),
        (
            vec!["--retain-days", "30", "--assessment", &other_purpose],
            format!("is for purpose elderly-care, not {STREET_INSPECTION}"),
        ),
        (vec!["--assessment", &digest], format!("fields {SENSITIVE}, name are personal: state how long")),
    ];
    for (extra, expected) in refusals {
        let error = grant_issue(&net, demand, &extra).unwrap_err().to_string();
        assert!(error.contains("answered 400") && error.contains(&expected), "{extra:?}: {error}");
    }
    let error = grant_issue(&net, demand, &["--retain-days", "30", "--assessment", "abc"]).unwrap_err();
    assert!(error.to_string().contains("--assessment"), "{error}");
    assert!(net.cli(&["grant", "list", "--node-dir", &civil_dir]).unwrap().contains("no grants"));

    // With it, the grant is issued and shows its retention and assessment.
    let issued = grant_issue(&net, demand, &["--retain-days", "30", "--assessment", &digest]).unwrap();
    assert_eq!(issued.trim(), format!("issued grant 1 answering demand {demand}"));
    civmesh_testnet::wait_until("the grant at the street", std::time::Duration::from_secs(10), || {
        net.api(STREET).ok()?.get::<serde_json::Value>("/v1/grants/1").ok()
    })
    .unwrap();
    let shown = net.cli(&["grant", "show", "--node-dir", &street_dir, "1"]).unwrap();
    assert!(shown.contains("  kept:    30 days after receipt, then deleted within 24 hours"), "{shown}");
    assert!(shown.contains(&format!("  assessment: {digest}")), "{shown}");
    let line = net.cli(&["grant", "list", "--node-dir", &street_dir]).unwrap();
    assert!(
        line.contains(&format!("..{until}, kept 30 days, assessment {}: active", &digest[..12])),
        "{line}"
    );
    let grant: serde_json::Value = net.api(STREET).unwrap().get("/v1/grants/1").unwrap();
    assert_eq!(grant["assessment"], digest.as_str(), "{grant}");
    assert_eq!(grant["retention"]["keep_ms"], 30 * DAY_MS, "{grant}");

    // `pia show` reads as people do; the API serves it with its envelope.
    let shown = net.cli(&["pia", "show", "--node-dir", &civil_dir, &digest]).unwrap();
    for expected in [
        format!("impact assessment {digest}"),
        format!("  dataset:   {RESIDENTS}"),
        format!("  fields:    {SENSITIVE}, name"),
        format!("  purpose:   {STREET_INSPECTION}"),
        "  necessity: Street staff visit residents over 80 who live alone.\n             Names are needed."
            .to_string(),
        "  measures:  Street staff only; copies deleted after 30 days.".to_string(),
    ] {
        assert!(shown.contains(&expected), "{expected}\n{shown}");
    }
    let signed = shown.lines().find(|line| line.starts_with("  signed:")).unwrap();
    assert!(
        signed.contains("+08:00 by 王芳") && signed.contains(&format_date(now_unix_millis())),
        "{signed}"
    );
    let record: serde_json::Value =
        net.api(CIVIL).unwrap().get(&format!("/v1/assessments/{digest}")).unwrap();
    assert_eq!(record["assessment"]["officer"], "王芳", "{record}");
    assert!(record["envelope"].as_str().is_some_and(|envelope| !envelope.is_empty()), "{record}");
    let error = net.api(STREET).unwrap().get::<serde_json::Value>(&format!("/v1/assessments/{digest}"));
    assert!(error.unwrap_err().to_string().contains("answered 404"), "the street keeps none");
    let error = net.api(CIVIL).unwrap().get::<serde_json::Value>("/v1/assessments/ABC").unwrap_err();
    assert!(error.to_string().contains("answered 400"), "{error}");
    let error = net.cli(&["pia", "show", "--node-dir", &street_dir, &digest]).unwrap_err().to_string();
    assert!(error.contains("404"), "{error}");

    // Down, the node's store is read and added to directly; restarted, the
    // node serves every assessment kept.
    net.stop(CIVIL).unwrap();
    let listed = list(&net);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.lines().next().unwrap().starts_with(&digest), "the oldest first: {listed}");
    let offline = pia_add(&net, CIVIL, &[SENSITIVE], STREET_INSPECTION).unwrap();
    let shown = net.cli(&["pia", "show", "--node-dir", &civil_dir, &offline]).unwrap();
    assert!(shown.contains(&format!("  fields:    {SENSITIVE}\n")), "{shown}");
    net.start(CIVIL).unwrap();
    let all: Vec<serde_json::Value> = net.api(CIVIL).unwrap().get("/v1/assessments").unwrap();
    let digests: Vec<&str> = all.iter().filter_map(|summary| summary["digest"].as_str()).collect();
    assert_eq!(digests, [digest.as_str(), narrow.as_str(), other_purpose.as_str(), offline.as_str()]);
}
