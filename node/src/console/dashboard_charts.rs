//! The dashboard's charts: SVG drawn on the server with plotters (its SVG
//! backend only: text is left to the browser's fonts), one line per series
//! over the weeks, gaps where a week has no value. Served as
//! `image/svg+xml` from `/dashboard/charts/NAME.svg`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use civmesh_certs::now_unix_millis;
use civmesh_policy::evaluation::{DepartmentRow, DepartmentSeries};
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;

use super::{cache, PeriodParams, EVERYONE};
use crate::api::Shared;
use crate::console::i18n::Catalogue;
use crate::console::pages::error_page;
use crate::console::Visit;

/// A chart's size, in pixels.
const CHART_SIZE_PX: (u32, u32) = (620, 300);
/// The series' colours (AA contrast on white).
const COLOURS: [RGBColor; 6] = [
    RGBColor(11, 79, 156),
    RGBColor(196, 78, 0),
    RGBColor(0, 122, 61),
    RGBColor(140, 40, 140),
    RGBColor(164, 0, 15),
    RGBColor(60, 60, 60),
];

/// What one chart shows.
struct ChartSpec {
    title: String,
    y_label: String,
    weeks: Vec<String>,
    series: Vec<(String, Vec<Option<f64>>)>,
    /// The top of the y axis, if fixed (100 for a percentage).
    y_max: Option<f64>,
}

/// `GET /dashboard/charts/{name}`: `turnaround.svg`, `acceptance.svg`,
/// `backlog.svg`, `demand.svg` (of the department `owner` and `dataset`
/// name) or `streets.svg`, over the period `from_ms`..`to_ms`, from the
/// evaluation the page was made from (`at`) while it is kept.
pub(super) async fn chart(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<PeriodParams>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&EVERYONE) {
        return *refused;
    }
    let (Some(metric), Some(query)) = (name.strip_suffix(".svg"), params.query(now_unix_millis())) else {
        return error_page(&visit, StatusCode::NOT_FOUND, "dashboard.no-chart");
    };
    let Ok(figures) = cache::figures(&state, &query, params.at).await else {
        return error_page(&visit, StatusCode::SERVICE_UNAVAILABLE, "dashboard.unavailable");
    };
    let (departments, streets) = (&figures.departments, &figures.streets);
    let t = visit.t();
    let spec = if metric == "streets" {
        Some(ChartSpec {
            title: t.get("dashboard.chart-streets").to_string(),
            y_label: t.get("dashboard.axis-count").to_string(),
            weeks: streets
                .first()
                .map(|series| series.rows.iter().map(|row| row.bucket.clone()).collect())
                .unwrap_or_default(),
            series: streets
                .iter()
                .map(|series| {
                    (
                        series.street.clone(),
                        series.rows.iter().map(|row| Some(row.submitted as f64)).collect(),
                    )
                })
                .collect(),
            y_max: None,
        })
    } else {
        let wanted = (params.owner.as_deref(), params.dataset.as_deref());
        departments
            .iter()
            .find(|series| (Some(series.owner.as_str()), Some(series.dataset.as_str())) == wanted)
            .and_then(|series| department_chart(t, metric, series))
    };
    let Some(svg) = spec.and_then(|spec| draw(&spec)) else {
        return error_page(&visit, StatusCode::NOT_FOUND, "dashboard.no-chart");
    };
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// One department's chart of `metric`.
fn department_chart(t: &Catalogue, metric: &str, series: &DepartmentSeries) -> Option<ChartSpec> {
    let rows = &series.rows;
    let pick = |value: fn(&DepartmentRow) -> Option<u64>| rows.iter().map(value).collect::<Vec<_>>();
    // A median and a 90th percentile of durations, in one time unit.
    let durations = |title, p50: Vec<Option<u64>>, p90: Vec<Option<u64>>| {
        let (unit, label) = time_unit(p50.iter().chain(&p90).flatten().copied().max().unwrap_or(0));
        let lines = vec![
            (t.get("dashboard.series-median"), scaled(&p50, unit)),
            (t.get("dashboard.series-ninetieth"), scaled(&p90, unit)),
        ];
        (title, lines, t.get(label), None)
    };
    let (title, lines, y_label, y_max) = match metric {
        "turnaround" => durations(
            "dashboard.chart-turnaround",
            pick(|row| row.turnaround_ms_p50),
            pick(|row| row.turnaround_ms_p90),
        ),
        "demand" => durations(
            "dashboard.chart-demand",
            pick(|row| row.demand_to_grant_ms_p50),
            pick(|row| row.demand_to_grant_ms_p90),
        ),
        "acceptance" => {
            let rates = rows.iter().map(|row| row.acceptance_rate.map(|rate| rate * 100.0)).collect();
            (
                "dashboard.chart-acceptance",
                vec![(t.get("dashboard.series-acceptance"), rates)],
                t.get("dashboard.axis-percent"),
                Some(100.0),
            )
        }
        "backlog" => {
            let backlog = rows.iter().map(|row| Some(row.backlog as f64)).collect();
            (
                "dashboard.chart-backlog",
                vec![(t.get("dashboard.series-backlog"), backlog)],
                t.get("dashboard.axis-count"),
                None,
            )
        }
        _ => return None,
    };
    Some(ChartSpec {
        title: format!("{} · {}", t.get(title), series.owner),
        y_label: y_label.to_string(),
        weeks: rows.iter().map(|row| row.bucket.clone()).collect(),
        series: lines.into_iter().map(|(label, values)| (label.to_string(), values)).collect(),
        y_max,
    })
}

