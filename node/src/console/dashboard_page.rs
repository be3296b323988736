//! `/dashboard`: the period form, one section per department with its
//! charts and its weekly table (at most [`DEPARTMENTS_PER_PAGE`] a page,
//! `?page=K`), and the streets' submissions.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use civmesh_certs::now_unix_millis;
use civmesh_policy::evaluation::{
    format_date, parse_date, parse_date_end, DepartmentRow, DepartmentSeries, EvaluationQuery,
};
use serde::Deserialize;

use super::cache::{figures, Figures};
use super::{duration, percent, period_query, url_encoded, PeriodParams, DEPARTMENTS_PER_PAGE};
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
    /// Its place among all the departments, from 0 (its elements' ids).
    index: usize,
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

/// Which departments one page shows.
#[derive(Debug, PartialEq, Eq)]
struct Paging {
    /// The page, from 1.
    page: usize,
    /// How many pages there are (at least 1).
    pages: usize,
    /// The departments it shows, by their place among all.
    range: std::ops::Range<usize>,
}

impl Paging {
    /// Page `asked` (from 1; the nearest page there is, the first if none
    /// is asked) of `total` departments, [`DEPARTMENTS_PER_PAGE`] a page.
    fn of(total: usize, asked: Option<usize>) -> Self {
        let pages = total.div_ceil(DEPARTMENTS_PER_PAGE).max(1);
        let page = asked.unwrap_or(1).clamp(1, pages);
        let start = (page - 1) * DEPARTMENTS_PER_PAGE;
        Paging { page, pages, range: start..(start + DEPARTMENTS_PER_PAGE).min(total) }
    }
}

/// The links between the pages of departments.
struct Pager {
    /// This page, from 1.
    page: usize,
    /// How many pages there are.
    pages: usize,
    /// The first and last department shown, from 1.
    first: usize,
    last: usize,
    /// How many departments there are.
    total: usize,
    /// The URL query of the previous page, if any.
    previous: Option<String>,
    /// The URL query of the next page, if any.
    next: Option<String>,
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
    /// The charts' and downloads' query: the period and the applied log
    /// index the page was made from.
    period_query: String,
    pager: Option<Pager>,
    departments: Vec<DepartmentView>,
    weeks: Vec<String>,
    streets: Vec<StreetLine>,
}

/// The period form: `YYYY-MM-DD` dates in Asia/Shanghai, both optional;
/// and the page of departments (`page`, from 1).
#[derive(Debug, Default, Deserialize)]
pub(super) struct PeriodForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: String,
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

/// `GET /dashboard?from=&to=&page=`.
pub(super) async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(form): Query<PeriodForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&super::EVERYONE) {
        return *refused;
    }
    let mut page = DashboardPage {
        frame: Frame::of(&visit),
        from: form.from.trim().to_string(),
        to: form.to.trim().to_string(),
        from_error: None,
        to_error: None,
        period_query: String::new(),
        pager: None,
        departments: Vec::new(),
        weeks: Vec::new(),
        streets: Vec::new(),
    };
    let query = match resolve(&form, now_unix_millis()) {
        Ok(query) => query,
        Err((from_error, to_error)) => {
            (page.from_error, page.to_error) = (from_error, to_error);
            return render(&page, StatusCode::BAD_REQUEST);
        }
    };
    page.from = format_date(query.from_ms.unwrap_or(0));
    page.to = format_date(query.to_ms.unwrap_or(1).saturating_sub(1));
    let Ok(figures) = figures(&state, &query, None).await else {
        return error_page(&visit, StatusCode::SERVICE_UNAVAILABLE, "dashboard.unavailable");
    };
    page.period_query = format!("{}&at={}", period_query(&query), figures.at);
    let paging = Paging::of(figures.departments.len(), form.page.trim().parse().ok());
    page.pager = pager(&page.from, &page.to, &paging, figures.departments.len());
    page.departments = department_views(visit.t(), &figures.departments, &paging, &page.period_query);
    fill_streets(&mut page, &figures);
    render(&page, StatusCode::OK)
}

/// The links between pages, if there is more than one.
fn pager(from: &str, to: &str, paging: &Paging, total: usize) -> Option<Pager> {
    let link = |page: usize| format!("from={from}&to={to}&page={page}");
    (paging.pages > 1).then(|| Pager {
        page: paging.page,
        pages: paging.pages,
        first: paging.range.start + 1,
        last: paging.range.end,
        total,
        previous: (paging.page > 1).then(|| link(paging.page - 1)),
        next: (paging.page < paging.pages).then(|| link(paging.page + 1)),
    })
}

/// The sections of the departments `paging` shows.
fn department_views(
    t: &Catalogue,
    departments: &[DepartmentSeries],
    paging: &Paging,
    period_query: &str,
) -> Vec<DepartmentView> {
    let shown = departments.get(paging.range.clone()).unwrap_or_default();
    shown
        .iter()
        .enumerate()
        .map(|(offset, series)| DepartmentView {
            index: paging.range.start + offset,
            owner: series.owner.clone(),
            dataset: series.dataset.clone(),
            chart_query: format!(
                "{period_query}&owner={}&dataset={}",
                url_encoded(&series.owner),
                url_encoded(&series.dataset)
            ),
            rows: series.rows.iter().map(|row| WeekRow::of(t, row)).collect(),
        })
        .collect()
}

