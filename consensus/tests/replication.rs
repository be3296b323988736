//! Three voters and a learner over the in-process transport: signed
//! commands are forwarded to the leader, verified in batches as they
//! arrive, applied identically everywhere (forgeries as deterministic
//! rejections, a signature only ZIP 215 accepts as accepted), and a cut-off
//! node cannot commit.
//! The same scenarios over libp2p with real processes live in tests/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use civmesh_certs::{
    CaCertificate, FederationCa, IssueRequest, NodeCertificate, NodeKey, OrgId, Role, SignedEnvelope,
};
use civmesh_consensus::in_process::{InProcessNetwork, InProcessTransport};
use civmesh_consensus::{PolicyLog, PolicyLogConfig, RaftPeer, SubmitError};
use civmesh_policy::model::{FieldClass, FieldSpec, FieldType, SharingCategory};
use civmesh_policy::{Applied, Command, DatasetSpec, RejectionCode, SignedCommand};

struct Member {
    key: NodeKey,
    certificate_der: Vec<u8>,
    log: PolicyLog<InProcessTransport>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    network: InProcessNetwork,
    ca_key: NodeKey,
    ca_der: Vec<u8>,
    members: Vec<Member>,
}

async fn cluster() -> Cluster {
    cluster_with(|_| {}).await
}

/// A cluster whose members' logs are configured by `configure` too.
async fn cluster_with(configure: fn(&mut PolicyLogConfig)) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let now = civmesh_certs::now_unix_millis();
    let ca = FederationCa::init(&dir.path().join("ca"), "test", now, 30).unwrap();
    let ca_key = NodeKey::load(&dir.path().join("ca").join("ca.key")).unwrap();
    let ca_der = CaCertificate::from_pem(ca.certificate_pem()).unwrap().der().to_vec();
    let network = InProcessNetwork::default();
    let mut members = Vec::new();
    for (index, (org, role)) in [
        ("hub/city", Role::Hub),
        ("dept/market-supervision", Role::Department),
        ("dept/civil-affairs", Role::Department),
        ("street/jingansi", Role::Street),
    ]
    .into_iter()
    .enumerate()
    {
        let key = NodeKey::generate().unwrap();
        let request = IssueRequest::for_days(OrgId::new(org).unwrap(), role, key.node_id(), now, 30).unwrap();
        let certificate_der = NodeCertificate::from_pem(&ca.issue(&request).unwrap()).unwrap().der().to_vec();
        let mut config = PolicyLogConfig::new(
            dir.path().join(format!("node-{index}")),
            key.node_id(),
            format!("mem/{index}"),
        );
        configure(&mut config);
        let log = PolicyLog::start(config, network.transport(key.node_id())).await.unwrap();
        network.register(log.clone());
        members.push(Member { key, certificate_der, log });
    }
    let voters: Vec<RaftPeer> = members[..3].iter().map(|m| m.log.me().clone()).collect();
    members[0].log.initialize(voters).await.unwrap();
    let leader = wait_for_leader(&members[..3]).await;
    members[leader].log.add_learner(members[3].log.me().clone()).await.unwrap();
    Cluster { _dir: dir, network, ca_key, ca_der, members }
}

/// The leader among `members`, and another of them.
async fn leader_and_follower(members: &[Member]) -> (usize, usize) {
    let leader = wait_for_leader(members).await;
    (leader, (0..members.len()).find(|index| *index != leader).unwrap())
}

async fn wait_for_leader(members: &[Member]) -> usize {
    wait_until("a leader", || members.iter().position(|m| m.log.status().role == "leader")).await
}

async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The federation's genesis over the cluster's four members, unsigned.
fn genesis(cluster: &Cluster) -> Command {
    Command::Genesis {
        federation_name: "test".into(),
        ca_certificate_der: cluster.ca_der.clone(),
        founding_member_certificates_der: cluster.members.iter().map(|m| m.certificate_der.clone()).collect(),
    }
}

fn sign(key: &NodeKey, command: Command) -> SignedCommand {
    SignedEnvelope::sign(key, &command, civmesh_certs::now_unix_millis()).unwrap()
}

