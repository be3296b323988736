//! A running member of the policy log: the Raft node, its storage, and the
//! API the node uses to submit commands, read state and manage the cluster.
//! Writes and membership changes made on a follower are forwarded to the
//! leader over the [`Transport`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civmesh_certs::{codec, now_unix_millis, NodeId};
use civmesh_policy::SignedCommand;
use openraft::error::ClientWriteError;
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::network::{call, NetworkFactory, PeerRequest, PeerResponse, Transport, PEER_MESSAGE_BYTES_MAX};
use crate::store::{open, OpenError, SharedState};
use crate::timings::Stage;
use crate::types::{entry_commands, raft_node_id, ApplyResult, LogPayload, Raft, RaftNodeId, RaftPeer};

/// How many times a write is retried while the leader is unknown or moving.
pub const SUBMIT_ATTEMPTS_MAX: u32 = 20;
/// The pause between those attempts.
pub const SUBMIT_RETRY_BACKOFF_MS: u64 = 100;
/// How long a forwarded request may take.
pub const FORWARD_TIMEOUT_MS: u64 = 5_000;
/// How long a leader waits for a proposal to commit before giving up.
pub const COMMIT_TIMEOUT_MS: u64 = 3_000;
/// How long one snapshot chunk may take to answer, the last one's check
/// and install included (openraft's default, 200 ms, is too short for a
/// state image of tens of MB); as long as a peer request may take.
pub const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// The most commands one submission may carry.
pub const SUBMIT_COMMANDS_MAX: usize = 4096;
/// The most bytes of signed commands one submission (one log entry) may
/// carry: an entry alone fits an `AppendEntries` of
/// `APPEND_ENTRIES_BYTES_MAX`, with room for its framing.
pub const SUBMIT_BYTES_MAX: usize = 240 * 1024;

/// Tuning of one policy-log member.
#[derive(Debug, Clone)]
pub struct PolicyLogConfig {
    /// Where RocksDB keeps the log and state.
    pub directory: PathBuf,
    /// This node.
    pub node_id: NodeId,
    /// Where peers dial this node (a libp2p multiaddr).
    pub address: String,
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Election timeout range.
    pub election_timeout_min_ms: u64,
    /// Election timeout range.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the latest snapshot.
    pub entries_kept_after_snapshot: u64,
    /// The largest snapshot chunk this node sends, in bytes.
    pub snapshot_chunk_bytes_max: u64,
}

impl PolicyLogConfig {
    /// Defaults suitable for a LAN or loopback federation.
    pub fn new(directory: PathBuf, node_id: NodeId, address: String) -> Self {
        PolicyLogConfig {
            directory,
            node_id,
            address,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_entries: 5_000,
            entries_kept_after_snapshot: 1_000,
            snapshot_chunk_bytes_max: 4 * 1024 * 1024,
        }
    }
}

/// Why the member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The storage did not open.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The Raft configuration is invalid.
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    /// openraft failed to start.
    #[error("Raft failed to start: {0}")]
    Raft(String),
}

/// Why a write or a cluster change did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SubmitError {
    /// No leader could be reached within the retry budget; nothing was
    /// committed (or it is unknown whether it was, after a timeout).
    #[error("no leader reachable: {0}")]
    NoLeader(String),
    /// The leader proposed the entry but no quorum acknowledged it in time:
    /// it may still commit later, or never. Nothing was acknowledged.
    #[error("not committed within {0} ms (no quorum reachable)")]
    CommitTimeout(u64),
    /// The request was refused before reaching Raft.
    #[error("refused: {0}")]
    Refused(String),
    /// Raft reported an error.
    #[error("raft: {0}")]
    Raft(String),
}

/// What a member answers a peer: the encoded [`PeerResponse`], and the
/// refusal, if the sender was not allowed to send it.
#[derive(Debug)]
pub struct PeerAnswer {
    /// The encoded answer.
    pub bytes: Vec<u8>,
    /// Why a Raft RPC was refused: a security event.
    pub refusal: Option<RaftRefusal>,
}

