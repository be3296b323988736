//! The verifiable access log: its RFC 6962 Merkle tree, the checkpoints
//! signers cosign, the audit bundle, and the auditor's offline verification.
//!
//! Verification is a replay: the bundle carries every policy command in log
//! order, and the auditor runs them through the same deterministic
//! [`PolicyState::apply`] the replicas ran. That re-verifies every
//! signature (the owner's command and the requester's query header), every
//! signer's authority and every permit's justification against the state at
//! its position. The access entries it yields are hashed into the tree, and
//! each final checkpoint's root must match. Roots seen in earlier runs must
//! be prefixes of this bundle's tree (consistency proofs), so a rewritten
//! history is caught between two runs. The format is in docs/audit-bundle.md.

use std::collections::BTreeSet;

use civmesh_certs::{codec, NodeId, OrgId, Role, UnixMillis};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::RootHash;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::access::AccessOutcome;
use crate::model::{LegalBasis, Member, SubjectKeyHash};
use crate::state::{PolicyState, RejectionCode};
use crate::SignedCommand;

/// A signer treats an open checkpoint it cannot cosign as abandoned after
/// this long, in ms, and opens its own. (The state keeps several open at
/// once, so an abandoned one blocks nobody.)
pub const CHECKPOINT_PENDING_MS_MAX: u64 = 30_000;
/// The first bytes of every bundle file.
pub const BUNDLE_MAGIC: [u8; 8] = *b"CIVAUDIT";
/// The bundle format this code writes and reads.
pub const BUNDLE_FORMAT_VERSION: u32 = 1;
/// The largest bundle read, in bytes.
pub const BUNDLE_BYTES_MAX: usize = 16 * 1024 * 1024 * 1024;
/// The largest archived command envelope, in bytes.
pub const ARCHIVED_COMMAND_BYTES_MAX: usize = civmesh_certs::ENVELOPE_BYTES_MAX + 1024;

/// What checkpoint signers sign: the tree at a size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// How many access entries the tree holds.
    pub tree_size: u64,
    /// Its RFC 6962 root (SHA-256).
    pub root: [u8; 32],
    /// The policy-log index the opener had applied.
    pub log_index: u64,
}

/// A checkpoint collecting cosignatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCheckpoint {
    /// What is signed.
    pub body: CheckpointBody,
    /// When it was opened (entry time).
    pub opened_at_ms: UnixMillis,
    /// Who cosigned so far.
    pub cosigners: BTreeSet<NodeId>,
}

/// A checkpoint a majority of signers cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCheckpoint {
    /// What was signed.
    pub body: CheckpointBody,
    /// Who cosigned.
    pub cosigners: BTreeSet<NodeId>,
    /// How many signers were in force when it became final.
    pub signers_in_force: u64,
    /// When it became final (entry time).
    pub final_at_ms: UnixMillis,
}

/// Whether a member cosigns checkpoints: hubs and departments, the
/// organisations that run the federation's voters.
pub fn signs_checkpoints(member: &Member) -> bool {
    matches!(member.role, Role::Hub | Role::Department)
}

/// The leaf input of an access entry or a correction outcome: SHA-256 of
/// the signed command (wire bytes). The tree hashes it as
/// `SHA-256(0x00 || leaf)`.
pub fn leaf_of(envelope: &SignedCommand) -> [u8; 32] {
    codec::sha256(&envelope.to_bytes().unwrap_or_default())
}

/// The access log's Merkle tree (RFC 6962, SHA-256), with the root at every
/// size kept so any checkpoint size can be checked later.
#[derive(Default)]
pub struct AccessTree {
    tree: MemoryBackedTree<Sha256, [u8; 32]>,
    roots: Vec<[u8; 32]>,
}

impl AccessTree {
    /// An empty tree.
    pub fn new() -> Self {
        AccessTree::default()
    }

    /// Appends one leaf.
    pub fn push(&mut self, leaf: [u8; 32]) {
        self.tree.push(leaf);
        self.roots.push(self.tree.root().as_bytes().as_slice().try_into().unwrap_or([0; 32]));
        debug_assert_eq!(self.roots.len() as u64, self.tree.len());
    }

    /// How many leaves.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The root when the tree had `size` leaves (1..=len).
    pub fn root_at(&self, size: u64) -> Option<[u8; 32]> {
        self.roots.get(usize::try_from(size).ok()?.checked_sub(1)?).copied()
    }

