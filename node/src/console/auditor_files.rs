//! What the auditor's pages read and write on this node: its directory, the
//! CA it trusts, the federation's subject-key secret (an auditor's node
//! holds it), the checkpoints verified before, and the bundle of its own
//! log, exported a page of the archive at a time as `civmesh audit export`
//! does ([`ArchiveWriter`]).

use std::path::{Path, PathBuf};

use civmesh_certs::{now_unix_millis, CaCertificate};
use civmesh_policy::audit::{
    verify_stream_collecting, write_bundle_start, ArchiveWriter, AuditReport, BundleError, BundleHeader,
    BundleReader, Checks, Collect, ExportError, SeenCheckpoint, SubjectAccess,
};
use civmesh_policy::PolicyState;

use crate::api::{Shared, AUDIT_COMMANDS_PER_REQUEST_MAX};
use crate::audit::seen::SeenFile;

/// The federation's subject-key secret in an auditor's node directory.
const SUBJECT_KEY_SECRET_FILE: &str = "subject-key.secret";
/// Where the console keeps the checkpoints it verified, per federation (the
/// format of `civmesh audit verify --seen`).
const SEEN_FILE: &str = "console-seen-checkpoints.json";
/// The largest CA certificate, secret or seen-checkpoints file read, in bytes.
const SMALL_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Why a file the auditor's pages need is not there.
#[derive(Debug, thiserror::Error)]
pub(super) enum FileError {
    /// This node holds no subject-key secret: it is not an auditor's node.
    #[error("this node holds no subject-key secret")]
    NoSecret,
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// This node's directory.
fn node_dir(state: &Shared) -> &Path {
    &state.console.node_dir
}

fn read_bounded(path: &Path) -> Result<String, FileError> {
    let io = |error: std::io::Error| FileError::Io(format!("{}: {error}", path.display()));
    if std::fs::metadata(path).map_err(io)?.len() > SMALL_FILE_BYTES_MAX {
        return Err(FileError::Io(format!("{} is too large", path.display())));
    }
    std::fs::read_to_string(path).map_err(io)
}

/// The CA this node trusts (DER): its configured CA certificate.
pub(super) fn trusted_ca(state: &Shared) -> Result<Vec<u8>, FileError> {
    let dir = node_dir(state);
    let config = crate::config::NodeConfig::load(dir).map_err(|error| FileError::Io(error.to_string()))?;
    let path = crate::config::NodeConfig::resolve(dir, &config.node.ca_certificate_file);
    let pem = read_bounded(&path)?;
    let ca = CaCertificate::from_pem(&pem).map_err(|error| FileError::Io(error.to_string()))?;
    Ok(ca.der().to_vec())
}

/// The federation's subject-key secret, trimmed, if this node holds it.
pub(super) fn subject_key_secret(state: &Shared) -> Result<String, FileError> {
    let path = node_dir(state).join(SUBJECT_KEY_SECRET_FILE);
    if !path.exists() {
        return Err(FileError::NoSecret);
    }
    Ok(read_bounded(&path)?.trim().to_string())
}

/// The seen-checkpoints file of this node's console.
fn seen_file(state: &Shared) -> Result<SeenFile, FileError> {
    SeenFile::read(&node_dir(state).join(SEEN_FILE), SMALL_FILE_BYTES_MAX)
        .map_err(|error| FileError::Io(error.to_string()))
}

/// The checkpoints verified before on this node for the federation of `ca_der`.
pub(super) fn seen_checkpoints(state: &Shared, ca_der: &[u8]) -> Result<Vec<SeenCheckpoint>, FileError> {
    Ok(seen_file(state)?.checkpoints(ca_der))
}

/// Remembers `latest`, verified now, for the federation of `ca_der`.
pub(super) fn remember_checkpoint(
    state: &Shared,
    ca_der: &[u8],
    latest: SeenCheckpoint,
) -> Result<(), FileError> {
    let mut seen = seen_file(state)?;
    if !seen.remember(ca_der, latest) {
        return Ok(());
    }
    seen.write(&node_dir(state).join(SEEN_FILE)).map_err(|error| FileError::Io(error.to_string()))
}

/// A private working directory for a bundle in the node's directory (the
/// same disk as the log), removed when dropped.
pub(super) fn work_dir(state: &Shared) -> Result<tempfile::TempDir, FileError> {
    tempfile::Builder::new()
        .prefix("console-audit-")
        .tempdir_in(node_dir(state))
        .map_err(|error| FileError::Io(error.to_string()))
}

/// Why this node's log could not be exported.
#[derive(Debug, thiserror::Error)]
pub(super) enum OwnLogError {
    /// The log has no genesis yet.
    #[error("the log has no genesis yet")]
    NoGenesis,
    /// The archive is not whole or not readable.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The archive ended before the commands the state counts.
    #[error("the archive ends at command {0}, before the commands applied")]
    ArchiveShort(u64),
    /// Reading the archive or writing the bundle failed.
    #[error("{0}")]
    Io(String),
}

/// Writes this node's whole log, as its replica has applied it now, to the
/// bundle `path` (every command from the genesis, every access entry);
/// `progress` hears the commands written and how many there are.
pub(super) fn export_own_log(
    state: &Shared,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<BundleHeader, OwnLogError> {
    let (total, federation) = state
        .log
        .state()
        .read(|applied| (applied.policy.commands_applied, applied.policy.federation.clone()));
    let federation = federation.ok_or(OwnLogError::NoGenesis)?;
    let header = BundleHeader {
        federation_name: federation.name,
        ca_certificate_der: federation.ca_certificate_der,
        exported_by: state.identity.node_id,
        exported_at_ms: now_unix_millis(),
        from_entry: 0,
        to_entry: u64::MAX,
        command_count: total,
    };
    let io = |error: std::io::Error| OwnLogError::Io(error.to_string());
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    write_bundle_start(&mut out, &header).map_err(ExportError::from)?;
    let mut writer = ArchiveWriter::new(out, None);
    while writer.exported().commands < total {
        let next = writer.exported().commands + 1;
        let wanted =
            usize::try_from(total - next + 1).unwrap_or(usize::MAX).min(AUDIT_COMMANDS_PER_REQUEST_MAX);
        let page =
            state.log.history().commands(next, wanted).map_err(|error| OwnLogError::Io(error.to_string()))?;
        if page.is_empty() {
            return Err(OwnLogError::ArchiveShort(next - 1));
        }
        for command in page.iter().take(wanted) {
            writer.push(command)?;
        }
        progress(writer.exported().commands, total);
    }
    let (out, _) = writer.finish()?;
    out.into_inner().map_err(|error| io(error.into_error()))?;
    Ok(header)
}

/// Why this node's log could not be written to a working bundle.
pub(super) enum OwnBundleError {
    /// No working directory.
    File(FileError),
    /// The export failed.
    Export(OwnLogError),
}

/// This node's whole log as a bundle in a new working directory (removed
/// when the directory is dropped); `progress` as for [`export_own_log`].
pub(super) fn own_log_bundle(
    state: &Shared,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(tempfile::TempDir, PathBuf), OwnBundleError> {
    let dir = work_dir(state).map_err(OwnBundleError::File)?;
    let path = dir.path().join("own-log.bundle");
    export_own_log(state, &path, progress).map_err(OwnBundleError::Export)?;
    Ok((dir, path))
}

/// Why a bundle could not be replayed.
pub(super) enum ReplayError {
    /// A file it needs (the CA, the seen checkpoints, the bundle) failed.
    File(FileError),
    /// The bundle could not be read or trusted.
    Bundle(BundleError),
}

/// What a replay found.
pub(super) struct Replayed {
    /// The bundle's header.
    pub header: BundleHeader,
    /// The replay's findings.
    pub report: AuditReport,
    /// The state the replay ended in.
    pub state: PolicyState,
    /// The subject's accesses, if `collect` asked for them.
    pub accesses: Vec<SubjectAccess>,
    /// The CA this node trusts (DER), which the replay checked the bundle against.
    pub trusted: Vec<u8>,
}

/// Replays the bundle at `path` against this node's CA and the checkpoints
/// it verified before, collecting what `collect` asks for; `progress`
/// hears the commands replayed and how many there are.
pub(super) fn replay_bundle(
    state: &Shared,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
    collect: Collect<'_>,
) -> Result<Replayed, ReplayError> {
    let trusted = trusted_ca(state).map_err(ReplayError::File)?;
    let seen = seen_checkpoints(state, &trusted).map_err(ReplayError::File)?;
    let file =
        std::fs::File::open(path).map_err(|error| ReplayError::File(FileError::Io(error.to_string())))?;
    let reader = BundleReader::open(std::io::BufReader::new(file)).map_err(ReplayError::Bundle)?;
    let header = reader.header().clone();
    let total = header.command_count;
    progress(0, total);
    let mut advance = |done| progress(done, total);
    let (report, replayed, accesses) =
        verify_stream_collecting(reader, Checks::new(Some(&trusted), &seen), &mut advance, collect)
            .map_err(ReplayError::Bundle)?;
    Ok(Replayed { header, report, state: replayed, accesses, trusted })
}
