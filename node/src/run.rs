//! `civmesh run`: [`Node::start`] starts one node (swarm, policy-log member,
//! services, peer handlers, gating, HTTP API) and [`Node::shutdown`] stops it,
//! waiting for every task it spawned.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, CaCertificate, NodeCertificate, NodeId, NodeKey, RevocationSet};
use civmesh_consensus::{PeerResponse, PolicyLog, PolicyLogConfig, SharedState};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::config::NodeConfig;
use crate::corrections::CorrectionService;
use crate::deletions::Deletions;
use crate::query::{QueryService, QuerySettings};
use crate::records::RecordStore;
use crate::security::PeerRefusal;
use crate::swarm::{self, InboundRequest, Protocol, SwarmClient};

/// Policy-log requests from one peer handled at once at most. Raft has its
/// own handlers and queue, apart from queries and corrections.
pub const RAFT_HANDLERS_PER_PEER_MAX: usize = 64;
/// Query and correction requests from peers handled at once at most.
pub const SERVICE_HANDLERS_MAX: usize = 64;
/// How often the allow list is recomputed from the policy log.
pub const GATING_REFRESH_MS: u64 = 500;
/// How long to wait for the swarm to report its listen address.
pub const LISTEN_WAIT_MS_MAX: u64 = 5_000;
/// How long in-flight API requests may take to finish at shutdown.
pub const API_SHUTDOWN_GRACE_MS: u64 = 5_000;
/// How long shutdown waits for the node's tasks to finish.
pub const SHUTDOWN_TASKS_WAIT_MS_MAX: u64 = 10_000;
/// The file a running node writes its addresses to, in the node directory.
pub const RUNTIME_FILE_NAME: &str = "node.json";

/// What a running node tells local tools about itself (`DATA_DIR/node.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The node's PeerId.
    pub peer_id: String,
    /// Its libp2p listen addresses.
    pub p2p_addresses: Vec<String>,
    /// Its HTTP API base URL.
    pub api_url: String,
    /// The process id.
    pub pid: u32,
}

/// Runs the node in `node_dir` until `shutdown` resolves, then stops it.
pub async fn run(node_dir: PathBuf, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let node = Node::start(&node_dir).await?;
    // A policy log that stopped (a write failed: a full disk, a broken
    // device) stops the node: it acknowledged nothing it had not made
    // durable, and it re-applies its log when started again.
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        fatal = node.log.failed() => {
            tracing::error!(%fatal, "the policy log stopped; stopping the node");
            Err(anyhow::anyhow!(
                "the policy log stopped: {fatal}. Nothing it acknowledged is lost: free the cause (is the disk full?) and start the node again"
            ))
        }
    };
    node.shutdown().await;
    outcome
}

/// A running node: what shutdown needs to stop it.
pub struct Node {
    stop: watch::Sender<bool>,
    tasks: TaskTracker,
    log: PolicyLog<SwarmClient>,
}

/// What a node proves itself with, read from its directory.
struct Identity {
    config: NodeConfig,
    key: Arc<NodeKey>,
    certificate: NodeCertificate,
    certificate_pem: String,
    verified: civmesh_certs::VerifiedIdentity,
    api_token: String,
}

/// The services a node runs, for the API and the peer handlers.
struct Services {
    records: Arc<RecordStore>,
    query: Arc<QueryService>,
    corrections: Arc<CorrectionService>,
    metrics: Arc<crate::api::metrics::Metrics>,
}

