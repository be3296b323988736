//! The history the policy state counts but does not keep, in RocksDB:
//!
//! - `archive`: every applied command with its outcome, by command sequence
//!   (what an auditor replays);
//! - `access_log`: every access entry, by its position in the access log;
//! - `audit_leaves`: the audit tree's leaves, by position;
//! - `checkpoints`: the final checkpoints, by their number from 0.
//!
//! The state machine writes one apply call's history in one batch, unsynced:
//! a crash re-applies from the last state image (synced, which syncs the WAL
//! before it) and rewrites the same keys with the same values. A node that
//! joined by snapshot holds the history from the snapshot's index on only.

use std::sync::Arc;

use civmesh_certs::codec;
use civmesh_policy::audit::{ArchivedCommand, FinalCheckpoint, ARCHIVED_COMMAND_BYTES_MAX};
use civmesh_policy::{AccessLogEntry, Appended};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

pub(crate) const ARCHIVE_FAMILY: &str = "archive";
pub(crate) const ACCESS_LOG_FAMILY: &str = "access_log";
pub(crate) const AUDIT_LEAVES_FAMILY: &str = "audit_leaves";
pub(crate) const CHECKPOINTS_FAMILY: &str = "checkpoints";

/// The largest access entry decoded, in bytes: one command.
pub const ACCESS_ENTRY_BYTES_MAX: usize = ARCHIVED_COMMAND_BYTES_MAX;
/// The largest final checkpoint decoded, in bytes (its cosigners included).
pub const CHECKPOINT_BYTES_MAX: usize = 64 * 1024;
/// The most items one read returns.
pub const HISTORY_READ_ITEMS_MAX: usize = 50_000;

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// RocksDB failed.
    #[error("the policy log's history: {0}")]
    Database(#[from] rocksdb::Error),
    /// A stored value does not decode, or a column family is missing.
    #[error("the policy log's history holds a corrupt value: {0}")]
    Corrupt(String),
}

/// What one applied command leaves in the history.
pub(crate) struct AppliedCommand {
    pub archived: ArchivedCommand,
    pub appended: Appended,
    /// The access log's length after it.
    pub access_log_length: u64,
    /// The audit tree's size after it.
    pub audit_tree_size: u64,
    /// The final checkpoints after it.
    pub checkpoints_final: u64,
}

/// The history of one replica: reads for the node, appends for the state
/// machine.
#[derive(Clone)]
pub struct History {
    db: Arc<DB>,
}

