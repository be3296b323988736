//! The evaluation of departments: how each owner serves the streets that
//! correct its data and ask for it, per dataset and per time bucket,
//! computed from the policy state alone so every replica (and an auditor
//! replaying a bundle) gets the same figures.
//!
//! Times are the log's entry times. Buckets are calendar days, ISO weeks
//! (Monday first) or months in Asia/Shanghai (UTC+8, no daylight saving).
//! A correction counts in the bucket where its stage was reached:
//! submissions where they were submitted, outcomes where they were decided;
//! backlogs and waiting demands are measured at the bucket's end.
//!
//! Data freshness is the age of the record a correction touched: from when
//! the owner wrote the record version the correction was checked against
//! (the owner logs that time with its decision) to the decision, for every
//! correction decided in the bucket whose record was known.
//!
//! Fairness rules: the owner's turnaround and acceptance rate count only the
//! corrections its people (or its auto-accept rules) decided: applied or
//! rejected by a reviewer. Automatic rejections for the submitter's own
//! mistakes ([`crate::correction::CorrectionReasonCode::is_submitter_mistake`]) are counted apart, against the
//! submitting street; conflicts are neither.

use civmesh_certs::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::correction::percentile;
use crate::model::DatasetId;
use crate::state::PolicyState;

mod calendar;
mod facts;
mod series;

use calendar::buckets;
pub use calendar::{
    format_date, format_date_end, format_duration, format_percent, format_time, parse_date, parse_date_end,
};
pub use facts::EvaluationFacts;
use facts::{DemandFacts, TrackFacts};
pub use series::{
    into_series, recent_weeks, rows_by_bucket, week_start, whole_weeks, DepartmentSeries, StreetSeries,
    WEEK_MS,
};

/// One day.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// The most time buckets one evaluation computes.
pub const EVALUATION_BUCKETS_MAX: usize = 1_000;
/// The length of a time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// A calendar day.
    #[default]
    Day,
    /// An ISO week, Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
}

impl std::str::FromStr for Bucket {
    type Err = EvaluationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "day" => Ok(Bucket::Day),
            "week" => Ok(Bucket::Week),
            "month" => Ok(Bucket::Month),
            other => Err(EvaluationError::BucketUnknown(other.to_string())),
        }
    }
}

/// Why an evaluation could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// A date is not `YYYY-MM-DD` (or is before 1970).
    #[error("{0:?} is not a date: use YYYY-MM-DD (Asia/Shanghai)")]
    DateInvalid(String),
    /// The bucket is not day, week or month.
    #[error("bucket {0:?} is not one of day, week, month")]
    BucketUnknown(String),
    /// The period ends before it starts.
    #[error("the period ends ({to}) before it starts ({from})")]
    RangeEmpty {
        /// The start, ISO 8601.
        from: String,
        /// The end, ISO 8601.
        to: String,
    },
    /// The period holds too many buckets.
    #[error("the period has {0} buckets, at most {EVALUATION_BUCKETS_MAX}: use a longer bucket or a shorter period")]
    TooManyBuckets(usize),
}

/// What to evaluate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvaluationQuery {
    /// The start (inclusive); `None`: the first event in the log.
    pub from_ms: Option<UnixMillis>,
    /// The end (exclusive); `None`: just after the last event in the log.
    pub to_ms: Option<UnixMillis>,
    /// The bucket length.
    pub bucket: Bucket,
}

impl EvaluationQuery {
    /// From dates as people write them: `from` and `to` are `YYYY-MM-DD`
    /// in Asia/Shanghai, both days included.
    pub fn from_dates(
        from: Option<&str>,
        to: Option<&str>,
        bucket: Option<&str>,
    ) -> Result<Self, EvaluationError> {
        let from_ms = from.map(parse_date).transpose()?;
        let to_ms = to.map(|to| parse_date(to).map(|start| start + DAY_MS as u64)).transpose()?;
        let bucket = bucket.map(str::parse).transpose()?.unwrap_or_default();
        if let (Some(from_ms), Some(to_ms)) = (from_ms, to_ms) {
            if to_ms <= from_ms {
                return Err(EvaluationError::RangeEmpty {
                    from: format_time(from_ms),
                    to: format_time(to_ms),
                });
            }
        }
        Ok(EvaluationQuery { from_ms, to_ms, bucket })
    }
}

