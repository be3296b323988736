//! The last verification as the auditor reads it: the figures, the verdict
//! and, on failure, its typed reason (a message key) with the detail; what
//! each department released and under which grant; the flagged accesses.

use civmesh_policy::audit::{AccessCounts, AccessFlag, BundleError, FailureKind, FlagKind, GrantAccesses};
use civmesh_policy::evaluation::format_time;
use civmesh_policy::model::LegalBasis;

use super::jobs::{Failure, Finished, Verified};
use crate::api::Shared;

/// The failures a summary lists at most (the report holds them all).
const FAILURES_LISTED_MAX: usize = 50;

/// The message key of an audit failure's kind.
pub(super) fn failure_key(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::SequenceGap => "audit.failure-sequence-gap",
        FailureKind::MalformedCommand => "audit.failure-malformed-command",
        FailureKind::ReplayRejected => "audit.failure-replay-rejected",
        FailureKind::ReleaseNotAllowed => "audit.failure-release-not-allowed",
        FailureKind::ReplayAccepted => "audit.failure-replay-accepted",
        FailureKind::CheckpointRootMismatch => "audit.failure-checkpoint-root-mismatch",
        FailureKind::CheckpointQuorum => "audit.failure-checkpoint-quorum",
        FailureKind::HistoryRewritten => "audit.failure-history-rewritten",
        FailureKind::Unanchored => "audit.failure-unanchored",
        FailureKind::CheckpointNotChecked => "audit.failure-checkpoint-not-checked",
    }
}

/// The message key of a bundle error.
pub(super) fn bundle_key(error: &BundleError) -> &'static str {
    match error {
        BundleError::NotABundle => "audit.bundle-not-a-bundle",
        BundleError::UnknownFormatVersion(_) => "audit.bundle-unknown-format-version",
        BundleError::OtherFederation => "audit.bundle-other-federation",
        BundleError::NoGenesis(_) => "audit.bundle-no-genesis",
        BundleError::Write(_) => "audit.bundle-write-failed",
        BundleError::Corrupt(_) => "audit.bundle-corrupt",
    }
}

/// The message key of a legal basis.
pub(super) fn basis_key(basis: LegalBasis) -> &'static str {
    match basis {
        LegalBasis::Consent => "audit.basis-consent",
        LegalBasis::Contract => "audit.basis-contract",
        LegalBasis::StatutoryDuty => "audit.basis-statutory-duty",
        LegalBasis::PublicHealthEmergency => "audit.basis-public-health-emergency",
        LegalBasis::PublicInterestReporting => "audit.basis-public-interest-reporting",
        LegalBasis::LawfullyDisclosed => "audit.basis-lawfully-disclosed",
        LegalBasis::OtherLaw => "audit.basis-other-law",
    }
}

fn flag_key(kind: FlagKind) -> &'static str {
    match kind {
        FlagKind::SensitiveWithoutConsent => "audit.flag-sensitive-without-consent",
        FlagKind::OutsideGrantWindow => "audit.flag-outside-grant-window",
        FlagKind::ReleasedAfterWithdrawal => "audit.flag-released-after-withdrawal",
    }
}

/// One failure of the replay.
pub(super) struct FailureRow {
    /// Its message key.
    pub key: &'static str,
    /// The command's sequence number, if any.
    pub command: String,
    /// The access entry, if any.
    pub entry: String,
    /// What exactly.
    pub detail: String,
}

/// One row of the departments' or grants' table: the counts as text.
pub(super) struct CountsRow {
    /// Access entries.
    pub accesses: u64,
    /// Of which permits.
    pub permits: u64,
    /// Of which denials.
    pub denials: u64,
    /// Subjects released.
    pub subjects: u64,
    /// Fields released, summed over the subjects.
    pub fields_released: u64,
    /// The fields released, by name.
    pub field_names: String,
    /// Entries after the latest final checkpoint.
    pub unanchored: u64,
    /// Entries flagged.
    pub flagged: u64,
}

impl From<&AccessCounts> for CountsRow {
    fn from(counts: &AccessCounts) -> Self {
        CountsRow {
            accesses: counts.accesses,
            permits: counts.permits,
            denials: counts.denials,
            subjects: counts.subjects_released,
            fields_released: counts.fields_released,
            field_names: counts.field_names.iter().cloned().collect::<Vec<_>>().join(", "),
            unanchored: counts.unanchored,
            flagged: counts.flagged,
        }
    }
}

/// One grant's row.
pub(super) struct GrantRow {
    /// `#id`, or empty for accesses under no grant.
    pub grant: String,
    /// The dataset.
    pub dataset: String,
    /// Who holds the grant.
    pub grantee: String,
    /// The legal basis's message key.
    pub basis_key: Option<&'static str>,
    /// The grant's window.
    pub window: String,
    /// The counts.
    pub counts: CountsRow,
}

/// One flagged access.
pub(super) struct FlagRow {
    /// Its message key.
    pub key: &'static str,
    /// The access entry, if any.
    pub entry: u64,
    /// When the owner decided.
    pub decided_at: String,
    /// When the log recorded it.
    pub logged_at: String,
    /// The owning department.
    pub department: String,
    /// The requesting organisation.
    pub requester: String,
    /// The grant (`#id`), or empty for none.
    pub grant: String,
    /// The fields concerned.
    pub fields: String,
    /// Subjects released.
    pub subjects: u64,
}