    /// Proves, and checks, that the tree of `old_size` leaves with
    /// `old_root` is a prefix of this tree (an RFC 6962 consistency proof).
    pub fn check_consistency(&self, old_size: u64, old_root: &[u8; 32]) -> Result<(), String> {
        if old_size == 0 || old_size > self.len() {
            return Err(format!("a tree of {old_size} leaves is not a prefix of {} leaves", self.len()));
        }
        if old_size == self.len() {
            return (self.root_at(old_size) == Some(*old_root))
                .then_some(())
                .ok_or_else(|| "the root differs at the same size".to_string());
        }
        let proof = self.tree.prove_consistency((self.len() - old_size) as usize);
        let old = RootHash::<Sha256>::new((*old_root).into(), old_size);
        self.tree.root().verify_consistency(&old, &proof).map_err(|error| format!("{error:?}"))
    }
}

/// One command as the log applied it (the unit of the archive and bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedCommand {
    /// 1 for the first command ever applied, then +1.
    pub sequence: u64,
    /// The policy-log entry that carried it.
    pub log_index: u64,
    /// The entry's time (the leader's stamp), which apply uses.
    pub entry_time_ms: UnixMillis,
    /// The signed command, wire bytes.
    pub envelope: Vec<u8>,
    /// Whether the log accepted it.
    pub accepted: bool,
}

/// A self-contained audit bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBundle {
    /// The federation's name (from genesis).
    pub federation_name: String,
    /// The federation's CA certificate (DER), as genesis recorded it.
    pub ca_certificate_der: Vec<u8>,
    /// Who exported it.
    pub exported_by: NodeId,
    /// When.
    pub exported_at_ms: UnixMillis,
    /// The first access entry the report covers.
    pub from_entry: u64,
    /// The access entry the report stops before (`u64::MAX`: all).
    pub to_entry: u64,
    /// Every command from genesis on, in log order.
    pub commands: Vec<ArchivedCommand>,
}

/// Why a bundle could not be read or trusted at all.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a civmesh audit bundle.
    #[error("not a civmesh audit bundle (no CIVAUDIT header)")]
    NotABundle,
    /// A format this verifier does not know.
    #[error("unknown bundle format version {0} (this verifier reads version {BUNDLE_FORMAT_VERSION})")]
    UnknownFormatVersion(u32),
    /// Cut short or damaged.
    #[error("the bundle is truncated or corrupt: {0}")]
    Corrupt(String),
    /// Signed under another CA.
    #[error("the bundle is from another federation: its CA is not the trusted CA")]
    OtherFederation,
    /// The first command is not a genesis naming the bundle's CA.
    #[error("the bundle does not start with its federation's genesis: {0}")]
    NoGenesis(String),
}

/// The bundle's fixed part, before the commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BundleHeader {
    federation_name: String,
    ca_certificate_der: Vec<u8>,
    exported_by: NodeId,
    exported_at_ms: UnixMillis,
    from_entry: u64,
    to_entry: u64,
    command_count: u64,
}

/// The largest bundle header, in bytes.
const BUNDLE_HEADER_BYTES_MAX: usize = 1024 * 1024;

/// The bundle file (docs/audit-bundle.md): `CIVAUDIT`, the format version
/// (u32 LE), then length-prefixed (u32 LE) canonical encodings of the
/// header and of each command in order, so a reader streams it in bounded
/// pieces.
pub fn encode_bundle(bundle: &AuditBundle) -> Result<Vec<u8>, BundleError> {
    let header = BundleHeader {
        federation_name: bundle.federation_name.clone(),
        ca_certificate_der: bundle.ca_certificate_der.clone(),
        exported_by: bundle.exported_by,
        exported_at_ms: bundle.exported_at_ms,
        from_entry: bundle.from_entry,
        to_entry: bundle.to_entry,
        command_count: bundle.commands.len() as u64,
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&BUNDLE_MAGIC);
    bytes.extend_from_slice(&BUNDLE_FORMAT_VERSION.to_le_bytes());
    let mut frame = |body: Vec<u8>| -> Result<(), BundleError> {
        let length =
            u32::try_from(body.len()).map_err(|_| BundleError::Corrupt("a piece over 4 GiB".to_string()))?;
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(())
    };
    frame(codec::encode(&header).map_err(|error| BundleError::Corrupt(error.to_string()))?)?;
    for command in &bundle.commands {
        frame(codec::encode(command).map_err(|error| BundleError::Corrupt(error.to_string()))?)?;
    }
    Ok(bytes)
}

