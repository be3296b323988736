//! The changes subscribers have yet to hear of: each record write queues
//! its dataset and keys in the same synced batch, and the owner's push
//! worker ([`crate::query::QueryService::run_push_queue`]) pushes the
//! records' latest versions and then forgets the entry. A crash between
//! the two pushes them again, and subscribers drop what they hold.

use civmesh_certs::codec;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{be_u64, synced, RecordStore, RecordStoreError};

pub(super) const PUSH_QUEUE_FAMILY: &str = "push_queue";
/// Pushes logged but not yet delivered, by access-log position: the retry
/// task's ([`crate::query::QueryService::run_push_retries`]).
pub(super) const PUSHES_FAMILY: &str = "pushes";
/// The largest queued entry decoded, in bytes: one write's keys.
const QUEUED_CHANGES_BYTES_MAX: usize = 8 * 1024 * 1024;

/// One record write's changes, queued for the subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedChanges {
    /// The dataset.
    pub dataset: String,
    /// The keys of the records written.
    pub keys: Vec<String>,
}

impl RecordStore {
    /// Adds `changes` to `batch`, as the queue's next entry. The caller
    /// holds the write lock, so entries are numbered in write order.
    pub(super) fn queue_changes(
        &self,
        batch: &mut WriteBatch,
        changes: &QueuedChanges,
    ) -> Result<(), RecordStoreError> {
        let number = self.push_queue_next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bytes = codec::encode(changes).map_err(|error| RecordStoreError::Corrupt(error.to_string()))?;
        batch.put_cf(self.family(PUSH_QUEUE_FAMILY)?, number.to_be_bytes(), bytes);
        Ok(())
    }

    /// The number the queue's next entry gets: one past the last one held.
    pub(super) fn push_queue_end(db: &rocksdb::DB) -> Result<u64, RecordStoreError> {
        let family = db.cf_handle(PUSH_QUEUE_FAMILY).ok_or_else(|| {
            RecordStoreError::Corrupt(format!("column family {PUSH_QUEUE_FAMILY} is missing"))
        })?;
        match db.iterator_cf(family, IteratorMode::End).next() {
            Some(item) => Ok(be_u64(&item?.0, "a push queue number")? + 1),
            None => Ok(0),
        }
    }

    /// Up to `limit` queued entries, oldest first, with their numbers.
    pub fn queued_changes(&self, limit: usize) -> Result<Vec<(u64, QueuedChanges)>, RecordStoreError> {
        let mut queued = Vec::new();
        for item in self.db.iterator_cf(self.family(PUSH_QUEUE_FAMILY)?, IteratorMode::Start).take(limit) {
            let (key, value) = item?;
            let changes = codec::decode_exact(&value, QUEUED_CHANGES_BYTES_MAX)
                .map_err(|error| RecordStoreError::Corrupt(error.to_string()))?;
            queued.push((be_u64(&key, "a push queue number")?, changes));
        }
        Ok(queued)
    }

    /// How many entries are queued.
    pub fn queued_count(&self) -> Result<u64, RecordStoreError> {
        let first = match self.db.iterator_cf(self.family(PUSH_QUEUE_FAMILY)?, IteratorMode::Start).next() {
            Some(item) => be_u64(&item?.0, "a push queue number")?,
            None => return Ok(0),
        };
        Ok(self.push_queue_next.load(std::sync::atomic::Ordering::SeqCst).saturating_sub(first))
    }

    /// Forgets entry `number` (pushed). Not synced: a crash may push it again.
    pub fn forget_queued_changes(&self, number: u64) -> Result<(), RecordStoreError> {
        self.db.delete_cf(self.family(PUSH_QUEUE_FAMILY)?, number.to_be_bytes())?;
        Ok(())
    }
}

/// The pushes logged but not delivered yet.
impl RecordStore {
    /// Keeps a logged push not yet delivered, by its access-log position, synced.
    pub fn put_push(&self, position: u64, bytes: &[u8]) -> Result<(), RecordStoreError> {
        self.db.put_cf_opt(self.family(PUSHES_FAMILY)?, position.to_be_bytes(), bytes, &synced())?;
        Ok(())
    }

    /// Up to `limit` undelivered pushes after position `after` (from the
    /// oldest if none), oldest first.
    pub fn pushes_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, RecordStoreError> {
        let from = after.map_or(0, |position| position.saturating_add(1)).to_be_bytes();
        let items =
            self.db.iterator_cf(self.family(PUSHES_FAMILY)?, IteratorMode::From(&from, Direction::Forward));
        let mut kept = Vec::new();
        for item in items.take(limit) {
            let (key, value) = item?;
            kept.push((be_u64(&key, "a push position")?, value.to_vec()));
        }
        Ok(kept)
    }

    /// Forgets a push (delivered, or given up), synced.
    pub fn delete_push(&self, position: u64) -> Result<(), RecordStoreError> {
        self.db.delete_cf_opt(self.family(PUSHES_FAMILY)?, position.to_be_bytes(), &synced())?;
        Ok(())
    }
}
