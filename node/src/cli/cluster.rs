//! `civmesh cluster ...`: operates the policy log through running nodes'
//! HTTP APIs. A node is named by its data directory; its `node.json` gives
//! the API address and its `api-token` the credential.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, CaCertificate, NodeKey, SignedEnvelope};
use civmesh_policy::Command;

use crate::api::{CommandsResponse, InitializeRequest, VotersRequest};
use crate::cli::ClusterCommand;
use crate::client::NodeApi;

/// How long to wait for a leader after initialising.
const LEADER_WAIT_MS_MAX: u64 = 15_000;

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
            let secret_file = ca.join(crate::cli::identity::SUBJECT_KEY_SECRET_FILE);
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
            println!("admitted {}", node.runtime().peer_id);
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
            println!("learner {} added and caught up", learner.runtime().peer_id);
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
