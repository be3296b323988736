//! Subject privacy in the replicated log: a street that knows a citizen's
//! key, and holds everything its own data directory holds, cannot tell that
//! another street accessed that citizen, and its API shows it only the
//! count; the owner and an auditor can.
//! Real processes, RocksDB on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use civmesh_certs::OrgId;
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::subject_keys::pair_subject_key;
use civmesh_policy::Command;
use civmesh_testnet::city::{city, enterprise_dataset, street_inspection_grant, ENTERPRISES};
use civmesh_testnet::{wait_until, Testnet};

const MARKET: usize = 1;
const JINGANSI: usize = 3;
const NANJINGXILU: usize = 4;
/// The record key both streets know.
const KEY: &str = "91310106A";

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Every key a node could try from what its data directory holds: each
/// file's bytes, each file's hex decoded, and each such key as an owner's
/// org key turned into a pair key for every organisation.
fn key_material(dir: &Path, orgs: &[OrgId]) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for path in files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        if bytes.len() > 4096 {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        keys.push(bytes.clone());
        keys.push(text.as_bytes().to_vec());
        if let Ok(decoded) = hex::decode(&text) {
            if let Ok(org_key) = <[u8; 32]>::try_from(decoded.as_slice()) {
                keys.extend(orgs.iter().map(|org| pair_subject_key(&org_key, org).to_vec()));
            }
            keys.push(decoded);
        }
    }
    keys
}

#[test]
fn a_street_cannot_link_another_streets_access_to_a_citizen_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "jingansi", "nanjingxilu"]);
    let net = Testnet::launch(dir.path(), &specs).unwrap();
    net.sign_and_submit(MARKET, MARKET, Command::PublishDataset(enterprise_dataset())).unwrap();
    let csv = dir.path().join("enterprises.csv");
    std::fs::write(&csv, "credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n91310106A,Jing'an Tea House,,88 Changde Road,13800001111,,\n").unwrap();
    net.import(MARKET, ENTERPRISES, &csv).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name"], &[]).unwrap();
    let issued = net.sign_and_submit(MARKET, MARKET, Command::IssueGrant(grant)).unwrap();
    let civmesh_policy::Applied::GrantIssued(grant) = issued else { panic!("{issued:?}") };
    let body = serde_json::json!({
        "dataset": ENTERPRISES, "keys": [KEY], "fields": ["name"],
        "purpose": "street-inspection", "grant": grant,
    });
    wait_until("the street's query to be answered", Duration::from_secs(15), || {
        let answer: serde_json::Value = net.api(JINGANSI).ok()?.send("POST", "/v1/query", &body).ok()?;
        answer.get("Released").map(|_| ())
    })
    .unwrap();

    // The other street's replica holds the access, but its API shows it
    // only the count: the entry concerns neither its requests nor its data.
    let logged = wait_until("the access on the other street's replica", Duration::from_secs(15), || {
        (net.holds_access_entry(NANJINGXILU, 0).ok()?).then_some(())?;
        let log = net.access_log(MARKET).ok()?;
        log.into_iter()
            .find(|entry| entry["requester_org"] == "street/jingansi" && entry["outcome"] == "permit")
    })
    .unwrap();
    assert!(net.access_log(NANJINGXILU).unwrap().is_empty(), "another street's access is shown");
    assert!(net.access_log_total(NANJINGXILU).unwrap() >= 1);
    let logged_hash = logged["released"][0][0].as_str().unwrap().to_string();

    // The auditor (the federation's secret) and the owner (its pair key for
    // the street) link it: the test looks at the right value.
    let hex_of = |hash: SubjectKeyHash| hex::encode(hash.0);
    assert_eq!(logged_hash, hex_of(net.subject_hash(MARKET, JINGANSI, KEY).unwrap()));

    // The other street holds no federation secret, and the citizen's key
    // appears nowhere in its data directory.
    let street_dir = &net.nodes[NANJINGXILU].data_dir;
    assert!(!street_dir.join("subject-key.secret").exists());
    for path in files(street_dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|window| window == KEY.as_bytes()),
            "{KEY} in {}",
            path.display()
        );
    }
    // Knowing the key, it tries every key it holds, and every key it could
    // get: its own org key made into any pair key, and the key the market
    // gives it. None gives the logged hash.
    let orgs: Vec<OrgId> = specs.iter().map(|spec| OrgId::new(&spec.org).unwrap()).collect();
    let mut candidates = key_material(street_dir, &orgs);
    candidates.push(net.pair_key(MARKET, NANJINGXILU).unwrap().to_vec());
    assert!(candidates.len() > orgs.len(), "the street's own keys were tried");
    for candidate in &candidates {
        assert_ne!(hex_of(SubjectKeyHash::of(candidate, KEY)), logged_hash, "a street linked the access");
    }
    // Its own pair key at the market hashes the same citizen to another
    // value: its accesses and the other street's are unrelated.
    assert_ne!(hex_of(net.subject_hash(MARKET, NANJINGXILU, KEY).unwrap()), logged_hash);
}
