//! The policy log with a history far past what one state image could once
//! hold, between real processes: 50,000 access records are snapshotted,
//! every node restarts (the owner with kill -9) and comes back to the same
//! digest at the same index, a new learner joins by snapshot while
//! checkpoints go on, and proofs come from the stored audit trees. Alone
//! in its binary: it takes minutes in a debug build, and would slow the
//! other federations' timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use civmesh_certs::NodeKey;
use civmesh_policy::{Command, SignedCommand};
use civmesh_testnet::city::{city, enterprise_dataset, resident_dataset, ENTERPRISES, RESIDENTS};
use civmesh_testnet::{wait_until, SnapshotPolicy, Testnet};
use civmesh_tests::policy_log::{
    audit_counts, converged_within, denials, hash, submit_each_once, CONVERGE_TIMEOUT,
};

/// Access records in the history test, and the subjects each names: about
/// 45 MB of signed commands, more than the 16 MiB a whole-state image could
/// be read back with when the state kept the access log. Half are the
/// market's and half civil affairs', each for another street's queries:
/// one signer spends at most `COMMAND_NONCES_PER_SIGNER_MAX` (50,000)
/// nonces in the replay window.
const HISTORY_RECORDS: usize = 50_000;
const SUBJECTS_PER_RECORD: usize = 8;
const HISTORY_BATCH: usize = 150;
/// How long the replicas may take to apply the history, in a debug build
/// on a busy machine.
const HISTORY_CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn a_history_past_the_old_state_bound_snapshots_restarts_and_takes_a_learner() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "jingansi", "zhenru"]);
    let snapshot = SnapshotPolicy { after_entries: 10, entries_kept: 2 };
    let mut net = Testnet::create(dir.path(), &specs, snapshot).unwrap();
    for index in 0..4 {
        net.start(index).unwrap();
    }
    net.bootstrap_nodes(&[0, 1, 2, 3]).unwrap();
    let (hub, market, civil, jingansi, zhenru) = (
        net.index("hub").unwrap(),
        net.index("market").unwrap(),
        net.index("civil").unwrap(),
        net.index("jingansi").unwrap(),
        net.index("zhenru").unwrap(),
    );
    net.sign_and_submit(market, market, Command::PublishDataset(enterprise_dataset())).unwrap();
    net.sign_and_submit(civil, civil, Command::PublishDataset(resident_dataset())).unwrap();
    let key_of = |index: usize| NodeKey::load(&net.nodes[index].data_dir.join("node.key")).unwrap();
    let half = HISTORY_RECORDS / 2;
    let (street_key, market_key) = (key_of(jingansi), key_of(market));
    let mut records = denials(&street_key, &market_key, ENTERPRISES, half, SUBJECTS_PER_RECORD);
    records.extend(denials(
        &key_of(hub),
        &key_of(civil),
        RESIDENTS,
        HISTORY_RECORDS - half,
        SUBJECTS_PER_RECORD,
    ));
    let bytes: usize = records.iter().map(SignedCommand::wire_bytes).sum();
    assert!(bytes > 16 * 1024 * 1024, "only {bytes} bytes of access records");
    let api = net.api(market).unwrap();
    for (number, batch) in records.chunks(HISTORY_BATCH).enumerate() {
        submit_each_once(&api, number, batch);
    }
    converged_within(&net, HISTORY_CONVERGE_TIMEOUT);
    for index in 0..4 {
        let raft = net.api(index).unwrap().status().unwrap().raft;
        assert!(raft.snapshot_index > 0, "{} built no snapshot: {raft:?}", net.nodes[index].spec.name);
        assert_eq!(audit_counts(&net, index).unwrap().0, HISTORY_RECORDS as u64);
    }

    // Every node restarts from its state image and log: the owner after
    // kill -9, the others stopped.
    net.kill9(market).unwrap();
    for index in (0..4).filter(|index| *index != market) {
        net.stop(index).unwrap();
    }
    for index in 0..4 {
        net.start(index).unwrap();
    }
    converged_within(&net, HISTORY_CONVERGE_TIMEOUT);
    for index in 0..4 {
        assert_eq!(audit_counts(&net, index).unwrap().0, HISTORY_RECORDS as u64);
    }
    // A voter that appended the last entry applied it from its log and so
    // keeps it in its history; a majority of voters appended it.
    let last = (HISTORY_RECORDS - 1) as u64;
    let voters = [0, 1, 2];
    let holding = voters.iter().filter(|index| net.holds_access_entry(**index, last).unwrap()).count();
    assert!(holding * 2 > voters.len(), "only {holding} voters hold access entry {last}");

    // A learner added now joins by snapshot, and the signers, following the
    // tree from their state images, make a checkpoint final over it all.
    let leader = net.leader(Duration::from_secs(10)).unwrap();
    net.start(zhenru).unwrap();
    net.admit(zhenru, leader).unwrap();
    net.add_learner(zhenru).unwrap();
    converged_within(&net, HISTORY_CONVERGE_TIMEOUT);
    let learner = net.api(zhenru).unwrap().status().unwrap().raft;
    assert!(learner.snapshot_index > 0, "the learner did not install a snapshot: {learner:?}");
    wait_until("a final checkpoint over every access entry, seen by the learner", CONVERGE_TIMEOUT, || {
        (audit_counts(&net, zhenru)? == (HISTORY_RECORDS as u64, HISTORY_RECORDS as u64)).then_some(())
    })
    .unwrap();
    // It holds the entries after its snapshot only, and says so by paging
    // from there.
    assert!(!net.holds_access_entry(zhenru, 0).unwrap());

    // Proofs from the stored trees. The learner holds the tree from its
    // snapshot's compact range on: it proves that the tree over it all is a
    // prefix of a later one, and the leaves it applied itself, and answers
    // 404 for a leaf before its snapshot; a voter proves any leaf.
    // Ten more, signed now (a command's time is within minutes of its
    // entry's).
    let later = denials(&street_key, &market_key, ENTERPRISES, 10, SUBJECTS_PER_RECORD);
    proofs_from_the_stored_trees(&net, market, zhenru, &later);
}

