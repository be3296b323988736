//! Where a commit's time goes: each stage's count and total microseconds,
//! kept since start in atomics (no history), read by `/metrics` and the
//! policy-log benchmark's breakdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A stage of a commit, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `PolicyLog::submit`, whole: from the call to the outcome.
    Submit,
    /// The leader waiting for a free signature verifier (back-pressure).
    VerifyWait,
    /// The leader stamping the entry and handing it to Raft.
    Propose,
    /// From the hand-off to the answer: replication, every sync, commit
    /// and the leader's apply.
    Commit,
    /// This node writing and syncing log entries.
    LogAppend,
    /// This node applying committed entries, verdicts included.
    Apply,
    /// Within apply: waiting for verdicts reached on arrival and verifying
    /// what had none.
    ApplyVerify,
}

impl Stage {
    /// Every stage, in the order a commit passes them.
    pub const ALL: [Stage; 7] = [
        Stage::Submit,
        Stage::VerifyWait,
        Stage::Propose,
        Stage::Commit,
        Stage::LogAppend,
        Stage::Apply,
        Stage::ApplyVerify,
    ];

    /// Its stable snake_case name (a metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Submit => "submit",
            Stage::VerifyWait => "verify_wait",
            Stage::Propose => "propose",
            Stage::Commit => "commit",
            Stage::LogAppend => "log_append",
            Stage::Apply => "apply",
            Stage::ApplyVerify => "apply_verify",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One stage's totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTotal {
    /// Times the stage was passed.
    pub count: u64,
    /// Microseconds spent in it, all passes together.
    pub micros: u64,
}

/// Every stage's totals since start.
#[derive(Debug, Default)]
pub struct StageTimes {
    counts: [AtomicU64; Stage::ALL.len()],
    micros: [AtomicU64; Stage::ALL.len()],
}

impl StageTimes {
    /// Counts one pass of `stage` that took `elapsed`.
    pub fn record(&self, stage: Stage, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.counts[stage.index()].fetch_add(1, Ordering::Relaxed);
        self.micros[stage.index()].fetch_add(micros, Ordering::Relaxed);
    }

    /// Each stage with its totals.
    pub fn read(&self) -> Vec<(Stage, StageTotal)> {
        Stage::ALL
            .iter()
            .map(|stage| {
                let total = StageTotal {
                    count: self.counts[stage.index()].load(Ordering::Relaxed),
                    micros: self.micros[stage.index()].load(Ordering::Relaxed),
                };
                (*stage, total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_counts_its_own_passes() {
        let times = StageTimes::default();
        times.record(Stage::Commit, Duration::from_micros(300));
        times.record(Stage::Commit, Duration::from_micros(200));
        times.record(Stage::Apply, Duration::from_micros(7));
        let read = times.read();
        assert_eq!(read.len(), Stage::ALL.len());
        for (stage, total) in read {
            let expected = match stage {
                Stage::Commit => StageTotal { count: 2, micros: 500 },
                Stage::Apply => StageTotal { count: 1, micros: 7 },
                _ => StageTotal::default(),
            };
            assert_eq!(total, expected, "{}", stage.name());
        }
        let names: std::collections::BTreeSet<_> = Stage::ALL.iter().map(|stage| stage.name()).collect();
        assert_eq!(names.len(), Stage::ALL.len(), "names are distinct");
    }
}
