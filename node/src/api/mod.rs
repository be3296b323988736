//! The node's HTTP API (axum), for operators, department systems and the
//! `civmesh cluster` commands. Every route needs the node's API token as a
//! bearer token. Bodies are JSON, bounded by [`API_REQUEST_BYTES_MAX`];
//! errors are `{"error": "..."}` with a fitting status code.
//!
//! Every route is a row of [`routes::routes`] (method, path, scope, handler,
//! OpenAPI operation): the router, the per-route scope check and the
//! document at `/openapi.json` are built from it.

pub(crate) mod assessments;
mod audit;
mod auth;
mod cluster;
mod consents;
pub mod deletions;
mod error;
pub(crate) mod grants;
pub mod metrics;
pub mod openapi;
mod policy;
mod query;
pub mod received;
mod records;
pub mod routes;
mod status;
mod subject_requests;
pub mod tokens;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::Router;
use civmesh_certs::VerifiedIdentity;
use civmesh_consensus::PolicyLog;

pub use assessments::{AssessmentCreated, AssessmentsQuery};
pub use audit::{
    AuditCommandsQuery, ConsistencyAnswer, InclusionAnswer, AUDIT_COMMANDS_PER_REQUEST_MAX,
    AUDIT_PAGE_BYTES_MAX,
};
pub use auth::TokenHolder;
pub use cluster::{InitializeRequest, PeerAddress, VotersRequest};
pub use consents::ConsentRequest;
pub use error::{ApiError, JsonBody, PathParams, QueryParams, RawBody};
pub use grants::{CatalogEntry, CatalogField, DemandView, GrantIssue, GrantRequest, Reason};
pub use policy::{CommandsRequest, CommandsResponse, DemandEntry, MatchQuery, PolicySummary};
pub use query::AccessLogSummary;
pub(crate) use query::{ask_owner, list_page};
pub use records::{DatasetQuery, ImportRequest, ImportResponse, RecordAnswer, RecordLookup, RowFailure};
pub use status::NodeStatus;

use crate::records::RecordStore;
use crate::swarm::SwarmClient;

/// The largest request body accepted, in bytes.
pub const API_REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The most rows one import request may carry.
pub const IMPORT_ROWS_PER_REQUEST_MAX: usize = 5_000;
/// The longest import batch id, in characters.
pub const IMPORT_BATCH_CHARS_MAX: usize = 128;
/// How long a linearizable read may wait.
pub const READ_INDEX_TIMEOUT_MS: u64 = 5_000;

/// What the handlers share.
pub struct ApiState {
    /// The policy-log member.
    pub log: PolicyLog<SwarmClient>,
    /// The swarm.
    pub swarm: SwarmClient,
    /// The admin bearer token (every scope).
    pub api_token: String,
    /// Scoped tokens.
    pub scoped_tokens: crate::api::tokens::TokenRegistry,
    /// This node's certificate.
    pub certificate_pem: String,
    /// What the certificate proves.
    pub identity: VerifiedIdentity,
    /// This organisation's authoritative records.
    pub records: Arc<RecordStore>,
    /// Queries: this node's key, secret and owner-side service.
    pub query: Arc<crate::query::QueryService>,
    /// Corrections: the inbox, the outbox and their worker.
    pub corrections: Arc<crate::corrections::CorrectionService>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::api::metrics::Metrics>,
    /// The console's operators and sessions.
    pub console: crate::console::Console,
    /// The impact assessments this node signed.
    pub assessments: Arc<crate::assessments::AssessmentStore>,
    /// Days an owner has to answer a subject's request taken here, when
    /// the request names none (`[subject_requests] deadline_days`).
    pub subject_request_deadline_days: u64,
}

pub(crate) type Shared = Arc<ApiState>;

/// The API's routes, from the route table: each behind the token check and
/// its own scope.
pub fn router(state: Shared) -> Router {
    // An attachment is uploaded whole, so its route takes larger bodies.
    let attachment_bytes_max = state.corrections.attachment_limits().attachment_bytes_max;
    let attachment_limit = DefaultBodyLimit::max(usize::try_from(attachment_bytes_max).unwrap_or(usize::MAX));
    let mut router = Router::new();
    for route in routes::routes() {
        let mut handler = route
            .method_router()
            .route_layer(middleware::from_fn_with_state(route.scope, auth::require_scope));
        if matches!(route.doc.body, routes::Body::Attachment) {
            handler = handler.layer(attachment_limit);
        }
        router = router.route(route.path, handler);
    }
    router
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::no_method)
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        // The console's pages come after the token check: operators sign in.
        .merge(crate::console::router())
        .layer(DefaultBodyLimit::max(API_REQUEST_BYTES_MAX))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::routes::{routes, Verb};
    use super::tokens::Scope;

    /// The scope of the route a request would reach; a request no route
    /// takes is held to `cluster`, the narrowest grant of trust.
    fn scope_for(method: &str, path: &str) -> Scope {
        let matches = |template: &str| {
            let (template, path): (Vec<_>, Vec<_>) =
                (template.split('/').collect(), path.split('/').collect());
            template.len() == path.len()
                && template.iter().zip(&path).all(|(want, have)| want.starts_with('{') || want == have)
        };
        routes()
            .filter(|route| route.verb.name().eq_ignore_ascii_case(method) && matches(route.path))
            // A literal segment wins over a parameter (`stats` over `{id}`).
            .min_by_key(|route| route.path.matches('{').count())
            .map_or(Scope::Cluster, |route| route.scope)
    }

    #[test]
    fn each_route_needs_its_scope_and_unknown_ones_the_strongest() {
        let cases = [
            ("GET", "/v1/status", Scope::Read),
            ("GET", "/metrics", Scope::Read),
            // `read` sees counts and metadata; record values need more.
            ("GET", "/v1/corrections/stats", Scope::Read),
            ("GET", "/v1/corrections/ab12", Scope::Corrections),
            ("GET", "/v1/corrections", Scope::Corrections),
            ("GET", "/v1/records", Scope::Records),
            ("POST", "/v1/records/show", Scope::Records),
            ("GET", "/v1/subscriptions/updates", Scope::Query),
            ("GET", "/v1/evaluation", Scope::Read),
            ("GET", "/v1/corrections/ab12/attachments/0", Scope::Review),
            ("POST", "/v1/corrections/attachments", Scope::Corrections),
            ("POST", "/v1/query", Scope::Query),
            ("POST", "/v1/subscriptions", Scope::Query),
            ("POST", "/v1/records/import", Scope::Records),
            ("POST", "/v1/commands", Scope::Policy),
            ("POST", "/v1/corrections", Scope::Corrections),
            ("POST", "/v1/corrections/ab12/accept", Scope::Review),
            ("POST", "/v1/cluster/initialize", Scope::Cluster),
            ("PUT", "/v1/cluster/voters", Scope::Cluster),
            ("GET", "/v1/audit/commands", Scope::Audit),
            ("POST", "/v1/assessments", Scope::Policy),
            ("GET", "/v1/assessments", Scope::Read),
            ("GET", "/v1/assessments/ab12", Scope::Read),
            ("DELETE", "/v1/records", Scope::Cluster),
            ("POST", "/v1/unknown", Scope::Cluster),
        ];
        for (method, path, scope) in cases {
            assert_eq!(scope_for(method, path), scope, "{method} {path}");
        }
        assert!(routes()
            .filter(|route| route.path.starts_with("/v1/cluster/"))
            .all(|route| route.scope == Scope::Cluster));
        assert!(routes().any(|route| route.verb == Verb::Put));
    }
}
