//! The console's pages: one handler and one template each.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::operators::{OperatorError, OperatorStore, Role, SignInRefusal, SignedIn};
use super::sessions::random_token;
use super::{cookie, set_cookie, Frame, Visit, FORM_COOKIE, LANG_COOKIE, SESSION_COOKIE};
use crate::api::Shared;

/// How long the sign-in and enrolment forms stay valid, in seconds.
const FORM_AGE_S_MAX: u64 = 3_600;

pub(super) fn render(template: &impl Template, status: StatusCode) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::warn!(%error, "a console page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    frame: Frame,
    message: &'static str,
}

/// A page that says only `message` (a key), with `status`.
pub(super) fn error_page(visit: &Visit, status: StatusCode, message: &'static str) -> Response {
    render(&ErrorPage { frame: Frame::of(visit), message }, status)
}

/// Whether a posted CSRF token is the session's.
pub(super) fn csrf_matches(expected: &str, posted: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(posted.as_bytes()))
}

#[derive(Template)]
#[template(path = "console/home.html")]
struct HomePage {
    frame: Frame,
    org: String,
}

pub(super) async fn home(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if visit.session.is_none() {
        return Redirect::to("/login").into_response();
    }
    render(&HomePage { frame: Frame::of(&visit), org: state.identity.org.to_string() }, StatusCode::OK)
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    frame: Frame,
    form_token: String,
    name: String,
    error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/enrol.html")]
struct EnrolPage {
    frame: Frame,
    form_token: String,
    name: String,
    error: Option<&'static str>,
}

/// A page with a fresh double-submit token, set as a cookie too.
fn with_form_token(visit: &Visit, page: impl FnOnce(Frame, String) -> Response) -> Response {
    let Some(token) = random_token() else {
        return error_page(visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
    };
    with_cookie(page(Frame::of(visit), token.clone()), FORM_COOKIE, &token, Some(FORM_AGE_S_MAX))
}

/// `response`, setting cookie `name` (see [`set_cookie`]).
fn with_cookie(mut response: Response, name: &str, value: &str, max_age_s: Option<u64>) -> Response {
    if let Ok(value) = set_cookie(name, value, max_age_s).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub(super) async fn sign_in_form(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    with_form_token(&visit, |frame, form_token| {
        render(&SignInPage { frame, form_token, name: String::new(), error: None }, StatusCode::OK)
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    name: String,
    password: String,
    form_token: String,
}

/// Whether the posted double-submit token matches its cookie.
fn form_token_matches(headers: &HeaderMap, posted: &str) -> bool {
    cookie(headers, FORM_COOKIE).is_some_and(|expected| csrf_matches(expected, posted))
}

/// The client's address, where the listener recorded it.
type ClientAddress = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

/// Whether `client` may try to sign in or enrol now (see `throttle`).
fn attempt_allowed(state: &Shared, client: &ClientAddress) -> bool {
    let address = client.as_ref().map(|axum::Extension(axum::extract::ConnectInfo(address))| address.ip());
    state.console.sign_ins.allow(address)
}

pub(super) async fn sign_in(
    State(state): State<Shared>,
    client: ClientAddress,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if !form_token_matches(&headers, &form.form_token) {
        return error_page(&visit, StatusCode::FORBIDDEN, "error.form-expired");
    }
    let name = form.name.trim().to_string();
    if !attempt_allowed(&state, &client) {
        return with_form_token(&visit, |frame, form_token| {
            let page = SignInPage { frame, form_token, name, error: Some("sign-in.throttled") };
            render(&page, StatusCode::TOO_MANY_REQUESTS)
        });
    }
    let who = name.clone();
    let checked =
        check_operator(&state, &visit, move |operators| operators.sign_in(&who, &form.password)).await;
    let refusal = match checked {
        Ok(Ok(signed_in)) => return open_session(&state, &visit, &name, signed_in),
        Ok(Err(refusal)) => refusal,
        Err(failed) => return *failed,
    };
    with_form_token(&visit, |frame, form_token| {
        let page = SignInPage { frame, form_token, name, error: Some(refusal.message_key()) };
        render(&page, StatusCode::UNAUTHORIZED)
    })
}

/// What a sign-in or an enrolment says.
type Checked = Result<SignedIn, SignInRefusal>;

/// Runs `check` (a sign-in or an enrolment: argon2id and the operator
/// file) off the async workers; a store that fails is the error page.
async fn check_operator(
    state: &Shared,
    visit: &Visit,
    check: impl FnOnce(&OperatorStore) -> Result<Checked, OperatorError> + Send + 'static,
) -> Result<Checked, Box<Response>> {
    let state = state.clone();
    let checked = tokio::task::spawn_blocking(move || check(&state.console.operators)).await;
    match checked {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(error)) => {
            tracing::warn!(%error, "operators unavailable");
            Err(Box::new(error_page(visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal")))
        }
        Err(_) => Err(Box::new(error_page(visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal"))),
    }
}

/// Opens a session for `name` and sends them home with its cookie.
fn open_session(state: &Shared, visit: &Visit, name: &str, signed_in: SignedIn) -> Response {
    let Some(id) = state.console.sessions.open(name, signed_in, civmesh_certs::now_unix_millis()) else {
        return error_page(visit, StatusCode::INTERNAL_SERVER_ERROR, "error.internal");
    };
    with_cookie(Redirect::to("/").into_response(), SESSION_COOKIE, &id, None)
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn sign_out(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    let Some((id, session)) = &visit.session else {
        return Redirect::to("/login").into_response();
    };
    if !csrf_matches(&session.csrf, &form.csrf) {
        return error_page(&visit, StatusCode::FORBIDDEN, "error.form-expired");
    }
    state.console.sessions.close(id);
    with_cookie(Redirect::to("/login").into_response(), SESSION_COOKIE, "", Some(0))
}

pub(super) async fn enrol_form(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    with_form_token(&visit, |frame, form_token| {
        render(&EnrolPage { frame, form_token, name: String::new(), error: None }, StatusCode::OK)
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct EnrolForm {
    name: String,
    code: String,
    password: String,
    password_again: String,
    form_token: String,
}

pub(super) async fn enrol(
    State(state): State<Shared>,
    client: ClientAddress,
    headers: HeaderMap,
    Form(form): Form<EnrolForm>,
) -> Response {
    let visit = Visit::of(&state, &headers);
    if !form_token_matches(&headers, &form.form_token) {
        return error_page(&visit, StatusCode::FORBIDDEN, "error.form-expired");
    }
    let name = form.name.trim().to_string();
    if !attempt_allowed(&state, &client) {
        return with_form_token(&visit, |frame, form_token| {
            let page = EnrolPage { frame, form_token, name, error: Some("sign-in.throttled") };
            render(&page, StatusCode::TOO_MANY_REQUESTS)
        });
    }
    let refusal = if form.password == form.password_again {
        let (who, now_ms) = (name.clone(), civmesh_certs::now_unix_millis());
        let enrolled = check_operator(&state, &visit, move |operators| {
            operators.enrol(&who, &form.code, &form.password, now_ms)
        })
        .await;
        match enrolled {
            Ok(Ok(signed_in)) => return open_session(&state, &visit, &name, signed_in),
            Ok(Err(refusal)) => refusal,
            Err(failed) => return *failed,
        }
    } else {
        SignInRefusal::PasswordWeak
    };
    with_form_token(&visit, |frame, form_token| {
        let page = EnrolPage { frame, form_token, name, error: Some(refusal.message_key()) };
        render(&page, StatusCode::BAD_REQUEST)
    })
}

pub(super) async fn switch_lang(Path(tag): Path<String>) -> Response {
    let lang = super::i18n::Lang::from_cookie(Some(tag.as_str()));
    with_cookie(Redirect::to("/").into_response(), LANG_COOKIE, lang.tag(), Some(365 * 86_400))
}

/// A grant as the console shows it.
struct GrantRow {
    id: u64,
    dataset: String,
    grantor: String,
    fields: String,
    purpose: String,
    scope: String,
    valid_until: String,
}

/// The grants this node's organisation may use now (the one rule,
/// `Grant::check_usable`: grantee, window, not revoked), oldest first.
pub(super) fn grants_to_me(state: &Shared) -> Vec<civmesh_policy::model::Grant> {
    let (me, now_ms) = (&state.identity.org, civmesh_certs::now_unix_millis());
    state.log.state().read(|applied| {
        applied
            .policy
            .grants
            .values()
            .filter(|grant| grant.check_usable(me, &grant.dataset, None, now_ms).is_ok())
            .cloned()
            .collect()
    })
}

/// A grant's scope as a person reads it: `street = jingansi / caojiadu`.
pub(super) fn scope_text(grant: &civmesh_policy::model::Grant) -> String {
    grant
        .scope
        .iter()
        .map(|condition| {
            let values: Vec<String> = condition.allowed.iter().map(ToString::to_string).collect();
            format!("{} = {}", condition.field, values.join(" / "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn grant_row(grant: &civmesh_policy::model::Grant) -> GrantRow {
    let scope = scope_text(grant);
    GrantRow {
        id: grant.id,
        dataset: grant.dataset.clone(),
        grantor: grant.grantor.to_string(),
        fields: grant.fields.iter().cloned().collect::<Vec<_>>().join(", "),
        purpose: grant.purpose.clone(),
        scope,
        valid_until: civmesh_policy::evaluation::format_time(grant.valid_until_ms),
    }
}

#[derive(Template)]
#[template(path = "console/grants.html")]
struct GrantsPage {
    frame: Frame,
    grants: Vec<GrantRow>,
}

pub(super) async fn grants(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let visit = Visit::of(&state, &headers);
    if let Err(refused) = visit.require(&[Role::StreetWorker, Role::PolicyOfficer]) {
        return *refused;
    }
    let grants = grants_to_me(&state).iter().map(grant_row).collect();
    render(&GrantsPage { frame: Frame::of(&visit), grants }, StatusCode::OK)
}
