//! `/dashboard`: the period form, one section per department with its
//! charts and its weekly table, the streets' submissions; and the CSV
//! downloads of the same rows.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use civmesh_certs::now_unix_millis;
use civmesh_policy::evaluation::{format_date, parse_date, parse_date_end, DepartmentRow, EvaluationQuery};
use serde::Deserialize;

use super::{duration, percent, period_query, series_of, url_encoded, weekly, PeriodParams};
use crate::api::Shared;
use crate::console::i18n::Catalogue;
use crate::console::pages::{error_page, render};
use crate::console::{Frame, Visit};

/// One week of a department's figures, as text (and the p50 in ms, for
/// machines reading the table).
struct WeekRow {
    week: String,
    submitted: u64,
    applied: u64,
    rejected: u64,
    acceptance: String,
    p50: String,
    p50_ms: String,
    p90: String,
    backlog: u64,
    oldest: String,
    demands_granted: u64,
    demand_p50: String,
    demand_p90: String,
    waiting: u64,
}

impl WeekRow {
    fn of(t: &Catalogue, row: &DepartmentRow) -> Self {
        WeekRow {
            week: row.bucket.clone(),
            submitted: row.submitted,
            applied: row.applied,
            rejected: row.rejected_by_owner,
            acceptance: percent(row.acceptance_rate),
            p50: duration(t, row.turnaround_ms_p50),
            p50_ms: row.turnaround_ms_p50.map(|ms| ms.to_string()).unwrap_or_default(),
            p90: duration(t, row.turnaround_ms_p90),
            backlog: row.backlog,
            oldest: duration(t, row.backlog_oldest_age_ms),
            demands_granted: row.demands_granted,
            demand_p50: duration(t, row.demand_to_grant_ms_p50),
            demand_p90: duration(t, row.demand_to_grant_ms_p90),
            waiting: row.demands_waiting,
        }
    }
}

/// One department's section.
struct DepartmentView {
    owner: String,
    dataset: String,
    /// The charts' query: the period, the owner and the dataset.
    chart_query: String,
    rows: Vec<WeekRow>,
}

/// One street's submissions, week by week.
struct StreetLine {
    street: String,
    submitted: Vec<u64>,
}

/// The dashboard page.
#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    frame: Frame,
    from: String,
    to: String,
    from_error: Option<&'static str>,
    to_error: Option<&'static str>,
    period_query: String,
    departments: Vec<DepartmentView>,
    weeks: Vec<String>,
    streets: Vec<StreetLine>,
}

/// The period form: `YYYY-MM-DD` dates in Asia/Shanghai, both optional.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PeriodForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// The period the form asks for, or the messages next to its fields.
fn resolve(
    form: &PeriodForm,
    now_ms: u64,
) -> Result<EvaluationQuery, (Option<&'static str>, Option<&'static str>)> {
    let (from, to) = (form.from.trim(), form.to.trim());
    let from_ms = (!from.is_empty()).then(|| parse_date(from)).transpose();
    let to_ms = (!to.is_empty()).then(|| parse_date_end(to)).transpose();
    let (from_ms, to_ms) = match (from_ms, to_ms) {
        (Ok(from_ms), Ok(to_ms)) => (from_ms, to_ms),
        (from_ms, to_ms) => {
            let invalid = |failed: bool| failed.then_some("dashboard.date-invalid");
            return Err((invalid(from_ms.is_err()), invalid(to_ms.is_err())));
        }
    };
    if let (Some(from_ms), Some(to_ms)) = (from_ms, to_ms) {
        if to_ms <= from_ms {
            return Err((None, Some("dashboard.range-empty")));
        }
    }
    PeriodParams { from_ms, to_ms, ..PeriodParams::default() }
        .query(now_ms)
        .ok_or((Some("dashboard.period-too-long"), None))
}

