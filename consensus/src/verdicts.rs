//! Signature verdicts reached when commands arrive, used at apply.
//!
//! A log entry's commands are verified as soon as this replica sees them
//! (the leader when it proposes them, a follower when its leader's
//! `AppendEntries` brings them), in ZIP 215 batches on a bounded pool, while
//! the entry is written, synced and replicated. Apply then looks up each
//! command's verdict by its envelope digest
//! ([`civmesh_certs::SignedEnvelope::digest`], over the signed body and the
//! signature, the only inputs of a verdict). A verdict still being reached
//! is waited for; a missing one (never started, evicted) is reached at
//! apply, in one batch for the whole apply call, off the async runtime.
//! Every replica verifies every signature itself under the same rule, so
//! every replica reaches the same outcome; only when the work is done
//! changes. The one exception is the owner of an access record: it signed
//! the record itself, over a request it verified at its edge, and vouches
//! for both ([`Verdicts::vouch`]).
//!
//! Only this node reaches verdicts: a peer can make it verify, never tell
//! it what verified. The table is bounded ([`VERDICTS_MAX`]): the oldest
//! verdict is forgotten first, and apply verifies what it cannot find.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use civmesh_certs::NodeId;
use civmesh_policy::signatures::commands_signatures_verify;
use civmesh_policy::SignedCommand;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The most verdicts kept, reached or being reached. Apply consumes each
/// verdict it uses, so the table holds what arrived and is not applied yet.
pub const VERDICTS_MAX: usize = 65_536;
/// The most verification tasks at once, each one batch of an entry's
/// commands on a blocking thread.
pub const VERIFY_TASKS_MAX: usize = 4;
/// The most commands one verification task takes: an `AppendEntries` that
/// catches a follower up is spread over every free worker.
pub const TASK_COMMANDS_MAX: usize = 1_024;
/// The most bytes of envelopes one verification task takes.
pub const TASK_BYTES_MAX: usize = 256 * 1024;
/// The most commands waiting for a verifier. Workers take them in batches,
/// whatever proposal or message brought them.
pub const BACKLOG_COMMANDS_MAX: usize = 16_384;
/// The longest a proposer waits for room in a full backlog before leaving
/// its commands to apply: a busy pool slows proposals down, never stalls
/// them.
pub const VERIFIER_WAIT_MS_MAX: u64 = 100;
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

/// Verdicts by digest, each with the generation it was started in, and the
/// order they were started in: a digest consumed and started again has a
/// new generation, so its older place in `order` no longer evicts it.
#[derive(Default)]
struct Table {
    verdicts: HashMap<[u8; 32], (Verdict, u64)>,
    order: VecDeque<([u8; 32], u64)>,
    generation: u64,
    /// Commands marked pending and waiting for a worker, at most
    /// [`BACKLOG_COMMANDS_MAX`].
    backlog: VecDeque<([u8; 32], SignedCommand)>,
}

impl Table {
    /// Marks `digest` pending unless a verdict is known; whether it is new.
    fn start(&mut self, digest: [u8; 32]) -> bool {
        if self.verdicts.contains_key(&digest) {
            return false;
        }
        while self.verdicts.len() >= VERDICTS_MAX {
            let Some((oldest, generation)) = self.order.pop_front() else { break };
            if self.verdicts.get(&oldest).is_some_and(|(_, current)| *current == generation) {
                self.verdicts.remove(&oldest);
            }
        }
        self.generation += 1;
        self.verdicts.insert(digest, (Verdict::Pending, self.generation));
        self.order.push_back((digest, self.generation));
        // Places of consumed verdicts are dropped once they outnumber the
        // verdicts: amortised O(1) a start, and `order` stays within twice
        // the bound.
        if self.order.len() > VERDICTS_MAX.saturating_mul(2) {
            let verdicts = &self.verdicts;
            self.order.retain(|(digest, generation)| {
                verdicts.get(digest).is_some_and(|(_, current)| current == generation)
            });
        }
        debug_assert!(self.verdicts.len() <= VERDICTS_MAX);
        debug_assert!(self.order.len() <= VERDICTS_MAX.saturating_mul(2) + 1);
        true
    }

    /// Records a verdict reached, unless it was forgotten meanwhile.
    fn settle(&mut self, digest: &[u8; 32], verified: bool) {
        if let Some((verdict, _)) = self.verdicts.get_mut(digest) {
            *verdict = if verified { Verdict::Verified } else { Verdict::Failed };
        }
    }

    fn verdict(&self, digest: &[u8; 32]) -> Option<Verdict> {
        self.verdicts.get(digest).map(|(verdict, _)| *verdict)
    }
}

/// The verdicts table and its pool; cloneable, shared by the Raft handlers
/// and the state machine.
#[derive(Clone)]
pub struct Verdicts {
    table: Arc<Mutex<Table>>,
    /// Signalled when verdicts are reached (apply waits on it).
    reached: Arc<Notify>,
    /// Signalled when the backlog has room again (proposers wait on it).
    drained: Arc<Notify>,
    workers: Arc<Semaphore>,
}

