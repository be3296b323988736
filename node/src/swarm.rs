//! The libp2p side of a node. One task owns the `Swarm` (TCP, Noise, Yamux,
//! identify, the `/civmesh/raft/1` and `/civmesh/query/1` request-response
//! protocols and an allow
//! list); everything else holds a cloneable [`SwarmClient`] that sends it
//! commands over a bounded channel and gets answers on oneshot channels.
//!
//! Gating: a connection survives only if its PeerId is on the allow list,
//! which the node keeps equal to the active members of the policy log (or,
//! before genesis, the peers its operator declared trusted).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::time::Duration;

use civmesh_consensus::{RaftPeer, Transport, TransportError, PEER_MESSAGE_BYTES_MAX};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::api::metrics::{Metrics, OutcomeLabel};

/// The request-response protocol that carries policy-log messages.
pub const RAFT_PROTOCOL: &str = "/civmesh/raft/1";
/// The request-response protocol that carries queries to data owners.
pub const QUERY_PROTOCOL: &str = "/civmesh/query/1";
/// The request-response protocol that carries corrections and their outcomes.
pub const CORRECTION_PROTOCOL: &str = "/civmesh/correction/1";

/// Which request-response protocol a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Policy-log messages.
    Raft,
    /// Queries.
    Query,
    /// Corrections and their outcomes.
    Correction,
}

impl Protocol {
    /// The protocol's name in metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Raft => "raft",
            Protocol::Query => "query",
            Protocol::Correction => "correction",
        }
    }
}
/// Commands queued to the swarm task at most.
pub const SWARM_COMMANDS_QUEUED_MAX: usize = 1024;
/// Inbound policy-log requests queued for handling at most. Raft has its
/// own queue, so no flood of queries can crowd out heartbeats.
pub const INBOUND_RAFT_REQUESTS_QUEUED_MAX: usize = 1024;
/// Inbound query and correction requests queued for handling at most; more
/// are answered at once with an empty message (the peer sees a failed
/// request and retries), counted and logged.
pub const INBOUND_SERVICE_REQUESTS_QUEUED_MAX: usize = 1024;
/// How long an idle connection is kept.
pub const IDLE_CONNECTION_TIMEOUT_MS: u64 = 60_000;
/// libp2p's own bound on one request's round trip.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Concurrent streams per connection for the raft protocol.
pub const STREAMS_PER_CONNECTION_MAX: usize = 256;
/// The security event of a connection refused at the gate (the peer is
/// not an active member).
pub const CONNECTION_REFUSED: &str = "connection_refused";

/// Why the swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The transport or behaviour could not be built.
    #[error("cannot build the libp2p swarm: {0}")]
    Build(String),
    /// The listen address is not a multiaddr or cannot be bound.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
}

/// A request from a peer, to be answered on `reply`.
pub struct InboundRequest {
    /// The protocol it came on.
    pub protocol: Protocol,
    /// Who asked (already admitted by the allow list).
    pub peer: PeerId,
    /// The encoded request.
    pub bytes: Vec<u8>,
    /// Where the encoded answer goes.
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// The inbound request queues: Raft's, and the services' (queries and
/// corrections), each bounded on its own.
pub struct Inbound {
    /// `/civmesh/raft/1` requests.
    pub raft: mpsc::Receiver<InboundRequest>,
    /// `/civmesh/query/1` and `/civmesh/correction/1` requests.
    pub services: mpsc::Receiver<InboundRequest>,
}

/// Length-prefixed byte messages, bounded by [`PEER_MESSAGE_BYTES_MAX`].
#[derive(Clone, Default)]
pub struct BytesCodec;

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > PEER_MESSAGE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {length} bytes is over the limit"),
        ));
    }
    let mut bytes = vec![0u8; length];
    io.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    if bytes.len() > PEER_MESSAGE_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "message over the limit"));
    }
    let length =
        u32::try_from(bytes.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too long"))?;
    io.write_all(&length.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io).await
    }
    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io).await
    }
    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, request).await
    }
    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, response).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    identify: identify::Behaviour,
    raft: request_response::Behaviour<BytesCodec>,
    query: request_response::Behaviour<BytesCodec>,
    correction: request_response::Behaviour<BytesCodec>,
}

impl Behaviour {
    fn protocol(&mut self, protocol: Protocol) -> &mut request_response::Behaviour<BytesCodec> {
        match protocol {
            Protocol::Raft => &mut self.raft,
            Protocol::Query => &mut self.query,
            Protocol::Correction => &mut self.correction,
        }
    }
}

enum SwarmCommand {
    Request {
        protocol: Protocol,
        peer: PeerId,
        address: Option<Multiaddr>,
        bytes: Vec<u8>,
        reply: OutboundReply,
    },
    SetAllowed {
        peers: BTreeSet<PeerId>,
    },
    ListenAddresses {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    CountIn {
        queue_full: Family<OutcomeLabel, Counter>,
        security_events: Family<OutcomeLabel, Counter>,
    },
}

/// A handle to the swarm task. Cheap to clone.
#[derive(Clone)]
pub struct SwarmClient {
    commands: mpsc::Sender<SwarmCommand>,
}

impl SwarmClient {
    /// Replaces the allow list; peers no longer on it are disconnected.
    pub async fn set_allowed(&self, peers: BTreeSet<PeerId>) {
        let _ = self.commands.send(SwarmCommand::SetAllowed { peers }).await;
    }

