//! The one place where errors become HTTP responses.
//!
//! Every error body is `{"code","message","request_id"}` where `code` is a gRPC canonical code name in snake
//! case (ARCHITECTURE.md). [`ApiError::into_response`] has no side effects: it renders the body and leaves the
//! error in the response extensions so the request middleware can add the request id (and, later, audit).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_store::StoreError;
use serde::Serialize;

/// gRPC canonical codes used by the API, each with exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// 400: the request is malformed or a field is invalid.
    InvalidArgument,
    /// 401 with `WWW-Authenticate: Bearer`: no valid credential.
    Unauthenticated,
    /// 403: authenticated, but no held grant allows the action.
    PermissionDenied,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route exists but not with this method.
    Unimplemented,
    /// 409: a resource with this key exists.
    AlreadyExists,
    /// 409: the resource is not in a state that allows this (stale version, wrong policy state).
    FailedPrecondition,
    /// 413: the request body is larger than the limit.
    OutOfRange,
    /// 408: the request body stopped arriving (no bytes for the header timeout).
    DeadlineExceeded,
    /// 429 with `Retry-After`: too many requests from this source, or too many pending sign-ins overall.
    ResourceExhausted,
    /// 500: a bug or corrupt stored data. The message never carries internals.
    Internal,
    /// 503: a dependency (the database) is unavailable; retry later.
    Unavailable,
}

impl Code {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Unimplemented => StatusCode::METHOD_NOT_ALLOWED,
            Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::OutOfRange => StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code for a status produced outside our handlers (axum rejections, fallbacks).
    pub fn from_status(status: StatusCode) -> Code {
        match status {
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::URI_TOO_LONG | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                Code::OutOfRange
            }
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
            StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
            s if s.is_server_error() => Code::Internal,
            _ => Code::InvalidArgument,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::Unimplemented => "unimplemented",
            Code::AlreadyExists => "already_exists",
            Code::FailedPrecondition => "failed_precondition",
            Code::OutOfRange => "out_of_range",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::ResourceExhausted => "resource_exhausted",
            Code::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// An error answered to the client. The message is safe to show: it never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
}

impl From<kubehero_identity::IdentityError> for ApiError {
    fn from(e: kubehero_identity::IdentityError) -> Self {
        use kubehero_identity::IdentityError;
        match e {
            IdentityError::Unauthenticated(message) => ApiError::unauthenticated(message),
            IdentityError::Required => ApiError::unauthenticated(e.to_string()),
            IdentityError::Store(e) => ApiError::from(e),
            IdentityError::NoRandomness => ApiError::new(Code::Internal, "no randomness available"),
            IdentityError::AuditUnavailable(_) => {
                ApiError::new(Code::Unavailable, "the audit log cannot be written; the request was not answered")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::AlreadyExists(_) => Code::AlreadyExists,
            StoreError::Conflict(_) => Code::FailedPrecondition,
            StoreError::Invalid(_) => Code::InvalidArgument,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Corrupt(_) | StoreError::Config(_) => Code::Internal,
        };
        if code == Code::Internal || code == Code::Unavailable {
            tracing::error!(error = %e, "store error");
        }
        let message = match code {
            Code::Internal => "internal error; the server log has details".to_string(),
            Code::Unavailable => "the database is unavailable; retry later".to_string(),
            _ => e.to_string(),
        };
        ApiError { code, message }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
    pub request_id: &'a str,
}

/// Renders an error with a request id. Used by [`ApiError::into_response`] (empty id, filled in later by the
/// middleware) and by the middleware itself.
pub fn render(code: Code, message: &str, request_id: &str) -> Response {
    let mut res = (code.status(), body(code, message, request_id)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if code == Code::Unauthenticated {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"kubehero\""));
    }
    res
}

/// The JSON error body, `{"code","message","request_id"}`.
pub fn body(code: Code, message: &str, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { code: code.as_str(), message, request_id }).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = render(self.code, &self.message, "");
        res.extensions_mut().insert(self);
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
