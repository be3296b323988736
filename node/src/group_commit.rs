//! Group commit: commands that must be logged before an answer (access
//! records) are batched into one policy-log entry, so many queries share one
//! Raft round trip. Batching adapts to load: a command that finds a free
//! commit slot goes at once with whatever is already queued; while all
//! `GROUP_COMMIT_BATCHES_IN_FLIGHT_MAX` slots are busy, commands queue up and
//! leave together in the next batch. No timer adds latency at low load.

use std::sync::Arc;

use civmesh_consensus::{PolicyLog, SubmitError};
use civmesh_policy::{Applied, Rejection, SignedCommand};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::task::TaskTracker;

use crate::swarm::SwarmClient;

/// The most commands in one entry.
pub const GROUP_COMMIT_BATCH_MAX: usize = 256;
/// The most bytes of commands in one entry (within the policy log's
/// `SUBMIT_BYTES_MAX`).
pub const GROUP_COMMIT_BATCH_BYTES_MAX: usize = 128 * 1024;
const _: () = assert!(GROUP_COMMIT_BATCH_BYTES_MAX <= civmesh_consensus::policy_log::SUBMIT_BYTES_MAX);
/// Batches being committed at once at most. Two, not more: with the
/// signatures verified as entries arrive, the query path is bound by the
/// CPU of each entry's messages and syncs, and fewer, fuller entries serve
/// more queries (`civmesh-bench query`, 16 and 64 requesters: about 20%
/// more queries/s than with 4; one more gained nothing within the noise).
pub const GROUP_COMMIT_BATCHES_IN_FLIGHT_MAX: usize = 2;
/// Commands waiting for a batch at most; more wait to be queued.
pub const GROUP_COMMIT_QUEUED_MAX: usize = 4096;

/// The outcome of one command in a group.
pub type CommandOutcome = Result<Result<Applied, Rejection>, SubmitError>;

type Pending = (SignedCommand, oneshot::Sender<CommandOutcome>);

/// A handle to the group committer. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts the batching task on `tasks`, which also runs each batch's
    /// commit. The task ends once every handle is dropped.
    pub fn start(log: PolicyLog<SwarmClient>, tasks: &TaskTracker) -> Self {
        let (queue, receiver) = mpsc::channel(GROUP_COMMIT_QUEUED_MAX);
        tasks.spawn(run(log, receiver, tasks.clone()));
        GroupCommitter { queue }
    }

    /// Commits `command` in the next batch and returns its outcome once the
    /// entry is committed (or why it could not be).
    pub async fn commit(&self, command: SignedCommand) -> CommandOutcome {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((command, reply))
            .await
            .map_err(|_| SubmitError::Refused("group commit stopped".to_string()))?;
        outcome.await.map_err(|_| SubmitError::Refused("group commit dropped the command".to_string()))?
    }
}

async fn run(log: PolicyLog<SwarmClient>, mut receiver: mpsc::Receiver<Pending>, tasks: TaskTracker) {
    let in_flight = Arc::new(Semaphore::new(GROUP_COMMIT_BATCHES_IN_FLIGHT_MAX));
    let mut held_over: Option<Pending> = None;
    loop {
        let first = match held_over.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => break,
            },
        };
        // Wait for a commit slot first: while waiting, the queue fills.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let (batch, held) = gather(first, &mut receiver);
        held_over = held;
        let log = log.clone();
        tasks.spawn(async move {
            let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match log.submit(commands).await {
                Ok(result) => {
                    for (reply, outcome) in replies.into_iter().zip(result.outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// `first` and what is queued behind it, up to [`GROUP_COMMIT_BATCH_MAX`]
/// commands and [`GROUP_COMMIT_BATCH_BYTES_MAX`] bytes; the command that
/// would overflow the bytes is held over for the next batch.
fn gather(first: Pending, receiver: &mut mpsc::Receiver<Pending>) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = first.0.wire_bytes();
    let mut batch = vec![first];
    while batch.len() < GROUP_COMMIT_BATCH_MAX {
        let Ok(next) = receiver.try_recv() else { break };
        bytes += next.0.wire_bytes();
        if bytes > GROUP_COMMIT_BATCH_BYTES_MAX {
            return (batch, Some(next));
        }
        batch.push(next);
    }
    (batch, None)
}