    /// The addresses the swarm listens on.
    pub async fn listen_addresses(&self) -> Vec<Multiaddr> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(SwarmCommand::ListenAddresses { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Counts requests refused for a full queue in `queue_full`, by
    /// protocol, and connections refused at the gate in `security_events`
    /// (as `connection_refused`).
    pub async fn count_in(
        &self,
        queue_full: Family<OutcomeLabel, Counter>,
        security_events: Family<OutcomeLabel, Counter>,
    ) {
        let _ = self.commands.send(SwarmCommand::CountIn { queue_full, security_events }).await;
    }

    /// The peers connected now.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(SwarmCommand::ConnectedPeers { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

impl Transport for SwarmClient {
    fn request(
        &self,
        target: &RaftPeer,
        request: Vec<u8>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        self.request_on(Protocol::Raft, target, request, timeout)
    }
}

impl SwarmClient {
    /// Sends `request` on `protocol` to `target` and waits for the answer.
    pub fn request_on(
        &self,
        protocol: Protocol,
        target: &RaftPeer,
        request: Vec<u8>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let commands = self.commands.clone();
        let peer =
            target.node_id.to_peer_id().map_err(|error| TransportError::Unreachable(error.to_string()));
        let address = target.address.parse::<Multiaddr>().ok();
        async move {
            let peer = peer?;
            let (reply, answer) = oneshot::channel();
            let command = SwarmCommand::Request { protocol, peer, address, bytes: request, reply };
            commands
                .send(command)
                .await
                .map_err(|_| TransportError::Unreachable("swarm stopped".to_string()))?;
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            match tokio::time::timeout(timeout, answer).await {
                Err(_) => Err(TransportError::Timeout(timeout_ms)),
                Ok(Err(_)) => Err(TransportError::Unreachable("swarm dropped the request".to_string())),
                Ok(Ok(result)) => result,
            }
        }
    }
}

/// Builds the swarm, starts listening on `listen`, and spawns the task that
/// owns it, untracked (for tools and tests). Inbound requests arrive on the
/// returned receiver.
pub fn start(
    keypair: libp2p::identity::Keypair,
    listen: &str,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SwarmClient, Inbound), SwarmError> {
    start_tracked(keypair, listen, shutdown, &TaskTracker::new())
}

/// [`start`], with the swarm task and its per-request tasks on `tasks`.
pub fn start_tracked(
    keypair: libp2p::identity::Keypair,
    listen: &str,
    shutdown: tokio::sync::watch::Receiver<bool>,
    tasks: &TaskTracker,
) -> Result<(SwarmClient, Inbound), SwarmError> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|error| SwarmError::Build(error.to_string()))?
        .with_behaviour(|key| Behaviour {
            allowed: allow_block_list::Behaviour::default(),
            // Peers are dialled only at the addresses the policy log's
            // membership names, never at addresses learnt by gossip: no
            // identify address cache.
            identify: identify::Behaviour::new(
                identify::Config::new("/civmesh/1".to_string(), key.public()).with_cache_size(0),
            ),
            raft: request_response_behaviour(RAFT_PROTOCOL),
            query: request_response_behaviour(QUERY_PROTOCOL),
            correction: request_response_behaviour(CORRECTION_PROTOCOL),
        })
        .map_err(|error| SwarmError::Build(error.to_string()))?
        .with_swarm_config(|config| {
            config.with_idle_connection_timeout(Duration::from_millis(IDLE_CONNECTION_TIMEOUT_MS))
        })
        .build();
    let address: Multiaddr = listen.parse().map_err(|error: libp2p::multiaddr::Error| {
        SwarmError::Listen { address: listen.to_string(), reason: error.to_string() }
    })?;
    swarm
        .listen_on(address)
        .map_err(|error| SwarmError::Listen { address: listen.to_string(), reason: error.to_string() })?;
    let (commands, command_receiver) = mpsc::channel(SWARM_COMMANDS_QUEUED_MAX);
    let (raft, raft_receiver) = mpsc::channel(INBOUND_RAFT_REQUESTS_QUEUED_MAX);
    let (services, services_receiver) = mpsc::channel(INBOUND_SERVICE_REQUESTS_QUEUED_MAX);
    let task = SwarmTask::new(swarm, command_receiver, raft, services, tasks.clone());
    tasks.spawn(task.run(shutdown));
    Ok((SwarmClient { commands }, Inbound { raft: raft_receiver, services: services_receiver }))
}

fn request_response_behaviour(protocol: &'static str) -> request_response::Behaviour<BytesCodec> {
    request_response::Behaviour::new(
        [(StreamProtocol::new(protocol), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX),
    )
}

/// Where the answer to an outbound request goes.
type OutboundReply = oneshot::Sender<Result<Vec<u8>, TransportError>>;

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<SwarmCommand>,
    raft_inbound: mpsc::Sender<InboundRequest>,
    service_inbound: mpsc::Sender<InboundRequest>,
    queue_full: Family<OutcomeLabel, Counter>,
    security_events: Family<OutcomeLabel, Counter>,
    answers: mpsc::Sender<(u64, Option<Vec<u8>>)>,
    answer_receiver: mpsc::Receiver<(u64, Option<Vec<u8>>)>,
    pending_outbound: HashMap<(Protocol, OutboundRequestId), OutboundReply>,
    pending_inbound: HashMap<u64, (Protocol, ResponseChannel<Vec<u8>>)>,
    next_inbound_id: u64,
    allowed: BTreeSet<PeerId>,
    /// Runs the tasks that wait for inbound requests' answers.
    tasks: TaskTracker,
}

impl SwarmTask {
    fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<SwarmCommand>,
        raft_inbound: mpsc::Sender<InboundRequest>,
        service_inbound: mpsc::Sender<InboundRequest>,
        tasks: TaskTracker,
    ) -> Self {
        let (answers, answer_receiver) =
            mpsc::channel(INBOUND_RAFT_REQUESTS_QUEUED_MAX + INBOUND_SERVICE_REQUESTS_QUEUED_MAX);
        SwarmTask {
            swarm,
            commands,
            raft_inbound,
            service_inbound,
            queue_full: Family::default(),
            security_events: Family::default(),
            answers,
            answer_receiver,
            pending_outbound: HashMap::new(),
            pending_inbound: HashMap::new(),
            next_inbound_id: 0,
            allowed: BTreeSet::new(),
            tasks,
        }
    }