/// After the history test: ten more records (`later`), then a voter that
/// never installed a snapshot proves the first leaf, the owner (`market`)
/// and the learner (`zhenru`) the newest, and the learner the consistency
/// from its snapshot's size on.
fn proofs_from_the_stored_trees(net: &Testnet, market: usize, zhenru: usize, later: &[SignedCommand]) {
    let size = HISTORY_RECORDS as u64;
    let old_root = hash(
        &net.api(zhenru).unwrap().get::<serde_json::Value>("/v1/audit/checkpoints").unwrap()["latest"]
            ["root"],
    );
    submit_each_once(&net.api(market).unwrap(), HISTORY_RECORDS, later);
    let new_size = size + later.len() as u64;
    wait_until("a final checkpoint over the new entries, seen by the learner", CONVERGE_TIMEOUT, || {
        (audit_counts(net, zhenru)? == (new_size, new_size)).then_some(())
    })
    .unwrap();
    let checkpoints: serde_json::Value = net.api(zhenru).unwrap().get("/v1/audit/checkpoints").unwrap();
    let root = hash(&checkpoints["latest"]["root"]);
    let prove = |index: usize, leaf: u64| -> Option<()> {
        let path = format!("/v1/audit/proofs/inclusion?leaf={leaf}&tree_size={new_size}");
        let answer: serde_json::Value = net.api(index).ok()?.get(&path).ok()?;
        let proof: Vec<[u8; 32]> = answer["proof"].as_array()?.iter().map(hash).collect();
        let depth = (u64::BITS - (new_size - 1).leading_zeros()) as usize;
        assert!(
            !proof.is_empty() && proof.len() <= depth,
            "a tree of {new_size} leaves is {depth} levels deep"
        );
        civmesh_policy::audit::verify_inclusion(&root, new_size, leaf, &hash(&answer["leaf_value"]), &proof)
            .unwrap();
        Some(())
    };
    // A voter that never installed a snapshot proves the first leaf (one
    // that did may not hold the subtrees it needs, and answers 404).
    assert!((0..3).any(|voter| prove(voter, 0).is_some()), "no voter proves leaf 0");
    // The newest leaf, applied by every replica itself.
    for index in [market, zhenru] {
        prove(index, new_size - 1).expect("the newest leaf is proved");
    }
    let path = format!("/v1/audit/proofs/consistency?from={size}&tree_size={new_size}");
    let answer: serde_json::Value = net.api(zhenru).unwrap().get(&path).unwrap();
    let proof: Vec<[u8; 32]> = answer["proof"].as_array().unwrap().iter().map(hash).collect();
    civmesh_policy::audit::verify_consistency(&old_root, size, &root, new_size, &proof).unwrap();
    let error =
        net.api(zhenru).unwrap().get::<serde_json::Value>("/v1/audit/proofs/inclusion?leaf=0").unwrap_err();
    assert!(error.to_string().contains("404"), "{error:#}");
}
