//! [`ReplayGuard`]: the window of recent nonces that rejects replayed
//! envelopes, at the edge (wall-clock time) and in the replicated state
//! (entry time).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::envelope::{EnvelopeError, NONCE_BYTES};
use crate::identity::NodeId;
use crate::UnixMillis;

/// Where a window's nonces are held: in memory ([`MemoryNonces`], at the
/// edge and in an auditor's replay) or on disk (a replica's state machine).
/// The guard decides; the store only answers for the nonces it was given.
pub trait NonceStore {
    /// Whether `signer`'s `nonce` is held, with a time at or after
    /// `window_start_ms` (older ones have left the window, even if a
    /// store still has them).
    fn holds(&self, signer: &NodeId, nonce: &[u8; NONCE_BYTES], window_start_ms: UnixMillis) -> bool;
    /// Holds `signer`'s `nonce`, timed `issued_at_ms`.
    fn insert(&mut self, signer: &NodeId, nonce: &[u8; NONCE_BYTES], issued_at_ms: UnixMillis);
    /// The nonces timed in `from_ms..to_ms` leave the window: how many
    /// each signer had there.
    fn expire(&mut self, from_ms: UnixMillis, to_ms: UnixMillis) -> BTreeMap<NodeId, usize>;
}

/// One nonce in a window: its time, signer and value, ordered by time.
pub type WindowNonce = (UnixMillis, NodeId, [u8; NONCE_BYTES]);

/// A window's nonces held in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryNonces {
    by_time: BTreeSet<WindowNonce>,
    /// The pairs in `by_time`, for lookups.
    seen: HashSet<(NodeId, [u8; NONCE_BYTES])>,
}

impl MemoryNonces {
    /// The nonces, in time order.
    pub fn by_time(&self) -> &BTreeSet<WindowNonce> {
        &self.by_time
    }

    /// How many nonces are held.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

impl NonceStore for MemoryNonces {
    fn holds(&self, signer: &NodeId, nonce: &[u8; NONCE_BYTES], _window_start_ms: UnixMillis) -> bool {
        self.seen.contains(&(*signer, *nonce))
    }

    fn insert(&mut self, signer: &NodeId, nonce: &[u8; NONCE_BYTES], issued_at_ms: UnixMillis) {
        self.seen.insert((*signer, *nonce));
        self.by_time.insert((issued_at_ms, *signer, *nonce));
        debug_assert_eq!(self.seen.len(), self.by_time.len());
    }

    /// Forgets every nonce timed before `to_ms`: in memory none is older
    /// than `from_ms`.
    fn expire(&mut self, _from_ms: UnixMillis, to_ms: UnixMillis) -> BTreeMap<NodeId, usize> {
        let mut expired = BTreeMap::new();
        while let Some(&(time, signer, nonce)) = self.by_time.first() {
            if time >= to_ms {
                break;
            }
            self.by_time.remove(&(time, signer, nonce));
            self.seen.remove(&(signer, nonce));
            *expired.entry(signer).or_insert(0) += 1;
        }
        expired
    }
}

/// Rejects replays: a timestamp outside ±`skew_ms_max` of now, or a
/// (signer, nonce) pair already seen inside that window. Memory is bounded by
/// `nonces_max` in all and `nonces_per_signer_max` per signer, so one signer
/// cannot fill the cache and lock the others out; nonces leave the cache only
/// once their timestamp is outside the window, where the window check alone
/// rejects them, so eviction never re-opens a replay.
///
/// "Now" never goes back: the guard keeps the latest `now_ms` it was given
/// and measures the window from it, so an old envelope presented with an old
/// "now" (after its nonce has left the cache) is still refused as outside
/// the window.
///
/// It is deterministic and serializable, so the replicated state machine
/// keeps one too, driven by entry time instead of the wall clock. It keeps
/// the counts; the nonces are in a [`NonceStore`]: its own
/// [`MemoryNonces`] (`check`, `check_and_record`) or one the caller holds
/// (`check_in`, `check_and_record_in`), such as a replica's disk. Its
/// encoding holds each of its own nonces once, in time order (an ordered
/// set, so the bytes are the same on every replica), and the per-signer
/// counts only when it holds no nonces itself; the lookup set and the
/// counts are rebuilt, and checked, when it is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ReplayGuardRead")]
pub struct ReplayGuard {
    skew_ms_max: u64,
    nonces_max: usize,
    nonces_per_signer_max: usize,
    /// The latest `now_ms` seen: the window is measured from it.
    now_ms_latest: UnixMillis,
    /// How many nonces the window holds, wherever they are.
    count: usize,
    /// How many of them each signer has; signers with none are absent.
    per_signer: BTreeMap<NodeId, usize>,
    /// The nonces, when the guard holds them itself; empty when the
    /// caller's store holds them.
    memory: MemoryNonces,
}

impl ReplayGuard {
    /// The default clock-skew window, in milliseconds.
    pub const SKEW_MS_MAX_DEFAULT: u64 = 30_000;
    /// The default bound on remembered nonces.
    pub const NONCES_MAX_DEFAULT: usize = 1_000_000;

