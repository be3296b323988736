//! `/demands/{id}/grant`: the policy officer issues a grant from a waiting
//! demand, in a form that defaults to the demand's fields, purpose, legal
//! basis and date: masking per field, scope, window, consent, the retention
//! of copies and the impact assessment (`officer_grant_protection.rs`). The
//! owner's check of those (`assessments::check_grant`) and the warnings
//! (`PolicyState::grant_warnings`) are shown before anything is issued.

#[path = "officer_grant_protection.rs"]
mod protection;

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use civmesh_certs::UnixMillis;
use civmesh_policy::evaluation::{format_date, format_date_end};
use civmesh_policy::model::{
    Dataset, Demand, DemandId, FieldValue, ScopeCondition, NAME_BYTES_MAX, SCOPE_FIELDS_MAX,
};
use civmesh_policy::{Applied, Command, GrantSpec};

use super::labels::{
    basis_choices, basis_key, basis_value, class_key, fingerprint, masking_choices, parse_basis,
    parse_masking, warning_lines, Choice, WarningLine, MASK_KEEP_DEFAULT, MASK_KEEP_MAX,
};
use super::waiting::check_waiting;
use super::{day_end, day_start, posted, Errors, Posted};
use crate::api::grants::{check_protection_now, grant_warnings_now};
use crate::api::Shared;
use crate::console::operators::Role;
use crate::console::pages::{error_page, render};
use crate::console::{Frame, Visit};
use protection::Protection;

/// A grant's window unless the demand says until when: one year.
const GRANT_DAYS_DEFAULT: u64 = 365;
/// The values one scope condition allows at most.
const SCOPE_VALUES_MAX: usize = 32;
const DAY_MS: u64 = 86_400_000;

/// The demand the grant answers, as the form recalls it.
struct DemandFacts {
    id: DemandId,
    requester: String,
    dataset: String,
    purpose: String,
    basis_key: &'static str,
    reason: String,
    fields: String,
    until: String,
}

/// One field of the dataset: whether it is granted, and how it is masked.
struct FieldRow {
    name: String,
    class_key: &'static str,
    sensitive: bool,
    requested: bool,
    included: bool,
    masking: String,
    keep: String,
    /// The message next to its masking select or its count.
    mask_error: Option<&'static str>,
    keep_error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/officer_grant.html")]
struct GrantPage {
    frame: Frame,
    demand: DemandFacts,
    rows: Vec<FieldRow>,
    maskings: Vec<Choice>,
    scope_fields: Vec<String>,
    scope_field: String,
    scope_values: String,
    valid_from: String,
    valid_until: String,
    consent: bool,
    basis: String,
    bases: Vec<Choice>,
    purpose: String,
    protection: Protection,
    errors: Errors,
    warnings: Vec<WarningLine>,
    fingerprint: String,
    failure: String,
    name_bytes_max: usize,
    mask_keep_max: u8,
}

impl GrantPage {
    /// The form for `demand` on `dataset`, with its defaults, offering
    /// `protection`'s assessments.
    fn new(
        visit: &Visit,
        demand: &Demand,
        dataset: &Dataset,
        protection: Protection,
        now_ms: UnixMillis,
    ) -> Self {
        let requester = demand.requester.to_string();
        // A street's demand is scoped to that street by default, if the
        // dataset can be (`street/jingansi` → street = jingansi).
        let (scope_field, scope_values) = requester
            .split_once('/')
            .filter(|(kind, _)| dataset.scope_fields.iter().any(|field| field == kind))
            .map(|(kind, name)| (kind.to_string(), name.to_string()))
            .unwrap_or_default();
        let rows = dataset
            .fields
            .iter()
            .map(|field| FieldRow {
                name: field.name.clone(),
                class_key: class_key(field.class),
                sensitive: field.class.is_sensitive(),
                requested: demand.fields.contains(&field.name),
                included: demand.fields.contains(&field.name),
                masking: "none".into(),
                keep: MASK_KEEP_DEFAULT.to_string(),
                mask_error: None,
                keep_error: None,
            })
            .collect();
        let until = demand.until_ms.map(format_date_end);
        GrantPage {
            frame: Frame::of(visit),
            demand: DemandFacts {
                id: demand.id,
                requester,
                dataset: demand.dataset.clone(),
                purpose: demand.purpose.clone(),
                basis_key: basis_key(demand.legal_basis),
                reason: demand.reason.clone().unwrap_or_default(),
                fields: demand.fields.iter().cloned().collect::<Vec<_>>().join(", "),
                until: until.clone().unwrap_or_default(),
            },
            rows,
            maskings: masking_choices(),
            scope_fields: dataset.scope_fields.iter().take(SCOPE_FIELDS_MAX).cloned().collect(),
            scope_field,
            scope_values,
            valid_from: format_date(now_ms),
            valid_until: until.unwrap_or_else(|| format_date(now_ms + GRANT_DAYS_DEFAULT * DAY_MS)),
            consent: demand.legal_basis == civmesh_policy::model::LegalBasis::Consent,
            basis: basis_value(demand.legal_basis).to_string(),
            bases: basis_choices(),
            purpose: demand.purpose.clone(),
            protection,
            errors: Errors::default(),
            warnings: Vec::new(),
            fingerprint: String::new(),
            failure: String::new(),
            name_bytes_max: NAME_BYTES_MAX,
            mask_keep_max: MASK_KEEP_MAX,
        }
    }

