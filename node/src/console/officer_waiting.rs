//! `/demands`: the demands waiting on this organisation's datasets, oldest
//! first, each with its catalog match, a link to issue a grant from it and
//! a form to refuse it with a reason.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use civmesh_certs::OrgId;
use civmesh_policy::model::{Demand, DemandId, FieldClass, REASON_BYTES_MAX};
use civmesh_policy::{Command, DemandStatus, PolicyState};

use super::labels::{basis_key, class_key};
use super::matching::{demand_match, report, DemandMatch};
use super::{check_text, note_number, posted, Posted};
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::{error_page, render};
use crate::console::{Frame, Visit};

/// The waiting demands one page shows at most (the oldest).
const WAITING_DEMANDS_SHOWN_MAX: usize = 200;

/// A requested field against the catalog.
struct FieldRow {
    name: String,
    /// The class's key, or `officer.class-missing`.
    class_key: &'static str,
    sensitive: bool,
    negative_listed: bool,
}

/// A grant the requester already holds on the dataset.
struct HeldRow {
    id: u64,
    fields: String,
    purpose: String,
    until: String,
    expiring: bool,
}

/// One waiting demand.
struct WaitingRow {
    id: DemandId,
    requester: String,
    dataset: String,
    purpose: String,
    basis_key: &'static str,
    reason: String,
    filed: String,
    until: String,
    fields: Vec<FieldRow>,
    held: Vec<HeldRow>,
    covered: bool,
    refuse_reason: String,
    refuse_error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/officer_demands.html")]
struct WaitingPage {
    frame: Frame,
    rows: Vec<WaitingRow>,
    refused: Option<u64>,
    failure: String,
    reason_bytes_max: usize,
}

impl WaitingPage {
    fn new(state: &Shared, visit: &Visit) -> Self {
        WaitingPage {
            frame: Frame::of(visit),
            rows: waiting_rows(state),
            refused: None,
            failure: String::new(),
            reason_bytes_max: REASON_BYTES_MAX,
        }
    }
}

/// Whether `demand` asks for a dataset `org` owns.
pub(super) fn owned_by(policy: &PolicyState, demand: &Demand, org: &OrgId) -> bool {
    policy.owns(org, &demand.dataset)
}

/// The demands waiting on this organisation's datasets, oldest first.
fn waiting_rows(state: &Shared) -> Vec<WaitingRow> {
    let (me, now_ms) = (state.identity.org.clone(), civmesh_certs::now_unix_millis());
    state.log.state().read(|applied| {
        let policy = &applied.policy;
        let mut waiting: Vec<&Demand> = policy
            .demands
            .values()
            .filter(|demand| owned_by(policy, demand, &me))
            .filter(|demand| policy.demand_status(demand) == DemandStatus::Waiting)
            .collect();
        waiting.sort_by_key(|demand| (demand.filed_at_ms, demand.id));
        let report = report(policy, now_ms);
        waiting
            .into_iter()
            .take(WAITING_DEMANDS_SHOWN_MAX)
            .map(|demand| waiting_row(demand, demand_match(policy, &report, demand, now_ms)))
            .collect()
    })
}

fn waiting_row(demand: &Demand, matched: DemandMatch) -> WaitingRow {
    let format_time = civmesh_policy::evaluation::format_time;
    WaitingRow {
        id: demand.id,
        requester: demand.requester.to_string(),
        dataset: demand.dataset.clone(),
        purpose: demand.purpose.clone(),
        basis_key: basis_key(demand.legal_basis),
        reason: demand.reason.clone().unwrap_or_default(),
        filed: format_time(demand.filed_at_ms),
        until: demand.until_ms.map(civmesh_policy::evaluation::format_date_end).unwrap_or_default(),
        fields: matched
            .fields
            .into_iter()
            .map(|field| FieldRow {
                name: field.name,
                class_key: field.class.map_or("officer.class-missing", class_key),
                sensitive: field.class.is_some_and(FieldClass::is_sensitive),
                negative_listed: field.negative_listed,
            })
            .collect(),
        held: matched
            .held
            .into_iter()
            .map(|held| HeldRow {
                id: held.id,
                fields: held.fields.join(", "),
                purpose: held.purpose,
                until: format_time(held.valid_until_ms),
                expiring: held.expiring,
            })
            .collect(),
        covered: matched.covered,
        refuse_reason: String::new(),
        refuse_error: None,
    }
}

/// `GET /demands`: the waiting demands; `?refused=N` notes that demand N
/// was refused.
pub(super) async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Posted>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::PolicyOfficer]) {
        return *refused;
    }
    let mut page = WaitingPage::new(&state, &visit);
    page.refused = note_number(query.get("refused"));
    render(&page, StatusCode::OK)
}

/// Why demand `id` cannot be decided by this organisation now, as an error
/// page: unknown or another's (404), or no longer waiting (409).
pub(super) fn check_waiting(state: &Shared, visit: &Visit, id: DemandId) -> Result<(), Box<Response>> {
    let me = &state.identity.org;
    let found = state.log.state().read(|applied| {
        let policy = &applied.policy;
        let demand = policy.demands.get(&id).filter(|demand| owned_by(policy, demand, me))?;
        Some(policy.demand_status(demand) == DemandStatus::Waiting)
    });
    match found {
        None => Err(Box::new(error_page(visit, StatusCode::NOT_FOUND, "officer.demand-unknown"))),
        Some(false) => Err(Box::new(error_page(visit, StatusCode::CONFLICT, "officer.demand-not-waiting"))),
        Some(true) => Ok(()),
    }
}

/// `POST /demands/{id}/refuse`: refuses the demand with the reason given
/// (`RefuseDemand`, naming the operator); an empty or over-long reason is
/// shown next to the field, with nothing committed.
pub(super) async fn refuse(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<DemandId>,
    Form(form): Form<Posted>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require_posted(&[Role::PolicyOfficer], posted(&form, "csrf")) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    if let Err(answer) = check_waiting(&state, &visit, id) {
        return *answer;
    }
    let reason = match check_text(posted(&form, "reason"), REASON_BYTES_MAX) {
        Ok(reason) => reason,
        Err(key) => {
            let mut page = WaitingPage::new(&state, &visit);
            if let Some(row) = page.rows.iter_mut().find(|row| row.id == id) {
                row.refuse_error = Some(key);
                row.refuse_reason = posted(&form, "reason").to_string();
            }
            return render(&page, StatusCode::BAD_REQUEST);
        }
    };
    let command = Command::RefuseDemand { demand_id: id, reason };
    match crate::console::actions::commit(&state, &session.operator, command).await {
        Ok(_) => Redirect::to(&format!("/demands?refused={id}")).into_response(),
        Err(error) => {
            let mut page = WaitingPage::new(&state, &visit);
            page.failure = error.message().to_string();
            render(&page, error.status())
        }
    }
}
