//! Week-by-week series for charts: the evaluation's rows grouped by
//! department (owner and dataset) or by street, in bucket order, and the
//! periods of whole ISO weeks (Monday first, Asia/Shanghai) they cover.

use std::collections::HashMap;

use civmesh_certs::UnixMillis;
use serde::{Deserialize, Serialize};

use super::calendar::next_bucket_start;
use super::{Bucket, DepartmentRow, Evaluation, EvaluationQuery, StreetRow, DAY_MS};
use crate::model::DatasetId;

/// One week, in ms.
pub const WEEK_MS: u64 = 7 * DAY_MS as u64;

/// Midnight on the Monday (Asia/Shanghai) starting the week that holds `at_ms`.
pub fn week_start(at_ms: UnixMillis) -> UnixMillis {
    next_bucket_start(at_ms, Bucket::Week).saturating_sub(WEEK_MS)
}

/// The evaluation of the `weeks` weeks up to `now_ms`: from the Monday
/// `weeks - 1` weeks before this week's to `now_ms` (included), by week,
/// so the last week's backlog is measured now.
pub fn recent_weeks(now_ms: UnixMillis, weeks: u64) -> EvaluationQuery {
    let from_ms = week_start(now_ms).saturating_sub(weeks.saturating_sub(1) * WEEK_MS);
    EvaluationQuery { from_ms: Some(from_ms), to_ms: Some(now_ms + 1), bucket: Bucket::Week }
}

/// `query` by week, starting on the Monday of the week its start falls in,
/// so every bucket but the last is a whole week.
pub fn whole_weeks(query: EvaluationQuery) -> EvaluationQuery {
    EvaluationQuery { from_ms: query.from_ms.map(week_start), bucket: Bucket::Week, ..query }
}

/// One department's (owner's and dataset's) rows, in bucket order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartmentSeries {
    /// The owning organisation, by name.
    pub owner: String,
    /// The dataset.
    pub dataset: DatasetId,
    /// One row per bucket.
    pub rows: Vec<DepartmentRow>,
}

/// One street's rows, in bucket order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreetSeries {
    /// The submitting organisation, by name.
    pub street: String,
    /// One row per bucket.
    pub rows: Vec<StreetRow>,
}

/// The evaluation as one series per department (owner and dataset) and
/// one per street, each in the order they first appear, its rows moved
/// rather than copied.
pub fn into_series(evaluation: Evaluation) -> (Vec<DepartmentSeries>, Vec<StreetSeries>) {
    let departments = group(
        evaluation.departments,
        |row| (row.owner.as_str(), row.dataset.as_str()),
        |row| DepartmentSeries { owner: row.owner.clone(), dataset: row.dataset.clone(), rows: Vec::new() },
        |series| &mut series.rows,
    );
    let streets = group(
        evaluation.streets,
        |row| (row.street.as_str(), ""),
        |row| StreetSeries { street: row.street.clone(), rows: Vec::new() },
        |series| &mut series.rows,
    );
    (departments, streets)
}

/// The rows of `series` in the evaluation's order: bucket by bucket, and in
/// each bucket one row per series, in series order (the order of
/// [`Evaluation::departments`] and [`Evaluation::streets`], which hold a row
/// for every department or street in every bucket).
pub fn rows_by_bucket<'a, S: 'a, R: 'a>(
    series: &'a [S],
    rows: fn(&S) -> &[R],
) -> impl Iterator<Item = &'a R> + 'a {
    let buckets = series.iter().map(|one| rows(one).len()).max().unwrap_or(0);
    (0..buckets).flat_map(move |bucket| series.iter().filter_map(move |one| rows(one).get(bucket)))
}

/// `rows` grouped by `key`, in first-appearance order: one series per key,
/// made by `new_series` from its first row, each row moved into its
/// series' `series_rows`.
fn group<R, S>(
    rows: Vec<R>,
    key: impl Fn(&R) -> (&str, &str),
    new_series: impl Fn(&R) -> S,
    series_rows: fn(&mut S) -> &mut Vec<R>,
) -> Vec<S> {
    let (slots, firsts) = slots(&rows, key);
    let mut all: Vec<S> = firsts.iter().filter_map(|first| rows.get(*first)).map(new_series).collect();
    for (row, slot) in rows.into_iter().zip(slots) {
        if let Some(series) = all.get_mut(slot) {
            series_rows(series).push(row);
        }
    }
    all
}

/// For each of `rows`, the index of its group (by `key`, numbered in
/// first-appearance order); and for each group, the index of its first row.
/// One hash look-up per row.
fn slots<'a, R>(rows: &'a [R], key: impl Fn(&'a R) -> (&'a str, &'a str)) -> (Vec<usize>, Vec<usize>) {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut firsts = Vec::new();
    let slots = rows
        .iter()
        .enumerate()
        .map(|(at, row)| {
            *index.entry(key(row)).or_insert_with(|| {
                firsts.push(at);
                firsts.len() - 1
            })
        })
        .collect();
    (slots, firsts)
}

