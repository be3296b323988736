//! Demands and grants in the console. A street worker files a demand for
//! another organisation's dataset and follows it (`/demands/new`); the
//! owner's policy officer (数据管理员) sees the demands waiting on its
//! datasets with the catalog match (`/demands`), issues a grant from one in
//! a form that defaults to the demand's fields, with the warnings to
//! confirm (`/demands/{id}/grant`), refuses one with a reason, and revokes
//! the grants the organisation issued (`/issued-grants`). Every decision is
//! a policy command naming the operator ([`super::actions::commit`]).

#[path = "officer_demand.rs"]
mod demand;
#[path = "officer_grant.rs"]
mod grant;
#[path = "officer_issued.rs"]
mod issued;
#[path = "officer_labels.rs"]
mod labels;
#[path = "officer_match.rs"]
mod matching;
#[path = "officer_waiting.rs"]
mod waiting;

use std::collections::BTreeMap;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use civmesh_certs::UnixMillis;

use crate::api::Shared;

/// The largest form body these pages take, in bytes (a dataset's fields at
/// most, each with its masking, and the longest texts).
const FORM_BYTES_MAX: usize = 64 * 1024;

/// This area's routes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/demands/new", get(demand::form).post(demand::file))
        .route("/demands", get(waiting::list))
        .route("/demands/{id}/refuse", post(waiting::refuse))
        .route("/demands/{id}/grant", get(grant::form).post(grant::issue))
        .route("/issued-grants", get(issued::list))
        .route("/issued-grants/{id}/revoke", post(issued::revoke))
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
}

/// A posted form, by field name (checkboxes and per-field inputs are named
/// `field:NAME`, `mask:NAME`, …, so every name occurs once).
type Posted = BTreeMap<String, String>;

/// The trimmed value of `name` in `posted`, or "".
fn posted<'a>(form: &'a Posted, name: &str) -> &'a str {
    form.get(name).map_or("", |value| value.trim())
}

/// Messages next to the fields they concern: (field id, message key).
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<(String, &'static str)>);

impl Errors {
    /// Notes `key` next to the field `id`.
    fn add(&mut self, id: impl Into<String>, key: &'static str) {
        self.0.push((id.into(), key));
    }

    /// The message next to field `id`, if any.
    pub(super) fn get(&self, id: &str) -> Option<&'static str> {
        self.0.iter().find(|(field, _)| field == id).map(|(_, key)| *key)
    }

    /// Whether there is no message.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text of field `id` if it is 1..=`bytes_max` bytes; else a message.
    fn text(&mut self, id: &str, value: &str, bytes_max: usize) -> String {
        match check_text(value, bytes_max) {
            Ok(text) => text,
            Err(key) => {
                self.add(id, key);
                value.to_string()
            }
        }
    }
}

/// `value`, trimmed, if it is 1..=`bytes_max` bytes; else the message key.
fn check_text(value: &str, bytes_max: usize) -> Result<String, &'static str> {
    let text = value.trim();
    if text.is_empty() {
        Err("officer.required")
    } else if text.len() > bytes_max {
        Err("officer.too-long")
    } else {
        Ok(text.to_string())
    }
}

/// The start of a `YYYY-MM-DD` day in Asia/Shanghai.
fn day_start(text: &str) -> Result<UnixMillis, &'static str> {
    civmesh_policy::evaluation::parse_date(text.trim()).map_err(|_| "officer.date-invalid")
}

/// The end of a `YYYY-MM-DD` day in Asia/Shanghai (the next midnight).
fn day_end(text: &str) -> Result<UnixMillis, &'static str> {
    civmesh_policy::evaluation::parse_date_end(text.trim()).map_err(|_| "officer.date-invalid")
}

/// A number in a note parameter (`?filed=7`), if it is one.
fn note_number(value: Option<&String>) -> Option<u64> {
    value.and_then(|text| text.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_required_and_bounded_in_bytes() {
        assert_eq!(check_text("  为了走访  ", 20), Ok("为了走访".to_string()));
        assert_eq!(check_text("   ", 20), Err("officer.required"));
        // 7 characters, 21 bytes.
        assert_eq!(check_text("七个汉字的用途", 20), Err("officer.too-long"));
        let mut errors = Errors::default();
        assert_eq!(errors.text("reason", "", 10), "");
        assert_eq!(errors.get("reason"), Some("officer.required"));
        assert!(errors.get("purpose").is_none() && !errors.is_empty());
    }

    #[test]
    fn dates_are_days_in_shanghai() {
        let start = day_start("2026-03-01").unwrap();
        assert_eq!(civmesh_policy::evaluation::format_time(start), "2026-03-01T00:00:00+08:00");
        assert_eq!(day_end("2026-03-01").unwrap(), start + 86_400_000);
        for bad in ["2026-02-30", "2026-13-01", "tomorrow", "", "01/03/2026"] {
            assert_eq!(day_start(bad), Err("officer.date-invalid"), "{bad}");
            assert_eq!(day_end(bad), Err("officer.date-invalid"), "{bad}");
        }
        assert_eq!(note_number(Some(&"12".to_string())), Some(12));
        assert_eq!(note_number(Some(&"x".to_string())), None);
    }
}
