//! Cosigned checkpoints of the audit tree.
//!
//! Several checkpoints may be open at once. Each signer's latest
//! cosignature counts for one of them only (a new one moves it), so a
//! signer cannot hold a bogus checkpoint open against the others, and
//! there are never more open checkpoints than signers. A checkpoint is
//! final once cosigners from a majority of the organisations with a signer
//! in force cosigned it; a cosigner revoked, or whose certificate expired,
//! before that no longer counts. One not final within
//! [`CHECKPOINT_OPEN_MS_MAX`] of opening closes.

use std::collections::BTreeSet;

use civmesh_certs::{NodeId, OrgId, UnixMillis};

use super::rejection::{reject, Rejection, RejectionCode};
use super::{Applied, PolicyState};
use crate::audit::{
    signs_checkpoints, CheckpointBody, FinalCheckpoint, PendingCheckpoint, CHECKPOINT_OPEN_MS_MAX,
};
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

    /// The organisation `node` signs checkpoints for at `at_ms`, if it is
    /// an active hub or department member with a current certificate.
    fn signer_org(&self, node: &NodeId, at_ms: UnixMillis) -> Option<&OrgId> {
        self.active_member(node)
            .filter(|member| signs_checkpoints(member) && member.certificate_not_after_ms > at_ms)
            .map(|member| &member.org)
    }

    /// Closes the open checkpoints past their time, then moves the
    /// signer's cosignature to `body` (opening it if new); cosigners from a
    /// majority of the organisations in force make it final, and close
    /// every open checkpoint it covers.
    pub(super) fn record_cosignature(
        &mut self,
        body: CheckpointBody,
        signer: NodeId,
        at_ms: UnixMillis,
    ) -> Applied {
        let mut pending = std::mem::take(&mut self.pending_checkpoints);
        pending.retain(|candidate| at_ms < candidate.opened_at_ms.saturating_add(CHECKPOINT_OPEN_MS_MAX));
        for candidate in &mut pending {
            candidate.cosigners.remove(&signer);
            candidate.cosigners.retain(|cosigner| self.signer_org(cosigner, at_ms).is_some());
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
        let orgs_in_force: BTreeSet<&OrgId> =
            self.members.keys().filter_map(|node| self.signer_org(node, at_ms)).collect();
        let cosigning_orgs: BTreeSet<OrgId> = pending[index]
            .cosigners
            .iter()
            .filter_map(|cosigner| self.signer_org(cosigner, at_ms).cloned())
            .collect();
        if cosigning_orgs.len() * 2 > orgs_in_force.len() {
            let done = pending.remove(index);
            let size = done.body.tree_size;
            self.last_checkpoint = Some(FinalCheckpoint {
                body: done.body,
                cosigners: done.cosigners,
                cosigning_orgs,
                signer_orgs_in_force: orgs_in_force.len() as u64,
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
