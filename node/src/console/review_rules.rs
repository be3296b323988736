//! The auto-accept rules of this organisation's datasets (`/review/rules`):
//! a correction from the named organisation that changes only the named
//! fields is accepted without a reviewer (unless it touches a field a
//! grant's scope tests). The reviewer lists them (from the applied policy
//! state), adds one per dataset and removes one; each change is a policy
//! command signed by this node naming the reviewer
//! (`super::super::actions::commit`).

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use civmesh_certs::OrgId;
use civmesh_policy::correction::AutoAcceptRule;
use civmesh_policy::model::Dataset;
use civmesh_policy::Command;
use serde::Deserialize;

use super::super::operators::Role;
use super::super::pages::{error_page, render};
use super::super::{Frame, Visit};
use crate::api::{ApiError, Shared};

/// A rule as the page lists it.
struct RuleRow {
    number: usize,
    dataset: String,
    submitter: String,
    fields: String,
}

/// A field one may name in a rule, and whether the form has it ticked.
struct FieldChoice {
    name: String,
    checked: bool,
}

/// The form that adds a rule on one of this organisation's datasets.
struct DatasetForm {
    number: usize,
    id: String,
    title: String,
    fields: Vec<FieldChoice>,
    submitter: String,
    submitter_error: Option<&'static str>,
    fields_error: Option<&'static str>,
    /// The log refused the rule (a key), with its words.
    error: Option<&'static str>,
    detail: String,
}

/// `/review/rules`.
#[derive(Template)]
#[template(path = "console/rules.html")]
struct RulesPage {
    frame: Frame,
    rules: Vec<RuleRow>,
    datasets: Vec<DatasetForm>,
    /// The organisations a rule may name (every member but this one).
    orgs: Vec<String>,
    /// The log refused a removal (a key), with its words.
    remove_error: Option<&'static str>,
    detail: String,
}

/// The datasets this organisation owns.
fn own_datasets(state: &Shared) -> Vec<Dataset> {
    let me = &state.identity.org;
    state.log.state().read(|applied| {
        applied.policy.datasets.values().filter(|dataset| dataset.owner == *me).cloned().collect()
    })
}

/// The fields a rule may name: all but the subject key, which no correction changes.
fn rule_fields(dataset: &Dataset) -> Vec<String> {
    dataset
        .fields
        .iter()
        .filter(|field| field.name != dataset.subject_key_field)
        .map(|field| field.name.clone())
        .collect()
}

/// The page: the rules, and a form per dataset, nothing ticked.
fn rules_page(state: &Shared, visit: &Visit) -> RulesPage {
    let me = state.identity.org.clone();
    let (rules, orgs) = state.log.state().read(|applied| {
        let policy = &applied.policy;
        let mine = |dataset: &String| policy.owns(&me, dataset);
        let rules: Vec<RuleRow> = policy
            .auto_accept_rules
            .iter()
            .filter(|((dataset, _), _)| mine(dataset))
            .enumerate()
            .map(|(number, ((dataset, submitter), fields))| RuleRow {
                number,
                dataset: dataset.clone(),
                submitter: submitter.to_string(),
                fields: fields.iter().cloned().collect::<Vec<_>>().join(", "),
            })
            .collect();
        let orgs: BTreeSet<String> = policy
            .members
            .values()
            .filter(|member| member.org != me)
            .map(|member| member.org.to_string())
            .collect();
        (rules, orgs.into_iter().collect())
    });
    let datasets = own_datasets(state)
        .iter()
        .enumerate()
        .map(|(number, dataset)| DatasetForm {
            number,
            id: dataset.id.clone(),
            title: dataset.title.clone(),
            fields: rule_fields(dataset)
                .into_iter()
                .map(|name| FieldChoice { name, checked: false })
                .collect(),
            submitter: String::new(),
            submitter_error: None,
            fields_error: None,
            error: None,
            detail: String::new(),
        })
        .collect();
    RulesPage { frame: Frame::of(visit), rules, datasets, orgs, remove_error: None, detail: String::new() }
}

/// `GET /review/rules`.
pub(super) async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::Reviewer]) {
        return *refused;
    }
    render(&rules_page(&state, &visit), StatusCode::OK)
}

/// Commits `command` in the reviewer's name (see `actions::commit`).
async fn commit(state: &Shared, operator: &str, command: Command) -> Result<(), ApiError> {
    super::super::actions::commit(state, operator, command).await.map(drop)
}

/// `POST /review/rules`: `csrf`, `dataset`, `submitter`, then one `field` per field.
pub(super) async fn add(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let value =
        |wanted: &str| pairs.iter().find(|(name, _)| name == wanted).map_or("", |(_, value)| value.as_str());
    let session = match visit.require_posted(&[Role::Reviewer], value("csrf")) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let mut page = rules_page(&state, &visit);
    let Some(form) = page.datasets.iter_mut().find(|form| form.id == value("dataset")) else {
        return error_page(&visit, StatusCode::BAD_REQUEST, "rules.dataset-unknown");
    };
    let ticked: BTreeSet<String> =
        pairs.iter().filter(|(name, _)| name == "field").map(|(_, value)| value.clone()).collect();
    for choice in &mut form.fields {
        choice.checked = ticked.contains(&choice.name);
    }
    form.submitter = value("submitter").trim().to_string();
    let submitter = OrgId::new(&form.submitter).ok().filter(|org| page.orgs.contains(&org.to_string()));
    if submitter.is_none() {
        form.submitter_error = Some("rules.submitter-invalid");
    }
    if ticked.is_empty() {
        form.fields_error = Some("rules.fields-required");
    } else if !ticked.iter().all(|field| form.fields.iter().any(|choice| choice.name == *field)) {
        form.fields_error = Some("rules.field-unknown");
    }
    let Some(submitter) = submitter.filter(|_| form.fields_error.is_none()) else {
        return render(&page, StatusCode::BAD_REQUEST);
    };
    let rule = AutoAcceptRule { dataset: form.id.clone(), submitter, fields: ticked };
    match commit(&state, &session.operator, Command::SetAutoAcceptRule(rule)).await {
        Ok(()) => Redirect::to("/review/rules").into_response(),
        Err(error) => {
            (form.error, form.detail) = (Some("rules.refused"), error.message().to_string());
            render(&page, error.status())
        }
    }
}

/// `POST /review/rules/remove`.
#[derive(Debug, Deserialize)]
pub(super) struct RemoveForm {
    csrf: String,
    dataset: String,
    submitter: String,
}

/// `POST /review/rules/remove`: removes the rule of a dataset for an organisation.
pub(super) async fn remove(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<RemoveForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let session = match visit.require_posted(&[Role::Reviewer], &form.csrf) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let mine = own_datasets(&state).iter().any(|dataset| dataset.id == form.dataset);
    let (true, Ok(submitter)) = (mine, OrgId::new(&form.submitter)) else {
        return error_page(&visit, StatusCode::BAD_REQUEST, "rules.dataset-unknown");
    };
    let command = Command::RemoveAutoAcceptRule { dataset: form.dataset, submitter };
    match commit(&state, &session.operator, command).await {
        Ok(()) => Redirect::to("/review/rules").into_response(),
        Err(error) => {
            let mut page = rules_page(&state, &visit);
            (page.remove_error, page.detail) = (Some("rules.refused"), error.message().to_string());
            render(&page, error.status())
        }
    }
}
