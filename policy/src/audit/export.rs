//! Exporting a node's archive as a bundle's commands, and checking a
//! subject-access report before it is trusted: what `civmesh audit export`
//! and `audit subject` and the console's auditor pages share. The caller
//! owns the files; this writes to any [`std::io::Write`].

use civmesh_certs::{EnvelopeError, SignedEnvelope};

use super::bundle::{write_command, ArchivedCommand, BundleError, BundleHeader};
use super::subject::SubjectAccess;
use super::verify::AuditReport;
use crate::model::subject_key_commitment;
use crate::state::PolicyState;
use crate::Command;

/// Why an archive cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The archive does not start at the first command.
    #[error(
        "this node's archive starts at command {0} (it joined from a snapshot); export from a node that \
         holds the whole history, such as a founding voter"
    )]
    NotFromGenesis(u64),
    /// The first command is not the genesis.
    #[error("the archive does not start with the genesis")]
    NoGenesis,
    /// A command's envelope does not decode.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The pieces could not be written.
    #[error(transparent)]
    Write(#[from] BundleError),
    /// Nothing was exported.
    #[error("the node's archive is empty")]
    Empty,
}

/// What an export holds so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// The federation's name, from the genesis.
    pub federation_name: String,
    /// Its CA certificate (DER), from the genesis.
    pub ca_certificate_der: Vec<u8>,
    /// Commands written.
    pub commands: u64,
    /// Of which accepted access entries.
    pub entries: u64,
}

/// Writes archived commands, in order from the genesis, as a bundle's
/// pieces ([`write_command`]), up to the access entry `until`.
pub struct ArchiveWriter<W> {
    out: W,
    until: Option<u64>,
    exported: Exported,
}

impl<W: std::io::Write> ArchiveWriter<W> {
    /// A writer to `out` that stops before access entry `until` (all when `None`).
    pub fn new(out: W, until: Option<u64>) -> Self {
        ArchiveWriter { out, until, exported: Exported::default() }
    }

    /// Writes `command`, the next one of the archive; `Ok(false)` once the
    /// export is complete (the access entry `until` is reached), when
    /// `command` is not written.
    pub fn push(&mut self, command: &ArchivedCommand) -> Result<bool, ExportError> {
        let exported = &mut self.exported;
        if command.sequence != exported.commands + 1 {
            return Err(ExportError::NotFromGenesis(command.sequence));
        }
        if self.until.is_some_and(|until| exported.entries >= until) {
            return Ok(false);
        }
        if exported.commands == 0 {
            let Command::Genesis { federation_name, ca_certificate_der, .. } =
                SignedEnvelope::<Command>::from_bytes(&command.envelope)?.unverified_payload()?
            else {
                return Err(ExportError::NoGenesis);
            };
            (exported.federation_name, exported.ca_certificate_der) = (federation_name, ca_certificate_der);
        }
        exported.entries += u64::from(command.accepted && is_access(command));
        write_command(&mut self.out, command)?;
        exported.commands += 1;
        Ok(true)
    }

    /// What it wrote so far.
    pub fn exported(&self) -> &Exported {
        &self.exported
    }

    /// The output and what it holds; an error if nothing was written.
    pub fn finish(self) -> Result<(W, Exported), ExportError> {
        if self.exported.commands == 0 {
            return Err(ExportError::Empty);
        }
        Ok((self.out, self.exported))
    }
}

/// Whether an archived command logs an access.
fn is_access(command: &ArchivedCommand) -> bool {
    SignedEnvelope::<Command>::from_bytes(&command.envelope)
        .and_then(|envelope| envelope.unverified_payload())
        .is_ok_and(|command| command.access().is_some())
}

/// Why a subject-access report cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectReportError {
    /// The bundle did not verify.
    #[error("the bundle does not verify ({0} failures): run `civmesh audit verify`")]
    NotVerified(usize),
    /// The bundle holds no commitment to check the secret against.
    #[error(
        "the bundle holds no subject-key commitment (the CA logs one at bootstrap): \
         a wrong secret could not be told from a subject nobody looked at"
    )]
    NoCommitment,
    /// The secret is not the one the CA committed to.
    #[error("the secret is not this federation's subject-key secret")]
    WrongSecret,
}

