//! Correction statistics kept as each event is applied, per owner and
//! dataset: stage counts, applied and rejected counts, and a fixed-bucket
//! histogram of turnarounds. Reading them costs the number of groups, not
//! the number of corrections ever made, and every replica keeps the same.

use std::collections::BTreeMap;

use civmesh_certs::OrgId;
use serde::{Deserialize, Serialize};

use crate::correction::{CorrectionStage, CorrectionStats, CorrectionTrack};
use crate::model::DatasetId;

/// Values below this are their own bucket; above, each doubling has
/// `SUB_BUCKETS` buckets, so a bucket's bounds differ by at most 1/8.
const EXACT_BELOW: u64 = 8;
/// Buckets per doubling above [`EXACT_BELOW`].
const SUB_BUCKETS: u64 = 8;

/// Turnarounds in ms, counted in fixed buckets (kept sparse): a percentile
/// is the upper bound of the bucket holding the nearest rank, at most 1/8
/// above the true value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnaroundHistogram {
    counts: BTreeMap<u16, u64>,
}

impl TurnaroundHistogram {
    /// The bucket `ms` falls in.
    fn bucket_of(ms: u64) -> u16 {
        if ms < EXACT_BELOW {
            return ms as u16;
        }
        let doubling = 63 - u64::from(ms.leading_zeros());
        let sub = (ms >> (doubling - 3)) & (SUB_BUCKETS - 1);
        ((doubling - 3) * SUB_BUCKETS + sub + EXACT_BELOW) as u16
    }

    /// The largest value in `bucket`.
    fn upper_bound(bucket: u16) -> u64 {
        let bucket = u64::from(bucket);
        if bucket < EXACT_BELOW {
            return bucket;
        }
        let doubling = (bucket - EXACT_BELOW) / SUB_BUCKETS + 3;
        let sub = (bucket - EXACT_BELOW) % SUB_BUCKETS;
        let next = u128::from(SUB_BUCKETS + sub + 1) << (doubling - 3);
        u64::try_from(next - 1).unwrap_or(u64::MAX)
    }

    fn record(&mut self, ms: u64) {
        *self.counts.entry(Self::bucket_of(ms)).or_insert(0) += 1;
    }

    fn forget(&mut self, ms: u64) {
        let bucket = Self::bucket_of(ms);
        if let Some(count) = self.counts.get_mut(&bucket) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&bucket);
            }
        }
    }

    /// The nearest-rank `percent`ile, as its bucket's upper bound.
    pub fn percentile(&self, percent: u64) -> Option<u64> {
        let total: u64 = self.counts.values().sum();
        let rank = (percent * total).div_ceil(100).max(1);
        let mut seen = 0;
        self.counts.iter().find_map(|(bucket, count)| {
            seen += count;
            (seen >= rank).then(|| Self::upper_bound(*bucket))
        })
    }
}

/// One owner's and dataset's correction figures so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionTally {
    by_stage: BTreeMap<CorrectionStage, u64>,
    applied: u64,
    rejected: u64,
    turnarounds: TurnaroundHistogram,
}

/// What one track adds to its group's tally.
struct Contribution {
    stage: CorrectionStage,
    turnaround_ms: Option<u64>,
    rejected: bool,
}

impl Contribution {
    fn of(track: &CorrectionTrack) -> Self {
        let submitted = track.reached_at(CorrectionStage::Submitted);
        let applied = track.reached_at(CorrectionStage::Applied);
        Contribution {
            stage: track.stage(),
            turnaround_ms: submitted
                .zip(applied)
                .map(|(submitted, applied)| applied.saturating_sub(submitted)),
            rejected: track.decision() == Some(CorrectionStage::Rejected),
        }
    }
}

