//! Signature verdicts reached when commands arrive, used at apply.
//!
//! A log entry's commands are verified as soon as this replica sees them
//! (the leader when it proposes them, a follower when `AppendEntries`
//! brings them), in ZIP 215 batches on a bounded pool, while the entry is
//! written, synced and replicated. Apply then looks up each command's
//! verdict by its envelope digest
//! ([`civmesh_certs::SignedEnvelope::digest`], over the signed body and the
//! signature, the only inputs of a verdict). A verdict still being reached
//! is waited for; a missing one (never started, evicted) is reached at
//! apply, in one batch for the whole apply call. Every replica still
//! verifies every signature itself, under the same rule, so every replica
//! reaches the same outcome; only when the work is done changes.
//!
//! Only this node reaches verdicts: a peer can make it verify, never tell
//! it what verified. The table is bounded ([`VERDICTS_MAX`]): the oldest
//! verdict is forgotten first, and apply verifies what it cannot find.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use civmesh_policy::signatures::commands_signatures_verify;
use civmesh_policy::SignedCommand;
use tokio::sync::{Notify, Semaphore};

/// The most verdicts kept, reached or being reached: a few seconds of
/// commands at full load. Apply consumes each verdict it uses.
pub const VERDICTS_MAX: usize = 65_536;
/// The most verification tasks at once, each one batch of an entry's
/// commands on a blocking thread.
pub const VERIFY_TASKS_MAX: usize = 4;
/// The most commands one verification task takes: an `AppendEntries` that
/// catches a follower up is spread over every free worker.
pub const TASK_COMMANDS_MAX: usize = 1_024;
/// The longest apply waits for a verdict being reached before verifying
/// the command itself.
pub const VERDICT_WAIT_MS_MAX: u64 = 2_000;

/// What is known of a command's signatures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Pending,
    Verified,
    Failed,
}

#[derive(Default)]
struct Table {
    verdicts: HashMap<[u8; 32], Verdict>,
    /// Digests in the order they were added, for eviction; a digest already
    /// consumed is skipped when its turn comes.
    order: VecDeque<[u8; 32]>,
}

impl Table {
    /// Marks `digest` pending unless a verdict is known; whether it is new.
    fn start(&mut self, digest: [u8; 32]) -> bool {
        if self.verdicts.contains_key(&digest) {
            return false;
        }
        while self.verdicts.len() >= VERDICTS_MAX {
            let Some(oldest) = self.order.pop_front() else { break };
            self.verdicts.remove(&oldest);
        }
        self.verdicts.insert(digest, Verdict::Pending);
        self.order.push_back(digest);
        if self.order.len() > VERDICTS_MAX.saturating_mul(2) {
            let verdicts = &self.verdicts;
            self.order.retain(|digest| verdicts.contains_key(digest));
        }
        debug_assert!(self.verdicts.len() <= VERDICTS_MAX);
        true
    }

    /// Records a verdict reached, unless it was forgotten meanwhile.
    fn settle(&mut self, digest: &[u8; 32], verified: bool) {
        if let Some(verdict) = self.verdicts.get_mut(digest) {
            *verdict = if verified { Verdict::Verified } else { Verdict::Failed };
        }
    }
}

/// The verdicts table and its pool; cloneable, shared by the Raft handlers
/// and the state machine.
#[derive(Clone)]
pub struct Verdicts {
    table: Arc<Mutex<Table>>,
    reached: Arc<Notify>,
    workers: Arc<Semaphore>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            table: Arc::default(),
            reached: Arc::new(Notify::new()),
            workers: Arc::new(Semaphore::new(VERIFY_TASKS_MAX)),
        }
    }
}

