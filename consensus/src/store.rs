//! RocksDB storage for the policy log (openraft storage-v2): the log store
//! and the state machine share one database in separate column families.
//!
//! - `log`: entries by big-endian index; `log_meta`: vote, committed id and
//!   last purged id. Appends and votes are written with `sync` (fsync of the
//!   WAL) before openraft is told they are durable.
//! - The state image, i.e. the canonical encoding of the policy state with
//!   its last applied log id and membership, is a file beside the column
//!   families ([`crate::snapshot`]), written (synced) each time a snapshot
//!   is built or installed; the snapshot is that file. Between images the
//!   state is rebuilt on start by re-applying the committed log after the
//!   image, which the log keeps: it is purged only up to a snapshot. (Not
//!   to be confused with the cosigned audit checkpoints, which live in the
//!   policy state.) The image holds no history: the access log's length
//!   and the audit tree's compact range stand for it. The `state` family
//!   held the image before it was a file; a store that still has it there
//!   moves it to the file on its first start.
//! - `archive`, `access_log`, `audit_leaves`, `audit_tree`, `checkpoints`:
//!   the history, in [`crate::history`], written with each apply.

// openraft's StorageError is large and its type is fixed by the traits.
#![allow(clippy::result_large_err)]

use std::io::Seek;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use civmesh_certs::codec;
use civmesh_policy::audit::ArchivedCommand;
use civmesh_policy::{PolicyState, SignedCommand};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::Serialize;

use crate::history::{AppliedCommand, History};
use crate::nonces::StoredNonces;
use crate::snapshot::{ImageError, ImageFiles, Received, StateImage};
use crate::timings::{Stage, StageTimes};
use crate::types::{entry_commands, ApplyResult, Entry, RaftNodeId, RaftPeer, TypeConfig};

pub(crate) const LOG_FAMILY: &str = "log";
pub(crate) const LOG_META_FAMILY: &str = "log_meta";
pub(crate) const STATE_FAMILY: &str = "state";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
/// How long a purge waits for an installed snapshot's image to reach the
/// disk; past it, the log is kept and Raft stops.
const PURGE_WAIT_FOR_IMAGE_MS_MAX: u64 = 300_000;
/// The state image's key in the `state` family, where a store written
/// before the image was a file keeps it.
const STATE_IMAGE_KEY: &[u8] = b"checkpoint";
/// The largest single log entry decoded, in bytes.
pub const STORED_VALUE_BYTES_MAX: usize = codec::DECODE_BYTES_MAX;
pub use crate::snapshot::STATE_IMAGE_BYTES_MAX;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RocksDB refused to open the directory.
    #[error("cannot open the policy log database at {path}: {source}")]
    Database {
        /// The directory.
        path: String,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The stored state image does not read or decode.
    #[error("the policy log's state image: {0}")]
    StateImage(#[from] ImageError),
    /// The stored log entries or their metadata do not read or decode.
    #[error("the policy log's stored entries are corrupt: {0}")]
    LogCorrupt(String),
    /// The history could not be written.
    #[error("cannot write the policy log's history: {0}")]
    History(#[from] crate::history::HistoryError),
}

/// openraft's storage error (`Result<T, StorageFailure>` lets cargo-mutants see a `Result`).
type StorageFailure = StorageError<RaftNodeId>;

fn io_error(
    subject: ErrorSubject<RaftNodeId>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError<RaftNodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&error)).into()
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError<RaftNodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Read, error)
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError<RaftNodeId> {
    io_error(ErrorSubject::Store, ErrorVerb::Write, error)
}

pub(crate) fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Opens (or creates) the policy log database in `directory`, and returns its
/// log store and state machine.
pub fn open(directory: &Path) -> Result<(LogStore, StateMachine), OpenError> {
    let db = crate::database::open(directory)
        .map_err(|source| OpenError::Database { path: directory.display().to_string(), source })?;
    let db = Arc::new(db);
    let stage_times = Arc::new(StageTimes::default());
    let images = ImageFiles::open(directory)?.with_nonces_in(db.clone());
    let state_machine = StateMachine::load(db.clone(), images.clone(), stage_times.clone())?;
    let committed: Option<Option<LogId<RaftNodeId>>> = get_value(&db, LOG_META_FAMILY, COMMITTED_KEY)
        .map_err(|error| OpenError::LogCorrupt(error.to_string()))?;
    let committed_index = Arc::new(AtomicU64::new(committed.flatten().map_or(0, |id| id.index)));
    // The log may be purged up to the image's last entry: its time counts.
    let imaged_ms = state_machine.shared.read(|applied| applied.policy.last_entry_time_ms);
    let latest_entry_time_ms = Arc::new(AtomicU64::new(latest_logged_entry_time_ms(&db)?.max(imaged_ms)));
    Ok((LogStore { db, images, committed_index, latest_entry_time_ms, stage_times }, state_machine))
}

