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
//! mistakes ([`CorrectionReasonCode::is_submitter_mistake`]) are counted apart, against the
//! submitting street; conflicts are neither.

use std::collections::BTreeMap;

use civmesh_certs::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::correction::{percentile, CorrectionReasonCode, CorrectionStage, CorrectionTrack};
use crate::model::{DatasetId, Demand, DemandId};
use crate::state::PolicyState;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// What the log cannot tell (empty when it tells everything).
    pub notes: Vec<String>,
}

/// Computes the evaluation from `state` (pure: time comes only from the
/// log's entry times and the query).
pub fn evaluate(state: &PolicyState, query: &EvaluationQuery) -> Result<Evaluation, EvaluationError> {
    let events: Vec<UnixMillis> = state
        .corrections
        .values()
        .flat_map(|track| track.stages.iter().map(|(_, at)| *at))
        .chain(state.demands.values().map(|demand| demand.filed_at_ms))
        .chain(state.grants.values().map(|grant| grant.issued_at_ms))
        .collect();
    let from_ms = query.from_ms.or_else(|| events.iter().min().copied()).unwrap_or(0);
    let to_ms = query.to_ms.or_else(|| events.iter().max().map(|last| last + 1)).unwrap_or(from_ms);
    if to_ms < from_ms || (to_ms == from_ms && query.to_ms.is_some()) {
        return Err(EvaluationError::RangeEmpty { from: format_time(from_ms), to: format_time(to_ms) });
    }
    let buckets = buckets(from_ms, to_ms, query.bucket)?;

    // The first grant answering each demand.
    let mut granted_at: BTreeMap<DemandId, UnixMillis> = BTreeMap::new();
    for grant in state.grants.values() {
        if let Some(demand) = grant.demand {
            let at = granted_at.entry(demand).or_insert(grant.issued_at_ms);
            *at = (*at).min(grant.issued_at_ms);
        }
    }
    // Each group's corrections and demands, and each street's corrections.
    let mut groups: BTreeMap<(String, DatasetId), Group> = BTreeMap::new();
    let mut streets: BTreeMap<String, Vec<&CorrectionTrack>> = BTreeMap::new();
    for track in state.corrections.values() {
        groups.entry((track.owner.to_string(), track.dataset.clone())).or_default().0.push(track);
        streets.entry(track.submitter_org.to_string()).or_default().push(track);
    }
    for demand in state.demands.values() {
        if let Some(dataset) = state.datasets.get(&demand.dataset) {
            groups.entry((dataset.owner.to_string(), dataset.id.clone())).or_default().1.push(demand);
        }
    }

    let mut departments = Vec::new();
    let mut street_rows = Vec::new();
    for &(start, end) in &buckets {
        let label = format_date(start);
        let within = |at: UnixMillis| start <= at && at < end;
        for ((owner, dataset), (tracks, demands)) in &groups {
            let mut row = DepartmentRow {
                bucket: label.clone(),
                owner: owner.clone(),
                dataset: dataset.clone(),
                submitted: 0,
                applied: 0,
                rejected_by_owner: 0,
                acceptance_rate: None,
                turnaround_ms_p50: None,
                turnaround_ms_p90: None,
                automatic_rejections: 0,
                conflicts: 0,
                backlog: 0,
                backlog_oldest_age_ms: None,
                demands_granted: 0,
                demand_to_grant_ms_p50: None,
                demand_to_grant_ms_p90: None,
                demands_waiting: 0,
                demands_waiting_oldest_age_ms: None,
                record_age_ms_p50: None,
                record_age_ms_p90: None,
            };
            let mut turnarounds = Vec::new();
            let mut record_ages = Vec::new();
            let mut oldest_delivery: Option<UnixMillis> = None;
            for track in tracks {
                let submitted = track.reached_at(CorrectionStage::Submitted);
                if submitted.is_some_and(within) {
                    row.submitted += 1;
                }
                if let (Some((_, decided)), Some(written)) = (outcome_of(track), track.record_written_at_ms) {
                    if within(decided) {
                        record_ages.push(decided.saturating_sub(written));
                    }
                }
                match outcome_of(track) {
                    Some((Outcome::Applied, at)) if within(at) => {
                        row.applied += 1;
                        turnarounds.extend(submitted.map(|submitted| at.saturating_sub(submitted)));
                    }
                    Some((Outcome::RejectedByOwner, at)) if within(at) => {
                        row.rejected_by_owner += 1;
                        turnarounds.extend(submitted.map(|submitted| at.saturating_sub(submitted)));
                    }
                    Some((Outcome::Mistake, at)) if within(at) => row.automatic_rejections += 1,
                    Some((Outcome::Conflict, at)) if within(at) => row.conflicts += 1,
                    _ => {}
                }
                if let Some(delivered) = awaiting_review_at(track, end) {
                    row.backlog += 1;
                    oldest_delivery = Some(oldest_delivery.map_or(delivered, |oldest| oldest.min(delivered)));
                }
            }
            turnarounds.sort_unstable();
            row.turnaround_ms_p50 = percentile(&turnarounds, 50);
            row.turnaround_ms_p90 = percentile(&turnarounds, 90);
            record_ages.sort_unstable();
            row.record_age_ms_p50 = percentile(&record_ages, 50);
            row.record_age_ms_p90 = percentile(&record_ages, 90);
            row.acceptance_rate = ratio(row.applied, row.applied + row.rejected_by_owner);
            row.backlog_oldest_age_ms = oldest_delivery.map(|delivered| end - delivered);

            let mut waits = Vec::new();
            let mut oldest_waiting: Option<UnixMillis> = None;
            for demand in demands {
                let granted = granted_at.get(&demand.id).copied();
                if let Some(granted) = granted.filter(|granted| within(*granted)) {
                    row.demands_granted += 1;
                    waits.push(granted.saturating_sub(demand.filed_at_ms));
                }
                if demand.filed_at_ms < end && granted.is_none_or(|granted| granted >= end) {
                    row.demands_waiting += 1;
                    oldest_waiting = Some(
                        oldest_waiting.map_or(demand.filed_at_ms, |oldest| oldest.min(demand.filed_at_ms)),
                    );
                }
            }
            waits.sort_unstable();
            row.demand_to_grant_ms_p50 = percentile(&waits, 50);
            row.demand_to_grant_ms_p90 = percentile(&waits, 90);
            row.demands_waiting_oldest_age_ms = oldest_waiting.map(|filed| end - filed);
            departments.push(row);
        }
        for (street, tracks) in &streets {
            let (mut submitted, mut applied, mut decided, mut mistakes) = (0, 0, 0, 0);
            for track in tracks {
                if track.reached_at(CorrectionStage::Submitted).is_some_and(within) {
                    submitted += 1;
                }
                match outcome_of(track) {
                    Some((Outcome::Applied, at)) if within(at) => {
                        applied += 1;
                        decided += 1;
                    }
                    Some((Outcome::RejectedByOwner, at)) if within(at) => decided += 1,
                    Some((Outcome::Mistake, at)) if within(at) => {
                        mistakes += 1;
                        decided += 1;
                    }
                    _ => {}
                }
            }
            street_rows.push(StreetRow {
                bucket: label.clone(),
                street: street.clone(),
                submitted,
                share_accepted: ratio(applied, decided),
                applied,
                mistakes,
            });
        }
    }
    Ok(Evaluation {
        from: format_time(from_ms),
        to: format_time(to_ms),
        bucket: query.bucket,
        departments,
        streets: street_rows,
        notes: Vec::new(),
    })
}

