//! A 100,000-row import into a dataset with a subscription, between real
//! processes: every push and import request stays within its bound in
//! records and bytes, and every row reaches the subscriber. Alone in its
//! binary, so it does not share the machine with other federations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_testnet::city::{city, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};
use civmesh_tests::subscriptions::{street_subscribed, subscription_state};

/// Import into a dataset with a subscription never produces a peer message
/// over the frame bound: 100,000 rows, the first 2,000 of them wide (9 KB
/// of address each, so a thousand would make one push over the envelope's
/// 4 MiB, and one import request over the API's 8 MiB), all reach the
/// subscriber.
#[test]
fn a_hundred_thousand_row_import_reaches_the_subscriber_in_bounded_pushes() {
    const ROWS: usize = 100_000;
    const WIDE_ROWS: usize = 2_000;
    const MARKET: usize = 1;
    const STREET: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    let id = street_subscribed(&net, MARKET, STREET);
    let state = || subscription_state(&net, STREET, &id);

    let mut csv = String::from(
        "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n",
    );
    let wide = "W".repeat(9_000);
    for index in 0..ROWS {
        let address = if index < WIDE_ROWS { wide.clone() } else { format!("{index} Changde Road") };
        csv.push_str(&format!("913101{index:012},Enterprise {index},,{address},,jingan,jingansi\n"));
    }
    let path = dir.path().join("enterprises.csv");
    std::fs::write(&path, csv).unwrap();
    let printed = net.import(MARKET, ENTERPRISES, &path).unwrap();
    assert!(printed.contains(&format!("{ROWS} rows written")), "{printed}");
    let done = wait_until("every row at the subscriber", Duration::from_secs(600), || {
        state().filter(|state| state["records_held"] == ROWS)
    })
    .unwrap();
    assert_eq!(done["records_held"], ROWS, "{done}");
    // Each push is one access record on the replicated log; the wide rows
    // took more of them than a thousand rows a push would.
    let pushes = net.access_log(MARKET).unwrap().iter().filter(|entry| entry["kind"] == "push").count();
    assert!(pushes > ROWS / 1_000 + 1, "{pushes} pushes");
}