/// The unit (in ms) and its axis label for durations up to `max_ms`.
fn time_unit(max_ms: u64) -> (f64, &'static str) {
    match max_ms {
        0..=119_999 => (1_000.0, "dashboard.axis-seconds"),
        120_000..=7_199_999 => (60_000.0, "dashboard.axis-minutes"),
        7_200_000..=172_799_999 => (3_600_000.0, "dashboard.axis-hours"),
        _ => (86_400_000.0, "dashboard.axis-days"),
    }
}

fn scaled(values: &[Option<u64>], unit: f64) -> Vec<Option<f64>> {
    values.iter().map(|value| value.map(|ms| ms as f64 / unit)).collect()
}

/// `2026-11-30` as `11-30`.
fn short_week(week: &str) -> String {
    week.get(5..).unwrap_or(week).to_string()
}

/// The chart as an SVG document; `None` if plotters fails.
fn draw(spec: &ChartSpec) -> Option<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE_PX).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let weeks = spec.weeks.len().max(1);
        let highest = spec
            .series
            .iter()
            .flat_map(|(_, values)| values.iter().flatten())
            .fold(0.0f64, |max, v| max.max(*v));
        let y_top = spec.y_max.unwrap_or(if highest > 0.0 { highest * 1.15 } else { 1.0 });
        let mut chart = ChartBuilder::on(&root)
            .caption(&spec.title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d((0..weeks).into_segmented(), 0.0..y_top)
            .ok()?;
        let label = |value: &SegmentValue<usize>| match value {
            SegmentValue::CenterOf(index) | SegmentValue::Exact(index) => {
                spec.weeks.get(*index).map(|week| short_week(week)).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(weeks.min(13))
            .x_label_formatter(&label)
            .y_desc(spec.y_label.as_str())
            .label_style(("sans-serif", 12))
            .draw()
            .ok()?;
        for (index, (name, values)) in spec.series.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let points: Vec<(SegmentValue<usize>, f64)> = values
                .iter()
                .enumerate()
                .filter_map(|(week, value)| value.map(|value| (SegmentValue::CenterOf(week), value)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .ok()?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|point| Circle::new(point, 3, colour.filled()))).ok()?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE)
            .border_style(BLACK)
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_svg_with_its_title_weeks_and_a_gap_where_a_week_has_no_value() {
        let spec = ChartSpec {
            title: "处理时长 · dept/market-supervision".into(),
            y_label: "小时".into(),
            weeks: vec!["2026-11-23".into(), "2026-11-30".into(), "2026-12-07".into()],
            series: vec![
                ("p50".into(), vec![Some(2.0), None, Some(6.0)]),
                ("p90".into(), vec![Some(24.0), None, Some(48.0)]),
            ],
            y_max: None,
        };
        let svg = draw(&spec).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        for text in ["处理时长 · dept/market-supervision", "小时", "11-30", "12-07", "p50", "p90"] {
            assert!(svg.contains(text), "{text} in {svg}");
        }
        assert!(!svg.contains("style="), "no inline style: the console's CSP forbids it");
        assert_eq!(svg.matches("<circle").count(), 4, "a point for each value, none for the empty week");
        assert_eq!(
            (time_unit(5_000).1, time_unit(3 * 3_600_000).1),
            ("dashboard.axis-seconds", "dashboard.axis-hours")
        );
    }
}