impl CorrectionTally {
    /// Counts `track` as it is now.
    pub fn add(&mut self, track: &CorrectionTrack) {
        let contribution = Contribution::of(track);
        *self.by_stage.entry(contribution.stage).or_insert(0) += 1;
        if let Some(ms) = contribution.turnaround_ms {
            self.applied += 1;
            self.turnarounds.record(ms);
        }
        self.rejected += u64::from(contribution.rejected);
    }

    /// Stops counting `track` as it is now (before it changes).
    pub fn remove(&mut self, track: &CorrectionTrack) {
        let contribution = Contribution::of(track);
        if let Some(count) = self.by_stage.get_mut(&contribution.stage) {
            *count -= 1;
            if *count == 0 {
                self.by_stage.remove(&contribution.stage);
            }
        }
        if let Some(ms) = contribution.turnaround_ms {
            self.applied -= 1;
            self.turnarounds.forget(ms);
        }
        self.rejected -= u64::from(contribution.rejected);
    }

    /// The statistics `civmesh correction stats` reports for this group.
    pub fn stats(&self, owner: &OrgId, dataset: &DatasetId) -> CorrectionStats {
        let decided = self.applied + self.rejected;
        CorrectionStats {
            owner: owner.to_string(),
            dataset: dataset.clone(),
            by_stage: self.by_stage.clone(),
            turnaround_ms_p50: self.turnarounds.percentile(50),
            turnaround_ms_p90: self.turnarounds.percentile(90),
            acceptance_rate: (decided > 0).then(|| self.applied as f64 / decided as f64),
        }
    }
}

/// The statistics of every owner and dataset with corrections, from the
/// tallies the state keeps.
pub fn correction_stats(tallies: &BTreeMap<(OrgId, DatasetId), CorrectionTally>) -> Vec<CorrectionStats> {
    tallies.iter().map(|((owner, dataset), tally)| tally.stats(owner, dataset)).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_are_exact_below_eight_and_an_eighth_wide_above() {
        for ms in 0..8u64 {
            assert_eq!(TurnaroundHistogram::upper_bound(TurnaroundHistogram::bucket_of(ms)), ms);
        }
        let cases = [(8, 8), (15, 15), (16, 17), (100, 103), (200, 207), (300, 319), (3_600_000, 3_670_015)];
        for (ms, upper) in cases {
            assert_eq!(TurnaroundHistogram::upper_bound(TurnaroundHistogram::bucket_of(ms)), upper, "{ms}");
        }
        assert!(TurnaroundHistogram::bucket_of(u64::MAX) < u16::MAX);
    }

    proptest! {
        /// A value lies in its bucket, whose upper bound is at most 1/8
        /// above it; buckets grow with values.
        #[test]
        fn a_bucket_holds_its_values_within_an_eighth(ms in any::<u64>(), other in any::<u64>()) {
            let upper = TurnaroundHistogram::upper_bound(TurnaroundHistogram::bucket_of(ms));
            prop_assert!(upper >= ms);
            prop_assert!(upper - ms <= ms / 8);
            if ms <= other {
                prop_assert!(TurnaroundHistogram::bucket_of(ms) <= TurnaroundHistogram::bucket_of(other));
            }
        }

        /// Percentiles are the exact nearest-rank ones, rounded up to their
        /// bucket; forgetting a value undoes recording it.
        #[test]
        fn percentiles_round_the_exact_ones_up(values in prop::collection::vec(0u64..10_000_000, 1..200)) {
            let mut histogram = TurnaroundHistogram::default();
            values.iter().for_each(|ms| histogram.record(*ms));
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for percent in [50, 90] {
                let exact = crate::correction::percentile(&sorted, percent as usize).unwrap();
                let bucketed = histogram.percentile(percent).unwrap();
                prop_assert_eq!(
                    bucketed,
                    TurnaroundHistogram::upper_bound(TurnaroundHistogram::bucket_of(exact))
                );
            }
            let before = histogram.clone();
            histogram.record(42);
            histogram.forget(42);
            prop_assert_eq!(histogram, before);
        }
    }
}