impl Node {
    /// Starts every part of the node in `node_dir`, in order: the swarm, the
    /// policy-log member, the record store and services, their background
    /// tasks and peer handlers, the gate and the HTTP API. Every task is
    /// spawned on the node's tracker, which [`Node::shutdown`] awaits.
    pub async fn start(node_dir: &Path) -> anyhow::Result<Node> {
        let identity = Identity::load(node_dir)?;
        let config = &identity.config;
        let bootstrap_peers = parse_peers(&config.trust.bootstrap_peers)?;
        let tasks = TaskTracker::new();
        let (stop_sender, stop) = watch::channel(false);
        let keypair = identity.key.to_libp2p_keypair()?;
        let (swarm, inbound) = swarm::start_tracked(keypair, &config.node.p2p_listen, stop.clone(), &tasks)?;
        let listening = wait_for_listen_address(&swarm).await?;
        let address = config.node.p2p_advertise.clone().unwrap_or(listening);
        let log =
            PolicyLog::start(raft_config(node_dir, config, &identity.key, &address), swarm.clone()).await?;
        let services = Services::start(node_dir, &identity, &log, &swarm, &tasks).await?;
        let key = &identity.key;
        tasks.spawn(services.corrections.clone().run_worker(stop.clone()));
        tasks.spawn(services.query.clone().run_push_retries(stop.clone()));
        tasks.spawn(services.query.clone().run_push_queue(stop.clone()));
        tasks.spawn(crate::audit::checkpoints::run_checkpoints(log.clone(), key.clone(), stop.clone()));
        tasks.spawn(serve_raft(log.clone(), services.metrics.clone(), inbound.raft, tasks.clone()));
        // The gate admits the federation's peers, so this replica can catch
        // up; then what is due for deletion goes before anything is served.
        tasks.spawn(keep_gate(log.clone(), swarm.clone(), bootstrap_peers, key.node_id(), stop.clone()));
        let deletions = Deletions::new(log.clone(), key.clone(), services.query.clone());
        let sweep = deletions.sweep_at_start().await.context("deleting what is due before serving")?;
        if sweep.deletions > 0 {
            tracing::info!(
                deletions = sweep.deletions,
                records = sweep.records_deleted,
                "deleted what was due at start"
            );
        }
        let closed_corrections_kept_ms =
            config.retention.closed_corrections_kept_days()?.saturating_mul(crate::deletions::DAY_MS);
        tasks.spawn(deletions.run(
            config.retention.sweep_interval_ms()?,
            closed_corrections_kept_ms,
            stop.clone(),
        ));
        // Copies arrive only after the start-up deletion.
        tasks.spawn(services.query.clone().run_initial_syncs(stop.clone()));
        tasks.spawn(serve_services(
            services.query.clone(),
            services.corrections.clone(),
            inbound.services,
            tasks.clone(),
        ));
        let identity_node_id = key.node_id();
        let api_url = start_api(node_dir, identity, &log, &swarm, services, &tasks, stop)?;
        write_runtime_info(
            node_dir,
            &RuntimeInfo {
                peer_id: identity_node_id.to_string(),
                p2p_addresses: vec![address.clone()],
                api_url: api_url.clone(),
                pid: std::process::id(),
            },
        )?;
        tracing::info!(peer_id = %identity_node_id, %address, %api_url, "node running");
        Ok(Node { stop: stop_sender, tasks, log })
    }

    /// Stops the node: every task is told to stop, the API drains, and this
    /// waits for every spawned task (at most [`SHUTDOWN_TASKS_WAIT_MS_MAX`])
    /// before Raft shuts down.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.stop.send(true);
        self.tasks.close();
        let wait = Duration::from_millis(SHUTDOWN_TASKS_WAIT_MS_MAX);
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            tracing::warn!(tasks = self.tasks.len(), "tasks still running at shutdown");
        }
        self.log.shutdown().await;
    }
}

impl Identity {
    /// Reads the config, key, certificates and API token, and checks that
    /// the certificate is this key's, from this CA.
    fn load(node_dir: &Path) -> anyhow::Result<Identity> {
        let config = NodeConfig::load(node_dir)?;
        let resolve = |path: &Path| NodeConfig::resolve(node_dir, path);
        let key = NodeKey::load(&resolve(&config.node.key_file))?;
        let ca_pem = read_small(&resolve(&config.node.ca_certificate_file))?;
        let ca = CaCertificate::from_pem(&ca_pem).context("the CA certificate")?;
        let certificate_pem = read_small(&resolve(&config.node.certificate_file))?;
        let certificate = NodeCertificate::from_pem(&certificate_pem).context("the node certificate")?;
        let verified = certificate
            .verify_presented_by(&key.node_id(), &ca, now_unix_millis(), &RevocationSet::default())
            .context("the node certificate does not fit this node's key and CA")?;
        let api_token = read_secret(&resolve(&config.node.api_token_file))?.trim().to_string();
        anyhow::ensure!(api_token.len() >= 32, "the API token file holds too short a token");
        Ok(Identity { config, key: Arc::new(key), certificate, certificate_pem, verified, api_token })
    }
}

