//! The policy log across real `civmesh` processes over libp2p on loopback,
//! with RocksDB on disk: 3 voters and 2 learners.
//!
//! - kill -9 of the leader mid-stream loses no acknowledged write, a new
//!   leader carries on, and the killed node catches up on restart;
//! - a learner added after the log was purged catches up by snapshot, and a
//!   voter killed after its state image re-applies the entries after it;
//! - a voter cut off from the others (they are frozen with SIGSTOP) cannot
//!   commit, and the cluster goes on once they return;
//! - a voter whose disk fills up stops by itself, saying why, the majority
//!   goes on, and once space is freed it starts again with nothing lost.
//!
//! A history of 50,000 access records is `policy_log_history.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope};
use civmesh_policy::model::LegalBasis;
use civmesh_policy::{Command, SignedCommand};
use civmesh_testnet::city::{city, enterprise_dataset, ENTERPRISES};
use civmesh_testnet::{wait_until, NodeSpec, SnapshotPolicy, Testnet};
use civmesh_tests::policy_log::{audit_counts, converged, denials, submit_each_once};

fn federation() -> Vec<NodeSpec> {
    city(&["hub", "market", "civil", "jingansi", "auditor"])
}

fn demand(key: &NodeKey, purpose: &str) -> SignedCommand {
    let command = Command::FileDemand {
        dataset: "housing/rentals".into(),
        fields: BTreeSet::from(["tenant".to_string()]),
        purpose: purpose.into(),
        legal_basis: LegalBasis::StatutoryDuty,
    };
    SignedEnvelope::sign(key, &command, now_unix_millis()).unwrap()
}

fn submit_one(net: &Testnet, via: usize, command: SignedCommand) -> bool {
    match net.api(via).and_then(|api| api.submit(&[command])) {
        Ok(response) => response.outcomes.iter().all(Result::is_ok),
        Err(_) => false,
    }
}

/// Waits until every running node has applied the same index with the same
/// state hash, and returns that hash.
fn purposes_on(net: &Testnet, index: usize) -> BTreeSet<String> {
    let demands: Vec<civmesh_node_api::DemandEntry> =
        net.api(index).unwrap().get("/v1/policy/demands").unwrap();
    demands.into_iter().map(|demand| demand.purpose).collect()
}

mod civmesh_node_api {
    /// Mirrors the node's `GET /v1/policy/demands` entries.
    #[derive(Debug, serde::Deserialize)]
    pub struct DemandEntry {
        pub purpose: String,
    }
}

#[test]
fn killing_the_leader_mid_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &federation()).unwrap();
    let street = NodeKey::load(&net.nodes[3].data_dir.join("node.key")).unwrap();
    let leader = net.leader(Duration::from_secs(10)).unwrap();
    let term_before = net.api(leader).unwrap().status().unwrap().raft.term;

    let mut acknowledged = Vec::new();
    for write in 0..60 {
        if write == 20 {
            net.kill9(leader).unwrap();
        }
        let purpose = format!("write-{write}");
        // Through the learners, which forward to whoever leads.
        if submit_one(&net, 3 + write % 2, demand(&street, &purpose)) {
            acknowledged.push(purpose);
        }
    }
    assert!(
        acknowledged.len() >= 50,
        "the cluster did not carry on: {} of 60 acknowledged",
        acknowledged.len()
    );
    // A new leader was elected: a later term (`leader` only asks running
    // nodes, so the new leader's index alone proves nothing).
    let new_leader = net.leader(Duration::from_secs(10)).unwrap();
    let term_after = net.api(new_leader).unwrap().status().unwrap().raft.term;
    assert!(term_after > term_before, "no election: term {term_before} then {term_after}");

    net.start(leader).unwrap();
    let hash = converged(&net);
    assert_eq!(hash.len(), 64);
    for index in 0..net.nodes.len() {
        let purposes = purposes_on(&net, index);
        for purpose in &acknowledged {
            assert!(purposes.contains(purpose), "{} lost acknowledged {purpose}", net.nodes[index].spec.name);
        }
    }
}

