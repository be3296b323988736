//! The reviewer's inbox (`/review`): the corrections awaiting review at this
//! (owner) node, oldest first, each opening `/review/{id}`. Identical
//! changes (same dataset, same new values, on different records) are
//! grouped, and a group can be accepted at once (`POST /review/bulk-accept`,
//! the ids in the body): each is accepted as if one by one, in the
//! reviewer's name.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use civmesh_policy::model::FieldValue;

use super::super::operators::Role;
use super::super::pages::{error_page, render};
use super::super::{Frame, Visit};
use super::{correction_id, fields_line, short_id, submitter, time};
use crate::api::Shared;
use crate::corrections::{CorrectionState, CorrectionView, Side};

/// Corrections the inbox shows at most (the oldest first).
const INBOX_CORRECTIONS_MAX: usize = 200;
/// Corrections one bulk accept takes at most.
const BULK_ACCEPT_CORRECTIONS_MAX: usize = INBOX_CORRECTIONS_MAX;

/// A correction in the inbox.
struct InboxRow {
    id: String,
    short: String,
    submitter: String,
    dataset: String,
    fields: String,
    reason: String,
    received: String,
}

/// Corrections that make the same change.
struct Group {
    /// Its number on the page (for the button's id).
    number: usize,
    dataset: String,
    /// The change, as "field = value; ...".
    change: String,
    ids: Vec<String>,
}

/// `/review`.
#[derive(Template)]
#[template(path = "console/review.html")]
struct InboxPage {
    frame: Frame,
    rows: Vec<InboxRow>,
    groups: Vec<Group>,
    /// After a bulk accept: how many were accepted, and how many not.
    accepted: Option<(usize, usize)>,
}

/// The corrections awaiting review, oldest first, at most the inbox's bound.
fn awaiting(state: &Shared) -> Option<Vec<CorrectionView>> {
    let waiting = |view: &CorrectionView| {
        view.side == Side::Inbox
            && ["awaiting_review", "superseded_by_import"].iter().any(|name| view.is_in(name))
    };
    let mut views = state.corrections.list_where(waiting, usize::MAX).ok()?;
    // Oldest first: the one waiting longest is at the top.
    views.sort_by_key(|view| view.created_at_ms);
    views.truncate(INBOX_CORRECTIONS_MAX);
    state.corrections.annotate(&mut views);
    Some(views)
}

/// What makes two corrections identical for a bulk accept: the dataset and
/// the new values.
type Sameness = (String, BTreeMap<String, FieldValue>);

/// What makes two corrections identical for a bulk accept.
fn sameness(view: &CorrectionView) -> Sameness {
    (view.request.dataset.clone(), view.request.changes.clone())
}

/// The groups of two or more identical changes, in the order of their oldest.
fn groups(views: &[CorrectionView]) -> Vec<Group> {
    let mut by_change: Vec<(Sameness, Vec<String>)> = Vec::new();
    for view in views {
        let key = sameness(view);
        match by_change.iter_mut().find(|(same, _)| *same == key) {
            Some((_, ids)) => ids.push(view.id.clone()),
            None => by_change.push((key, vec![view.id.clone()])),
        }
    }
    by_change
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .enumerate()
        .map(|(number, ((dataset, changes), ids))| Group {
            number,
            dataset,
            change: changes
                .iter()
                .map(|(field, value)| format!("{field} = {value}"))
                .collect::<Vec<_>>()
                .join("; "),
            ids,
        })
        .collect()
}

/// The inbox of `views`, after a bulk accept with its counts.
fn inbox_page(visit: &Visit, views: &[CorrectionView], accepted: Option<(usize, usize)>) -> InboxPage {
    let rows = views
        .iter()
        .map(|view| InboxRow {
            id: view.id.clone(),
            short: short_id(view),
            submitter: submitter(view),
            dataset: view.request.dataset.clone(),
            fields: fields_line(&view.request.changes),
            reason: view.request.reason.clone(),
            received: time(view.created_at_ms),
        })
        .collect();
    InboxPage { frame: Frame::of(visit), rows, groups: groups(views), accepted }
}

/// `GET /review`.
pub(super) async fn inbox(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::Reviewer]) {
        return *refused;
    }
    let Some(views) = awaiting(&state) else {
        return error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
    };
    render(&inbox_page(&visit, &views, None), StatusCode::OK)
}

