//! `/v1/x402`: agents pay x402 sellers. `fetch` makes the request and pays a `402` under the
//! credential's policy; `authorize` signs for an agent that makes its own request.

use super::extract::{Auth, JsonBody, idempotency_key};
use super::payments::{PaymentResponse, payment_response};
use super::{ApiError, AppState};
use crate::domain::{Amount, PaymentStatus};
use crate::x402::{FetchRequest, X402Error, check_headers};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/x402/fetch", post(fetch))
        .route("/v1/x402/authorize", post(authorize))
}

/// The body of `POST /v1/x402/fetch`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchBody {
    /// The seller's URL (http or https).
    url: String,
    /// HTTP method; default GET.
    method: Option<String>,
    /// Headers to send to the seller (never Bursar's own credential).
    #[schema(value_type = Option<Object>)]
    headers: Option<BTreeMap<String, String>>,
    /// A request body: a string is sent as is, any other JSON value as JSON.
    #[schema(value_type = Option<Object>)]
    body: Option<Value>,
    /// The most the agent will pay for this request, in USDC.
    #[schema(value_type = Option<String>, example = "0.05")]
    max_amount: Option<Amount>,
    /// A spending scope of the calling credential: its rules are evaluated too.
    scope_id: Option<String>,
}

/// The body of `POST /v1/x402/authorize`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    /// The 402's requirements: the decoded `PAYMENT-REQUIRED` header (v2) or the v1 JSON body.
    #[schema(value_type = Object)]
    payment_required: Value,
    /// A spending scope of the calling credential.
    scope_id: Option<String>,
}

impl From<X402Error> for ApiError {
    fn from(error: X402Error) -> Self {
        match error {
            X402Error::Invalid { field, message } => ApiError::Invalid {
                field: Some(field),
                message,
            },
            X402Error::TargetRefused(message) => ApiError::Invalid {
                field: Some("url".into()),
                message: format!(
                    "refused: {message} (set BURSAR_X402_ALLOW_PRIVATE_TARGETS=true to allow)"
                ),
            },
            X402Error::Seller(message) => ApiError::BadGateway(message),
            X402Error::Unpayable(message) => ApiError::Unprocessable {
                code: "x402_unpayable",
                field: None,
                message,
            },
            X402Error::AboveMax { asked, max } => ApiError::Unprocessable {
                code: "price_above_max_amount",
                field: Some("max_amount".into()),
                message: format!("the seller asks {asked} USDC, more than max_amount {max}"),
            },
            X402Error::Payments(error) => error.into(),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|s| s.trim().to_string())
}

/// A rejected payment is `403 policy_denied` with the payment, as for `POST /v1/payments`.
fn denied(payment: &PaymentResponse) -> Result<Response, ApiError> {
    Err(super::payments::policy_denied(payment)?)
}

/// Makes the agent's request; a `402` is paid under the credential's policy and the request is
/// made again with the signed payment.
#[utoipa::path(post, path = "/v1/x402/fetch", tag = "x402", request_body = FetchBody,
    params(("Idempotency-Key" = String, Header, description = "required; the same key never signs two authorizations")),
    responses(
        (status = 200, description = "the seller's response, and the payment if one was made: {\"response\": {status, headers, body}, \"payment\": {...} | null}"),
        (status = 202, description = "the payment waits for a human approval (response null); repeat the same call with the same key after approval"),
        (status = 400, description = "invalid request (field named), or a refused private target"),
        (status = 401), (status = 403, description = "policy_denied (with the rejected payment; nothing signed), forbidden or agent_frozen"),
        (status = 409, description = "idempotency_key_reused or conflict"),
        (status = 422, description = "price_above_max_amount or x402_unpayable"),
        (status = 502, description = "the seller's answer could not be used")))]
pub async fn fetch(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody<FetchBody>,
) -> Result<Response, ApiError> {
    let (agent_id, credential_id) = auth.agent().ok_or(ApiError::Forbidden)?;
    let key = idempotency_key(&headers)?;
    let outbound: Vec<(String, String)> = body.headers.unwrap_or_default().into_iter().collect();
    check_headers(&outbound, bearer(&headers).as_deref())?;
    let mut outbound = outbound;
    let request_body = match body.body {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(other) => {
            if !outbound
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                outbound.push(("content-type".into(), "application/json".into()));
            }
            Some(other.to_string())
        }
    };
    let request = FetchRequest {
        url: body.url,
        method: body.method.unwrap_or_else(|| "GET".into()),
        headers: outbound,
        body: request_body,
        max_amount: body.max_amount,
        scope_id: body.scope_id,
    };
    let fetched = state
        .payer
        .fetch(agent_id, credential_id, &key, &request)
        .await?;
    let payment = fetched
        .authorized
        .as_ref()
        .map(|a| payment_response(&a.payment, &state.payments))
        .transpose()?;
    if let Some(payment) = &payment
        && fetched.payment_status() == Some(PaymentStatus::Rejected)
    {
        return denied(payment);
    }
    let status = if fetched.response.is_none() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let replayed = fetched.authorized.as_ref().is_some_and(|a| a.replayed);
    let mut response = (
        status,
        Json(json!({"response": fetched.response, "payment": payment})),
    )
        .into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Decides, holds and signs a payment for a 402 the agent met itself; returns the header to send.
#[utoipa::path(post, path = "/v1/x402/authorize", tag = "x402", request_body = AuthorizeBody,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, description = "{\"header_name\": \"PAYMENT-SIGNATURE\", \"header_value\": \"...\", \"payment\": {...}}"),
        (status = 202, description = "waiting for a human approval: header_value null; call again with the same key after approval"),
        (status = 400, description = "invalid request; error.field names the field"),
        (status = 401), (status = 403, description = "policy_denied (nothing signed), forbidden or agent_frozen"),
        (status = 409, description = "idempotency_key_reused or conflict"),
        (status = 422, description = "x402_unpayable")))]
pub async fn authorize(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AuthorizeBody>,
) -> Result<Response, ApiError> {
    let (agent_id, credential_id) = auth.agent().ok_or(ApiError::Forbidden)?;
    let key = idempotency_key(&headers)?;
    if !body.payment_required.is_object() {
        return Err(ApiError::invalid(
            "payment_required",
            "must be a JSON object",
        ));
    }
    let (authorized, header_name) = state
        .payer
        .authorize(
            agent_id,
            credential_id,
            &key,
            &body.payment_required,
            body.scope_id.as_deref(),
        )
        .await?;
    let payment = payment_response(&authorized.payment, &state.payments)?;
    if authorized.payment.status == PaymentStatus::Rejected {
        return denied(&payment);
    }
    let status = if authorized.header_value.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({"header_name": header_name, "header_value": authorized.header_value, "payment": payment})),
    )
        .into_response())
}