/// The subject's accesses a replay found (`accesses`), once the bundle
/// verified and `secret` is the federation's (it matches the commitment the
/// CA logged); only those in the range the bundle was exported for. A wrong
/// secret would hash every subject to a value nobody queried and report "no
/// accesses", so it is refused.
pub fn checked_subject_accesses(
    secret: &[u8],
    bundle: &BundleHeader,
    report: &AuditReport,
    state: &PolicyState,
    accesses: Vec<SubjectAccess>,
) -> Result<Vec<SubjectAccess>, SubjectReportError> {
    if !report.ok {
        return Err(SubjectReportError::NotVerified(report.failures.len()));
    }
    let committed = state.subject_key_commitment.ok_or(SubjectReportError::NoCommitment)?;
    if subject_key_commitment(secret) != committed {
        return Err(SubjectReportError::WrongSecret);
    }
    Ok(accesses
        .into_iter()
        .filter(|access| (bundle.from_entry..bundle.to_entry).contains(&access.access_entry))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{decode_bundle, AuditBundle};
    use civmesh_certs::{NodeId, NodeKey};

    fn archived(sequence: u64, command: &Command, accepted: bool) -> ArchivedCommand {
        let key = NodeKey::generate().unwrap();
        let envelope = SignedEnvelope::sign(&key, command, 0).unwrap();
        ArchivedCommand {
            sequence,
            log_index: sequence,
            entry_time_ms: 0,
            envelope: envelope.to_bytes().unwrap(),
            accepted,
        }
    }

    fn genesis() -> Command {
        Command::Genesis {
            federation_name: "city".into(),
            ca_certificate_der: vec![1, 2, 3],
            founding_member_certificates_der: Vec::new(),
        }
    }

    #[test]
    fn an_export_starts_at_the_genesis_and_writes_what_a_bundle_reader_reads() {
        let revoke = Command::RevokeGrant { grant_id: 1, reason: String::new() };
        let commands = [archived(1, &genesis(), true), archived(2, &revoke, false)];
        let mut writer = ArchiveWriter::new(Vec::new(), None);
        for command in &commands {
            assert!(writer.push(command).unwrap());
        }
        assert_eq!(writer.exported().commands, 2);
        let (pieces, exported) = writer.finish().unwrap();
        assert_eq!(
            (exported.federation_name.as_str(), exported.ca_certificate_der.clone()),
            ("city", vec![1, 2, 3])
        );
        assert_eq!(exported.entries, 0, "no access entries");
        let bundle = AuditBundle {
            federation_name: "city".into(),
            ca_certificate_der: vec![1, 2, 3],
            exported_by: NodeId([9; 32]),
            exported_at_ms: 1,
            from_entry: 0,
            to_entry: u64::MAX,
            commands: commands.to_vec(),
        };
        // The header counts the commands: it comes first, then the pieces.
        let mut whole = Vec::new();
        super::super::write_bundle_start(&mut whole, &bundle.header()).unwrap();
        whole.extend_from_slice(&pieces);
        assert_eq!(decode_bundle(&whole).unwrap(), bundle);
    }

    #[test]
    fn an_archive_that_skips_the_genesis_or_is_empty_is_refused() {
        let revoke = Command::RevokeGrant { grant_id: 1, reason: String::new() };
        let mut writer = ArchiveWriter::new(Vec::new(), None);
        let error = writer.push(&archived(5, &revoke, true)).unwrap_err();
        assert!(matches!(error, ExportError::NotFromGenesis(5)));
        assert!(error.to_string().contains("joined from a snapshot"));
        let mut writer = ArchiveWriter::new(Vec::new(), None);
        assert!(matches!(writer.push(&archived(1, &revoke, true)), Err(ExportError::NoGenesis)));
        assert!(matches!(ArchiveWriter::new(Vec::new(), None).finish(), Err(ExportError::Empty)));
        let mut until_none = ArchiveWriter::new(Vec::new(), Some(0));
        assert!(!until_none.push(&archived(1, &genesis(), true)).unwrap(), "entry 0 is already the end");
    }

    #[test]
    fn a_subject_report_needs_a_verified_bundle_and_the_committed_secret() {
        let header = AuditBundle {
            federation_name: "city".into(),
            ca_certificate_der: Vec::new(),
            exported_by: NodeId([9; 32]),
            exported_at_ms: 1,
            from_entry: 1,
            to_entry: 3,
            commands: Vec::new(),
        }
        .header();
        let mut report = AuditReport {
            ok: true,
            federation_name: "city".into(),
            commands: 0,
            access_entries: 0,
            leaves: 0,
            permits: 0,
            denials: 0,
            checkpoints: 0,
            anchored_leaves: 0,
            unanchored_leaves: 0,
            latest_checkpoint: None,
            root: String::new(),
            failures: Vec::new(),
        };
        let mut state = PolicyState::default();
        let access = |entry| SubjectAccess {
            access_entry: entry,
            decided_at_ms: 0,
            requester: String::new(),
            requester_org: None,
            owner: String::new(),
            dataset: String::new(),
            purpose: String::new(),
            grant: None,
            legal_basis: None,
            outcome: super::super::SubjectAccessOutcome::Permit,
            fields_released: Vec::new(),
            kind: crate::access::AccessKind::Query,
            leaf: entry,
            anchored: false,
        };
        let accesses = || (0..4).map(access).collect::<Vec<_>>();
        let check = |state: &PolicyState, report: &AuditReport, secret: &[u8]| {
            checked_subject_accesses(secret, &header, report, state, accesses())
        };
        assert_eq!(check(&state, &report, b"s"), Err(SubjectReportError::NoCommitment));
        state.subject_key_commitment = Some(subject_key_commitment(b"s"));
        assert_eq!(check(&state, &report, b"t"), Err(SubjectReportError::WrongSecret));
        let kept: Vec<u64> = check(&state, &report, b"s").unwrap().iter().map(|a| a.access_entry).collect();
        assert_eq!(kept, [1, 2], "only the exported range 1..3");
        report.ok = false;
        assert_eq!(check(&state, &report, b"s"), Err(SubjectReportError::NotVerified(0)));
    }
}
