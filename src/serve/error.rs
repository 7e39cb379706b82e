//! Every error the service answers with: a status and the JSON body
//! `{"error": {"code": "...", "message": "...", "details": …}}` — one sentence, never a panic's text,
//! never a secret.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::engine::Failure;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code.
    pub code: &'static str,
    /// One sentence.
    pub message: String,
    /// Structured details (template check problems with their lines, …).
    pub details: Option<serde_json::Value>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request` 400, `unauthorized` 401, `forbidden` 403, `not_found` 404, `request_timeout` 408,
    /// `conflict` / `cancelled` / `already_finished` / `template_exists` 409, `payload_too_large` 413,
    /// `invalid_request` / `invalid_configuration` / `invalid_data` / `template_invalid` /
    /// `unknown_data_type` / `unknown_template` / `detect_failed` 422, `too_many_requests` 429,
    /// `internal` 500, `shutting_down` 503.
    pub code: String,
    /// One sentence.
    pub message: String,
    /// Structured details, for some codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: the request is well-formed but asks for something that cannot be done.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 403: the token lacks a scope or may not see this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500, for what should not happen; the message is logged, the answer says only that.
    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %message, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request; its log says why",
        )
    }

    /// With structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// From an engine failure.
    pub fn from_failure(failure: Failure) -> ApiError {
        let status =
            StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code: &'static str = match failure.info.code.as_str() {
            "invalid_configuration" => "invalid_configuration",
            "cancelled" => "cancelled",
            "conflict" => "conflict",
            "invalid_data" => "invalid_data",
            "unknown_template" => "unknown_template",
            "io_error" => "io_error",
            _ => "run_failed",
        };
        ApiError::new(status, code, failure.info.message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        ApiError::from_failure(super::engine::classify(&e))
    }
}