/// Reads the next length-prefixed piece at `*offset`.
fn next_piece<'a>(
    bytes: &'a [u8],
    offset: &mut usize,
    bytes_max: usize,
    what: &str,
) -> Result<&'a [u8], BundleError> {
    let corrupt = |detail: String| BundleError::Corrupt(format!("{what}: {detail}"));
    let length_bytes =
        bytes.get(*offset..*offset + 4).ok_or_else(|| corrupt("the file ends early".to_string()))?;
    let length =
        u32::from_le_bytes([length_bytes[0], length_bytes[1], length_bytes[2], length_bytes[3]]) as usize;
    if length > bytes_max {
        return Err(corrupt(format!("{length} bytes, over {bytes_max}")));
    }
    let piece = bytes
        .get(*offset + 4..*offset + 4 + length)
        .ok_or_else(|| corrupt("the file ends early".to_string()))?;
    *offset += 4 + length;
    Ok(piece)
}

/// Reads a bundle file's bytes.
pub fn decode_bundle(bytes: &[u8]) -> Result<AuditBundle, BundleError> {
    if bytes.len() < 12 || bytes[..8] != BUNDLE_MAGIC {
        return Err(BundleError::NotABundle);
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != BUNDLE_FORMAT_VERSION {
        return Err(BundleError::UnknownFormatVersion(version));
    }
    let mut offset = 12;
    let piece = next_piece(bytes, &mut offset, BUNDLE_HEADER_BYTES_MAX, "the header")?;
    let header: BundleHeader = codec::decode_exact(piece, BUNDLE_HEADER_BYTES_MAX)
        .map_err(|error| BundleError::Corrupt(format!("the header: {error}")))?;
    let mut commands = Vec::with_capacity(header.command_count.min(10_000_000) as usize);
    for sequence in 1..=header.command_count {
        let what = format!("command {sequence}");
        let piece = next_piece(bytes, &mut offset, ARCHIVED_COMMAND_BYTES_MAX, &what)?;
        commands.push(
            codec::decode_exact(piece, ARCHIVED_COMMAND_BYTES_MAX)
                .map_err(|error| BundleError::Corrupt(format!("{what}: {error}")))?,
        );
    }
    if offset != bytes.len() {
        return Err(BundleError::Corrupt(format!("{} bytes after the last command", bytes.len() - offset)));
    }
    Ok(AuditBundle {
        federation_name: header.federation_name,
        ca_certificate_der: header.ca_certificate_der,
        exported_by: header.exported_by,
        exported_at_ms: header.exported_at_ms,
        from_entry: header.from_entry,
        to_entry: header.to_entry,
        commands,
    })
}

/// A checkpoint the auditor has seen and keeps between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenCheckpoint {
    /// Tree size.
    pub tree_size: u64,
    /// Root, hex.
    pub root: String,
}

/// What went wrong, and exactly where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFailure {
    /// The command's sequence number, if the failure is at one.
    pub command_sequence: Option<u64>,
    /// The access entry's position, if the failure is at one.
    pub access_entry: Option<u64>,
    /// The audit tree's leaf (from 0), for checkpoint and history failures.
    pub leaf: Option<u64>,
    /// A stable kind.
    pub kind: FailureKind,
    /// What exactly.
    pub detail: String,
}

/// The kinds of audit failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A command is missing or out of order.
    SequenceGap,
    /// A command does not decode.
    MalformedCommand,
    /// The log accepted a command the replay rejects (bad signature,
    /// authority, replay).
    ReplayRejected,
    /// The log logged a release the policy did not allow.
    ReleaseNotAllowed,
    /// The log rejected a command the replay accepts.
    ReplayAccepted,
    /// A final checkpoint's root is not the root of the entries.
    CheckpointRootMismatch,
    /// A final checkpoint lacks a majority of the signers in force.
    CheckpointQuorum,
    /// A checkpoint seen in an earlier run is not a prefix of this history.
    HistoryRewritten,
}

