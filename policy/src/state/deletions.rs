//! Deletions: which holder nodes received records under each grant, what
//! they must delete (retention, the grant's end, a withdrawn consent), and
//! the receipts they log once they did.

use civmesh_certs::{NodeId, OrgId, UnixMillis};

use super::rejection::{reject, Rejection, RejectionCode};
use super::replay::COMMAND_SKEW_MS_MAX;
use super::{Applied, PolicyState};
use crate::deletion::{
    DeletionCause, DeletionReceipt, Holding, OverdueDeletion, Retention, DELETION_WITHIN_MS_DEFAULT,
};
use crate::model::{ConsentKey, Grant, GrantId};

/// Something a holder node must delete now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionDue {
    /// The grant the copies were received under.
    pub grant: GrantId,
    /// What to delete; a retention's cutoff is `now_ms - keep_ms`.
    pub cause: DeletionCause,
}

impl Grant {
    /// When the grant stopped allowing access: its revocation, or the end
    /// of its window; `None` while it still may.
    pub fn ended_at_ms(&self, now_ms: UnixMillis) -> Option<UnixMillis> {
        let end_ms = self
            .revoked
            .as_ref()
            .map_or(self.valid_until_ms, |revocation| revocation.at_ms.min(self.valid_until_ms));
        (end_ms <= now_ms).then_some(end_ms)
    }

    /// How long a holder has to delete what is due under the grant.
    pub fn delete_within_ms(&self) -> u64 {
        self.retention.map_or(DELETION_WITHIN_MS_DEFAULT, |retention| retention.delete_within_ms)
    }
}

impl PolicyState {
    /// A receipt is from a node of the grantee that was released records
    /// under the grant, for a deletion that is due and not yet confirmed.
    pub(super) fn validate_deletion(
        &self,
        receipt: &DeletionReceipt,
        signer: &NodeId,
        signer_org: &OrgId,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        let grant = self
            .grants
            .get(&receipt.grant)
            .ok_or_else(|| reject(RejectionCode::GrantUnknown, format!("no grant {}", receipt.grant)))?;
        let holding = self
            .holdings
            .get(&receipt.grant)
            .and_then(|holders| holders.get(signer))
            .filter(|_| grant.grantee == *signer_org)
            .ok_or_else(|| {
                let detail = format!("{signer} was never released records under grant {}", grant.id);
                reject(RejectionCode::DeletionNotHolder, detail)
            })?;
        check_deletion_time(receipt, grant, holding, entry_time_ms)?;
        if holding.ended_deleted_at_ms.is_some() {
            return Err(reject(
                RejectionCode::DeletionDuplicate,
                format!("every copy under grant {} was confirmed deleted already", grant.id),
            ));
        }
        match &receipt.cause {
            DeletionCause::RetentionEnded { received_before_ms } => {
                let retention = RetentionReceipt {
                    received_before_ms: *received_before_ms,
                    earliest_held_ms: receipt.earliest_held_ms,
                };
                check_retention_receipt(grant.retention, holding, retention, entry_time_ms)
            }
            DeletionCause::GrantEnded if grant.ended_at_ms(entry_time_ms).is_none() => {
                Err(reject(RejectionCode::DeletionNotDue, format!("grant {} has not ended", grant.id)))
            }
            DeletionCause::GrantEnded => Ok(()),
            DeletionCause::ConsentWithdrawn { subject } if holding.withdrawals_due.contains_key(subject) => {
                Ok(())
            }
            DeletionCause::ConsentWithdrawn { .. } => Err(reject(
                RejectionCode::DeletionNotDue,
                "no withdrawn consent of that subject awaits this node's deletion",
            )),
        }
    }

