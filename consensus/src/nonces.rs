//! The replay window's nonces on disk. The policy state keeps their counts
//! ([`civmesh_certs::ReplayGuard`]); a replica keeps the nonces here, so
//! neither memory nor the state image's bound grows with the rate of
//! commands.
//!
//! - `nonces`: signer (32 bytes), nonce (16) and time (8, big-endian), for
//!   lookups; `nonces_by_time`: time, signer and nonce (a [`Row`]), for
//!   expiry and images. Each maps to the sequence of the command that spent
//!   it (8 bytes, big-endian).
//! - Rows are written once, with their apply call's history, unsynced: a
//!   crash re-applies from the last image, which synced the WAL before it,
//!   and writes the same rows again. A row whose sequence is not below the
//!   first command of the apply call reading it was written by a command
//!   being re-applied, and counts as absent.
//! - Expiry moves counts only. Rows that left the window stay until an image
//!   a window past them is written ([`prune`]), so re-applying from the
//!   image on disk finds every row it counted.
//! - A format-2 image holds, after the state, the rows its state counts
//!   (time at or after its window's start, sequence at most its command
//!   count) in time order: a count, then [`NONCE_ROW_BYTES`] each. A node
//!   installing it writes them with the image's command count as sequence.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use civmesh_certs::{NodeId, NonceStore, UnixMillis, WindowNonce, NONCE_BYTES};
use civmesh_policy::state::COMMAND_NONCES_MAX;
use civmesh_policy::{Appended, Applied, PolicyState, Rejection, SignedCommand};
use rocksdb::{ColumnFamily, DBRawIterator, Direction, IteratorMode, WriteBatch, DB};

use crate::snapshot::ImageError;

pub(crate) const NONCES_FAMILY: &str = "nonces";
pub(crate) const NONCES_BY_TIME_FAMILY: &str = "nonces_by_time";
/// One nonce as an image and `nonces_by_time` hold it: time, signer, nonce.
pub(crate) const NONCE_ROW_BYTES: usize = 8 + 32 + NONCE_BYTES;
/// The bytes of the window section of an image: its count and its rows.
pub(crate) const WINDOW_SECTION_BYTES_MAX: usize = 8 + COMMAND_NONCES_MAX * NONCE_ROW_BYTES;
/// The most rows read, written or deleted in one batch.
const ROWS_PER_BATCH_MAX: usize = 10_000;

/// The bytes of a lookup's prefix in `nonces`: signer and nonce.
const LOOKUP_PREFIX_BYTES: usize = 32 + NONCE_BYTES;

/// A nonce as `nonces_by_time` keys it.
pub(crate) type Row = [u8; NONCE_ROW_BYTES];

fn row_of(time: UnixMillis, signer: &NodeId, nonce: &[u8; NONCE_BYTES]) -> Row {
    let mut row = [0u8; NONCE_ROW_BYTES];
    row[..8].copy_from_slice(&time.to_be_bytes());
    row[8..40].copy_from_slice(&signer.0);
    row[40..].copy_from_slice(nonce);
    row
}

fn parts_of(row: &Row) -> WindowNonce {
    let mut time = [0u8; 8];
    time.copy_from_slice(&row[..8]);
    let (mut signer, mut nonce) = ([0u8; 32], [0u8; NONCE_BYTES]);
    signer.copy_from_slice(&row[8..40]);
    nonce.copy_from_slice(&row[40..]);
    (u64::from_be_bytes(time), NodeId(signer), nonce)
}

/// The `nonces` key of a row: signer, nonce, time.
fn lookup_key(row: &Row) -> Row {
    let mut key = [0u8; NONCE_ROW_BYTES];
    key[..LOOKUP_PREFIX_BYTES].copy_from_slice(&row[8..]);
    key[LOOKUP_PREFIX_BYTES..].copy_from_slice(&row[..8]);
    key
}