/// The verifier's findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// No failures.
    pub ok: bool,
    /// The federation.
    pub federation_name: String,
    /// Commands replayed.
    pub commands: u64,
    /// Access entries (queries, denials, pushes).
    pub access_entries: u64,
    /// Leaves of the audit tree: the access entries and the correction
    /// outcomes (applied, rejected, conflict), in log order.
    pub leaves: u64,
    /// Of which permits.
    pub permits: u64,
    /// Of which denials.
    pub denials: u64,
    /// Final checkpoints verified.
    pub checkpoints: u64,
    /// The latest final checkpoint, to remember for the next run.
    pub latest_checkpoint: Option<SeenCheckpoint>,
    /// The root of all entries.
    pub root: String,
    /// Every failure, in log order.
    pub failures: Vec<AuditFailure>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Checks the bundle's CA and genesis before anything else.
fn check_federation(bundle: &AuditBundle, trusted_ca_der: Option<&[u8]>) -> Result<(), BundleError> {
    if trusted_ca_der.is_some_and(|trusted| trusted != bundle.ca_certificate_der.as_slice()) {
        return Err(BundleError::OtherFederation);
    }
    let first = bundle.commands.first().ok_or_else(|| BundleError::NoGenesis("no commands".to_string()))?;
    let envelope = SignedCommand::from_bytes(&first.envelope)
        .map_err(|error| BundleError::NoGenesis(error.to_string()))?;
    match envelope.unverified_payload() {
        Ok(crate::Command::Genesis { ca_certificate_der, .. })
            if ca_certificate_der == bundle.ca_certificate_der =>
        {
            Ok(())
        }
        Ok(_) => Err(BundleError::NoGenesis("the first command is not a genesis for this CA".to_string())),
        Err(error) => Err(BundleError::NoGenesis(error.to_string())),
    }
}

/// Whether every signature in an archived command verifies: the command's
/// envelope and, for an access record or push, the requester's query.
fn signatures_verify(archived: &ArchivedCommand) -> bool {
    let Ok(envelope) = SignedCommand::from_bytes(&archived.envelope) else { return false };
    let Ok(verified) = envelope.verify_signature() else { return false };
    match verified.payload {
        crate::Command::RecordAccess(record) | crate::Command::RecordPush(record) => {
            record.request.verify_signature().is_ok()
        }
        _ => true,
    }
}

/// Verifies every command's signatures on `threads` threads: the costly,
/// independent half of verification.
fn verify_signatures_in_parallel(commands: &[ArchivedCommand], threads: usize) -> Vec<bool> {
    let chunk = commands.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = commands
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(signatures_verify).collect::<Vec<bool>>()))
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().unwrap_or_default()).collect()
    })
}

/// [`verify_bundle_on`] with one thread per core.
pub fn verify_bundle(
    bundle: &AuditBundle,
    trusted_ca_der: Option<&[u8]>,
    seen: &[SeenCheckpoint],
    progress: &mut dyn FnMut(u64),
) -> Result<(AuditReport, PolicyState), BundleError> {
    let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    verify_bundle_on(bundle, trusted_ca_der, seen, threads, progress)
}

