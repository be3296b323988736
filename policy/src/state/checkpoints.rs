//! Cosigned checkpoints of the audit tree.
//!
//! Several checkpoints may be open at once. Each signer's latest
//! cosignature counts for one of them only (a new one moves it), so a
//! signer cannot hold a bogus checkpoint open against the others, and
//! there are never more open checkpoints than signers. A checkpoint is
//! final once a majority of the signers in force cosigned it; a cosigner
//! revoked, or whose certificate expired, before that no longer counts.

use std::collections::BTreeSet;

use civmesh_certs::{NodeId, UnixMillis};

use super::rejection::{reject, Rejection, RejectionCode};
use super::{Applied, PolicyState};
use crate::audit::{signs_checkpoints, CheckpointBody, FinalCheckpoint, PendingCheckpoint};
use crate::model::Member;

/// Rejects a cosignature from a member that does not sign checkpoints.
pub(super) fn check_cosigner(member: &Member) -> Result<(), Rejection> {
    if !signs_checkpoints(member) {
        return Err(reject(
            RejectionCode::NotAuthorised,
            "only hub and department members cosign checkpoints",
        ));
    }
    Ok(())
}

impl PolicyState {
    /// Checks a cosignature against the log and the signer's own latest one.
    pub(super) fn validate_cosignature(
        &self,
        body: &CheckpointBody,
        signer: &NodeId,
    ) -> Result<(), Rejection> {
        let final_size = self.last_checkpoint.as_ref().map_or(0, |last| last.body.tree_size);
        let leaves = self.audit_frontier.size();
        if body.tree_size <= final_size || body.tree_size > leaves {
            return Err(reject(
                RejectionCode::InvalidArgument,
                format!(
                    "a checkpoint covers more than the last final one ({final_size}) and at most the audit leaves ({leaves})"
                ),
            ));
        }
        if self
            .pending_checkpoints
            .iter()
            .any(|pending| pending.body == *body && pending.cosigners.contains(signer))
        {
            return Err(reject(RejectionCode::CheckpointDuplicate, "already cosigned"));
        }
        Ok(())
    }

    /// Whether `node` counts as a checkpoint signer at `at_ms`: an active
    /// hub or department member with a current certificate.
    fn counts_as_signer(&self, node: &NodeId, at_ms: UnixMillis) -> bool {
        self.active_member(node)
            .is_some_and(|member| signs_checkpoints(member) && member.certificate_not_after_ms > at_ms)
    }

    /// Moves the signer's cosignature to `body` (opening it if new); a
    /// majority of the signers in force makes it final, and closes every
    /// open checkpoint it covers.
    pub(super) fn record_cosignature(
        &mut self,
        body: CheckpointBody,
        signer: NodeId,
        at_ms: UnixMillis,
    ) -> Applied {
        let mut pending = std::mem::take(&mut self.pending_checkpoints);
        for candidate in &mut pending {
            candidate.cosigners.remove(&signer);
            candidate.cosigners.retain(|cosigner| self.counts_as_signer(cosigner, at_ms));
        }
        pending.retain(|candidate| !candidate.cosigners.is_empty() || candidate.body == body);
        let index = match pending.iter().position(|candidate| candidate.body == body) {
            Some(index) => index,
            None => {
                pending.push(PendingCheckpoint { body, opened_at_ms: at_ms, cosigners: BTreeSet::new() });
                pending.len() - 1
            }
        };
        pending[index].cosigners.insert(signer);
        let signers_in_force =
            self.members.values().filter(|member| self.counts_as_signer(&member.node_id, at_ms)).count()
                as u64;
        if pending[index].cosigners.len() as u64 * 2 > signers_in_force {
            let done = pending.remove(index);
            let size = done.body.tree_size;
            self.last_checkpoint = Some(FinalCheckpoint {
                body: done.body,
                cosigners: done.cosigners,
                signers_in_force,
                final_at_ms: at_ms,
            });
            self.checkpoints_final += 1;
            pending.retain(|candidate| candidate.body.tree_size > size);
        }
        self.pending_checkpoints = pending;
        Applied::Done
    }

    /// The open checkpoint with the most cosigners (the most recently
    /// opened of those), if any: the one a signer that looks at only one
    /// should consider. [`PolicyState::pending_checkpoints`] has them all.
    pub fn pending_checkpoint(&self) -> Option<&PendingCheckpoint> {
        self.pending_checkpoints.iter().max_by_key(|pending| (pending.cosigners.len(), pending.opened_at_ms))
    }
}