/// The newest entry time in the log: the time of the last normal entry,
/// looked for among the last [`ENTRY_TIME_SCAN_ENTRIES_MAX`] entries.
fn latest_logged_entry_time_ms(db: &DB) -> Result<u64, OpenError> {
    let log = family(db, LOG_FAMILY).map_err(|error| OpenError::LogCorrupt(error.to_string()))?;
    for item in db.iterator_cf(log, IteratorMode::End).take(ENTRY_TIME_SCAN_ENTRIES_MAX) {
        let (_, value) = item.map_err(|error| OpenError::LogCorrupt(error.to_string()))?;
        let entry: Entry = codec::decode_exact(&value, STORED_VALUE_BYTES_MAX)
            .map_err(|error| OpenError::LogCorrupt(error.to_string()))?;
        if let EntryPayload::Normal(payload) = entry.payload {
            return Ok(payload.proposed_at_ms);
        }
    }
    Ok(0)
}

fn family<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageFailure> {
    db.cf_handle(name).ok_or_else(|| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("column family {name} is missing"),
        ))
    })
}

fn get_value<T: serde::de::DeserializeOwned>(
    db: &DB,
    family_name: &str,
    key: &[u8],
) -> Result<Option<T>, StorageFailure> {
    let bytes = db.get_cf(family(db, family_name)?, key).map_err(read_error)?;
    bytes.map(|bytes| codec::decode_exact(&bytes, STORED_VALUE_BYTES_MAX).map_err(read_error)).transpose()
}

/// The image a store written before the image was a file keeps in the
/// `state` family.
fn get_state_image_kept_in_the_database(db: &DB) -> Result<Option<StateImage>, StorageFailure> {
    let bytes = db.get_cf(family(db, STATE_FAMILY)?, STATE_IMAGE_KEY).map_err(read_error)?;
    bytes
        .map(|bytes| codec::decode_exact_large(&bytes, STATE_IMAGE_BYTES_MAX).map_err(read_error))
        .transpose()
}

fn put_value_synced<T: Serialize>(db: &DB, name: &str, key: &[u8], value: &T) -> Result<(), StorageFailure> {
    let bytes = codec::encode(value).map_err(write_error)?;
    db.put_cf_opt(family(db, name)?, key, bytes, &synced()).map_err(write_error)
}

/// The key of a log entry or a history item: its index, big-endian, so keys
/// sort in index order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The index an [`index_key`] stands for; `None` if `key` is not one.
pub(crate) fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// How far back from the end of the log the newest entry time is looked for
/// on start (blank and membership entries carry none).
const ENTRY_TIME_SCAN_ENTRIES_MAX: usize = 64;

/// The Raft log in RocksDB.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    images: ImageFiles,
    committed_index: Arc<AtomicU64>,
    latest_entry_time_ms: Arc<AtomicU64>,
    stage_times: Arc<StageTimes>,
}

impl LogStore {
    /// The newest entry time in this node's log, kept current as entries
    /// are appended. A leader has every committed entry, so it stamps new
    /// entries no earlier than this: entry times never go backwards.
    pub fn latest_entry_time_ms(&self) -> Arc<AtomicU64> {
        self.latest_entry_time_ms.clone()
    }

    /// The last committed index this node has learnt, kept current as
    /// openraft saves it.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }
}