    pub(super) fn confirm_deletion(
        &mut self,
        receipt: DeletionReceipt,
        signer: NodeId,
        at_ms: UnixMillis,
    ) -> Applied {
        let Some(holding) =
            self.holdings.get_mut(&receipt.grant).and_then(|holders| holders.get_mut(&signer))
        else {
            return Applied::Done;
        };
        holding.receipts += 1;
        match receipt.cause {
            DeletionCause::RetentionEnded { received_before_ms } => {
                holding.deleted_before_ms = received_before_ms;
                // What the holder says it still keeps, never earlier than
                // before; when it names nothing, copies released since the
                // cutoff may still be on their way to it.
                let since_ms =
                    holding.retained_since_ms.unwrap_or(received_before_ms).max(received_before_ms);
                holding.retained_since_ms = match receipt.earliest_held_ms {
                    Some(earliest_ms) => Some(earliest_ms.max(since_ms)),
                    None if holding.last_release_ms >= received_before_ms => Some(since_ms),
                    None => None,
                };
            }
            DeletionCause::GrantEnded => {
                holding.ended_deleted_at_ms = Some(at_ms);
                holding.retained_since_ms = None;
                holding.withdrawals_due.clear();
            }
            DeletionCause::ConsentWithdrawn { subject } => {
                holding.withdrawals_due.remove(&subject);
            }
        }
        Applied::Done
    }

    /// Notes that `holder` was released records under `grant` at `at_ms`.
    pub(super) fn note_release(&mut self, grant: GrantId, holder: NodeId, at_ms: UnixMillis) {
        let holding = self.holdings.entry(grant).or_default().entry(holder).or_default();
        holding.last_release_ms = at_ms;
        holding.retained_since_ms.get_or_insert(at_ms);
    }

    /// A withdrawn consent makes its subject's copies due for deletion at
    /// every node released records under a grant that relied on it.
    /// With `sensitive_only`, only the separate consent for sensitive
    /// fields was withdrawn: only grants releasing one rely on it.
    pub(super) fn note_consent_withdrawn(
        &mut self,
        key: &ConsentKey,
        at_ms: UnixMillis,
        sensitive_only: bool,
    ) {
        let relying: Vec<(GrantId, UnixMillis)> = self
            .grants
            .values()
            .filter(|grant| {
                grant.needs_consent()
                    && grant.dataset == key.dataset
                    && grant.grantee == key.grantee
                    && grant.purpose == key.purpose
                    && (!sensitive_only || self.grants_sensitive_field(grant))
            })
            .map(|grant| (grant.id, at_ms.saturating_add(grant.delete_within_ms())))
            .collect();
        for (grant, due_ms) in relying {
            let Some(holders) = self.holdings.get_mut(&grant) else { continue };
            for holding in holders.values_mut().filter(|holding| holding.ended_deleted_at_ms.is_none()) {
                holding.withdrawals_due.entry(key.subject).or_insert(due_ms);
            }
        }
    }

    /// What `holder` must delete at `now_ms`: copies of ended grants, copies
    /// past their retention, and withdrawn subjects' copies.
    pub fn deletions_due(&self, holder: &NodeId, now_ms: UnixMillis) -> Vec<DeletionDue> {
        let mut due = Vec::new();
        for (grant_id, holders) in &self.holdings {
            let (Some(grant), Some(holding)) = (self.grants.get(grant_id), holders.get(holder)) else {
                continue;
            };
            if holding.ended_deleted_at_ms.is_some() {
                continue;
            }
            if grant.ended_at_ms(now_ms).is_some() {
                due.push(DeletionDue { grant: grant.id, cause: DeletionCause::GrantEnded });
                continue;
            }
            if let (Some(retention), Some(since_ms)) = (grant.retention, holding.retained_since_ms) {
                // Due half the time to delete after the retention, so a
                // holder receiving all the time deletes in batches, not at
                // every sweep; still well within the bound.
                let received_before_ms = now_ms.saturating_sub(retention.keep_ms);
                let due_ms =
                    since_ms.saturating_add(retention.keep_ms).saturating_add(retention.delete_within_ms / 2);
                if due_ms <= now_ms && received_before_ms > holding.deleted_before_ms {
                    let cause = DeletionCause::RetentionEnded { received_before_ms };
                    due.push(DeletionDue { grant: grant.id, cause });
                }
            }
            for subject in holding.withdrawals_due.keys() {
                let cause = DeletionCause::ConsentWithdrawn { subject: *subject };
                due.push(DeletionDue { grant: grant.id, cause });
            }
        }
        due
    }

