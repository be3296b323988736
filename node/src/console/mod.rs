//! The console: web pages for the people who work with civmesh, served at
//! `/` over the node's HTTPS listener, beside the API. Server-rendered HTML
//! (askama templates embedded in the binary), plain forms, no script, a
//! strict Content-Security-Policy. Simplified Chinese by default.
//!
//! An operator (see [`operators`]) signs in with a name and password and
//! gets a session (see [`sessions`]); every form carries the session's
//! CSRF token (the sign-in and enrolment forms a double-submit cookie), and
//! every page checks the operator's role on the server. Record keys and
//! filters travel in POST bodies, never in URLs.

mod actions;
mod auditor;
mod corrections;
mod dashboard;
pub mod i18n;
mod officer;
pub mod operators;
mod pages;
mod received;
mod records;
pub mod sessions;
mod throttle;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::Shared;
use i18n::{catalogue, Catalogue, Lang};
use operators::{OperatorStore, Role};
use sessions::{Session, Sessions};

/// The session cookie (`__Host-`: Secure, `Path=/`, no domain, so a sibling host cannot set it).
pub const SESSION_COOKIE: &str = "__Host-civmesh_session";
/// The double-submit cookie of the sign-in and enrolment forms (`__Host-` too).
pub const FORM_COOKIE: &str = "__Host-civmesh_form";
/// The language cookie.
const LANG_COOKIE: &str = "civmesh_lang";
/// What the console's pages may load: only this node's stylesheet.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's state on a running node.
pub struct Console {
    /// The operators.
    pub operators: OperatorStore,
    /// Who is signed in.
    pub sessions: Sessions,
    /// Sign-in attempts per client address.
    sign_ins: throttle::SignInThrottle,
    /// When each operator last saw their corrections' outcomes.
    seen: std::sync::Mutex<corrections::SeenTimes>,
    /// The node's directory (the auditor's files, working space).
    node_dir: std::path::PathBuf,
    /// The dashboard's evaluations, kept a short while.
    dashboard: dashboard::DashboardCache,
    /// The auditor's verifications, replays and uploads.
    audit: auditor::AuditJobs,
    /// The node's tasks: the console's background work joins them, so
    /// shutdown waits for it.
    tasks: tokio_util::task::TaskTracker,
}

impl Console {
    /// The console of the node in `node_dir`, spawning its background work
    /// on the node's `tasks`.
    pub fn new(node_dir: &std::path::Path, tasks: tokio_util::task::TaskTracker) -> Self {
        Console {
            operators: OperatorStore::new(node_dir),
            sessions: Sessions::default(),
            sign_ins: throttle::SignInThrottle::default(),
            seen: std::sync::Mutex::default(),
            node_dir: node_dir.to_path_buf(),
            dashboard: dashboard::DashboardCache::default(),
            audit: auditor::AuditJobs::default(),
            tasks,
        }
    }
}

/// The console's routes (no bearer token: operators sign in).
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::sign_in_form).post(pages::sign_in))
        .route("/logout", post(pages::sign_out))
        .route("/enrol", get(pages::enrol_form).post(pages::enrol))
        .route("/grants", get(pages::grants))
        .route("/lang/{tag}", get(pages::switch_lang))
        .route("/console.css", get(stylesheet))
        .merge(corrections::router())
        .merge(officer::router())
        .merge(auditor::router())
        .merge(dashboard::router())
        .merge(received::router())
        .layer(axum::middleware::map_response(security_headers))
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("console.css")).into_response()
}

/// Every console answer: the CSP, no sniffing, no referrer, no caching.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: Secure, HttpOnly, SameSite=Strict, for the whole console.
fn set_cookie(name: &str, value: &str, max_age_s: Option<u64>) -> String {
    let age = max_age_s.map(|seconds| format!("; Max-Age={seconds}")).unwrap_or_default();
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}")
}

/// One request as the console sees it: the language and, if signed in, the session.
struct Visit {
    lang: Lang,
    session: Option<(String, Session)>,
}

