//! The history the policy state counts but does not keep, in RocksDB:
//!
//! - `archive`: every applied command with its outcome, by command sequence
//!   (what an auditor replays);
//! - `access_log`: every access entry, by its position in the access log;
//! - `audit_leaves`: the audit tree's leaves, by position;
//! - `audit_tree`: the hash of every perfect subtree of the audit tree, by
//!   level (one byte) and index (eight, big-endian), from which the root
//!   and the RFC 6962 proofs at any size are read in O(log n) reads
//!   ([`civmesh_policy::audit::TreeNode`]);
//! - `checkpoints`: the final checkpoints, by their number from 0;
//! - `corrections_closed`: the corrections that left the state a day after
//!   they closed, by the entry time they closed at (eight bytes,
//!   big-endian) and id, each with its id and track; those closed before
//!   the node's retention are pruned ([`History::prune_closed_corrections`]).
//!
//! The state machine writes one apply call's history in one batch, unsynced:
//! a crash re-applies from the last state image (synced, which syncs the WAL
//! before it) and rewrites the same keys with the same values. A node that
//! joined by snapshot holds the history from the snapshot's index on only,
//! and the tree's nodes from the snapshot's compact range on: roots and
//! consistency proofs from the snapshot's size on, inclusion proofs of the
//! leaves it applied itself.

use std::sync::Arc;

use civmesh_certs::codec;
use civmesh_certs::UnixMillis;
use civmesh_policy::audit::{
    ArchivedCommand, CompactRange, FinalCheckpoint, TreeNode, TreeNodes, TreeReadError,
    ARCHIVED_COMMAND_BYTES_MAX,
};
use civmesh_policy::correction::{CorrectionId, CorrectionTrack};
use civmesh_policy::{AccessLogEntry, Appended};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::store::{index_key, index_of, synced};

pub(crate) const ARCHIVE_FAMILY: &str = "archive";
pub(crate) const ACCESS_LOG_FAMILY: &str = "access_log";
pub(crate) const AUDIT_LEAVES_FAMILY: &str = "audit_leaves";
pub(crate) const CHECKPOINTS_FAMILY: &str = "checkpoints";
pub(crate) const AUDIT_TREE_FAMILY: &str = "audit_tree";
pub(crate) const CORRECTIONS_CLOSED_FAMILY: &str = "corrections_closed";
pub(crate) const HISTORY_META_FAMILY: &str = "history_meta";
/// The key, in `history_meta`, of the command count of the latest snapshot
/// this store installed: history before it may have gaps.
const SNAPSHOT_INSTALLED_KEY: &[u8] = b"snapshot-installed-at";
/// The key, in `history_meta`, of the time before which closed corrections
/// were pruned.
const CLOSED_PRUNED_BEFORE_KEY: &[u8] = b"corrections-closed-pruned-before";
/// The mark, in `audit_tree`, that the tree's nodes were built from the
/// stored leaves or never needed it (a node key is 9 bytes; this is not).
const TREE_BUILT_KEY: &[u8] = b"built-from-leaves";