/// Why a Raft RPC from a peer was refused. The `Display` form starts with
/// the stable code (`raft_sender_not_voter`, ...), which the sender sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RaftRefusal {
    /// The sender is not a voter of this node's membership.
    #[error("raft_sender_not_voter: only current voters send Raft RPCs")]
    NotVoter,
    /// `AppendEntries` or `InstallSnapshot` names another node as leader.
    #[error("raft_sender_not_leader: the RPC's vote names another node as leader")]
    NotLeader,
    /// A vote request names another node as candidate.
    #[error("raft_sender_not_candidate: the vote request names another node as candidate")]
    NotCandidate,
    /// An `InstallSnapshot` chunk ends past the largest state image a node
    /// reads (`IMAGE_FILE_BYTES_MAX`): written at its offset, it would
    /// make the receiver hold that many bytes.
    #[error("raft_snapshot_past_bound: the snapshot chunk ends past the state image bound")]
    SnapshotPastBound,
    /// A whole snapshot does not decode as a state image, or is not the one
    /// its metadata describes: nothing is installed.
    #[error("raft_snapshot_corrupt: the snapshot does not decode as the state image its metadata describes")]
    SnapshotCorrupt,
    /// No other replica (neither this node nor the sender) holds an image
    /// of the same bytes at the snapshot's index: nothing is installed.
    #[error("raft_snapshot_unconfirmed: no other replica confirms the snapshot")]
    SnapshotUnconfirmed,
}

impl RaftRefusal {
    /// The stable code, for metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            RaftRefusal::NotVoter => "raft_sender_not_voter",
            RaftRefusal::NotLeader => "raft_sender_not_leader",
            RaftRefusal::NotCandidate => "raft_sender_not_candidate",
            RaftRefusal::SnapshotPastBound => "raft_snapshot_past_bound",
            RaftRefusal::SnapshotCorrupt => "raft_snapshot_corrupt",
            RaftRefusal::SnapshotUnconfirmed => "raft_snapshot_unconfirmed",
        }
    }
}

/// Whom a Raft RPC claims to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpc {
    /// `AppendEntries` or `InstallSnapshot`, with the leader its vote names.
    FromLeader(RaftNodeId),
    /// A vote request, with the candidate its vote names.
    FromCandidate(RaftNodeId),
}

/// Whether `sender` may send a Raft RPC: it must be one of `voters` and be
/// the leader (or candidate) the RPC's vote names. A node that knows no
/// voters yet (new, waiting to be added) accepts any sender its gate
/// admitted: before genesis the gate admits only its operator's bootstrap
/// peers.
pub fn check_raft_sender(
    voters: &BTreeSet<RaftNodeId>,
    sender: RaftNodeId,
    rpc: RaftRpc,
) -> Result<(), RaftRefusal> {
    if voters.is_empty() {
        return Ok(());
    }
    if !voters.contains(&sender) {
        return Err(RaftRefusal::NotVoter);
    }
    match rpc {
        RaftRpc::FromLeader(leader) if leader != sender => Err(RaftRefusal::NotLeader),
        RaftRpc::FromCandidate(candidate) if candidate != sender => Err(RaftRefusal::NotCandidate),
        _ => Ok(()),
    }
}

/// A member's view of the cluster, for `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node_id: String,
    /// Its Raft id.
    pub raft_id: RaftNodeId,
    /// leader, follower, candidate or learner.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<String>,
    /// The last log index this node has.
    pub last_log_index: u64,
    /// The last committed index this node knows.
    pub committed_index: u64,
    /// The last index applied to its state.
    pub applied_index: u64,
    /// The last index covered by this node's latest snapshot (built or installed).
    pub snapshot_index: u64,
    /// The last index purged from this node's log.
    pub purged_index: u64,
    /// The voters.
    pub voters: Vec<String>,
    /// The learners.
    pub learners: Vec<String>,
    /// The applied state's digest ([`civmesh_policy::PolicyState::digest`]),
    /// hex: equal on replicas at the same applied index.
    pub state_digest: String,
    /// How long the latest snapshot built here took to encode and write, in
    /// ms (0 before any).
    pub snapshot_build_ms: u64,
    /// Its bytes.
    pub snapshot_bytes: u64,
}

/// A running member of the policy log.
#[derive(Clone)]
pub struct PolicyLog<T: Transport> {
    raft: Raft,
    state: SharedState,
    history: crate::history::History,
    snapshot_stats: Arc<crate::store::SnapshotStats>,
    verdicts: crate::verdicts::Verdicts,
    stage_times: Arc<crate::timings::StageTimes>,
    committed_index: Arc<AtomicU64>,
    latest_entry_time_ms: Arc<AtomicU64>,
    last_proposed_ms: Arc<tokio::sync::Mutex<u64>>,
    transport: T,
    me: RaftPeer,
    snapshot_receiver: crate::snapshot_receiver::SharedReceiver,
    images: crate::snapshot::ImageFiles,
}