fn dataset() -> DatasetSpec {
    DatasetSpec {
        id: "market-supervision/enterprise-registry".into(),
        title: "Enterprises".into(),
        subject_key_field: "credit_code".into(),
        sharing: SharingCategory::Conditional,
        fields: vec![FieldSpec {
            name: "credit_code".into(),
            field_type: FieldType::Text,
            class: FieldClass::Public,
        }],
        scope_fields: vec![],
    }
}

async fn converge(members: &[&Member]) -> String {
    wait_until("replicas to converge", || {
        let statuses: Vec<_> = members.iter().map(|m| m.log.status()).collect();
        let first = &statuses[0];
        let same = statuses
            .iter()
            .all(|s| s.applied_index == first.applied_index && s.state_digest == first.state_digest);
        (same && first.applied_index > 0).then(|| first.state_digest.clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_forwarded_verified_and_applied_alike() {
    let cluster = cluster().await;
    let learner = &cluster.members[3];
    let genesis = genesis(&cluster);
    // Submitted on the learner: forwarded to the leader.
    let result = learner.log.submit(vec![sign(&cluster.ca_key, genesis)]).await.unwrap();
    assert_eq!(result.outcomes, vec![Ok(Applied::Done)]);

    let market = &cluster.members[1];
    let good = sign(&market.key, Command::PublishDataset(dataset()));
    let mut forged_bytes = sign(&market.key, Command::PublishDataset(dataset())).to_bytes().unwrap();
    let last = forged_bytes.len() - 1;
    forged_bytes[last] ^= 0x40;
    let forged = SignedEnvelope::from_bytes(&forged_bytes).unwrap();
    let by_street = sign(&learner.key, Command::PublishDataset(dataset()));
    let by_stranger = sign(&NodeKey::generate().unwrap(), Command::PublishDataset(dataset()));
    // A signature only ZIP 215 accepts (R of order 8): verified in a batch
    // on arrival and applied alike by every replica.
    let seed: [u8; 32] = market.key.pkcs8_der()[16..48].try_into().unwrap();
    let second = DatasetSpec { id: "market-supervision/licences".into(), ..dataset() };
    let zip215_only = SignedEnvelope::sign_zip215_only(
        &seed,
        &Command::PublishDataset(second),
        civmesh_certs::now_unix_millis(),
    )
    .unwrap();
    assert_eq!(zip215_only.signer().unwrap(), market.key.node_id(), "the market's own key");
    let result = learner.log.submit(vec![good, forged, by_street, by_stranger, zip215_only]).await.unwrap();
    assert_eq!(result.outcomes[0], Ok(Applied::Done));
    assert_eq!(result.outcomes[1].as_ref().unwrap_err().code, RejectionCode::SignatureInvalid);
    assert_eq!(result.outcomes[2].as_ref().unwrap_err().code, RejectionCode::NotAuthorised);
    assert_eq!(result.outcomes[3].as_ref().unwrap_err().code, RejectionCode::SignerUnknown);
    assert_eq!(result.outcomes[4], Ok(Applied::Done));
    assert_eq!(result.state_version, 6);

    let all: Vec<&Member> = cluster.members.iter().collect();
    converge(&all).await;
    for member in &cluster.members {
        member.log.state().read(|applied| {
            assert_eq!(applied.policy.datasets.len(), 2);
            assert_eq!(applied.policy.members.len(), 4);
        });
    }
    let index = learner.log.linearizable_read_index(Duration::from_secs(5)).await.unwrap();
    assert!(learner.log.status().applied_index >= index);
}

/// Snapshots every 4 entries, and no log kept behind them.
fn snapshot_often(config: &mut PolicyLogConfig) {
    (config.snapshot_after_entries, config.entries_kept_after_snapshot) = (4, 0);
}

/// A node that joined by snapshot after the log behind it was purged holds
/// the replay window's nonces the snapshot counts: a command applied before
/// it, sent again, is refused there as everywhere, and every replica keeps
/// the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joined_by_snapshot_refuses_a_command_applied_before_it() {
    let cluster = cluster_with(snapshot_often).await;
    let leader = wait_for_leader(&cluster.members[..3]).await;
    let log = &cluster.members[leader].log;
    log.submit(vec![sign(&cluster.ca_key, genesis(&cluster))]).await.unwrap();
    let market = &cluster.members[1];
    let published = sign(&market.key, Command::PublishDataset(dataset()));
    assert_eq!(log.submit(vec![published.clone()]).await.unwrap().outcomes, vec![Ok(Applied::Done)]);
    let published_at = log.status().applied_index;
    for grant_id in 0..12 {
        let filler = sign(&market.key, Command::RevokeGrant { grant_id, reason: "none".into() });
        log.submit(vec![filler]).await.unwrap();
    }
    wait_until("a purge past the dataset", || (log.status().purged_index > published_at).then_some(())).await;

    let key = NodeKey::generate().unwrap();
    let mut config =
        PolicyLogConfig::new(cluster._dir.path().join("node-joined"), key.node_id(), "mem/joined".into());
    snapshot_often(&mut config);
    let joined = PolicyLog::start(config, cluster.network.transport(key.node_id())).await.unwrap();
    cluster.network.register(joined.clone());
    log.add_learner(joined.me().clone()).await.unwrap();
    let joined = Member { key, certificate_der: Vec::new(), log: joined };
    let mut all: Vec<&Member> = cluster.members.iter().collect();
    all.push(&joined);
    converge(&all).await;
    assert!(joined.log.state().read(|applied| applied.policy.recent_commands.nonces().is_empty()));

    let replayed = log.submit(vec![published]).await.unwrap();
    assert_eq!(replayed.outcomes[0].as_ref().unwrap_err().code, RejectionCode::Replayed);
    converge(&all).await;
    let remembered: Vec<usize> =
        all.iter().map(|m| m.log.state().read(|a| a.policy.recent_commands.nonces_remembered())).collect();
    assert!(remembered.iter().all(|count| *count == remembered[0] && *count >= 14), "{remembered:?}");
    joined.log.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_cannot_commit_and_the_majority_goes_on() {
    let cluster = cluster().await;
    let voters: Vec<&Member> = cluster.members[..3].iter().collect();
    let old = wait_for_leader(&cluster.members[..3]).await;
    let genesis = genesis(&cluster);
    cluster.members[old].log.submit(vec![sign(&cluster.ca_key, genesis)]).await.unwrap();
    let old_node = cluster.members[old].key.node_id();
    cluster.network.set_cut_off(old_node, true);

    let market = &cluster.members[1];
    let outcome =
        cluster.members[old].log.submit(vec![sign(&market.key, Command::PublishDataset(dataset()))]).await;
    assert!(matches!(outcome, Err(SubmitError::CommitTimeout(_) | SubmitError::NoLeader(_))), "{outcome:?}");

    let others: Vec<&Member> = voters.iter().copied().filter(|m| m.key.node_id() != old_node).collect();
    let result =
        others[0].log.submit(vec![sign(&market.key, Command::PublishDataset(dataset()))]).await.unwrap();
    assert_eq!(result.outcomes, vec![Ok(Applied::Done)]);
    cluster.members[old].log.state().read(|applied| assert!(applied.policy.datasets.is_empty()));

    cluster.network.set_cut_off(old_node, false);
    converge(&voters).await;
    cluster.members[old].log.state().read(|applied| assert_eq!(applied.policy.datasets.len(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_requests_are_refused_without_harm() {
    use civmesh_certs::codec;
    use civmesh_consensus::{PeerResponse, PEER_MESSAGE_BYTES_MAX};
    let cluster = cluster().await;
    let member = &cluster.members[0];
    for garbage in [vec![], vec![0xff; 64], b"hello raft".to_vec(), vec![7u8; PEER_MESSAGE_BYTES_MAX + 1]] {
        let answer = member.log.handle_peer_request(&cluster.members[1].key.node_id(), &garbage).await;
        let decoded: PeerResponse = codec::decode_exact(&answer.bytes, PEER_MESSAGE_BYTES_MAX).unwrap();
        assert!(matches!(decoded, PeerResponse::Refused(_)), "{decoded:?}");
    }
    let too_many = vec![
        sign(&member.key, Command::PublishDataset(dataset()));
        civmesh_consensus::policy_log::SUBMIT_COMMANDS_MAX + 1
    ];
    assert!(matches!(member.log.submit(too_many).await, Err(SubmitError::Refused(_))));
    assert!(matches!(member.log.submit(vec![]).await, Err(SubmitError::Refused(_))));
    // Under the count bound but over the byte bound.
    let mut big = dataset();
    big.title = "x".repeat(30 * 1024);
    let too_big = vec![sign(&member.key, Command::PublishDataset(big)); 10];
    assert!(
        too_big.iter().map(SignedCommand::wire_bytes).sum::<usize>()
            > civmesh_consensus::policy_log::SUBMIT_BYTES_MAX
    );
    assert!(matches!(member.log.submit(too_big).await, Err(SubmitError::Refused(_))));
    // The cluster still works.
    let genesis = genesis(&cluster);
    assert_eq!(
        member.log.submit(vec![sign(&cluster.ca_key, genesis)]).await.unwrap().outcomes,
        vec![Ok(Applied::Done)]
    );
}

/// A learner (a street) and a voter that is not the leader try to act as
/// leader or candidate towards a voter, and the leader sends snapshot
/// chunks that skip ahead, end past the state image bound (written there,
/// the receiver would hold that many bytes), or end a snapshot that is no
/// state image: each RPC is refused with its stable code before it reaches
/// Raft, so the target's vote and term stay as they were, the cluster keeps
/// its leader, and the target goes on applying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpcs_from_non_voters_and_impostors_are_refused() {
    use civmesh_consensus::{raft_node_id, PeerRequest, PeerResponse};
    use openraft::error::{InstallSnapshotError, RaftError};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{LeaderId, SnapshotMeta, Vote};
    let cluster = cluster().await;
    let (leader, follower) = leader_and_follower(&cluster.members[..3]).await;
    let target = &cluster.members[follower];
    let before = target.log.status();
    let street = &cluster.members[3];
    let other_voter = &cluster.members[(0..3).find(|index| *index != leader && *index != follower).unwrap()];
    let street_id = raft_node_id(&street.key.node_id());
    let leader_id = raft_node_id(&cluster.members[leader].key.node_id());
    let higher = |node| Vote { leader_id: LeaderId::new(before.term + 5, node), committed: true };
    let append = |node| {
        PeerRequest::AppendEntries(AppendEntriesRequest {
            vote: higher(node),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        })
    };
    let snapshot = PeerRequest::InstallSnapshot(InstallSnapshotRequest {
        vote: higher(street_id),
        meta: SnapshotMeta::default(),
        offset: 0,
        data: vec![],
        done: true,
    });
    let vote = |node| PeerRequest::Vote(VoteRequest { vote: higher(node), last_log_id: None });
    // The leader starts a snapshot stream (accepted), then sends a chunk a
    // terabyte on: written there, the target would grow to hold it.
    let chunk = |offset, done| {
        let current = Vote { leader_id: LeaderId::new(before.term, leader_id), committed: true };
        // Past what the target committed: a snapshot it would install.
        let last_log_id =
            Some(openraft::LogId::new(openraft::CommittedLeaderId::new(before.term, leader_id), 1 << 20));
        let meta = SnapshotMeta { last_log_id, snapshot_id: "streamed".into(), ..SnapshotMeta::default() };
        PeerRequest::InstallSnapshot(InstallSnapshotRequest {
            vote: current,
            meta,
            offset,
            data: vec![1],
            done,
        })
    };
    let leader_node = cluster.members[leader].key.node_id();
    let (_, started) = ask(target, &leader_node, &chunk(0, false)).await;
    assert_eq!(started, None, "the stream's first chunk is the leader's to send");
    // A chunk past the stream's end is openraft's own mismatch, naming
    // where the stream is, so the leader starts it again.
    let (skipped, _) = ask(target, &leader_node, &chunk(2, false)).await;
    let PeerResponse::InstallSnapshot(Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
        mismatch,
    )))) = skipped
    else {
        panic!("{skipped:?}");
    };
    assert_eq!((mismatch.expect.offset, mismatch.got.offset), (1, 2));
    let far_chunk = chunk(1 << 40, false);
    // Two bytes, done: no state image. openraft 0.9 stops Raft on an
    // install that fails, so it must never see it.
    let corrupt_end = chunk(1, true);
    let cases = [
        (street.key.node_id(), vote(street_id), "raft_sender_not_voter"),
        (street.key.node_id(), append(street_id), "raft_sender_not_voter"),
        (street.key.node_id(), snapshot, "raft_sender_not_voter"),
        (other_voter.key.node_id(), append(leader_id), "raft_sender_not_leader"),
        (other_voter.key.node_id(), vote(leader_id), "raft_sender_not_candidate"),
        (leader_node, far_chunk, "raft_snapshot_past_bound"),
        (leader_node, corrupt_end, "raft_snapshot_corrupt"),
    ];
    for (sender, request, code) in cases {
        let (decoded, refusal) = ask(target, &sender, &request).await;
        assert_eq!(refusal, Some(code));
        assert!(matches!(&decoded, PeerResponse::Refused(reason) if reason.starts_with(code)), "{decoded:?}");
    }
    let after = target.log.status();
    assert_eq!((after.term, after.leader.clone()), (before.term, before.leader.clone()));
    assert_eq!(wait_for_leader(&cluster.members[..3]).await, leader);
    // The target still applies what the leader commits.
    let genesis = genesis(&cluster);
    let applied = cluster.members[leader].log.submit(vec![sign(&cluster.ca_key, genesis)]).await.unwrap();
    assert_eq!(applied.outcomes, vec![Ok(Applied::Done)]);
    let voters: Vec<&Member> = cluster.members[..3].iter().collect();
    converge(&voters).await;
}

/// The last chunk of a snapshot the follower has committed past, even one
/// that is no state image, is answered as openraft's receiver answers it,
/// and neither written nor read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_follower_committed_past_is_neither_written_nor_read() {
    use civmesh_consensus::{PeerRequest, PeerResponse};
    use openraft::raft::InstallSnapshotRequest;
    use openraft::{LeaderId, SnapshotMeta, Vote};
    let cluster = cluster().await;
    let (leader, follower) = leader_and_follower(&cluster.members[..3]).await;
    let target = &cluster.members[follower];
    let leader_id = civmesh_consensus::raft_node_id(&cluster.members[leader].key.node_id());
    let stale = PeerRequest::InstallSnapshot(InstallSnapshotRequest {
        vote: Vote { leader_id: LeaderId::new(target.log.status().term, leader_id), committed: true },
        meta: SnapshotMeta { snapshot_id: "stale".into(), ..SnapshotMeta::default() },
        offset: 0,
        data: b"no state image".to_vec(),
        done: true,
    });
    let (answer, refusal) = ask(target, &cluster.members[leader].key.node_id(), &stale).await;
    assert!(matches!(answer, PeerResponse::InstallSnapshot(Ok(_))), "{answer:?}");
    assert_eq!(refusal, None);
    let images = cluster._dir.path().join(format!("node-{follower}")).join("state-image");
    let files: Vec<_> = std::fs::read_dir(images).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert!(files.iter().all(|name| !name.to_string_lossy().starts_with("receiving")), "{files:?}");
}

/// Another log, alone, with a snapshot every 4 entries, past 40 entries:
/// its directory, its log, and its latest image's bytes and metadata.
async fn another_logs_image(
) -> (tempfile::TempDir, PolicyLog<InProcessTransport>, Vec<u8>, openraft::SnapshotMeta<u64, RaftPeer>) {
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::generate().unwrap();
    let network = InProcessNetwork::default();
    let mut config = PolicyLogConfig::new(dir.path().join("node"), key.node_id(), "mem/9".to_string());
    config.snapshot_after_entries = 4;
    let other = PolicyLog::start(config, network.transport(key.node_id())).await.unwrap();
    other.initialize(vec![other.me().clone()]).await.unwrap();
    wait_until("a leader", || (other.status().role == "leader").then_some(())).await;
    for _ in 0..60 {
        let command = sign(&key, Command::RevokeGrant { grant_id: 1, reason: "r".into() });
        other.submit(vec![command]).await.unwrap();
    }
    wait_until("a snapshot past 40", || (other.status().snapshot_index > 40).then_some(())).await;
    // A copy (one open file) to read from: the log may rename a newer
    // image over the file meanwhile.
    let image = dir.path().join("image-copy");
    std::fs::copy(dir.path().join("node").join("state-image").join("image"), &image).unwrap();
    let bytes = std::fs::read(&image).unwrap();
    let meta = civmesh_consensus::snapshot::image_meta(&image).unwrap();
    (dir, other, bytes, meta)
}

/// The whole of a snapshot in one chunk, from the leader `leader` at `term`.
fn whole_snapshot(
    term: u64,
    leader: u64,
    meta: openraft::SnapshotMeta<u64, RaftPeer>,
    bytes: Vec<u8>,
) -> civmesh_consensus::PeerRequest {
    use openraft::{LeaderId, Vote};
    civmesh_consensus::PeerRequest::InstallSnapshot(openraft::raft::InstallSnapshotRequest {
        vote: Vote { leader_id: LeaderId::new(term, leader), committed: true },
        meta,
        offset: 0,
        data: bytes,
        done: true,
    })
}

/// A well-formed snapshot that no other replica holds (the image of another
/// log, at an index past what the cluster committed) is refused as
/// unconfirmed, and the follower goes on: a leader alone cannot make a
/// replica install a state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_no_other_voter_holds_is_refused() {
    let (_other_dir, other, bytes, meta) = another_logs_image().await;
    let cluster = cluster().await;
    let (leader, follower) = leader_and_follower(&cluster.members[..3]).await;
    let target = &cluster.members[follower];
    assert!(target.log.status().committed_index < meta.last_log_id.unwrap().index);
    let leader_id = civmesh_consensus::raft_node_id(&cluster.members[leader].key.node_id());
    let forged = whole_snapshot(target.log.status().term, leader_id, meta, bytes);
    let (answer, refusal) = ask(target, &cluster.members[leader].key.node_id(), &forged).await;
    assert_eq!(refusal, Some("raft_snapshot_unconfirmed"), "{answer:?}");
    let applied =
        cluster.members[leader].log.submit(vec![sign(&cluster.ca_key, genesis(&cluster))]).await.unwrap();
    assert_eq!(applied.outcomes, vec![Ok(Applied::Done)]);
    let voters: Vec<&Member> = cluster.members[..3].iter().collect();
    converge(&voters).await;
    other.shutdown().await;
}

/// A new node, which knows no voters yet, takes a snapshot only from the
/// leader its vote names, and only once another replica confirms it: one
/// from a voter naming another leader is refused, and so is the leader's
/// own that no other replica holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_takes_a_snapshot_only_from_the_leader_and_confirmed() {
    let (_other_dir, other, bytes, meta) = another_logs_image().await;
    let cluster = cluster().await;
    let (leader, follower) = leader_and_follower(&cluster.members[..3]).await;
    let key = NodeKey::generate().unwrap();
    let config =
        PolicyLogConfig::new(cluster._dir.path().join("node-new"), key.node_id(), "mem/new".to_string());
    let new = PolicyLog::start(config, cluster.network.transport(key.node_id())).await.unwrap();
    cluster.network.register(new.clone());
    let fresh = Member { key, certificate_der: Vec::new(), log: new };
    let leader_id = civmesh_consensus::raft_node_id(&cluster.members[leader].key.node_id());
    let forged = whole_snapshot(cluster.members[leader].log.status().term, leader_id, meta, bytes);
    let (_, refusal) = ask(&fresh, &cluster.members[follower].key.node_id(), &forged).await;
    assert_eq!(refusal, Some("raft_sender_not_leader"));
    let (answer, refusal) = ask(&fresh, &cluster.members[leader].key.node_id(), &forged).await;
    assert_eq!(refusal, Some("raft_snapshot_unconfirmed"), "{answer:?}");
    assert_eq!(fresh.log.status().applied_index, 0, "nothing installed");
    other.shutdown().await;
}

/// Sends `request` to `member` as `sender`: the decoded answer, and the
/// refusal's code if it was refused.
async fn ask(
    member: &Member,
    sender: &civmesh_certs::NodeId,
    request: &civmesh_consensus::PeerRequest,
) -> (civmesh_consensus::PeerResponse, Option<&'static str>) {
    use civmesh_certs::codec;
    let answer = member.log.handle_peer_request(sender, &codec::encode(request).unwrap()).await;
    let decoded = codec::decode_exact(&answer.bytes, civmesh_consensus::PEER_MESSAGE_BYTES_MAX).unwrap();
    (decoded, answer.refusal.map(|refusal| refusal.code()))
}

#[test]
fn raft_sender_rule() {
    use civmesh_consensus::{check_raft_sender, RaftRefusal, RaftRpc};
    let voters = std::collections::BTreeSet::from([1, 2, 3]);
    let none = std::collections::BTreeSet::new();
    let cases = [
        (&voters, 1, RaftRpc::FromLeader(1), Ok(())),
        (&voters, 2, RaftRpc::FromCandidate(2), Ok(())),
        (&voters, 4, RaftRpc::FromLeader(4), Err(RaftRefusal::NotVoter)),
        (&voters, 4, RaftRpc::FromCandidate(4), Err(RaftRefusal::NotVoter)),
        (&voters, 2, RaftRpc::FromLeader(1), Err(RaftRefusal::NotLeader)),
        (&voters, 2, RaftRpc::FromCandidate(3), Err(RaftRefusal::NotCandidate)),
        // A node that knows no voters yet trusts what its gate admitted.
        (&none, 9, RaftRpc::FromLeader(9), Ok(())),
    ];
    for (voters, sender, rpc, expected) in cases {
        assert_eq!(check_raft_sender(voters, sender, rpc), expected, "{sender} {rpc:?}");
    }
}

/// A member's log store, opened again after a stop, knows the time of its
/// last entry (so a restarted leader never stamps an earlier one) and the
/// committed index it had, and its state comes back from the state image
/// when the log behind it was purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_log_knows_its_last_entry_time_and_commit_and_state() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::generate().unwrap();
    let network = InProcessNetwork::default();
    let mut config = PolicyLogConfig::new(dir.path().join("node"), key.node_id(), "mem/0".to_string());
    (config.snapshot_after_entries, config.entries_kept_after_snapshot) = (3, 0);
    let log = PolicyLog::start(config, network.transport(key.node_id())).await.unwrap();
    log.initialize(vec![log.me().clone()]).await.unwrap();
    wait_until("a leader", || (log.status().role == "leader").then_some(())).await;
    // Any command is an entry; these are rejected, as there is no genesis.
    for _ in 0..5 {
        let command = sign(&key, Command::RevokeGrant { grant_id: 1, reason: "r".into() });
        let result = log.submit(vec![command]).await.unwrap();
        assert_eq!(result.outcomes[0].as_ref().unwrap_err().code, RejectionCode::GenesisOrder);
    }
    wait_until("a snapshot and a purge", || (log.status().purged_index > 0).then_some(())).await;
    let imaged = log.status().snapshot_index;
    let committed = log.status().committed_index;
    assert!(committed > 0);
    let entry_time_ms = log.state().read(|applied| applied.policy.last_entry_time_ms);
    assert!(entry_time_ms > 0);
    log.shutdown().await;
    drop((log, network));
    let reopened =
        wait_until("the store to open again", || civmesh_consensus::open(&dir.path().join("node")).ok())
            .await;
    let (store, state_machine) = reopened;
    assert_eq!(store.latest_entry_time_ms().load(Ordering::Acquire), entry_time_ms);
    assert_eq!(store.committed_index().load(Ordering::Acquire), committed);
    let mut store = store;
    let saved = openraft::storage::RaftLogStorage::read_committed(&mut store).await.unwrap();
    assert_eq!(saved.map(|log_id| log_id.index), Some(committed));
    // Before openraft re-applies anything: the state of the latest image
    // (at or after the first one seen, which may not be the last built).
    let (applied_index, commands) =
        state_machine.shared_state().read(|applied| (applied.applied_index, applied.policy.commands_applied));
    assert!((imaged..=committed).contains(&applied_index), "applied {applied_index}, imaged {imaged}");
    assert!(commands > 0, "{commands} commands in the image");
}