#[test]
fn a_learner_added_after_the_log_was_purged_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let specs = city(&["hub", "market", "civil", "zhenru"]);
    let snapshot = SnapshotPolicy { after_entries: 20, entries_kept: 5 };
    let mut net = Testnet::create(dir.path(), &specs, snapshot).unwrap();
    for index in 0..3 {
        net.configure(index, |config| config.raft.snapshot_chunk_bytes_max = 1024).unwrap();
        net.start(index).unwrap();
    }
    net.bootstrap_nodes(&[0, 1, 2]).unwrap();
    let hub = NodeKey::load(&net.nodes[0].data_dir.join("node.key")).unwrap();
    for write in 0..60 {
        assert!(submit_one(&net, write % 3, demand(&hub, &format!("early-{write}"))));
    }
    let leader = net.leader(Duration::from_secs(10)).unwrap();
    let purged = wait_until("the leader to purge its log", Duration::from_secs(30), || {
        let status = net.api(leader).ok()?.status().ok()?.raft;
        (status.purged_index > 0).then_some(status.purged_index)
    })
    .unwrap();

    // The learner is killed -9 while the snapshot streams in (in 1 KiB
    // chunks), then started again: it takes the next stream whole.
    let images = net.nodes[3].data_dir.join("policy-log").join("state-image");
    net.start(3).unwrap();
    net.admit(3, leader).unwrap();
    // Fails once the learner is killed, or ends once it caught up after
    // its restart; the learner stays added either way.
    let adding = net.add_learner_in_background(3).unwrap();
    // Polled every millisecond: the stream lasts a few dozen.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let partial = loop {
        let streaming = std::fs::read_dir(&images).ok().and_then(|entries| {
            entries.flatten().find(|entry| {
                entry.file_name().to_string_lossy().starts_with("receiving")
                    && entry.metadata().is_ok_and(|metadata| metadata.len() > 0)
            })
        });
        if let Some(entry) = streaming {
            break entry.path();
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot streamed in");
        std::thread::sleep(Duration::from_millis(1));
    };
    net.kill9(3).unwrap();
    assert!(partial.exists(), "killed halfway: the partial snapshot is still there");
    assert!(!images.join("image").exists(), "killed halfway: nothing installed");
    net.start(3).unwrap();
    converged(&net);
    let _ = adding.join();
    let learner = net.api(3).unwrap().status().unwrap().raft;
    assert_eq!(learner.role, "learner");
    assert!(learner.snapshot_index >= purged, "the learner did not install a snapshot: {learner:?}");
    // No partial snapshot is left (a newer image or the digests may be
    // being written beside the installed one).
    let left: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|name| !name.starts_with("receiving")), "{left:?}");
    assert!(left.iter().any(|name| name == "image"), "{left:?}");
    assert_eq!(purposes_on(&net, 3).len(), 60);
    // Its evaluation says what it cannot count: the history before its
    // snapshot.
    let evaluation: serde_json::Value = net.api(3).unwrap().get("/v1/evaluation").unwrap();
    let notes = evaluation["notes"].as_array().unwrap();
    assert!(notes.iter().any(|note| note.as_str().unwrap().contains("installed a snapshot")), "{evaluation}");

    // A voter killed with entries applied after its latest state image
    // comes back by re-applying them on top of the image.
    for write in 0..7 {
        assert!(submit_one(&net, 0, demand(&hub, &format!("late-{write}"))));
    }
    converged(&net);
    let before = wait_until("applied entries after the hub's state image", Duration::from_secs(10), || {
        let status = net.api(0).ok()?.status().ok()?.raft;
        (status.snapshot_index > 0 && status.applied_index > status.snapshot_index).then_some(status)
    })
    .unwrap();
    net.kill9(0).unwrap();
    net.start(0).unwrap();
    let hash = converged(&net);
    let after = net.api(0).unwrap().status().unwrap().raft;
    assert!(after.applied_index >= before.applied_index, "{before:?} then {after:?}");
    assert_eq!(after.state_digest, hash);
    assert_eq!(purposes_on(&net, 0).len(), 67, "every entry after the image re-applied");
}

#[test]
fn a_cut_off_voter_cannot_commit_and_the_cluster_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::launch(dir.path(), &federation()).unwrap();
    let hub = NodeKey::load(&net.nodes[0].data_dir.join("node.key")).unwrap();
    assert!(submit_one(&net, 0, demand(&hub, "before")));
    converged(&net);

    // The hub alone: both other voters frozen.
    net.freeze(1).unwrap();
    net.freeze(2).unwrap();
    let before = net.api(0).unwrap().status().unwrap().raft.committed_index;
    assert!(!submit_one(&net, 0, demand(&hub, "during")), "a lone voter acknowledged a write");
    let after = net.api(0).unwrap().status().unwrap().raft;
    assert_eq!(after.committed_index, before, "a lone voter advanced its commit index");
    assert!(!purposes_on(&net, 0).contains("during"));

    net.thaw(1).unwrap();
    net.thaw(2).unwrap();
    assert!(submit_one(&net, 3, demand(&hub, "after")));
    converged(&net);
    assert!(purposes_on(&net, 4).contains("after"));
}

