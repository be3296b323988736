//! `/issued-grants`: the grants this organisation issued, newest first,
//! with their window and state; each one not yet revoked can be revoked
//! with a reason.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use civmesh_policy::evaluation::format_time;
use civmesh_policy::model::{GrantId, REASON_BYTES_MAX};
use civmesh_policy::Command;

use super::labels::{basis_key, grant_state};
use super::{check_text, note_number, posted, Posted};
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::{error_page, render, scope_text};
use crate::console::{Frame, Visit};

/// The issued grants one page shows at most (the newest).
const ISSUED_GRANTS_SHOWN_MAX: usize = 500;

/// One issued grant.
struct IssuedRow {
    id: GrantId,
    dataset: String,
    grantee: String,
    fields: String,
    masked: String,
    purpose: String,
    basis_key: &'static str,
    scope: String,
    valid_from: String,
    valid_until: String,
    demand: String,
    state_key: &'static str,
    state_detail: String,
    revocable: bool,
    revoke_reason: String,
    revoke_error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/issued_grants.html")]
struct IssuedPage {
    frame: Frame,
    rows: Vec<IssuedRow>,
    issued: Option<u64>,
    revoked: Option<u64>,
    failure: String,
    reason_bytes_max: usize,
}

impl IssuedPage {
    fn new(state: &Shared, visit: &Visit) -> Self {
        IssuedPage {
            frame: Frame::of(visit),
            rows: issued_rows(state),
            issued: None,
            revoked: None,
            failure: String::new(),
            reason_bytes_max: REASON_BYTES_MAX,
        }
    }
}

/// The grants this organisation issued, newest first.
fn issued_rows(state: &Shared) -> Vec<IssuedRow> {
    let (me, now_ms) = (state.identity.org.clone(), civmesh_certs::now_unix_millis());
    state.log.state().read(|applied| {
        applied
            .policy
            .grants
            .values()
            .rev()
            .filter(|grant| grant.grantor == me)
            .take(ISSUED_GRANTS_SHOWN_MAX)
            .map(|grant| {
                let (state_key, state_detail) = grant_state(grant, now_ms);
                IssuedRow {
                    id: grant.id,
                    dataset: grant.dataset.clone(),
                    grantee: grant.grantee.to_string(),
                    fields: grant.fields.iter().cloned().collect::<Vec<_>>().join(", "),
                    masked: grant.masking.keys().cloned().collect::<Vec<_>>().join(", "),
                    purpose: grant.purpose.clone(),
                    basis_key: basis_key(grant.legal_basis),
                    scope: scope_text(grant),
                    valid_from: format_time(grant.valid_from_ms),
                    valid_until: format_time(grant.valid_until_ms),
                    demand: grant.demand.map(|id| format!("#{id}")).unwrap_or_default(),
                    state_key,
                    state_detail,
                    revocable: grant.revoked.is_none(),
                    revoke_reason: String::new(),
                    revoke_error: None,
                }
            })
            .collect()
    })
}

/// `GET /issued-grants`: the grants issued; `?issued=N` and `?revoked=N`
/// note what was just done.
pub(super) async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Posted>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::PolicyOfficer]) {
        return *refused;
    }
    let mut page = IssuedPage::new(&state, &visit);
    page.issued = note_number(query.get("issued"));
    page.revoked = note_number(query.get("revoked"));
    render(&page, StatusCode::OK)
}

/// `POST /issued-grants/{id}/revoke`: revokes one of this organisation's
/// grants with the reason given (`RevokeGrant`, naming the operator); an
/// empty or over-long reason is shown next to the field, nothing committed.
pub(super) async fn revoke(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<GrantId>,
    Form(form): Form<Posted>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require_posted(&[Role::PolicyOfficer], posted(&form, "csrf")) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let me = &state.identity.org;
    let found = state.log.state().read(|applied| {
        applied
            .policy
            .grants
            .get(&id)
            .filter(|grant| grant.grantor == *me)
            .map(|grant| grant.revoked.is_none())
    });
    match found {
        None => return error_page(&visit, StatusCode::NOT_FOUND, "officer.grant-unknown"),
        Some(false) => return error_page(&visit, StatusCode::CONFLICT, "officer.grant-already-revoked"),
        Some(true) => {}
    }
    let reason = match check_text(posted(&form, "reason"), REASON_BYTES_MAX) {
        Ok(reason) => reason,
        Err(key) => {
            let mut page = IssuedPage::new(&state, &visit);
            if let Some(row) = page.rows.iter_mut().find(|row| row.id == id) {
                row.revoke_error = Some(key);
                row.revoke_reason = posted(&form, "reason").to_string();
            }
            return render(&page, StatusCode::BAD_REQUEST);
        }
    };
    let command = Command::RevokeGrant { grant_id: id, reason };
    match crate::console::actions::commit(&state, &session.operator, command).await {
        Ok(_) => Redirect::to(&format!("/issued-grants?revoked={id}")).into_response(),
        Err(error) => {
            let mut page = IssuedPage::new(&state, &visit);
            page.failure = error.message().to_string();
            render(&page, error.status())
        }
    }
}
