//! A hostile member, for red-team tests: a real libp2p peer that holds a
//! member's own valid key (loaded from that member's data directory), dials
//! any node of a [`Testnet`] and sends whatever bytes it likes on
//! `/civmesh/raft/1`, `/civmesh/query/1` and `/civmesh/correction/1`. The
//! nodes see a member they admit, running code they did not write.
//!
//! It also forges what such a member would: Raft messages naming itself as
//! candidate or leader, and commands, queries and correction outcomes
//! signed with its key. The answers are decoded as the protocols define
//! them; whether a node refused is for the test to judge.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use civmesh_certs::{codec, now_unix_millis, NodeId, NodeKey, OrgId, SignedEnvelope};
use civmesh_consensus::network::{PeerRequest, PeerResponse, TransportError, PEER_MESSAGE_BYTES_MAX};
use civmesh_consensus::{raft_node_id, ApplyResult, RaftNodeId, RaftPeer, SubmitError, TypeConfig};
use civmesh_node::corrections::{CorrectionAck, CorrectionMessage, CORRECTION_MESSAGE_BYTES_MAX};
use civmesh_node::query::{
    QueryAnswer, QueryProtocolMessage, QueryWire, SignedAnswerBody, QUERY_MESSAGE_BYTES_MAX,
};
use civmesh_node::swarm::{self, Protocol, SwarmClient};
use civmesh_policy::model::SubjectKeyHash;
use civmesh_policy::subject_keys::SubjectLookup;
use civmesh_policy::{Command, QueryHeader, SignedCommand};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};

use crate::{wait_until, Testnet};

/// How often one message is sent before a transport failure is final (a
/// connection may close under a request; a persistent attacker retries).
pub const HOSTILE_SEND_ATTEMPTS_MAX: usize = 5;
/// How long the hostile peer waits for one answer.
pub const HOSTILE_ANSWER_TIMEOUT_MS: u64 = 15_000;
/// The pause between attempts after a transport failure.
pub const HOSTILE_RETRY_PAUSE_MS: u64 = 200;
/// The libp2p address the hostile peer listens on (any free port).
const HOSTILE_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// A member's key in hostile hands.
pub struct HostilePeer {
    key: Arc<NodeKey>,
    org: OrgId,
    federation_secret: Vec<u8>,
    runtime: tokio::runtime::Runtime,
}

impl HostilePeer {
    /// Node `index` of `net`, turned hostile: its `node.key`, and (to hash
    /// subjects as the owners it asks would give it the keys to) the CA's
    /// subject-key secret.
    pub fn of(net: &Testnet, index: usize) -> anyhow::Result<Self> {
        let data_dir = &net.nodes[index].data_dir;
        let key = NodeKey::load(&data_dir.join("node.key"))
            .with_context(|| format!("loading the key in {}", data_dir.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(HostilePeer {
            key: Arc::new(key),
            org: OrgId::new(&net.nodes[index].spec.org)?,
            federation_secret: net.federation_secret()?,
            runtime,
        })
    }

    /// The key.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// Its node id (PeerId).
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// Its Raft id.
    pub fn raft_id(&self) -> RaftNodeId {
        raft_node_id(&self.key.node_id())
    }

    /// The keyed hash of a subject key in this member's requests to
    /// `owner`: under the pair key `owner` gives this member's organisation.
    pub fn subject_at(&self, owner: &OrgId, record_key: &str) -> SubjectKeyHash {
        SubjectLookup::new(&self.federation_secret, record_key).hash(owner, &self.org)
    }

    /// Signs `payload` now, with a fresh nonce.
    pub fn sign<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        payload: &T,
    ) -> anyhow::Result<SignedEnvelope<T>> {
        Ok(SignedEnvelope::sign(&self.key, payload, now_unix_millis())?)
    }

    /// Signs a policy command now.
    pub fn sign_command(&self, command: &Command) -> anyhow::Result<SignedCommand> {
        self.sign(command)
    }

    /// Sends `bytes` on `protocol` to `target` from a fresh connection and
    /// returns the raw answer; retries transport failures a bounded number
    /// of times. An empty answer is what a node sends for bytes it drops.
    pub fn send(&self, protocol: Protocol, target: &RaftPeer, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut last_error = None;
        for _ in 0..HOSTILE_SEND_ATTEMPTS_MAX {
            match self.send_once(protocol, target, bytes) {
                Ok(answer) => return Ok(answer),
                Err(error) => last_error = Some(error),
            }
            std::thread::sleep(Duration::from_millis(HOSTILE_RETRY_PAUSE_MS));
        }
        Err(anyhow::anyhow!(
            "no answer from {target} in {HOSTILE_SEND_ATTEMPTS_MAX} attempts: {}",
            last_error.map(|error| error.to_string()).unwrap_or_default()
        ))
    }

    /// [`HostilePeer::send`], once: a transport failure is returned as is.
    pub fn send_once(
        &self,
        protocol: Protocol,
        target: &RaftPeer,
        bytes: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let timeout = Duration::from_millis(HOSTILE_ANSWER_TIMEOUT_MS);
        self.runtime.block_on(async {
            let (client, stop) = self.connect(target).await?;
            let answer = client.request_on(protocol, target, bytes.to_vec(), timeout).await;
            let _ = stop.send(true);
            answer
        })
    }

    /// Starts a swarm with this key that admits only `target`. The swarm
    /// stops when the returned sender is sent `true` or dropped; requests
    /// the target sends to it are dropped (the target sees a failure).
    async fn connect(
        &self,
        target: &RaftPeer,
    ) -> Result<(SwarmClient, tokio::sync::watch::Sender<bool>), TransportError> {
        let unreachable = |error: String| TransportError::Unreachable(error);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let keypair = self.key.to_libp2p_keypair().map_err(|error| unreachable(error.to_string()))?;
        let (client, inbound) =
            swarm::start(keypair, HOSTILE_LISTEN, stopped).map_err(|error| unreachable(error.to_string()))?;
        drop(inbound);
        let peer = target.node_id.to_peer_id().map_err(|error| unreachable(error.to_string()))?;
        client.set_allowed(BTreeSet::from([peer])).await;
        Ok((client, stop))
    }

    /// Sends `count` messages on `protocol` to `target` over one connection,
    /// at most `in_flight_max` at a time, as fast as answers come back, and
    /// starts no new one once `budget` has passed. `message(i)` makes the
    /// i-th message just before it is sent (so signed messages are fresh).
    /// The answers of those sent, in order; a message the target dropped or
    /// did not answer in time is a transport error.
    pub fn flood(
        &self,
        protocol: Protocol,
        target: &RaftPeer,
        count: usize,
        in_flight_max: usize,
        budget: Duration,
        message: impl Fn(usize) -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Vec<Result<Vec<u8>, TransportError>>> {
        let timeout = Duration::from_millis(HOSTILE_ANSWER_TIMEOUT_MS);
        let deadline = tokio::time::Instant::now() + budget;
        self.runtime.block_on(async {
            let (client, stop) = self.connect(target).await?;
            let permits = Arc::new(tokio::sync::Semaphore::new(in_flight_max.max(1)));
            let mut tasks = Vec::with_capacity(count);
            for index in 0..count {
                let permit = permits.clone().acquire_owned().await?;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let bytes = message(index)?;
                let (client, target) = (client.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    let answer = client.request_on(protocol, &target, bytes, timeout).await;
                    drop(permit);
                    answer
                }));
            }
            let mut answers = Vec::with_capacity(count);
            for task in tasks {
                answers.push(task.await?);
            }
            let _ = stop.send(true);
            Ok(answers)
        })
    }

