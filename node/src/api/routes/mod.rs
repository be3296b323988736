//! The route table: each route's method, path, scope, handler and OpenAPI
//! operation. The router ([`crate::api::router`]), the scope check and the
//! OpenAPI document ([`crate::api::openapi`]) are all built from it.

use std::collections::BTreeSet;

use axum::routing::{MethodFilter, MethodRouter};

use crate::api::tokens::Scope;
use crate::api::Shared;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
}

impl Verb {
    /// The method's name as OpenAPI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
        }
    }
}

/// What a route takes as its body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Nothing.
    None,
    /// JSON of this schema (a name in the document's components).
    Json {
        /// The schema's name.
        schema: &'static str,
        /// Whether a body must be sent.
        required: bool,
    },
    /// A file's raw bytes (possibly none), up to the node's
    /// `attachment_bytes_max`.
    Attachment,
}

/// A route's OpenAPI operation. Schemas and parameters are named by their
/// keys in the document's components (`openapi.json`).
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    /// One line on what the route does.
    pub summary: &'static str,
    /// More, if one line is not enough.
    pub description: &'static str,
    /// Its parameters (path and query).
    pub parameters: &'static [&'static str],
    /// Its body.
    pub body: Body,
    /// The success answer's description.
    pub answer: &'static str,
    /// The success answer's media types, each with its schema.
    pub media: &'static [(&'static str, &'static str)],
    /// The error statuses the handler itself answers; those of the token
    /// check and of malformed input are added ([`Route::error_statuses`]).
    pub errors: &'static [u16],
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Its method.
    pub verb: Verb,
    /// Its path, with `{name}` for a path parameter.
    pub path: &'static str,
    /// The scope a scoped token needs for it.
    pub scope: Scope,
    /// Its handler, for this route's method.
    pub handler: fn(MethodFilter) -> MethodRouter<Shared>,
    /// Its OpenAPI operation.
    pub doc: Doc,
}

impl Route {
    /// The handler, for this route's method only.
    pub fn method_router(&self) -> MethodRouter<Shared> {
        (self.handler)(self.verb.filter())
    }

    /// Every error status the route can answer: the handler's own, 401 and
    /// 403 from the token check, and those of malformed parameters or bodies.
    pub fn error_statuses(&self) -> BTreeSet<u16> {
        let mut statuses: BTreeSet<u16> = self.doc.errors.iter().copied().collect();
        statuses.extend([401, 403]);
        if !self.doc.parameters.is_empty() {
            statuses.insert(400);
        }
        match self.doc.body {
            Body::None => {}
            Body::Json { .. } => statuses.extend([400, 413, 415, 422]),
            Body::Attachment => statuses.extend([400, 413]),
        }
        statuses
    }
}

/// A route's handler, taking the route's method.
macro_rules! handler {
    ($handler:path) => {
        |filter| axum::routing::on(filter, $handler)
    };
}

const JSON: &str = "application/json";
const BINARY: &str = "application/octet-stream";
/// Nothing but a summary: the base of each row's operation.
const DOC: Doc = Doc {
    summary: "",
    description: "",
    parameters: &[],
    body: Body::None,
    answer: "",
    media: &[],
    errors: &[],
};
/// The errors of a policy-log write or linearizable read (`SubmitError`).
const LOG_ERRORS: &[u16] = &[400, 409, 503];
/// The errors of the correction service (`CorrectionError`) and of reads.
const CORRECTION_ERRORS: &[u16] = &[400, 404, 409, 413, 503, 507];

mod exchange;
mod table;

/// Every route of the API.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    table::NODE_ROUTES.iter().chain(exchange::EXCHANGE_ROUTES)
}