#[cfg(test)]
mod tests {
    use super::super::tests::scripted_week;
    use super::super::{evaluate, format_date, format_time};
    use super::*;

    /// Monday 2026-11-30 00:00 in Asia/Shanghai.
    const MONDAY_MS: u64 = 1_795_968_000_000;

    #[test]
    fn weeks_start_on_monday_in_shanghai() {
        assert_eq!(week_start(MONDAY_MS), MONDAY_MS);
        assert_eq!(week_start(MONDAY_MS + 6 * DAY_MS as u64 + 23 * 3_600_000), MONDAY_MS);
        assert_eq!(week_start(MONDAY_MS - 1), MONDAY_MS - WEEK_MS, "Sunday 23:59:59.999 is the week before");
        // Monday 00:30 in Shanghai is still Sunday in UTC.
        assert_eq!(week_start(MONDAY_MS + 1_800_000), MONDAY_MS);
        let query = recent_weeks(MONDAY_MS + 2 * DAY_MS as u64, 3);
        assert_eq!(format_time(query.from_ms.unwrap()), "2026-11-16T00:00:00+08:00");
        assert_eq!(query.to_ms, Some(MONDAY_MS + 2 * DAY_MS as u64 + 1));
        assert_eq!(query.bucket, Bucket::Week);
        let snapped = whole_weeks(EvaluationQuery::from_dates(Some("2026-12-03"), None, None).unwrap());
        assert_eq!((snapped.from_ms, snapped.to_ms, snapped.bucket), (Some(MONDAY_MS), None, Bucket::Week));
    }

    #[test]
    fn rows_group_into_one_series_per_department_and_street_in_week_order() {
        let state = scripted_week();
        // Three weeks: the one before the scripted week, it, and the next.
        let query = EvaluationQuery {
            from_ms: Some(MONDAY_MS - WEEK_MS),
            to_ms: Some(MONDAY_MS + 2 * WEEK_MS),
            bucket: Bucket::Week,
        };
        let evaluation = evaluate(&state, &query).unwrap();
        let (departments, streets) = into_series(evaluation.clone());
        assert_eq!(departments.len(), 1);
        let market = &departments[0];
        assert_eq!(market.owner, "dept/market-supervision");
        let weeks: Vec<&str> = market.rows.iter().map(|row| row.bucket.as_str()).collect();
        assert_eq!(weeks, ["2026-11-23", "2026-11-30", "2026-12-07"]);
        assert_eq!(weeks[1], format_date(MONDAY_MS));
        assert_eq!(market.rows[0].submitted, 0);
        assert_eq!(market.rows[1], evaluation.departments[1], "the scripted week's own row");
        assert!(market.rows[1].turnaround_ms_p50.is_some());
        let names: Vec<&str> = streets.iter().map(|series| series.street.as_str()).collect();
        assert_eq!(names, ["street/jingansi", "street/nanjingxilu"]);
        assert!(streets.iter().all(|series| series.rows.len() == 3));
        let submitted: u64 = streets.iter().map(|series| series.rows[1].submitted).sum();
        assert_eq!(submitted, market.rows[1].submitted, "every submission is some street's");
        let in_order: Vec<DepartmentRow> = rows_by_bucket(&departments, |one| &one.rows).cloned().collect();
        assert_eq!(in_order, evaluation.departments, "back in the evaluation's order");
        let in_order: Vec<StreetRow> = rows_by_bucket(&streets, |one| &one.rows).cloned().collect();
        assert_eq!(in_order, evaluation.streets);
        assert_eq!(into_series(evaluation), (departments, streets), "moved, the same");
    }

    #[test]
    fn many_departments_group_in_first_appearance_order() {
        let row = |bucket: &str, owner: &str, dataset: &str| DepartmentRow {
            bucket: bucket.into(),
            owner: owner.into(),
            dataset: dataset.into(),
            ..DepartmentRow::default()
        };
        let mut departments = Vec::new();
        for week in ["2026-11-23", "2026-11-30"] {
            for n in (0..500).rev() {
                departments.push(row(week, "dept/a", &format!("set-{n}")));
            }
            departments.push(row(week, "dept/b", "set-0"));
        }
        let evaluation = Evaluation {
            from: String::new(),
            to: String::new(),
            bucket: Bucket::Week,
            departments,
            streets: Vec::new(),
            deletions: Vec::new(),
            notes: Vec::new(),
        };
        let (series, _) = into_series(evaluation);
        assert_eq!(series.len(), 501);
        assert_eq!((series[0].dataset.as_str(), series[499].dataset.as_str()), ("set-499", "set-0"));
        assert_eq!((series[500].owner.as_str(), series[500].dataset.as_str()), ("dept/b", "set-0"));
        assert!(series.iter().all(|one| one.rows.len() == 2 && one.rows[1].bucket == "2026-11-30"));
    }
}
