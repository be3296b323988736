//! Time buckets and dates in Asia/Shanghai (UTC+8, no daylight saving).

use civmesh_certs::UnixMillis;

use super::{Bucket, EvaluationError, DAY_MS, EVALUATION_BUCKETS_MAX};

/// The buckets covering `[from_ms, to_ms)`, each clipped to it.
pub(super) fn buckets(
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
pub(super) fn next_bucket_start(at_ms: UnixMillis, bucket: Bucket) -> UnixMillis {
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

/// The end of a `YYYY-MM-DD` day in Asia/Shanghai (midnight at the start
/// of the next), so that a window "until 2026-12-31" includes that day.
pub fn parse_date_end(text: &str) -> Result<UnixMillis, EvaluationError> {
    parse_date(text).map(|start| start + DAY_MS as u64)
}

/// The last day before `end_ms` in Asia/Shanghai: the inverse of
/// [`parse_date_end`].
pub fn format_date_end(end_ms: UnixMillis) -> String {
    format_date(end_ms.saturating_sub(1))
}

/// The day of `at_ms` in Asia/Shanghai, `YYYY-MM-DD`.
pub fn format_date(at_ms: UnixMillis) -> String {
    in_shanghai(at_ms).date().format(DATE_FORMAT).unwrap_or_default()
}

/// `at_ms` as ISO 8601 in Asia/Shanghai, e.g. `2026-11-30T09:00:00+08:00`.
pub fn format_time(at_ms: UnixMillis) -> String {
    in_shanghai(at_ms).format(TIME_FORMAT).unwrap_or_default()
}

/// A duration as people say it, in the two largest units that matter
/// (`2d 3h`, `5h 20m`, `12m`, `40s`, `850ms` with `units` =
/// `[ms, s, min, h, d]` = `["ms", "s", "m", "h", "d"]`); `-` for none.
pub fn format_duration(ms: Option<u64>, units: [&str; 5]) -> String {
    let Some(ms) = ms else { return "-".to_string() };
    let [unit_ms, unit_s, unit_min, unit_h, unit_d] = units;
    let (days, hours, minutes) = (ms / 86_400_000, ms / 3_600_000 % 24, ms / 60_000 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) if ms < 1000 => format!("{ms}{unit_ms}"),
        (0, 0, 0) => format!("{}{unit_s}", ms / 1000),
        (0, 0, minutes) => format!("{minutes}{unit_min}"),
        (0, hours, minutes) => format!("{hours}{unit_h} {minutes}{unit_min}"),
        (days, hours, _) => format!("{days}{unit_d} {hours}{unit_h}"),
    }
}

/// A share as a whole percentage, `-` for none.
pub fn format_percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |rate| format!("{:.0}%", rate * 100.0))
}