    /// A guard with the given window half-width and nonce bound, and no
    /// per-signer quota beyond that bound.
    pub fn new(skew_ms_max: u64, nonces_max: usize) -> Self {
        Self::with_signer_quota(skew_ms_max, nonces_max, nonces_max)
    }

    /// A guard with the given window half-width, nonce bound, and per-signer
    /// quota of nonces in the window.
    pub fn with_signer_quota(skew_ms_max: u64, nonces_max: usize, nonces_per_signer_max: usize) -> Self {
        assert!(nonces_max > 0, "a replay guard must remember at least one nonce");
        assert!(nonces_per_signer_max > 0, "a replay guard must let each signer have a nonce");
        ReplayGuard {
            skew_ms_max,
            nonces_max,
            nonces_per_signer_max,
            now_ms_latest: 0,
            count: 0,
            per_signer: BTreeMap::new(),
            memory: MemoryNonces::default(),
        }
    }

    /// The time the window is measured from for a check at `now_ms`: the
    /// latest "now" seen, never earlier.
    fn effective_now(&self, now_ms: UnixMillis) -> UnixMillis {
        now_ms.max(self.now_ms_latest)
    }

    /// The earliest time a held nonce has: older ones have left.
    pub fn window_start_ms(&self) -> UnixMillis {
        self.now_ms_latest.saturating_sub(self.skew_ms_max)
    }

    /// The latest time a held nonce can have.
    pub fn window_end_ms(&self) -> UnixMillis {
        self.now_ms_latest.saturating_add(self.skew_ms_max)
    }

    /// Checks one envelope's time and nonce without remembering anything:
    /// the checks [`ReplayGuard::check_and_record`] makes before its bounds.
    pub fn check(
        &self,
        signer: &NodeId,
        nonce: &[u8; NONCE_BYTES],
        issued_at_ms: UnixMillis,
        now_ms: UnixMillis,
    ) -> Result<(), EnvelopeError> {
        self.check_in(&self.memory, signer, nonce, issued_at_ms, now_ms)
    }

    /// [`ReplayGuard::check`] against the nonces in `store`.
    pub fn check_in(
        &self,
        store: &dyn NonceStore,
        signer: &NodeId,
        nonce: &[u8; NONCE_BYTES],
        issued_at_ms: UnixMillis,
        now_ms: UnixMillis,
    ) -> Result<(), EnvelopeError> {
        let now_ms = self.effective_now(now_ms);
        let window_start = now_ms.saturating_sub(self.skew_ms_max);
        if issued_at_ms < window_start || issued_at_ms > now_ms.saturating_add(self.skew_ms_max) {
            return Err(EnvelopeError::TimestampOutsideWindow {
                issued_at_ms,
                now_ms,
                skew_ms_max: self.skew_ms_max,
            });
        }
        if store.holds(signer, nonce, self.window_start_ms()) {
            return Err(EnvelopeError::Replayed(*signer));
        }
        Ok(())
    }

    /// Checks one envelope's time and nonce, and remembers the nonce. Even
    /// when it refuses, it may forget nonces that have left the window.
    pub fn check_and_record(
        &mut self,
        signer: &NodeId,
        nonce: &[u8; NONCE_BYTES],
        issued_at_ms: UnixMillis,
        now_ms: UnixMillis,
    ) -> Result<(), EnvelopeError> {
        let mut memory = std::mem::take(&mut self.memory);
        let checked = self.check_and_record_in(&mut memory, signer, nonce, issued_at_ms, now_ms);
        self.memory = memory;
        checked
    }

