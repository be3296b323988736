//! The evaluation dashboard (部门评价), for every signed-in operator: per
//! department (owner and dataset), week by week, from the policy log, the
//! evaluation `GET /v1/evaluation` computes (correction turnaround p50 and
//! p90, acceptance rate, backlog and its oldest item, demand-to-grant
//! time) and the streets' submissions. Charts are SVG drawn on the server
//! (`/dashboard/charts/NAME.svg`), each beside a table with the same
//! figures; `/dashboard.csv` and `/dashboard/streets.csv` download them.
//! A page shows at most [`DEPARTMENTS_PER_PAGE`] departments (`?page=K`);
//! the page, its charts and its downloads share one evaluation
//! (see `dashboard_cache.rs`); the downloads quote text cells that begin
//! like a spreadsheet formula (`dashboard_csv.rs`).

#[path = "dashboard_cache.rs"]
mod cache;
#[path = "dashboard_charts.rs"]
mod charts;
#[path = "dashboard_csv.rs"]
mod csv_download;
#[path = "dashboard_page.rs"]
mod page;

pub(super) use cache::DashboardCache;

use axum::routing::get;
use axum::Router;
use civmesh_certs::UnixMillis;
use civmesh_policy::evaluation::format_percent as percent;
use civmesh_policy::evaluation::{recent_weeks, whole_weeks, EvaluationQuery, WEEK_MS};
use serde::Deserialize;

use crate::api::Shared;

/// Weeks the dashboard shows unless asked for a period.
const DEFAULT_WEEKS: u64 = 12;
/// The most weeks one dashboard shows.
const DASHBOARD_WEEKS_MAX: u64 = 104;
/// Who may see the dashboard: everyone signed in.
const EVERYONE: [super::operators::Role; 4] = [
    super::operators::Role::StreetWorker,
    super::operators::Role::Reviewer,
    super::operators::Role::PolicyOfficer,
    super::operators::Role::Auditor,
];
/// The most departments one page of the dashboard shows.
const DEPARTMENTS_PER_PAGE: usize = 20;

/// This area's routes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/dashboard", get(page::show))
        .route("/dashboard.csv", get(csv_download::departments_csv))
        .route("/dashboard/streets.csv", get(csv_download::streets_csv))
        .route("/dashboard/charts/{name}", get(charts::chart))
}

/// The period the charts and downloads cover, as the page resolved it
/// (`from_ms`, `to_ms`), the applied log index the page was made from
/// (`at`), and for a department's charts its owner and dataset.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PeriodParams {
    #[serde(default)]
    from_ms: Option<UnixMillis>,
    #[serde(default)]
    to_ms: Option<UnixMillis>,
    #[serde(default)]
    at: Option<u64>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    dataset: Option<String>,
}

impl PeriodParams {
    /// The query: whole weeks from `from_ms` to `to_ms` (never past now),
    /// or the last [`DEFAULT_WEEKS`] weeks; `None` if longer than
    /// [`DASHBOARD_WEEKS_MAX`] weeks or empty.
    fn query(&self, now_ms: UnixMillis) -> Option<EvaluationQuery> {
        let default = recent_weeks(now_ms, DEFAULT_WEEKS);
        let query = whole_weeks(EvaluationQuery {
            from_ms: self.from_ms.or(default.from_ms),
            to_ms: Some(self.to_ms.unwrap_or(now_ms + 1).min(now_ms + 1)),
            ..default
        });
        period_fits(&query).then_some(query)
    }
}

/// Whether `query` is a non-empty period of at most [`DASHBOARD_WEEKS_MAX`] weeks.
fn period_fits(query: &EvaluationQuery) -> bool {
    match (query.from_ms, query.to_ms) {
        (Some(from), Some(to)) => from < to && (to - from).div_ceil(WEEK_MS) <= DASHBOARD_WEEKS_MAX,
        _ => false,
    }
}

/// The URL query naming `query`'s period, for the charts and downloads.
fn period_query(query: &EvaluationQuery) -> String {
    format!("from_ms={}&to_ms={}", query.from_ms.unwrap_or(0), query.to_ms.unwrap_or(0))
}

/// `text` for a URL query: unreserved characters as they are, the rest
/// percent-encoded (organisation and dataset names only).
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `ms` as people say it, in the catalogue's units: `2天 3小时`, `5h 20m`,
/// `40s`; `-` for none.
fn duration(t: &super::i18n::Catalogue, ms: Option<u64>) -> String {
    let units = [
        "dashboard.unit-ms",
        "dashboard.unit-s",
        "dashboard.unit-min",
        "dashboard.unit-h",
        "dashboard.unit-d",
    ];
    civmesh_policy::evaluation::format_duration(ms, units.map(|key| t.get(key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::i18n::{catalogue, Lang};

    #[test]
    fn durations_periods_and_names_read_right() {
        let (zh, en) = (catalogue(Lang::ZhCn), catalogue(Lang::En));
        assert_eq!(duration(en, None), "-");
        assert_eq!(duration(en, Some(850)), "850ms");
        assert_eq!(duration(en, Some(40_000)), "40s");
        assert_eq!(duration(en, Some(5 * 3_600_000 + 20 * 60_000)), "5h 20min");
        assert_eq!(duration(zh, Some(50 * 3_600_000)), "2天 2小时");
        assert_eq!(percent(Some(0.755)), "76%");
        assert_eq!(url_encoded("dept/market-supervision"), "dept%2Fmarket-supervision");
        // Monday 2026-11-30 00:00 in Asia/Shanghai, and that Wednesday.
        let (monday, wednesday) = (1_795_968_000_000, 1_795_968_000_000 + 2 * 86_400_000);
        let default = PeriodParams::default().query(wednesday).unwrap();
        assert_eq!(default.from_ms, Some(monday - 11 * WEEK_MS));
        assert_eq!(default.to_ms, Some(wednesday + 1), "never past now");
        let asked = PeriodParams { from_ms: Some(wednesday), to_ms: Some(u64::MAX), ..Default::default() };
        assert_eq!(asked.query(wednesday + 5).unwrap().from_ms, Some(monday), "whole weeks");
        let long = PeriodParams { from_ms: Some(0), ..Default::default() };
        assert!(long.query(wednesday).is_none(), "over {DASHBOARD_WEEKS_MAX} weeks");
        assert_eq!(
            period_query(&default),
            format!("from_ms={}&to_ms={}", monday - 11 * WEEK_MS, wednesday + 1)
        );
    }
}
