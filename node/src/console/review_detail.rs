//! One correction at the owner (`/review/{id}`): the record as this node's
//! record store holds it now, the proposed change field by field (changed
//! fields marked by a class and in words), the photos (served by
//! `/review/{id}/photos/{index}` with the type their bytes show), the
//! street's reason and evidence, who submitted it and when. The reviewer
//! accepts it, or rejects it with a reason, in their own name.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use civmesh_policy::correction::CorrectionStage;
use serde::Deserialize;

use super::super::operators::Role;
use super::super::pages::{error_page, render};
use super::super::{Frame, Visit};
use super::{correction_id, state_key, submitter, time, track_of, view_on};
use crate::api::Shared;
use crate::corrections::attachments::content_type;
use crate::corrections::{CorrectionError, CorrectionView, OutcomeStatus, Side};

/// One field of the record beside the proposed change.
struct ChangeRow {
    field: String,
    /// The value now, in this node's record store.
    current: String,
    /// The value the correction proposes, if it changes the field.
    proposed: Option<String>,
    /// Whether the proposed value differs from the current one.
    changed: bool,
}

/// A photo (or other attachment) of the correction.
struct PhotoView {
    index: u32,
    /// Whether this node holds it (it may still be on its way).
    held: bool,
    /// Whether its bytes are an image (else it is offered as a download).
    image: bool,
}

/// `/review/{id}`.
#[derive(Template)]
#[template(path = "console/review_correction.html")]
struct ReviewPage {
    frame: Frame,
    id: String,
    dataset: String,
    key: String,
    submitter: String,
    operator: String,
    submitted: String,
    received: String,
    state_key: &'static str,
    reviewable: bool,
    base_version: u64,
    current_version: Option<u64>,
    rows: Vec<ChangeRow>,
    reason: String,
    evidence: String,
    photos: Vec<PhotoView>,
    /// Who decided, and how (the reviewer's reason on a rejection).
    reviewer: String,
    decision_detail: String,
    reject_reason: String,
    reject_error: Option<&'static str>,
    /// The node refused the decision (a key).
    error: Option<&'static str>,
}

/// The rows: every field of the record now, then any the correction adds.
/// A field is changed when the proposed value differs from the one at the
/// version the street saw (or, if this node lacks it, the one now).
fn change_rows(view: &CorrectionView) -> Vec<ChangeRow> {
    let current = view.current_record.as_ref().map(|record| record.fields.clone()).unwrap_or_default();
    let base = view.base_record.as_ref().map_or(&current, |record| &record.fields);
    let mut rows: Vec<ChangeRow> = current
        .iter()
        .map(|(field, value)| {
            let proposed = view.request.changes.get(field);
            ChangeRow {
                field: field.clone(),
                current: value.to_string(),
                proposed: proposed.map(ToString::to_string),
                changed: proposed.is_some_and(|proposed| Some(proposed) != base.get(field)),
            }
        })
        .collect();
    rows.extend(view.request.changes.iter().filter(|(field, _)| !current.contains_key(*field)).map(
        |(field, value)| ChangeRow {
            field: field.clone(),
            current: String::new(),
            proposed: Some(value.to_string()),
            changed: true,
        },
    ));
    rows
}

/// The page of `view`, as this node holds it now.
fn review_page(state: &Shared, visit: &Visit, view: &CorrectionView) -> ReviewPage {
    let id = correction_id(&view.id);
    let track = track_of(state, view);
    let submitted = track
        .as_ref()
        .and_then(|track| track.reached_at(CorrectionStage::Submitted))
        .map(time)
        .unwrap_or_default();
    let photos = view
        .attachments
        .iter()
        .map(|attachment| {
            let kind = id
                .filter(|_| attachment.held)
                .and_then(|id| state.corrections.attachment_type(&id, attachment.index).ok());
            PhotoView {
                index: attachment.index,
                held: kind.is_some(),
                image: kind.is_some_and(|kind| kind.starts_with("image/")),
            }
        })
        .collect();
    let decision_detail = match view.outcome.as_ref().map(|outcome| &outcome.status) {
        Some(OutcomeStatus::Applied { version }) => version.to_string(),
        Some(OutcomeStatus::Rejected { reason, .. }) => reason.clone(),
        Some(OutcomeStatus::Conflict { current_version }) => current_version.to_string(),
        None => String::new(),
    };
    ReviewPage {
        frame: Frame::of(visit),
        id: view.id.clone(),
        dataset: view.request.dataset.clone(),
        key: view.request.record_key.clone(),
        submitter: submitter(view),
        operator: view.request.operator.clone(),
        submitted,
        received: time(view.created_at_ms),
        state_key: state_key(view.state),
        reviewable: view.state.reviewable(),
        base_version: view.request.base_version,
        current_version: view.current_record.as_ref().map(|record| record.version),
        rows: change_rows(view),
        reason: view.request.reason.clone(),
        evidence: view.request.evidence_text.clone(),
        photos,
        reviewer: view.reviewer.clone(),
        decision_detail,
        reject_reason: String::new(),
        reject_error: None,
        error: None,
    }
}