/// The largest access entry decoded, in bytes: one command.
pub const ACCESS_ENTRY_BYTES_MAX: usize = ARCHIVED_COMMAND_BYTES_MAX;
/// The largest final checkpoint decoded, in bytes (its cosigners included).
pub const CHECKPOINT_BYTES_MAX: usize = 64 * 1024;
/// The largest closed correction decoded, in bytes: its id and its track
/// (at most 64 field names and seven stages).
pub const CLOSED_CORRECTION_BYTES_MAX: usize = 64 * 1024;
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

    /// What the replica's database holds in memory now.
    pub fn storage_memory(&self) -> crate::database::StorageMemory {
        crate::database::memory(&self.db)
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, HistoryError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| HistoryError::Corrupt(format!("column family {name} is missing")))
    }

    /// Writes what an apply call applied, in one unsynced batch.
    pub(crate) fn append(
        &self,
        applied: &[AppliedCommand],
        mut batch: WriteBatch,
    ) -> Result<(), HistoryError> {
        if applied.is_empty() && batch.is_empty() {
            return Ok(());
        }
        let archive = self.family(ARCHIVE_FAMILY)?;
        let access_log = self.family(ACCESS_LOG_FAMILY)?;
        let leaves = self.family(AUDIT_LEAVES_FAMILY)?;
        let checkpoints = self.family(CHECKPOINTS_FAMILY)?;
        let tree = self.family(AUDIT_TREE_FAMILY)?;
        let closed = self.family(CORRECTIONS_CLOSED_FAMILY)?;
        for one in applied {
            for (id, closed_at_ms, track) in &one.appended.closed_corrections {
                batch.put_cf(closed, closed_key(*closed_at_ms, id), encode(&(id, track))?);
            }
            batch.put_cf(archive, index_key(one.archived.sequence), encode(&one.archived)?);
            if let Some(entry) = &one.appended.access_entry {
                batch.put_cf(access_log, index_key(entry.sequence), encode(entry)?);
            }
            if let Some(leaf) = &one.appended.audit_leaf {
                debug_assert!(one.audit_tree_size > 0);
                batch.put_cf(leaves, index_key(one.audit_tree_size - 1), leaf);
            }
            for (node, hash) in &one.appended.audit_nodes {
                batch.put_cf(tree, node_key(*node), hash);
            }
            if let Some(checkpoint) = &one.appended.checkpoint {
                debug_assert!(one.checkpoints_final > 0);
                batch.put_cf(checkpoints, index_key(one.checkpoints_final - 1), encode(checkpoint)?);
            }
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Notes (synced) that this store installed a snapshot after
    /// `commands_applied` commands: what was handed over before it (access
    /// entries, released corrections) may be missing here.
    pub(crate) fn note_snapshot_installed(&self, commands_applied: u64) -> Result<(), HistoryError> {
        let meta = self.family(HISTORY_META_FAMILY)?;
        self.db.put_cf_opt(meta, SNAPSHOT_INSTALLED_KEY, commands_applied.to_be_bytes(), &synced())?;
        Ok(())
    }

    /// The command count of the latest snapshot this store installed, if
    /// any: its history is whole only after it.
    pub fn snapshot_installed_at(&self) -> Result<Option<u64>, HistoryError> {
        self.meta_number(SNAPSHOT_INSTALLED_KEY)
    }

    /// The number kept in `history_meta` under `key`, if there is one.
    fn meta_number(&self, key: &[u8]) -> Result<Option<u64>, HistoryError> {
        let Some(bytes) = self.db.get_pinned_cf(self.family(HISTORY_META_FAMILY)?, key)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| HistoryError::Corrupt(format!("{} is not 8 bytes", String::from_utf8_lossy(key))))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Removes the closed corrections that closed before `before_ms`, with
    /// one range deletion, and notes the time (synced), when there is one.
    /// The time never goes back: an earlier one removes nothing. Returns
    /// whether it moved.
    pub fn prune_closed_corrections(&self, before_ms: UnixMillis) -> Result<bool, HistoryError> {
        if self.closed_corrections_pruned_before()?.is_some_and(|pruned_ms| pruned_ms >= before_ms) {
            return Ok(false);
        }
        let closed = self.family(CORRECTIONS_CLOSED_FAMILY)?;
        let end = closed_key(before_ms, &[0; 32]);
        let first = self.db.iterator_cf(closed, IteratorMode::Start).next().transpose()?;
        if first.is_none_or(|(key, _)| *key >= end[..]) {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(closed, closed_key(0, &[0; 32]), end);
        batch.put_cf(self.family(HISTORY_META_FAMILY)?, CLOSED_PRUNED_BEFORE_KEY, before_ms.to_be_bytes());
        self.db.write_opt(batch, &synced())?;
        Ok(true)
    }

    /// The time before which closed corrections were pruned, if they were.
    pub fn closed_corrections_pruned_before(&self) -> Result<Option<UnixMillis>, HistoryError> {
        self.meta_number(CLOSED_PRUNED_BEFORE_KEY)
    }

    /// Keeps the perfect subtrees a compact range holds (synced): a store
    /// that starts from it, by snapshot, reads roots at its size and later.
    pub(crate) fn keep_frontier(&self, frontier: &CompactRange) -> Result<(), HistoryError> {
        let tree = self.family(AUDIT_TREE_FAMILY)?;
        let mut batch = WriteBatch::default();
        for (node, hash) in frontier.nodes() {
            batch.put_cf(tree, node_key(node), hash);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Builds the tree's nodes from the stored leaves, once, for a store
    /// written before the tree was stored (it holds leaf 0 and no mark that
    /// the tree is built). Reads the leaves a page at a time up to
    /// `frontier`'s size (what the state image counts; later leaves are
    /// re-applied) or a gap (a snapshot installed later), and checks a root
    /// that reaches `frontier`'s size against it. Only then does it mark the
    /// tree built (synced): a crash midway, or leaves that do not hash to
    /// the state's root, build again at the next start. Returns the leaves
    /// it built from.
    pub(crate) fn build_tree_from_leaves(&self, frontier: &CompactRange) -> Result<u64, HistoryError> {
        let tree = self.family(AUDIT_TREE_FAMILY)?;
        if self.db.get_pinned_cf(tree, TREE_BUILT_KEY)?.is_some() {
            return Ok(0);
        }
        let mut range = CompactRange::default();
        let held = frontier.size() > 0 && !self.audit_leaves(0, 1)?.is_empty();
        while held && range.size() < frontier.size() {
            let wanted = usize::try_from(frontier.size() - range.size()).unwrap_or(usize::MAX);
            let leaves = self.audit_leaves(range.size(), wanted.min(HISTORY_READ_ITEMS_MAX))?;
            if leaves.is_empty() {
                break;
            }
            let mut batch = WriteBatch::default();
            for leaf in &leaves {
                for (node, hash) in range.push(leaf) {
                    batch.put_cf(tree, node_key(node), hash);
                }
            }
            self.db.write(batch)?;
        }
        if held && range.size() == frontier.size() && range.root() != frontier.root() {
            return Err(HistoryError::Corrupt(
                "the stored audit leaves do not hash to the state's root".to_string(),
            ));
        }
        self.keep_frontier(frontier)?;
        self.db.put_cf_opt(tree, TREE_BUILT_KEY, [1], &synced())?;
        Ok(range.size())
    }

    /// The audit tree's root at `size` leaves (`size` at most what the
    /// applied state counts).
    pub fn tree_root(&self, size: u64) -> Result<[u8; 32], TreeReadError<HistoryError>> {
        civmesh_policy::audit::root_at(self, size)
    }

    /// The RFC 6962 audit path of leaf `leaf` in the tree of `size` leaves.
    pub fn inclusion_proof(
        &self,
        leaf: u64,
        size: u64,
    ) -> Result<Vec<[u8; 32]>, TreeReadError<HistoryError>> {
        civmesh_policy::audit::inclusion_proof(self, leaf, size)
    }

    /// The RFC 6962 proof that the tree of `old_size` leaves is a prefix of
    /// the tree of `size`.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        size: u64,
    ) -> Result<Vec<[u8; 32]>, TreeReadError<HistoryError>> {
        civmesh_policy::audit::consistency_proof(self, old_size, size)
    }

    /// Up to `limit` commands from `from_sequence` on, in order (from the
    /// first held, on a node that joined by snapshot).
    pub fn commands(&self, from_sequence: u64, limit: usize) -> Result<Vec<ArchivedCommand>, HistoryError> {
        let (_, commands) = self.scan(ARCHIVE_FAMILY, from_sequence, limit, |bytes| {
            codec::decode_exact(bytes, ARCHIVED_COMMAND_BYTES_MAX).map_err(|error| error.to_string())
        })?;
        Ok(commands)
    }

    /// Up to `limit` access entries from position `from` on, in order, and
    /// the position of the first: `from`, or where this node's history
    /// starts if it joined by snapshot after `from`.
    pub fn access_entries(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<(u64, Vec<AccessLogEntry>), HistoryError> {
        self.scan(ACCESS_LOG_FAMILY, from, limit, |bytes| {
            codec::decode_exact(bytes, ACCESS_ENTRY_BYTES_MAX).map_err(|error| error.to_string())
        })
    }

    /// The access entry at `position`, if this node holds it.
    pub fn access_entry(&self, position: u64) -> Result<Option<AccessLogEntry>, HistoryError> {
        let Some(bytes) = self.db.get_cf(self.family(ACCESS_LOG_FAMILY)?, index_key(position))? else {
            return Ok(None);
        };
        let entry: AccessLogEntry = codec::decode_exact(&bytes, ACCESS_ENTRY_BYTES_MAX)
            .map_err(|error| HistoryError::Corrupt(error.to_string()))?;
        Ok(Some(entry))
    }

    /// Up to `limit` audit leaves from position `from` exactly, in order;
    /// none if this node does not hold `from` (it joined by snapshot after it).
    pub fn audit_leaves(&self, from: u64, limit: usize) -> Result<Vec<[u8; 32]>, HistoryError> {
        let (first, leaves) = self.scan(AUDIT_LEAVES_FAMILY, from, limit, |bytes| {
            bytes.try_into().map_err(|_| format!("an audit leaf of {} bytes", bytes.len()))
        })?;
        Ok(if first == from { leaves } else { Vec::new() })
    }

    /// Up to `limit` final checkpoints from number `from` (0 = the first)
    /// on, in order, and the number of the first (as for
    /// [`History::access_entries`]).
    pub fn checkpoints(&self, from: u64, limit: usize) -> Result<(u64, Vec<FinalCheckpoint>), HistoryError> {
        self.scan(CHECKPOINTS_FAMILY, from, limit, |bytes| {
            codec::decode_exact(bytes, CHECKPOINT_BYTES_MAX).map_err(|error| error.to_string())
        })
    }

    /// Up to `limit` (at most [`HISTORY_READ_ITEMS_MAX`]) closed corrections
    /// that left the state, in the order they closed, from the first
    /// closed at `from_ms` or later and not before `after` (the key of the
    /// last one read, to read on from it).
    pub fn closed_corrections(
        &self,
        from_ms: UnixMillis,
        after: Option<ClosedKey>,
        limit: usize,
    ) -> Result<ClosedCorrections, HistoryError> {
        let start = after.map_or_else(|| closed_key(from_ms, &[0; 32]), |after| after.0);
        let iterator = self
            .db
            .iterator_cf(
                self.family(CORRECTIONS_CLOSED_FAMILY)?,
                IteratorMode::From(&start, Direction::Forward),
            )
            .skip(usize::from(after.is_some()))
            .take(limit.min(HISTORY_READ_ITEMS_MAX));
        let mut read = Vec::new();
        let mut last = None;
        for item in iterator {
            let (key, value) = item?;
            let key: [u8; 40] = key.as_ref().try_into().map_err(|_| {
                HistoryError::Corrupt("a closed correction's key is not 40 bytes".to_string())
            })?;
            let correction = codec::decode_exact(&value, CLOSED_CORRECTION_BYTES_MAX)
                .map_err(|error| HistoryError::Corrupt(error.to_string()))?;
            read.push(correction);
            last = Some(ClosedKey(key));
        }
        Ok(ClosedCorrections { read, last })
    }

    /// Reads up to `limit` (at most [`HISTORY_READ_ITEMS_MAX`]) consecutive
    /// values from the first held at or after `from`; returns its position
    /// (`from` when there is none) and the values. A gap ends the read.
    fn scan<T>(
        &self,
        family_name: &str,
        from: u64,
        limit: usize,
        decode: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<(u64, Vec<T>), HistoryError> {
        let family = self.family(family_name)?;
        let start = index_key(from);
        let mut iterator = self
            .db
            .iterator_cf(family, IteratorMode::From(&start, Direction::Forward))
            .take(limit.min(HISTORY_READ_ITEMS_MAX));
        let Some(item) = iterator.next() else { return Ok((from, Vec::new())) };
        let (first_key, first_value) = item?;
        let first = index_of(&first_key)
            .ok_or_else(|| HistoryError::Corrupt("a history key is not 8 bytes".to_string()))?;
        let mut values = vec![decode(&first_value).map_err(HistoryError::Corrupt)?];
        for (expected, item) in (first + 1..).zip(iterator) {
            let (stored_key, value) = item?;
            if stored_key.as_ref() != index_key(expected) {
                break;
            }
            values.push(decode(&value).map_err(HistoryError::Corrupt)?);
        }
        Ok((first, values))
    }
}

impl TreeNodes for History {
    type Error = HistoryError;

    fn node_hash(&self, node: TreeNode) -> Result<Option<[u8; 32]>, HistoryError> {
        let Some(bytes) = self.db.get_pinned_cf(self.family(AUDIT_TREE_FAMILY)?, node_key(node))? else {
            return Ok(None);
        };
        let hash = bytes
            .as_ref()
            .try_into()
            .map_err(|_| HistoryError::Corrupt(format!("an audit tree node of {} bytes", bytes.len())))?;
        Ok(Some(hash))
    }
}

/// One read of closed corrections ([`History::closed_corrections`]).
#[derive(Debug)]
pub struct ClosedCorrections {
    /// Each one's id and track, in the order they closed.
    pub read: Vec<(CorrectionId, CorrectionTrack)>,
    /// The key of the last one read; `None` when none was.
    pub last: Option<ClosedKey>,
}

/// Where a read of closed corrections ended ([`History::closed_corrections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedKey([u8; 40]);

/// A closed correction's key: the entry time it closed at, big-endian, so
/// they are stored in that order, then its id.
fn closed_key(closed_at_ms: UnixMillis, id: &CorrectionId) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&closed_at_ms.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

/// A tree node's key: its level, then its index big-endian, so each
/// level's nodes are stored in order.
fn node_key(node: TreeNode) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = node.level;
    key[1..].copy_from_slice(&node.index.to_be_bytes());
    key
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, HistoryError> {
    codec::encode(value).map_err(|error| HistoryError::Corrupt(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_start_at_the_first_held_and_end_at_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (_, state_machine) = crate::store::open(dir.path()).unwrap();
        let history = state_machine.history();
        let leaves = history.family(AUDIT_LEAVES_FAMILY).unwrap();
        for position in [5u64, 6, 7, 9] {
            history.db.put_cf(leaves, index_key(position), [position as u8; 32]).unwrap();
        }
        let read = |from: u64, limit: usize| {
            let (first, values) =
                history.scan(AUDIT_LEAVES_FAMILY, from, limit, |bytes| Ok(bytes[0])).unwrap();
            (first, values)
        };
        let cases = [
            (0, 10, (5, vec![5, 6, 7])),
            (5, 2, (5, vec![5, 6])),
            (6, 10, (6, vec![6, 7])),
            (8, 10, (9, vec![9])),
            (10, 10, (10, vec![])),
        ];
        for (from, limit, expected) in cases {
            assert_eq!(read(from, limit), expected, "from {from}, limit {limit}");
        }
        assert!(history.audit_leaves(0, 10).unwrap().is_empty(), "leaves are read from `from` exactly");
        assert_eq!(history.audit_leaves(5, 10).unwrap().len(), 3);
    }

    /// Closed corrections that left the state are read in the order they
    /// closed, from a time on, a page at a time.
    #[test]
    fn closed_corrections_are_read_a_page_at_a_time_and_pruned_by_the_time_they_closed() {
        use civmesh_policy::correction::CorrectionStage;
        let dir = tempfile::tempdir().unwrap();
        let (_, state_machine) = crate::store::open(dir.path()).unwrap();
        let history = state_machine.history();
        let track_closed_at = |closed_at_ms: u64| CorrectionTrack {
            dataset: "enterprises".into(),
            owner: civmesh_certs::OrgId::new("dept/market").unwrap(),
            submitter_org: civmesh_certs::OrgId::new("street/jingansi").unwrap(),
            submitter: civmesh_certs::NodeId([7; 32]),
            subject: civmesh_policy::model::SubjectKeyHash([1; 32]),
            fields: ["name".to_string()].into(),
            stages: vec![
                (CorrectionStage::Submitted, closed_at_ms - 5),
                (CorrectionStage::OutcomeDelivered, closed_at_ms),
            ],
            reason_code: None,
            applied_version: None,
            record_written_at_ms: None,
        };
        // Two apply calls; ids out of time order, two closed at one time.
        let closed = [(9u8, 300u64), (3, 100), (5, 200), (4, 200)];
        let applied: Vec<AppliedCommand> = closed
            .chunks(2)
            .zip(1..)
            .map(|(released, sequence)| AppliedCommand {
                archived: ArchivedCommand {
                    sequence,
                    log_index: sequence,
                    entry_time_ms: 0,
                    envelope: Vec::new(),
                    accepted: false,
                },
                appended: Appended {
                    closed_corrections: released
                        .iter()
                        .map(|(id, at)| ([*id; 32], *at, track_closed_at(*at)))
                        .collect(),
                    ..Appended::default()
                },
                audit_tree_size: 0,
                checkpoints_final: 0,
            })
            .collect();
        history.append(&applied, WriteBatch::default()).unwrap();
        let read_all = |from_ms: u64, limit: usize| {
            let (mut ids, mut after, mut reads) = (Vec::new(), None, 0);
            loop {
                let page = history.closed_corrections(from_ms, after, limit).unwrap();
                reads += 1;
                assert!(page.read.len() <= limit);
                ids.extend(page.read.iter().map(|(id, track)| {
                    assert_eq!(*track, track_closed_at(track.stages[1].1));
                    id[0]
                }));
                if page.last.is_none() {
                    return (ids, reads);
                }
                after = page.last;
            }
        };
        assert_eq!(read_all(0, 10), (vec![3, 4, 5, 9], 2));
        assert_eq!(read_all(0, 1), (vec![3, 4, 5, 9], 5), "a page at a time");
        assert_eq!(read_all(200, 3), (vec![4, 5, 9], 2), "from a time on");
        assert_eq!(read_all(201, 3), (vec![9], 2));
        assert_eq!(read_all(301, 3), (vec![], 1));

        assert_eq!(history.closed_corrections_pruned_before().unwrap(), None);
        assert!(!history.prune_closed_corrections(100).unwrap(), "none closed before 100");
        assert_eq!(history.closed_corrections_pruned_before().unwrap(), None);
        assert!(history.prune_closed_corrections(200).unwrap());
        assert_eq!(read_all(0, 10), (vec![4, 5, 9], 2), "those closed before 200 are gone");
        assert!(history.prune_closed_corrections(201).unwrap());
        assert_eq!(read_all(0, 10), (vec![9], 2));
        assert!(!history.prune_closed_corrections(150).unwrap(), "the time never goes back");
        assert_eq!(history.closed_corrections_pruned_before().unwrap(), Some(201));
        assert_eq!(read_all(0, 10), (vec![9], 2));
    }

    /// A store written before the tree was stored gets its nodes from its
    /// leaves once; a gap ends the build; leaves that do not hash to the
    /// state's root are corrupt.
    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn a_store_without_tree_nodes_builds_them_from_its_leaves_once() {
        let leaf = |position: u64| civmesh_certs::codec::sha256(&position.to_be_bytes());
        let stored = |held: &[std::ops::Range<u64>], size: u64| {
            let dir = tempfile::tempdir().unwrap();
            let (_, state_machine) = crate::store::open(dir.path()).unwrap();
            let history = state_machine.history();
            // As a store written before the tree was stored: no mark.
            history.db.delete_cf(history.family(AUDIT_TREE_FAMILY).unwrap(), TREE_BUILT_KEY).unwrap();
            let leaves = history.family(AUDIT_LEAVES_FAMILY).unwrap();
            for position in held.iter().flat_map(Clone::clone) {
                history.db.put_cf(leaves, index_key(position), leaf(position)).unwrap();
            }
            let mut frontier = CompactRange::default();
            (0..size).for_each(|position| drop(frontier.push(&leaf(position))));
            (dir, history, frontier)
        };
        let (_dir, history, frontier) = stored(&[0..1_000], 1_000);
        assert_eq!(history.build_tree_from_leaves(&frontier).unwrap(), 1_000);
        assert_eq!(history.build_tree_from_leaves(&frontier).unwrap(), 0, "once");
        let mut reference = CompactRange::default();
        for size in 1..=1_000u64 {
            reference.push(&leaf(size - 1));
            if size % 97 == 0 || size == 1_000 {
                assert_eq!(history.tree_root(size).unwrap(), reference.root(), "size {size}");
            }
        }
        let (_dir, history, frontier) = stored(&[0..600, 700..1_000], 1_000);
        assert_eq!(history.build_tree_from_leaves(&frontier).unwrap(), 600, "up to the gap");
        assert_eq!(history.tree_root(1_000).unwrap(), frontier.root(), "and from the frontier on");
        let (_dir, history, _) = stored(&[0..1_000], 1_000);
        let mut other = CompactRange::default();
        (0..1_000).for_each(|position| drop(other.push(&leaf(position + 1))));
        assert!(matches!(history.build_tree_from_leaves(&other), Err(HistoryError::Corrupt(_))));
        assert!(history.build_tree_from_leaves(&other).is_err(), "not marked built: checked again");
    }
}
