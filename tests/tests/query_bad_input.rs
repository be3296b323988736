//! Bad input on the query protocol, sent by a real libp2p peer to a real
//! owner process: a replayed query, garbage, an oversized message and a
//! stranger's connection are all refused, nothing is released for them, and
//! the owner keeps serving. A member asking for its pair key gets its own
//! organisation's; a stranger gets none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, SignedEnvelope};
use civmesh_consensus::RaftPeer;
use civmesh_node::query::{
    PairKeyAnswer, QueryAnswer, QueryProtocolMessage, QueryWire, SignedAnswerBody, QUERY_MESSAGE_BYTES_MAX,
};
use civmesh_node::swarm::{self, Protocol, SwarmClient};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::{Command, QueryHeader};
use civmesh_testnet::city::{
    city, enterprise_dataset, street_inspection_grant, ENTERPRISES, STREET_INSPECTION,
};
use civmesh_testnet::Testnet;

const KEY: &str = "91310106A";

fn query_bytes(street: &NodeKey, secret: &[u8], grant: u64) -> Vec<u8> {
    query_bytes_with_keys(street, secret, grant, &[KEY])
}

/// A query whose signed header names [`KEY`]'s subject hash, with `keys`
/// as the plain keys beside it.
fn query_bytes_with_keys(street: &NodeKey, secret: &[u8], grant: u64, keys: &[&str]) -> Vec<u8> {
    let header = QueryHeader {
        dataset: ENTERPRISES.into(),
        subjects: vec![SubjectKeyHash::of(secret, KEY)],
        fields: vec!["name".into()],
        purpose: STREET_INSPECTION.into(),
        grant: Some(grant),
    };
    let envelope = SignedEnvelope::sign(street, &header, now_unix_millis()).unwrap();
    let keys = keys.iter().map(ToString::to_string).collect();
    let wire = QueryWire { header: envelope.to_bytes().unwrap(), keys };
    codec::encode(&QueryProtocolMessage::Query(wire)).unwrap()
}

fn answer_of(bytes: &[u8]) -> QueryAnswer {
    SignedEnvelope::<SignedAnswerBody>::from_bytes(bytes).unwrap().verify_signature().unwrap().payload.answer
}

async fn client(key: &NodeKey, owner: &RaftPeer) -> (SwarmClient, tokio::sync::watch::Sender<bool>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (swarm, _inbound) =
        swarm::start(key.to_libp2p_keypair().unwrap(), "/ip4/127.0.0.1/tcp/0", stopped).unwrap();
    swarm.set_allowed(BTreeSet::from([owner.node_id.to_peer_id().unwrap()])).await;
    (swarm, stop)
}

