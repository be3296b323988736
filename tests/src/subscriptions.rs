//! What the subscription tests share: a street subscribed to the market's
//! enterprise registry, and the subscription's state as the street reports it.

use std::time::Duration;

use civmesh_policy::Command;
use civmesh_testnet::city::{enterprise_dataset, street_inspection_grant, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};

/// Publishes the enterprise registry at `market`, grants its name and
/// operating address to Jing'an Temple street (`street`), subscribes the
/// street, and waits for its (empty) initial listing; returns the
/// subscription's id.
pub fn street_subscribed(net: &Testnet, market: usize, street: usize) -> String {
    net.sign_and_submit(market, market, Command::PublishDataset(enterprise_dataset())).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name", "operating_address"], &[]).unwrap();
    let grant = net.issue_grant(market, grant, street).unwrap();
    let spec = serde_json::json!({
        "dataset": ENTERPRISES, "fields": ["name", "operating_address"], "purpose": "street-inspection", "grant": grant,
    });
    let subscribed: serde_json::Value =
        net.api(street).unwrap().send("POST", "/v1/subscriptions", &spec).unwrap();
    let id = subscribed["subscription"].as_str().unwrap().to_string();
    wait_until("the (empty) initial listing", Duration::from_secs(30), || {
        subscription_state(net, street, &id).filter(|state| state["initial_sync"] == "done")
    })
    .unwrap();
    id
}

/// Subscription `id` as `street` reports it, if it answers.
pub fn subscription_state(net: &Testnet, street: usize, id: &str) -> Option<serde_json::Value> {
    net.api(street).ok()?.get(&format!("/v1/subscriptions/{id}")).ok()
}