fn sequence_of(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

fn family<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, ImageError> {
    db.cf_handle(name).ok_or_else(|| ImageError::Corrupt(format!("no column family {name}")))
}

fn database(error: rocksdb::Error) -> ImageError {
    ImageError::Disk {
        action: "read or write",
        path: "the replay window".into(),
        source: std::io::Error::other(error),
    }
}

/// The nonces one apply call reads and spends: those on disk from earlier
/// calls, and its own, written with its history ([`StoredNonces::write_into`]).
/// It reads through one iterator per family, opened once for the call
/// (the disk does not change under it: the call writes at its end).
pub(crate) struct StoredNonces<'a> {
    lookup: &'a ColumnFamily,
    by_time: &'a ColumnFamily,
    /// Over `nonces`, read within one signer-and-nonce prefix per seek.
    lookups: RefCell<DBRawIterator<'a>>,
    /// Over `nonces_by_time`.
    rows_by_time: DBRawIterator<'a>,
    /// The sequence of the call's first command: rows on disk at or past
    /// it are from commands being re-applied.
    sequence_first: u64,
    /// The sequence of the command being applied.
    sequence: u64,
    spent: BTreeMap<(NodeId, [u8; NONCE_BYTES], UnixMillis), u64>,
    spent_by_time: BTreeSet<WindowNonce>,
    /// The first read that failed: the call is not acknowledged.
    failure: RefCell<Option<rocksdb::Error>>,
}

impl<'a> StoredNonces<'a> {
    /// The nonces for a call whose first command is number `sequence_first`.
    pub(crate) fn new(db: &'a DB, sequence_first: u64) -> Result<Self, ImageError> {
        let (lookup, by_time) = (family(db, NONCES_FAMILY)?, family(db, NONCES_BY_TIME_FAMILY)?);
        Ok(StoredNonces {
            lookups: RefCell::new(db.raw_iterator_cf(lookup)),
            rows_by_time: db.raw_iterator_cf(by_time),
            lookup,
            by_time,
            sequence_first,
            sequence: sequence_first,
            spent: BTreeMap::new(),
            spent_by_time: BTreeSet::new(),
            failure: RefCell::new(None),
        })
    }

    /// Applies `command` to `policy`, its nonces read from and spent here.
    pub(crate) fn apply(
        &mut self,
        policy: &mut PolicyState,
        command: &SignedCommand,
        entry_time_ms: UnixMillis,
        signatures_verified: bool,
    ) -> (Result<Applied, Rejection>, Appended) {
        self.next_command(policy.commands_applied + 1);
        policy.apply_with_nonces_in(self, command, entry_time_ms, signatures_verified)
    }

    /// The next command applied is number `sequence`.
    fn next_command(&mut self, sequence: u64) {
        debug_assert!(sequence >= self.sequence);
        self.sequence = sequence;
    }

    fn fail(&self, error: rocksdb::Error) {
        self.failure.borrow_mut().get_or_insert(error);
    }

    /// Puts the nonces spent into `batch`, unless a read failed: then the
    /// call's outcomes are not to be trusted, and nothing is written.
    pub(crate) fn write_into(self, batch: &mut WriteBatch) -> Result<(), rocksdb::Error> {
        if let Some(error) = self.failure.into_inner() {
            return Err(error);
        }
        for ((signer, nonce, time), sequence) in self.spent {
            let row = row_of(time, &signer, &nonce);
            batch.put_cf(self.lookup, lookup_key(&row), sequence.to_be_bytes());
            batch.put_cf(self.by_time, row, sequence.to_be_bytes());
        }
        Ok(())
    }
}