/// The streets' weeks and lines.
fn fill_streets(page: &mut DashboardPage, figures: &Figures) {
    page.weeks = figures
        .streets
        .first()
        .map(|series| series.rows.iter().map(|row| row.bucket.clone()).collect())
        .unwrap_or_default();
    page.streets = figures
        .streets
        .iter()
        .map(|series| StreetLine {
            street: series.street.clone(),
            submitted: series.rows.iter().map(|row| row.submitted).collect(),
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_period_is_named_next_to_its_field() {
        let form =
            |from: &str, to: &str| PeriodForm { from: from.into(), to: to.into(), ..Default::default() };
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

    #[test]
    fn pages_hold_at_most_so_many_departments_and_stay_in_bounds() {
        let per = DEPARTMENTS_PER_PAGE;
        // (departments, page asked) -> (page, pages, range)
        let cases = [
            (0, None, (1, 1, 0..0)),
            (1, None, (1, 1, 0..1)),
            (per, Some(1), (1, 1, 0..per)),
            (per + 1, None, (1, 2, 0..per)),
            (per + 1, Some(2), (2, 2, per..per + 1)),
            (per + 1, Some(3), (2, 2, per..per + 1)),
            (per + 1, Some(0), (1, 2, 0..per)),
            (3 * per, Some(usize::MAX), (3, 3, 2 * per..3 * per)),
            (5_000, Some(7), (7, 5_000_usize.div_ceil(per), 6 * per..7 * per)),
        ];
        for (total, asked, (page, pages, range)) in cases {
            assert_eq!(
                Paging::of(total, asked),
                Paging { page, pages, range },
                "{total} departments, page {asked:?}"
            );
        }
        let two = Paging::of(per + 1, Some(2));
        let last = pager("2026-09-07", "2026-12-03", &two, per + 1).unwrap();
        assert_eq!(
            (last.page, last.pages, last.first, last.last, last.total),
            (2, 2, per + 1, per + 1, per + 1)
        );
        assert_eq!(last.previous.as_deref(), Some("from=2026-09-07&to=2026-12-03&page=1"));
        assert_eq!(last.next, None);
        let first = pager("2026-09-07", "2026-12-03", &Paging::of(per + 1, None), per + 1).unwrap();
        assert_eq!((first.first, first.last, first.previous), (1, per, None));
        assert_eq!(first.next.as_deref(), Some("from=2026-09-07&to=2026-12-03&page=2"));
        assert!(pager("a", "b", &Paging::of(per, None), per).is_none(), "one page: no links");
    }

    #[test]
    fn a_middle_page_links_both_ways_and_keeps_the_departments_places() {
        let t = crate::console::i18n::catalogue(crate::console::i18n::Lang::En);
        let series: Vec<DepartmentSeries> = (0..3 * DEPARTMENTS_PER_PAGE)
            .map(|n| DepartmentSeries {
                owner: "dept/market-supervision".into(),
                dataset: format!("set-{n:03}"),
                rows: vec![DepartmentRow { bucket: "2026-11-30".into(), ..DepartmentRow::default() }],
            })
            .collect();
        let paging = Paging::of(series.len(), Some(2));
        let page = DashboardPage {
            frame: Frame {
                t,
                lang: "en",
                other_lang: "zh-CN",
                operator: None,
                role_key: "",
                csrf: String::new(),
                nav: Vec::new(),
            },
            from: "2026-09-07".into(),
            to: "2026-12-03".into(),
            from_error: None,
            to_error: None,
            period_query: "from_ms=1&to_ms=2&at=9".into(),
            pager: pager("2026-09-07", "2026-12-03", &paging, series.len()),
            departments: department_views(t, &series, &paging, "from_ms=1&to_ms=2&at=9"),
            weeks: Vec::new(),
            streets: Vec::new(),
        };
        let html = page.render().unwrap();
        let per = DEPARTMENTS_PER_PAGE;
        assert_eq!(html.matches("<section class=\"department\"").count(), per);
        assert!(html.contains(&format!("id=\"dept-{per}-name\">dept/market-supervision · set-{per:03}<")));
        assert!(!html.contains(&format!("id=\"dept-{}-name\"", 2 * per)));
        assert!(html.contains("/dashboard/charts/turnaround.svg?from_ms=1&#38;to_ms=2&#38;at=9&#38;owner="));
        for place in ["top", "bottom"] {
            assert!(html.contains(&format!(
                "href=\"/dashboard?from=2026-09-07&#38;to=2026-12-03&#38;page=1\" rel=\"prev\" id=\"pager-{place}-previous\""
            )));
            assert!(html.contains(&format!("page=3\" rel=\"next\" id=\"pager-{place}-next\"")));
        }
        assert!(html.contains(&format!("Page 2 / 3 · departments {}–{} / {}", per + 1, 2 * per, 3 * per)));
    }
}