/// `POST /review/bulk-accept`: `csrf`, then one `id` per correction.
pub(super) async fn bulk_accept(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let posted_csrf = pairs.iter().find(|(name, _)| name == "csrf").map_or("", |(_, value)| value.as_str());
    let session = match visit.require_posted(&[Role::Reviewer], posted_csrf) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let ids: Option<Vec<_>> =
        pairs.iter().filter(|(name, _)| name == "id").map(|(_, value)| correction_id(value)).collect();
    let ids = match ids {
        Some(ids) if !ids.is_empty() && ids.len() <= BULK_ACCEPT_CORRECTIONS_MAX => ids,
        _ => return error_page(&visit, StatusCode::BAD_REQUEST, "review.bulk-invalid"),
    };
    // Only identical changes, all still awaiting review, are accepted at once.
    let views: Option<Vec<CorrectionView>> = ids.iter().map(|id| state.corrections.view(id).ok()).collect();
    let reviewable = |view: &CorrectionView| view.side == Side::Inbox && view.state.reviewable();
    let Some(views) = views.filter(|views| {
        views.iter().all(reviewable) && views.iter().all(|view| sameness(view) == sameness(&views[0]))
    }) else {
        return error_page(&visit, StatusCode::CONFLICT, "review.bulk-not-identical");
    };
    let operator = session.operator.clone();
    let decisions = ids.iter().map(|id| state.corrections.review(id, true, "", &operator));
    let outcomes = futures::future::join_all(decisions).await;
    let applied = outcomes
        .iter()
        .filter(|outcome| {
            outcome
                .as_ref()
                .is_ok_and(|view| matches!(view.state, CorrectionState::Applied | CorrectionState::Accepted))
        })
        .count();
    tracing::info!(corrections = views.len(), applied, "corrections accepted in bulk from the console");
    let Some(views) = awaiting(&state) else {
        return error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
    };
    render(&inbox_page(&visit, &views, Some((applied, ids.len() - applied))), StatusCode::OK)
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeSet;

    use civmesh_policy::correction::CorrectionRequest;

    use super::*;
    use crate::corrections::EntryStatus;

    /// A correction awaiting review at the owner.
    pub(in crate::console::corrections) fn view(
        id: &str,
        key: &str,
        changes: &[(&str, &str)],
    ) -> CorrectionView {
        let changes = changes
            .iter()
            .map(|(field, value)| (field.to_string(), FieldValue::Text(value.to_string())))
            .collect();
        CorrectionView {
            id: id.into(),
            side: Side::Inbox,
            state: CorrectionState::AwaitingReview,
            status: EntryStatus::AwaitingReview,
            submitter: "peer".into(),
            submitter_org: Some("street/jingansi".into()),
            request: CorrectionRequest {
                dataset: "enterprises".into(),
                record_key: key.into(),
                base_version: 1,
                changes,
                reason: "moved".into(),
                evidence_text: String::new(),
                attachment_sha256: Vec::new(),
                operator: "李伟".into(),
            },
            outcome: None,
            stages_logged: BTreeSet::new(),
            attempts: 0,
            last_error: String::new(),
            created_at_ms: 1,
            reviewer: String::new(),
            attachments: Vec::new(),
            base_record: None,
            current_record: None,
        }
    }

    #[test]
    fn only_identical_changes_group_and_only_groups_of_two_or_more() {
        let views = [
            view("a", "k1", &[("operating_address", "1 Road")]),
            view("b", "k2", &[("operating_address", "2 Road")]),
            view("c", "k3", &[("operating_address", "1 Road")]),
            view("d", "k4", &[("operating_address", "1 Road"), ("name", "x")]),
            view("e", "k5", &[("operating_address", "2 Road")]),
        ];
        let groups = groups(&views);
        let found: Vec<(usize, &str, Vec<String>)> =
            groups.iter().map(|group| (group.number, group.change.as_str(), group.ids.clone())).collect();
        assert_eq!(
            found,
            [
                (0, "operating_address = 1 Road", vec!["a".to_string(), "c".to_string()]),
                (1, "operating_address = 2 Road", vec!["b".to_string(), "e".to_string()]),
            ]
        );
    }
}
