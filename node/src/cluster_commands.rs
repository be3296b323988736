//! `civmesh cluster ...`: operates the policy log through running nodes'
//! HTTP APIs. A node is named by its data directory; its `node.json` gives
//! the API address and its `api-token` the credential.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use civmesh_certs::{now_unix_millis, CaCertificate, NodeCertificate, NodeKey, SignedEnvelope};
use civmesh_policy::Command;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    CommandsRequest, CommandsResponse, InitializeRequest, NodeStatus, PeerAddress, VotersRequest,
};
use crate::cli::ClusterCommand;
use crate::config::NodeConfig;
use crate::run::{RuntimeInfo, RUNTIME_FILE_NAME};

/// How long one API call may take.
const API_CALL_TIMEOUT_MS: u64 = 30_000;
/// Idle TLS connections an API client keeps for reuse.
const API_IDLE_CONNECTIONS_MAX: usize = 512;
/// How long to wait for a leader after initialising.
const LEADER_WAIT_MS_MAX: u64 = 15_000;

/// A running node's API, found through its data directory.
pub struct NodeApi {
    base_url: String,
    token: String,
    agent: ureq::Agent,
    runtime: RuntimeInfo,
}

impl NodeApi {
    /// Reads `node.json` and the API token of the node in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let runtime_path = data_dir.join(RUNTIME_FILE_NAME);
        let runtime: RuntimeInfo = serde_json::from_slice(
            &std::fs::read(&runtime_path)
                .with_context(|| format!("{} (is the node running?)", runtime_path.display()))?,
        )?;
        let config = NodeConfig::load(data_dir)?;
        let token_path = NodeConfig::resolve(data_dir, &config.node.api_token_file);
        let token = std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?;
        // The API speaks TLS with a certificate from the federation CA: trust
        // that CA alone.
        let ca_path = NodeConfig::resolve(data_dir, &config.node.ca_certificate_file);
        let ca_pem =
            std::fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
        let ca_der = CaCertificate::from_pem(&ca_pem)?.der().to_vec();
        let roots =
            ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(&ca_der).to_owned()]);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(API_CALL_TIMEOUT_MS)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            // Keep TLS connections for reuse: concurrent callers (the
            // benchmarks, department systems) would otherwise pay a
            // handshake per request.
            .max_idle_connections(API_IDLE_CONNECTIONS_MAX)
            .max_idle_connections_per_host(API_IDLE_CONNECTIONS_MAX)
            .build()
            .into();
        Ok(NodeApi { base_url: runtime.api_url.clone(), token: token.trim().to_string(), agent, runtime })
    }

    fn finish<T: DeserializeOwned>(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response.with_context(|| format!("calling {}{path}", self.base_url))?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        anyhow::ensure!(status.is_success(), "{}{path} answered {status}: {body}", self.base_url);
        serde_json::from_str(&body).with_context(|| format!("decoding the answer of {path}"))
    }

    fn call_get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        response.with_context(|| format!("calling {}{path}", self.base_url))
    }

    /// GET `path` as text (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let mut response = self.call_get(path)?;
        let status = response.status();
        let body = response.body_mut().read_to_string()?;
        anyhow::ensure!(status.is_success(), "{}{path} answered {status}: {body}", self.base_url);
        Ok(body)
    }

    /// GET `path` as bytes (binary answers, e.g. the audit archive), at
    /// most `bytes_max`.
    pub fn get_bytes(&self, path: &str, bytes_max: u64) -> anyhow::Result<Vec<u8>> {
        let mut response = self.call_get(path)?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{}{path} answered {status}", self.base_url);
        Ok(response.body_mut().with_config().limit(bytes_max).read_to_vec()?)
    }

    /// GET `path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(path, response)
    }

    /// POST (or PUT) `body` as JSON to `path`.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base_url);
        let authorization = format!("Bearer {}", self.token);
        let response = match method {
            "PUT" => self.agent.put(url).header("Authorization", authorization).send_json(body),
            _ => self.agent.post(url).header("Authorization", authorization).send_json(body),
        };
        self.finish(path, response)
    }

    /// POST `bytes` (a file, as it is) to `path`; the answer is JSON.
    pub fn send_bytes<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> anyhow::Result<T> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(bytes);
        self.finish(path, response)
    }

    /// This node's status.
    pub fn status(&self) -> anyhow::Result<NodeStatus> {
        self.get("/v1/status")
    }

    /// Submits signed commands in one log entry.
    pub fn submit(&self, commands: &[civmesh_policy::SignedCommand]) -> anyhow::Result<CommandsResponse> {
        let envelopes = commands
            .iter()
            .map(|command| Ok(base64::engine::general_purpose::STANDARD.encode(command.to_bytes()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.send("POST", "/v1/commands", &CommandsRequest { envelopes })
    }

    fn peer_address(&self) -> anyhow::Result<PeerAddress> {
        let address = self.runtime.p2p_addresses.first().context("the node reports no listen address")?;
        Ok(PeerAddress { peer_id: self.runtime.peer_id.clone(), address: address.clone() })
    }

    fn certificate_der(&self) -> anyhow::Result<Vec<u8>> {
        let answer: serde_json::Value = self.get("/v1/certificate")?;
        let pem = answer["certificate_pem"].as_str().context("no certificate in the answer")?;
        Ok(NodeCertificate::from_pem(pem)?.der().to_vec())
    }
}

fn open_all(dirs: &[PathBuf]) -> anyhow::Result<Vec<NodeApi>> {
    dirs.iter().map(|dir| NodeApi::open(dir)).collect()
}

/// The node among `nodes` that is the leader now, waiting for one.
fn leader_among(nodes: &[NodeApi]) -> anyhow::Result<&NodeApi> {
    let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MS_MAX);
    loop {
        for node in nodes {
            if node.status().map(|status| status.raft.role == "leader").unwrap_or(false) {
                return Ok(node);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader among the given nodes");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ca_signed(ca_dir: &Path, command: Command) -> anyhow::Result<civmesh_policy::SignedCommand> {
    let ca_key = NodeKey::load(&ca_dir.join(civmesh_certs::CA_KEY_FILE_NAME))?;
    Ok(SignedEnvelope::sign(&ca_key, &command, now_unix_millis())?)
}

fn check_outcomes(response: &CommandsResponse) -> anyhow::Result<()> {
    for outcome in &response.outcomes {
        if let Err(rejection) = outcome {
            anyhow::bail!("the policy log rejected the command: {rejection}");
        }
    }
    Ok(())
}

pub(crate) fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { node_dirs } => {
            println!(
                "{:<54} {:<10} {:>5} {:>9} {:>9} {:>9}  leader",
                "node", "role", "term", "last_log", "committed", "applied"
            );
            for dir in node_dirs {
                match NodeApi::open(&dir).and_then(|api| api.status()) {
                    Ok(status) => println!(
                        "{:<54} {:<10} {:>5} {:>9} {:>9} {:>9}  {}",
                        format!(
                            "{} {}",
                            status.org,
                            &status.peer_id[status.peer_id.len().saturating_sub(8)..]
                        ),
                        status.raft.role,
                        status.raft.term,
                        status.raft.last_log_index,
                        status.raft.committed_index,
                        status.raft.applied_index,
                        status.raft.leader.unwrap_or_else(|| "-".to_string())
                    ),
                    Err(error) => println!("{:<54} unreachable: {error:#}", dir.display()),
                }
            }
        }
        ClusterCommand::Bootstrap { ca, federation_name, voter_dirs, member_dirs } => {
            anyhow::ensure!(
                matches!(voter_dirs.len(), 1 | 3 | 5),
                "use 3 or 5 voters (1 for a test cluster)"
            );
            let voters = open_all(&voter_dirs)?;
            let members = open_all(&member_dirs)?;
            // Read before anything changes: the commitment goes in with genesis.
            let secret_file = ca.join(crate::identity_commands::SUBJECT_KEY_SECRET_FILE);
            let secret = std::fs::read_to_string(&secret_file)
                .with_context(|| format!("reading {} (made by `civmesh ca init`)", secret_file.display()))?;
            let commitment = Command::CommitSubjectKeySecret {
                commitment: civmesh_policy::model::subject_key_commitment(secret.trim().as_bytes()),
            };
            let request = InitializeRequest {
                voters: voters.iter().map(NodeApi::peer_address).collect::<anyhow::Result<_>>()?,
            };
            let _: serde_json::Value = voters[0].send("POST", "/v1/cluster/initialize", &request)?;
            let leader = leader_among(&voters)?;
            let ca_certificate = CaCertificate::from_pem(&std::fs::read_to_string(
                ca.join(civmesh_certs::CA_CERT_FILE_NAME),
            )?)?;
            let genesis = Command::Genesis {
                federation_name,
                ca_certificate_der: ca_certificate.der().to_vec(),
                founding_member_certificates_der: voters
                    .iter()
                    .chain(&members)
                    .map(NodeApi::certificate_der)
                    .collect::<anyhow::Result<_>>()?,
            };
            check_outcomes(&leader.submit(&[ca_signed(&ca, genesis)?, ca_signed(&ca, commitment)?])?)?;
            println!(
                "bootstrapped: {} voters, {} founding members",
                voters.len(),
                voters.len() + members.len()
            );
        }
        ClusterCommand::Admit { ca, via_dir, node_dir } => {
            let node = NodeApi::open(&node_dir)?;
            let command = Command::AdmitMember { certificate_der: node.certificate_der()? };
            check_outcomes(&NodeApi::open(&via_dir)?.submit(&[ca_signed(&ca, command)?])?)?;
            println!("admitted {}", node.runtime.peer_id);
        }
        ClusterCommand::Revoke { ca, via_dir, peer_id, reason } => {
            let command = Command::RevokeMember { node_id: peer_id.parse()?, reason };
            check_outcomes(&NodeApi::open(&via_dir)?.submit(&[ca_signed(&ca, command)?])?)?;
            println!("revoked {peer_id}");
        }
        ClusterCommand::AddLearner { voter_dirs, learner_dir } => {
            let voters = open_all(&voter_dirs)?;
            let learner = NodeApi::open(&learner_dir)?;
            let _: serde_json::Value =
                leader_among(&voters)?.send("POST", "/v1/cluster/learners", &learner.peer_address()?)?;
            println!("learner {} added and caught up", learner.runtime.peer_id);
        }
        ClusterCommand::Voters { via_dirs, peer_ids } => {
            let nodes = open_all(&via_dirs)?;
            let _: serde_json::Value =
                leader_among(&nodes)?.send("PUT", "/v1/cluster/voters", &VotersRequest { peer_ids })?;
            println!("voters changed");
        }
    }
    Ok(())
}