    /// [`ReplayGuard::check_and_record`] with the nonces in `store`: the
    /// guard keeps only the counts. The caller gives it the same store
    /// every time (a guard holding nonces itself is never given another).
    pub fn check_and_record_in(
        &mut self,
        store: &mut dyn NonceStore,
        signer: &NodeId,
        nonce: &[u8; NONCE_BYTES],
        issued_at_ms: UnixMillis,
        now_ms: UnixMillis,
    ) -> Result<(), EnvelopeError> {
        debug_assert!(self.memory.is_empty(), "a guard holding nonces itself was given another store");
        self.check_in(store, signer, nonce, issued_at_ms, now_ms)?;
        let window_start_before = self.window_start_ms();
        self.now_ms_latest = self.effective_now(now_ms);
        self.expire(store, window_start_before);
        if self.count >= self.nonces_max {
            return Err(EnvelopeError::ReplayCacheFull(self.count));
        }
        let count = self.nonces_remembered_for(signer);
        if count >= self.nonces_per_signer_max {
            return Err(EnvelopeError::SignerQuotaFull { signer: *signer, count });
        }
        store.insert(signer, nonce, issued_at_ms);
        self.count += 1;
        *self.per_signer.entry(*signer).or_insert(0) += 1;
        Ok(())
    }

    /// Forgets the nonces whose time has left the window since it started
    /// at `window_start_before`.
    fn expire(&mut self, store: &mut dyn NonceStore, window_start_before: UnixMillis) {
        let window_start = self.window_start_ms();
        if window_start <= window_start_before {
            return;
        }
        for (signer, expired) in store.expire(window_start_before, window_start) {
            self.count = self.count.saturating_sub(expired);
            if let Some(count) = self.per_signer.get_mut(&signer) {
                *count = count.saturating_sub(expired);
                if *count == 0 {
                    self.per_signer.remove(&signer);
                }
            }
        }
    }

    /// How many nonces are remembered now.
    pub fn nonces_remembered(&self) -> usize {
        self.count
    }

    /// How many of `signer`'s nonces are remembered now.
    pub fn nonces_remembered_for(&self, signer: &NodeId) -> usize {
        self.per_signer.get(signer).copied().unwrap_or(0)
    }

    /// The latest "now" this guard was given, from which its window is
    /// measured.
    pub fn now_ms_latest(&self) -> UnixMillis {
        self.now_ms_latest
    }

    /// The nonces the guard holds itself (none when a caller's store holds
    /// them), for the caller to take into a store of its own.
    pub fn nonces_mut(&mut self) -> &mut MemoryNonces {
        &mut self.memory
    }

    /// The nonces the guard holds itself.
    pub fn nonces(&self) -> &MemoryNonces {
        &self.memory
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(Self::SKEW_MS_MAX_DEFAULT, Self::NONCES_MAX_DEFAULT)
    }
}

/// A guard's encoding, over how it holds its collections: borrowed to
/// write (each of its own nonces once, in `by_time`, and `seen` empty; the
/// counts in `per_signer` only when it holds no nonces itself, so encoding
/// copies nothing), owned to read ([`ReplayGuardRead`]).
#[derive(Serialize, Deserialize)]
struct ReplayGuardFields<ByTime, Pairs, Counts> {
    skew_ms_max: u64,
    nonces_max: usize,
    nonces_per_signer_max: usize,
    now_ms_latest: UnixMillis,
    by_time: ByTime,
    seen: Pairs,
    per_signer: Counts,
}

/// A guard as it is read. `seen` is filled only in images written before
/// the guard held each nonce once, and `per_signer` with nonces in
/// `by_time` only then; those still decode if they agree with `by_time`.
type ReplayGuardRead = ReplayGuardFields<
    BTreeSet<(UnixMillis, NodeId, [u8; NONCE_BYTES])>,
    BTreeSet<(NodeId, [u8; NONCE_BYTES])>,
    BTreeMap<NodeId, usize>,
>;

/// Why an encoded [`ReplayGuard`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayGuardDecodeError {
    /// A bound is zero: the guard would refuse every nonce.
    #[error("a replay guard's bounds must be positive")]
    BoundZero,
    /// A signer's nonce appears twice.
    #[error("signer {0} has a nonce twice in the replay window")]
    Duplicate(NodeId),
    /// More nonces than the bounds allow, in all or for one signer.
    #[error("the replay window holds more nonces than its bounds allow")]
    PastBound,
    /// An older encoding's lookup set or counts disagree with its nonces,
    /// or counts without nonces name a signer with none.
    #[error("the replay window's lookup set or counts disagree with its nonces")]
    Inconsistent,
    /// A nonce is older than the window's start: it would never leave.
    #[error("the replay window holds a nonce older than its start")]
    Expired,
}

