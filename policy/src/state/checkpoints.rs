//! Cosigned checkpoints of the audit tree.

use super::*;

impl PolicyState {
    /// Checks a cosignature against the open checkpoint and the log.
    pub(super) fn validate_cosignature(
        &self,
        body: &CheckpointBody,
        signer: &NodeId,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        let final_size = self.checkpoints.last().map_or(0, |last| last.body.tree_size);
        if body.tree_size <= final_size || body.tree_size > self.audit_leaves.len() as u64 {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!(
                    "a checkpoint covers more than the last final one ({final_size}) and at most the audit leaves ({})",
                    self.audit_leaves.len()
                ),
            ));
        }
        match &self.pending_checkpoint {
            Some(pending) if pending.body == *body && pending.cosigners.contains(signer) => {
                Err(reject(RejectionCode::CheckpointDuplicate, "already cosigned"))
            }
            Some(pending)
                if pending.body != *body
                    && entry_time_ms < pending.opened_at_ms.saturating_add(CHECKPOINT_PENDING_MS_MAX) =>
            {
                Err(reject(
                    RejectionCode::CheckpointConflict,
                    format!("checkpoint at size {} is open", pending.body.tree_size),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Adds a cosignature; a majority of the signers in force makes the
    /// checkpoint final.
    pub(super) fn record_cosignature(&mut self, body: CheckpointBody, signer: NodeId, at_ms: UnixMillis) {
        let pending = match self.pending_checkpoint.take() {
            Some(pending) if pending.body == body => pending,
            _ => PendingCheckpoint { body, opened_at_ms: at_ms, cosigners: BTreeSet::new() },
        };
        let mut pending = pending;
        pending.cosigners.insert(signer);
        let signers_in_force = self
            .members
            .values()
            .filter(|m| m.revoked.is_none() && crate::audit::signs_checkpoints(m))
            .count() as u64;
        if pending.cosigners.len() as u64 * 2 > signers_in_force {
            self.checkpoints.push(FinalCheckpoint {
                body: pending.body,
                cosigners: pending.cosigners,
                signers_in_force,
                final_at_ms: at_ms,
            });
        } else {
            self.pending_checkpoint = Some(pending);
        }
    }
}