impl Services {
    /// Opens the record store and builds the query and correction services.
    async fn start(
        node_dir: &Path,
        identity: &Identity,
        log: &PolicyLog<SwarmClient>,
        swarm: &SwarmClient,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Services> {
        let config = &identity.config;
        let records =
            Arc::new(RecordStore::open(&node_dir.join("records")).context("opening the record store")?);
        let org_subject_key = match &config.node.org_subject_key_file {
            Some(path) => Some(read_org_subject_key(&NodeConfig::resolve(node_dir, path))?),
            None => None,
        };
        let metrics = Arc::new(crate::api::metrics::Metrics::default());
        swarm.count_in(metrics.inbound_queue_full.clone(), metrics.security_events.clone()).await;
        let limits = Arc::new(crate::security::PeerLimits::new(&config.limits)?);
        let query = Arc::new(QueryService::new(
            log.clone(),
            identity.key.clone(),
            records.clone(),
            swarm.clone(),
            metrics.clone(),
            QuerySettings {
                org_subject_key,
                limits,
                cursors: crate::query::cursor::CursorSealer::load_or_create(node_dir)?,
                listing: config.listing.bounds()?,
            },
            tasks.clone(),
        )?);
        let corrections = CorrectionService::new(
            log.clone(),
            identity.key.clone(),
            records.clone(),
            swarm.clone(),
            query.clone(),
            tasks.clone(),
        )?;
        corrections.set_attachment_limits(config.corrections.into());
        Ok(Services { records, query, corrections, metrics })
    }
}

/// The policy log's settings from the node's config.
fn raft_config(node_dir: &Path, config: &NodeConfig, key: &NodeKey, address: &str) -> PolicyLogConfig {
    let mut raft_config =
        PolicyLogConfig::new(node_dir.join("policy-log"), key.node_id(), address.to_string());
    raft_config.heartbeat_interval_ms = config.raft.heartbeat_interval_ms;
    raft_config.election_timeout_min_ms = config.raft.election_timeout_min_ms;
    raft_config.election_timeout_max_ms = config.raft.election_timeout_max_ms;
    raft_config.snapshot_after_entries = config.raft.snapshot_after_entries;
    raft_config.entries_kept_after_snapshot = config.raft.entries_kept_after_snapshot;
    // Checked when the configuration was read.
    raft_config.snapshot_chunk_bytes_max = config.raft.snapshot_chunk_bytes_max;
    raft_config
}

/// Starts the HTTPS API on its tracked task, draining on `stop`; returns
/// its base URL.
fn start_api(
    node_dir: &Path,
    identity: Identity,
    log: &PolicyLog<SwarmClient>,
    swarm: &SwarmClient,
    services: Services,
    tasks: &TaskTracker,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let subject_request_deadline_days = identity.config.subject_requests.deadline_days()?;
    let listen = &identity.config.node.api_listen;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen for the HTTP API on {listen}"))?;
    listener.set_nonblocking(true)?;
    let api_url = format!("https://{}", listener.local_addr()?);
    let tls = crate::tls::server_config(
        &identity.certificate,
        &identity.key,
        node_dir,
        listener.local_addr()?.ip(),
    )?;
    let state = Arc::new(ApiState {
        log: log.clone(),
        swarm: swarm.clone(),
        api_token: identity.api_token,
        scoped_tokens: crate::api::tokens::TokenRegistry::new(node_dir),
        certificate_pem: identity.certificate_pem,
        identity: identity.verified,
        records: services.records,
        query: services.query,
        corrections: services.corrections,
        metrics: services.metrics,
        console: crate::console::Console::new(node_dir, tasks.clone()),
        assessments: Arc::new(crate::assessments::AssessmentStore::new(node_dir, identity.key.clone())),
        subject_request_deadline_days,
    });
    let handle = axum_server::Handle::new();
    let server =
        axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))?
            .handle(handle.clone())
            .serve(api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>());
    tasks.spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the HTTP API stopped");
        }
    });
    tasks.spawn(async move {
        let _ = stop.changed().await;
        handle.graceful_shutdown(Some(Duration::from_millis(API_SHUTDOWN_GRACE_MS)));
    });
    Ok(api_url)
}

pub(crate) fn read_small(path: &Path) -> anyhow::Result<String> {
    const SMALL_FILE_BYTES_MAX: u64 = 64 * 1024;
    let length = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    anyhow::ensure!(length <= SMALL_FILE_BYTES_MAX, "{} is too large", path.display());
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// An organisation's subject key file: 32 bytes, hex.
fn read_org_subject_key(path: &Path) -> anyhow::Result<crate::query::SubjectKey> {
    let text = read_secret(path)?;
    let bytes = hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()))?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        anyhow::anyhow!("{} holds {} bytes; an organisation's subject key is 32", path.display(), bytes.len())
    })
}

/// Reads a token or secret file, refusing one that its group or others may
/// read or write (it must be mode 0600 or stricter).
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} has mode {:o}: a secret file must be readable by its owner only (chmod 600)",
        path.display(),
        mode & 0o777
    );
    read_small(path)
}

fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeSet<PeerId>> {
    peers
        .iter()
        .map(|text| {
            let node_id: NodeId = text.parse().with_context(|| format!("bootstrap peer {text}"))?;
            Ok(node_id.to_peer_id()?)
        })
        .collect()
}