/// Replays the bundle and checks everything; `progress` hears the number
/// of commands done. Signatures are checked on `threads` threads first (one
/// thread: during the replay); the replay itself is sequential. Returns the
/// report and the replayed state.
pub fn verify_bundle_on(
    bundle: &AuditBundle,
    trusted_ca_der: Option<&[u8]>,
    seen: &[SeenCheckpoint],
    threads: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(AuditReport, PolicyState), BundleError> {
    check_federation(bundle, trusted_ca_der)?;
    let verified = if threads > 1 {
        verify_signatures_in_parallel(&bundle.commands, threads)
    } else {
        vec![false; bundle.commands.len()]
    };
    debug_assert_eq!(verified.len(), bundle.commands.len());
    let mut state = PolicyState::default();
    let mut tree = AccessTree::new();
    let mut failures = Vec::new();
    let fail = |sequence: Option<u64>, entry: Option<u64>, kind, detail: String| AuditFailure {
        command_sequence: sequence,
        access_entry: entry,
        leaf: None,
        kind,
        detail,
    };
    for (index, archived) in bundle.commands.iter().enumerate() {
        let sequence = archived.sequence;
        if sequence != index as u64 + 1 {
            failures.push(fail(
                Some(sequence),
                None,
                FailureKind::SequenceGap,
                format!("command {} expected here, found {sequence}", index + 1),
            ));
        }
        let entry = state.access_log.len() as u64;
        let leaves_before = state.audit_leaves.len();
        let checkpoints_before = state.checkpoints.len();
        let outcome = match SignedCommand::from_bytes(&archived.envelope) {
            // A command whose signatures failed the parallel pass is applied
            // with the full check, so the rejection says exactly why.
            Ok(envelope) if verified[index] => {
                state.apply_with_signatures_verified(&envelope, archived.entry_time_ms)
            }
            Ok(envelope) => state.apply(&envelope, archived.entry_time_ms),
            Err(error) => {
                failures.push(fail(Some(sequence), None, FailureKind::MalformedCommand, error.to_string()));
                state.commands_applied += 1;
                continue;
            }
        };
        match (&outcome, archived.accepted) {
            (Ok(_), false) => failures.push(fail(
                Some(sequence),
                None,
                FailureKind::ReplayAccepted,
                "the log rejected this command but the replay accepts it".to_string(),
            )),
            (Err(rejection), true) => {
                let kind = if rejection.code == RejectionCode::PermitNotJustified {
                    FailureKind::ReleaseNotAllowed
                } else {
                    FailureKind::ReplayRejected
                };
                let at_entry = (kind == FailureKind::ReleaseNotAllowed).then_some(entry);
                failures.push(fail(Some(sequence), at_entry, kind, rejection.to_string()));
            }
            _ => {}
        }
        for leaf in &state.audit_leaves[leaves_before..] {
            tree.push(*leaf);
        }
        if let Some(checkpoint) = state.checkpoints.get(checkpoints_before) {
            check_checkpoint(checkpoint, &tree, sequence, &mut failures);
        }
        if index % 1024 == 0 {
            progress(index as u64);
        }
    }
    progress(bundle.commands.len() as u64);
    for earlier in seen {
        let matches =
            hex_root(&earlier.root).and_then(|root| tree.check_consistency(earlier.tree_size, &root));
        if let Err(detail) = matches {
            failures.push(AuditFailure {
                leaf: Some(earlier.tree_size.saturating_sub(1)),
                ..fail(
                    None,
                    None,
                    FailureKind::HistoryRewritten,
                    format!(
                        "the checkpoint seen before at size {} ({}): {detail}",
                        earlier.tree_size, earlier.root
                    ),
                )
            });
        }
    }
    let (permits, denials) =
        state.access_log.iter().fold((0, 0), |(permits, denials), entry| match entry.outcome {
            AccessOutcome::Permit { .. } => (permits + 1, denials),
            AccessOutcome::Deny { .. } => (permits, denials + 1),
        });
    let report = AuditReport {
        ok: failures.is_empty(),
        federation_name: bundle.federation_name.clone(),
        commands: bundle.commands.len() as u64,
        access_entries: state.access_log.len() as u64,
        leaves: tree.len(),
        permits,
        denials,
        checkpoints: state.checkpoints.len() as u64,
        latest_checkpoint: state
            .checkpoints
            .last()
            .map(|last| SeenCheckpoint { tree_size: last.body.tree_size, root: hex(&last.body.root) }),
        root: tree.root_at(tree.len()).map(|root| hex(&root)).unwrap_or_default(),
        failures,
    };
    Ok((report, state))
}

fn hex_root(text: &str) -> Result<[u8; 32], String> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("{text:?} is not a hex root"))?;
    bytes.try_into().map_err(|_| format!("{text:?} is not 32 bytes"))
}

fn check_checkpoint(
    checkpoint: &FinalCheckpoint,
    tree: &AccessTree,
    sequence: u64,
    failures: &mut Vec<AuditFailure>,
) {
    let size = checkpoint.body.tree_size;
    if tree.root_at(size) != Some(checkpoint.body.root) {
        failures.push(AuditFailure {
            command_sequence: Some(sequence),
            access_entry: None,
            leaf: Some(size.saturating_sub(1)),
            kind: FailureKind::CheckpointRootMismatch,
            detail: format!(
                "the checkpoint at size {size} signs root {} but the entries up to {} hash to {}",
                hex(&checkpoint.body.root),
                size.saturating_sub(1),
                tree.root_at(size).map(|root| hex(&root)).unwrap_or_else(|| "nothing".to_string())
            ),
        });
    }
    if checkpoint.cosigners.len() as u64 * 2 <= checkpoint.signers_in_force {
        failures.push(AuditFailure {
            command_sequence: Some(sequence),
            access_entry: None,
            leaf: None,
            kind: FailureKind::CheckpointQuorum,
            detail: format!("{} of {} signers", checkpoint.cosigners.len(), checkpoint.signers_in_force),
        });
    }
}

