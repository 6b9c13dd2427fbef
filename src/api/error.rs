//! `ApiError`, the only `IntoResponse` error: the JSON error envelope of API.md. A 500 carries
//! no internal detail; its cause is logged instead.

use crate::payments::PaymentsError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Invalid {
        field: Option<String>,
        message: String,
    },
    Unauthorized,
    Forbidden,
    AgentFrozen,
    NotFound,
    MethodNotAllowed,
    IdempotencyKeyReused,
    PayloadTooLarge,
    Conflict(String),
    /// A policy denial, with the stored (rejected) payment when there is one.
    PolicyDenied {
        rule: String,
        message: String,
        payment: Option<Box<serde_json::Value>>,
    },
    Unavailable(String),
    /// An upstream (an x402 seller) answered with something that cannot be used.
    BadGateway(String),
    /// Well-formed, but it cannot be done: `code` says why.
    Unprocessable {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    RateLimited {
        retry_after_secs: u64,
    },
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl From<PaymentsError> for ApiError {
    fn from(error: PaymentsError) -> Self {
        match error {
            PaymentsError::Unauthenticated => ApiError::Unauthorized,
            PaymentsError::AgentFrozen => ApiError::AgentFrozen,
            PaymentsError::NotFound => ApiError::NotFound,
            PaymentsError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            PaymentsError::Invalid { field, message } => ApiError::Invalid {
                field: Some(field),
                message,
            },
            PaymentsError::Conflict(message) => ApiError::Conflict(message),
            PaymentsError::PolicyDenied { rule, message } => ApiError::PolicyDenied {
                rule,
                message,
                payment: None,
            },
            PaymentsError::Chain(error) if error.is_retryable() => {
                tracing::warn!(%error, "chain unavailable");
                ApiError::Unavailable("the blockchain node is not answering; try again".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// The status, code and message of the errors whose envelope carries nothing of their own:
    /// the variants without a payload, and `Internal`, whose cause goes to the log only.
    fn fixed(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing, unknown, revoked or expired token",
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token's role may not do this",
            ),
            ApiError::AgentFrozen => (
                StatusCode::FORBIDDEN,
                "agent_frozen",
                "the agent is frozen; its credentials are refused",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take this method",
            ),
            ApiError::IdempotencyKeyReused => (
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body exceeds 1 MiB",
            ),
            // `Internal`; the variants with a payload are answered by `into_response` itself.
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        let (status, code, message, field) = match self {
            ApiError::Invalid { field, message } => {
                (StatusCode::BAD_REQUEST, "invalid_request", message, field)
            }
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message, None),
            ApiError::PolicyDenied {
                rule,
                message,
                payment,
            } => return policy_denied(rule, message, payment),
            ApiError::RateLimited { retry_after_secs } => return rate_limited(retry_after_secs),
            ApiError::BadGateway(message) => {
                (StatusCode::BAD_GATEWAY, "seller_error", message, None)
            }
            ApiError::Unprocessable {
                code,
                field,
                message,
            } => (StatusCode::UNPROCESSABLE_ENTITY, code, message, field),
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message,
                None,
            ),
            fixed => {
                let (status, code, message) = fixed.fixed();
                (status, code, message.into(), None)
            }
        };
        let mut error = json!({"code": code, "message": message});
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

/// `403 policy_denied`: the envelope names the deciding rule, and the payment rides beside it.
fn policy_denied(
    rule: String,
    message: String,
    payment: Option<Box<serde_json::Value>>,
) -> Response {
    let mut body = json!({"error": {"code": "policy_denied", "rule": rule, "message": message}});
    if let Some(payment) = payment {
        body["payment"] = *payment;
    }
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// `429 rate_limited` with `Retry-After` in whole seconds.
fn rate_limited(retry_after_secs: u64) -> Response {
    let body = json!({"error": {"code": "rate_limited",
        "message": format!("too many requests; retry after {retry_after_secs} s")}});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(retry_after_secs),
    );
    response
}

/// Gives an error response that something other than `ApiError` produced (an extractor's
/// rejection of a path or query that is not valid UTF-8, the timeout layer, the body limit) the
/// one JSON error envelope. Responses that already are JSON pass through untouched.
pub async fn envelope_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    // JSON errors are already enveloped; the console's HTML pages carry their own message.
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message, field) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource", None),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take this method",
            None,
        ),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long", None),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body exceeds 1 MiB", None),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("invalid_request", "the body must be JSON", Some("body"))
        }
        status if status.is_client_error() => (
            "invalid_request",
            "the path or query is not valid (UTF-8, a known parameter, a valid value)",
            Some("path"),
        ),
        _ => ("internal_error", "internal error", None),
    };
    let mut error = json!({"code": code, "message": message});
    if let Some(field) = field {
        error["field"] = json!(field);
    }
    let mut rebuilt = (status, Json(json!({ "error": error }))).into_response();
    if let Some(retry) = response.headers().get(axum::http::header::RETRY_AFTER) {
        rebuilt
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, retry.clone());
    }
    rebuilt
}
