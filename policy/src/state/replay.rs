//! Time and the replay window: the log's entry time never goes back, a
//! command's own time lies within the skew of its entry's, and a signed
//! command (or a requester's query) is applied at most once.

use civmesh_certs::{EnvelopeError, NodeId, NonceStore, UnixMillis, NONCE_BYTES};

use super::rejection::{reject, Rejection, RejectionCode};
use super::PolicyState;

/// How far a command's own timestamp may be from its entry's time, in ms.
/// Outside it the command is stale or future-dated, and is rejected.
pub const COMMAND_SKEW_MS_MAX: u64 = 5 * 60 * 1000;
/// The most command nonces the state remembers to reject replayed entries.
pub const COMMAND_NONCES_MAX: usize = 1_000_000;
/// The most command nonces the state remembers per signer: a signer over
/// it is `Overloaded` until its older commands leave the window, and no
/// other signer is affected.
pub const COMMAND_NONCES_PER_SIGNER_MAX: usize = 50_000;

/// Rejects a command issued outside [`COMMAND_SKEW_MS_MAX`] of its entry time.
pub(super) fn check_command_time(
    issued_at_ms: UnixMillis,
    entry_time_ms: UnixMillis,
) -> Result<(), Rejection> {
    let code = if issued_at_ms > entry_time_ms.saturating_add(COMMAND_SKEW_MS_MAX) {
        RejectionCode::FutureDated
    } else if issued_at_ms < entry_time_ms.saturating_sub(COMMAND_SKEW_MS_MAX) {
        RejectionCode::Stale
    } else {
        return Ok(());
    };
    Err(reject(code, format!("issued at {issued_at_ms} but entry time is {entry_time_ms}")))
}

impl PolicyState {
    /// Moves the log's time to `entry_time_ms`, or rejects an earlier one.
    pub(super) fn advance_entry_time(&mut self, entry_time_ms: UnixMillis) -> Result<(), Rejection> {
        if entry_time_ms < self.last_entry_time_ms {
            return Err(reject(
                RejectionCode::EntryTimeWentBack,
                format!("entry time {entry_time_ms} is before {}, already applied", self.last_entry_time_ms),
            ));
        }
        self.last_entry_time_ms = entry_time_ms;
        Ok(())
    }

    /// Records a nonce, or rejects a replay. It may expire nonces that have
    /// left the window, on every replica alike, even when it rejects.
    pub(super) fn check_replay(
        &mut self,
        nonces: &mut dyn NonceStore,
        signer: &NodeId,
        nonce: &[u8; NONCE_BYTES],
        issued_at_ms: UnixMillis,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        match self.recent_commands.check_and_record_in(nonces, signer, nonce, issued_at_ms, entry_time_ms) {
            Ok(()) => Ok(()),
            Err(EnvelopeError::Replayed(_)) => {
                Err(reject(RejectionCode::Replayed, "this signed command was applied before"))
            }
            Err(EnvelopeError::ReplayCacheFull(count)) => {
                Err(reject(RejectionCode::Overloaded, format!("{count} commands in the replay window")))
            }
            Err(EnvelopeError::SignerQuotaFull { signer, count }) => Err(reject(
                RejectionCode::Overloaded,
                format!("{signer} has {count} commands in the replay window, its quota"),
            )),
            Err(other) => Err(reject(RejectionCode::Stale, other.to_string())),
        }
    }

    /// Checks a requester's query against the window without spending its
    /// nonce: that happens only when the record is accepted.
    pub(super) fn check_query_fresh(
        &self,
        nonces: &dyn NonceStore,
        signer: &NodeId,
        nonce: &[u8; NONCE_BYTES],
        issued_at_ms: UnixMillis,
        entry_time_ms: UnixMillis,
    ) -> Result<(), Rejection> {
        match self.recent_commands.check_in(nonces, signer, nonce, issued_at_ms, entry_time_ms) {
            Ok(()) => Ok(()),
            Err(EnvelopeError::Replayed(_)) => {
                Err(reject(RejectionCode::Replayed, "this query was logged before"))
            }
            Err(other) => Err(reject(RejectionCode::Stale, format!("the requester's query: {other}"))),
        }
    }

    /// Whether `signer` is the CA or a member (revoked or not): a key whose
    /// nonces the replay window keeps.
    pub(super) fn knows_signer(&self, signer: &NodeId) -> bool {
        self.federation.as_ref().is_some_and(|federation| federation.ca_node_id == *signer)
            || self.members.contains_key(signer)
    }
}