impl NonceStore for StoredNonces<'_> {
    fn holds(&self, signer: &NodeId, nonce: &[u8; NONCE_BYTES], window_start_ms: UnixMillis) -> bool {
        let mine = (*signer, *nonce, window_start_ms)..=(*signer, *nonce, UnixMillis::MAX);
        if self.spent.range(mine).next().is_some() {
            return true;
        }
        let from = lookup_key(&row_of(window_start_ms, signer, nonce));
        let mut rows = self.lookups.borrow_mut();
        rows.seek(from);
        while let (Some(key), Some(value)) = (rows.key(), rows.value()) {
            if key.get(..LOOKUP_PREFIX_BYTES) != Some(&from[..LOOKUP_PREFIX_BYTES]) {
                break;
            }
            if sequence_of(value).is_some_and(|spent| spent < self.sequence_first) {
                return true;
            }
            rows.next();
        }
        match rows.status() {
            Ok(()) => false,
            Err(error) => {
                self.fail(error);
                true
            }
        }
    }

    fn insert(&mut self, signer: &NodeId, nonce: &[u8; NONCE_BYTES], issued_at_ms: UnixMillis) {
        self.spent.insert((*signer, *nonce, issued_at_ms), self.sequence);
        self.spent_by_time.insert((issued_at_ms, *signer, *nonce));
    }

    fn expire(&mut self, from_ms: UnixMillis, to_ms: UnixMillis) -> BTreeMap<NodeId, usize> {
        let mut expired = BTreeMap::new();
        let rows = &mut self.rows_by_time;
        rows.seek(from_ms.to_be_bytes());
        while let (Some(key), Some(value)) = (rows.key(), rows.value()) {
            let Ok(row) = <Row>::try_from(key) else { break };
            let (time, signer, _) = parts_of(&row);
            if time >= to_ms {
                break;
            }
            if sequence_of(value).is_some_and(|spent| spent < self.sequence_first) {
                *expired.entry(signer).or_insert(0) += 1;
            }
            rows.next();
        }
        if let Err(error) = rows.status() {
            self.fail(error);
        }
        let mine = (from_ms, NodeId([0; 32]), [0; NONCE_BYTES])..(to_ms, NodeId([0; 32]), [0; NONCE_BYTES]);
        for (_, signer, _) in self.spent_by_time.range(mine) {
            *expired.entry(*signer).or_insert(0) += 1;
        }
        expired
    }
}

/// How many nonces `state`'s image holds in its window section: those its
/// replay window counts but does not hold itself, at most
/// `COMMAND_NONCES_MAX`.
fn window_rows_counted(state: &PolicyState) -> Result<u64, ImageError> {
    let guard = &state.recent_commands;
    let counted = guard.nonces_remembered().checked_sub(guard.nonces().len());
    match counted {
        Some(counted) if guard.nonces_remembered() <= COMMAND_NONCES_MAX => Ok(counted as u64),
        _ => Err(ImageError::Corrupt("its replay window counts more nonces than it may".into())),
    }
}

/// Writes the window section of `state`'s image, from `db` (none needed
/// for a window that holds its nonces itself): how many bytes.
pub(crate) fn write_window(
    db: Option<&DB>,
    state: &PolicyState,
    writer: &mut impl Write,
) -> Result<usize, ImageError> {
    let counted = window_rows_counted(state)?;
    let wrote = |error: std::io::Error| ImageError::Disk {
        action: "write",
        path: "the state image".into(),
        source: error,
    };
    writer.write_all(&counted.to_be_bytes()).map_err(wrote)?;
    let mut written = 0_u64;
    if counted > 0 {
        let db =
            db.ok_or_else(|| ImageError::Corrupt("the replay window's nonces are not on this disk".into()))?;
        let start = state.recent_commands.window_start_ms().to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in db.iterator_cf(family(db, NONCES_BY_TIME_FAMILY)?, mode) {
            let (key, value) = item.map_err(database)?;
            if sequence_of(&value).is_none_or(|spent| spent > state.commands_applied) {
                continue;
            }
            written += 1;
            if written > counted {
                break;
            }
            writer.write_all(&key).map_err(wrote)?;
        }
    }
    if written != counted {
        return Err(ImageError::Corrupt(format!(
            "the replay window on disk holds {written} nonces for the image, and its state counts {counted}"
        )));
    }
    Ok(8 + NONCE_ROW_BYTES * counted as usize)
}

