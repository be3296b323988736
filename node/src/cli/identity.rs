//! `civmesh key`, `civmesh ca` and `civmesh cert`: the operator's side of the
//! identity layer in civmesh-certs.

use std::path::PathBuf;

use anyhow::Context;
use civmesh_certs::{
    now_unix_millis, CaCertificate, FederationCa, IssueRequest, NodeCertificate, NodeKey, OrgId,
    RevocationSet,
};
use clap::{Args, Subcommand};

use crate::cli::args::{CaCert, CaDir, Membership};

/// `civmesh key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a node key and print its libp2p PeerId.
    Generate {
        /// Where to write the key (created with mode 0600; never overwritten).
        #[arg(long, value_name = "OUT_FILE")]
        out: PathBuf,
    },
    /// Print the PeerId of an existing key file.
    Show {
        /// The key file.
        #[arg(long, value_name = "KEY_FILE")]
        key_file: PathBuf,
    },
}

/// `civmesh ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a federation CA: CA_DIR/ca.key (0600), CA_DIR/ca.pem and
    /// CA_DIR/subject-key.secret (0600).
    Init {
        /// The CA directory to create.
        #[command(flatten)]
        ca_dir: CaDir,
        /// The CA's name, e.g. "Shanghai civmesh federation".
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Validity in days.
        #[arg(long, value_name = "VALIDITY_DAYS", default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node certificate.
    Issue(IssueArgs),
}

/// Arguments of `civmesh ca issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA that issues.
    #[command(flatten)]
    pub ca_dir: CaDir,
    /// The node's organisation and role.
    #[command(flatten)]
    pub membership: Membership,
    /// The node's libp2p PeerId (from `civmesh key generate`).
    #[arg(long, value_name = "PEER_ID")]
    pub peer_id: String,
    /// Where to write the certificate (PEM; never overwritten).
    #[arg(long, value_name = "OUT_FILE")]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, value_name = "VALIDITY_DAYS", default_value_t = 365)]
    pub days: u32,
    /// DNS names or IP addresses for the node's HTTPS API (repeatable).
    #[arg(
        long = "san",
        value_name = "SAN",
        default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()]
    )]
    pub subject_alt_names: Vec<String>,
}

/// `civmesh cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Verify a node certificate against a CA certificate and print what it binds.
    Verify {
        /// The CA that issued it.
        #[command(flatten)]
        ca_cert: CaCert,
        /// The node certificate (PEM).
        #[arg(long, value_name = "NODE_CERT")]
        cert: PathBuf,
    },
}

/// The largest certificate file read, in bytes.
const CERTIFICATE_FILE_BYTES_MAX: u64 = 64 * 1024;

pub(crate) fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Generate { out } => {
            let key = NodeKey::generate()?;
            key.write_new(&out)?;
            println!("{}", key.node_id());
        }
        KeyCommand::Show { key_file } => println!("{}", NodeKey::load(&key_file)?.node_id()),
    }
    Ok(())
}

pub(crate) fn ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { ca_dir: CaDir { path: dir }, name, days } => {
            FederationCa::init(&dir, &name, now_unix_millis(), days)?;
            write_subject_key_secret(&dir.join(SUBJECT_KEY_SECRET_FILE))?;
            println!("{}", dir.join(civmesh_certs::CA_CERT_FILE_NAME).display());
        }
        CaCommand::Issue(args) => issue(args)?,
    }
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let org = OrgId::new(&args.membership.org)?;
    let node_id = args.peer_id.parse()?;
    let ca = FederationCa::load(&args.ca_dir.path)?;
    let mut request =
        IssueRequest::for_days(org, args.membership.role.into(), node_id, now_unix_millis(), args.days)?;
    request.subject_alt_names = args.subject_alt_names;
    let pem = ca.issue(&request)?;
    write_new_file(&args.out, pem.as_bytes(), 0o644)?;
    println!("{}", args.out.display());
    Ok(())
}

pub(crate) fn cert(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Verify { ca_cert: CaCert { path: ca }, cert } => {
            let ca_certificate = CaCertificate::from_pem(&read_certificate_file(&ca)?)
                .with_context(|| format!("CA certificate {}", ca.display()))?;
            let certificate = NodeCertificate::from_pem(&read_certificate_file(&cert)?)
                .with_context(|| format!("node certificate {}", cert.display()))?;
            let identity = certificate
                .verify(&ca_certificate, now_unix_millis(), &RevocationSet::default())
                .with_context(|| format!("node certificate {}", cert.display()))?;
            println!("ok: peer_id={} org={} role={}", identity.node_id, identity.org, identity.role);
        }
    }
    Ok(())
}

/// The federation's subject-key secret, beside the CA and in auditors' nodes.
pub(crate) const SUBJECT_KEY_SECRET_FILE: &str = "subject-key.secret";
/// A node's organisation subject key (hex), derived from the secret.
pub(crate) const ORG_SUBJECT_KEY_FILE: &str = "org-subject-key.secret";
/// Random bytes in the subject-key secret.
const SUBJECT_KEY_SECRET_BYTES: usize = 32;

fn write_subject_key_secret(path: &std::path::Path) -> anyhow::Result<()> {
    use ring::rand::SecureRandom;
    let mut secret = [0u8; SUBJECT_KEY_SECRET_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let text: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
    write_new_file(path, text.as_bytes(), 0o600)
}

fn read_certificate_file(path: &std::path::Path) -> anyhow::Result<String> {
    let length = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    anyhow::ensure!(
        length <= CERTIFICATE_FILE_BYTES_MAX,
        "{} is {length} bytes, too large for a certificate",
        path.display()
    );
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_new_file(path: &std::path::Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    civmesh_certs::write_new_file_synced(path, contents, mode)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}
