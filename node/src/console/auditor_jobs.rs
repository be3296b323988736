//! The verification in the background: one at a time per node, its
//! progress while it runs, and the last one's outcome ([`AuditJobs`], in
//! the console's state). A replay of the whole log is heavy, so subject
//! reports take turns with it, and uploads wait for no one. The task is
//! tracked with the node's others: shutdown waits for it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use civmesh_certs::{now_unix_millis, UnixMillis};
use civmesh_policy::audit::{AccessSummary, AccessTally, AuditReport, BundleHeader, Collect};

use super::files::{self, OwnBundleError, ReplayError, Replayed};
use crate::api::Shared;

/// A node's audit work: the verification running or last finished, the
/// turn to replay a whole log, and the turn to upload a bundle.
pub(in crate::console) struct AuditJobs {
    /// The verification running or last finished.
    slot: Mutex<Slot>,
    /// One replay of a whole log at a time: verifications and subject
    /// reports take turns.
    pub(super) replays: Arc<tokio::sync::Semaphore>,
    /// One upload at a time: each may write up to the upload bound to the
    /// node's disk before it is verified.
    pub(super) uploads: tokio::sync::Semaphore,
}

impl Default for AuditJobs {
    fn default() -> Self {
        AuditJobs {
            slot: Mutex::new(Slot::Idle),
            replays: Arc::new(tokio::sync::Semaphore::new(1)),
            uploads: tokio::sync::Semaphore::new(1),
        }
    }
}

/// What is verified.
pub(super) enum Input {
    /// This node's own log, exported now.
    OwnLog,
    /// A bundle the auditor uploaded, in its working directory (removed
    /// with it).
    Upload(tempfile::TempDir, std::path::PathBuf),
}

/// Where a verification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for another replay to end.
    Waiting = 0,
    /// Exporting this node's log.
    Exporting = 1,
    /// Replaying the bundle.
    Verifying = 2,
}

/// A running verification's progress, updated as it goes.
#[derive(Debug, Default)]
pub(super) struct Progress {
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    fn set(&self, phase: Phase, done: u64, total: u64) {
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// The phase, the commands done and of how many.
    pub(super) fn read(&self) -> (Phase, u64, u64) {
        let phase = match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Exporting,
            2 => Phase::Verifying,
            _ => Phase::Waiting,
        };
        (phase, self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }
}

/// Who started a verification, when, and of what.
#[derive(Debug, Clone)]
pub(super) struct Started {
    /// The operator.
    pub operator: String,
    /// When.
    pub at_ms: UnixMillis,
    /// This node's log (true) or an uploaded bundle.
    pub own_log: bool,
}

/// Why a verification produced no report.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// This node's log could not be exported.
    Export(String),
    /// The bundle could not be read or trusted: its message key and the detail.
    Bundle(&'static str, String),
    /// A file it needs is missing or unreadable.
    File(String),
}

/// A verification that ran to its end.
#[derive(Debug, Clone)]
pub(super) struct Verified {
    /// The bundle's header.
    pub header: BundleHeader,
    /// The replay's findings.
    pub report: AuditReport,
    /// What was released, per department and grant, and the flags.
    pub summary: AccessSummary,
}

/// The last verification's outcome.
#[derive(Debug, Clone)]
pub(super) struct Finished {
    /// Who started it.
    pub started: Started,
    /// When it ended.
    pub at_ms: UnixMillis,
    /// Its report, or why there is none.
    pub outcome: Result<Verified, Failure>,
}

/// The slot's state: what the page shows.
#[derive(Default, Clone)]
pub(super) enum Slot {
    /// Nothing ran since the node started.
    #[default]
    Idle,
    /// One runs: who started it and how far it is.
    Running(Started, Arc<Progress>),
    /// The last one's outcome.
    Finished(Arc<Finished>),
}

/// The slot now.
pub(super) fn status(state: &Shared) -> Slot {
    state.console.audit.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Starts verifying `input` for `operator` in the background; `false`
/// (and nothing started) if one is running already.
pub(super) fn start(state: &Shared, operator: &str, input: Input) -> bool {
    let started = Started {
        operator: operator.to_string(),
        at_ms: now_unix_millis(),
        own_log: matches!(input, Input::OwnLog),
    };
    let progress = Arc::new(Progress::default());
    let jobs = &state.console.audit;
    if jobs.replays.available_permits() > 0 {
        let phase = if started.own_log { Phase::Exporting } else { Phase::Verifying };
        progress.set(phase, 0, 0);
    }
    {
        let mut slot = jobs.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(*slot, Slot::Running(..)) {
            return false;
        }
        *slot = Slot::Running(started.clone(), progress.clone());
    }
    let state = state.clone();
    let tasks = state.console.tasks.clone();
    tasks.spawn(async move {
        let jobs = &state.console.audit;
        let permit = jobs.replays.acquire().await;
        let work_progress = progress.clone();
        let work_state = state.clone();
        let outcome = tokio::task::spawn_blocking(move || verify(&work_state, input, &work_progress))
            .await
            .unwrap_or_else(|_| Err(Failure::File("the verification stopped".to_string())));
        drop(permit);
        if let Ok(verified) = &outcome {
            tracing::info!(
                ok = verified.report.ok,
                commands = verified.report.commands,
                "console audit verified"
            );
        }
        let finished = Finished { started, at_ms: now_unix_millis(), outcome };
        *jobs.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Slot::Finished(Arc::new(finished));
    });
    true
}

/// Exports (for this node's log) and verifies, tallying every access.
fn verify(state: &Shared, input: Input, progress: &Progress) -> Result<Verified, Failure> {
    let (_dir, path) = match input {
        Input::OwnLog => {
            progress.set(Phase::Exporting, 0, 0);
            let mut advance = |done, total| progress.set(Phase::Exporting, done, total);
            files::own_log_bundle(state, &mut advance).map_err(|error| match error {
                OwnBundleError::File(error) => Failure::File(error.to_string()),
                OwnBundleError::Export(error) => Failure::Export(error.to_string()),
            })?
        }
        Input::Upload(dir, path) => (dir, path),
    };
    let mut tally = AccessTally::new();
    let collect = Collect { subject: None, tally: Some(&mut tally) };
    let mut advance = |done, total| progress.set(Phase::Verifying, done, total);
    let Replayed { header, report, trusted, .. } = files::replay_bundle(state, &path, &mut advance, collect)
        .map_err(|error| match error {
            ReplayError::File(error) => Failure::File(error.to_string()),
            ReplayError::Bundle(error) => {
                Failure::Bundle(super::summary::bundle_key(&error), error.to_string())
            }
        })?;
    if let (true, Some(latest)) = (report.ok, report.latest_checkpoint.clone()) {
        if let Err(error) = files::remember_checkpoint(state, &trusted, latest) {
            tracing::warn!(%error, "the console could not remember the checkpoint it verified");
        }
    }
    let summary = tally.finish(report.anchored_leaves);
    Ok(Verified { header, report, summary })
}