/// One owner's and dataset's corrections and demands.
type Group<'a> = (Vec<&'a CorrectionTrack>, Vec<&'a Demand>);

/// A correction's final outcome, as the evaluation counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    RejectedByOwner,
    Mistake,
    Conflict,
}

/// The final outcome of a correction and when it was reached.
fn outcome_of(track: &CorrectionTrack) -> Option<(Outcome, UnixMillis)> {
    let decision = track.decision()?;
    let at = track.reached_at(decision)?;
    let outcome = match decision {
        CorrectionStage::Applied => Outcome::Applied,
        CorrectionStage::Rejected
            if track.reason_code.is_some_and(CorrectionReasonCode::is_submitter_mistake) =>
        {
            Outcome::Mistake
        }
        CorrectionStage::Rejected => Outcome::RejectedByOwner,
        _ => Outcome::Conflict,
    };
    Some((outcome, at))
}

/// When the correction was delivered, if at `at` it was delivered and not
/// yet decided (accepted, rejected or in conflict).
fn awaiting_review_at(track: &CorrectionTrack, at: UnixMillis) -> Option<UnixMillis> {
    let delivered = track.reached_at(CorrectionStage::Delivered).filter(|delivered| *delivered < at)?;
    let decided = track.stages.iter().any(|(stage, reached)| {
        matches!(stage, CorrectionStage::Accepted | CorrectionStage::Rejected | CorrectionStage::Conflict)
            && *reached < at
    });
    (!decided).then_some(delivered)
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The buckets covering `[from_ms, to_ms)`, each clipped to it.
fn buckets(
    from_ms: UnixMillis,
    to_ms: UnixMillis,
    bucket: Bucket,
) -> Result<Vec<(UnixMillis, UnixMillis)>, EvaluationError> {
    let mut all = Vec::new();
    let mut start = from_ms;
    while start < to_ms {
        if all.len() == EVALUATION_BUCKETS_MAX {
            let rest = (to_ms - start).div_ceil(DAY_MS as u64) as usize;
            return Err(EvaluationError::TooManyBuckets(all.len() + rest.max(1)));
        }
        let end = next_bucket_start(start, bucket).min(to_ms);
        all.push((start, end));
        start = end;
    }
    Ok(all)
}

/// A calendar day, `YYYY-MM-DD`.
const DATE_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");
/// An instant with its offset, ISO 8601 to the second.
const TIME_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);
/// Asia/Shanghai's offset, as `time` names it.
const SHANGHAI: time::UtcOffset = time::macros::offset!(+8);