#[test]
fn voters_are_promoted_and_demoted_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::launch(dir.path(), &federation()).unwrap();
    let data_dir = |index: usize| net.nodes[index].data_dir.to_str().unwrap().to_string();
    let (hub, market, civil, street) = (data_dir(0), data_dir(1), data_dir(2), data_dir(3));
    let peer = |index: usize| net.nodes[index].peer_id.clone();
    let (hub_id, market_id, street_id) = (peer(0), peer(1), peer(3));
    net.cli(&[
        "cluster",
        "voters",
        "--node-dir",
        &hub,
        "--node-dir",
        &market,
        "--node-dir",
        &civil,
        "--peer-id",
        &hub_id,
        "--peer-id",
        &market_id,
        "--peer-id",
        &street_id,
    ])
    .unwrap();
    let roles = wait_until("the new roles", Duration::from_secs(20), || {
        let role = |index: usize| net.api(index).ok()?.status().ok().map(|status| status.raft.role);
        let (civil_role, street_role) = (role(2)?, role(3)?);
        (civil_role == "learner" && matches!(street_role.as_str(), "follower" | "leader"))
            .then_some((civil_role, street_role))
    })
    .unwrap();
    assert_eq!(roles.0, "learner");
    let status = net
        .cli(&["cluster", "status", "--node-dir", &hub, "--node-dir", &civil, "--node-dir", &street])
        .unwrap();
    assert_eq!(status.lines().count(), 4, "{status}");
    assert!(status.contains("learner"), "{status}");
    let key = NodeKey::load(&net.nodes[0].data_dir.join("node.key")).unwrap();
    assert!(submit_one(&net, 2, demand(&key, "after the change")));
    converged(&net);
}

#[test]
fn a_revoked_member_is_disconnected_and_its_commands_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::launch(dir.path(), &federation()).unwrap();
    let street = NodeKey::load(&net.nodes[3].data_dir.join("node.key")).unwrap();
    assert!(submit_one(&net, 0, demand(&street, "while a member")));
    let street_peer = net.nodes[3].peer_id.clone();
    let connected =
        |index: usize| net.api(index).ok().and_then(|api| api.status().ok()).map(|s| s.connected_peers);
    wait_until("the street to be connected", Duration::from_secs(10), || {
        connected(0).filter(|peers| peers.contains(&street_peer))
    })
    .unwrap();

    let ca = net.ca_dir.to_str().unwrap().to_string();
    let via = net.nodes[0].data_dir.to_str().unwrap().to_string();
    net.cli(&[
        "cluster",
        "revoke",
        "--ca-dir",
        &ca,
        "--node-dir",
        &via,
        "--peer-id",
        &street_peer,
        "--reason",
        "laptop stolen",
    ])
    .unwrap();
    let revoked_at = std::time::Instant::now();
    wait_until("every voter to drop the street", Duration::from_secs(5), || {
        (0..3).all(|index| connected(index).is_some_and(|peers| !peers.contains(&street_peer))).then_some(())
    })
    .unwrap();
    assert!(revoked_at.elapsed() < Duration::from_secs(5));
    let response = net.api(0).unwrap().submit(&[demand(&street, "after revocation")]).unwrap();
    assert_eq!(response.outcomes[0].as_ref().unwrap_err().code, civmesh_policy::RejectionCode::SignerRevoked);
    // It stays out: when it dials the voters again (forwarding a command of
    // its own to the leader), the gate refuses the connection.
    let refused = || -> Option<u64> {
        let counts = (0..3).map(|index| {
            let text = net.api(index).ok()?.get_text("/metrics").ok()?;
            let series = "civmesh_security_events_total{outcome=\"connection_refused\"}";
            Some(civmesh_testnet::metric_value(&text, series).unwrap_or(0.0) as u64)
        });
        counts.sum()
    };
    let refused_before = refused().unwrap();
    let _ = net.api(3).unwrap().submit(&[demand(&street, "from a revoked node")]);
    wait_until("a voter to refuse the revoked street's connection", Duration::from_secs(20), || {
        refused().filter(|count| *count > refused_before)
    })
    .unwrap();
    assert!((0..3).all(|index| !connected(index).unwrap().contains(&street_peer)));
}

