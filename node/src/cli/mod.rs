//! The `civmesh` command line, as clap types. Parsing only; the commands live
//! in their own modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod audit;
mod cluster;
mod correction;
mod demo;
pub(crate) mod identity;
mod init;
mod records;

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
    /// Create a node's data directory: key, certificate, API token, config.
    Init(InitArgs),
    /// Run a node until SIGINT or SIGTERM.
    Run {
        /// The node's data directory (made by `civmesh init`).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Operate the policy log's cluster through running nodes' APIs.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// This organisation's authoritative records.
    #[command(subcommand)]
    Records(RecordsCommand),
    /// Sign policy commands with the node's key and commit them.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The catalog and the three lists.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Corrections: submit at a street; review at the owner; statistics.
    #[command(subcommand)]
    Correction(CorrectionCommand),
    /// Evaluate how each department serves the streets, per dataset and time
    /// bucket (Asia/Shanghai), from the policy log: the same on every node.
    Evaluate {
        /// Any node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The first day, YYYY-MM-DD (default: the first event in the log).
        #[arg(long)]
        from: Option<String>,
        /// The last day, YYYY-MM-DD, included (default: the last event).
        #[arg(long)]
        to: Option<String>,
        /// The bucket length: day, week or month.
        #[arg(long, default_value = "day")]
        bucket: String,
        /// The output: a table, JSON, or CSV (departments, or streets with
        /// `streets-csv`) for spreadsheets.
        #[arg(long, value_enum, default_value_t = EvaluationFormat::Table)]
        format: EvaluationFormat,
    },
    /// The auditor's tools: export the access log as a bundle, verify it
    /// offline, list a subject's accesses.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Scoped API tokens for department systems.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the local demo federation (the `civmesh-demo` program beside this
    /// binary); arguments such as `--check` and `--dir DIR` go to it.
    Demo {
        /// Arguments for the demo.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Ask a dataset's owner for records, under a grant; prints the answer.
    Query {
        /// This node's data directory (its key signs the query).
        #[arg(long)]
        node_dir: PathBuf,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// Record keys (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// Fields wanted (repeatable).
        #[arg(long = "field", required = true)]
        fields: Vec<String>,
        /// The purpose, as the grant names it.
        #[arg(long)]
        purpose: String,
        /// The grant relied on.
        #[arg(long)]
        grant: Option<u64>,
    },
}

/// How `civmesh evaluate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvaluationFormat {
    /// Two tables for people: departments, then streets.
    Table,
    /// The API's JSON.
    Json,
    /// The department rows as CSV.
    Csv,
    /// The street rows as CSV.
    StreetsCsv,
}

/// `civmesh records ...`, through the running node in `--node-dir`.
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Import rows from a .csv (header row naming every declared field) or
    /// .jsonl file. Each row is validated against the dataset's schema and
    /// every refused row is reported by line number; by default nothing is
    /// written if any row is refused. A row equal to the record now (or to
    /// what the last import wrote) writes no version.
    Import {
        /// The owner node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The dataset id.
        #[arg(long)]
        dataset: String,
        /// A name for this import, recorded as each version's provenance.
        #[arg(long)]
        batch: Option<String>,
        /// Write the rows that pass and report the others (exit 0).
        #[arg(long)]
        partial: bool,
        /// The file's encoding: utf-8 (the default), gbk or gb18030 (Excel
        /// on Chinese Windows saves GBK).
        #[arg(long)]
        encoding: Option<String>,
        /// The file.
        file: PathBuf,
    },
    /// Show a record and its history.
    Show {
        /// The owner node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The dataset id.
        #[arg(long)]
        dataset: String,
        /// The record key.
        #[arg(long)]
        key: String,
        /// Show the version in force at this time (ms since the epoch).
        #[arg(long)]
        at_ms: Option<u64>,
    },
}