/// `at_ms` in Asia/Shanghai.
fn in_shanghai(at_ms: UnixMillis) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(SHANGHAI)
}

/// Midnight at the start of `date` in Asia/Shanghai (0 before the epoch).
fn midnight_ms(date: time::Date) -> UnixMillis {
    let nanos = date.midnight().assume_offset(SHANGHAI).unix_timestamp_nanos();
    UnixMillis::try_from(nanos / 1_000_000).unwrap_or(0)
}

/// The start of the bucket after the one holding `at_ms`.
fn next_bucket_start(at_ms: UnixMillis, bucket: Bucket) -> UnixMillis {
    let day = in_shanghai(at_ms).date();
    let next = match bucket {
        Bucket::Day => day.next_day(),
        Bucket::Week => {
            day.checked_add(time::Duration::days(7 - i64::from(day.weekday().number_days_from_monday())))
        }
        Bucket::Month => match day.month() {
            time::Month::December => {
                time::Date::from_calendar_date(day.year() + 1, time::Month::January, 1).ok()
            }
            month => time::Date::from_calendar_date(day.year(), month.next(), 1).ok(),
        },
    };
    next.map_or(UnixMillis::MAX, midnight_ms)
}

/// Midnight at the start of a `YYYY-MM-DD` day in Asia/Shanghai.
pub fn parse_date(text: &str) -> Result<UnixMillis, EvaluationError> {
    let invalid = || EvaluationError::DateInvalid(text.to_string());
    let date = time::Date::parse(text, DATE_FORMAT).map_err(|_| invalid())?;
    let nanos = date.midnight().assume_offset(SHANGHAI).unix_timestamp_nanos();
    UnixMillis::try_from(nanos / 1_000_000).map_err(|_| invalid())
}

/// The day of `at_ms` in Asia/Shanghai, `YYYY-MM-DD`.
pub fn format_date(at_ms: UnixMillis) -> String {
    in_shanghai(at_ms).date().format(DATE_FORMAT).unwrap_or_default()
}