/// One owner's figures for one dataset in one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DepartmentRow {
    /// The bucket's first day (YYYY-MM-DD, Asia/Shanghai).
    pub bucket: String,
    /// The owning organisation, by name.
    pub owner: String,
    /// The dataset.
    pub dataset: DatasetId,
    /// Corrections submitted in the bucket.
    pub submitted: u64,
    /// Corrections applied in the bucket.
    pub applied: u64,
    /// Corrections the owner's reviewers rejected in the bucket.
    pub rejected_by_owner: u64,
    /// Applied out of applied and rejected by the owner; `None` with neither.
    pub acceptance_rate: Option<f64>,
    /// Median, submission to final outcome (applied or rejected by the
    /// owner), of the outcomes in the bucket, in ms.
    pub turnaround_ms_p50: Option<u64>,
    /// 90th percentile of the same, in ms.
    pub turnaround_ms_p90: Option<u64>,
    /// Automatic rejections for the submitter's own mistakes (not the owner's).
    pub automatic_rejections: u64,
    /// Conflicts (the record changed after the base version).
    pub conflicts: u64,
    /// Corrections delivered and awaiting review at the bucket's end.
    pub backlog: u64,
    /// The oldest of those, from delivery to the bucket's end, in ms.
    pub backlog_oldest_age_ms: Option<u64>,
    /// Demands on the dataset first granted in the bucket.
    pub demands_granted: u64,
    /// Median, demand filed to first grant answering it, in ms.
    pub demand_to_grant_ms_p50: Option<u64>,
    /// 90th percentile of the same, in ms.
    pub demand_to_grant_ms_p90: Option<u64>,
    /// Demands filed and not yet granted at the bucket's end.
    pub demands_waiting: u64,
    /// The oldest of those, from filing to the bucket's end, in ms.
    pub demands_waiting_oldest_age_ms: Option<u64>,
    /// Data freshness: median, over corrections decided in the bucket
    /// (applied, rejected or in conflict) whose record was known, of the
    /// record's age at the decision (decision time minus when the version
    /// checked was written), in ms.
    pub record_age_ms_p50: Option<u64>,
    /// 90th percentile of the same, in ms.
    pub record_age_ms_p90: Option<u64>,
}

/// One street's (any submitting organisation's) figures in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreetRow {
    /// The bucket's first day (YYYY-MM-DD, Asia/Shanghai).
    pub bucket: String,
    /// The submitting organisation, by name.
    pub street: String,
    /// Corrections submitted in the bucket.
    pub submitted: u64,
    /// Of its corrections decided in the bucket (applied, rejected by the
    /// owner, or rejected for its own mistakes): the share applied.
    pub share_accepted: Option<f64>,
    /// Applied in the bucket.
    pub applied: u64,
    /// Automatic rejections for its own mistakes in the bucket.
    pub mistakes: u64,
}

/// The evaluation of every department with activity in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The period's start (ISO 8601, Asia/Shanghai).
    pub from: String,
    /// The period's end, exclusive (ISO 8601, Asia/Shanghai); backlogs in
    /// the last bucket are measured here.
    pub to: String,
    /// The bucket length.
    pub bucket: Bucket,
    /// Per bucket, owner and dataset.
    pub departments: Vec<DepartmentRow>,
    /// Per bucket and street.
    pub streets: Vec<StreetRow>,
    /// Per holder node of received copies: its deletion receipts and the
    /// deletions overdue, as of the log's latest entry (the log keeps no
    /// history of overdue periods, so these are not per bucket).
    #[serde(default)]
    pub deletions: Vec<crate::audit::HolderDeletions>,
    /// What the log cannot tell (empty when it tells everything).
    pub notes: Vec<String>,
}

/// Computes the evaluation from `state` (pure: time comes only from the
/// log's entry times and the query). The same as
/// `EvaluationFacts::of(state).evaluate(query)`.
pub fn evaluate(state: &PolicyState, query: &EvaluationQuery) -> Result<Evaluation, EvaluationError> {
    EvaluationFacts::of(state).evaluate(query)
}

impl EvaluationFacts {
    /// Computes the evaluation from these facts (pure: time comes only from
    /// the log's entry times and the query).
    pub fn evaluate(&self, query: &EvaluationQuery) -> Result<Evaluation, EvaluationError> {
        let (from_ms, to_ms) = self.period(query)?;
        let buckets = buckets(from_ms, to_ms, query.bucket)?;
        let mut departments = Vec::with_capacity(buckets.len() * self.groups.len());
        let mut streets = Vec::with_capacity(buckets.len() * self.streets.len());
        for &(start, end) in &buckets {
            let window = Window { label: format_date(start), start, end };
            for ((owner, dataset), group) in &self.groups {
                let mut row = DepartmentRow {
                    bucket: window.label.clone(),
                    owner: owner.clone(),
                    dataset: dataset.clone(),
                    ..DepartmentRow::default()
                };
                count_corrections(&mut row, &group.tracks, &window);
                count_demands(&mut row, &group.demands, &window);
                departments.push(row);
            }
            for (street, tracks) in &self.streets {
                streets.push(street_row(street, tracks, &window));
            }
        }
        Ok(Evaluation {
            from: format_time(from_ms),
            to: format_time(to_ms),
            bucket: query.bucket,
            departments,
            streets,
            deletions: self.deletions.clone(),
            notes: Vec::new(),
        })
    }