impl LogStore {
    /// The entries in `range`, in order, stopping before the first that
    /// would take their stored bytes past `bytes_max` (the first entry
    /// always comes).
    fn read_entries(
        &self,
        range: impl RangeBounds<u64>,
        bytes_max: usize,
    ) -> Result<Vec<Entry>, StorageFailure> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let log = family(&self.db, LOG_FAMILY)?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for item in self.db.iterator_cf(log, IteratorMode::From(&index_key(start), Direction::Forward)) {
            let (key, value) = item.map_err(read_error)?;
            let index = index_of(&key).ok_or_else(|| {
                read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "log key is not 8 bytes"))
            })?;
            bytes = bytes.saturating_add(value.len());
            if !range.contains(&index) || (bytes > bytes_max && !entries.is_empty()) {
                break;
            }
            let entry: Entry = codec::decode_exact(&value, STORED_VALUE_BYTES_MAX).map_err(read_error)?;
            debug_assert_eq!(entry.log_id.index, index);
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageFailure> {
        self.read_entries(range, usize::MAX)
    }

    /// What replication sends in one `AppendEntries`: no more entries than
    /// fit its byte bound, so a follower that lags is not answered by
    /// reading and encoding hundreds of entries to send one.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageFailure> {
        self.read_entries(start..end, crate::network::APPEND_ENTRIES_BYTES_MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageFailure> {
        let last_purged_log_id: Option<LogId<RaftNodeId>> =
            get_value(&self.db, LOG_META_FAMILY, LAST_PURGED_KEY)?;
        let log = family(&self.db, LOG_FAMILY)?;
        let last = match self.db.iterator_cf(log, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(read_error)?;
                let entry: Entry = codec::decode_exact(&value, STORED_VALUE_BYTES_MAX).map_err(read_error)?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<(), StorageFailure> {
        put_value_synced(&self.db, LOG_META_FAMILY, VOTE_KEY, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>, StorageFailure> {
        get_value(&self.db, LOG_META_FAMILY, VOTE_KEY)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> Result<(), StorageFailure> {
        // Not synced: the committed id only spares re-deriving it after a
        // restart; losing the latest one is safe, the leader re-sends it.
        let bytes = codec::encode(&committed).map_err(write_error)?;
        self.db.put_cf(family(&self.db, LOG_META_FAMILY)?, COMMITTED_KEY, bytes).map_err(write_error)?;
        self.committed_index.store(committed.map_or(0, |id| id.index), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftNodeId>>, StorageFailure> {
        Ok(get_value::<Option<LogId<RaftNodeId>>>(&self.db, LOG_META_FAMILY, COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageFailure>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let log = family(&self.db, LOG_FAMILY)?;
        let mut batch = WriteBatch::default();
        let mut latest_entry_time_ms = 0;
        for entry in entries {
            if let EntryPayload::Normal(payload) = &entry.payload {
                latest_entry_time_ms = latest_entry_time_ms.max(payload.proposed_at_ms);
            }
            let bytes = codec::encode(&entry).map_err(write_error)?;
            batch.put_cf(log, index_key(entry.log_id.index), bytes);
        }
        self.latest_entry_time_ms.fetch_max(latest_entry_time_ms, Ordering::AcqRel);
        // fsync before openraft may acknowledge the entries.
        let outcome =
            self.db.write_opt(batch, &synced()).map_err(|error| std::io::Error::other(error.to_string()));
        let failed =
            outcome.as_ref().err().map(|error| write_error(std::io::Error::other(error.to_string())));
        self.stage_times.record(Stage::LogAppend, started.elapsed());
        callback.log_io_completed(outcome);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> Result<(), StorageFailure> {
        let log = family(&self.db, LOG_FAMILY)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(log, index_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> Result<(), StorageFailure> {
        // openraft 0.9 purges what an installed snapshot covers without
        // waiting for the install: the log stays until the image on disk
        // covers it, so a crash in between never leaves a gap.
        let waiting_since = std::time::Instant::now();
        while self.images.purge_must_wait(log_id.index) {
            if waiting_since.elapsed() > Duration::from_millis(PURGE_WAIT_FOR_IMAGE_MS_MAX) {
                // openraft already counts it purged: purging nothing would
                // leave its view and the store apart, so Raft stops.
                return Err(write_error(std::io::Error::other(format!(
                    "the log up to {} is not purged: the installed snapshot's image is not on disk",
                    log_id.index
                ))));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = family(&self.db, LOG_FAMILY)?;
        let meta = family(&self.db, LOG_META_FAMILY)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, LAST_PURGED_KEY, codec::encode(&log_id).map_err(write_error)?);
        batch.delete_range_cf(log, index_key(0), index_key(log_id.index.saturating_add(1)));
        self.db.write_opt(batch, &synced()).map_err(write_error)
    }
}

/// A read-only view of the applied policy state, shared with the node.
#[derive(Clone, Default)]
pub struct SharedState {
    inner: Arc<RwLock<AppliedState>>,
}

/// The policy state and the last log index applied to it.
#[derive(Debug, Clone, Default)]
pub struct AppliedState {
    /// The last applied log index (0 before anything is applied).
    pub applied_index: u64,
    /// The policy state at that index.
    pub policy: PolicyState,
}

impl SharedState {
    /// Runs `read` on the applied state under a read lock.
    pub fn read<T>(&self, read: impl FnOnce(&AppliedState) -> T) -> T {
        match self.inner.read() {
            Ok(guard) => read(&guard),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    fn write<T>(&self, write: impl FnOnce(&mut AppliedState) -> T) -> T {
        match self.inner.write() {
            Ok(mut guard) => write(&mut guard),
            Err(poisoned) => write(&mut poisoned.into_inner()),
        }
    }
}

/// The policy state machine, its state image kept in a file
/// ([`crate::snapshot`]).
pub struct StateMachine {
    db: Arc<DB>,
    images: ImageFiles,
    history: History,
    last_applied: Option<LogId<RaftNodeId>>,
    last_membership: StoredMembership<RaftNodeId, RaftPeer>,
    shared: SharedState,
    snapshots_built: u64,
    /// Keep the state at every this many log indexes for the next snapshot
    /// (0: build snapshots of the state at the time, as openraft's tests do).
    snapshot_every_entries: u64,
    /// The state at the latest such index, until a snapshot is built of it.
    capture: Option<Arc<StateImage>>,
    snapshot_stats: Arc<SnapshotStats>,
    verdicts: crate::verdicts::Verdicts,
    stage_times: Arc<StageTimes>,
}

impl StateMachine {
    fn load(db: Arc<DB>, images: ImageFiles, stage_times: Arc<StageTimes>) -> Result<Self, OpenError> {
        let mut image = match images.read()? {
            Some(image) => image,
            None => move_image_to_file(&db, &images)?.unwrap_or_default(),
        };
        // An image the `state` family held may hold the window's nonces.
        if crate::nonces::move_to_disk(&db, &mut image.state)? {
            images.write(&image)?;
        }
        forget_image_kept_in_the_database(&db)?;
        images.note_image_index(&image);
        // The tree's nodes from the image's size on (a store written before
        // the tree was stored, or one whose image came by snapshot).
        let history = History::new(db.clone());
        history.keep_frontier(&image.state.audit_frontier)?;
        let built = history.build_tree_from_leaves(&image.state.audit_frontier)?;
        if built > 0 {
            tracing::info!(leaves = built, "built the audit tree's nodes from the stored leaves, once");
        }
        let shared = SharedState::default();
        shared.write(|applied| {
            applied.applied_index = image.last_applied.map_or(0, |id| id.index);
            applied.policy = image.state;
        });
        Ok(StateMachine {
            history,
            db,
            images,
            last_applied: image.last_applied,
            last_membership: image.last_membership,
            shared,
            snapshots_built: 0,
            snapshot_every_entries: 0,
            capture: None,
            snapshot_stats: Arc::default(),
            verdicts: crate::verdicts::Verdicts::default(),
            stage_times,
        })
    }

    /// The applied state, for reads and decisions.
    pub fn shared_state(&self) -> SharedState {
        self.shared.clone()
    }

    /// What the latest snapshot built here cost.
    pub fn snapshot_stats(&self) -> Arc<SnapshotStats> {
        self.snapshot_stats.clone()
    }

    /// Where this node's commits spend their time.
    pub fn stage_times(&self) -> Arc<StageTimes> {
        self.stage_times.clone()
    }

    /// The signature verdicts reached as commands arrive, which apply uses.
    pub fn verdicts(&self) -> crate::verdicts::Verdicts {
        self.verdicts.clone()
    }

    /// Snapshots of the state at every `entries`th log index (a multiple of
    /// it), the same on every replica, so receivers can confirm them.
    pub fn snapshot_every(&mut self, entries: u64) {
        self.snapshot_every_entries = entries;
    }

    /// Notes each aligned image's digest, even one no snapshot is built
    /// of here, so this replica confirms whichever the leader sends.
    fn note_digests_in_background(&self, captured: Vec<Arc<StateImage>>) {
        if captured.is_empty() {
            return;
        }
        let images = self.images.clone();
        images.hold_windows(&captured);
        tokio::task::spawn_blocking(move || images.note_image_digests(&captured));
    }

    /// The image files, to confirm this node's images to others.
    pub(crate) fn image_files(&self) -> ImageFiles {
        self.images.clone()
    }

    /// A receiver of snapshot chunks into this state machine's image files.
    pub(crate) fn snapshot_receiver(&self) -> crate::snapshot_receiver::SharedReceiver {
        crate::snapshot_receiver::SharedReceiver::new(&self.images)
    }

    /// The history the state counts but does not keep.
    pub fn history(&self) -> History {
        self.history.clone()
    }

    fn state_image(&self, snapshot_id: String) -> StateImage {
        StateImage {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
            state: self.shared.read(|applied| applied.policy.clone()),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageFailure> {
        let started = std::time::Instant::now();
        let images = self.images.clone();
        let image = self.image.clone();
        let db = self.db.clone();
        // The history of the entries the image covers was written unsynced
        // (see `apply`): it is made durable before the image stands for it.
        let current = tokio::task::spawn_blocking(move || {
            db.flush_wal(true).map_err(ImageError::HistoryNotSynced)?;
            let current = images.write(&image)?;
            images.prune_window(&image);
            Ok::<_, ImageError>(current)
        })
        .await
        .map_err(write_error)?
        .map_err(write_error)?;
        let build_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.stats.build_ms.store(build_ms, Ordering::Release);
        self.stats.bytes.store(current.bytes, Ordering::Release);
        Ok(current.into_snapshot())
    }
}

/// The latest snapshot this node built: how long encoding and writing it
/// took, and its bytes (0 before any).
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Milliseconds.
    pub build_ms: AtomicU64,
    /// Bytes.
    pub bytes: AtomicU64,
}

/// Builds a snapshot from a state image taken when openraft asked for it.
pub struct StateMachineSnapshotBuilder {
    db: Arc<DB>,
    images: ImageFiles,
    stats: Arc<SnapshotStats>,
    image: Arc<StateImage>,
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachineSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftNodeId>>, StoredMembership<RaftNodeId, RaftPeer>), StorageFailure> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageFailure>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let commands: Vec<&SignedCommand> = entries.iter().flat_map(entry_commands).collect();
        let mut signatures_verified = self.verdicts.settle(&commands).await.into_iter();
        self.stage_times.record(Stage::ApplyVerify, started.elapsed());
        let mut results = Vec::new();
        let mut last_applied = self.last_applied;
        let mut last_membership = None;
        let mut to_history = Vec::new();
        let (history, db) = (&self.history, &self.db);
        let (every, mut membership_now, capture) =
            (self.snapshot_every_entries, self.last_membership.clone(), &mut self.capture);
        let captured_from = aligned_captured_from(&entries, every);
        let mut captured = Vec::new();
        // The history is written before the lock is let go: whoever sees
        // the state count an entry finds it stored.
        let written = self.shared.write(|applied| {
            let mut nonces =
                StoredNonces::new(db, applied.policy.commands_applied + 1).map_err(write_error)?;
            for entry in entries {
                last_applied = Some(entry.log_id);
                let mut result = ApplyResult::default();
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(payload) => {
                        for command in &payload.commands {
                            let policy = &mut applied.policy;
                            let verified = signatures_verified.next() == Some(true);
                            let (outcome, appended) =
                                nonces.apply(policy, command, payload.proposed_at_ms, verified);
                            to_history.push(AppliedCommand {
                                archived: ArchivedCommand {
                                    sequence: policy.commands_applied,
                                    log_index: entry.log_id.index,
                                    entry_time_ms: payload.proposed_at_ms,
                                    envelope: command.to_bytes().unwrap_or_default(),
                                    accepted: outcome.is_ok(),
                                },
                                appended,
                                audit_tree_size: policy.audit_frontier.size(),
                                checkpoints_final: policy.checkpoints_final,
                            });
                            result.outcomes.push(outcome);
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        membership_now = StoredMembership::new(Some(entry.log_id), membership);
                        last_membership = Some(membership_now.clone());
                    }
                }
                result.state_version = applied.policy.commands_applied;
                applied.applied_index = entry.log_id.index;
                results.push(result);
                // Every replica keeps its state at the same indexes, for
                // snapshots that other replicas can confirm byte for byte.
                if captured_from.is_some_and(|from| entry.log_id.index >= from)
                    && entry.log_id.index % every == 0
                {
                    let image = Arc::new(StateImage {
                        last_applied: Some(entry.log_id),
                        last_membership: membership_now.clone(),
                        snapshot_id: crate::snapshot::aligned_snapshot_id(entry.log_id.index),
                        state: applied.policy.clone(),
                    });
                    captured.push(image.clone());
                    *capture = Some(image);
                }
            }
            let mut batch = WriteBatch::default();
            nonces.write_into(&mut batch).map_err(write_error)?;
            history.append(&to_history, batch).map_err(write_error)
        });
        written?;
        self.note_digests_in_background(captured);
        self.last_applied = last_applied;
        if let Some(membership) = last_membership {
            self.last_membership = membership;
        }
        self.stage_times.record(Stage::Apply, started.elapsed());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let last_index = self.last_applied.map_or(0, |id| id.index);
        let snapshot_id = format!("{last_index}-{}", self.snapshots_built);
        // The state kept at the latest aligned index, if one was kept since
        // the last snapshot; the state now otherwise (which no other replica
        // can confirm).
        let image = self.capture.take().unwrap_or_else(|| Arc::new(self.state_image(snapshot_id)));
        StateMachineSnapshotBuilder {
            db: self.db.clone(),
            images: self.images.clone(),
            stats: self.snapshot_stats.clone(),
            image,
        }
    }

    /// A file for openraft's own chunk receiver, which civmesh does not use
    /// ([`crate::snapshot::SnapshotReceiver`] receives and checks chunks).
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageFailure> {
        let path = self.images.receiving_path(0);
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(write_error)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, RaftPeer>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageFailure> {
        let failed = |error| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, error);
        // A snapshot this node received was checked and decoded already.
        let (image, received) = match self.images.take_checked(meta) {
            Some(checked) => {
                (checked.image, Received::Checked { path: checked.path, digest: checked.digest })
            }
            None => {
                let file = snapshot.into_std().await;
                tokio::task::spawn_blocking(move || read_received(file))
                    .await
                    .map_err(read_error)?
                    .map_err(failed)?
            }
        };
        if image.meta() != *meta {
            return Err(failed(ImageError::Corrupt("snapshot contents do not match its metadata".into())));
        }
        self.history.keep_frontier(&image.state.audit_frontier).map_err(write_error)?;
        self.history.note_snapshot_installed(image.state.commands_applied).map_err(write_error)?;
        let (db, images, mut image) = (self.db.clone(), self.images.clone(), image);
        // What the history and the replay window wrote for the image is
        // durable before the image.
        let image = tokio::task::spawn_blocking(move || {
            install_window(&db, &received, &mut image)?;
            db.flush_wal(true).map_err(ImageError::HistoryNotSynced)?;
            images.keep_received(received, &image)?;
            images.prune_window(&image);
            Ok::<_, ImageError>(image)
        })
        .await
        .map_err(write_error)?
        .map_err(write_error)?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        if self.capture.as_ref().is_some_and(|capture| capture.last_applied <= meta.last_log_id) {
            self.capture = None;
        }
        self.shared.write(|applied| {
            applied.applied_index = meta.last_log_id.map_or(0, |id| id.index);
            applied.policy = image.state;
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageFailure> {
        let images = self.images.clone();
        let current = tokio::task::spawn_blocking(move || images.current())
            .await
            .map_err(read_error)?
            .map_err(read_error)?;
        Ok(current.map(crate::snapshot::CurrentImage::into_snapshot))
    }
}

/// How many aligned images one apply call keeps (copies of the state,
/// each encoded once more to note its digest). A leader's snapshot is its
/// latest aligned image when it built, a few at most behind where a batch
/// re-applied after a restart ends.
const ALIGNED_IMAGES_PER_APPLY_MAX: usize = 4;

/// The first index among `entries` that a batch keeps the state at: of
/// those that are multiples of `every` (none if `every` is 0), the last
/// [`ALIGNED_IMAGES_PER_APPLY_MAX`]. Not only the last: the leader's
/// snapshot may end at any, and a replica whose batch passed it confirms
/// it only if it noted it.
fn aligned_captured_from(entries: &[Entry], every: u64) -> Option<u64> {
    let aligned =
        entries.iter().rev().map(|entry| entry.log_id.index).filter(|index| every > 0 && index % every == 0);
    aligned.take(ALIGNED_IMAGES_PER_APPLY_MAX).last()
}

/// Writes the replay window's nonces of a snapshot being installed, `image`,
/// to the disk: those after its state, and those its state held itself.
fn install_window(db: &DB, received: &Received, image: &mut StateImage) -> Result<(), ImageError> {
    let mut file = match received {
        Received::Checked { path, .. } => {
            std::fs::File::open(path).map_err(crate::snapshot::disk("read the window of", path))?
        }
        Received::Other(file) => {
            file.try_clone().map_err(crate::snapshot::disk("read", Path::new("a snapshot")))?
        }
    };
    file.rewind().map_err(crate::snapshot::disk("read", Path::new("a snapshot")))?;
    let commands_applied = image.state.commands_applied;
    crate::snapshot::decode_image_visiting(file, |rows| {
        crate::nonces::write_rows(db, rows, commands_applied)
    })?;
    crate::nonces::move_to_disk(db, &mut image.state).map(drop)
}

/// Decodes a snapshot this node did not receive itself, from its start.
fn read_received(mut file: std::fs::File) -> Result<(StateImage, Received), ImageError> {
    let path = Path::new("a snapshot");
    file.seek(std::io::SeekFrom::Start(0)).map_err(crate::snapshot::disk("read", path))?;
    let image =
        crate::snapshot::decode_image(file.try_clone().map_err(crate::snapshot::disk("read", path))?)?;
    Ok((image, Received::Other(file)))
}

/// Moves the image a store written before the image was a file kept in the
/// database to the file, and returns it.
fn move_image_to_file(db: &DB, images: &ImageFiles) -> Result<Option<StateImage>, OpenError> {
    let Some(image) = get_state_image_kept_in_the_database(db)
        .map_err(|error| OpenError::LogCorrupt(format!("the state image kept in the database: {error}")))?
    else {
        return Ok(None);
    };
    images.write(&image)?;
    tracing::info!("moved the state image from the database to its file, once");
    Ok(Some(image))
}

/// Deletes the image a store written before the image was a file kept in
/// the database, once the file stands for it (a kill -9 right after the
/// move leaves it; the file is then read).
fn forget_image_kept_in_the_database(db: &DB) -> Result<(), OpenError> {
    let state = family(db, STATE_FAMILY).map_err(|error| OpenError::LogCorrupt(error.to_string()))?;
    db.delete_cf_opt(state, STATE_IMAGE_KEY, &synced())
        .map_err(|error| OpenError::LogCorrupt(format!("cannot forget the old state image: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replication reads no more entries than fit one `AppendEntries`, and
    /// always at least one; other reads take the whole range.
    #[tokio::test]
    async fn replication_reads_no_more_entries_than_fit_one_append_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log_store, _state_machine) = open(dir.path()).unwrap();
        const ENTRIES: u64 = 60_000;
        let log = family(&log_store.db, LOG_FAMILY).unwrap();
        for index in 1..=ENTRIES {
            let entry: Entry = openraft::testing::blank_ent::<TypeConfig>(1, 1, index);
            log_store.db.put_cf(log, index_key(index), codec::encode(&entry).unwrap()).unwrap();
        }
        let limited = log_store.limited_get_log_entries(1, ENTRIES + 1).await.unwrap();
        let encoded: usize = limited.iter().map(|entry| codec::encode(entry).unwrap().len()).sum();
        assert!((1..ENTRIES as usize).contains(&limited.len()), "{}", limited.len());
        assert!(encoded <= crate::network::APPEND_ENTRIES_BYTES_MAX, "{encoded}");
        assert_eq!(limited.first().unwrap().log_id.index, 1);
        let whole = log_store.try_get_log_entries(1..=ENTRIES).await.unwrap();
        assert_eq!(whole.len(), ENTRIES as usize);
        let one = log_store.read_entries(5..9, 1).unwrap();
        assert_eq!(one.iter().map(|entry| entry.log_id.index).collect::<Vec<_>>(), [5]);
    }
}
