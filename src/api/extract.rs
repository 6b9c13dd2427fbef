//! Request extractors: the bearer principal, JSON bodies whose errors name the offending field,
//! and the `Idempotency-Key` header.

use super::{ApiError, AppState};
use crate::domain::{AgentId, CredentialId, IdempotencyKey, Role};
use crate::payments::Principal;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|secret| !secret.is_empty() && secret.len() <= 512)
            .ok_or(ApiError::Unauthorized)?;
        let principal = state.payments.authenticate(secret).await?;
        // Writes are rate limited per caller before any use case runs, denials included.
        if !matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        ) {
            state.write_limiter.check(&principal)?;
        }
        Ok(Auth(principal))
    }
}

impl Auth {
    /// Staff of one of `roles` (admin is always allowed); anyone else gets `403`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        match &self.0 {
            Principal::Staff { role, .. } if *role == Role::Admin || roles.contains(role) => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    pub fn agent(&self) -> Option<(&AgentId, &CredentialId)> {
        match &self.0 {
            Principal::Agent {
                agent_id,
                credential_id,
            } => Some((agent_id, credential_id)),
            Principal::Staff { .. } => None,
        }
    }
}

/// A JSON body. Malformed JSON, a wrong type, a missing or an unknown field are `400` with
/// `error.field` naming the field (dotted path); a body over the limit is `413`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::invalid("body", "could not read the request body")
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let field = field_of(&path, &message);
        ApiError::Invalid {
            field: Some(field),
            message,
        }
    })
}

/// serde reports a missing field at its parent's path; name the field itself. (An unknown
/// field is already the last segment of the path.)
fn field_of(path: &str, message: &str) -> String {
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_string(),
        (".", None) => "body".to_string(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_string(),
    }
}

/// The `Idempotency-Key` header, required.
pub fn idempotency_key(parts: &axum::http::HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = parts.get("idempotency-key").ok_or_else(|| {
        ApiError::invalid("Idempotency-Key", "the Idempotency-Key header is required")
    })?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key", "must be printable ASCII"))?;
    IdempotencyKey::parse(text).map_err(|e| ApiError::invalid("Idempotency-Key", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        amount: crate::domain::Amount,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    fn field(body: &str) -> Option<String> {
        match parse_json::<Outer>(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field("{"), Some("body".into()));
        assert_eq!(field("[]"), Some("body".into()));
        assert_eq!(field("{}"), Some("name".into()));
        assert_eq!(field(r#"{"name": 5}"#), Some("name".into()));
        assert_eq!(
            field(r#"{"name": "a", "colour": 1}"#),
            Some("colour".into())
        );
        assert_eq!(
            field(r#"{"name": "a", "inner": {"amount": 12.5}}"#),
            Some("inner.amount".into())
        );
        assert_eq!(
            field(r#"{"name": "a", "inner": {"amount": "1e3"}}"#),
            Some("inner.amount".into())
        );
        assert_eq!(
            field(r#"{"name": "a", "inner": {"x": 1}}"#),
            Some("inner.x".into())
        );
    }
}