impl<T: Transport> PolicyLog<T> {
    /// Opens the storage and starts the Raft node. A new node waits to be
    /// initialised or added; a restarted one rejoins where it was.
    pub async fn start(config: PolicyLogConfig, transport: T) -> Result<Self, StartError> {
        let raft_config = Config {
            cluster_name: "civmesh-policy-log".to_string(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            max_in_snapshot_log_to_keep: config.entries_kept_after_snapshot,
            snapshot_max_chunk_size: config.snapshot_chunk_bytes_max,
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
            max_payload_entries: 256,
            ..Config::default()
        };
        if !(1..=PEER_MESSAGE_BYTES_MAX as u64 / 2).contains(&config.snapshot_chunk_bytes_max) {
            return Err(StartError::Config("a snapshot chunk must fit a peer message".into()));
        }
        let raft_config =
            Arc::new(raft_config.validate().map_err(|error| StartError::Config(error.to_string()))?);
        let (log_store, mut state_machine) = open(&config.directory)?;
        let committed_index = log_store.committed_index();
        let latest_entry_time_ms = log_store.latest_entry_time_ms();
        let state = state_machine.shared_state();
        let history = state_machine.history();
        let snapshot_stats = state_machine.snapshot_stats();
        let verdicts = state_machine.verdicts();
        let stage_times = state_machine.stage_times();
        let snapshot_receiver = state_machine.snapshot_receiver();
        let images = state_machine.image_files();
        state_machine.snapshot_every(config.snapshot_after_entries);
        let me = RaftPeer { node_id: config.node_id, address: config.address };
        let raft = Raft::new(
            raft_node_id(&config.node_id),
            raft_config,
            NetworkFactory::new(transport.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|error| StartError::Raft(error.to_string()))?;
        Ok(PolicyLog {
            raft,
            state,
            history,
            snapshot_stats,
            verdicts,
            stage_times,
            committed_index,
            latest_entry_time_ms,
            last_proposed_ms: Arc::new(tokio::sync::Mutex::new(0)),
            transport,
            me,
            snapshot_receiver,
            images,
        })
    }

    /// The applied policy state, for local reads and decisions.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// What this replica applied and the state does not keep: every
    /// command with its outcome (for auditors), the access entries and the
    /// audit leaves.
    pub fn history(&self) -> &crate::history::History {
        &self.history
    }

    /// This member as Raft knows it.
    pub fn me(&self) -> &RaftPeer {
        &self.me
    }

    /// The Raft membership's entry for `node_id` (with its address).
    pub fn peer_of(&self, node_id: &NodeId) -> Option<RaftPeer> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.get_node(&raft_node_id(node_id)).cloned()
    }

    /// Records that every signature of `command` verifies, so this replica
    /// applies it without checking them again: only for a command this
    /// node signed over a request it verified itself; a command another
    /// node signed is ignored ([`crate::verdicts::Verdicts::vouch`]).
    pub fn vouch(&self, command: &SignedCommand) {
        self.verdicts.vouch(command, &self.me.node_id);
    }

    /// Where this node's commits spend their time, per stage, since start.
    pub fn stage_times(&self) -> Vec<(Stage, crate::timings::StageTotal)> {
        self.stage_times.read()
    }

    /// The openraft handle (metrics, waits).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Answers one encoded [`PeerRequest`] from `from`, the peer the
    /// transport authenticated. Raft RPCs are accepted only from the
    /// senders [`check_raft_sender`] allows; a refusal never reaches Raft, so
    /// it changes neither the vote nor the term, and is returned beside the
    /// answer for the node to count and log.
    pub async fn handle_peer_request(&self, from: &NodeId, bytes: &[u8]) -> PeerAnswer {
        let (response, refusal) = match codec::decode_exact::<PeerRequest>(bytes, PEER_MESSAGE_BYTES_MAX) {
            Err(error) => (PeerResponse::Refused(format!("malformed request: {error}")), None),
            Ok(request) => match self.check_sender(from, &request) {
                Err(refusal) => (PeerResponse::Refused(refusal.to_string()), Some(refusal)),
                Ok(()) => self.answer(from, request).await,
            },
        };
        PeerAnswer { bytes: codec::encode(&response).unwrap_or_default(), refusal }
    }

    fn check_sender(&self, from: &NodeId, request: &PeerRequest) -> Result<(), RaftRefusal> {
        let rpc_leader = match request {
            PeerRequest::AppendEntries(rpc) => RaftRpc::FromLeader(rpc.vote.leader_id.node_id),
            PeerRequest::InstallSnapshot(rpc) => RaftRpc::FromLeader(rpc.vote.leader_id.node_id),
            PeerRequest::Vote(rpc) => RaftRpc::FromCandidate(rpc.vote.leader_id.node_id),
            PeerRequest::Submit(_) | PeerRequest::ReadIndex | PeerRequest::ImageDigest(_) => return Ok(()),
        };
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<RaftNodeId> = membership.voter_ids().collect();
        check_raft_sender(&voters, raft_node_id(from), rpc_leader)
    }

    async fn answer(&self, from: &NodeId, request: PeerRequest) -> (PeerResponse, Option<RaftRefusal>) {
        let response = match request {
            PeerRequest::AppendEntries(rpc) => {
                // Only the leader this node follows makes it verify.
                let following = self.raft.metrics().borrow().vote == rpc.vote;
                let entries = if following { rpc.entries.as_slice() } else { &[] };
                self.verdicts.try_verify_arriving(entries.iter().flat_map(entry_commands));
                PeerResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => PeerResponse::Vote(self.raft.vote(rpc).await),
            PeerRequest::InstallSnapshot(chunk) => {
                let peers = crate::snapshot_receiver::Peers { me: self.me.node_id, from: *from };
                let receiver = &self.snapshot_receiver;
                return crate::snapshot_receiver::answer_chunk(
                    &self.raft,
                    &self.transport,
                    peers,
                    receiver,
                    chunk,
                )
                .await;
            }
            PeerRequest::ImageDigest(index) => {
                let images = self.images.clone();
                let digest = tokio::task::spawn_blocking(move || images.digest_at(index)).await;
                PeerResponse::ImageDigest(digest.ok().and_then(Result::ok).flatten())
            }
            PeerRequest::Submit(commands) => PeerResponse::Submit(self.write_as_leader(commands).await),
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(
                self.raft
                    .ensure_linearizable()
                    .await
                    .map(|log_id| log_id.map_or(0, |id| id.index))
                    .map_err(|error| error.to_string()),
            ),
        };
        (response, None)
    }

    /// Proposes `commands` if this node leads; never forwards.
    async fn write_as_leader(&self, commands: Vec<SignedCommand>) -> Result<ApplyResult, SubmitError> {
        check_submission(&commands)?;
        let started = Instant::now();
        // Only a leader can propose: a follower spends nothing on commands
        // it will refuse.
        if self.raft.metrics().borrow().current_leader == Some(raft_node_id(&self.me.node_id)) {
            self.verdicts.verify_arriving(&commands).await;
        }
        self.stage_times.record(Stage::VerifyWait, started.elapsed());
        let proposing = Instant::now();
        let receiver = {
            // Stamping and handing to Raft happen in one turn, so log order
            // is stamp order: entry times never go backwards, whatever this
            // leader's clock says or however proposals interleave (the state
            // machine rejects an entry older than the last one applied).
            let mut last_proposed_ms = self.last_proposed_ms.lock().await;
            let applied_ms = self.state.read(|applied| applied.policy.last_entry_time_ms);
            let proposed_at_ms = now_unix_millis()
                .max(self.latest_entry_time_ms.load(Ordering::Acquire))
                .max(applied_ms)
                .max(*last_proposed_ms);
            *last_proposed_ms = proposed_at_ms;
            self.raft
                .client_write_ff(LogPayload { proposed_at_ms, commands })
                .await
                .map_err(|error| SubmitError::Raft(error.to_string()))?
        };
        self.stage_times.record(Stage::Propose, proposing.elapsed());
        let committing = Instant::now();
        let answer = tokio::time::timeout(Duration::from_millis(COMMIT_TIMEOUT_MS), receiver).await;
        self.stage_times.record(Stage::Commit, committing.elapsed());
        match answer {
            Err(_) => Err(SubmitError::CommitTimeout(COMMIT_TIMEOUT_MS)),
            Ok(Err(_)) => Err(SubmitError::Raft("Raft stopped before answering".to_string())),
            Ok(Ok(Ok(response))) => Ok(response.data),
            Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => {
                Err(SubmitError::NoLeader("this node is not the leader".to_string()))
            }
            Ok(Ok(Err(error))) => Err(SubmitError::Raft(error.to_string())),
        }
    }

    /// Commits `commands` in one log entry and returns their outcomes. On a
    /// follower the commands are forwarded to the leader. Returns only once
    /// the entry is committed and applied (by the leader).
    pub async fn submit(&self, commands: Vec<SignedCommand>) -> Result<ApplyResult, SubmitError> {
        let started = Instant::now();
        let outcome = self.submit_with_retries(commands).await;
        self.stage_times.record(Stage::Submit, started.elapsed());
        outcome
    }

    async fn submit_with_retries(&self, commands: Vec<SignedCommand>) -> Result<ApplyResult, SubmitError> {
        check_submission(&commands)?;
        let mut last_error = SubmitError::NoLeader("no attempt made".to_string());
        for _ in 0..SUBMIT_ATTEMPTS_MAX {
            let leader = self.leader().await;
            let outcome = match leader {
                Some(leader) if leader.node_id == self.me.node_id => {
                    self.write_as_leader(commands.clone()).await
                }
                Some(leader) => {
                    self.forward(&leader, PeerRequest::Submit(commands.clone())).await.and_then(|answer| {
                        match answer {
                            PeerResponse::Submit(result) => result,
                            // Busy (over this node's share of the leader's
                            // handlers): retried like a leader change.
                            PeerResponse::Refused(reason) => {
                                Err(SubmitError::NoLeader(format!("the leader refused: {reason}")))
                            }
                            other => Err(SubmitError::Raft(format!("unexpected answer {other:?}"))),
                        }
                    })
                }
                None => Err(SubmitError::NoLeader("no leader known".to_string())),
            };
            match outcome {
                Err(SubmitError::NoLeader(reason)) => last_error = SubmitError::NoLeader(reason),
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(SUBMIT_RETRY_BACKOFF_MS)).await;
        }
        Err(last_error)
    }

    async fn forward(&self, leader: &RaftPeer, request: PeerRequest) -> Result<PeerResponse, SubmitError> {
        call(&self.transport, leader, &request, Duration::from_millis(FORWARD_TIMEOUT_MS))
            .await
            .map_err(|error| SubmitError::NoLeader(error.to_string()))
    }

    async fn leader(&self) -> Option<RaftPeer> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        metrics.membership_config.membership().get_node(&leader).cloned()
    }

    /// A linearizable read: waits until this replica has applied everything
    /// the leader had committed when asked, and returns that index. Retries
    /// while the leader is unknown, within the same budget as writes.
    pub async fn linearizable_read_index(&self, timeout: Duration) -> Result<u64, SubmitError> {
        // `timeout` bounds the whole read: finding the leader, asking it,
        // and waiting to apply up to its index.
        match tokio::time::timeout(timeout, self.read_index_with_retries(timeout)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SubmitError::NoLeader(format!("no read index within {} ms", timeout.as_millis()))),
        }
    }

