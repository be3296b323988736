//! The street worker's records: a listing under one of the organisation's
//! grants, a page at a time, each page logged by the owner. Each row opens
//! the record's page (`corrections_record.rs`) by a POST form.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::operators::Role;
use super::pages::{grants_to_me, render};
use super::{Frame, Visit};
use crate::api::Shared;
use crate::query::{ListAnswer, ListFilter, ListSpec};

/// Records on one console page of a listing.
const RECORDS_PAGE_RECORDS: u32 = 100;
/// The page sizes a worker may choose (the owner's bound is larger).
const RECORDS_PAGE_SIZES: [u32; 3] = [RECORDS_PAGE_RECORDS, 200, 500];

/// A grant the worker may list under.
struct GrantChoice {
    id: u64,
    label: String,
}

/// One listed record: its key and its fields in the grant's order.
struct RecordRow {
    key: String,
    values: Vec<String>,
}

/// `/records`.
#[derive(Template)]
#[template(path = "console/records.html")]
struct RecordsPage {
    frame: Frame,
    grants: Vec<GrantChoice>,
    chosen: u64,
    page_size: u32,
    page_sizes: [u32; 3],
    filter_field: String,
    filter_value: String,
    /// The filter's match: the value whole, or its beginning.
    prefix: bool,
    columns: Vec<String>,
    rows: Vec<RecordRow>,
    listed: bool,
    next_cursor: Option<String>,
    error: Option<&'static str>,
    detail: String,
}

impl RecordsPage {
    /// The form alone, the first grant chosen.
    fn empty(visit: &Visit, grants: Vec<GrantChoice>) -> Self {
        let chosen = grants.first().map_or(0, |grant| grant.id);
        RecordsPage {
            frame: Frame::of(visit),
            grants,
            chosen,
            page_size: RECORDS_PAGE_RECORDS,
            page_sizes: RECORDS_PAGE_SIZES,
            filter_field: String::new(),
            filter_value: String::new(),
            prefix: false,
            columns: Vec::new(),
            rows: Vec::new(),
            listed: false,
            next_cursor: None,
            error: None,
            detail: String::new(),
        }
    }
}

/// The grants to list under.
fn choices(state: &Shared) -> Vec<GrantChoice> {
    grants_to_me(state)
        .iter()
        .map(|grant| GrantChoice {
            id: grant.id,
            label: format!("#{} {} ({})", grant.id, grant.dataset, grant.purpose),
        })
        .collect()
}

/// `GET /records`: the listing form.
pub(super) async fn records_form(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::StreetWorker]) {
        return *refused;
    }
    render(&RecordsPage::empty(&visit, choices(&state)), StatusCode::OK)
}

/// `POST /records`: a grant, an optional filter, and where the last page ended.
#[derive(Debug, Deserialize)]
pub(super) struct RecordsForm {
    csrf: String,
    grant: u64,
    #[serde(default)]
    filter_field: String,
    #[serde(default)]
    filter_value: String,
    /// `prefix` to match the value's beginning; else the whole value.
    #[serde(default)]
    filter_match: String,
    #[serde(default)]
    cursor: String,
    /// Records a page (one of [`RECORDS_PAGE_SIZES`]).
    #[serde(default = "default_page_size")]
    page_size: u32,
}

fn default_page_size() -> u32 {
    RECORDS_PAGE_RECORDS
}

/// `POST /records`: one page of the listing, through the owner.
pub(super) async fn records(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<RecordsForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let _session = match visit.require_posted(&[Role::StreetWorker], &form.csrf) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let grants = grants_to_me(&state);
    let mut page = RecordsPage::empty(&visit, choices(&state));
    page.chosen = form.grant;
    page.filter_field = form.filter_field.trim().to_string();
    page.filter_value = form.filter_value.trim().to_string();
    page.prefix = form.filter_match == "prefix";
    let Some(grant) = grants.iter().find(|grant| grant.id == form.grant) else {
        page.error = Some("records.no-grant");
        return render(&page, StatusCode::BAD_REQUEST);
    };
    if !RECORDS_PAGE_SIZES.contains(&form.page_size) {
        page.error = Some("records.page-size");
        return render(&page, StatusCode::BAD_REQUEST);
    }
    page.page_size = form.page_size;
    let filters = if page.filter_field.is_empty() {
        Vec::new()
    } else {
        let (field, value) = (page.filter_field.clone(), page.filter_value.clone());
        if page.prefix {
            vec![ListFilter::Prefix { field, prefix: value }]
        } else {
            vec![ListFilter::Equals { field, value }]
        }
    };
    let spec = ListSpec {
        dataset: grant.dataset.clone(),
        fields: Vec::new(),
        purpose: String::new(),
        grant: Some(grant.id),
        filters,
        page_size: form.page_size,
        cursor: (!form.cursor.is_empty()).then(|| form.cursor.clone()),
        keep: false,
    };
    page.columns = grant.fields.iter().cloned().collect();
    match crate::api::list_page(&state, spec).await {
        Ok(ListAnswer::Page { records, next_cursor, .. }) => {
            page.listed = true;
            page.next_cursor = next_cursor;
            page.rows = records
                .iter()
                .map(|record| RecordRow {
                    key: record.key.clone(),
                    values: page
                        .columns
                        .iter()
                        .map(|field| record.fields.get(field).map(ToString::to_string).unwrap_or_default())
                        .collect(),
                })
                .collect();
            render(&page, StatusCode::OK)
        }
        Ok(ListAnswer::Denied { reason, .. }) => {
            page.error = Some("records.denied");
            page.detail = crate::query::reason_name(reason).unwrap_or_default();
            render(&page, StatusCode::FORBIDDEN)
        }
        Ok(ListAnswer::Refused(refusal)) => {
            page.error = Some("records.refused");
            page.detail = refusal.to_string();
            render(&page, StatusCode::BAD_REQUEST)
        }
        Err(error) => {
            page.error = Some("records.refused");
            page.detail = error.message().to_string();
            render(&page, error.status())
        }
    }
}