/// Reads the window section of `state`'s image from `reader`, checking it
/// holds exactly the nonces the state counts, in order and inside the
/// window, and hands them to `visit` a batch at a time.
pub(crate) fn read_window(
    state: &PolicyState,
    reader: &mut impl Read,
    mut visit: impl FnMut(&[Row]) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let guard = &state.recent_commands;
    let corrupt = |reason: &str| ImageError::Corrupt(format!("its replay window: {reason}"));
    let mut count = [0u8; 8];
    read_exactly(reader, &mut count)?;
    let counted = window_rows_counted(state)?;
    if u64::from_be_bytes(count) != counted {
        return Err(corrupt("its count is not the state's"));
    }
    let (window_start, window_end) = (guard.window_start_ms(), guard.window_end_ms());
    // Only signers the counts name, each at most as often: bounded by them.
    let (mut previous, mut per_signer) = (None, BTreeMap::<NodeId, usize>::new());
    let mut left = counted as usize;
    let mut rows = Vec::with_capacity(left.min(ROWS_PER_BATCH_MAX));
    while left > 0 {
        rows.clear();
        for _ in 0..left.min(ROWS_PER_BATCH_MAX) {
            let mut row = [0u8; NONCE_ROW_BYTES];
            read_exactly(reader, &mut row)?;
            let (time, signer, _) = parts_of(&row);
            if previous.is_some_and(|previous| previous >= row)
                || !(window_start..=window_end).contains(&time)
            {
                return Err(corrupt("its nonces are out of order or outside it"));
            }
            let tally = per_signer.get(&signer).copied().unwrap_or(0) + 1;
            if tally > guard.nonces_remembered_for(&signer) {
                return Err(corrupt("its nonces are not those its counts name"));
            }
            per_signer.insert(signer, tally);
            previous = Some(row);
            rows.push(row);
        }
        left -= rows.len();
        visit(&rows)?;
    }
    if counted > 0 && per_signer.iter().any(|(signer, count)| guard.nonces_remembered_for(signer) != *count) {
        return Err(corrupt("its nonces are not those its counts name"));
    }
    Ok(())
}

fn read_exactly(reader: &mut impl Read, buffer: &mut [u8]) -> Result<(), ImageError> {
    reader.read_exact(buffer).map_err(|error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => ImageError::Corrupt("it ends inside its replay window".into()),
        _ => ImageError::Disk { action: "read", path: "the state image".into(), source: error },
    })
}

/// Writes `rows`, from an image of a state after `commands_applied`
/// commands, to `db` (unsynced: the image's install syncs the WAL), valued
/// with that count, except a row already there, which keeps its own
/// (never later): a crash before the image is in place leaves a re-apply
/// from the older image the rows it wrote itself, and counts the others
/// absent until it passes that count.
pub(crate) fn write_rows(db: &DB, rows: &[Row], commands_applied: u64) -> Result<(), ImageError> {
    let (lookup, by_time) = (family(db, NONCES_FAMILY)?, family(db, NONCES_BY_TIME_FAMILY)?);
    let keys: Vec<Row> = rows.iter().map(lookup_key).collect();
    let stored = db.batched_multi_get_cf(lookup, &keys, false);
    let mut batch = WriteBatch::default();
    for ((row, key), stored) in rows.iter().zip(&keys).zip(stored) {
        let kept = stored.map_err(database)?.and_then(|value| sequence_of(&value));
        if kept.is_some_and(|kept| kept <= commands_applied) {
            continue;
        }
        batch.put_cf(lookup, key, commands_applied.to_be_bytes());
        batch.put_cf(by_time, row, commands_applied.to_be_bytes());
    }
    db.write(batch).map_err(database)
}

/// Moves the nonces `state`'s replay window holds itself (an image written
/// before the window was on disk) to `db`, synced, leaving it the counts;
/// whether there were any.
pub(crate) fn move_to_disk(db: &DB, state: &mut PolicyState) -> Result<bool, ImageError> {
    let held = std::mem::take(state.recent_commands.nonces_mut());
    if held.is_empty() {
        return Ok(false);
    }
    let rows: Vec<Row> =
        held.by_time().iter().map(|(time, signer, nonce)| row_of(*time, signer, nonce)).collect();
    for batch in rows.chunks(ROWS_PER_BATCH_MAX) {
        write_rows(db, batch, state.commands_applied)?;
    }
    db.flush_wal(true).map_err(database)?;
    Ok(true)
}