/// A small tmpfs mounted for one node's directory; unmounted when dropped.
struct SmallDisk {
    mount: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes` at `mount`, or `None` where this machine
    /// cannot mount one (the test then says so and ends).
    fn mount(mount: &std::path::Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(mount).unwrap();
        let size = format!("size={bytes}");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(mount)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| SmallDisk { mount: mount.to_path_buf() })
    }

    /// Bytes free on it.
    fn free_bytes(&self) -> u64 {
        let output = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").args(["-l"]).arg(&self.mount).status();
    }
}

#[test]
fn a_full_disk_stops_a_voter_cleanly_and_it_resumes_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    // Mounted first, so it is unmounted after the nodes stop, even on a panic.
    let Some(disk) = SmallDisk::mount(&dir.path().join("small-disk"), 96 * 1024 * 1024) else {
        eprintln!("this machine cannot mount a tmpfs: the full-disk test did not run");
        return;
    };
    let specs = city(&["hub", "market", "civil", "jingansi"]);
    let mut net = Testnet::create(&dir.path().join("net"), &specs, SnapshotPolicy::default()).unwrap();
    let (market, civil, jingansi) =
        (net.index("market").unwrap(), net.index("civil").unwrap(), net.index("jingansi").unwrap());
    // Civil affairs' node directory moves to that 96 MiB disk of its own.
    let civil_dir = net.nodes[civil].data_dir.clone();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(civil_dir.join("."))
        .arg(&disk.mount)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_dir_all(&civil_dir).unwrap();
    std::os::unix::fs::symlink(&disk.mount, &civil_dir).unwrap();
    net.start_all().unwrap();
    net.bootstrap().unwrap();
    net.sign_and_submit(market, market, Command::PublishDataset(enterprise_dataset())).unwrap();
    let key_of = |index: usize| NodeKey::load(&net.nodes[index].data_dir.join("node.key")).unwrap();
    // Wide records (200 subjects each), thirty a submission.
    let records = denials(&key_of(jingansi), &key_of(market), ENTERPRISES, 1_200, 200);
    let mut batches = records.chunks(30).enumerate();
    let mut acknowledged = 0;
    for (number, batch) in batches.by_ref().take(4) {
        submit_each_once(&net.api(market).unwrap(), number, batch);
        acknowledged += batch.len();
    }
    converged(&net);

    // The disk fills up; civil affairs' node stops by itself, saying why,
    // and the majority goes on committing.
    let filler = disk.mount.join("filler");
    let leave_bytes = 512 * 1024;
    let fill = disk.free_bytes().saturating_sub(leave_bytes);
    std::fs::write(&filler, vec![0u8; usize::try_from(fill).unwrap()]).unwrap();
    let mut stopped = None;
    for (number, batch) in batches.by_ref() {
        submit_each_once(&net.api(market).unwrap(), number, batch);
        acknowledged += batch.len();
        stopped = net.exited(civil).unwrap();
        if stopped.is_some() {
            break;
        }
    }
    let stopped = match stopped {
        Some(status) => status,
        None => wait_until("civil affairs' node to stop", Duration::from_secs(60), || {
            net.exited(civil).ok().flatten()
        })
        .unwrap(),
    };
    assert!(!stopped.success(), "a node that stopped on a full disk exits with an error: {stopped}");
    let log = std::fs::read_to_string(dir.path().join("net").join("civil.log")).unwrap();
    assert!(log.contains("the policy log stopped"), "civil affairs' log does not say why it stopped");
    for (number, batch) in batches.by_ref().take(3) {
        submit_each_once(&net.api(market).unwrap(), number, batch);
        acknowledged += batch.len();
    }

    // Space freed, it starts again and catches up: every replica holds
    // every acknowledged access record, and they agree.
    std::fs::remove_file(&filler).unwrap();
    net.start(civil).unwrap();
    converged(&net);
    for index in 0..net.nodes.len() {
        assert_eq!(
            audit_counts(&net, index).unwrap().0,
            acknowledged as u64,
            "{}",
            net.nodes[index].spec.name
        );
    }
    drop(net);
    drop(disk);
}
