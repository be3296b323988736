//! `civmesh init`: makes a node's data directory: its key (0600), a
//! certificate from the local CA, the CA certificate, an API token (0600)
//! and `civmesh.toml`.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::Context;
use civmesh_certs::{now_unix_millis, FederationCa, IssueRequest, NodeKey, OrgId, Role};
use ring::rand::SecureRandom;

use crate::cli::identity::SUBJECT_KEY_SECRET_FILE;
use crate::cli::InitArgs;
use crate::config::{LimitsSection, NodeConfig, NodeSection, RaftSection, TrustSection, CONFIG_FILE_NAME};

const KEY_FILE: &str = "node.key";
const CERTIFICATE_FILE: &str = "node.pem";
const CA_CERTIFICATE_FILE: &str = "ca.pem";
const API_TOKEN_FILE: &str = "api-token";
/// Random bytes in an API token.
const API_TOKEN_BYTES: usize = 32;

pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let org = OrgId::new(&args.org)?;
    let role: Role = args.role.parse()?;
    for peer in &args.bootstrap_peers {
        peer.parse::<civmesh_certs::NodeId>().with_context(|| format!("bootstrap peer {peer}"))?;
    }
    args.p2p_listen
        .parse::<libp2p::Multiaddr>()
        .with_context(|| format!("--p2p-listen {}", args.p2p_listen))?;
    let ca = FederationCa::load(&args.ca)?;
    create_private_dir(&args.data_dir)?;

    let key = match &args.key {
        Some(path) => NodeKey::load(path)?,
        None => NodeKey::generate()?,
    };
    key.write_new(&args.data_dir.join(KEY_FILE))?;
    let mut request = IssueRequest::for_days(org, role, key.node_id(), now_unix_millis(), args.days)?;
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
    write_new(&args.data_dir.join(CERTIFICATE_FILE), ca.issue(&request)?.as_bytes(), 0o644)?;
    write_new(&args.data_dir.join(CA_CERTIFICATE_FILE), ca.certificate_pem().as_bytes(), 0o644)?;
    let mut token = [0u8; API_TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut token)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let token: String = token.iter().map(|byte| format!("{byte:02x}")).collect();
    write_new(&args.data_dir.join(API_TOKEN_FILE), token.as_bytes(), 0o600)?;
    let secret_source = args.ca.join(SUBJECT_KEY_SECRET_FILE);
    let secret = std::fs::read(&secret_source)
        .with_context(|| format!("reading {} (made by `civmesh ca init`)", secret_source.display()))?;
    write_new(&args.data_dir.join(SUBJECT_KEY_SECRET_FILE), &secret, 0o600)?;

    let config = NodeConfig {
        node: NodeSection {
            key_file: KEY_FILE.into(),
            certificate_file: CERTIFICATE_FILE.into(),
            ca_certificate_file: CA_CERTIFICATE_FILE.into(),
            api_token_file: API_TOKEN_FILE.into(),
            p2p_listen: args.p2p_listen,
            p2p_advertise: args.p2p_advertise,
            api_listen: args.api_listen,
            subject_key_secret_file: Some(SUBJECT_KEY_SECRET_FILE.into()),
        },
        trust: TrustSection { bootstrap_peers: args.bootstrap_peers },
        raft: RaftSection {
            snapshot_after_entries: args.snapshot_after_entries,
            entries_kept_after_snapshot: args.entries_kept_after_snapshot,
            ..RaftSection::default()
        },
        limits: LimitsSection::default(),
        corrections: Default::default(),
    };
    write_new(&args.data_dir.join(CONFIG_FILE_NAME), toml::to_string_pretty(&config)?.as_bytes(), 0o644)?;
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
