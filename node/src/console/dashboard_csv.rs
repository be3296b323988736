//! The dashboard's downloads, `/dashboard.csv` and `/dashboard/streets.csv`:
//! every department's or street's weekly rows, week by week, from the
//! evaluation the page was made from while it is kept; every text cell that
//! begins like a formula quoted (CSV injection), numbers as they are.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use civmesh_certs::now_unix_millis;
use civmesh_policy::evaluation::{rows_by_bucket, DepartmentRow, StreetRow};
use serde::Serialize;

use super::cache::{figures, Figures};
use super::PeriodParams;
use crate::api::Shared;
use crate::console::pages::error_page;
use crate::console::Visit;

/// What begins a cell a spreadsheet would read as a formula (OWASP's list
/// for CSV injection).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `text` as a spreadsheet shows it, never as a formula: with a leading
/// `'` if it begins like one.
fn cell_text(text: &str) -> String {
    if text.starts_with(FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// A CSV row whose text cells can be made safe for spreadsheets.
trait SafeRow: Serialize {
    /// The row with every text cell through [`cell_text`]; numbers as they are.
    fn safe(&self) -> Self;
}

impl SafeRow for DepartmentRow {
    fn safe(&self) -> Self {
        DepartmentRow {
            bucket: cell_text(&self.bucket),
            owner: cell_text(&self.owner),
            dataset: cell_text(&self.dataset),
            ..self.clone()
        }
    }
}

impl SafeRow for StreetRow {
    fn safe(&self) -> Self {
        StreetRow { bucket: cell_text(&self.bucket), street: cell_text(&self.street), ..self.clone() }
    }
}

/// `rows` as CSV with a header row (none without rows), made safe.
fn csv_bytes<'a, T: SafeRow + 'a>(rows: impl Iterator<Item = &'a T>) -> Option<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row.safe()).ok()?;
    }
    writer.into_inner().ok()
}

/// The rows of the period `params` names, as CSV with a header row.
async fn csv_of(
    state: Shared,
    headers: HeaderMap,
    params: PeriodParams,
    to_csv: fn(&Figures) -> Option<Vec<u8>>,
    filename: &str,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&super::EVERYONE) {
        return *refused;
    }
    let Some(query) = params.query(now_unix_millis()) else {
        return error_page(&visit, StatusCode::BAD_REQUEST, "dashboard.period-too-long");
    };
    let Ok(figures) = figures(&state, &query, params.at).await else {
        return error_page(&visit, StatusCode::SERVICE_UNAVAILABLE, "dashboard.unavailable");
    };
    let Some(bytes) = to_csv(&figures) else {
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

/// `GET /dashboard.csv`: every department's weekly rows, week by week.
pub(super) async fn departments_csv(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let csv = |figures: &Figures| csv_bytes(rows_by_bucket(&figures.departments, |one| one.rows.as_slice()));
    csv_of(state, headers, params, csv, "civmesh-departments-weekly.csv").await
}

/// `GET /dashboard/streets.csv`: every street's weekly rows, week by week.
pub(super) async fn streets_csv(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(params): Query<PeriodParams>,
) -> Response {
    let csv = |figures: &Figures| csv_bytes(rows_by_bucket(&figures.streets, |one| one.rows.as_slice()));
    csv_of(state, headers, params, csv, "civmesh-streets-weekly.csv").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cells_that_begin_like_a_formula_are_quoted_and_numbers_stay_numbers() {
        let cases = [
            ("=HYPERLINK(\"https://evil.example\",\"x\")", "'=HYPERLINK(\"https://evil.example\",\"x\")"),
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("dept/market-supervision", "dept/market-supervision"),
            ("market/a=b", "market/a=b"),
            ("", ""),
            ("2026-11-30", "2026-11-30"),
        ];
        for (text, cell) in cases {
            assert_eq!(cell_text(text), cell, "{text:?}");
        }
        let row = DepartmentRow {
            bucket: "2026-11-30".into(),
            owner: "dept/market-supervision".into(),
            dataset: "=HYPERLINK(\"https://evil.example\")".into(),
            submitted: 3,
            acceptance_rate: Some(0.5),
            turnaround_ms_p50: Some(7_200_000),
            ..DepartmentRow::default()
        };
        let csv = String::from_utf8(csv_bytes([row].iter()).unwrap()).unwrap();
        let line = csv.lines().nth(1).unwrap();
        assert!(
            line.starts_with("2026-11-30,dept/market-supervision,\"'=HYPERLINK(\"\"https://evil.example\"\")\",3,0,0,0.5,7200000,"),
            "{line}"
        );
        let street = StreetRow {
            bucket: "2026-11-30".into(),
            street: "-1+1".into(),
            submitted: 2,
            share_accepted: None,
            applied: 1,
            mistakes: 0,
        };
        let csv = String::from_utf8(csv_bytes([street].iter()).unwrap()).unwrap();
        assert_eq!(csv.lines().nth(1), Some("2026-11-30,'-1+1,2,,1,0"));
    }

    /// Every text field of a row, whatever fields it gains, is made safe:
    /// each is set to a formula through serde and none comes out as one.
    fn no_formula_in<T: SafeRow + serde::de::DeserializeOwned>(row: &T) {
        let mut value = serde_json::to_value(row).unwrap();
        let texts: Vec<String> = value
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, field)| field.is_string())
            .map(|(name, _)| name.clone())
            .collect();
        assert!(!texts.is_empty());
        for name in &texts {
            value[name.as_str()] = serde_json::Value::String("=1+1".into());
        }
        let hostile: T = serde_json::from_value(value).unwrap();
        let csv = String::from_utf8(csv_bytes([hostile].iter()).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let header = reader.headers().unwrap().clone();
        let record = reader.records().next().unwrap().unwrap();
        for (name, cell) in header.iter().zip(record.iter()) {
            assert!(!cell.starts_with(FORMULA_STARTS), "{name}: {cell:?}");
            assert_eq!(cell == "'=1+1", texts.iter().any(|text| text == name), "{name}: {cell:?}");
        }
    }

    #[test]
    fn every_text_cell_of_both_downloads_is_safe() {
        no_formula_in(&DepartmentRow::default());
        no_formula_in(&StreetRow {
            bucket: String::new(),
            street: String::new(),
            submitted: 0,
            share_accepted: None,
            applied: 0,
            mistakes: 0,
        });
    }
}