/// `at_ms` as ISO 8601 in Asia/Shanghai, e.g. `2026-11-30T09:00:00+08:00`.
pub fn format_time(at_ms: UnixMillis) -> String {
    in_shanghai(at_ms).format(TIME_FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dataset, Grant, LegalBasis, SharingCategory, SubjectKeyHash};
    use civmesh_certs::{NodeId, OrgId};
    use std::collections::BTreeSet;
    use CorrectionStage::*;

    const HOUR_MS: u64 = 60 * 60 * 1000;
    /// Monday 2026-11-30 00:00 in Asia/Shanghai.
    const MONDAY_MS: u64 = 1_795_968_000_000;
    const OWNER: &str = "dept/market-supervision";
    const DATASET: &str = "market-supervision/enterprise-registry";

    fn at(day: u64, hour: u64) -> UnixMillis {
        MONDAY_MS + day * 24 * HOUR_MS + hour * HOUR_MS
    }

    fn track(street: &str, stages: &[(CorrectionStage, UnixMillis)], reason_code: &str) -> CorrectionTrack {
        CorrectionTrack {
            dataset: DATASET.into(),
            owner: OrgId::new(OWNER).unwrap(),
            submitter_org: OrgId::new(street).unwrap(),
            submitter: NodeId([1; 32]),
            subject: SubjectKeyHash([0; 32]),
            fields: BTreeSet::new(),
            stages: stages.to_vec(),
            reason_code: (!reason_code.is_empty()).then(|| reason_code.parse().unwrap()),
            applied_version: None,
            record_written_at_ms: None,
        }
    }

    /// The scripted week: nine corrections, three demands (Mon = day 0).
    fn scripted_week() -> PolicyState {
        let (jingansi, nanjingxilu) = ("street/jingansi", "street/nanjingxilu");
        let tracks = [
            // c1: applied after 2 h.
            track(
                jingansi,
                &[(Submitted, at(0, 9)), (Delivered, at(0, 9)), (Accepted, at(0, 11)), (Applied, at(0, 11))],
                "",
            ),
            // c2: rejected by the reviewer after 24 h.
            track(
                jingansi,
                &[(Submitted, at(0, 10)), (Delivered, at(0, 10)), (Rejected, at(1, 10))],
                "rejected_by_reviewer",
            ),
            // c3: the street's own mistake, rejected at once.
            track(
                nanjingxilu,
                &[(Submitted, at(1, 9)), (Delivered, at(1, 9)), (Rejected, at(1, 9))],
                "field_unknown",
            ),
            // c4: applied after 48 h.
            track(
                nanjingxilu,
                &[
                    (Submitted, at(1, 14)),
                    (Delivered, at(1, 14)),
                    (Accepted, at(3, 14)),
                    (Applied, at(3, 14)),
                ],
                "",
            ),
            // c5: the street's own mistake.
            track(
                jingansi,
                &[(Submitted, at(2, 8)), (Delivered, at(2, 8)), (Rejected, at(2, 8))],
                "wrong_type",
            ),
            // c6: a conflict.
            track(jingansi, &[(Submitted, at(3, 9)), (Delivered, at(3, 9)), (Conflict, at(3, 12))], ""),
            // c7: applied after 6 h, outcome delivered later.
            track(
                nanjingxilu,
                &[
                    (Submitted, at(4, 9)),
                    (Delivered, at(4, 9)),
                    (Accepted, at(4, 15)),
                    (Applied, at(4, 15)),
                    (OutcomeDelivered, at(4, 16)),
                ],
                "",
            ),
            // c8: awaiting review since Saturday 10:00.
            track(jingansi, &[(Submitted, at(5, 10)), (Delivered, at(5, 10))], ""),
            // c9: submitted Sunday night, not delivered yet.
            track(nanjingxilu, &[(Submitted, at(6, 20))], ""),
        ];
        let mut state = PolicyState::default();
        for (index, track) in tracks.into_iter().enumerate() {
            state.corrections.insert([index as u8 + 1; 32], track);
        }
        state.datasets.insert(
            DATASET.into(),
            Dataset {
                id: DATASET.into(),
                owner: OrgId::new(OWNER).unwrap(),
                title: "Enterprises".into(),
                subject_key_field: "credit_code".into(),
                sharing: SharingCategory::Conditional,
                fields: Vec::new(),
                version: 1,
            },
        );
        let demand = |id: DemandId, filed_at_ms| Demand {
            id,
            requester: OrgId::new("street/jingansi").unwrap(),
            dataset: DATASET.into(),
            fields: BTreeSet::new(),
            purpose: "street-inspection".into(),
            legal_basis: LegalBasis::StatutoryDuty,
            filed_at_ms,
        };
        let grant = |id, demand, issued_at_ms| Grant {
            id,
            dataset: DATASET.into(),
            grantor: OrgId::new(OWNER).unwrap(),
            grantee: OrgId::new("street/jingansi").unwrap(),
            fields: BTreeSet::new(),
            purpose: "street-inspection".into(),
            legal_basis: LegalBasis::StatutoryDuty,
            scope: Vec::new(),
            valid_from_ms: 0,
            valid_until_ms: u64::MAX,
            masking: BTreeMap::new(),
            consent_required: false,
            demand: Some(demand),
            issued_at_ms,
            revoked: None,
        };
        // d1 granted after 24 h; d2 never; d3 granted after 6 h (and again later).
        for (id, filed) in [(1, at(0, 8)), (2, at(2, 12)), (3, at(3, 0))] {
            state.demands.insert(id, demand(id, filed));
        }
        for (id, demand, issued) in [(1, 1, at(1, 8)), (2, 3, at(3, 6)), (3, 3, at(4, 0))] {
            state.grants.insert(id, grant(id, demand, issued));
        }
        state
    }

    fn week_query(bucket: &str) -> EvaluationQuery {
        EvaluationQuery::from_dates(Some("2026-11-30"), Some("2026-12-06"), Some(bucket)).unwrap()
    }

    #[test]
    fn the_scripted_week_equals_the_hand_computed_figures() {
        let evaluation = evaluate(&scripted_week(), &week_query("week")).unwrap();
        assert_eq!(evaluation.from, "2026-11-30T00:00:00+08:00");
        assert_eq!(evaluation.to, "2026-12-07T00:00:00+08:00");
        let expected = DepartmentRow {
            bucket: "2026-11-30".into(),
            owner: OWNER.into(),
            dataset: DATASET.into(),
            submitted: 9,
            applied: 3,
            rejected_by_owner: 1,
            // 3 of 4: the two automatic rejections do not count against the owner.
            acceptance_rate: Some(0.75),
            // Turnarounds 2, 6, 24, 48 h: nearest-rank p50 is the 2nd, p90 the 4th.
            turnaround_ms_p50: Some(6 * HOUR_MS),
            turnaround_ms_p90: Some(48 * HOUR_MS),
            automatic_rejections: 2,
            conflicts: 1,
            // c8, delivered Saturday 10:00, measured at Monday 00:00.
            backlog: 1,
            backlog_oldest_age_ms: Some(38 * HOUR_MS),
            // d1 after 24 h, d3 after 6 h (its first grant).
            demands_granted: 2,
            demand_to_grant_ms_p50: Some(6 * HOUR_MS),
            demand_to_grant_ms_p90: Some(24 * HOUR_MS),
            // d2, filed Wednesday 12:00.
            demands_waiting: 1,
            demands_waiting_oldest_age_ms: Some(108 * HOUR_MS),
            // No decision in this log carries a record write time.
            record_age_ms_p50: None,
            record_age_ms_p90: None,
        };
        assert_eq!(evaluation.departments, vec![expected]);
        let street = |street: &str, submitted, share_accepted, applied, mistakes| StreetRow {
            bucket: "2026-11-30".into(),
            street: street.into(),
            submitted,
            share_accepted,
            applied,
            mistakes,
        };
        assert_eq!(
            evaluation.streets,
            vec![
                // c1 applied, c2 rejected, c5 a mistake (c6's conflict is neither).
                street("street/jingansi", 5, Some(1.0 / 3.0), 1, 1),
                // c4, c7 applied, c3 a mistake.
                street("street/nanjingxilu", 4, Some(2.0 / 3.0), 2, 1),
            ]
        );
        assert!(evaluation.notes.is_empty(), "{:?}", evaluation.notes);
    }

    #[test]
    fn data_freshness_is_the_age_of_the_records_at_the_decision() {
        // The scripted week, with the write time of the record version the
        // owner checked each decided correction against (c5's is unknown).
        let mut state = scripted_week();
        let written = [
            // c1, applied Mon 11:00, on a record written 10 days before: 240 h.
            (1, at(0, 11) - 240 * HOUR_MS),
            // c2, rejected Tue 10:00, record written Mon 10:00: 24 h.
            (2, at(0, 10)),
            // c3, the street's mistake Tue 09:00, record written Tue 08:00: 1 h.
            (3, at(1, 8)),
            // c4, applied Thu 14:00, record written Mon 14:00: 72 h.
            (4, at(0, 14)),
            // c6, a conflict Thu 12:00 with an import written Thu 11:00: 1 h.
            (6, at(3, 11)),
            // c7, applied Fri 15:00, record written 30 days before: 720 h.
            (7, at(4, 15) - 720 * HOUR_MS),
        ];
        for (correction, written_at_ms) in written {
            let track = state.corrections.get_mut(&[correction; 32]).unwrap();
            track.record_written_at_ms = Some(written_at_ms);
        }
        let ages = |evaluation: &Evaluation| -> Vec<(Option<u64>, Option<u64>)> {
            evaluation.departments.iter().map(|row| (row.record_age_ms_p50, row.record_age_ms_p90)).collect()
        };
        // The week: ages 1, 1, 24, 72, 240, 720 h; nearest rank p50 is the
        // 3rd, p90 the 6th.
        let week = evaluate(&state, &week_query("week")).unwrap();
        assert_eq!(ages(&week), [(Some(24 * HOUR_MS), Some(720 * HOUR_MS))]);
        // Each day its own decisions: Mon c1; Tue c3, c2 (1 h, 24 h); Wed c5
        // (no write time); Thu c6, c4 (1 h, 72 h); Fri c7; none at the weekend.
        let days = evaluate(&state, &week_query("day")).unwrap();
        assert_eq!(
            ages(&days),
            [
                (Some(240 * HOUR_MS), Some(240 * HOUR_MS)),
                (Some(HOUR_MS), Some(24 * HOUR_MS)),
                (None, None),
                (Some(HOUR_MS), Some(72 * HOUR_MS)),
                (Some(720 * HOUR_MS), Some(720 * HOUR_MS)),
                (None, None),
                (None, None),
            ]
        );
    }

    #[test]
    fn daily_buckets_measure_backlog_at_each_day_end() {
        let evaluation = evaluate(&scripted_week(), &week_query("day")).unwrap();
        let days: Vec<&str> = evaluation.departments.iter().map(|row| row.bucket.as_str()).collect();
        assert_eq!(
            days,
            [
                "2026-11-30",
                "2026-12-01",
                "2026-12-02",
                "2026-12-03",
                "2026-12-04",
                "2026-12-05",
                "2026-12-06"
            ]
        );
        let monday = &evaluation.departments[0];
        assert_eq!((monday.submitted, monday.applied, monday.acceptance_rate), (2, 1, Some(1.0)));
        assert_eq!(
            (monday.turnaround_ms_p50, monday.turnaround_ms_p90),
            (Some(2 * HOUR_MS), Some(2 * HOUR_MS))
        );
        // c2 delivered Monday 10:00; d1 filed Monday 08:00.
        assert_eq!((monday.backlog, monday.backlog_oldest_age_ms), (1, Some(14 * HOUR_MS)));
        assert_eq!((monday.demands_waiting, monday.demands_waiting_oldest_age_ms), (1, Some(16 * HOUR_MS)));
        let tuesday = &evaluation.departments[1];
        assert_eq!(
            (
                tuesday.submitted,
                tuesday.rejected_by_owner,
                tuesday.automatic_rejections,
                tuesday.acceptance_rate
            ),
            (2, 1, 1, Some(0.0))
        );
        assert_eq!(tuesday.turnaround_ms_p50, Some(24 * HOUR_MS));
        assert_eq!((tuesday.backlog, tuesday.backlog_oldest_age_ms), (1, Some(10 * HOUR_MS)));
        assert_eq!((tuesday.demands_granted, tuesday.demand_to_grant_ms_p50), (1, Some(24 * HOUR_MS)));
        assert_eq!(tuesday.demands_waiting, 0);
        let saturday = &evaluation.departments[5];
        assert_eq!((saturday.acceptance_rate, saturday.turnaround_ms_p50), (None, None));
        assert_eq!((saturday.backlog, saturday.backlog_oldest_age_ms), (1, Some(14 * HOUR_MS)));
    }

    #[test]
    fn months_split_the_week_and_defaults_follow_the_log() {
        let months = evaluate(&scripted_week(), &week_query("month")).unwrap();
        let buckets: Vec<(&str, u64)> =
            months.departments.iter().map(|row| (row.bucket.as_str(), row.submitted)).collect();
        assert_eq!(buckets, [("2026-11-30", 2), ("2026-12-01", 7)]);
        // No period: from the first event (d1 filed Monday 08:00) to just after the last.
        let all = evaluate(&scripted_week(), &EvaluationQuery::default()).unwrap();
        assert_eq!(all.from, "2026-11-30T08:00:00+08:00");
        assert_eq!(all.to, "2026-12-06T20:00:00+08:00");
        assert_eq!(all.departments.len(), 7);
        assert_eq!(all.departments.iter().map(|row| row.submitted).sum::<u64>(), 9);
        // An empty log evaluates to nothing.
        let empty = evaluate(&PolicyState::default(), &EvaluationQuery::default()).unwrap();
        assert!(empty.departments.is_empty() && empty.streets.is_empty());
    }

    #[test]
    fn bad_queries_are_typed_errors_naming_the_value() {
        assert_eq!(
            EvaluationQuery::from_dates(None, None, Some("fortnight")),
            Err(EvaluationError::BucketUnknown("fortnight".into()))
        );
        for bad in ["2026-13-01", "2026-02-30", "26-11-30", "2026-11-30T00:00", "", "1969-12-31"] {
            assert_eq!(
                EvaluationQuery::from_dates(Some(bad), None, None),
                Err(EvaluationError::DateInvalid(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            EvaluationQuery::from_dates(Some("2026-12-02"), Some("2026-12-01"), None),
            Err(EvaluationError::RangeEmpty { .. })
        ));
        let decade =
            EvaluationQuery::from_dates(Some("2020-01-01"), Some("2029-12-31"), Some("day")).unwrap();
        assert!(matches!(evaluate(&scripted_week(), &decade), Err(EvaluationError::TooManyBuckets(_))));
    }

    #[test]
    fn dates_round_trip_in_shanghai() {
        assert_eq!(parse_date("2026-11-30"), Ok(MONDAY_MS));
        assert_eq!(format_date(MONDAY_MS), "2026-11-30");
        assert_eq!(format_date(MONDAY_MS - 1), "2026-11-29");
        assert_eq!(format_time(MONDAY_MS + 9 * HOUR_MS + 61_000), "2026-11-30T09:01:01+08:00");
        assert_eq!(parse_date("2024-02-29").map(format_date), Ok("2024-02-29".to_string()));
        assert_eq!(
            next_bucket_start(MONDAY_MS + 3 * 24 * HOUR_MS, Bucket::Week),
            MONDAY_MS + 7 * 24 * HOUR_MS
        );
        assert_eq!(
            next_bucket_start(parse_date("2026-12-31").unwrap(), Bucket::Month),
            parse_date("2027-01-01").unwrap()
        );
    }
}