    /// Sends a policy-log message on `/civmesh/raft/1` and decodes the answer.
    pub fn raft(&self, target: &RaftPeer, request: &PeerRequest) -> anyhow::Result<PeerResponse> {
        let answer = self.send(Protocol::Raft, target, &codec::encode(request)?)?;
        Ok(codec::decode_exact(&answer, PEER_MESSAGE_BYTES_MAX)?)
    }

    /// `PeerRequest::Submit` of `commands` to `target`: the outcome as the
    /// leader reports it.
    pub fn submit(
        &self,
        target: &RaftPeer,
        commands: Vec<SignedCommand>,
    ) -> anyhow::Result<Result<ApplyResult, SubmitError>> {
        match self.raft(target, &PeerRequest::Submit(commands))? {
            PeerResponse::Submit(result) => Ok(result),
            PeerResponse::Refused(reason) => Ok(Err(SubmitError::Refused(reason))),
            other => anyhow::bail!("unexpected answer to a submission: {other:?}"),
        }
    }

    /// Sends a message on `/civmesh/correction/1` and decodes the answer.
    pub fn correction(
        &self,
        target: &RaftPeer,
        message: &CorrectionMessage,
    ) -> anyhow::Result<CorrectionAck> {
        let answer = self.send(Protocol::Correction, target, &codec::encode(message)?)?;
        Ok(codec::decode_exact(&answer, CORRECTION_MESSAGE_BYTES_MAX)?)
    }

    /// A query message (`QueryProtocolMessage::Query`) with `header`,
    /// freshly signed, and the plain `keys` beside it.
    pub fn query_message(&self, header: &QueryHeader, keys: &[String]) -> anyhow::Result<Vec<u8>> {
        let envelope = self.sign(header)?;
        let wire = QueryWire { header: envelope.to_bytes()?, keys: keys.to_vec() };
        Ok(codec::encode(&QueryProtocolMessage::Query(wire))?)
    }

    /// A Raft vote request naming this member as candidate at `term`,
    /// claiming a log that ends at `last_index` in that term (longer than
    /// anyone's, so a voter that weighs it at all would grant it).
    pub fn forged_vote(&self, term: u64, last_index: u64) -> PeerRequest {
        let last_log_id = LogId::new(CommittedLeaderId::new(term, self.raft_id()), last_index);
        PeerRequest::Vote(VoteRequest {
            vote: Vote::new(term, self.raft_id()),
            last_log_id: Some(last_log_id),
        })
    }

