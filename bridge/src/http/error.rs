//! The HTTP edge's one error type: a stable JSON shape `{"error": {"code", "message"}}` with the right
//! status and headers. Internal details are logged, never returned.

use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::dispenser::DispenseError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter is missing, malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 413: the request asks for more than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// 404: `device=` names no attached device, or no such endpoint.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 401: a bearer token is required and was missing or wrong.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 429: the per-client rate limit was hit.
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// 429: this client failed authentication too often; its token is not checked now.
    #[error("too many failed authentication attempts; retry in {retry_after} s")]
    AuthThrottled { retry_after: u64 },
    /// 503: no entropy could be served (source failed, stopped, stale or too slow).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after: u64 },
    /// 405: the path exists but not for this method (`Allow` lists the methods it has).
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: String },
    /// 406: no media type this endpoint answers with is acceptable to the client (`Accept`).
    #[error("{0}")]
    NotAcceptable(String),
    /// 400: an HTTP/1.1 request without a `Host` header (RFC 9112 §3.2).
    #[error("an HTTP/1.1 request must carry a Host header (RFC 9112 section 3.2)")]
    MissingHost,
    /// 500: a bug; the details are logged, not returned.
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::MissingHost => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } | Self::AuthThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (documented in docs/api.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_parameter",
            Self::MissingHost => "missing_host",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NotAcceptable(_) => "not_acceptable",
            Self::TooLarge(_) => "too_large",
            Self::NotFound { code, .. } | Self::Unavailable { code, .. } => code,
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::AuthThrottled { .. } => "too_many_auth_failures",
            Self::Internal => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after }
            | Self::AuthThrottled { retry_after }
            | Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Maps a dispenser error; `retry_after` is the configured Retry-After for 503s.
    pub fn from_dispense(e: DispenseError, retry_after: u64) -> Self {
        let unavailable = |code, e: &DispenseError| Self::Unavailable {
            code,
            message: e.to_string(),
            retry_after,
        };
        match e {
            DispenseError::NoSuchDevice(_) => {
                Self::NotFound { code: "unknown_device", message: e.to_string() }
            }
            DispenseError::NoHealthyDevice => unavailable("no_healthy_device", &e),
            DispenseError::Failed { .. } => unavailable("device_failed", &e),
            DispenseError::Stopped { .. } | DispenseError::Detached { .. } => {
                unavailable("device_stopped", &e)
            }
            DispenseError::Stale { .. } | DispenseError::Timeout | DispenseError::Empty => {
                unavailable("entropy_unavailable", &e)
            }
            DispenseError::AlreadyAttached(_)
            | DispenseError::BadPath { .. }
            | DispenseError::Ring(_)
            | DispenseError::BadMix { .. }
            | DispenseError::Spawn { .. } => {
                tracing::error!(error = %e, "unexpected dispenser error in a request");
                Self::Internal
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after();
        let unauthorized = matches!(self, Self::Unauthorized);
        let allow = match &self {
            Self::MethodNotAllowed { allow } => HeaderValue::from_str(allow).ok(),
            _ => None,
        };
        let body = Body { error: Inner { code: self.code(), message: self.to_string() } };
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if unauthorized {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = allow {
            h.insert(header::ALLOW, allow);
        }
        resp
    }
}