    /// The period asked for, or else from the log's first event to just
    /// after its last.
    fn period(&self, query: &EvaluationQuery) -> Result<(UnixMillis, UnixMillis), EvaluationError> {
        let from_ms = query.from_ms.or(self.span.map(|(first, _)| first)).unwrap_or(0);
        let to_ms = query.to_ms.or(self.span.map(|(_, last)| last + 1)).unwrap_or(from_ms);
        if to_ms < from_ms || (to_ms == from_ms && query.to_ms.is_some()) {
            return Err(EvaluationError::RangeEmpty { from: format_time(from_ms), to: format_time(to_ms) });
        }
        Ok((from_ms, to_ms))
    }
}

/// One bucket: its label and `[start, end)`.
struct Window {
    label: String,
    start: UnixMillis,
    end: UnixMillis,
}

impl Window {
    fn holds(&self, at: UnixMillis) -> bool {
        self.start <= at && at < self.end
    }
}

/// The owner's correction figures in the bucket.
fn count_corrections(row: &mut DepartmentRow, tracks: &[TrackFacts], window: &Window) {
    let mut turnarounds = Vec::new();
    let mut record_ages = Vec::new();
    let mut oldest_delivery: Option<UnixMillis> = None;
    for track in tracks {
        let submitted = track.submitted;
        if submitted.is_some_and(|at| window.holds(at)) {
            row.submitted += 1;
        }
        let outcome = track.outcome.filter(|(_, at)| window.holds(*at));
        if let (Some((_, decided)), Some(written)) = (outcome, track.record_written_at_ms) {
            record_ages.push(decided.saturating_sub(written));
        }
        match outcome {
            Some((Outcome::Applied, at)) => {
                row.applied += 1;
                turnarounds.extend(submitted.map(|submitted| at.saturating_sub(submitted)));
            }
            Some((Outcome::RejectedByOwner, at)) => {
                row.rejected_by_owner += 1;
                turnarounds.extend(submitted.map(|submitted| at.saturating_sub(submitted)));
            }
            Some((Outcome::Mistake, _)) => row.automatic_rejections += 1,
            Some((Outcome::Conflict, _)) => row.conflicts += 1,
            None => {}
        }
        if let Some(delivered) = track.awaiting_review_at(window.end) {
            row.backlog += 1;
            oldest_delivery = Some(oldest_delivery.map_or(delivered, |oldest| oldest.min(delivered)));
        }
    }
    (row.turnaround_ms_p50, row.turnaround_ms_p90) = p50_p90(turnarounds);
    (row.record_age_ms_p50, row.record_age_ms_p90) = p50_p90(record_ages);
    row.acceptance_rate = ratio(row.applied, row.applied + row.rejected_by_owner);
    row.backlog_oldest_age_ms = oldest_delivery.map(|delivered| window.end - delivered);
}

/// The owner's demand figures in the bucket.
fn count_demands(row: &mut DepartmentRow, demands: &[DemandFacts], window: &Window) {
    let mut waits = Vec::new();
    let mut oldest_waiting: Option<UnixMillis> = None;
    for demand in demands {
        let granted = demand.granted_at_ms;
        if let Some(granted) = granted.filter(|granted| window.holds(*granted)) {
            row.demands_granted += 1;
            waits.push(granted.saturating_sub(demand.filed_at_ms));
        }
        if demand.filed_at_ms < window.end && granted.is_none_or(|granted| granted >= window.end) {
            row.demands_waiting += 1;
            oldest_waiting =
                Some(oldest_waiting.map_or(demand.filed_at_ms, |oldest| oldest.min(demand.filed_at_ms)));
        }
    }
    (row.demand_to_grant_ms_p50, row.demand_to_grant_ms_p90) = p50_p90(waits);
    row.demands_waiting_oldest_age_ms = oldest_waiting.map(|filed| window.end - filed);
}

/// One street's figures in the bucket.
fn street_row(street: &str, tracks: &[TrackFacts], window: &Window) -> StreetRow {
    let (mut submitted, mut applied, mut decided, mut mistakes) = (0, 0, 0, 0);
    for track in tracks {
        if track.submitted.is_some_and(|at| window.holds(at)) {
            submitted += 1;
        }
        match track.outcome.filter(|(_, at)| window.holds(*at)) {
            Some((Outcome::Applied, _)) => {
                applied += 1;
                decided += 1;
            }
            Some((Outcome::RejectedByOwner, _)) => decided += 1,
            Some((Outcome::Mistake, _)) => {
                mistakes += 1;
                decided += 1;
            }
            _ => {}
        }
    }
    StreetRow {
        bucket: window.label.clone(),
        street: street.to_string(),
        submitted,
        share_accepted: ratio(applied, decided),
        applied,
        mistakes,
    }
}

/// The nearest-rank median and 90th percentile.
fn p50_p90(mut values: Vec<u64>) -> (Option<u64>, Option<u64>) {
    values.sort_unstable();
    (percentile(&values, 50), percentile(&values, 90))
}

/// A correction's final outcome, as the evaluation counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    RejectedByOwner,
    Mistake,
    Conflict,
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
#[allow(clippy::too_many_lines)]
mod tests;