impl Visit {
    /// The request's language and session: signed out unless the session
    /// is open and its operator still holds it ([`Sessions::get_held`]).
    fn of(state: &Shared, headers: &HeaderMap) -> Self {
        let lang = Lang::from_cookie(cookie(headers, LANG_COOKIE));
        let now_ms = civmesh_certs::now_unix_millis();
        let (sessions, operators) = (&state.console.sessions, &state.console.operators);
        let session = cookie(headers, SESSION_COOKIE)
            .and_then(|id| sessions.get_held(id, now_ms, operators).map(|session| (id.to_string(), session)));
        Visit { lang, session }
    }

    fn t(&self) -> &'static Catalogue {
        catalogue(self.lang)
    }

    /// The session, if its role is one of `roles`; else the answer to give:
    /// the sign-in page, or 403.
    fn require(&self, roles: &[Role]) -> Result<&Session, Box<Response>> {
        let Some((_, session)) = &self.session else {
            return Err(Box::new(Redirect::to("/login").into_response()));
        };
        if session.role == Role::Admin || roles.contains(&session.role) {
            return Ok(session);
        }
        Err(Box::new(pages::error_page(self, StatusCode::FORBIDDEN, "error.forbidden")))
    }

    /// [`Visit::require`] for a posted form: also refuses (403, "form
    /// expired") unless `posted_csrf` is the session's CSRF token.
    fn require_posted(&self, roles: &[Role], posted_csrf: &str) -> Result<&Session, Box<Response>> {
        let session = self.require(roles)?;
        if !pages::csrf_matches(&session.csrf, posted_csrf) {
            return Err(Box::new(pages::error_page(self, StatusCode::FORBIDDEN, "error.form-expired")));
        }
        Ok(session)
    }
}

/// A link of the navigation bar.
pub struct NavItem {
    /// Where it goes.
    pub href: &'static str,
    /// Its message key.
    pub key: &'static str,
}

/// The navigation of `role`.
fn navigation(role: Role) -> Vec<NavItem> {
    let item = |href, key| NavItem { href, key };
    let home = item("/", "nav.home");
    let dashboard = item("/dashboard", "nav.dashboard");
    let street = [
        item("/grants", "nav.grants"),
        item("/received", "nav.received"),
        item("/records", "nav.records"),
        item("/corrections", "nav.corrections"),
        item("/demands/new", "nav.demand"),
    ];
    let reviewer = [item("/review", "nav.review"), item("/review/rules", "nav.rules")];
    let officer = [item("/demands", "nav.demands"), item("/issued-grants", "nav.issued")];
    let auditor = [item("/audit", "nav.audit"), item("/audit/subject", "nav.subject")];
    let mut nav = vec![home];
    match role {
        Role::StreetWorker => nav.extend(street),
        Role::Reviewer => nav.extend(reviewer),
        Role::PolicyOfficer => nav.extend(officer),
        Role::Auditor => nav.extend(auditor),
        Role::Admin => nav.extend(street.into_iter().chain(reviewer).chain(officer).chain(auditor)),
    }
    nav.push(dashboard);
    nav
}

/// What every page's frame shows: language, operator, navigation, the
/// sign-out form's CSRF token.
pub struct Frame {
    /// The messages.
    pub t: &'static Catalogue,
    /// `zh-CN` or `en`.
    pub lang: &'static str,
    /// The language to switch to.
    pub other_lang: &'static str,
    /// The signed-in operator's name.
    pub operator: Option<String>,
    /// Their role's message key.
    pub role_key: &'static str,
    /// The session's CSRF token.
    pub csrf: String,
    /// The links they may follow.
    pub nav: Vec<NavItem>,
}

impl Frame {
    fn of(visit: &Visit) -> Self {
        let other_lang = match visit.lang {
            Lang::ZhCn => Lang::En.tag(),
            Lang::En => Lang::ZhCn.tag(),
        };
        let (operator, role_key, csrf, nav) = match &visit.session {
            Some((_, session)) => (
                Some(session.operator.clone()),
                session.role.message_key(),
                session.csrf.clone(),
                navigation(session.role),
            ),
            None => (None, "", String::new(), Vec::new()),
        };
        Frame { t: visit.t(), lang: visit.lang.tag(), other_lang, operator, role_key, csrf, nav }
    }
}