    /// Takes the posted form's values (so the page shows them again) and
    /// the grant they describe; `None`, with messages next to the fields,
    /// if it is not complete and valid.
    fn read(&mut self, form: &Posted, demand: &Demand) -> Option<GrantSpec> {
        let masking = self.read_fields(form);
        let scope = self.read_scope(form);
        self.valid_from = posted(form, "valid_from").to_string();
        self.valid_until = posted(form, "valid_until").to_string();
        let from = day_start(&self.valid_from).map_err(|key| self.errors.add("valid_from", key)).ok();
        let until = day_end(&self.valid_until).map_err(|key| self.errors.add("valid_until", key)).ok();
        if let (Some(from), Some(until)) = (from, until) {
            if until <= from {
                self.errors.add("valid_until", "officer.until-before-from");
            }
        }
        self.consent = form.contains_key("consent");
        self.basis = posted(form, "legal_basis").to_string();
        let legal_basis = parse_basis(&self.basis);
        if legal_basis.is_none() {
            self.errors.add("legal_basis", "officer.basis-invalid");
        }
        self.purpose = posted(form, "purpose").to_string();
        let purpose = self.errors.text("purpose", &self.purpose.clone(), NAME_BYTES_MAX);
        let (retention, assessment) = self.protection.read(form, &mut self.errors);
        if !self.errors.is_empty() {
            return None;
        }
        Some(GrantSpec {
            dataset: demand.dataset.clone(),
            grantee: demand.requester.clone(),
            fields: self.rows.iter().filter(|row| row.included).map(|row| row.name.clone()).collect(),
            purpose,
            legal_basis: legal_basis?,
            scope,
            valid_from_ms: from?,
            valid_until_ms: until?,
            masking,
            consent_required: self.consent,
            demand: Some(demand.id),
            retention,
            assessment,
        })
    }

    /// The fields granted and their masking, from the form.
    fn read_fields(&mut self, form: &Posted) -> BTreeMap<String, civmesh_policy::model::MaskingRule> {
        let mut masking = BTreeMap::new();
        for row in &mut self.rows {
            row.included = form.contains_key(&format!("field:{}", row.name));
            row.masking = posted(form, &format!("mask:{}", row.name)).to_string();
            row.keep = posted(form, &format!("keep:{}", row.name)).to_string();
            match (row.included, parse_masking(&row.masking, &row.keep)) {
                (true, Ok(Some(rule))) => {
                    masking.insert(row.name.clone(), rule);
                }
                (true, Err(key)) => {
                    let (input, error) = if key == "officer.mask-keep-invalid" {
                        ("keep", &mut row.keep_error)
                    } else {
                        ("mask", &mut row.mask_error)
                    };
                    *error = Some(key);
                    self.errors.add(format!("{input}-{}", row.name), key);
                }
                // A field not granted is not masked, whatever its inputs say.
                (_, Ok(_)) | (false, Err(_)) => {}
            }
        }
        if !self.rows.iter().any(|row| row.included) {
            self.errors.add("fields", "officer.fields-required");
        }
        masking
    }

