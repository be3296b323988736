//! `civmesh audit ...`: export a bundle from a node's archive, verify it
//! offline with a progress bar, list a subject's accesses, and check a
//! node's proofs ([`prove`]). Verification
//! itself lives in `civmesh_policy::audit`; this module reads and writes the
//! files (the bundle, the JSON report, the seen-checkpoints file).

mod prove;

use crate::audit::seen::SeenFile;
use std::path::{Path, PathBuf};

use anyhow::Context;
use civmesh_certs::{codec, now_unix_millis, CaCertificate};
use civmesh_policy::audit::{
    checked_subject_accesses, verify_stream_collecting, write_bundle_start, ArchiveWriter, ArchivedCommand,
    AuditReport, BundleHeader, BundleReader, Checks, Exported, SeenCheckpoint, SubjectAccess,
    SubjectReportError,
};
use civmesh_policy::subject_keys::SubjectLookup;
use civmesh_policy::PolicyState;
use clap::{Args, Subcommand};

use crate::api::AUDIT_COMMANDS_PER_REQUEST_MAX;
use crate::cli::args::{Bundle, CaCert, NodeDir};
use crate::client::NodeApi;

/// `civmesh audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write a self-contained audit bundle from a node's archive of applied
    /// commands (the node must hold the whole history, e.g. a founding voter).
    Export(ExportArgs),
    /// Verify a bundle offline: every signature, every checkpoint's root
    /// and quorum, consistency with checkpoints seen in earlier runs, and a
    /// replay of the policy behind every release. Exits non-zero on failure.
    Verify(VerifyArgs),
    /// List every access to one subject's records (PIPL Art. 45): who, when,
    /// for what purpose, under which legal basis, and which fields.
    Subject(SubjectArgs),
    /// Without a bundle, check proofs from nodes' stored audit trees: each
    /// node's latest final checkpoint extends the checkpoints seen before
    /// and the other nodes', and the given leaves are in checkpoints seen
    /// before. Exits non-zero if any proof fails.
    Prove(prove::ProveArgs),
}

/// Arguments of `civmesh audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The node whose archive is exported.
    #[command(flatten)]
    pub node_dir: NodeDir,
    /// The bundle file to write.
    #[arg(long, value_name = "OUT_FILE")]
    pub out: PathBuf,
    /// The position of the first access entry the report covers, from 0
    /// (`audit verify` and `audit subject` report from it; the history
    /// before it is still in the bundle, since the replay needs it).
    #[arg(long, value_name = "FROM_ENTRY", default_value_t = 0)]
    pub from_entry: u64,
    /// The position the bundle ends before: access entries at it and after
    /// are left out (all when absent).
    #[arg(long, value_name = "UNTIL_ENTRY")]
    pub until_entry: Option<u64>,
}

/// Arguments of `civmesh audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle to verify.
    #[command(flatten)]
    pub bundle: Bundle,
    /// The federation CA the auditor trusts.
    #[command(flatten)]
    pub ca_cert: CaCert,
    /// Where checkpoints seen in earlier runs are kept.
    #[arg(long, value_name = "SEEN_FILE", default_value = "civmesh-seen-checkpoints.json")]
    pub seen: PathBuf,
    /// Where to write the JSON report (default: BUNDLE.report.json).
    #[arg(long, value_name = "REPORT_FILE")]
    pub report: Option<PathBuf>,
    /// Fail if any leaf comes after the latest final checkpoint: only
    /// anchored leaves are proven complete (an exporter could have left
    /// out later ones).
    #[arg(long)]
    pub require_anchored: bool,
}

/// Arguments of `civmesh audit subject`.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// The bundle to read.
    #[command(flatten)]
    pub bundle: Bundle,
    /// The federation CA the auditor trusts.
    #[command(flatten)]
    pub ca_cert: CaCert,
    /// The subject's record key (e.g. a citizen id or credit code).
    #[arg(long, value_name = "RECORD_KEY")]
    pub record_key: String,
    /// The federation's subject-key secret (to hash the key as the log does).
    #[arg(long, value_name = "SECRET_FILE")]
    pub secret_file: PathBuf,
    /// Where checkpoints seen in earlier runs are kept (read only here).
    #[arg(long, value_name = "SEEN_FILE", default_value = "civmesh-seen-checkpoints.json")]
    pub seen: PathBuf,
}

