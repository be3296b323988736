//! The auditor's offline verification: a replay of the bundle through
//! the same `apply` the replicas ran, checked against the checkpoints and
//! the roots seen in earlier runs.

use serde::{Deserialize, Serialize};

use super::bundle::{ArchivedCommand, AuditBundle, BundleError, BundleHeader, BundleReader};
use super::subject::{subject_access, SubjectAccess};
use super::tally::AccessTally;
use super::tree::{ReplayTree, REPLAY_ROOTS_KEPT_MAX};
use super::FinalCheckpoint;
use crate::access::{AccessLogEntry, AccessOutcome};
use crate::hex_digest::{from_hex, to_hex};
use crate::signatures::verify_signatures_in_parallel;
use crate::state::{PolicyState, RejectionCode};
use crate::subject_keys::SubjectLookup;
use crate::SignedCommand;

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
    /// Leaves after the latest final checkpoint, when the auditor requires
    /// every leaf anchored ([`AuditReport::require_anchored`]).
    Unanchored,
    /// A final checkpoint this verifier could not check: it became final
    /// more than [`REPLAY_ROOTS_KEPT_MAX`] leaves after its size, and the
    /// replay keeps the roots of that many latest sizes only. The
    /// checkpoint is unverified: anchored very late, or an old size
    /// reopened by a majority.
    CheckpointNotChecked,
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
    /// Leaves a final checkpoint covers: the latest one's size. Only these
    /// are proven complete; an exporter could have left out later ones.
    pub anchored_leaves: u64,
    /// Leaves after the latest final checkpoint.
    pub unanchored_leaves: u64,
    /// The latest final checkpoint, to remember for the next run.
    pub latest_checkpoint: Option<SeenCheckpoint>,
    /// The root of all entries.
    pub root: String,
    /// Every failure, in log order.
    pub failures: Vec<AuditFailure>,
}

impl AuditReport {
    /// Fails the report if any leaf is unanchored (`--require-anchored`):
    /// for an auditor who must know the bundle is complete to its end.
    pub fn require_anchored(&mut self) {
        if self.unanchored_leaves == 0 {
            return;
        }
        self.failures.push(AuditFailure {
            command_sequence: None,
            access_entry: None,
            leaf: Some(self.anchored_leaves),
            kind: FailureKind::Unanchored,
            detail: format!(
                "{} leaves from leaf {} on are after the latest final checkpoint",
                self.unanchored_leaves, self.anchored_leaves
            ),
        });
        self.ok = false;
    }
}

/// Checks the bundle's CA and genesis before anything else: the header
/// must name the CA and the federation its genesis names (no signature
/// covers the header).
fn check_federation(
    bundle: &BundleHeader,
    first: Option<&ArchivedCommand>,
    trusted_ca_der: Option<&[u8]>,
) -> Result<(), BundleError> {
    if trusted_ca_der.is_some_and(|trusted| trusted != bundle.ca_certificate_der.as_slice()) {
        return Err(BundleError::OtherFederation);
    }
    let first = first.ok_or_else(|| BundleError::NoGenesis("no commands".to_string()))?;
    let envelope = SignedCommand::from_bytes(&first.envelope)
        .map_err(|error| BundleError::NoGenesis(error.to_string()))?;
    match envelope.unverified_payload() {
        Ok(crate::Command::Genesis { federation_name, .. }) if federation_name != bundle.federation_name => {
            Err(BundleError::NoGenesis(format!(
                "the header names federation {:?}, its genesis {federation_name:?}",
                bundle.federation_name
            )))
        }
        Ok(crate::Command::Genesis { ca_certificate_der, .. })
            if ca_certificate_der == bundle.ca_certificate_der =>
        {
            Ok(())
        }
        Ok(_) => Err(BundleError::NoGenesis("the first command is not a genesis for this CA".to_string())),
        Err(error) => Err(BundleError::NoGenesis(error.to_string())),
    }
}

