//! API errors and their HTTP status: the one place where failures become status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::API_VERSION;
use crate::error::ServiceError;

/// A failed API call, by what the client should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotModified(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    /// A request body over its endpoint's limit (413; see `api::MAX_JSON_BODY`).
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Internal(String),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { message } => ApiError::NotFound(message),
            ServiceError::Conflict { message } => ApiError::Conflict(message),
            ServiceError::InvalidArgument { message } => ApiError::BadRequest(message),
            ServiceError::NotModified { message } => ApiError::NotModified(message),
            ServiceError::Unauthorized { message } => ApiError::Unauthorized(message),
            ServiceError::Forbidden { message } => ApiError::Forbidden(message),
            ServiceError::Unavailable { message } => ApiError::Unavailable(message),
            ServiceError::NotImplemented { message } => ApiError::NotImplemented(message),
            e @ (ServiceError::Store(_)
            | ServiceError::Cluster(_)
            | ServiceError::Io { .. }
            | ServiceError::Image(_)
            | ServiceError::Runtime(_)
            | ServiceError::Network(_)
            | ServiceError::WireGuard(_)) => {
                tracing::error!(error = %e, "internal error");
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotModified(_) => StatusCode::NOT_MODIFIED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::NotModified(_) = self {
            // 304 carries no body.
            return self.status().into_response();
        }
        (self.status(), Json(json!({ "message": self.to_string() }))).into_response()
    }
}

/// Unknown routes answer like dockerd: 404 with a JSON message.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("page not found: {}", uri.path()))
}

/// Headers dockerd sends on every response.
pub async fn common_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}