/// The largest page of archived commands read, in bytes.
const ARCHIVE_PAGE_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// The largest CA certificate or secret file read, in bytes.
const SMALL_FILE_BYTES_MAX: u64 = 64 * 1024;

pub(super) fn execute(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export(args) => {
            export(&args.node_dir.path, &args.out, args.from_entry, args.until_entry)
        }
        AuditCommand::Verify(args) => {
            let bundle = &args.bundle.path;
            let report_path = args.report.unwrap_or_else(|| bundle.with_extension("report.json"));
            verify(bundle, &args.ca_cert.path, &args.seen, &report_path, args.require_anchored)
        }
        AuditCommand::Subject(args) => subject(&args),
        AuditCommand::Prove(args) => prove::prove(&args),
    }
}

fn export(node_dir: &Path, out: &Path, from: u64, until: Option<u64>) -> anyhow::Result<()> {
    // The header counts the commands, so they go to a side file first, a
    // page at a time; then the header and the side file make the bundle.
    let pieces_path = out.with_extension("commands.partial");
    let temporary = out.with_extension("partial");
    let written = write_commands(node_dir, &pieces_path, until).and_then(|exported| {
        let config = crate::config::NodeConfig::load(node_dir)?;
        let key_file = crate::config::NodeConfig::resolve(node_dir, &config.node.key_file);
        let header = BundleHeader {
            federation_name: exported.federation_name,
            ca_certificate_der: exported.ca_certificate_der,
            exported_by: civmesh_certs::NodeKey::load(&key_file)?.node_id(),
            exported_at_ms: now_unix_millis(),
            from_entry: from,
            to_entry: until.unwrap_or(u64::MAX),
            command_count: exported.commands,
        };
        let bytes = assemble(&temporary, &header, &pieces_path)?;
        std::fs::rename(&temporary, out)?;
        sync_parent(out)?;
        println!(
            "wrote {} ({bytes} bytes): {} commands, {} access entries",
            out.display(),
            exported.commands,
            exported.entries
        );
        Ok(())
    });
    let _ = std::fs::remove_file(&pieces_path);
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Writes the node's archived commands to `path` as bundle pieces, a page
/// at a time, up to the access entry `until`.
fn write_commands(node_dir: &Path, path: &Path, until: Option<u64>) -> anyhow::Result<Exported> {
    let api = NodeApi::open(node_dir)?;
    let progress = indicatif::ProgressBar::new_spinner();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut pieces = ArchiveWriter::new(std::io::BufWriter::new(file), until);
    'pages: loop {
        let page_path = format!(
            "/v1/audit/commands?from={}&limit={AUDIT_COMMANDS_PER_REQUEST_MAX}",
            pieces.exported().commands + 1
        );
        let page: Vec<ArchivedCommand> = codec::decode_exact(
            &api.get_bytes(&page_path, ARCHIVE_PAGE_BYTES_MAX)?,
            ARCHIVE_PAGE_BYTES_MAX as usize,
        )
        .context("decoding the node's archive")?;
        if page.is_empty() {
            break;
        }
        for command in page {
            if !pieces.push(&command)? {
                break 'pages;
            }
        }
        let exported = pieces.exported();
        progress.set_message(format!("{} commands, {} access entries", exported.commands, exported.entries));
    }
    progress.finish_and_clear();
    let (mut out, exported) = pieces.finish()?;
    std::io::Write::flush(&mut out)?;
    Ok(exported)
}

/// Writes the bundle at `path` (new, 0644, synced): `header`, then the
/// pieces at `pieces_path`. Returns its length in bytes.
fn assemble(path: &Path, header: &BundleHeader, pieces_path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let writing = || format!("writing {}", path.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .with_context(writing)?;
    let mut out = std::io::BufWriter::new(file);
    write_bundle_start(&mut out, header)?;
    std::io::copy(&mut std::fs::File::open(pieces_path)?, &mut out).with_context(writing)?;
    let file = out.into_inner().map_err(|error| error.into_error()).with_context(writing)?;
    file.sync_all().with_context(writing)?;
    Ok(file.metadata()?.len())
}

/// Syncs the directory holding `path`, so a rename into it survives a crash.
fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}