impl Serialize for ReplayGuard {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let no_pairs: &[(NodeId, [u8; NONCE_BYTES])] = &[];
        let no_counts = BTreeMap::<NodeId, usize>::new();
        ReplayGuardFields {
            skew_ms_max: self.skew_ms_max,
            nonces_max: self.nonces_max,
            nonces_per_signer_max: self.nonces_per_signer_max,
            now_ms_latest: self.now_ms_latest,
            by_time: &self.memory.by_time,
            seen: no_pairs,
            per_signer: if self.memory.is_empty() { &self.per_signer } else { &no_counts },
        }
        .serialize(serializer)
    }
}

impl TryFrom<ReplayGuardRead> for ReplayGuard {
    type Error = ReplayGuardDecodeError;

    fn try_from(fields: ReplayGuardRead) -> Result<Self, Self::Error> {
        if fields.nonces_max == 0 || fields.nonces_per_signer_max == 0 {
            return Err(ReplayGuardDecodeError::BoundZero);
        }
        let mut guard = ReplayGuard::with_signer_quota(
            fields.skew_ms_max,
            fields.nonces_max,
            fields.nonces_per_signer_max,
        );
        guard.now_ms_latest = fields.now_ms_latest;
        if fields.by_time.is_empty() {
            return guard.with_counts(fields.seen.is_empty(), fields.per_signer);
        }
        if fields.by_time.len() > fields.nonces_max {
            return Err(ReplayGuardDecodeError::PastBound);
        }
        if fields.by_time.first().is_some_and(|oldest| oldest.0 < guard.window_start_ms()) {
            return Err(ReplayGuardDecodeError::Expired);
        }
        for &(time, signer, nonce) in &fields.by_time {
            if guard.holds_itself(&signer, &nonce) {
                return Err(ReplayGuardDecodeError::Duplicate(signer));
            }
            guard.memory.insert(&signer, &nonce, time);
            guard.count += 1;
            let count = guard.per_signer.entry(signer).or_insert(0);
            *count += 1;
            if *count > fields.nonces_per_signer_max {
                return Err(ReplayGuardDecodeError::PastBound);
            }
        }
        let legacy = !fields.seen.is_empty() || !fields.per_signer.is_empty();
        if legacy
            && (fields.per_signer != guard.per_signer
                || fields.seen.len() != guard.memory.seen.len()
                || !fields.seen.iter().all(|pair| guard.memory.seen.contains(pair)))
        {
            return Err(ReplayGuardDecodeError::Inconsistent);
        }
        Ok(guard)
    }
}

impl ReplayGuard {
    fn holds_itself(&self, signer: &NodeId, nonce: &[u8; NONCE_BYTES]) -> bool {
        self.memory.holds(signer, nonce, self.window_start_ms())
    }

