//! [`ReplayGuard`]: the window of recent nonces that rejects replayed
//! envelopes, at the edge (wall-clock time) and in the replicated state
//! (entry time).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::envelope::{EnvelopeError, NONCE_BYTES};
use crate::identity::NodeId;
use crate::UnixMillis;

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
/// keeps one too, driven by entry time instead of the wall clock. Its
/// encoding holds each nonce once, in `by_time` order (an ordered set, so
/// the bytes are the same on every replica); the lookup set and the
/// per-signer counts are rebuilt, and checked, when it is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ReplayGuardRead")]
pub struct ReplayGuard {
    skew_ms_max: u64,
    nonces_max: usize,
    nonces_per_signer_max: usize,
    /// The latest `now_ms` seen: the window is measured from it.
    now_ms_latest: UnixMillis,
    by_time: BTreeSet<(UnixMillis, NodeId, [u8; NONCE_BYTES])>,
    /// The pairs in `by_time`, for lookups; not encoded.
    seen: HashSet<(NodeId, [u8; NONCE_BYTES])>,
    /// How many nonces each signer has in `seen`; signers with none are
    /// absent. Not encoded.
    per_signer: BTreeMap<NodeId, usize>,
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
            by_time: BTreeSet::new(),
            seen: HashSet::new(),
            per_signer: BTreeMap::new(),
        }
    }

    /// The time the window is measured from for a check at `now_ms`: the
    /// latest "now" seen, never earlier.
    fn effective_now(&self, now_ms: UnixMillis) -> UnixMillis {
        now_ms.max(self.now_ms_latest)
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
        let now_ms = self.effective_now(now_ms);
        let window_start = now_ms.saturating_sub(self.skew_ms_max);
        if issued_at_ms < window_start || issued_at_ms > now_ms.saturating_add(self.skew_ms_max) {
            return Err(EnvelopeError::TimestampOutsideWindow {
                issued_at_ms,
                now_ms,
                skew_ms_max: self.skew_ms_max,
            });
        }
        if self.seen.contains(&(*signer, *nonce)) {
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
        self.check(signer, nonce, issued_at_ms, now_ms)?;
        self.now_ms_latest = self.effective_now(now_ms);
        self.expire();
        if self.seen.len() >= self.nonces_max {
            return Err(EnvelopeError::ReplayCacheFull(self.seen.len()));
        }
        let count = self.nonces_remembered_for(signer);
        if count >= self.nonces_per_signer_max {
            return Err(EnvelopeError::SignerQuotaFull { signer: *signer, count });
        }
        self.seen.insert((*signer, *nonce));
        self.by_time.insert((issued_at_ms, *signer, *nonce));
        *self.per_signer.entry(*signer).or_insert(0) += 1;
        debug_assert_eq!(self.seen.len(), self.by_time.len());
        Ok(())
    }

    /// Forgets the nonces whose time has left the window.
    fn expire(&mut self) {
        let window_start = self.now_ms_latest.saturating_sub(self.skew_ms_max);
        while let Some(oldest) = self.by_time.first() {
            if oldest.0 >= window_start {
                break;
            }
            let (time, signer, nonce) = *oldest;
            self.by_time.remove(&(time, signer, nonce));
            self.seen.remove(&(signer, nonce));
            if let Some(count) = self.per_signer.get_mut(&signer) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_signer.remove(&signer);
                }
            }
        }
    }

    /// How many nonces are remembered now.
    pub fn nonces_remembered(&self) -> usize {
        self.seen.len()
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
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(Self::SKEW_MS_MAX_DEFAULT, Self::NONCES_MAX_DEFAULT)
    }
}

/// A guard's encoding, over how it holds its collections: borrowed to
/// write (each nonce once, in `by_time`; `seen` and `per_signer` empty, so
/// encoding copies nothing), owned to read ([`ReplayGuardRead`]).
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

/// A guard as it is read. `seen` and `per_signer` are filled only in
/// images written before the guard held each nonce once; those still
/// decode if they agree with `by_time`.
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
    /// An older encoding's lookup set or counts disagree with its nonces.
    #[error("the replay window's lookup set or counts disagree with its nonces")]
    Inconsistent,
}

impl Serialize for ReplayGuard {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let no_pairs: &[(NodeId, [u8; NONCE_BYTES])] = &[];
        ReplayGuardFields {
            skew_ms_max: self.skew_ms_max,
            nonces_max: self.nonces_max,
            nonces_per_signer_max: self.nonces_per_signer_max,
            now_ms_latest: self.now_ms_latest,
            by_time: &self.by_time,
            seen: no_pairs,
            per_signer: &BTreeMap::<NodeId, usize>::new(),
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
        if fields.by_time.len() > fields.nonces_max {
            return Err(ReplayGuardDecodeError::PastBound);
        }
        let mut guard = ReplayGuard::with_signer_quota(
            fields.skew_ms_max,
            fields.nonces_max,
            fields.nonces_per_signer_max,
        );
        guard.now_ms_latest = fields.now_ms_latest;
        for &(_, signer, nonce) in &fields.by_time {
            if !guard.seen.insert((signer, nonce)) {
                return Err(ReplayGuardDecodeError::Duplicate(signer));
            }
            let count = guard.per_signer.entry(signer).or_insert(0);
            *count += 1;
            if *count > fields.nonces_per_signer_max {
                return Err(ReplayGuardDecodeError::PastBound);
            }
        }
        let legacy = !fields.seen.is_empty() || !fields.per_signer.is_empty();
        if legacy
            && (fields.per_signer != guard.per_signer
                || fields.seen.len() != guard.seen.len()
                || !fields.seen.iter().all(|pair| guard.seen.contains(pair)))
        {
            return Err(ReplayGuardDecodeError::Inconsistent);
        }
        guard.by_time = fields.by_time;
        Ok(guard)
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
            by_time: guard.by_time.clone(),
            seen: guard.seen.iter().copied().collect(),
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
    fn an_encoding_written_before_still_decodes() {
        let guard = guard(40);
        let legacy = codec::encode(&legacy_fields(&guard)).unwrap();
        assert_eq!(codec::decode_exact::<ReplayGuard>(&legacy, 1 << 20).unwrap(), guard);
    }

    #[test]
    fn an_encoding_that_disagrees_with_itself_or_its_bounds_is_refused() {
        type Change = fn(&mut ReplayGuardRead);
        let cases: [(&str, Change, ReplayGuardDecodeError); 5] = [
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