/// How many commands a replay does between two progress reports.
pub const PROGRESS_COMMANDS_INTERVAL: u64 = 1024;

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
/// of commands done. Signatures are checked first, in ZIP 215 batches of
/// [`crate::signatures::VERIFY_BATCH_COMMANDS_MAX`] commands on `threads` threads; a command
/// whose signatures did not verify there is applied with the full check,
/// which says why. The replay itself is sequential. Returns the report and
/// the replayed state.
pub fn verify_bundle_on(
    bundle: &AuditBundle,
    trusted_ca_der: Option<&[u8]>,
    seen: &[SeenCheckpoint],
    threads: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(AuditReport, PolicyState), BundleError> {
    let (report, state, _) = replay_bundle(bundle, trusted_ca_der, seen, threads, progress, None)?;
    Ok((report, state))
}

/// [`verify_bundle`], and every access the bundle logged to one record
/// key's records, in log order: a subject-access report. `subject` derives
/// the key's hash for each (owner, requester) pair. Each access says
/// whether a final checkpoint anchors it.
pub fn verify_bundle_for_subject(
    bundle: &AuditBundle,
    trusted_ca_der: Option<&[u8]>,
    seen: &[SeenCheckpoint],
    subject: &mut SubjectLookup,
    progress: &mut dyn FnMut(u64),
) -> Result<(AuditReport, PolicyState, Vec<SubjectAccess>), BundleError> {
    let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    replay_bundle(bundle, trusted_ca_der, seen, threads, progress, Some(subject))
}

fn replay_bundle(
    bundle: &AuditBundle,
    trusted_ca_der: Option<&[u8]>,
    seen: &[SeenCheckpoint],
    threads: usize,
    progress: &mut dyn FnMut(u64),
    subject: Option<&mut SubjectLookup>,
) -> Result<(AuditReport, PolicyState, Vec<SubjectAccess>), BundleError> {
    let commands = bundle.commands.iter().cloned().map(Ok);
    let checks = Checks { threads, ..Checks::new(trusted_ca_der, seen) };
    replay_commands(&bundle.header(), commands, checks, progress, Collect { subject, tally: None })
}

/// What a replay is checked against, and on how many threads.
#[derive(Clone, Copy)]
pub struct Checks<'a> {
    /// The CA the auditor trusts (none: the bundle's own).
    pub trusted_ca_der: Option<&'a [u8]>,
    /// Checkpoints seen in earlier runs.
    pub seen: &'a [SeenCheckpoint],
    /// Threads for the signature checks.
    pub threads: usize,
    /// Commands held at once ([`REPLAY_WINDOW_COMMANDS`] unless a test
    /// wants windows small).
    pub window_commands: usize,
}

impl<'a> Checks<'a> {
    /// Checks against `trusted_ca_der` and `seen`, one thread per core, in
    /// windows of [`REPLAY_WINDOW_COMMANDS`].
    pub fn new(trusted_ca_der: Option<&'a [u8]>, seen: &'a [SeenCheckpoint]) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        Checks { trusted_ca_der, seen, threads, window_commands: REPLAY_WINDOW_COMMANDS }
    }
}

/// The most commands read ahead and held at once by a streamed replay: the
/// window whose signatures are checked in parallel before it is replayed.
pub const REPLAY_WINDOW_COMMANDS: usize = 16_384;

/// [`verify_bundle_on`] over a bundle read a piece at a time: memory holds
/// one window of [`REPLAY_WINDOW_COMMANDS`] commands, not the bundle. A
/// piece that cannot be read ends it with an error, and no report.
pub fn verify_stream<R: std::io::Read>(
    reader: BundleReader<R>,
    checks: Checks<'_>,
    progress: &mut dyn FnMut(u64),
    subject: Option<&mut SubjectLookup>,
) -> Result<(AuditReport, PolicyState, Vec<SubjectAccess>), BundleError> {
    verify_stream_collecting(reader, checks, progress, Collect { subject, tally: None })
}

/// What a replay collects besides its report, as it goes.
#[derive(Default)]
pub struct Collect<'a> {
    /// One record key's accesses (a subject-access report).
    pub subject: Option<&'a mut SubjectLookup>,
    /// Every access entry, per department and grant, and the flagged ones.
    pub tally: Option<&'a mut AccessTally>,
}

/// [`verify_stream`], feeding every access entry to `collect`.
pub fn verify_stream_collecting<R: std::io::Read>(
    reader: BundleReader<R>,
    checks: Checks<'_>,
    progress: &mut dyn FnMut(u64),
    collect: Collect<'_>,
) -> Result<(AuditReport, PolicyState, Vec<SubjectAccess>), BundleError> {
    let header = reader.header().clone();
    replay_commands(&header, reader, checks, progress, collect)
}