/// `civmesh correction ...`, through the running node in `--node-dir`.
#[derive(Debug, Subcommand)]
pub enum CorrectionCommand {
    /// Sign a correction with this node's key and send it to the dataset's
    /// owner (kept in the outbox and retried until delivered); prints its id.
    Submit {
        /// The submitting node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The record key.
        #[arg(long)]
        key: String,
        /// The record version this correction is based on.
        #[arg(long)]
        base_version: u64,
        /// A change, `FIELD=VALUE` (repeatable). VALUE is read as JSON when
        /// it parses (12, true, null, "text"), otherwise as text.
        #[arg(long = "set", required = true)]
        changes: Vec<String>,
        /// Why the record is wrong.
        #[arg(long)]
        reason: String,
        /// What was seen, in words.
        #[arg(long, default_value = "")]
        evidence: String,
        /// A photo or PDF as evidence (repeatable; at most `attachments_max`
        /// files of `attachment_bytes_max` bytes each, from `[corrections]`
        /// in civmesh.toml). Its SHA-256 is signed; the bytes follow the
        /// correction to the owner.
        #[arg(long = "attachment")]
        attachments: Vec<PathBuf>,
        /// The operator's name.
        #[arg(long)]
        operator: String,
        /// Wait this long for the owner's outcome, and print it.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
    /// List this node's corrections (inbox and outbox), newest first.
    List {
        /// The node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// Only this status: awaiting_review, superseded_by_import, accepted,
        /// applied, rejected, conflict, submitted, failed (or a progress name
        /// such as awaiting_outcome); another name is an error.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one correction; at the owner, beside the record's base and
    /// current versions.
    Show {
        /// The node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The correction id (hex).
        id: String,
        /// Save the attachments this node holds into this directory, as
        /// ID-INDEX.EXT (the extension from the bytes' content type).
        #[arg(long)]
        save_attachments: Option<PathBuf>,
    },
    /// Accept a correction awaiting review or superseded by an import (at
    /// the owner); the operator is recorded in the signed event.
    Accept {
        /// The owner node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The correction id (hex).
        id: String,
        /// The reviewer's name.
        #[arg(long)]
        operator: String,
    },
    /// Reject a correction awaiting review, with a reason (at the owner).
    Reject {
        /// The owner node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The correction id (hex).
        id: String,
        /// Why, for the submitter.
        #[arg(long)]
        reason: String,
        /// The reviewer's name.
        #[arg(long)]
        operator: String,
    },
    /// Per owner and dataset: corrections by stage, median and p90
    /// turnaround, acceptance rate; computed from the policy log.
    Stats {
        /// Any node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
    },
    /// Declare (or with --remove, withdraw) an auto-accept rule: corrections
    /// from SUBMITTER to DATASET changing only these fields need no review.
    AutoAccept {
        /// The owner node's data directory (its key signs the rule).
        #[arg(long)]
        node_dir: PathBuf,
        /// The dataset.
        #[arg(long)]
        dataset: String,
        /// The submitting organisation, e.g. street/jingansi.
        #[arg(long)]
        submitter: String,
        /// Fields that may change without review (repeatable).
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Withdraw the rule instead.
        #[arg(long)]
        remove: bool,
    },
}

/// `civmesh audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write a self-contained audit bundle from a node's archive of applied
    /// commands (the node must hold the whole history, e.g. a founding voter).
    Export {
        /// The node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// The first access entry the report covers (`audit verify` and
        /// `audit subject` report from it; the history before it is still
        /// in the bundle, since the replay needs it).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many access entries (all when absent).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Verify a bundle offline: every signature, every checkpoint's root
    /// and quorum, consistency with checkpoints seen in earlier runs, and a
    /// replay of the policy behind every release. Exits non-zero on failure.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// The federation CA certificate the auditor trusts (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// Where checkpoints seen in earlier runs are kept.
        #[arg(long, default_value = "civmesh-seen-checkpoints.json")]
        seen: PathBuf,
        /// Where to write the JSON report (default: BUNDLE.report.json).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// List every access to one subject's records (PIPL Art. 45): who, when,
    /// for what purpose, under which legal basis, and which fields.
    Subject {
        /// The bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// The federation CA certificate the auditor trusts (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// The subject's record key (e.g. a citizen id or credit code).
        #[arg(long)]
        key: String,
        /// The federation's subject-key secret (to hash the key as the log does).
        #[arg(long)]
        secret_file: PathBuf,
    },
}

/// `civmesh token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token that may do only what its scopes name; prints it once
    /// (only its hash is kept, in DATA_DIR/api-tokens.json). A running node
    /// picks it up at once.
    Create {
        /// The node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// Who holds it, e.g. the department system's name.
        #[arg(long)]
        name: String,
        /// A scope (repeatable).
        #[arg(long = "scope", value_enum, required = true)]
        scopes: Vec<crate::api::tokens::Scope>,
    },
}

/// `civmesh policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Sign the command in a JSON file (e.g. `{"PublishDataset": {...}}`)
    /// with the node's key and commit it; prints the outcome.
    Submit {
        /// The node's data directory (its key signs).
        #[arg(long)]
        node_dir: PathBuf,
        /// The JSON file holding one command.
        file: PathBuf,
    },
}

