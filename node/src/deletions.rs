//! The holder's side of retention: every `sweep_interval_ms`, and once at
//! start before the node serves anything, delete what the log says is due
//! (copies of ended grants, copies past their retention, withdrawn
//! subjects' copies) and log a signed receipt for each deletion. Each
//! sweep also prunes this replica's closed corrections past
//! `[retention] closed_corrections_kept_days`, a whole day (Asia/Shanghai)
//! at a time.
//!
//! A receipt is kept in the record store from before the first copy is
//! deleted until the log settles it, so a kill at any point loses neither
//! the deletion's count nor the receipt: the next sweep resumes it.

use std::sync::Arc;
use std::time::Duration;

use civmesh_certs::{now_unix_millis, NodeKey, SignedEnvelope, UnixMillis};
use civmesh_consensus::PolicyLog;
use civmesh_policy::deletion::{DeletionCause, DeletionReceipt};
use civmesh_policy::model::GrantId;
use civmesh_policy::{Command, RejectionCode};

use crate::query::{CopyError, QueryService};
use crate::swarm::SwarmClient;

/// How long the start-up sweep waits for this replica to catch up with the
/// leader before it deletes by what it has applied.
pub const START_CATCH_UP_MS_MAX: u64 = 5_000;
/// A day, in milliseconds.
pub const DAY_MS: u64 = 86_400_000;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Deletions done (receipts made).
    pub deletions: u64,
    /// Records deleted in all.
    pub records_deleted: u64,
    /// Receipts the log took.
    pub receipts_logged: u64,
}

/// The holder's deletions: its replica, its key and its copies.
#[derive(Clone)]
pub struct Deletions {
    log: PolicyLog<SwarmClient>,
    key: Arc<NodeKey>,
    query: Arc<QueryService>,
}

impl Deletions {
    /// The deletions of the node whose replica, key and copies these are.
    pub fn new(log: PolicyLog<SwarmClient>, key: Arc<NodeKey>, query: Arc<QueryService>) -> Self {
        Deletions { log, key, query }
    }

    /// The start-up sweep: a node that holds anything first catches up
    /// with the leader (at most [`START_CATCH_UP_MS_MAX`]), then deletes
    /// what is due. The caller runs it before it serves anything.
    pub async fn sweep_at_start(&self) -> Result<Sweep, CopyError> {
        if self.holds_anything()? {
            let wait = Duration::from_millis(START_CATCH_UP_MS_MAX);
            if let Err(error) = self.log.linearizable_read_index(wait).await {
                tracing::warn!(%error, "deleting by the state this replica applied: no leader answered");
            }
        }
        self.sweep(now_unix_millis()).await
    }

    /// Whether this node was released records (by its replica) or owes a
    /// receipt.
    fn holds_anything(&self) -> Result<bool, CopyError> {
        let me = self.key.node_id();
        let released = self
            .log
            .state()
            .read(|applied| applied.policy.holdings.values().any(|holders| holders.contains_key(&me)));
        Ok(released || !self.query.pending_receipts()?.is_empty())
    }

    /// Deletes what is due at `now_ms` and logs the receipts; receipts a
    /// restart left owed are finished first.
    pub async fn sweep(&self, now_ms: UnixMillis) -> Result<Sweep, CopyError> {
        let mut sweep = Sweep::default();
        for (grant, cause) in self.work(now_ms)? {
            let query = self.query.clone();
            let receipt = tokio::task::spawn_blocking(move || query.delete_received(grant, &cause))
                .await
                .map_err(|_| CopyError::Unavailable)??;
            sweep.deletions += 1;
            sweep.records_deleted += receipt.records_deleted;
            if self.log_receipt(&receipt).await? {
                sweep.receipts_logged += 1;
            }
        }
        Ok(sweep)
    }

    /// The deletions to make: receipts still owed (with their own cause,
    /// so a retention resumes at its cutoff), then what the state says is
    /// due and is not among them.
    fn work(&self, now_ms: UnixMillis) -> Result<Vec<(GrantId, DeletionCause)>, CopyError> {
        let mut work: Vec<(GrantId, DeletionCause)> = self
            .query
            .pending_receipts()?
            .into_iter()
            .map(|receipt| (receipt.grant, receipt.cause))
            .collect();
        let me = self.key.node_id();
        let due = self.log.state().read(|applied| applied.policy.deletions_due(&me, now_ms));
        for due in due {
            if !work.iter().any(|(grant, cause)| *grant == due.grant && same_deletion(cause, &due.cause)) {
                work.push((due.grant, due.cause));
            }
        }
        Ok(work)
    }