    async fn read_index_with_retries(&self, timeout: Duration) -> Result<u64, SubmitError> {
        let mut last_error = SubmitError::NoLeader("no attempt made".to_string());
        for _ in 0..SUBMIT_ATTEMPTS_MAX {
            match self.leader_read_index().await {
                Ok(index) => {
                    self.raft
                        .wait(Some(timeout))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                        .map_err(|error| SubmitError::Raft(error.to_string()))?;
                    return Ok(index);
                }
                Err(SubmitError::NoLeader(reason)) => last_error = SubmitError::NoLeader(reason),
                Err(other) => return Err(other),
            }
            tokio::time::sleep(Duration::from_millis(SUBMIT_RETRY_BACKOFF_MS)).await;
        }
        Err(last_error)
    }

    /// The leader's read index: asked of the leader, or computed if this is it.
    async fn leader_read_index(&self) -> Result<u64, SubmitError> {
        match self.leader().await {
            Some(leader) if leader.node_id == self.me.node_id => self
                .raft
                .ensure_linearizable()
                .await
                .map(|log_id| log_id.map_or(0, |id| id.index))
                .map_err(|error| SubmitError::NoLeader(error.to_string())),
            Some(leader) => match self.forward(&leader, PeerRequest::ReadIndex).await? {
                PeerResponse::ReadIndex(result) => result.map_err(SubmitError::NoLeader),
                other => Err(SubmitError::Raft(format!("unexpected answer {other:?}"))),
            },
            None => Err(SubmitError::NoLeader("no leader known".to_string())),
        }
    }

