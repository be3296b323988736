//! `/demands/new`: a street worker files a demand for another
//! organisation's dataset, in two steps without script (the dataset, then
//! its fields and the rest), and follows the organisation's demands:
//! waiting, granted, or refused with the owner's reason.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use civmesh_policy::model::{SharingCategory, NAME_BYTES_MAX, REASON_BYTES_MAX};
use civmesh_policy::{Applied, Command, DemandSpec, DemandStatus};

use super::labels::{basis_choices, basis_key, basis_value, class_key, demand_state, parse_basis, Choice};
use super::{day_end, note_number, posted, Errors, Posted};
use crate::api::grants::{catalog_entries, demand_views, CatalogEntry};
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::{error_page, render};
use crate::console::{Frame, Visit};

/// The demands of the organisation the page lists at most (the newest).
const OWN_DEMANDS_SHOWN_MAX: usize = 200;

/// A dataset the worker may ask for.
struct DatasetOption {
    id: String,
    label: String,
}

/// A field of the chosen dataset, as a checkbox.
struct FieldOption {
    name: String,
    class_key: &'static str,
    sensitive: bool,
    checked: bool,
    /// Whether a grant the organisation holds already releases it.
    granted: bool,
}

/// One of the organisation's demands.
struct OwnDemand {
    id: u64,
    dataset: String,
    fields: String,
    purpose: String,
    basis_key: &'static str,
    filed: String,
    until: String,
    state_key: &'static str,
    state_detail: String,
}

/// The demand just filed.
struct Filed {
    id: u64,
    state_key: &'static str,
    state_detail: String,
}

#[derive(Template)]
#[template(path = "console/demand_new.html")]
struct DemandPage {
    frame: Frame,
    catalog: Vec<CatalogEntry>,
    datasets: Vec<DatasetOption>,
    chosen: String,
    chosen_label: String,
    fields: Vec<FieldOption>,
    purpose: String,
    basis: String,
    bases: Vec<Choice>,
    reason: String,
    until: String,
    errors: Errors,
    /// The log's refusal, if it refused the demand.
    failure: String,
    filed: Option<Filed>,
    own: Vec<OwnDemand>,
    name_bytes_max: usize,
    reason_bytes_max: usize,
}

impl DemandPage {
    /// The first step, with the organisation's demands.
    fn new(state: &Shared, visit: &Visit) -> Self {
        let me = state.identity.org.to_string();
        let catalog: Vec<CatalogEntry> = catalog_entries(state)
            .into_iter()
            .filter(|entry| entry.owner != me && entry.sharing != SharingCategory::NotShared)
            .collect();
        let datasets = catalog
            .iter()
            .map(|entry| DatasetOption {
                id: entry.id.clone(),
                label: format!("{} · {} ({})", entry.title, entry.id, entry.owner),
            })
            .collect();
        DemandPage {
            frame: Frame::of(visit),
            catalog,
            datasets,
            chosen: String::new(),
            chosen_label: String::new(),
            fields: Vec::new(),
            purpose: String::new(),
            basis: basis_value(civmesh_policy::model::LegalBasis::StatutoryDuty).to_string(),
            bases: basis_choices(),
            reason: String::new(),
            until: String::new(),
            errors: Errors::default(),
            failure: String::new(),
            filed: None,
            own: own_demands(state),
            name_bytes_max: NAME_BYTES_MAX,
            reason_bytes_max: REASON_BYTES_MAX,
        }
    }

    /// Chooses dataset `id` (the second step), its fields checked where
    /// `checked` says; false if the worker may not ask for it.
    fn choose(&mut self, id: &str, checked: impl Fn(&str) -> bool) -> bool {
        let Some(entry) = self.catalog.iter().find(|entry| entry.id == id) else { return false };
        self.chosen = entry.id.clone();
        self.chosen_label = format!("{} · {}", entry.title, entry.id);
        self.fields = entry
            .fields
            .iter()
            .map(|field| FieldOption {
                name: field.spec.name.clone(),
                class_key: class_key(field.spec.class),
                sensitive: field.spec.class.is_sensitive(),
                checked: checked(&field.spec.name),
                granted: !field.granted_by.is_empty(),
            })
            .collect();
        true
    }