/// Reads and verifies a bundle as a stream (memory holds one window of
/// commands, whatever the bundle's size), with a progress bar.
/// What a replay of a bundle found.
struct Verified {
    header: BundleHeader,
    report: AuditReport,
    state: PolicyState,
    accesses: Vec<SubjectAccess>,
    /// How many accesses each kind of flag holds.
    flags: std::collections::BTreeMap<civmesh_policy::audit::FlagKind, u64>,
}

fn load_and_verify(
    bundle_path: &Path,
    ca: &Path,
    seen: &[SeenCheckpoint],
    subject: Option<&mut SubjectLookup>,
) -> anyhow::Result<Verified> {
    let reading = || format!("reading {}", bundle_path.display());
    let file = std::fs::File::open(bundle_path).with_context(reading)?;
    let reader = BundleReader::open(std::io::BufReader::new(file)).with_context(reading)?;
    let header = reader.header().clone();
    let trusted = read_ca(ca)?;
    let progress = indicatif::ProgressBar::new(header.command_count);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} commands ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut advance = |done| progress.set_position(done);
    let checks = Checks::new(Some(&trusted), seen);
    let mut tally = civmesh_policy::audit::AccessTally::new();
    let collect = civmesh_policy::audit::Collect { subject, tally: Some(&mut tally) };
    let (report, state, accesses) =
        verify_stream_collecting(reader, checks, &mut advance, collect).with_context(reading)?;
    progress.finish_and_clear();
    let flags = tally.finish(report.anchored_leaves).flag_counts;
    Ok(Verified { header, report, state, accesses, flags })
}

fn read_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        std::fs::metadata(path)?.len() <= SMALL_FILE_BYTES_MAX,
        "{} is too large",
        path.display()
    );
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(CaCertificate::from_pem(&pem)
        .with_context(|| format!("{} is not a CA certificate", path.display()))?
        .der()
        .to_vec())
}

/// The seen-checkpoints file (any size: the auditor's own), or an empty
/// one if there is none yet.
fn read_seen(seen_path: &Path) -> anyhow::Result<SeenFile> {
    Ok(SeenFile::read(seen_path, u64::MAX)?)
}