    /// A receiver that changes whenever this replica's Raft metrics do
    /// (an entry applied, a leader or membership change): wake-ups for
    /// tasks that follow the applied state.
    pub fn state_changes(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<RaftNodeId, RaftPeer>> {
        self.raft.metrics()
    }

    /// Waits until this replica's applied state satisfies `check`, at most
    /// `timeout`; re-checked each time the replica applies something.
    pub async fn wait_for_state(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&crate::store::AppliedState) -> bool + Send + 'static,
    ) -> Result<(), SubmitError> {
        let state = self.state.clone();
        self.raft
            .wait(Some(timeout))
            .metrics(move |_| state.read(&check), what)
            .await
            .map(|_| ())
            .map_err(|error| SubmitError::Raft(error.to_string()))
    }

    /// Initialises a new cluster with `voters` (run once, on one voter).
    pub async fn initialize(&self, voters: Vec<RaftPeer>) -> Result<(), SubmitError> {
        let members: BTreeMap<RaftNodeId, RaftPeer> =
            voters.into_iter().map(|peer| (raft_node_id(&peer.node_id), peer)).collect();
        self.raft.initialize(members).await.map_err(|error| SubmitError::Raft(error.to_string()))
    }

    /// Adds a learner and waits until it has caught up (run on the leader).
    pub async fn add_learner(&self, peer: RaftPeer) -> Result<(), SubmitError> {
        self.raft
            .add_learner(raft_node_id(&peer.node_id), peer, true)
            .await
            .map(|_| ())
            .map_err(|error| SubmitError::Raft(error.to_string()))
    }