    /// The scope condition, from the form: none, or one scope field and the
    /// values it allows (separated by commas or spaces).
    fn read_scope(&mut self, form: &Posted) -> Vec<ScopeCondition> {
        self.scope_field = posted(form, "scope_field").to_string();
        self.scope_values = posted(form, "scope_values").to_string();
        if self.scope_field.is_empty() {
            return Vec::new();
        }
        if !self.scope_fields.contains(&self.scope_field) {
            self.errors.add("scope_field", "officer.scope-field-invalid");
            return Vec::new();
        }
        let values: BTreeSet<&str> = scope_values(&self.scope_values);
        let problem = if values.is_empty() {
            Some("officer.scope-values-required")
        } else if values.len() > SCOPE_VALUES_MAX {
            Some("officer.scope-values-too-many")
        } else if values.iter().any(|value| value.len() > NAME_BYTES_MAX) {
            Some("officer.too-long")
        } else {
            None
        };
        if let Some(key) = problem {
            self.errors.add("scope_values", key);
            return Vec::new();
        }
        let allowed = values.into_iter().map(|value| FieldValue::Text(value.to_string())).collect();
        vec![ScopeCondition { field: self.scope_field.clone(), allowed }]
    }
}

/// The values of a scope, separated by commas (ASCII or Chinese), 、 or spaces.
fn scope_values(text: &str) -> BTreeSet<&str> {
    text.split([',', '，', '、', ' ', '\t', '\n']).map(str::trim).filter(|value| !value.is_empty()).collect()
}

/// Demand `id` and its dataset, if this organisation may decide it now;
/// else the error page.
fn load(state: &Shared, visit: &Visit, id: DemandId) -> Result<(Demand, Dataset), Box<Response>> {
    check_waiting(state, visit, id)?;
    let found = state.log.state().read(|applied| {
        let policy = &applied.policy;
        let demand = policy.demands.get(&id)?;
        Some((demand.clone(), policy.datasets.get(&demand.dataset)?.clone()))
    });
    found.ok_or_else(|| Box::new(error_page(visit, StatusCode::NOT_FOUND, "officer.demand-unknown")))
}

/// `GET /demands/{id}/grant`: the form, with the demand's defaults.
pub(super) async fn form(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<DemandId>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::PolicyOfficer]) {
        return *refused;
    }
    let (demand, dataset) = match load(&state, &visit, id) {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    let protection = Protection::new(protection::choices(&state, &dataset.id).await);
    render(
        &GrantPage::new(&visit, &demand, &dataset, protection, civmesh_certs::now_unix_millis()),
        StatusCode::OK,
    )
}

/// `POST /demands/{id}/grant`: checks the form, shows the warnings until
/// the officer confirms those very warnings, then issues the grant
/// (`IssueGrant`, naming the operator) and shows its number.
pub(super) async fn issue(
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
    let (demand, dataset) = match load(&state, &visit, id) {
        Ok(found) => found,
        Err(answer) => return *answer,
    };
    let protection = Protection::new(protection::choices(&state, &dataset.id).await);
    let mut page = GrantPage::new(&visit, &demand, &dataset, protection, civmesh_certs::now_unix_millis());
    let Some(spec) = page.read(&form, &demand) else {
        return render(&page, StatusCode::BAD_REQUEST);
    };
    let missing = match check_protection_now(&state, &spec).await {
        Ok(checked) => checked.err(),
        Err(error) => {
            page.failure = error.message().to_string();
            return render(&page, error.status());
        }
    };
    if let Some(missing) = missing {
        let Some((input, key)) = protection::place(&missing) else {
            page.failure = missing.to_string();
            return render(&page, StatusCode::INTERNAL_SERVER_ERROR);
        };
        page.errors.add(input, key);
        return render(&page, StatusCode::BAD_REQUEST);
    }
    let warnings = grant_warnings_now(&state, &spec);
    if !warnings.is_empty() && posted(&form, "confirm") != fingerprint(&warnings) {
        page.warnings = warning_lines(&warnings);
        page.fingerprint = fingerprint(&warnings);
        return render(&page, StatusCode::OK);
    }
    match crate::console::actions::commit(&state, &session.operator, Command::IssueGrant(spec)).await {
        Ok(Applied::GrantIssued(grant)) => {
            Redirect::to(&format!("/issued-grants?issued={grant}")).into_response()
        }
        Ok(_) => error_page(&visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal"),
        Err(error) => {
            page.failure = error.message().to_string();
            render(&page, error.status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_values_split_on_commas_and_spaces_in_either_script() {
        let values: Vec<&str> =
            scope_values(" jingansi，nanjingxilu, caojiadu 、 jingansi  ").into_iter().collect();
        assert_eq!(values, ["caojiadu", "jingansi", "nanjingxilu"]);
        assert!(scope_values(" , ，").is_empty());
    }
}