    /// A guard whose nonces a store holds, with these counts, if they are
    /// within its bounds.
    fn with_counts(
        mut self,
        no_pairs: bool,
        per_signer: BTreeMap<NodeId, usize>,
    ) -> Result<Self, ReplayGuardDecodeError> {
        if !no_pairs || per_signer.values().any(|count| *count == 0) {
            return Err(ReplayGuardDecodeError::Inconsistent);
        }
        if per_signer.values().any(|count| *count > self.nonces_per_signer_max) {
            return Err(ReplayGuardDecodeError::PastBound);
        }
        let count = per_signer.values().try_fold(0_usize, |sum, count| sum.checked_add(*count));
        self.count =
            count.filter(|count| *count <= self.nonces_max).ok_or(ReplayGuardDecodeError::PastBound)?;
        self.per_signer = per_signer;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    const SKEW_MS: u64 = 30_000;

    fn signer(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    /// A guard holding `count` nonces of two signers.
    fn guard(count: u8) -> ReplayGuard {
        let mut guard = ReplayGuard::with_signer_quota(SKEW_MS, 1_000, 500);
        for n in 0..count {
            guard.check_and_record(&signer(n % 2), &[n; NONCE_BYTES], 1_000 + u64::from(n), 1_000).unwrap();
        }
        guard
    }

    /// The fields of `guard` as the encoding before this one wrote them:
    /// the lookup set and the counts too.
    fn legacy_fields(guard: &ReplayGuard) -> ReplayGuardRead {
        ReplayGuardFields {
            skew_ms_max: guard.skew_ms_max,
            nonces_max: guard.nonces_max,
            nonces_per_signer_max: guard.nonces_per_signer_max,
            now_ms_latest: guard.now_ms_latest,
            by_time: guard.memory.by_time.clone(),
            seen: guard.memory.seen.iter().copied().collect(),
            per_signer: guard.per_signer.clone(),
        }
    }

    #[test]
    fn a_guard_is_encoded_with_each_nonce_once_and_decodes_the_same() {
        let guard = guard(40);
        let bytes = codec::encode(&guard).unwrap();
        let decoded: ReplayGuard = codec::decode_exact(&bytes, 1 << 20).unwrap();
        assert_eq!(decoded, guard);
        let legacy = codec::encode(&legacy_fields(&guard)).unwrap();
        assert!(bytes.len() * 10 < legacy.len() * 6, "{} bytes, {} before", bytes.len(), legacy.len());
        let mut decoded = decoded;
        assert_eq!(
            decoded.check_and_record(&signer(1), &[1; NONCE_BYTES], 1_001, 1_000),
            Err(EnvelopeError::Replayed(signer(1)))
        );
        assert_eq!(decoded.nonces_remembered_for(&signer(0)), 20);
    }

    #[test]
    fn a_guard_over_a_store_of_the_callers_decides_the_same_and_encodes_its_counts_only() {
        let (mut own, mut counting, mut store) = (guard(0), guard(0), MemoryNonces::default());
        let steps = (0..60_u8).map(|n| (signer(n % 3), [n % 50; NONCE_BYTES], 1_000 + 900 * u64::from(n)));
        for (signer, nonce, at_ms) in steps {
            let expected = own.check_and_record(&signer, &nonce, at_ms, at_ms);
            assert_eq!(counting.check_and_record_in(&mut store, &signer, &nonce, at_ms, at_ms), expected);
            assert_eq!(counting.nonces_remembered_for(&signer), own.nonces_remembered_for(&signer));
        }
        assert_eq!(
            (counting.nonces_remembered(), store.by_time()),
            (own.nonces_remembered(), own.nonces().by_time())
        );
        assert!(counting.nonces().is_empty());
        let bytes = codec::encode(&counting).unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(codec::decode_exact::<ReplayGuard>(&bytes, 1 << 20).unwrap(), counting);
    }

    #[test]
    fn counts_without_nonces_are_refused_when_they_pass_the_bounds_or_name_a_signer_with_none() {
        let cases: [(usize, usize, ReplayGuardDecodeError); 3] = [
            (0, 1, ReplayGuardDecodeError::Inconsistent),
            (501, 1, ReplayGuardDecodeError::PastBound),
            (500, 501, ReplayGuardDecodeError::PastBound),
        ];
        for (first, second, expected) in cases {
            let mut fields = legacy_fields(&guard(0));
            fields.per_signer = BTreeMap::from([(signer(0), first), (signer(1), second)]);
            let bytes = codec::encode(&fields).unwrap();
            let error = codec::decode_exact::<ReplayGuard>(&bytes, 1 << 20).unwrap_err();
            assert!(error.to_string().contains(&expected.to_string()), "{first}, {second}: {error}");
        }
    }

    #[test]
    fn an_encoding_written_before_still_decodes() {
        let guard = guard(40);
        let legacy = codec::encode(&legacy_fields(&guard)).unwrap();
        assert_eq!(codec::decode_exact::<ReplayGuard>(&legacy, 1 << 20).unwrap(), guard);
    }

    #[test]
    fn an_encoding_that_disagrees_with_itself_or_its_bounds_is_refused() {
        type Change = fn(&mut ReplayGuardRead);
        let cases: [(&str, Change, ReplayGuardDecodeError); 6] = [
            ("a nonce past the window", |f| f.now_ms_latest = 40_000, ReplayGuardDecodeError::Expired),
            ("a zero bound", |f| f.nonces_per_signer_max = 0, ReplayGuardDecodeError::BoundZero),
            ("too many in all", |f| f.nonces_max = 39, ReplayGuardDecodeError::PastBound),
            ("too many for a signer", |f| f.nonces_per_signer_max = 19, ReplayGuardDecodeError::PastBound),
            (
                "a nonce twice",
                |f| {
                    f.by_time.insert((5_000, signer(0), [0; NONCE_BYTES]));
                },
                ReplayGuardDecodeError::Duplicate(signer(0)),
            ),
            (
                "a lookup set that disagrees",
                |f| {
                    f.seen.remove(&(signer(0), [0; NONCE_BYTES]));
                    f.seen.insert((signer(0), [99; NONCE_BYTES]));
                },
                ReplayGuardDecodeError::Inconsistent,
            ),
        ];
        for (case, change, expected) in cases {
            let mut fields = legacy_fields(&guard(40));
            change(&mut fields);
            let bytes = codec::encode(&fields).unwrap();
            let error = codec::decode_exact::<ReplayGuard>(&bytes, 1 << 20).unwrap_err();
            assert!(error.to_string().contains(&expected.to_string()), "{case}: {error}");
        }
    }
}