impl Default for Verdicts {
    fn default() -> Self {
        Verdicts {
            table: Arc::default(),
            reached: Arc::new(Notify::new()),
            drained: Arc::new(Notify::new()),
            workers: Arc::new(Semaphore::new(VERIFY_TASKS_MAX)),
        }
    }
}

impl Verdicts {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a proposal's `commands` for the pool, waiting at most
    /// [`VERIFIER_WAIT_MS_MAX`] for room in a full backlog: a busy pool
    /// holds proposers back. What finds no room is verified at apply.
    pub async fn verify_arriving(&self, commands: &[SignedCommand]) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(VERIFIER_WAIT_MS_MAX);
        let mut rest = commands;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let queued = self.enqueue(rest.iter());
            rest = rest.get(queued..).unwrap_or_default();
            self.wake_worker();
            if rest.is_empty() || tokio::time::timeout_at(deadline, drained).await.is_err() {
                return;
            }
        }
    }

    /// Queues `commands` for the pool as far as the backlog has room; apply
    /// verifies the rest. For `AppendEntries`, which must answer within a
    /// heartbeat.
    pub fn try_verify_arriving<'a>(&self, commands: impl IntoIterator<Item = &'a SignedCommand>) {
        self.enqueue(commands.into_iter());
        self.wake_worker();
    }

    /// Marks the commands without a verdict pending and queues them, until
    /// the backlog is full; how many of `commands` it went through.
    fn enqueue<'a>(&self, commands: impl Iterator<Item = &'a SignedCommand>) -> usize {
        let digested: Vec<([u8; 32], &SignedCommand)> =
            commands.map(|command| (command.digest(), command)).collect();
        let mut table = self.table();
        let mut through = 0;
        for (digest, command) in digested {
            if table.backlog.len() >= BACKLOG_COMMANDS_MAX {
                break;
            }
            if table.start(digest) {
                table.backlog.push_back((digest, command.clone()));
            }
            through += 1;
        }
        through
    }

    /// Starts a worker on the backlog if it holds commands and a worker is
    /// free; busy workers take what is queued before they stop.
    fn wake_worker(&self) {
        if self.table().backlog.is_empty() {
            return;
        }
        if let Ok(permit) = self.workers.clone().try_acquire_owned() {
            let verdicts = self.clone();
            tokio::task::spawn_blocking(move || verdicts.work(permit));
        }
    }

    /// Verifies the backlog in batches of at most [`TASK_COMMANDS_MAX`]
    /// commands and [`TASK_BYTES_MAX`] bytes until it is empty. A worker
    /// looks again after giving its permit back, so a command queued while
    /// it was stopping is never stranded.
    fn work(&self, permit: OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        loop {
            let part = self.take_part();
            if part.is_empty() {
                drop(permit.take());
                let waiting = !self.table().backlog.is_empty();
                match waiting.then(|| self.workers.clone().try_acquire_owned().ok()).flatten() {
                    Some(again) => {
                        permit = Some(again);
                        continue;
                    }
                    None => return,
                }
            }
            self.drained.notify_waiters();
            let commands: Vec<&SignedCommand> = part.iter().map(|(_, command)| command).collect();
            let verified = commands_signatures_verify(&commands);
            let mut table = self.table();
            for ((digest, _), verified) in part.iter().zip(verified) {
                table.settle(digest, verified);
            }
            drop(table);
            self.reached.notify_waiters();
        }
    }

    fn take_part(&self) -> Vec<([u8; 32], SignedCommand)> {
        let mut table = self.table();
        let mut part = Vec::new();
        let mut part_bytes = 0;
        while part.len() < TASK_COMMANDS_MAX && part_bytes < TASK_BYTES_MAX {
            let Some((digest, command)) = table.backlog.pop_front() else { break };
            part_bytes += command.wire_bytes();
            part.push((digest, command));
        }
        part
    }

    /// Records that every signature of `command` verifies, without
    /// checking: only for a command `me` signed itself over a request it
    /// verified itself (an owner's access record), so its own replica does
    /// not verify them again. Anything else, or a digest with a verdict
    /// already, is left as it is.
    pub fn vouch(&self, command: &SignedCommand, me: &NodeId) {
        if command.signer().ok().as_ref() != Some(me) {
            return;
        }
        let digest = command.digest();
        let mut table = self.table();
        if table.start(digest) {
            table.settle(&digest, true);
        }
    }

    /// Whether each command's every signature verifies, consuming the
    /// verdicts reached on arrival: waits for those being reached (at most
    /// [`VERDICT_WAIT_MS_MAX`]), and verifies the rest in batches on a
    /// blocking thread.
    pub async fn settle(&self, commands: &[&SignedCommand]) -> Vec<bool> {
        let digests: Vec<[u8; 32]> = commands.iter().map(|command| command.digest()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(VERDICT_WAIT_MS_MAX);
        loop {
            let reached = self.reached.notified();
            tokio::pin!(reached);
            reached.as_mut().enable();
            let pending = {
                let table = self.table();
                digests.iter().any(|digest| table.verdict(digest) == Some(Verdict::Pending))
            };
            if !pending || tokio::time::timeout_at(deadline, reached).await.is_err() {
                break;
            }
        }
        let known: Vec<Option<Verdict>> = {
            let mut table = self.table();
            digests.iter().map(|digest| table.verdicts.remove(digest).map(|(verdict, _)| verdict)).collect()
        };
        let unknown: Vec<SignedCommand> = commands
            .iter()
            .zip(&known)
            .filter(|(_, verdict)| !matches!(verdict, Some(Verdict::Verified | Verdict::Failed)))
            .map(|(command, _)| (*command).clone())
            .collect();
        let reached_here = if unknown.is_empty() {
            Vec::new()
        } else {
            // A failed task (the runtime stopping) leaves every command to
            // apply's full check.
            tokio::task::spawn_blocking(move || commands_signatures_verify(&unknown))
                .await
                .unwrap_or_default()
        };
        let mut reached_here = reached_here.into_iter();
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

    #[tokio::test]
    async fn a_busy_pool_holds_proposers_back_and_never_skips_a_check() {
        let key = NodeKey::generate().unwrap();
        let verdicts = Verdicts::default();
        let busy = verdicts.workers.clone().acquire_many_owned(VERIFY_TASKS_MAX as u32).await.unwrap();
        let filler = command(&key, 0);
        for index in 0..BACKLOG_COMMANDS_MAX {
            verdicts.table().backlog.push_back((digest_of(index), filler.clone()));
        }
        let commands = [command(&key, 1), forged(&key, 2)];
        let started = std::time::Instant::now();
        verdicts.verify_arriving(&commands[..1]).await;
        assert!(started.elapsed() >= Duration::from_millis(VERIFIER_WAIT_MS_MAX), "a proposer is held back");
        verdicts.try_verify_arriving(&commands[1..]);
        for command in &commands {
            assert_eq!(verdicts.table().verdict(&command.digest()), None, "a full backlog takes nothing");
        }
        let refs: Vec<&SignedCommand> = commands.iter().collect();
        assert_eq!(verdicts.settle(&refs).await, [true, false], "apply verifies what was not queued");
        verdicts.table().backlog.clear();
        drop(busy);
        verdicts.verify_arriving(&commands[..1]).await;
        assert!(verdicts.table().verdict(&commands[0].digest()).is_some(), "a free pool takes the proposal");
        assert_eq!(verdicts.settle(&refs[..1]).await, [true]);
    }

    fn digest_of(index: usize) -> [u8; 32] {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(index as u64).to_le_bytes());
        digest
    }

    #[test]
    fn a_digest_consumed_and_started_again_keeps_its_new_place() {
        let mut table = Table::default();
        let again = [9u8; 32];
        assert!(table.start(again));
        table.verdicts.remove(&again);
        assert!(table.start(digest_of(0)));
        assert!(table.start(again), "consumed, so started afresh, after digest 0");
        for index in 1..VERDICTS_MAX {
            assert!(table.start(digest_of(index)));
        }
        assert!(table.verdict(&again).is_some(), "its stale first place did not evict it");
        assert!(table.verdict(&digest_of(0)).is_none(), "the oldest verdict went instead");
        // Verdicts consumed as fast as they start leave places behind:
        // they are dropped, so `order` stays within twice the bound.
        for index in VERDICTS_MAX..VERDICTS_MAX * 4 {
            table.start(digest_of(index));
            table.verdicts.remove(&digest_of(index));
            assert!(table.order.len() <= VERDICTS_MAX * 2 + 1, "order stays bounded");
        }
    }

    #[test]
    fn only_this_nodes_own_commands_are_vouched_for_and_never_over_a_verdict() {
        let (me, other) = (NodeKey::generate().unwrap(), NodeKey::generate().unwrap());
        let verdicts = Verdicts::default();
        let theirs = command(&other, 1);
        verdicts.vouch(&theirs, &me.node_id());
        assert!(verdicts.table().verdicts.is_empty(), "another signer's command is not vouched for");
        let failed = forged(&me, 2);
        verdicts.table().start(failed.digest());
        verdicts.table().settle(&failed.digest(), false);
        verdicts.vouch(&failed, &me.node_id());
        assert_eq!(verdicts.table().verdict(&failed.digest()), Some(Verdict::Failed), "a verdict stands");
        let mine = command(&me, 3);
        verdicts.vouch(&mine, &me.node_id());
        assert_eq!(verdicts.table().verdict(&mine.digest()), Some(Verdict::Verified));
    }

    #[test]
    fn the_table_forgets_the_oldest_verdict_past_its_bound() {
        let mut table = Table::default();
        for index in 0..=VERDICTS_MAX {
            assert!(table.start(digest_of(index)));
        }
        assert_eq!(table.verdicts.len(), VERDICTS_MAX);
        assert!(!table.verdicts.contains_key(&[0u8; 32]), "the oldest went first");
        table.settle(&[0u8; 32], true);
        assert!(table.verdict(&[0u8; 32]).is_none(), "a verdict for a forgotten digest is dropped");
    }
}