impl History {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        History { db }
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, HistoryError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| HistoryError::Corrupt(format!("column family {name} is missing")))
    }

    /// Writes what an apply call applied, in one unsynced batch.
    pub(crate) fn append(&self, applied: &[AppliedCommand]) -> Result<(), HistoryError> {
        if applied.is_empty() {
            return Ok(());
        }
        let archive = self.family(ARCHIVE_FAMILY)?;
        let access_log = self.family(ACCESS_LOG_FAMILY)?;
        let leaves = self.family(AUDIT_LEAVES_FAMILY)?;
        let checkpoints = self.family(CHECKPOINTS_FAMILY)?;
        let mut batch = WriteBatch::default();
        for one in applied {
            batch.put_cf(archive, key(one.archived.sequence), encode(&one.archived)?);
            if let Some(entry) = &one.appended.access_entry {
                debug_assert_eq!(entry.sequence + 1, one.access_log_length);
                batch.put_cf(access_log, key(entry.sequence), encode(entry)?);
            }
            if let Some(leaf) = &one.appended.audit_leaf {
                debug_assert!(one.audit_tree_size > 0);
                batch.put_cf(leaves, key(one.audit_tree_size - 1), leaf);
            }
            if let Some(checkpoint) = &one.appended.checkpoint {
                debug_assert!(one.checkpoints_final > 0);
                batch.put_cf(checkpoints, key(one.checkpoints_final - 1), encode(checkpoint)?);
            }
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Up to `limit` commands from `from_sequence` on, in order (from the
    /// first held, on a node that joined by snapshot).
    pub fn commands(&self, from_sequence: u64, limit: usize) -> Result<Vec<ArchivedCommand>, HistoryError> {
        self.scan(ARCHIVE_FAMILY, from_sequence, limit, Gaps::Skipped, |bytes| {
            codec::decode_exact(bytes, ARCHIVED_COMMAND_BYTES_MAX).map_err(|error| error.to_string())
        })
    }

    /// Up to `limit` access entries from position `from` on, in order. A
    /// node that joined by snapshot holds none before the snapshot.
    pub fn access_entries(&self, from: u64, limit: usize) -> Result<Vec<AccessLogEntry>, HistoryError> {
        self.scan(ACCESS_LOG_FAMILY, from, limit, Gaps::EndTheRead, |bytes| {
            codec::decode_exact(bytes, ACCESS_ENTRY_BYTES_MAX).map_err(|error| error.to_string())
        })
    }

    /// The first access entry this node holds: 0, or where the snapshot it
    /// joined by left off; `None` before any.
    pub fn access_log_held_from(&self) -> Result<Option<u64>, HistoryError> {
        let family = self.family(ACCESS_LOG_FAMILY)?;
        let Some(item) = self.db.iterator_cf(family, IteratorMode::Start).next() else { return Ok(None) };
        let (stored_key, _) = item?;
        let bytes: [u8; 8] = stored_key
            .as_ref()
            .try_into()
            .map_err(|_| HistoryError::Corrupt("an access log key is not 8 bytes".to_string()))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// The access entry at `position`, if this node holds it.
    pub fn access_entry(&self, position: u64) -> Result<Option<AccessLogEntry>, HistoryError> {
        let Some(bytes) = self.db.get_cf(self.family(ACCESS_LOG_FAMILY)?, key(position))? else {
            return Ok(None);
        };
        let entry: AccessLogEntry = codec::decode_exact(&bytes, ACCESS_ENTRY_BYTES_MAX)
            .map_err(|error| HistoryError::Corrupt(error.to_string()))?;
        Ok(Some(entry))
    }

    /// Up to `limit` audit leaves from position `from` on, in order.
    pub fn audit_leaves(&self, from: u64, limit: usize) -> Result<Vec<[u8; 32]>, HistoryError> {
        self.scan(AUDIT_LEAVES_FAMILY, from, limit, Gaps::EndTheRead, |bytes| {
            bytes.try_into().map_err(|_| format!("an audit leaf of {} bytes", bytes.len()))
        })
    }

    /// Up to `limit` final checkpoints from number `from` (0 = the first)
    /// on, in order.
    pub fn checkpoints(&self, from: u64, limit: usize) -> Result<Vec<FinalCheckpoint>, HistoryError> {
        self.scan(CHECKPOINTS_FAMILY, from, limit, Gaps::Skipped, |bytes| {
            codec::decode_exact(bytes, CHECKPOINT_BYTES_MAX).map_err(|error| error.to_string())
        })
    }

    /// Reads up to `limit` (at most [`HISTORY_READ_ITEMS_MAX`]) values
    /// from `from` on.
    fn scan<T>(
        &self,
        family_name: &str,
        from: u64,
        limit: usize,
        gaps: Gaps,
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Vec<T>, HistoryError> {
        let family = self.family(family_name)?;
        let start = key(from);
        let mut values = Vec::new();
        let iterator = self.db.iterator_cf(family, IteratorMode::From(&start, Direction::Forward));
        for (expected, item) in (from..).zip(iterator.take(limit.min(HISTORY_READ_ITEMS_MAX))) {
            let (stored_key, value) = item?;
            if gaps == Gaps::EndTheRead && stored_key.as_ref() != key(expected) {
                break;
            }
            values.push(decode(&value).map_err(HistoryError::Corrupt)?);
        }
        Ok(values)
    }
}

/// Whether a read goes on past a missing position.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gaps {
    Skipped,
    EndTheRead,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, HistoryError> {
    codec::encode(value).map_err(|error| HistoryError::Corrupt(error.to_string()))
}

fn key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}