async fn wait_for_listen_address(swarm: &SwarmClient) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LISTEN_WAIT_MS_MAX);
    loop {
        if let Some(address) = swarm.listen_addresses().await.into_iter().next() {
            return Ok(address.to_string());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the swarm did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_runtime_info(data_dir: &Path, info: &RuntimeInfo) -> anyhow::Result<()> {
    let temporary = data_dir.join(format!("{RUNTIME_FILE_NAME}.tmp"));
    std::fs::write(&temporary, serde_json::to_vec_pretty(info)?)?;
    std::fs::rename(&temporary, data_dir.join(RUNTIME_FILE_NAME))?;
    Ok(())
}

/// Answers peers' policy-log requests, at most [`RAFT_HANDLERS_PER_PEER_MAX`]
/// at once from any one peer: a member flooding the log with submissions
/// or read-index requests is refused at once (`rate_limited`) and cannot
/// hold up the leader's heartbeats. A Raft RPC from a sender that may not
/// send it is a security event.
async fn serve_raft(
    log: PolicyLog<SwarmClient>,
    metrics: Arc<crate::api::metrics::Metrics>,
    mut inbound: tokio::sync::mpsc::Receiver<InboundRequest>,
    tasks: TaskTracker,
) {
    // One entry per peer that passed the gate: bounded by the membership.
    let mut per_peer: HashMap<PeerId, Arc<Semaphore>> = HashMap::new();
    while let Some(request) = inbound.recv().await {
        let Ok(peer) = NodeId::from_peer_id(&request.peer) else {
            let _ = request.reply.send(Vec::new());
            continue;
        };
        let permits = per_peer
            .entry(request.peer)
            .or_insert_with(|| Arc::new(Semaphore::new(RAFT_HANDLERS_PER_PEER_MAX)));
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::security::report(&metrics, log.state(), &peer, PeerRefusal::RateLimited.code());
            let refused = PeerResponse::Refused(PeerRefusal::RateLimited.to_string());
            let _ = request.reply.send(civmesh_certs::codec::encode(&refused).unwrap_or_default());
            continue;
        };
        let (log, metrics) = (log.clone(), metrics.clone());
        tasks.spawn(async move {
            let answer = log.handle_peer_request(&peer, &request.bytes).await;
            if let Some(refusal) = answer.refusal {
                crate::security::report(&metrics, log.state(), &peer, refusal.code());
            }
            let _ = request.reply.send(answer.bytes);
            drop(permit);
        });
    }
}

/// Answers peers' queries and corrections, at most [`SERVICE_HANDLERS_MAX`]
/// at once.
async fn serve_services(
    query: Arc<QueryService>,
    corrections: Arc<CorrectionService>,
    mut inbound: tokio::sync::mpsc::Receiver<InboundRequest>,
    tasks: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(SERVICE_HANDLERS_MAX));
    while let Some(request) = inbound.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (query, corrections) = (query.clone(), corrections.clone());
        tasks.spawn(async move {
            let answer = match (request.protocol, NodeId::from_peer_id(&request.peer)) {
                (Protocol::Query, Ok(peer)) => query.handle(peer, &request.bytes).await,
                (Protocol::Correction, Ok(peer)) => corrections.handle(peer, &request.bytes).await,
                (Protocol::Raft, _) | (_, Err(_)) => Vec::new(),
            };
            let _ = request.reply.send(answer);
            drop(permit);
        });
    }
}

/// The peers a node admits: before genesis, its operator's bootstrap peers;
/// after, the policy log's active members whose certificates are unexpired.
pub fn allowed_peers(
    state: &SharedState,
    bootstrap: &BTreeSet<PeerId>,
    me: &NodeId,
    now_ms: u64,
) -> BTreeSet<PeerId> {
    state.read(|applied| {
        if applied.policy.federation.is_none() {
            return bootstrap.clone();
        }
        applied
            .policy
            .members
            .values()
            .filter(|member| {
                member.revoked.is_none() && member.certificate_not_after_ms > now_ms && member.node_id != *me
            })
            .filter_map(|member| member.node_id.to_peer_id().ok())
            .collect()
    })
}

async fn keep_gate(
    log: PolicyLog<SwarmClient>,
    swarm: SwarmClient,
    bootstrap: BTreeSet<PeerId>,
    me: NodeId,
    mut stop: watch::Receiver<bool>,
) {
    // At once when the replica applies something (a member admitted or
    // revoked), and every tick (certificates expire by the clock alone).
    let mut changes = log.state_changes();
    let mut interval = tokio::time::interval(Duration::from_millis(GATING_REFRESH_MS));
    let mut allowed = BTreeSet::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            changed = changes.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
        let now_allowed = allowed_peers(log.state(), &bootstrap, &me, now_unix_millis());
        if now_allowed != allowed {
            allowed = now_allowed;
            swarm.set_allowed(allowed.clone()).await;
        }
    }
}