    /// An empty append (a heartbeat) naming `leader` as the committed
    /// leader at `term`: from anyone but that leader, a forgery.
    pub fn forged_heartbeat(&self, term: u64, leader: RaftNodeId) -> PeerRequest {
        let request: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
            vote: Vote::new_committed(term, leader),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        PeerRequest::AppendEntries(request)
    }

    /// The first chunk of a snapshot this member claims to send as leader
    /// at `term`, covering the log up to `last_index`. It is not the last
    /// chunk, so even a node that accepts it installs nothing yet.
    pub fn forged_snapshot_chunk(&self, term: u64, last_index: u64) -> PeerRequest {
        let last_log_id = LogId::new(CommittedLeaderId::new(term, self.raft_id()), last_index);
        let request: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest {
            vote: Vote::new_committed(term, self.raft_id()),
            meta: SnapshotMeta {
                last_log_id: Some(last_log_id),
                last_membership: StoredMembership::default(),
                snapshot_id: format!("hostile-{term}-{last_index}"),
            },
            offset: 0,
            data: b"not a snapshot".to_vec(),
            done: false,
        };
        PeerRequest::InstallSnapshot(request)
    }
}

/// Decodes an owner's answer to a query and checks that `owner` signed it.
pub fn decode_answer(bytes: &[u8], owner: &NodeId) -> anyhow::Result<QueryAnswer> {
    anyhow::ensure!(bytes.len() <= QUERY_MESSAGE_BYTES_MAX, "the answer is over the limit");
    let verified = SignedEnvelope::<SignedAnswerBody>::from_bytes(bytes)?.verify_signature()?;
    anyhow::ensure!(verified.signer == *owner, "the answer is signed by {}, not the owner", verified.signer);
    Ok(verified.payload.answer)
}

/// The stable name of a code (a rejection code, a reason code) as it is
/// serialised: `not_authorised`, `replayed`, ...
pub fn code_name<T: serde::Serialize>(code: &T) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(error) => format!("<{error}>"),
    }
}

impl Testnet {
    /// Node `index` as Raft and libp2p know it: its id and the address it
    /// listens on (from its `node.json`, written when it last started).
    pub fn raft_peer(&self, index: usize) -> anyhow::Result<RaftPeer> {
        let node = &self.nodes[index];
        let path = node.data_dir.join(civmesh_node::run::RUNTIME_FILE_NAME);
        let runtime: civmesh_node::run::RuntimeInfo = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let address =
            runtime.p2p_addresses.first().with_context(|| format!("{} has no address", node.spec.name))?;
        Ok(RaftPeer { node_id: node.peer_id.parse()?, address: address.clone() })
    }

    /// Waits until every running voter agrees on one leader at one term,
    /// and returns that leader's index and the term.
    pub fn stable_leader(&self, timeout: Duration) -> anyhow::Result<(usize, u64)> {
        wait_until("the voters to agree on a leader", timeout, || {
            let mut views = Vec::new();
            for index in (0..self.nodes.len()).filter(|index| self.nodes[*index].spec.voter) {
                if !self.is_running(index) {
                    continue;
                }
                let status = self.api(index).ok()?.status().ok()?.raft;
                views.push((index, status.role, status.term, status.leader?));
            }
            let (_, _, term, leader) = views.first()?.clone();
            let agreed = views.iter().all(|(_, role, view_term, view_leader)| {
                *view_term == term && *view_leader == leader && matches!(role.as_str(), "leader" | "follower")
            });
            let leader_index =
                views.iter().find(|(_, role, ..)| role == "leader").map(|(index, ..)| *index)?;
            (agreed && self.nodes[leader_index].peer_id == leader).then_some((leader_index, term))
        })
    }

    /// Waits until every running node has applied the same index with the
    /// same state hash; returns that index and hash.
    pub fn converged(&self, timeout: Duration) -> anyhow::Result<(u64, String)> {
        let mut last_seen = Vec::new();
        let outcome = wait_until("every running replica to reach the same state", timeout, || {
            last_seen.clear();
            for index in (0..self.nodes.len()).filter(|index| self.is_running(*index)) {
                let status = self.api(index).and_then(|api| api.status());
                last_seen
                    .push((index, status.as_ref().map(|s| s.raft.clone()).map_err(|e| format!("{e:#}"))));
            }
            let seen: BTreeSet<(u64, String)> = last_seen
                .iter()
                .map(|(_, status)| status.as_ref().ok().map(|s| (s.applied_index, s.state_digest.clone())))
                .collect::<Option<_>>()?;
            match seen.len() {
                1 => seen.into_iter().next(),
                _ => None,
            }
        });
        outcome.with_context(|| {
            let views: Vec<String> = last_seen
                .iter()
                .map(|(index, status)| match status {
                    Ok(s) => format!(
                        "{}: {} term {} applied {} committed {} hash {}",
                        self.nodes[*index].spec.name,
                        s.role,
                        s.term,
                        s.applied_index,
                        s.committed_index,
                        &s.state_digest[..s.state_digest.len().min(12)]
                    ),
                    Err(error) => format!("{}: {error}", self.nodes[*index].spec.name),
                })
                .collect();
            format!("last seen: {}", views.join("; "))
        })
    }
}
