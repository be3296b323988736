//! Step 11: data flows out when the law says so. A second grant to the
//! street, for a short campaign, with its own subscription; the owner
//! revokes it; the street deletes its copies from its store (and compacts
//! them away) and logs a receipt, which the auditor's replica shows.

use std::time::Duration;

use anyhow::Context;
use civmesh_policy::fixtures::STREET_INSPECTION;
use civmesh_policy::Command;
use civmesh_testnet::city::{street_scoped_grant, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};

use crate::{ok, step};

/// How often the demo's street deletes what is due, in ms (a node's
/// default is a minute).
pub const STREET_SWEEP_INTERVAL_MS: u64 = 2_000;

pub fn revoked_copies_deleted(net: &Testnet) -> anyhow::Result<()> {
    step(
        "11",
        "retention: a revoked grant's copies are deleted at the street, and the auditor sees the receipt",
    );
    let (market, street, auditor) = (1, 3, net.nodes.len() - 1);
    let spec = street_scoped_grant("jingansi")?;
    let fields = spec.fields.iter().cloned().collect::<Vec<_>>();
    let grant = net.issue_grant(market, spec, street)?;
    let request = serde_json::json!({
        "dataset": ENTERPRISES, "fields": fields, "purpose": STREET_INSPECTION, "grant": grant,
    });
    let subscribed: serde_json::Value = net.api(street)?.send("POST", "/v1/subscriptions", &request)?;
    let id = subscribed["subscription"].as_str().context("no subscription id")?.to_string();
    let held = |id: &str| -> Option<u64> {
        let view: serde_json::Value = net.api(street).ok()?.get(&format!("/v1/subscriptions/{id}")).ok()?;
        (view["initial_sync"] == "done").then(|| view["records_held"].as_u64()).flatten()
    };
    let copied = wait_until("the campaign's copy", Duration::from_secs(60), || held(&id).filter(|n| *n > 0))?;
    ok(&format!("grant {grant} for a campaign: the street holds {copied} copies under it"));
    let revoke = Command::RevokeGrant { grant_id: grant, reason: "the campaign ended".into() };
    net.sign_and_submit(market, market, revoke)?;
    let receipt = wait_until("the receipt on the auditor's replica", Duration::from_secs(30), || {
        let deletions: serde_json::Value = net.api(auditor).ok()?.get("/v1/deletions").ok()?;
        let holdings = deletions["holdings"].as_array()?;
        let row = holdings.iter().find(|row| row["grant"] == grant && !row["ended_deleted_at_ms"].is_null());
        row.map(|row| (row.clone(), deletions["overdue"].as_array().map_or(0, Vec::len)))
    })?;
    let (receipt, overdue) = receipt;
    anyhow::ensure!(overdue == 0, "{overdue} deletion(s) overdue after the receipt");
    anyhow::ensure!(held(&id) == Some(0), "the street still holds copies of the revoked grant");
    ok(&format!(
        "market supervision revoked it; {} deleted its {copied} copies from its store, compacted, and logged \
         a receipt ({} receipt(s)); the auditor's replica shows it, and nothing is overdue",
        receipt["holder_org"].as_str().unwrap_or_default(),
        receipt["receipts"]
    ));
    Ok(())
}