/// The figures of a verification that ran to its end.
pub(super) struct ReportView {
    /// The federation's name.
    pub federation: String,
    /// The exporting organisation.
    pub exported_by: String,
    /// When it was exported.
    pub exported_at: String,
    /// Commands replayed.
    pub commands: u64,
    /// Access entries.
    pub access_entries: u64,
    /// Of which permits.
    pub permits: u64,
    /// Of which denials.
    pub denials: u64,
    /// Leaves of the audit tree.
    pub leaves: u64,
    /// Final checkpoints verified.
    pub checkpoints: u64,
    /// Leaves a final checkpoint covers.
    pub anchored_leaves: u64,
    /// Leaves after the latest final checkpoint.
    pub unanchored_leaves: u64,
    /// The audit tree's root, hex.
    pub root: String,
    /// Per department.
    pub departments: Vec<(String, CountsRow)>,
    /// Per grant.
    pub grants: Vec<GrantRow>,
    /// The flagged accesses listed.
    pub flags: Vec<FlagRow>,
    /// Per kind of flag (message key), how many accesses it holds.
    pub flag_totals: Vec<(&'static str, u64)>,
    /// More flagged accesses than listed.
    pub flags_more: bool,
}

/// The last verification, for the page.
pub(super) struct SummaryView {
    /// This node's log, or an uploaded bundle.
    pub own_log: bool,
    /// Who started it.
    pub started_by: String,
    /// When.
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
    /// Whether it verified.
    pub ok: bool,
    /// Why it failed (a message key) and the detail.
    pub reason: Option<(&'static str, String)>,
    /// The failures listed.
    pub failures: Vec<FailureRow>,
    /// More failures than listed.
    pub failures_more: bool,
    /// The figures, if the replay ran to its end.
    pub report: Option<ReportView>,
}

impl SummaryView {
    /// The view of `finished`; organisations named from `state`.
    pub(super) fn of(state: &Shared, finished: &Finished) -> Self {
        let mut view = SummaryView {
            own_log: finished.started.own_log,
            started_by: finished.started.operator.clone(),
            started_at: format_time(finished.started.at_ms),
            finished_at: format_time(finished.at_ms),
            ok: false,
            reason: None,
            failures: Vec::new(),
            failures_more: false,
            report: None,
        };
        match &finished.outcome {
            Err(Failure::Export(detail)) => view.reason = Some(("audit.export-failed", detail.clone())),
            Err(Failure::File(detail)) => view.reason = Some(("audit.file-failed", detail.clone())),
            Err(Failure::Bundle(key, detail)) => view.reason = Some((key, detail.clone())),
            Ok(verified) => {
                view.ok = verified.report.ok;
                let failures = &verified.report.failures;
                view.reason = failures.first().map(|first| (failure_key(first.kind), first.detail.clone()));
                view.failures_more = failures.len() > FAILURES_LISTED_MAX;
                view.failures = failures
                    .iter()
                    .take(FAILURES_LISTED_MAX)
                    .map(|failure| FailureRow {
                        key: failure_key(failure.kind),
                        command: failure
                            .command_sequence
                            .map(|sequence| sequence.to_string())
                            .unwrap_or_default(),
                        entry: failure.access_entry.map(|entry| entry.to_string()).unwrap_or_default(),
                        detail: failure.detail.clone(),
                    })
                    .collect();
                view.report = Some(report_view(state, verified));
            }
        }
        view
    }
}

fn report_view(state: &Shared, verified: &Verified) -> ReportView {
    let (report, summary) = (&verified.report, &verified.summary);
    let exporter = verified.header.exported_by;
    let exported_by = state
        .log
        .state()
        .read(|applied| applied.policy.members.get(&exporter).map(|member| member.org.to_string()))
        .unwrap_or_else(|| exporter.to_string());
    ReportView {
        federation: report.federation_name.clone(),
        exported_by,
        exported_at: format_time(verified.header.exported_at_ms),
        commands: report.commands,
        access_entries: report.access_entries,
        permits: report.permits,
        denials: report.denials,
        leaves: report.leaves,
        checkpoints: report.checkpoints,
        anchored_leaves: report.anchored_leaves,
        unanchored_leaves: report.unanchored_leaves,
        root: report.root.clone(),
        departments: summary
            .departments
            .iter()
            .map(|department| (department.department.clone(), CountsRow::from(&department.counts)))
            .collect(),
        grants: summary.grants.iter().map(grant_row).collect(),
        flags: summary.flags.iter().map(flag_row).collect(),
        flag_totals: summary.flag_counts.iter().map(|(kind, count)| (flag_key(*kind), *count)).collect(),
        flags_more: summary.flag_counts.values().sum::<u64>() > summary.flags.len() as u64,
    }
}

fn grant_row(grant: &GrantAccesses) -> GrantRow {
    let window = match (grant.valid_from_ms, grant.valid_until_ms) {
        (Some(from), Some(until)) => format!("{} – {}", format_time(from), format_time(until)),
        _ => String::new(),
    };
    GrantRow {
        grant: grant.grant.map(|id| format!("#{id}")).unwrap_or_default(),
        dataset: grant.dataset.clone(),
        grantee: grant.grantee.clone().unwrap_or_default(),
        basis_key: grant.legal_basis.map(basis_key),
        window,
        counts: CountsRow::from(&grant.counts),
    }
}

fn flag_row(flag: &AccessFlag) -> FlagRow {
    FlagRow {
        key: flag_key(flag.kind),
        entry: flag.access_entry,
        decided_at: format_time(flag.decided_at_ms),
        logged_at: format_time(flag.logged_at_ms),
        department: flag.department.clone(),
        requester: flag.requester.clone(),
        grant: flag.grant.map(|id| format!("#{id}")).unwrap_or_default(),
        fields: flag.fields.join(", "),
        subjects: flag.subjects,
    }
}