fn verify(
    bundle_path: &Path,
    ca: &Path,
    seen_path: &Path,
    report_path: &Path,
    require_anchored: bool,
) -> anyhow::Result<()> {
    let mut seen_file = read_seen(seen_path)?;
    let ca_der = read_ca(ca)?;
    let seen = seen_file.checkpoints(&ca_der);
    let Verified { header: bundle, mut report, state, flags, .. } =
        load_and_verify(bundle_path, ca, &seen, None)?;
    if require_anchored {
        report.require_anchored();
    }
    std::fs::write(report_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("federation:       {}", report.federation_name);
    println!("commands:         {}", report.commands);
    println!(
        "access entries:   {} ({} permits, {} denials)",
        report.access_entries, report.permits, report.denials
    );
    if bundle.from_entry > 0 || bundle.to_entry < report.access_entries {
        let to = bundle.to_entry.min(report.access_entries);
        println!(
            "exported range:   entries {}..{to} (the history before it is replayed too)",
            bundle.from_entry
        );
    }
    println!("tree leaves:      {} (access entries and correction outcomes)", report.leaves);
    println!("checkpoints:      {} final, each root and quorum checked", report.checkpoints);
    println!(
        "anchored:         leaves 0..{} (the latest final checkpoint); {} after it unanchored",
        report.anchored_leaves, report.unanchored_leaves
    );
    println!("checked against:  {} checkpoint(s) seen before", seen.len());
    println!("root:             {}", report.root);
    print_lifecycle(&civmesh_policy::audit::lifecycle_report(&state));
    let after_withdrawal = flags.get(&civmesh_policy::audit::FlagKind::ReleasedAfterWithdrawal).copied();
    println!("releases after a withdrawn consent: {} (must be 0)", after_withdrawal.unwrap_or(0));
    println!("report:           {}", report_path.display());
    if !report.ok {
        for failure in &report.failures {
            println!(
                "FAILED: command {} access entry {}: {:?}: {}",
                failure.command_sequence.map_or("-".to_string(), |s| s.to_string()),
                failure.access_entry.map_or("-".to_string(), |e| e.to_string()),
                failure.kind,
                failure.detail
            );
        }
        let first = &report.failures[0];
        anyhow::bail!(
            "{} failed: {} failure(s), the first at command {:?} (access entry {:?})",
            bundle_path.display(),
            report.failures.len(),
            first.command_sequence,
            first.access_entry
        );
    }
    if let Some(latest) = report.latest_checkpoint.clone() {
        seen_file.remember(&ca_der, latest);
        seen_file.write(seen_path)?;
    }
    println!("verified: {} from {}", bundle_path.display(), bundle.exported_by);
    Ok(())
}

/// Deletions per holder, overdue ones by name and date, and sensitive
/// grants without an assessment, as the replay computed them.
fn print_lifecycle(lifecycle: &civmesh_policy::audit::LifecycleReport) {
    use civmesh_policy::evaluation::format_time;
    println!("deletions:        as of {} (the log's latest entry)", format_time(lifecycle.at_ms));
    for holder in &lifecycle.holders {
        println!(
            "  {}: {} grant(s) held, {} receipt(s), {} overdue",
            holder.holder_org, holder.grants_held, holder.receipts, holder.overdue
        );
    }
    for overdue in &lifecycle.overdue {
        let org = lifecycle
            .holders
            .iter()
            .find(|holder| holder.holder == overdue.holder)
            .map_or("an unknown holder", |holder| holder.holder_org.as_str());
        println!(
            "  OVERDUE: {org} under grant {}: {} due {}",
            overdue.grant,
            cause_name(&overdue.cause),
            format_time(overdue.due_at_ms)
        );
    }
    println!(
        "sensitive grants without an impact assessment: {}",
        lifecycle.sensitive_grants_without_assessment.len()
    );
    for owner in &lifecycle.subject_requests {
        println!(
            "subject requests to {}: {} answered ({} late, {} refused), {} open past their deadline",
            owner.owner,
            owner.counts.answered,
            owner.counts.answered_late,
            owner.counts.refused,
            owner.overdue
        );
    }
}

fn cause_name(cause: &civmesh_policy::DeletionCause) -> &'static str {
    match cause {
        civmesh_policy::DeletionCause::RetentionEnded { .. } => "deletion after the retention",
        civmesh_policy::DeletionCause::GrantEnded => "deletion after the grant ended",
        civmesh_policy::DeletionCause::ConsentWithdrawn { .. } => "deletion after a withdrawn consent",
    }
}

fn subject(args: &SubjectArgs) -> anyhow::Result<()> {
    let (bundle_path, ca, secret_file) = (&args.bundle.path, &args.ca_cert.path, &args.secret_file);
    let seen = read_seen(&args.seen)?.checkpoints(&read_ca(ca)?);
    anyhow::ensure!(
        std::fs::metadata(secret_file)?.len() <= SMALL_FILE_BYTES_MAX,
        "the secret file is too large"
    );
    let secret =
        std::fs::read_to_string(secret_file).with_context(|| format!("reading {}", secret_file.display()))?;
    let mut subject = SubjectLookup::new(secret.trim().as_bytes(), &args.record_key);
    let Verified { header: bundle, report, state, accesses, .. } =
        load_and_verify(bundle_path, ca, &seen, Some(&mut subject))?;
    let accesses = checked_subject_accesses(secret.trim().as_bytes(), &bundle, &report, &state, accesses)
        .map_err(|error| match error {
            SubjectReportError::WrongSecret => anyhow::anyhow!(
                "the secret in {} is not this federation's subject-key secret (it does not match the \
                 commitment the CA logged at bootstrap)",
                secret_file.display()
            ),
            other => anyhow::Error::new(other),
        })?;
    println!("{}", serde_json::to_string_pretty(&accesses)?);
    let unanchored = accesses.iter().filter(|access| !access.anchored).count();
    eprintln!("{} access(es) to this subject's records", accesses.len());
    eprintln!(
        "complete up to leaf {} (the latest final checkpoint, of {} leaves); {unanchored} of these \
         accesses come after it and are unanchored",
        report.anchored_leaves, report.leaves
    );
    Ok(())
}