/// `GET /dashboard?from=&to=`.
pub(super) async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(form): Query<PeriodForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&super::EVERYONE) {
        return *refused;
    }
    let now_ms = now_unix_millis();
    let mut page = DashboardPage {
        frame: Frame::of(&visit),
        from: form.from.trim().to_string(),
        to: form.to.trim().to_string(),
        from_error: None,
        to_error: None,
        period_query: String::new(),
        departments: Vec::new(),
        weeks: Vec::new(),
        streets: Vec::new(),
    };
    let query = match resolve(&form, now_ms) {
        Ok(query) => query,
        Err((from_error, to_error)) => {
            (page.from_error, page.to_error) = (from_error, to_error);
            return render(&page, StatusCode::BAD_REQUEST);
        }
    };
    page.from = format_date(query.from_ms.unwrap_or(0));
    page.to = format_date(query.to_ms.unwrap_or(1).saturating_sub(1));
    page.period_query = period_query(&query);
    let evaluation = match weekly(&state, &query).await {
        Ok(evaluation) => evaluation,
        Err(_) => return error_page(&visit, StatusCode::SERVICE_UNAVAILABLE, "dashboard.unavailable"),
    };
    let (departments, streets) = series_of(&evaluation);
    let t = visit.t();
    page.departments = departments
        .iter()
        .map(|series| DepartmentView {
            owner: series.owner.clone(),
            dataset: series.dataset.clone(),
            chart_query: format!(
                "{}&owner={}&dataset={}",
                page.period_query,
                url_encoded(&series.owner),
                url_encoded(&series.dataset)
            ),
            rows: series.rows.iter().map(|row| WeekRow::of(t, row)).collect(),
        })
        .collect();
    page.weeks = streets
        .first()
        .map(|series| series.rows.iter().map(|row| row.bucket.clone()).collect())
        .unwrap_or_default();
    page.streets = streets
        .iter()
        .map(|series| StreetLine {
            street: series.street.clone(),
            submitted: series.rows.iter().map(|row| row.submitted).collect(),
        })
        .collect();
    render(&page, StatusCode::OK)
}

/// The rows of the period `params` names, as CSV with a header row.
async fn csv_of<T: serde::Serialize>(
    state: Shared,
    headers: HeaderMap,
    params: PeriodParams,
    rows: impl FnOnce(civmesh_policy::evaluation::Evaluation) -> Vec<T>,
    filename: &str,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&super::EVERYONE) {
        return *refused;
    }
    let Some(query) = params.query(now_unix_millis()) else {
        return error_page(&visit, StatusCode::BAD_REQUEST, "dashboard.period-too-long");
    };
    let Ok(evaluation) = weekly(&state, &query).await else {
        return error_page(&visit, StatusCode::SERVICE_UNAVAILABLE, "dashboard.unavailable");
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows(evaluation) {
        if writer.serialize(row).is_err() {
            return error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
        }
    }
    let Ok(bytes) = writer.into_inner() else {
        return error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
    };
    let disposition = format!("attachment; filename=\"{filename}\"");
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /dashboard.csv`: every department's weekly rows.
pub(super) async fn departments_csv(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    csv_of(state, headers, params, |evaluation| evaluation.departments, "civmesh-departments-weekly.csv")
        .await
}

/// `GET /dashboard/streets.csv`: every street's weekly rows.
pub(super) async fn streets_csv(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    csv_of(state, headers, params, |evaluation| evaluation.streets, "civmesh-streets-weekly.csv").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_period_is_named_next_to_its_field() {
        let form = |from: &str, to: &str| PeriodForm { from: from.into(), to: to.into() };
        let now = 1_795_968_000_000 + 3 * 86_400_000;
        assert_eq!(
            resolve(&form("2026-13-01", ""), now).unwrap_err(),
            (Some("dashboard.date-invalid"), None)
        );
        assert_eq!(resolve(&form("", "tomorrow"), now).unwrap_err(), (None, Some("dashboard.date-invalid")));
        assert_eq!(
            resolve(&form("2026-12-02", "2026-12-01"), now).unwrap_err(),
            (None, Some("dashboard.range-empty"))
        );
        assert_eq!(
            resolve(&form("2020-01-01", ""), now).unwrap_err(),
            (Some("dashboard.period-too-long"), None)
        );
        let query = resolve(&form("2026-11-25", "2026-12-01"), now).unwrap();
        assert_eq!(format_date(query.from_ms.unwrap()), "2026-11-23", "from its week's Monday");
        assert_eq!(query.to_ms, Some(parse_date_end("2026-12-01").unwrap()));
    }
}