/// Deletes the rows timed before `before_ms`, which no image from the one
/// on disk on counts: the lookups a batch at a time, then the time-ordered
/// rows in one range. Unsynced: a crash leaves some for the next prune.
/// How many.
pub(crate) fn prune(db: &DB, before_ms: UnixMillis) -> Result<u64, ImageError> {
    let (lookup, by_time) = (family(db, NONCES_FAMILY)?, family(db, NONCES_BY_TIME_FAMILY)?);
    let mut pruned = 0_u64;
    let mut batch = WriteBatch::default();
    for item in db.iterator_cf(by_time, IteratorMode::Start) {
        let (key, _) = item.map_err(database)?;
        let Ok(row) = <Row>::try_from(&key[..]) else { continue };
        if parts_of(&row).0 >= before_ms {
            break;
        }
        batch.delete_cf(lookup, lookup_key(&row));
        pruned += 1;
        if batch.len() >= ROWS_PER_BATCH_MAX {
            db.write(std::mem::take(&mut batch)).map_err(database)?;
        }
    }
    if pruned > 0 {
        batch.delete_range_cf(by_time, 0_u64.to_be_bytes(), before_ms.to_be_bytes());
        db.write(batch).map_err(database)?;
    }
    Ok(pruned)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use civmesh_certs::ReplayGuard;

    /// A database with the window's families only.
    pub(crate) fn db(path: &std::path::Path) -> DB {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        DB::open_cf(&options, path, [NONCES_FAMILY, NONCES_BY_TIME_FAMILY]).unwrap()
    }

    fn signer(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    const SKEW_MS: u64 = 10_000;

    /// The steps: signer, nonce, time (also the entry time). Every seventh
    /// replays the nonce of the third before it.
    fn steps() -> Vec<(NodeId, [u8; NONCE_BYTES], u64)> {
        let step = |n: u64| (signer((n % 3) as u8), [n as u8; NONCE_BYTES]);
        (0..200_u64)
            .map(|n| {
                let (signer, nonce) = if n % 7 == 6 { step(n - 3) } else { step(n) };
                (signer, nonce, 1_000 + 300 * n)
            })
            .collect()
    }

    fn guard() -> ReplayGuard {
        ReplayGuard::with_signer_quota(SKEW_MS, 1_000, 9)
    }

    /// Applies `steps` to a guard over `db`, `per_call` to an apply call;
    /// the outcomes.
    fn apply_on_disk(
        db: &DB,
        guard: &mut ReplayGuard,
        steps: &[(NodeId, [u8; NONCE_BYTES], u64)],
        sequence_first: u64,
        per_call: usize,
    ) -> Vec<bool> {
        let mut outcomes = Vec::new();
        for (call, chunk) in steps.chunks(per_call).enumerate() {
            let first = sequence_first + (call * per_call) as u64;
            let mut nonces = StoredNonces::new(db, first).unwrap();
            for (offset, (signer, nonce, at_ms)) in chunk.iter().enumerate() {
                nonces.next_command(first + offset as u64);
                outcomes.push(guard.check_and_record_in(&mut nonces, signer, nonce, *at_ms, *at_ms).is_ok());
            }
            let mut batch = WriteBatch::default();
            nonces.write_into(&mut batch).unwrap();
            db.write(batch).unwrap();
        }
        outcomes
    }

    #[test]
    fn a_window_on_disk_decides_as_one_in_memory_and_again_after_a_restart_midway() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let steps = steps();
        let mut memory = guard();
        let expected: Vec<bool> =
            steps.iter().map(|(s, n, at)| memory.check_and_record(s, n, *at, *at).is_ok()).collect();
        assert!(expected.iter().any(|ok| !ok) && expected.iter().any(|ok| *ok));
        let mut disk = guard();
        assert_eq!(apply_on_disk(&db, &mut disk, &steps[..120], 1, 7), expected[..120]);
        let image = disk.clone();
        assert_eq!(apply_on_disk(&db, &mut disk, &steps[120..], 121, 9), expected[120..]);
        assert_eq!(disk.nonces_remembered(), memory.nonces_remembered());
        // A crash after all of it; the image was at 120: re-applying the
        // rest, whose rows are on disk already, decides the same.
        let mut again = image;
        assert_eq!(apply_on_disk(&db, &mut again, &steps[120..], 121, 13), expected[120..]);
        assert_eq!(again, disk);
    }

    /// A node whose image is at 60 applied to 120, then began to install a
    /// snapshot at 180 and was killed before the image was in place: a
    /// re-apply from 60 decides as the first apply did.
    #[test]
    fn an_install_cut_short_leaves_a_re_apply_from_the_older_image_deciding_the_same() {
        let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (db, other) = (db(dir.path()), db(other_dir.path()));
        let steps = steps();
        let wide = || ReplayGuard::with_signer_quota(100_000, 1_000, 50);
        let mut node = wide();
        apply_on_disk(&db, &mut node, &steps[..60], 1, 10);
        let image = node.clone();
        let expected = apply_on_disk(&db, &mut node, &steps[60..120], 61, 10);
        assert!(expected.iter().any(|ok| !ok));
        let mut leader =
            PolicyState { recent_commands: wide(), commands_applied: 180, ..PolicyState::default() };
        apply_on_disk(&other, &mut leader.recent_commands, &steps[..180], 1, 10);
        let mut section = Vec::new();
        write_window(Some(&other), &leader, &mut section).unwrap();
        read_window(&leader, &mut &section[..], |rows| write_rows(&db, rows, 180)).unwrap();
        let mut again = image;
        assert_eq!(apply_on_disk(&db, &mut again, &steps[60..120], 61, 10), expected);
        assert_eq!(again, node);
    }

    #[test]
    fn an_image_holds_the_nonces_its_state_counts_and_a_reader_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let steps = steps();
        let mut state = PolicyState { recent_commands: guard(), ..PolicyState::default() };
        apply_on_disk(&db, &mut state.recent_commands, &steps[..120], 1, 10);
        state.commands_applied = 120;
        let mut later = state.recent_commands.clone();
        apply_on_disk(&db, &mut later, &steps[120..], 121, 10);
        let mut section = Vec::new();
        write_window(Some(&db), &state, &mut section).unwrap();
        let counted = state.recent_commands.nonces_remembered();
        assert!(counted > 10);
        assert_eq!(section.len(), 8 + counted * NONCE_ROW_BYTES);
        let mut read = Vec::new();
        read_window(&state, &mut &section[..], |rows| {
            read.extend_from_slice(rows);
            Ok(())
        })
        .unwrap();
        assert_eq!(read.len(), counted);
        // Installed elsewhere, the rows decide as the originals did.
        let other_dir = tempfile::tempdir().unwrap();
        let other = self::db(other_dir.path());
        write_rows(&other, &read, 120).unwrap();
        let mut installed = state.recent_commands.clone();
        assert_eq!(
            apply_on_disk(&other, &mut installed, &steps[120..], 121, 10),
            apply_on_disk(&db, &mut state.recent_commands.clone(), &steps[120..], 121, 10)
        );
        type Change = fn(&mut Vec<u8>);
        let cases: [(&str, Change); 4] = [
            ("a count that is not the state's", |s| s[7] += 1),
            ("two rows swapped", |s| s[8..8 + 2 * NONCE_ROW_BYTES].rotate_left(NONCE_ROW_BYTES)),
            ("a row cut short", |s| s.truncate(s.len() - 1)),
            ("a signer changed", |s| s[8 + 8] ^= 0xff),
        ];
        for (case, change) in cases {
            let mut bad = section.clone();
            change(&mut bad);
            let error = read_window(&state, &mut &bad[..], |_| Ok(())).unwrap_err();
            assert!(matches!(error, ImageError::Corrupt(_)), "{case}: {error}");
        }
        // Pruned before the window's start, the image is the same.
        assert!(prune(&db, state.recent_commands.window_start_ms()).unwrap() > 0);
        let mut pruned = Vec::new();
        write_window(Some(&db), &state, &mut pruned).unwrap();
        assert_eq!(pruned, section);
    }
}