fn replay_commands(
    header: &BundleHeader,
    mut commands: impl Iterator<Item = Result<ArchivedCommand, BundleError>>,
    checks: Checks<'_>,
    progress: &mut dyn FnMut(u64),
    collect: Collect<'_>,
) -> Result<(AuditReport, PolicyState, Vec<SubjectAccess>), BundleError> {
    let mut replay = Replay {
        state: PolicyState::default(),
        tree: ReplayTree::default(),
        seen: sorted_largest_first(checks.seen),
        failures: Vec::new(),
        permits: 0,
        denials: 0,
        subject: collect.subject,
        tally: collect.tally,
        subject_accesses: Vec::new(),
    };
    let window_commands = checks.window_commands.clamp(1, REPLAY_WINDOW_COMMANDS);
    let mut window = Vec::with_capacity(window_commands);
    let mut done = 0u64;
    loop {
        window.clear();
        for command in commands.by_ref().take(window_commands) {
            window.push(command?);
        }
        if done == 0 {
            check_federation(header, window.first(), checks.trusted_ca_der)?;
        }
        if window.is_empty() {
            break;
        }
        let verified = verify_signatures_in_parallel(&window, checks.threads);
        debug_assert_eq!(verified.len(), window.len());
        for (archived, signatures_verified) in window.iter().zip(verified) {
            replay.command(done as usize, archived, signatures_verified);
            done += 1;
            if done.is_multiple_of(PROGRESS_COMMANDS_INTERVAL) {
                progress(done);
            }
        }
    }
    if !done.is_multiple_of(PROGRESS_COMMANDS_INTERVAL) {
        progress(done);
    }
    Ok(replay.report(header, done))
}

/// A replay in progress: the state, the tree of its leaves, the
/// checkpoints seen before that it has not passed yet, the access entries
/// counted (and the subject's, if a report is asked for), and what failed.
struct Replay<'a> {
    state: PolicyState,
    tree: ReplayTree,
    seen: Vec<&'a SeenCheckpoint>,
    failures: Vec<AuditFailure>,
    permits: u64,
    denials: u64,
    subject: Option<&'a mut SubjectLookup>,
    tally: Option<&'a mut AccessTally>,
    subject_accesses: Vec<SubjectAccess>,
}