    /// Every deletion due before `now_ms` that has no receipt: after a
    /// grant's end, after a retention, after a withdrawal, each plus the
    /// grant's time to delete.
    pub fn deletions_overdue(&self, now_ms: UnixMillis) -> Vec<OverdueDeletion> {
        let mut overdue = Vec::new();
        for (grant_id, holders) in &self.holdings {
            let Some(grant) = self.grants.get(grant_id) else { continue };
            let within_ms = grant.delete_within_ms();
            for (holder, holding) in
                holders.iter().filter(|(_, holding)| holding.ended_deleted_at_ms.is_none())
            {
                let mut push = |cause, due_at_ms: UnixMillis| {
                    if due_at_ms <= now_ms {
                        overdue.push(OverdueDeletion { grant: grant.id, holder: *holder, cause, due_at_ms });
                    }
                };
                if let Some(end_ms) = grant.ended_at_ms(now_ms) {
                    push(DeletionCause::GrantEnded, end_ms.saturating_add(within_ms));
                }
                if let (Some(retention), Some(since_ms)) = (grant.retention, holding.retained_since_ms) {
                    let due_at_ms = since_ms.saturating_add(retention.keep_ms).saturating_add(within_ms);
                    // Copies received up to `since_ms` included are due.
                    let cause =
                        DeletionCause::RetentionEnded { received_before_ms: since_ms.saturating_add(1) };
                    push(cause, due_at_ms);
                }
                for (subject, due_at_ms) in &holding.withdrawals_due {
                    push(DeletionCause::ConsentWithdrawn { subject: *subject }, *due_at_ms);
                }
            }
        }
        overdue
    }
}

/// A retention receipt's two times.
struct RetentionReceipt {
    received_before_ms: UnixMillis,
    earliest_held_ms: Option<UnixMillis>,
}

/// A deletion is not dated in the future, nor before what it deletes: the
/// grant's end, or the latest release it covers, or its cutoff (each
/// within the clock skew).
fn check_deletion_time(
    receipt: &DeletionReceipt,
    grant: &Grant,
    holding: &Holding,
    entry_time_ms: UnixMillis,
) -> Result<(), Rejection> {
    let deleted_at_ms = receipt.deleted_at_ms;
    if deleted_at_ms > entry_time_ms.saturating_add(COMMAND_SKEW_MS_MAX) {
        return Err(reject(RejectionCode::InvalidArgument, "the deletion time is in the future"));
    }
    let retention = matches!(receipt.cause, DeletionCause::RetentionEnded { .. });
    if !retention && receipt.earliest_held_ms.is_some() {
        return Err(reject(
            RejectionCode::InvalidArgument,
            "only a retention receipt names a copy still kept",
        ));
    }
    let after_ms = match &receipt.cause {
        DeletionCause::GrantEnded => {
            holding.last_release_ms.max(grant.ended_at_ms(entry_time_ms).unwrap_or(entry_time_ms))
        }
        DeletionCause::RetentionEnded { received_before_ms } => *received_before_ms,
        // The withdrawal's time: its deletion is due `delete_within` after.
        DeletionCause::ConsentWithdrawn { subject } => holding
            .withdrawals_due
            .get(subject)
            .map_or(0, |due_ms| due_ms.saturating_sub(grant.delete_within_ms())),
    };
    if deleted_at_ms.saturating_add(COMMAND_SKEW_MS_MAX) < after_ms {
        return Err(reject(RejectionCode::InvalidArgument, "deleted before the copies it covers were due"));
    }
    Ok(())
}

fn check_retention_receipt(
    retention: Option<Retention>,
    holding: &Holding,
    receipt: RetentionReceipt,
    entry_time_ms: UnixMillis,
) -> Result<(), Rejection> {
    let RetentionReceipt { received_before_ms, earliest_held_ms } = receipt;
    if retention.is_none() {
        return Err(reject(RejectionCode::DeletionNotDue, "the grant states no retention"));
    }
    if received_before_ms > entry_time_ms {
        return Err(reject(RejectionCode::InvalidArgument, "received_before_ms is in the future"));
    }
    if earliest_held_ms.is_some_and(|earliest_ms| {
        earliest_ms < received_before_ms || earliest_ms > entry_time_ms.saturating_add(COMMAND_SKEW_MS_MAX)
    }) {
        return Err(reject(
            RejectionCode::InvalidArgument,
            "the earliest copy held lies between the cutoff and the entry time",
        ));
    }
    if received_before_ms <= holding.deleted_before_ms {
        return Err(reject(
            RejectionCode::DeletionDuplicate,
            "copies received before that time were confirmed deleted already",
        ));
    }
    Ok(())
}