    /// Makes exactly `voters` the voting members; other members stay as
    /// learners (run on the leader).
    pub async fn change_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), SubmitError> {
        let ids: BTreeSet<RaftNodeId> = voters.iter().map(raft_node_id).collect();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(ids), true)
            .await
            .map(|_| ())
            .map_err(|error| SubmitError::Raft(error.to_string()))
    }

    /// This member's view of the cluster, with the state's digest.
    pub fn status(&self) -> Status {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let name =
            |id: RaftNodeId| membership.get_node(&id).map_or(id.to_string(), |peer| peer.node_id.to_string());
        let (applied_index, state_digest) =
            self.state.read(|applied| (applied.applied_index, hex_string(&applied.policy.digest)));
        Status {
            node_id: self.me.node_id.to_string(),
            raft_id: metrics.id,
            role: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .to_string(),
            term: metrics.current_term,
            leader: metrics.current_leader.map(name),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: self.committed_index.load(Ordering::Acquire),
            applied_index,
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            purged_index: metrics.purged.map_or(0, |id| id.index),
            voters: membership.voter_ids().map(name).collect(),
            learners: membership.learner_ids().map(name).collect(),
            state_digest,
            snapshot_build_ms: self.snapshot_stats.build_ms.load(Ordering::Acquire),
            snapshot_bytes: self.snapshot_stats.bytes.load(Ordering::Acquire),
        }
    }

    /// Resolves when Raft stopped: on a fatal error (a storage write that
    /// failed, e.g. on a full disk), with the error, or when its core task
    /// ended without saying why (a panic); also after a shutdown, which
    /// says "stopped". Never while it runs. What it had not made durable it
    /// never acknowledged.
    pub async fn failed(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "its core task ended without a reason (a panic)".to_string();
            }
        }
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Refuses a submission that is empty or over [`SUBMIT_COMMANDS_MAX`]
/// commands or [`SUBMIT_BYTES_MAX`] bytes, before it is forwarded or
/// proposed.
fn check_submission(commands: &[SignedCommand]) -> Result<(), SubmitError> {
    if commands.is_empty() || commands.len() > SUBMIT_COMMANDS_MAX {
        return Err(SubmitError::Refused(format!("a submission carries 1..={SUBMIT_COMMANDS_MAX} commands")));
    }
    let bytes: usize = commands.iter().map(SignedCommand::wire_bytes).sum();
    if bytes > SUBMIT_BYTES_MAX {
        return Err(SubmitError::Refused(format!(
            "a submission carries at most {SUBMIT_BYTES_MAX} bytes of commands, not {bytes}"
        )));
    }
    Ok(())
}
