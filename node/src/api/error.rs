//! [`ApiError`], the one home of the API's error shape (`{"error": "..."}`
//! with a status code), and the extractors whose rejections answer in it.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use civmesh_consensus::SubmitError;
use serde::de::DeserializeOwned;

/// An API error: a status code and a message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }

    /// A 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 500: the node failed.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        let status = match error {
            SubmitError::Refused(_) => StatusCode::BAD_REQUEST,
            SubmitError::NoLeader(_) | SubmitError::CommitTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            SubmitError::Raft(_) => StatusCode::CONFLICT,
        };
        ApiError(status, error.to_string())
    }
}

/// axum's rejections keep their status and text, in the JSON shape.
macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                ApiError(rejection.status(), rejection.body_text())
            }
        }
    )*};
}
from_rejection!(JsonRejection, QueryRejection, PathRejection, BytesRejection);

/// A JSON request body (`axum::Json`, rejected as an [`ApiError`]).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(JsonBody(value))
    }
}

/// The query string (`axum::extract::Query`, rejected as an [`ApiError`]).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(QueryParams(value))
    }
}

/// The path's parameters (`axum::extract::Path`, rejected as an [`ApiError`]).
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathParams(value))
    }
}

/// A raw request body (`Bytes`, rejected as an [`ApiError`]).
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Ok(RawBody(axum::body::Bytes::from_request(request, state).await?))
    }
}

/// The answer to a path no route has.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// The answer to a route's path with a method it does not take.
pub async fn no_method() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take this method")
}
