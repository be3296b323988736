//! A holder's deletions of what it received under a grant: every
//! subscription's copy under it, by the cause's rule, counted into the
//! receipt the node owes (kept in the record store until the log settles
//! it).

use civmesh_certs::{codec, now_unix_millis};
use civmesh_policy::deletion::{DeletionCause, DeletionReceipt, SubjectsCommitment};
use civmesh_policy::model::GrantId;

use crate::query::{CopyError, InitialSync, Progress, QueryService, ReleasedRecord};
use crate::records::{CopyDeletion, RecordStoreError, COPY_BYTES_MAX};

/// Where kept answers come from: the owner node, and what was asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeptSource {
    /// The dataset.
    pub dataset: String,
    /// The owner node that answered.
    pub owner: civmesh_certs::NodeId,
    /// The fields asked for.
    pub fields: Vec<String>,
    /// For what.
    pub purpose: String,
    /// The grant relied on.
    pub grant: GrantId,
}

impl KeptSource {
    /// The id of its copy in the received store.
    pub fn digest(&self) -> [u8; 32] {
        let mut fields = self.fields.clone();
        fields.sort();
        let encoded = codec::encode(&(&self.dataset, &self.owner, &fields, &self.purpose, self.grant))
            .unwrap_or_default();
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"civmesh/kept-answers/v1\0");
        context.update(&encoded);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(context.finish().as_ref());
        digest
    }
}

impl QueryService {
    /// Keeps `records` released to this node (a query's answer, a listing's
    /// page) in the received store, under `source`, each received now;
    /// returns the source's id. Deleted like a subscription's copy.
    pub fn keep_received(
        &self,
        source: &KeptSource,
        records: &[ReleasedRecord],
        logged_at: u64,
    ) -> Result<[u8; 32], CopyError> {
        let digest = source.digest();
        {
            let _held = self.progress_lock.lock().map_err(|_| CopyError::Unavailable)?;
            if self.progress(&digest)?.is_none() {
                let now_ms = now_unix_millis();
                let progress = Progress {
                    dataset: source.dataset.clone(),
                    owner: source.owner,
                    fields: source.fields.clone(),
                    purpose: source.purpose.clone(),
                    grant: Some(source.grant),
                    page_size: 0,
                    started_at_ms: now_ms,
                    initial_sync: InitialSync::Done { finished_at_ms: now_ms },
                    pages: 0,
                    records_listed: 0,
                    records_held: 0,
                    last_push_position: None,
                    last_change_at_ms: None,
                    last_push_lag_ms: None,
                    last_error: None,
                    kept: true,
                };
                self.records.put_progress(&digest, &codec::encode(&progress)?)?;
            }
        }
        let listed = records.len() as u64;
        self.keep_in_copy(&digest, records, Some(logged_at), |progress| {
            progress.pages += 1;
            progress.records_listed += listed;
            progress.last_change_at_ms = Some(now_unix_millis());
        })?;
        Ok(digest)
    }

    /// Every copy in the received store (subscriptions' and kept
    /// answers'), with its id.
    pub fn received_sources(&self) -> Result<Vec<([u8; 32], Progress)>, CopyError> {
        let mut sources = Vec::new();
        for (digest, bytes) in self.records.subscription_progresses()? {
            sources.push((digest, codec::decode_exact(&bytes, COPY_BYTES_MAX)?));
        }
        Ok(sources)
    }

    /// Deletes every copy `cause` makes due under `grant`, in bounded
    /// synced batches, compacts each copy's range, and returns the receipt
    /// (kept as owed, with its deletion time) to log. Resumes a receipt a
    /// restart interrupted.
    pub fn delete_received(
        &self,
        grant: GrantId,
        cause: &DeletionCause,
    ) -> Result<DeletionReceipt, CopyError> {
        let template = DeletionReceipt {
            grant,
            cause: cause.clone(),
            records_deleted: 0,
            subjects_commitment: SubjectsCommitment::default().0,
            deleted_at_ms: 0,
            earliest_held_ms: None,
        };
        let mut receipt = self.records.pending_receipt(&template)?.unwrap_or(template);
        self.records.put_pending_receipt(&receipt)?;
        let which = CopyDeletion::of(cause);
        let mut earliest_held_ms: Option<u64> = None;
        let subscriptions = self.subscriptions_under(grant)?;
        self.forget_pushes(grant, cause, &subscriptions);
        for subscription in subscriptions {
            let (mut deleted, mut resume) = (0, None);
            loop {
                let batch = self.delete_batch(&subscription, which, &mut resume, &mut receipt)?;
                if batch == 0 {
                    break;
                }
                deleted += batch;
            }
            // Compacting and flushing is for what was deleted; nothing
            // deleted, nothing to purge.
            if deleted > 0 {
                self.records.compact_copies(&subscription)?;
            }
            if let CopyDeletion::ReleasedBefore(_) = which {
                let earliest_ms = self.records.earliest_released(&subscription)?;
                earliest_held_ms = match (earliest_held_ms, earliest_ms) {
                    (Some(held_ms), Some(this_ms)) => Some(held_ms.min(this_ms)),
                    (held_ms, this_ms) => held_ms.or(this_ms),
                };
            }
        }
        receipt.earliest_held_ms = earliest_held_ms;
        receipt.deleted_at_ms = now_unix_millis();
        self.records.put_pending_receipt(&receipt)?;
        Ok(receipt)
    }

