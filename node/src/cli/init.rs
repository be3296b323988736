//! `civmesh init`: makes a node's directory: its key (0600), a
//! certificate from the local CA, the CA certificate, an API token (0600)
//! and `civmesh.toml`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use civmesh_certs::{now_unix_millis, FederationCa, IssueRequest, NodeKey, OrgId};
use clap::Args;
use ring::rand::SecureRandom;

use crate::cli::args::{CaDir, Membership, NodeDir};
use crate::cli::identity::{ORG_SUBJECT_KEY_FILE, SUBJECT_KEY_SECRET_FILE};
use crate::config::{LimitsSection, NodeConfig, NodeSection, RaftSection, TrustSection, CONFIG_FILE_NAME};

const KEY_FILE: &str = "node.key";
const CERTIFICATE_FILE: &str = "node.pem";
const CA_CERTIFICATE_FILE: &str = "ca.pem";
const API_TOKEN_FILE: &str = "api-token";
/// Random bytes in an API token.
const API_TOKEN_BYTES: usize = 32;

/// Arguments of `civmesh init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The node directory to create (must not exist or be empty).
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The CA that issues this node's certificate.
    #[command(flatten)]
    pub ca_dir: CaDir,
    /// The node's organisation and role.
    #[command(flatten)]
    pub membership: Membership,
    /// libp2p listen multiaddr.
    #[arg(long, value_name = "P2P_LISTEN", default_value = "/ip4/127.0.0.1/tcp/0")]
    pub p2p_listen: String,
    /// The libp2p address peers dial, if not the listen address.
    #[arg(long, value_name = "P2P_ADVERTISE")]
    pub p2p_advertise: Option<String>,
    /// HTTP API listen address.
    #[arg(long, value_name = "API_LISTEN", default_value = "127.0.0.1:0")]
    pub api_listen: String,
    /// PeerIds trusted before genesis (the founding voters); repeatable.
    #[arg(long = "bootstrap-peer", value_name = "BOOTSTRAP_PEER_ID")]
    pub bootstrap_peers: Vec<String>,
    /// Certificate validity in days.
    #[arg(long, value_name = "VALIDITY_DAYS", default_value_t = 365)]
    pub days: u32,
    /// Use this existing key file (from `civmesh key generate`) instead of
    /// generating one; it is copied into the node directory.
    #[arg(long, value_name = "KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Build a Raft snapshot after this many log entries.
    #[arg(long, value_name = "SNAPSHOT_AFTER_ENTRIES", default_value_t = 5000)]
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot before they are purged.
    #[arg(long, value_name = "ENTRIES_KEPT_AFTER_SNAPSHOT", default_value_t = 1000)]
    pub entries_kept_after_snapshot: u64,
}

pub(super) fn execute(args: InitArgs) -> anyhow::Result<()> {
    let org = OrgId::new(&args.membership.org)?;
    let role: civmesh_certs::Role = args.membership.role.into();
    let node_dir = &args.node_dir.path;
    for peer in &args.bootstrap_peers {
        peer.parse::<civmesh_certs::NodeId>().with_context(|| format!("bootstrap peer {peer}"))?;
    }
    args.p2p_listen
        .parse::<libp2p::Multiaddr>()
        .with_context(|| format!("--p2p-listen {}", args.p2p_listen))?;
    let ca = FederationCa::load(&args.ca_dir.path)?;
    create_private_dir(node_dir)?;

    let key = match &args.key_file {
        Some(path) => NodeKey::load(path)?,
        None => NodeKey::generate()?,
    };
    key.write_new(&node_dir.join(KEY_FILE))?;
    let mut request = IssueRequest::for_days(org.clone(), role, key.node_id(), now_unix_millis(), args.days)?;
    // The API serves TLS with this certificate: it must name the API's host.
    let api_host = match args.api_listen.parse::<std::net::SocketAddr>() {
        Ok(address) => address.ip().to_string(),
        Err(_) => {
            args.api_listen.rsplit_once(':').map_or(args.api_listen.as_str(), |(host, _)| host).to_string()
        }
    };
    if !request.subject_alt_names.contains(&api_host) && !api_host.is_empty() {
        request.subject_alt_names.push(api_host);
    }
    write_new(&node_dir.join(CERTIFICATE_FILE), ca.issue(&request)?.as_bytes(), 0o644)?;
    write_new(&node_dir.join(CA_CERTIFICATE_FILE), ca.certificate_pem().as_bytes(), 0o644)?;
    let mut token = [0u8; API_TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut token)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let token: String = token.iter().map(|byte| format!("{byte:02x}")).collect();
    write_new(&node_dir.join(API_TOKEN_FILE), token.as_bytes(), 0o600)?;
    let secret_source = args.ca_dir.path.join(SUBJECT_KEY_SECRET_FILE);
    let secret = std::fs::read_to_string(&secret_source)
        .with_context(|| format!("reading {} (made by `civmesh ca init`)", secret_source.display()))?;
    // Each node holds its organisation's subject key only; the federation's
    // secret, which links every access to its subject, only an auditor's.
    let org_key = civmesh_policy::subject_keys::org_subject_key(secret.trim().as_bytes(), &org);
    write_new(&node_dir.join(ORG_SUBJECT_KEY_FILE), hex::encode(org_key).as_bytes(), 0o600)?;
    if role == civmesh_certs::Role::Auditor {
        write_new(&node_dir.join(SUBJECT_KEY_SECRET_FILE), secret.as_bytes(), 0o600)?;
    }

    let config = NodeConfig {
        node: NodeSection {
            key_file: KEY_FILE.into(),
            certificate_file: CERTIFICATE_FILE.into(),
            ca_certificate_file: CA_CERTIFICATE_FILE.into(),
            api_token_file: API_TOKEN_FILE.into(),
            p2p_listen: args.p2p_listen,
            p2p_advertise: args.p2p_advertise,
            api_listen: args.api_listen,
            org_subject_key_file: Some(ORG_SUBJECT_KEY_FILE.into()),
        },
        trust: TrustSection { bootstrap_peers: args.bootstrap_peers },
        raft: RaftSection {
            snapshot_after_entries: args.snapshot_after_entries,
            entries_kept_after_snapshot: args.entries_kept_after_snapshot,
            ..RaftSection::default()
        },
        limits: LimitsSection::default(),
        corrections: Default::default(),
        listing: Default::default(),
        retention: Default::default(),
        subject_requests: Default::default(),
    };
    write_new(&node_dir.join(CONFIG_FILE_NAME), toml::to_string_pretty(&config)?.as_bytes(), 0o644)?;
    println!("{}", key.node_id());
    Ok(())
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        let empty = std::fs::read_dir(path)?.next().is_none();
        anyhow::ensure!(
            empty,
            "{} already exists and is not empty; refusing to overwrite a node",
            path.display()
        );
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    civmesh_certs::write_new_file_synced(path, contents, mode)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}