/// `civmesh catalog ...`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// The catalog-match report: demands with no producer, demands waiting
    /// for a grant, grants about to expire, datasets nobody demands.
    Match {
        /// Any node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
        /// Report grants that expire within this many days.
        #[arg(long, default_value_t = 30)]
        expiry_days: u32,
    },
}

/// Arguments of `civmesh init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The data directory to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The CA directory that issues this node's certificate.
    #[arg(long)]
    pub ca: PathBuf,
    /// Organisation id, `kind/name`.
    #[arg(long)]
    pub org: String,
    /// Role: hub, department, street or auditor.
    #[arg(long)]
    pub role: String,
    /// libp2p listen multiaddr.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    pub p2p_listen: String,
    /// The libp2p address peers dial, if not the listen address.
    #[arg(long)]
    pub p2p_advertise: Option<String>,
    /// HTTP API listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api_listen: String,
    /// PeerIds trusted before genesis (the founding voters); repeatable.
    #[arg(long = "bootstrap-peer")]
    pub bootstrap_peers: Vec<String>,
    /// Certificate validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Use this existing key (from `civmesh key generate`) instead of
    /// generating one; it is copied into the data directory.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Build a Raft snapshot after this many log entries.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot before they are purged.
    #[arg(long, default_value_t = 1000)]
    pub entries_kept_after_snapshot: u64,
}

/// `civmesh cluster ...`. Nodes are named by their data directories; the
/// commands read each one's `node.json` and API token.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print each node's view: role, leader, term, committed and applied index.
    Status {
        /// Data directories of running nodes (repeatable).
        #[arg(long = "node-dir", required = true)]
        node_dirs: Vec<PathBuf>,
    },
    /// Initialise the voters and commit the genesis entry (CA certificate and
    /// founding members), signed with the CA key.
    Bootstrap {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// The federation's name.
        #[arg(long)]
        federation_name: String,
        /// Voters' data directories (3 or 5).
        #[arg(long = "voter-dir", required = true)]
        voter_dirs: Vec<PathBuf>,
        /// Other founding members' data directories (learners).
        #[arg(long = "member-dir")]
        member_dirs: Vec<PathBuf>,
    },
    /// Admit a node to the federation (AdmitMember signed with the CA key).
    Admit {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Any running member's data directory, to submit through.
        #[arg(long)]
        via_dir: PathBuf,
        /// The new node's data directory.
        #[arg(long)]
        node_dir: PathBuf,
    },
    /// Revoke a member (RevokeMember signed with the CA key).
    Revoke {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Any running member's data directory, to submit through.
        #[arg(long)]
        via_dir: PathBuf,
        /// The PeerId to revoke.
        #[arg(long)]
        peer_id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Add a running node as a learner (it catches up by log or snapshot).
    AddLearner {
        /// Data directories of the voters; the leader among them is used.
        #[arg(long = "voter-dir", required = true)]
        voter_dirs: Vec<PathBuf>,
        /// The learner's data directory.
        #[arg(long)]
        learner_dir: PathBuf,
    },
    /// Make exactly these nodes the voters (promote or demote).
    Voters {
        /// Data directories of current voters; the leader among them is used.
        #[arg(long = "via-dir", required = true)]
        via_dirs: Vec<PathBuf>,
        /// The PeerIds that are to vote.
        #[arg(long = "peer-id", required = true)]
        peer_ids: Vec<String>,
    },
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

/// Runs one `civmesh` command to completion.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Key(command) => identity::key(command),
        Command::Ca(command) => identity::ca(command),
        Command::Cert(command) => identity::cert(command),
        Command::Init(args) => init::init(args),
        Command::Cluster(command) => cluster::cluster(command),
        Command::Records(command) => records::records(command),
        Command::Policy(command) => records::policy(command),
        Command::Catalog(command) => records::catalog(command),
        Command::Correction(command) => correction::correction(command),
        Command::Evaluate { node_dir, from, to, bucket, format } => {
            correction::evaluate(&node_dir, from.as_deref(), to.as_deref(), &bucket, format)
        }
        Command::Audit(command) => audit::audit(command),
        Command::Token(command) => match command {
            TokenCommand::Create { node_dir, name, scopes } => {
                let token = crate::api::tokens::create_token(&node_dir, &name, scopes.into_iter().collect())?;
                println!("{token}");
                Ok(())
            }
        },
        Command::Demo { args } => demo::run_demo(&args),
        Command::Query { node_dir, dataset, keys, fields, purpose, grant } => {
            records::query(crate::query::QuerySpec { dataset, keys, fields, purpose, grant }, &node_dir)
        }
        Command::Run { data_dir } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(crate::run::run(data_dir, demo::shutdown_signal()))
        }
    }
}
