//! The subjects' requests (PIPL Art. 44-47): file one at the intake, list
//! the open ones, answer one at the owner. Record keys travel in bodies
//! only. See [`crate::subject_requests`].

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};

use civmesh_policy::correction::CORRECTION_TEXT_BYTES_MAX;
use civmesh_policy::subject_request::SubjectRequestKind;

use crate::api::tokens::Scope;
use crate::api::{ApiError, JsonBody, PathParams, Shared, TokenHolder};
use crate::corrections::CorrectionSpec;
use crate::subject_requests::{AnswerRequest, Answered, Filed, IntakeRequest, SubjectRequestList};

/// `POST /v1/subject-requests`: take a resident's request and file it at
/// the dataset's owner; its id and deadline. A request carrying a
/// correction submits it too, so it needs the Corrections scope besides
/// the route's Query scope, and names who took it.
pub(crate) async fn file(
    State(state): State<Shared>,
    holder: Option<Extension<TokenHolder>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<IntakeRequest>,
) -> Result<Json<Filed>, ApiError> {
    let correction = match (&request.kind, request.correction.clone()) {
        (SubjectRequestKind::Correction, correction) => correction,
        (_, None) => None,
        (_, Some(_)) => return Err(ApiError::bad_request("only a correction request carries a correction")),
    };
    let operator = match &correction {
        None => None,
        Some(_) => {
            let holder = holder.as_ref().map(|Extension(TokenHolder(name))| name.as_str());
            let scopes = match holder {
                None => BTreeSet::new(),
                Some(_) => presented_scopes(&state, &headers),
            };
            Some(resident_operator(holder, &scopes, request.operator.as_deref())?)
        }
    };
    let default_days = state.subject_request_deadline_days;
    let (dataset, record_key) = (request.dataset.clone(), request.record_key.clone());
    let mut filed = crate::subject_requests::file(&state.query, request, default_days)
        .await
        .map_err(|error| ApiError::new(error.status(), error.to_string()))?;
    if let (Some(correction), Some(operator)) = (correction, operator) {
        let spec = CorrectionSpec {
            dataset,
            record_key,
            base_version: correction.base_version,
            changes: correction.changes,
            reason: correction.reason,
            evidence_text: format!(
                "居民本人申请更正 / requested by the resident (subject request {})",
                filed.id
            ),
            attachment_sha256: Vec::new(),
            operator,
        };
        let id = crate::corrections::http::submit_caught_up(&state, spec).await?;
        filed.correction = Some(civmesh_policy::hex_digest::to_hex(&id));
    }
    Ok(Json(filed))
}

/// Who a correction a resident asked for names as its origin; the person
/// who took it follows ([`resident_operator`]).
pub const RESIDENT_OPERATOR: &str = "居民本人 (resident)";

/// The scopes of the scoped token the request presented (none if it
/// presented none, or the token is gone since the check at the door).
fn presented_scopes(state: &crate::api::ApiState, headers: &HeaderMap) -> BTreeSet<Scope> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| state.scoped_tokens.scopes_of(token))
        .unwrap_or_default()
}

/// The operator a resident's correction records: the resident as its
/// origin, taken by the named holder of a scoped token holding the
/// Corrections scope (with the person `named`, if any, as "person
/// (holder)"), or, with the admin token (`holder` none), by the person
/// `named` (required). A scoped token without the scope is refused 403.
pub(crate) fn resident_operator(
    holder: Option<&str>,
    scopes: &BTreeSet<Scope>,
    named: Option<&str>,
) -> Result<String, ApiError> {
    let named = named.map(str::trim).filter(|named| !named.is_empty());
    let taker = match (holder, named) {
        (Some(_), _) if !scopes.contains(&Scope::Corrections) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token lacks the Corrections scope a request carrying a correction needs",
            ))
        }
        (Some(holder), Some(named)) => format!("{named} ({holder})"),
        (Some(holder), None) => holder.to_string(),
        (None, Some(named)) => named.to_string(),
        (None, None) => return Err(ApiError::bad_request(
            "name who takes the resident's correction: `operator` in the body (the admin token names no one)",
        )),
    };
    let operator = format!("{RESIDENT_OPERATOR}, taken by {taker}");
    if operator.len() > CORRECTION_TEXT_BYTES_MAX || operator.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "the operator is at most {CORRECTION_TEXT_BYTES_MAX} bytes with the resident's mark, \
             without control characters"
        )));
    }
    Ok(operator)
}

/// `GET /v1/subject-requests`: the open requests this node's organisation
/// answers or took.
pub(crate) async fn list(State(state): State<Shared>) -> Result<Json<SubjectRequestList>, ApiError> {
    crate::subject_requests::list(&state.query).await.map(Json).map_err(ApiError::internal)
}

/// `POST /v1/subject-requests/{id}/answer`: `{"done": true}` or
/// `{"refuse": "why"}`, at the owner.
pub(crate) async fn answer(
    State(state): State<Shared>,
    PathParams(id): PathParams<String>,
    JsonBody(request): JsonBody<AnswerRequest>,
) -> Result<Json<Answered>, ApiError> {
    crate::subject_requests::answer(&state.query, &id, request)
        .await
        .map(Json)
        .map_err(|error| ApiError::new(error.status(), error.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_residents_correction_needs_the_corrections_scope_and_names_who_took_it() {
        let query_only = BTreeSet::from([Scope::Query]);
        let both = BTreeSet::from([Scope::Query, Scope::Corrections]);
        let none = BTreeSet::new();
        let taken = |taker: &str| Ok(format!("居民本人 (resident), taken by {taker}"));
        type Case<'a> = (Option<&'a str>, &'a BTreeSet<Scope>, Option<&'a str>, Result<String, StatusCode>);
        let cases: [Case<'_>; 7] = [
            (Some("window-3"), &both, None, taken("window-3")),
            (Some("window-3"), &both, Some(" Wang Fang "), taken("Wang Fang (window-3)")),
            (Some("window-3"), &both, Some("  "), taken("window-3")),
            (Some("window-3"), &query_only, None, Err(StatusCode::FORBIDDEN)),
            (Some("window-3"), &query_only, Some("Wang Fang"), Err(StatusCode::FORBIDDEN)),
            (None, &none, Some("Wang Fang"), taken("Wang Fang")),
            (None, &none, None, Err(StatusCode::BAD_REQUEST)),
        ];
        for (holder, scopes, named, expected) in cases {
            let operator = resident_operator(holder, scopes, named).map_err(|error| error.status());
            assert_eq!(operator, expected, "{holder:?} {scopes:?} {named:?}");
        }
        let long = "x".repeat(CORRECTION_TEXT_BYTES_MAX);
        let refused = resident_operator(None, &none, Some(&long)).map_err(|error| error.status());
        assert_eq!(refused, Err(StatusCode::BAD_REQUEST));
        let bell = resident_operator(None, &none, Some("a\u{7}b")).map_err(|error| error.status());
        assert_eq!(bell, Err(StatusCode::BAD_REQUEST));
    }
}