    async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = self.commands.recv() => self.on_command(command),
                Some((id, answer)) = self.answer_receiver.recv() => {
                    // No answer: the channel is dropped and the peer sees a failure.
                    if let (Some((protocol, channel)), Some(bytes)) = (self.pending_inbound.remove(&id), answer) {
                        let _ = self.swarm.behaviour_mut().protocol(protocol).send_response(channel, bytes);
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("swarm stopped");
    }

    fn on_command(&mut self, command: SwarmCommand) {
        match command {
            SwarmCommand::Request { protocol, peer, address, bytes, reply } => {
                if let Some(address) = address {
                    self.swarm.add_peer_address(peer, address);
                }
                let id = self.swarm.behaviour_mut().protocol(protocol).send_request(&peer, bytes);
                self.pending_outbound.insert((protocol, id), reply);
            }
            SwarmCommand::SetAllowed { peers } => {
                for removed in self.allowed.difference(&peers) {
                    self.swarm.behaviour_mut().allowed.disallow_peer(*removed);
                    tracing::info!(peer = %removed, "peer no longer a member: disconnecting");
                }
                for added in peers.difference(&self.allowed) {
                    self.swarm.behaviour_mut().allowed.allow_peer(*added);
                }
                self.allowed = peers;
            }
            SwarmCommand::ListenAddresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            SwarmCommand::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().cloned().collect());
            }
            SwarmCommand::CountIn { queue_full, security_events } => {
                self.queue_full = queue_full;
                self.security_events = security_events;
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::Behaviour(BehaviourEvent::Raft(event)) => {
                self.on_request_response_event(Protocol::Raft, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Query(event)) => {
                self.on_request_response_event(Protocol::Query, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Correction(event)) => {
                self.on_request_response_event(Protocol::Correction, event)
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                // Not an active member: the gate's allow list refused it.
                Metrics::count(&self.security_events, CONNECTION_REFUSED);
                tracing::warn!(target: "civmesh::security", %send_back_addr, %cause, "connection refused at the gate");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming connection failed")
            }
            _ => {}
        }
    }

    fn on_request_response_event(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let id = self.next_inbound_id;
                    self.next_inbound_id += 1;
                    let (reply, answer) = oneshot::channel();
                    let queue = match protocol {
                        Protocol::Raft => &self.raft_inbound,
                        Protocol::Query | Protocol::Correction => &self.service_inbound,
                    };
                    if queue.try_send(InboundRequest { protocol, peer, bytes: request, reply }).is_err() {
                        tracing::warn!(%peer, ?protocol, "inbound queue full: refusing a request");
                        Metrics::count(&self.queue_full, protocol.label());
                        let _ =
                            self.swarm.behaviour_mut().protocol(protocol).send_response(channel, Vec::new());
                        return;
                    }
                    self.pending_inbound.insert(id, (protocol, channel));
                    let answers = self.answers.clone();
                    self.tasks.spawn(async move {
                        tokio::select! {
                            answer = answer => { let _ = answers.send((id, answer.ok())).await; }
                            // The swarm task stopped: no one to answer.
                            _ = answers.closed() => {}
                        }
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending_outbound.remove(&(protocol, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = self.pending_outbound.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(TransportError::Unreachable(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