impl Replay<'_> {
    fn fail(&mut self, sequence: Option<u64>, entry: Option<u64>, kind: FailureKind, detail: String) {
        let failure =
            AuditFailure { command_sequence: sequence, access_entry: entry, leaf: None, kind, detail };
        self.failures.push(failure);
    }

    /// Applies one archived command, compares the outcome with the log's,
    /// and checks a checkpoint it makes final.
    fn command(&mut self, index: usize, archived: &ArchivedCommand, signatures_verified: bool) {
        let sequence = archived.sequence;
        if sequence != index as u64 + 1 {
            let detail = format!("command {} expected here, found {sequence}", index + 1);
            self.fail(Some(sequence), None, FailureKind::SequenceGap, detail);
        }
        let entry = self.state.access_log_length;
        let (outcome, appended) = match SignedCommand::from_bytes(&archived.envelope) {
            // A command whose signatures failed the parallel pass is applied
            // with the full check, so the rejection says exactly why.
            Ok(envelope) if signatures_verified => {
                self.state.apply_with_signatures_verified(&envelope, archived.entry_time_ms)
            }
            Ok(envelope) => self.state.apply_appending(&envelope, archived.entry_time_ms),
            Err(error) => {
                self.fail(Some(sequence), None, FailureKind::MalformedCommand, error.to_string());
                self.state.commands_applied += 1;
                return;
            }
        };
        match (&outcome, archived.accepted) {
            (Ok(_), false) => self.fail(
                Some(sequence),
                None,
                FailureKind::ReplayAccepted,
                "the log rejected this command but the replay accepts it".to_string(),
            ),
            (Err(rejection), true) if rejection.code == RejectionCode::PermitNotJustified => {
                self.fail(Some(sequence), Some(entry), FailureKind::ReleaseNotAllowed, rejection.to_string())
            }
            (Err(rejection), true) => {
                self.fail(Some(sequence), None, FailureKind::ReplayRejected, rejection.to_string())
            }
            _ => {}
        }
        if let Some(access_entry) = &appended.access_entry {
            self.count(access_entry, archived.entry_time_ms);
        }
        if let Some(leaf) = appended.audit_leaf {
            self.tree.push(&leaf);
            while let Some(earlier) = self.seen.pop_if(|earlier| earlier.tree_size <= self.tree.len()) {
                self.check_seen(earlier);
            }
        }
        if let Some(checkpoint) = &appended.checkpoint {
            check_checkpoint(checkpoint, &self.tree, sequence, &mut self.failures);
            self.tree.forget_through(checkpoint.body.tree_size);
        }
    }

    /// Counts an access entry (logged at `entry_time_ms`), tallies it if
    /// asked, and keeps it for the subject's report if it is one of theirs.
    fn count(&mut self, entry: &AccessLogEntry, entry_time_ms: civmesh_certs::UnixMillis) {
        match entry.outcome {
            AccessOutcome::Permit { .. } => self.permits += 1,
            AccessOutcome::Deny { .. } => self.denials += 1,
        }
        if let Some(tally) = self.tally.as_deref_mut() {
            tally.observe(&self.state, entry, self.tree.len(), entry_time_ms);
        }
        let Some(lookup) = self.subject.as_deref_mut() else { return };
        let org_of = |node| self.state.members.get(node).map(|member| &member.org);
        let (Some(owner), Some(requester)) = (org_of(&entry.owner), org_of(&entry.requester)) else {
            return;
        };
        let subject = lookup.hash(owner, requester);
        if let Some(access) = subject_access(&self.state, entry, self.tree.len(), &subject) {
            self.subject_accesses.push(access);
        }
    }

    /// Checks a checkpoint seen in an earlier run is a prefix of this
    /// tree, as the tree passes its size (or at the end, if it never does).
    fn check_seen(&mut self, earlier: &SeenCheckpoint) {
        let size = self.tree.len();
        let detail = match from_hex(&earlier.root) {
            None => format!("{:?} is not a hex root", earlier.root),
            Some(_) if earlier.tree_size == 0 || earlier.tree_size > size => {
                format!("a tree of {} leaves is not a prefix of {size} leaves", earlier.tree_size)
            }
            Some(root) if root == self.tree.root() => return,
            Some(_) => "the root differs at the same size".to_string(),
        };
        self.failures.push(AuditFailure {
            command_sequence: None,
            access_entry: None,
            leaf: Some(earlier.tree_size.saturating_sub(1)),
            kind: FailureKind::HistoryRewritten,
            detail: format!(
                "the checkpoint seen before at size {} ({}): {detail}",
                earlier.tree_size, earlier.root
            ),
        });
    }

    fn report(
        mut self,
        bundle: &BundleHeader,
        commands: u64,
    ) -> (AuditReport, PolicyState, Vec<SubjectAccess>) {
        while let Some(earlier) = self.seen.pop() {
            self.check_seen(earlier);
        }
        let Replay { state, tree, failures, permits, denials, mut subject_accesses, .. } = self;
        let anchored_leaves = state.last_checkpoint.as_ref().map_or(0, |last| last.body.tree_size);
        for access in &mut subject_accesses {
            access.anchored = access.leaf < anchored_leaves;
        }
        let report = AuditReport {
            ok: failures.is_empty(),
            // The genesis's name, which a signature covers (check_federation
            // made sure the header agrees).
            federation_name: state
                .federation
                .as_ref()
                .map_or_else(|| bundle.federation_name.clone(), |federation| federation.name.clone()),
            commands,
            access_entries: state.access_log_length,
            leaves: tree.len(),
            permits,
            denials,
            checkpoints: state.checkpoints_final,
            anchored_leaves,
            unanchored_leaves: tree.len().saturating_sub(anchored_leaves),
            latest_checkpoint: state
                .last_checkpoint
                .as_ref()
                .map(|last| SeenCheckpoint { tree_size: last.body.tree_size, root: to_hex(&last.body.root) }),
            root: if tree.is_empty() { String::new() } else { to_hex(&tree.root()) },
            failures,
        };
        (report, state, subject_accesses)
    }
}