impl Verdicts {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts verifying `commands` on the pool, waiting for a free worker
    /// first: a proposer slowed by a busy pool is back-pressure, not a
    /// skipped check.
    pub async fn verify_arriving<'a>(&self, commands: impl IntoIterator<Item = &'a SignedCommand>) {
        let Ok(worker) = self.workers.clone().acquire_owned().await else { return };
        self.spawn(commands, worker);
    }

    /// Starts verifying `commands` on the pool if a worker is free; if not,
    /// apply verifies them. For `AppendEntries`, which must answer within a
    /// heartbeat.
    pub fn try_verify_arriving<'a>(&self, commands: impl IntoIterator<Item = &'a SignedCommand>) {
        if let Ok(worker) = self.workers.clone().try_acquire_owned() {
            self.spawn(commands, worker);
        }
    }

    /// Records that every signature of `command` verifies, without
    /// checking: only for a command this node signed itself over a request
    /// it verified itself (an owner's access record), so its own replica
    /// does not verify them again.
    pub fn vouch(&self, command: &SignedCommand) {
        let digest = command.digest();
        let mut table = self.table();
        table.start(digest);
        table.settle(&digest, true);
    }

    /// Verifies the commands without a verdict in tasks of at most
    /// [`TASK_COMMANDS_MAX`], each on a worker: `worker` for the first, and
    /// as many more as are free; what finds none is left to apply.
    fn spawn<'a>(
        &self,
        commands: impl IntoIterator<Item = &'a SignedCommand>,
        worker: tokio::sync::OwnedSemaphorePermit,
    ) {
        let fresh: Vec<([u8; 32], SignedCommand)> = {
            let table = self.table();
            commands
                .into_iter()
                .map(|command| (command.digest(), command))
                .filter(|(digest, _)| !table.verdicts.contains_key(digest))
                .map(|(digest, command)| (digest, command.clone()))
                .collect()
        };
        let mut worker = Some(worker);
        for part in fresh.chunks(TASK_COMMANDS_MAX) {
            let Some(permit) = worker.take().or_else(|| self.workers.clone().try_acquire_owned().ok()) else {
                return;
            };
            let part: Vec<([u8; 32], SignedCommand)> = {
                let mut table = self.table();
                part.iter().filter(|(digest, _)| table.start(*digest)).cloned().collect()
            };
            let verdicts = self.clone();
            tokio::task::spawn_blocking(move || {
                let commands: Vec<&SignedCommand> = part.iter().map(|(_, command)| command).collect();
                let verified = commands_signatures_verify(&commands);
                let mut table = verdicts.table();
                for ((digest, _), verified) in part.iter().zip(verified) {
                    table.settle(digest, verified);
                }
                drop(table);
                drop(permit);
                verdicts.reached.notify_waiters();
            });
        }
    }

    /// Whether each command's every signature verifies, consuming the
    /// verdicts reached on arrival: waits for those being reached (at most
    /// [`VERDICT_WAIT_MS_MAX`]), and verifies the rest in batches here.
    pub async fn settle(&self, commands: &[&SignedCommand]) -> Vec<bool> {
        let digests: Vec<[u8; 32]> = commands.iter().map(|command| command.digest()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(VERDICT_WAIT_MS_MAX);
        loop {
            let reached = self.reached.notified();
            tokio::pin!(reached);
            reached.as_mut().enable();
            let pending = {
                let table = self.table();
                digests.iter().any(|digest| table.verdicts.get(digest) == Some(&Verdict::Pending))
            };
            if !pending || tokio::time::timeout_at(deadline, reached).await.is_err() {
                break;
            }
        }
        let known: Vec<Option<Verdict>> = {
            let mut table = self.table();
            digests.iter().map(|digest| table.verdicts.remove(digest)).collect()
        };
        let unknown: Vec<&SignedCommand> = commands
            .iter()
            .zip(&known)
            .filter(|(_, verdict)| !matches!(verdict, Some(Verdict::Verified | Verdict::Failed)))
            .map(|(command, _)| *command)
            .collect();
        let mut reached_here = commands_signatures_verify(&unknown).into_iter();
        known
            .into_iter()
            .map(|verdict| match verdict {
                Some(Verdict::Verified) => true,
                Some(Verdict::Failed) => false,
                _ => reached_here.next().unwrap_or(false),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use civmesh_certs::{NodeKey, SignedEnvelope};
    use civmesh_policy::Command;

    fn command(key: &NodeKey, grant_id: u64) -> SignedCommand {
        let revoke = Command::RevokeGrant { grant_id, reason: "ended".into() };
        SignedEnvelope::sign(key, &revoke, 1).unwrap()
    }

    fn forged(key: &NodeKey, grant_id: u64) -> SignedCommand {
        let genuine = command(key, grant_id);
        let mut signature = genuine.signature_bytes().to_vec();
        signature[0] ^= 1;
        SignedEnvelope::from_parts(genuine.body_bytes().to_vec(), signature)
    }

    #[tokio::test]
    async fn arrival_and_apply_give_each_command_the_single_check_verdict() {
        let key = NodeKey::generate().unwrap();
        let commands = [command(&key, 1), forged(&key, 2), command(&key, 3)];
        let verdicts = Verdicts::default();
        verdicts.verify_arriving(&commands[..2]).await;
        let refs: Vec<&SignedCommand> = commands.iter().collect();
        assert_eq!(verdicts.settle(&refs).await, [true, false, true]);
        assert!(verdicts.table().verdicts.is_empty(), "apply consumes what it used");
        assert_eq!(verdicts.settle(&refs).await, [true, false, true], "and verifies what it cannot find");
    }

    #[test]
    fn the_table_forgets_the_oldest_verdict_past_its_bound() {
        let mut table = Table::default();
        for index in 0..=VERDICTS_MAX {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(index as u64).to_le_bytes());
            assert!(table.start(digest));
        }
        assert_eq!(table.verdicts.len(), VERDICTS_MAX);
        assert!(!table.verdicts.contains_key(&[0u8; 32]), "the oldest went first");
        table.settle(&[0u8; 32], true);
        assert!(!table.verdicts.contains_key(&[0u8; 32]), "a verdict for a forgotten digest is dropped");
    }
}