/// The correction `id` names at this node's inbox, or the answer to give.
fn inbox_view(state: &Shared, visit: &Visit, id: &str) -> Result<CorrectionView, Box<Response>> {
    view_on(state, visit, id, Side::Inbox)
}

/// `GET /review/{id}`.
pub(super) async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::Reviewer]) {
        return *refused;
    }
    match inbox_view(&state, &visit, &id) {
        Ok(view) => render(&review_page(&state, &visit, &view), StatusCode::OK),
        Err(refused) => *refused,
    }
}

/// `POST /review/{id}/accept`.
#[derive(Debug, Deserialize)]
pub(super) struct AcceptForm {
    csrf: String,
}

/// `POST /review/{id}/reject`.
#[derive(Debug, Deserialize)]
pub(super) struct RejectForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// `POST /review/{id}/accept`.
pub(super) async fn accept(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<AcceptForm>,
) -> Response {
    decide(&state, &headers, &id, &form.csrf, None).await
}

/// `POST /review/{id}/reject`.
pub(super) async fn reject(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Response {
    decide(&state, &headers, &id, &form.csrf, Some(form.reason)).await
}

/// Accepts (`rejection` none) or rejects the correction in the reviewer's
/// name; a rejection without a reason, or with too long a one, is sent
/// back with the message next to the reason.
async fn decide(
    state: &Shared,
    headers: &HeaderMap,
    id: &str,
    csrf: &str,
    rejection: Option<String>,
) -> Response {
    let visit = Visit::of(state, headers);
    let session = match visit.require_posted(&[Role::Reviewer], csrf) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let view = match inbox_view(state, &visit, id) {
        Ok(view) => view,
        Err(refused) => return *refused,
    };
    let reason = rejection.as_deref().map(str::trim).unwrap_or_default().to_string();
    let problem = match &rejection {
        Some(_) if reason.is_empty() => Some("review.reason-required"),
        Some(_) if reason.len() > crate::corrections::REJECT_REASON_BYTES_MAX => {
            Some("review.reason-too-long")
        }
        _ => None,
    };
    if let Some(problem) = problem {
        let mut page = review_page(state, &visit, &view);
        (page.reject_reason, page.reject_error) = (reason, Some(problem));
        return render(&page, StatusCode::BAD_REQUEST);
    }
    let Some(correction) = correction_id(&view.id) else {
        return error_page(&visit, StatusCode::NOT_FOUND, "corrections.not-found");
    };
    match state.corrections.review(&correction, rejection.is_none(), &reason, &session.operator).await {
        Ok(_) => Redirect::to(&format!("/review/{}", view.id)).into_response(),
        Err(error) => {
            let status = match error {
                CorrectionError::NotReviewable { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut page = review_page(state, &visit, &view);
            page.error = Some("review.not-decided");
            render(&page, status)
        }
    }
}

/// `GET /review/{id}/photos/{index}`: the attachment's bytes, with the type
/// they show; anything but an image is a download, never shown inline.
pub(super) async fn photo(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((id, index)): Path<(String, String)>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::Reviewer]) {
        return *refused;
    }
    let not_found = || error_page(&visit, StatusCode::NOT_FOUND, "review.photo-missing");
    let Ok(index) = index.parse::<u32>() else { return not_found() };
    let Ok(view) = inbox_view(&state, &visit, &id) else { return not_found() };
    let Some(bytes) = correction_id(&view.id).and_then(|id| state.corrections.attachment(&id, index).ok())
    else {
        return not_found();
    };
    let kind = content_type(&bytes);
    let mut response = ([(header::CONTENT_TYPE, kind)], bytes).into_response();
    if !kind.starts_with("image/") {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Provenance, RecordVersion};

    fn version(version: u64, address: &str) -> RecordVersion {
        let fields = [("name", "Tea House"), ("operating_address", address)]
            .into_iter()
            .map(|(field, value)| (field.to_string(), civmesh_policy::model::FieldValue::Text(value.into())))
            .collect();
        RecordVersion {
            version,
            written_at_ms: 1,
            provenance: Provenance::Import { batch: "b".into() },
            fields,
        }
    }

    #[test]
    fn a_field_is_changed_against_the_version_the_street_saw() {
        let mut view = super::super::inbox::tests::view(
            "a",
            "k",
            &[("operating_address", "2 Road"), ("name", "Tea House")],
        );
        view.base_record = Some(version(1, "1 Road"));
        view.current_record = Some(version(1, "1 Road"));
        let changed = |view: &CorrectionView| -> Vec<(String, bool)> {
            change_rows(view).into_iter().map(|row| (row.field, row.changed)).collect()
        };
        let expected = vec![("name".to_string(), false), ("operating_address".to_string(), true)];
        assert_eq!(changed(&view), expected, "a proposed value equal to the old one is no change");
        // Applied: the record now holds the proposed value; it still reads as changed.
        view.current_record = Some(version(2, "2 Road"));
        assert_eq!(changed(&view), expected);
        assert_eq!(change_rows(&view)[1].current, "2 Road");
    }
}
