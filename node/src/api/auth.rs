//! Bearer tokens: every request presents the admin token or a scoped token
//! ([`authenticate`], on the whole router); each route then needs its own
//! scope from the route table ([`require_scope`], on each route).

use std::collections::BTreeSet;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::tokens::Scope;
use crate::api::{ApiError, Shared};

/// The named holder of the scoped token a request presented (absent for the
/// admin token), set by the token check for the handlers.
#[derive(Debug, Clone)]
pub struct TokenHolder(pub String);

/// Who presented the request's token.
#[derive(Debug, Clone)]
enum Caller {
    /// The admin token: every scope.
    Admin,
    /// A scoped token: only these.
    Scoped(BTreeSet<Scope>),
}

fn unauthorized() -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required").into_response()
}

/// The admin token or a known scoped token, else 401.
pub async fn authenticate(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = presented else {
        return unauthorized();
    };
    let mut request = request;
    if constant_time_equal(token.as_bytes(), state.api_token.as_bytes()) {
        request.extensions_mut().insert(Caller::Admin);
        return next.run(request).await;
    }
    let Some(scoped) = state.scoped_tokens.token_of(token) else {
        return unauthorized();
    };
    // Handlers that record a person (corrections) read the holder.
    request.extensions_mut().insert(TokenHolder(scoped.name));
    request.extensions_mut().insert(Caller::Scoped(scoped.scopes));
    next.run(request).await
}

/// The admin token may do everything; a scoped token only what its scopes
/// name; anything else is refused.
pub async fn require_scope(State(needed): State<Scope>, request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(Caller::Admin) => next.run(request).await,
        Some(Caller::Scoped(scopes)) if scopes.contains(&needed) => next.run(request).await,
        Some(Caller::Scoped(_)) => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token lacks the {needed:?} scope this request needs"),
        )
        .into_response(),
        None => unauthorized(),
    }
}

/// Whether `a` equals `b`, in time that depends on their lengths only
/// (`subtle`), so a caller cannot find the admin token byte by byte.
fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_equal;

    #[test]
    fn tokens_compare_equal_only_when_every_byte_and_the_length_agree() {
        let token = b"5f0c2a9e";
        assert!(constant_time_equal(token, b"5f0c2a9e"));
        for other in [&b"5f0c2a9f"[..], b"4f0c2a9e", b"5f0c2a9", b"5f0c2a9e0", b""] {
            assert!(!constant_time_equal(token, other), "{other:?}");
        }
    }
}
