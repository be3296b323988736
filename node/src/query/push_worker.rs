//! The owner's push worker: pushes the changes each record write queued
//! ([`crate::records::QueuedChanges`]) to the subscribers, in write order.

use std::sync::Arc;
use std::time::Duration;

use crate::records::{RecordStoreError, RecordVersion};

use super::pushes::{PUSH_QUEUE_READ_MAX, PUSH_RETRY_TICK_MS};
use super::QueryService;

impl QueryService {
    /// Wakes the push worker: a record write queued changes.
    pub fn changes_queued(&self) {
        self.changes_queued.notify_one();
    }

    /// The push worker: pushes each change the record store queued
    /// ([`crate::records::QueuedChanges`]), in write order, one entry at a
    /// time, with the records' latest versions, then forgets it; when woken
    /// by [`changes_queued`](Self::changes_queued) or every
    /// `PUSH_RETRY_TICK_MS`, until `stop`. What a stop interrupts stays
    /// queued and is pushed again at the next start.
    pub async fn run_push_queue(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(PUSH_RETRY_TICK_MS));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.changes_queued.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                () = self.push_queued() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Pushes what is queued now, until the queue is empty or unreadable.
    async fn push_queued(&self) {
        loop {
            let queued = match self.records.queued_changes(PUSH_QUEUE_READ_MAX) {
                Ok(queued) if !queued.is_empty() => queued,
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, "the push queue cannot be read");
                    return;
                }
            };
            for (number, changes) in queued {
                let keys: Vec<&str> = changes.keys.iter().map(String::as_str).collect();
                match self.records.latest_many(&changes.dataset, &keys) {
                    Ok(latest) => {
                        let changed: Vec<(String, RecordVersion)> = changes
                            .keys
                            .iter()
                            .zip(latest)
                            .filter_map(|(key, record)| record.map(|record| (key.clone(), record)))
                            .collect();
                        if !self.push_changes(&changes.dataset, &changed).await {
                            // Kept queued: the next tick pushes it again.
                            return;
                        }
                    }
                    // The disk failed: pushed again later.
                    Err(error @ RecordStoreError::Database(_)) => {
                        tracing::warn!(%error, "queued changes cannot be read; pushed again later");
                        return;
                    }
                    // A record that does not decode never will: the rest go on.
                    Err(error) => tracing::error!(%error, "queued changes cannot be read; not pushed"),
                }
                if let Err(error) = self.records.forget_queued_changes(number) {
                    tracing::warn!(%error, "the push queue cannot be written");
                    return;
                }
            }
        }
    }
}
