//! The `civmesh` command line, as clap types. Parsing only; the commands live
//! in their own modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// civmesh: a federated data-sharing node for city departments, street
/// offices and auditors.
#[derive(Debug, Parser)]
#[command(name = "civmesh", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node keys (Ed25519, PKCS#8, mode 0600).
    #[command(subcommand)]
    Key(KeyCommand),
    /// The federation CA.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Node certificates.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// `civmesh key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a node key and print its libp2p PeerId.
    Generate {
        /// Where to write the key (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the PeerId of an existing key file.
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
}

/// `civmesh ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a federation CA: DIR/ca.key (0600) and DIR/ca.pem.
    Init {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name, e.g. "Shanghai civmesh federation".
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node certificate.
    Issue(IssueArgs),
}

/// Arguments of `civmesh ca issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The CA directory (holding ca.key and ca.pem).
    #[arg(long)]
    pub ca: PathBuf,
    /// Organisation id, `kind/name`, e.g. street/jingansi.
    #[arg(long)]
    pub org: String,
    /// Role: hub, department, street or auditor.
    #[arg(long)]
    pub role: String,
    /// The node's libp2p PeerId (from `civmesh key generate`).
    #[arg(long)]
    pub peer_id: String,
    /// Where to write the certificate (PEM; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// DNS names or IP addresses for the node's HTTPS API (repeatable).
    #[arg(long = "san", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub subject_alt_names: Vec<String>,
}

/// `civmesh cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Verify a node certificate against a CA certificate and print what it binds.
    Verify {
        /// The CA certificate (ca.pem).
        #[arg(long)]
        ca: PathBuf,
        /// The node certificate.
        #[arg(long)]
        cert: PathBuf,
    },
}