/// Asks with a freshly signed query on a fresh connection until an answer
/// comes back (a connection may close under a request; a legitimate client
/// then asks again). Returns the query sent, its answer and the attempts.
async fn ask_until_answered(
    street: &NodeKey,
    secret: &[u8],
    grant: u64,
    owner: &RaftPeer,
    timeout: Duration,
) -> (Vec<u8>, Vec<u8>, usize) {
    for attempt in 1..=5 {
        let (swarm, _stop) = client(street, owner).await;
        let query = query_bytes(street, secret, grant);
        if let Ok(answer) = swarm.request_on(Protocol::Query, owner, query.clone(), timeout).await {
            return (query, answer, attempt);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the owner did not answer in 5 attempts");
}

/// The owner gives the street its own organisation's pair key, `expected`,
/// signed, and nothing else; returns the request, for a stranger to try.
async fn check_pair_key(
    swarm: &SwarmClient,
    owner: &RaftPeer,
    expected: &[u8],
    timeout: Duration,
) -> Vec<u8> {
    let request = codec::encode(&QueryProtocolMessage::PairKey).unwrap();
    let answer = swarm.request_on(Protocol::Query, owner, request.clone(), timeout).await.unwrap();
    let signed = SignedEnvelope::<PairKeyAnswer>::from_bytes(&answer).unwrap().verify_signature().unwrap();
    assert_eq!(signed.signer, owner.node_id);
    assert_eq!(signed.payload, PairKeyAnswer::Granted(expected.try_into().unwrap()));
    request
}

#[test]
fn replayed_garbage_oversized_and_stranger_queries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::launch(dir.path(), &city(&["hub", "market", "civil", "jingansi"])).unwrap();
    let market = NodeKey::load(&net.nodes[1].data_dir.join("node.key")).unwrap();
    let sign = |command: Command| SignedEnvelope::sign(&market, &command, now_unix_millis()).unwrap();
    net.api(1).unwrap().submit(&[sign(Command::PublishDataset(enterprise_dataset()))]).unwrap();
    let grant = street_inspection_grant("street/jingansi", &["name"], &[]).unwrap();
    let issued = net.api(1).unwrap().submit(&[sign(Command::IssueGrant(grant))]).unwrap();
    let Ok(civmesh_policy::Applied::GrantIssued(grant_id)) = issued.outcomes[0] else {
        panic!("{:?}", issued.outcomes)
    };
    let csv = dir.path().join("one.csv");
    std::fs::write(&csv, format!("credit_code,name,registered_address,operating_address,legal_rep_phone,district,street\n{KEY},Jing'an Tea House,,,,,\n")).unwrap();
    net.import(1, ENTERPRISES, &csv).unwrap();
    let _: serde_json::Value = net.api(1).unwrap().get("/v1/read-index").unwrap();

    // The test speaks as the street, whose own node is stopped.
    let street_dir = net.nodes[3].data_dir.clone();
    net.stop(3).unwrap();
    let street = NodeKey::load(&street_dir.join("node.key")).unwrap();
    // The key the market gives the street's organisation for its subjects.
    let secret = net.pair_key(1, 3).unwrap().to_vec();
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.nodes[1].data_dir.join("node.json")).unwrap()).unwrap();
    let owner = RaftPeer {
        node_id: net.nodes[1].peer_id.parse::<NodeId>().unwrap(),
        address: runtime["p2p_addresses"][0].as_str().unwrap().to_string(),
    };
    let timeout = Duration::from_secs(15);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fresh_attempts = runtime.block_on(async {
        let (query, first, first_attempts) =
            ask_until_answered(&street, &secret, grant_id, &owner, timeout).await;
        assert!(matches!(answer_of(&first), QueryAnswer::Released { .. }), "{:?}", answer_of(&first));
        let (swarm, _stop) = client(&street, &owner).await;

        let mut replayed = None;
        for _ in 0..5 {
            // The same signed query again, until it gets through.
            let (swarm, _stop) = client(&street, &owner).await;
            if let Ok(answer) = swarm.request_on(Protocol::Query, &owner, query.clone(), timeout).await {
                replayed = Some(answer);
                break;
            }
        }
        let replayed = replayed.expect("the replayed query got through to the owner");
        match answer_of(&replayed) {
            QueryAnswer::Refused { reason } => assert!(reason.contains("replay"), "{reason}"),
            other => panic!("a replayed query was answered: {other:?}"),
        }

        // Plain keys that are not the ones whose hashes the street signed.
        let swapped = query_bytes_with_keys(&street, &secret, grant_id, &["91310106Z"]);
        let answer = swarm.request_on(Protocol::Query, &owner, swapped, timeout).await.unwrap();
        match answer_of(&answer) {
            QueryAnswer::Refused { reason } => assert!(reason.contains("do not match"), "{reason}"),
            other => panic!("keys that do not match their signed hashes were answered: {other:?}"),
        }

        let pair_key_request = check_pair_key(&swarm, &owner, &secret, timeout).await;

        let garbage =
            swarm.request_on(Protocol::Query, &owner, b"not a query".to_vec(), timeout).await.unwrap();
        assert!(garbage.is_empty(), "garbage got an answer");
        let oversized = vec![0u8; QUERY_MESSAGE_BYTES_MAX + 1];
        let answer = swarm.request_on(Protocol::Query, &owner, oversized, timeout).await.unwrap();
        assert!(answer.is_empty(), "an oversized message got an answer");

        // A stranger with a key of its own is not admitted at all.
        let stranger = NodeKey::generate().unwrap();
        let (stranger_swarm, _stop_stranger) = client(&stranger, &owner).await;
        let refused = stranger_swarm
            .request_on(Protocol::Query, &owner, query_bytes(&stranger, &secret, grant_id), timeout)
            .await;
        assert!(refused.is_err(), "a non-member was answered");
        let refused = stranger_swarm.request_on(Protocol::Query, &owner, pair_key_request, timeout).await;
        assert!(refused.is_err(), "a non-member was given a pair key");

        // The owner still serves.
        drop(swarm);
        let (_, fresh, fresh_attempts) =
            ask_until_answered(&street, &secret, grant_id, &owner, timeout).await;
        assert!(matches!(answer_of(&fresh), QueryAnswer::Released { .. }));
        first_attempts + fresh_attempts
    });
    // Only answered queries were logged: the first and the fresh one(s);
    // nothing for the replay, the swapped keys, the garbage, the oversized
    // message or the stranger.
    let log = net.access_log(1).unwrap();
    assert!(log.len() >= 2 && log.len() <= fresh_attempts, "{log:?}");
    assert!(log
        .iter()
        .all(|entry| entry["outcome"] == "permit" && entry["requester"] == net.nodes[3].peer_id.as_str()));
}