    /// Signs and submits `receipt`; forgets it once the log took it, or
    /// refused it for good (it was logged before, or is not this node's to
    /// give). Returns whether the log took it.
    async fn log_receipt(&self, receipt: &DeletionReceipt) -> Result<bool, CopyError> {
        let command = Command::ConfirmDeletion(receipt.clone());
        let Ok(envelope) = SignedEnvelope::sign(&self.key, &command, now_unix_millis()) else {
            return Ok(false);
        };
        let outcome = match self.log.submit(vec![envelope]).await {
            Ok(result) => result.outcomes.into_iter().next(),
            Err(error) => {
                tracing::info!(%error, grant = receipt.grant, "deletion receipt not logged yet; retried at the next sweep");
                return Ok(false);
            }
        };
        let taken = matches!(outcome, Some(Ok(_)));
        let settled = match &outcome {
            Some(Ok(_)) => true,
            // Refused for good, or (a bad cutoff or time, e.g. after a
            // clock jump) made again from the state at the next sweep.
            Some(Err(rejection)) => matches!(
                rejection.code,
                RejectionCode::DeletionDuplicate
                    | RejectionCode::DeletionNotDue
                    | RejectionCode::DeletionNotHolder
                    | RejectionCode::GrantUnknown
                    | RejectionCode::InvalidArgument
            ),
            None => false,
        };
        if let Some(Err(rejection)) = &outcome {
            tracing::warn!(code = ?rejection.code, grant = receipt.grant, "deletion receipt refused");
        }
        if settled {
            self.query.settle_receipt(receipt)?;
        }
        Ok(taken)
    }

    /// Sweeps every `interval_ms` until `stop`, and prunes the closed
    /// corrections that closed more than `closed_corrections_kept_ms` ago.
    pub async fn run(
        self,
        interval_ms: u64,
        closed_corrections_kept_ms: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(Duration::from_millis(interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticks.tick() => {}
            }
            match self.sweep(now_unix_millis()).await {
                Ok(sweep) if sweep.deletions > 0 => tracing::info!(
                    deletions = sweep.deletions,
                    records = sweep.records_deleted,
                    receipts = sweep.receipts_logged,
                    "deleted what was due"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "deletion sweep failed; retried at the next one"),
            }
            self.prune_closed_corrections(closed_corrections_kept_ms).await;
        }
    }

    /// Prunes the closed corrections that closed before the start of the
    /// day (Asia/Shanghai) `kept_ms` before now: one range deletion a day.
    /// "Now" is the earlier of the clock and the log's latest entry time,
    /// so a clock set ahead by mistake prunes nothing early.
    async fn prune_closed_corrections(&self, kept_ms: u64) {
        let entry_time_ms = self.log.state().read(|applied| applied.policy.last_entry_time_ms);
        let now_ms = now_unix_millis().min(entry_time_ms);
        let day = civmesh_policy::evaluation::format_date(now_ms.saturating_sub(kept_ms));
        let Ok(before_ms) = civmesh_policy::evaluation::parse_date(&day) else { return };
        let history = self.log.history().clone();
        let pruned = tokio::task::spawn_blocking(move || history.prune_closed_corrections(before_ms)).await;
        match pruned {
            Ok(Ok(true)) => {
                tracing::info!(before = day, "pruned the closed corrections past their retention")
            }
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot prune closed corrections; retried at the next sweep")
            }
            Err(error) => tracing::warn!(%error, "the pruning of closed corrections stopped"),
        }
    }
}

/// Whether two causes are the same deletion: any two retention cutoffs of
/// a grant are (the owed one finishes first), otherwise equal causes.
fn same_deletion(owed: &DeletionCause, due: &DeletionCause) -> bool {
    match (owed, due) {
        (DeletionCause::RetentionEnded { .. }, DeletionCause::RetentionEnded { .. }) => true,
        _ => owed == due,
    }
}