    /// One batch of [`QueryService::delete_received`], with the
    /// subscription's count of subjects held brought down in the same write.
    fn delete_batch(
        &self,
        subscription: &[u8; 32],
        which: CopyDeletion,
        resume: &mut Option<[u8; 32]>,
        receipt: &mut DeletionReceipt,
    ) -> Result<u64, CopyError> {
        let _held = self.progress_lock.lock().map_err(|_| CopyError::Unavailable)?;
        let progress = self.progress(subscription)?;
        let deleted = self.records.delete_copies_batch(subscription, which, resume, receipt, |count| {
            let Some(mut progress) = progress else { return Ok(None) };
            progress.records_held = progress.records_held.saturating_sub(count);
            codec::encode(&progress).map(Some).map_err(|error| RecordStoreError::Corrupt(error.to_string()))
        })?;
        Ok(deleted)
    }

    /// When the release at access-log position `logged_at` was decided, by
    /// this replica's history (so a copy's retention counts from its
    /// release, however late it arrived); now when the replica does not
    /// hold it yet (a listing page or an answer read just after its entry
    /// committed), never later than now.
    pub(super) fn released_at_ms(&self, logged_at: Option<u64>) -> civmesh_certs::UnixMillis {
        let now_ms = now_unix_millis();
        let logged = logged_at.and_then(|position| self.log.history().access_entry(position).ok().flatten());
        logged.map_or(now_ms, |entry| entry.decided_at_ms.min(now_ms))
    }

    /// Of `records` released under `progress`'s grant, those this node may
    /// still keep by its replica: none once the grant ended or its end was
    /// confirmed deleted here; under a grant needing consent, only subjects
    /// whose consent is given.
    pub(super) fn still_keepable(
        &self,
        progress: &Progress,
        records: &[ReleasedRecord],
    ) -> Vec<ReleasedRecord> {
        let Some(grant_id) = progress.grant else { return records.to_vec() };
        let me = self.key.node_id();
        let now_ms = now_unix_millis();
        self.log.state().read(|applied| {
            let policy = &applied.policy;
            let Some(grant) = policy.grants.get(&grant_id) else { return Vec::new() };
            let ended_here = policy
                .holdings
                .get(&grant_id)
                .and_then(|holders| holders.get(&me))
                .is_some_and(|holding| holding.ended_deleted_at_ms.is_some());
            if grant.ended_at_ms(now_ms).is_some() || ended_here {
                return Vec::new();
            }
            records
                .iter()
                .filter(|record| {
                    !grant.needs_consent() || policy.check_consent(grant, &record.subject).is_ok()
                })
                .cloned()
                .collect()
        })
    }

    /// Drops the pushes waiting to be read that `cause` deleted under
    /// `grant`: none of their records is served after the deletion.
    fn forget_pushes(&self, grant: GrantId, cause: &DeletionCause, subscriptions: &[[u8; 32]]) {
        let Ok(mut received) = self.received.lock() else { return };
        let under: Vec<String> = subscriptions.iter().map(civmesh_policy::hex_digest::to_hex).collect();
        received.retain_mut(|push| {
            if !under.contains(&push.subscription) {
                return true;
            }
            match cause {
                DeletionCause::ConsentWithdrawn { subject } => {
                    push.body.records.retain(|record| record.subject != *subject);
                    !push.body.records.is_empty()
                }
                // Retention: the queue is short-lived, and drops them all
                // rather than keep a copy past its time.
                DeletionCause::GrantEnded | DeletionCause::RetentionEnded { .. } => false,
            }
        });
        tracing::debug!(grant, "pushes waiting under the deletion forgotten");
    }

    /// This node's subscriptions that rely on `grant`.
    fn subscriptions_under(&self, grant: GrantId) -> Result<Vec<[u8; 32]>, CopyError> {
        let mut under = Vec::new();
        self.records.visit_progresses(|digest, bytes| {
            let progress: Progress = codec::decode_exact(bytes, COPY_BYTES_MAX)
                .map_err(|error| RecordStoreError::Corrupt(error.to_string()))?;
            if progress.grant == Some(grant) {
                under.push(digest);
            }
            Ok(())
        })?;
        Ok(under)
    }

    /// The receipts this node owes and has not logged yet.
    pub fn pending_receipts(&self) -> Result<Vec<DeletionReceipt>, CopyError> {
        Ok(self.records.pending_receipts()?)
    }

    /// Forgets a receipt the log settled.
    pub fn settle_receipt(&self, receipt: &DeletionReceipt) -> Result<(), CopyError> {
        Ok(self.records.remove_pending_receipt(receipt)?)
    }
}
