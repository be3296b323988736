//! What the street's node holds that other owners released to it: the
//! received store, by source (a subscription's copy, or the query answers
//! and listing pages it chose to keep), each under its grant and that
//! grant's retention (`/received`), and a source's records a page at a
//! time (`/received/records`, `received_records.rs`). These pages read
//! only this node's store and replica: the owner is not asked, so nothing
//! is logged by looking.

#[path = "received_records.rs"]
mod records;

use askama::Template;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::operators::Role;
use super::pages::{error_page, render};
use super::{Frame, Visit};
use crate::api::received::{received_rows, ReceivedSource};
use crate::api::Shared;

/// The largest form body these pages take, in bytes (a source id and a cursor).
const FORM_BYTES_MAX: usize = 4 * 1024;
/// Milliseconds in an hour and in a day.
const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 86_400_000.0;

/// This area's routes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/received", get(list))
        .route("/received/records", post(records::page))
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
}

/// One source of received copies as the console shows it.
pub(super) struct SourceRow {
    /// Its id (hex), posted to open its records.
    id: String,
    /// `received.kind-subscription` or `received.kind-kept`.
    kind_key: &'static str,
    dataset: String,
    owner: String,
    purpose: String,
    grant: Option<u64>,
    held: u64,
    /// ISO 8601, Asia/Shanghai.
    since: String,
    /// How long copies may be kept: the amount ("" if the grant does not say)…
    kept_amount: String,
    /// … and its unit's message key.
    kept_unit: &'static str,
    /// The grant's state's message key; "" without a grant.
    state_key: &'static str,
    /// Whether the grant has ended.
    ended: bool,
    /// The fields released, in the order subscribed or asked.
    fields: Vec<String>,
}

impl SourceRow {
    /// The row of `source`, as `GET /v1/received` gives it.
    fn of(source: ReceivedSource) -> Self {
        let kind_key =
            if source.source == "kept" { "received.kind-kept" } else { "received.kind-subscription" };
        let ended = source.grant.is_some() && !source.grant_in_force;
        let state_key = match (source.grant, source.grant_in_force, source.records_held) {
            (None, _, _) => "",
            (Some(_), true, _) => "received.in-force",
            (Some(_), false, 0) => "received.ended-deleted",
            (Some(_), false, _) => "received.ended",
        };
        let (kept_amount, kept_unit) = source.retain_days.map_or((String::new(), ""), kept_for);
        SourceRow {
            id: source.id,
            kind_key,
            kept_amount,
            kept_unit,
            dataset: source.dataset,
            owner: source.owner_org,
            purpose: source.purpose,
            grant: source.grant,
            held: source.records_held,
            since: source.since,
            state_key,
            ended,
            fields: source.fields,
        }
    }
}

/// A retention of `days` as a person reads it: an amount and its unit's
/// key, in days from a day up, in hours from an hour up, else in seconds
/// (a test's short retention); at most one decimal.
fn kept_for(days: f64) -> (String, &'static str) {
    let ms = days * DAY_MS;
    if ms >= DAY_MS {
        (amount(days), "received.days")
    } else if ms >= HOUR_MS {
        (amount(ms / HOUR_MS), "received.hours")
    } else {
        (amount(ms / 1_000.0), "received.seconds")
    }
}

/// `value` with at most one decimal, none if it is whole.
fn amount(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_string)
}

/// Every source this node holds copies from, subscriptions first, each
/// kind oldest first; the error page
/// if the store cannot be read.
pub(super) fn sources(state: &Shared, visit: &Visit) -> Result<Vec<SourceRow>, Box<Response>> {
    match received_rows(state, civmesh_certs::now_unix_millis()) {
        Ok(rows) => {
            let mut rows: Vec<SourceRow> = rows.into_iter().map(SourceRow::of).collect();
            rows.sort_by(|a, b| {
                let key = |row: &SourceRow| {
                    (row.kind_key == "received.kind-kept", row.since.clone(), row.id.clone())
                };
                key(a).cmp(&key(b))
            });
            Ok(rows)
        }
        Err(error) => {
            tracing::warn!(%error, "the received store could not be read");
            Err(Box::new(error_page(visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal")))
        }
    }
}

/// `/received`.
#[derive(Template)]
#[template(path = "console/received.html")]
struct ReceivedPage {
    frame: Frame,
    sources: Vec<SourceRow>,
}

/// `GET /received`: one row per source.
async fn list(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::StreetWorker]) {
        return *refused;
    }
    match sources(&state, &visit) {
        Ok(sources) => render(&ReceivedPage { frame: Frame::of(&visit), sources }, StatusCode::OK),
        Err(failed) => *failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_read_in_the_largest_whole_unit() {
        let cases = [
            (365.0, "365", "received.days"),
            (1.0, "1", "received.days"),
            (1.5, "1.5", "received.days"),
            (0.5, "12", "received.hours"),
            (1.0 / 24.0, "1", "received.hours"),
            (8_000.0 / DAY_MS, "8", "received.seconds"),
            (1_500.0 / DAY_MS, "1.5", "received.seconds"),
        ];
        for (days, expected, unit) in cases {
            assert_eq!(kept_for(days), (expected.to_string(), unit), "{days} days");
        }
    }

    fn source(grant: Option<u64>, in_force: bool, held: u64) -> ReceivedSource {
        ReceivedSource {
            id: "ab".repeat(32),
            source: "kept".into(),
            dataset: "enterprises".into(),
            owner_org: "dept/market-supervision".into(),
            grant,
            purpose: "street-inspection".into(),
            fields: vec!["name".into()],
            records_held: held,
            since: "2026-12-04T18:00:00+08:00".into(),
            retain_days: Some(365.0),
            grant_in_force: in_force,
        }
    }

    #[test]
    fn a_source_says_whether_its_grant_still_allows_its_copies() {
        let cases = [
            (Some(1), true, 5, "received.in-force", false),
            (Some(1), false, 5, "received.ended", true),
            (Some(1), false, 0, "received.ended-deleted", true),
            (None, false, 5, "", false),
        ];
        for (grant, in_force, held, state_key, ended) in cases {
            let row = SourceRow::of(source(grant, in_force, held));
            assert_eq!((row.state_key, row.ended), (state_key, ended), "{grant:?} {in_force} {held}");
            assert_eq!(row.kind_key, "received.kind-kept");
        }
    }
}