/// The checkpoints seen before, the smallest last.
fn sorted_largest_first(seen: &[SeenCheckpoint]) -> Vec<&SeenCheckpoint> {
    let mut sorted: Vec<&SeenCheckpoint> = seen.iter().collect();
    sorted.sort_by_key(|earlier| std::cmp::Reverse(earlier.tree_size));
    sorted
}

fn check_checkpoint(
    checkpoint: &FinalCheckpoint,
    tree: &ReplayTree,
    sequence: u64,
    failures: &mut Vec<AuditFailure>,
) {
    let size = checkpoint.body.tree_size;
    let kept = tree.root_at(size);
    if kept.is_none() && size <= tree.len() {
        failures.push(AuditFailure {
            command_sequence: Some(sequence),
            access_entry: None,
            leaf: Some(size.saturating_sub(1)),
            kind: FailureKind::CheckpointNotChecked,
            detail: format!(
                "the checkpoint at size {size} became final more than {REPLAY_ROOTS_KEPT_MAX} leaves later; this verifier keeps the roots of that many latest sizes only, so its root is unverified"
            ),
        });
    } else if kept != Some(checkpoint.body.root) {
        failures.push(AuditFailure {
            command_sequence: Some(sequence),
            access_entry: None,
            leaf: Some(size.saturating_sub(1)),
            kind: FailureKind::CheckpointRootMismatch,
            detail: format!(
                "the checkpoint at size {size} signs root {} but the entries up to {} hash to {}",
                to_hex(&checkpoint.body.root),
                size.saturating_sub(1),
                kept.map(|root| to_hex(&root)).unwrap_or_else(|| "nothing".to_string())
            ),
        });
    }
    let cosigning_orgs = checkpoint.cosigning_orgs.len() as u64;
    if cosigning_orgs * 2 <= checkpoint.signer_orgs_in_force {
        failures.push(AuditFailure {
            command_sequence: Some(sequence),
            access_entry: None,
            leaf: None,
            kind: FailureKind::CheckpointQuorum,
            detail: format!(
                "cosigners from {cosigning_orgs} of {} signing organisations",
                checkpoint.signer_orgs_in_force
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_needs_more_than_half_of_the_signing_organisations() {
        let mut tree = ReplayTree::default();
        tree.push(&[1; 32]);
        let root = tree.root_at(1).unwrap();
        let checkpoint = |cosigners: u8, signer_orgs_in_force: u64| FinalCheckpoint {
            body: crate::audit::CheckpointBody { tree_size: 1, root, log_index: 1 },
            cosigners: (0..cosigners).map(|index| civmesh_certs::NodeId([index; 32])).collect(),
            cosigning_orgs: (0..cosigners)
                .map(|index| civmesh_certs::OrgId::new(&format!("department/d{index}")).unwrap())
                .collect(),
            signer_orgs_in_force,
            final_at_ms: 1,
        };
        for (cosigners, in_force, quorum) in
            [(2, 3, true), (1, 2, false), (3, 6, false), (4, 7, true), (5, 7, true)]
        {
            let mut failures = Vec::new();
            check_checkpoint(&checkpoint(cosigners, in_force), &tree, 1, &mut failures);
            let kinds: Vec<FailureKind> = failures.iter().map(|failure| failure.kind).collect();
            let expected = if quorum { vec![] } else { vec![FailureKind::CheckpointQuorum] };
            assert_eq!(kinds, expected, "{cosigners} of {in_force}");
        }
        let mut failures = Vec::new();
        let wrong_root = FinalCheckpoint {
            body: crate::audit::CheckpointBody { root: [7; 32], ..checkpoint(2, 3).body },
            ..checkpoint(2, 3)
        };
        check_checkpoint(&wrong_root, &tree, 1, &mut failures);
        assert_eq!(
            failures.iter().map(|failure| failure.kind).collect::<Vec<_>>(),
            [FailureKind::CheckpointRootMismatch]
        );
        // A root the replay no longer keeps is reported as not checked,
        // not as a mismatch.
        tree.push(&[2; 32]);
        tree.forget_through(1);
        let mut failures = Vec::new();
        check_checkpoint(&checkpoint(2, 3), &tree, 1, &mut failures);
        assert_eq!(
            failures.iter().map(|failure| failure.kind).collect::<Vec<_>>(),
            [FailureKind::CheckpointNotChecked]
        );
    }
}