    /// The demand the second step's form describes; `None` (with the
    /// messages next to the fields) if it is not complete and valid.
    fn read(&mut self, form: &Posted, now_ms: u64) -> Option<DemandSpec> {
        let purpose = self.errors.text("purpose", posted(form, "purpose"), NAME_BYTES_MAX);
        let reason = self.errors.text("reason", posted(form, "reason"), REASON_BYTES_MAX);
        self.purpose = posted(form, "purpose").to_string();
        self.reason = posted(form, "reason").to_string();
        self.until = posted(form, "until").to_string();
        self.basis = posted(form, "legal_basis").to_string();
        let fields: std::collections::BTreeSet<String> =
            self.fields.iter().filter(|field| field.checked).map(|field| field.name.clone()).collect();
        if fields.is_empty() {
            self.errors.add("fields", "officer.fields-required");
        }
        let legal_basis = parse_basis(&self.basis);
        if legal_basis.is_none() {
            self.errors.add("legal_basis", "officer.basis-invalid");
        }
        let until_ms = match self.until.as_str() {
            "" => None,
            text => match day_end(text) {
                Ok(end_ms) if end_ms > now_ms => Some(end_ms),
                Ok(_) => {
                    self.errors.add("until", "officer.date-past");
                    None
                }
                Err(key) => {
                    self.errors.add("until", key);
                    None
                }
            },
        };
        let legal_basis = legal_basis.filter(|_| self.errors.is_empty())?;
        Some(DemandSpec { dataset: self.chosen.clone(), fields, purpose, legal_basis, reason, until_ms })
    }
}

/// The organisation's demands, newest first.
fn own_demands(state: &Shared) -> Vec<OwnDemand> {
    let me = state.identity.org.to_string();
    let mut views: Vec<_> = demand_views(state).into_iter().filter(|view| view.requester == me).collect();
    views.sort_by_key(|view| std::cmp::Reverse((view.filed_at_ms, view.id)));
    views
        .into_iter()
        .take(OWN_DEMANDS_SHOWN_MAX)
        .map(|view| {
            let (state_key, state_detail) = demand_state(&view.status);
            OwnDemand {
                id: view.id,
                dataset: view.dataset,
                fields: view.fields.join(", "),
                purpose: view.purpose,
                basis_key: basis_key(view.legal_basis),
                filed: civmesh_policy::evaluation::format_time(view.filed_at_ms),
                until: view.until_ms.map(civmesh_policy::evaluation::format_date_end).unwrap_or_default(),
                state_key,
                state_detail,
            }
        })
        .collect()
}

/// `GET /demands/new`: the first step; with `?dataset=ID`, the second;
/// with `?filed=N`, the note that demand N was filed and where it stands.
pub(super) async fn form(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Posted>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::StreetWorker]) {
        return *refused;
    }
    let mut page = DemandPage::new(&state, &visit);
    if let Some(id) = note_number(query.get("filed")) {
        let (state_key, state_detail) = page.own.iter().find(|own| own.id == id).map_or_else(
            || demand_state(&DemandStatus::Waiting),
            |own| (own.state_key, own.state_detail.clone()),
        );
        page.filed = Some(Filed { id, state_key, state_detail });
    }
    let chosen = posted(&query, "dataset");
    if !chosen.is_empty() && !page.choose(chosen, |_| false) {
        page.errors.add("dataset", "officer.dataset-unknown");
        return render(&page, StatusCode::BAD_REQUEST);
    }
    render(&page, StatusCode::OK)
}

/// `POST /demands/new`: files the demand (`FileDemandWithReason`, naming
/// the operator), then shows its number; bad input is shown next to its
/// field, with nothing committed.
pub(super) async fn file(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Posted>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require_posted(&[Role::StreetWorker], posted(&form, "csrf")) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let mut page = DemandPage::new(&state, &visit);
    if !page.choose(posted(&form, "dataset"), |name| form.contains_key(&format!("field:{name}"))) {
        page.errors.add("dataset", "officer.dataset-unknown");
        return render(&page, StatusCode::BAD_REQUEST);
    }
    let Some(spec) = page.read(&form, civmesh_certs::now_unix_millis()) else {
        return render(&page, StatusCode::BAD_REQUEST);
    };
    match super::super::actions::commit(&state, &session.operator, Command::FileDemandWithReason(spec)).await
    {
        Ok(Applied::DemandFiled(id)) => Redirect::to(&format!("/demands/new?filed={id}")).into_response(),
        Ok(_) => error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal"),
        Err(error) => {
            page.failure = error.message().to_string();
            render(&page, error.status())
        }
    }
}
