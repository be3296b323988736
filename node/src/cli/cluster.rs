//! `civmesh cluster ...`: operates the policy log through running nodes'
//! HTTP APIs. A node is named by its directory; its `node.json` gives the
//! API address and its `api-token` the credential. The node a command acts
//! through is `--node-dir`; the nodes it acts on have flags of their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, CaCertificate, NodeKey, SignedEnvelope};
use civmesh_policy::Command;
use clap::{Args, Subcommand};

use crate::api::{CommandsResponse, InitializeRequest, VotersRequest};
use crate::cli::args::{CaDir, NodeDir, NodeDirs};
use crate::client::NodeApi;

/// `civmesh cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print each node's view: role, leader, term, committed and applied index.
    Status {
        /// The running nodes to ask.
        #[command(flatten)]
        node_dirs: NodeDirs,
    },
    /// Initialise the voters and commit the genesis entry (CA certificate and
    /// founding members), signed with the CA key.
    Bootstrap(BootstrapArgs),
    /// Admit a node to the federation (AdmitMember signed with the CA key),
    /// through the running member in --node-dir.
    Admit(AdmitArgs),
    /// Revoke a member (RevokeMember signed with the CA key), through the
    /// running member in --node-dir.
    Revoke(RevokeArgs),
    /// Add a running node as a learner (it catches up by log or snapshot),
    /// through the leader among the voters given as --node-dir.
    AddLearner(AddLearnerArgs),
    /// Make exactly these nodes the voters (promote or demote), through the
    /// leader among the current voters given as --node-dir.
    Voters {
        /// Current voters; the leader among them is used.
        #[command(flatten)]
        node_dirs: NodeDirs,
        /// The PeerIds that are to vote.
        #[arg(long = "peer-id", value_name = "PEER_ID", required = true)]
        peer_ids: Vec<String>,
    },
}

/// Arguments of `civmesh cluster bootstrap`.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The CA that signs the genesis.
    #[command(flatten)]
    pub ca_dir: CaDir,
    /// The federation's name.
    #[arg(long, value_name = "FEDERATION_NAME")]
    pub federation_name: String,
    /// A voter's node directory (3 or 5 voters; repeatable).
    #[arg(long = "voter-node-dir", value_name = "VOTER_NODE_DIR", required = true)]
    pub voter_node_dirs: Vec<PathBuf>,
    /// Another founding member's node directory (a learner; repeatable).
    #[arg(long = "member-node-dir", value_name = "MEMBER_NODE_DIR")]
    pub member_node_dirs: Vec<PathBuf>,
}

/// Arguments of `civmesh cluster admit`.
#[derive(Debug, Args)]
pub struct AdmitArgs {
    /// The CA that signs the admission.
    #[command(flatten)]
    pub ca_dir: CaDir,
    /// Any running member, to submit through.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The new node's directory.
    #[arg(long, value_name = "NEW_NODE_DIR")]
    pub new_node_dir: PathBuf,
}

/// Arguments of `civmesh cluster revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The CA that signs the revocation.
    #[command(flatten)]
    pub ca_dir: CaDir,
    /// Any running member, to submit through.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The PeerId to revoke.
    #[arg(long, value_name = "PEER_ID")]
    pub peer_id: String,
    /// Why.
    #[arg(long, value_name = "REASON")]
    pub reason: String,
}

/// Arguments of `civmesh cluster add-learner`.
#[derive(Debug, Args)]
pub struct AddLearnerArgs {
    /// The voters; the leader among them is used.
    #[command(flatten)]
    pub node_dirs: NodeDirs,
    /// The learner's node directory.
    #[arg(long, value_name = "LEARNER_NODE_DIR")]
    pub learner_node_dir: PathBuf,
}

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

pub(super) fn execute(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { node_dirs } => status(&node_dirs.paths),
        ClusterCommand::Bootstrap(args) => bootstrap(args),
        ClusterCommand::Admit(args) => admit(args),
        ClusterCommand::Revoke(args) => revoke(args),
        ClusterCommand::AddLearner(args) => add_learner(args),
        ClusterCommand::Voters { node_dirs, peer_ids } => voters(&node_dirs.paths, peer_ids),
    }
}

fn status(node_dirs: &[PathBuf]) -> anyhow::Result<()> {
    println!(
        "{:<54} {:<10} {:>5} {:>9} {:>9} {:>9}  leader",
        "node", "role", "term", "last_log", "committed", "applied"
    );
    for dir in node_dirs {
        match NodeApi::open(dir).and_then(|api| api.status()) {
            Ok(status) => println!(
                "{:<54} {:<10} {:>5} {:>9} {:>9} {:>9}  {}",
                format!("{} {}", status.org, &status.peer_id[status.peer_id.len().saturating_sub(8)..]),
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
    Ok(())
}

fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let BootstrapArgs { ca_dir: CaDir { path: ca }, federation_name, voter_node_dirs, member_node_dirs } =
        args;
    anyhow::ensure!(matches!(voter_node_dirs.len(), 1 | 3 | 5), "use 3 or 5 voters (1 for a test cluster)");
    let voters = open_all(&voter_node_dirs)?;
    let members = open_all(&member_node_dirs)?;
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
    let ca_certificate =
        CaCertificate::from_pem(&std::fs::read_to_string(ca.join(civmesh_certs::CA_CERT_FILE_NAME))?)?;
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
    println!("bootstrapped: {} voters, {} founding members", voters.len(), voters.len() + members.len());
    Ok(())
}

fn admit(args: AdmitArgs) -> anyhow::Result<()> {
    let node = NodeApi::open(&args.new_node_dir)?;
    let command = Command::AdmitMember { certificate_der: node.certificate_der()? };
    check_outcomes(&NodeApi::open(&args.node_dir.path)?.submit(&[ca_signed(&args.ca_dir.path, command)?])?)?;
    println!("admitted {}", node.runtime().peer_id);
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let command = Command::RevokeMember { node_id: args.peer_id.parse()?, reason: args.reason };
    check_outcomes(&NodeApi::open(&args.node_dir.path)?.submit(&[ca_signed(&args.ca_dir.path, command)?])?)?;
    println!("revoked {}", args.peer_id);
    Ok(())
}

fn add_learner(args: AddLearnerArgs) -> anyhow::Result<()> {
    let voters = open_all(&args.node_dirs.paths)?;
    let learner = NodeApi::open(&args.learner_node_dir)?;
    let _: serde_json::Value =
        leader_among(&voters)?.send("POST", "/v1/cluster/learners", &learner.peer_address()?)?;
    println!("learner {} added and caught up", learner.runtime().peer_id);
    Ok(())
}

fn voters(node_dirs: &[PathBuf], peer_ids: Vec<String>) -> anyhow::Result<()> {
    let nodes = open_all(node_dirs)?;
    let _: serde_json::Value =
        leader_among(&nodes)?.send("PUT", "/v1/cluster/voters", &VotersRequest { peer_ids })?;
    println!("voters changed");
    Ok(())
}