/// One access to a subject's records, for a subject-access report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAccess {
    /// The access entry.
    pub access_entry: u64,
    /// When the owner decided.
    pub decided_at_ms: UnixMillis,
    /// Who asked (node).
    pub requester: String,
    /// Its organisation.
    pub requester_org: Option<OrgId>,
    /// The owner node that answered.
    pub owner: String,
    /// The dataset.
    pub dataset: String,
    /// For what.
    pub purpose: String,
    /// Under which grant.
    pub grant: Option<u64>,
    /// The grant's legal basis.
    pub legal_basis: Option<LegalBasis>,
    /// "permit" or "deny".
    pub outcome: String,
    /// The fields released (none for a denial).
    pub fields_released: Vec<String>,
    /// A query or a subscription push.
    pub kind: String,
}

/// Every access to `subject` in a replayed state, in log order.
pub fn subject_accesses(state: &PolicyState, subject: &SubjectKeyHash) -> Vec<SubjectAccess> {
    state
        .access_log
        .iter()
        .filter_map(|entry| {
            let released: Option<Vec<String>> = match &entry.outcome {
                AccessOutcome::Permit { released } => released
                    .iter()
                    .find(|release| release.subject == *subject)
                    .map(|release| release.fields.clone()),
                AccessOutcome::Deny { .. } => entry.header.subjects.contains(subject).then(Vec::new),
            };
            let fields_released = released?;
            let grant = entry.header.grant.and_then(|id| state.grants.get(&id));
            let push =
                entry.envelope.unverified_payload().is_ok_and(|c| matches!(c, crate::Command::RecordPush(_)));
            Some(SubjectAccess {
                access_entry: entry.sequence,
                decided_at_ms: entry.decided_at_ms,
                requester: entry.requester.to_string(),
                requester_org: state.members.get(&entry.requester).map(|member| member.org.clone()),
                owner: entry.owner.to_string(),
                dataset: entry.header.dataset.clone(),
                purpose: entry.header.purpose.clone(),
                grant: entry.header.grant,
                legal_basis: grant.map(|grant| grant.legal_basis),
                outcome: if matches!(entry.outcome, AccessOutcome::Permit { .. }) {
                    "permit"
                } else {
                    "deny"
                }
                .to_string(),
                fields_released,
                kind: if push { "push" } else { "query" }.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 by hand for small trees, against the crate's incremental roots.
    fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        let sha = |parts: &[&[u8]]| {
            let mut all = Vec::new();
            for part in parts {
                all.extend_from_slice(part);
            }
            codec::sha256(&all)
        };
        match leaves.len() {
            0 => codec::sha256(b""),
            1 => sha(&[&[0], &leaves[0]]),
            n => {
                let split = n.next_power_of_two() / 2;
                let split = if split == n { n / 2 } else { split };
                sha(&[&[1], &reference_root(&leaves[..split]), &reference_root(&leaves[split..])])
            }
        }
    }

    #[test]
    fn roots_at_every_size_follow_rfc_6962_and_prefixes_are_consistent() {
        let leaves: Vec<[u8; 32]> = (0..37u8).map(|i| [i; 32]).collect();
        let mut tree = AccessTree::new();
        for (index, leaf) in leaves.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(
                tree.root_at(index as u64 + 1),
                Some(reference_root(&leaves[..=index])),
                "size {}",
                index + 1
            );
        }
        for size in 1..=37 {
            tree.check_consistency(size, &tree.root_at(size).unwrap()).unwrap();
        }
        assert!(tree.check_consistency(5, &[9; 32]).is_err());
        assert!(tree.check_consistency(38, &tree.root_at(37).unwrap()).is_err());
        assert_eq!(tree.root_at(0), None);
    }

    #[test]
    fn bad_bundle_bytes_are_typed_errors() {
        assert!(matches!(decode_bundle(b"nonsense"), Err(BundleError::NotABundle)));
        let mut wrong_version = BUNDLE_MAGIC.to_vec();
        wrong_version.extend_from_slice(&7u32.to_le_bytes());
        assert!(matches!(decode_bundle(&wrong_version), Err(BundleError::UnknownFormatVersion(7))));
        let mut truncated = BUNDLE_MAGIC.to_vec();
        truncated.extend_from_slice(&BUNDLE_FORMAT_VERSION.to_le_bytes());
        truncated.extend_from_slice(&[3, 1, 2]);
        assert!(matches!(decode_bundle(&truncated), Err(BundleError::Corrupt(_))));
    }
}
