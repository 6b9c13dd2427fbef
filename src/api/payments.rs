//! `/v1/payments`: agents create payment intents (with `Idempotency-Key`) and read their own;
//! staff read according to their role.

use super::agents::bad_cursor;
use super::extract::{Auth, JsonBody, idempotency_key};
use super::{ApiError, AppState, list_response, page, parse_time, time};
use crate::domain::{Address, Amount, PaymentKind, PaymentStatus, Role};
use crate::ledger::payments::{self as payment_rows, PaymentFilter, PaymentRow, cursor_of};
use crate::payments::Decision;
use crate::payments::{Capture, NewPayment, Payments, Principal};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

const MAX_MEMO_CHARS: usize = 1_000;
const MAX_REFERENCE_CHARS: usize = 255;
const MAX_METADATA_BYTES: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payments", post(create).get(list))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/approve", post(approve))
        .route("/v1/payments/{id}/reject", post(reject))
        .route("/v1/payments/{id}/capture", post(capture))
        .route("/v1/payments/{id}/void", post(void))
}

/// The body of `POST /v1/payments`. Unknown fields are refused (`400` naming the field).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    #[schema(value_type = String, example = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
    to: Address,
    /// USDC as a decimal string, at most 6 decimals.
    #[schema(value_type = String, example = "12.50")]
    amount: Amount,
    /// Only "USDC".
    currency: String,
    memo: Option<String>,
    reference: Option<String>,
    /// 0 to 1; checked against the credential's `min_confidence`.
    confidence: Option<f64>,
    /// "automatic" (default) or "manual".
    capture: Option<Capture>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// A spending scope of the calling credential (`scp_...`): its rules are evaluated too.
    scope_id: Option<String>,
}

/// The payment object of API.md.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentResponse {
    id: String,
    /// payment, funding, sweep, or x402 (an agent payment a seller executes with a signed authorization)
    kind: String,
    agent_id: Option<String>,
    credential_id: Option<String>,
    to: String,
    amount: String,
    currency: String,
    memo: Option<String>,
    reference: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    confidence: Option<f64>,
    capture: String,
    status: PaymentStatus,
    decision: Option<Decision>,
    /// Wei of ETH sent with a funding, if any.
    gas_wei: Option<String>,
    tx_hash: Option<String>,
    nonce: Option<i64>,
    block_number: Option<i64>,
    block_hash: Option<String>,
    /// Blocks mined on top of the including block, as of the newest head settlement has checked
    /// the transaction against (a block the node has mined but settlement has not checked yet
    /// does not count). While `included` it grows with each checked block without the payment
    /// being rewritten (`updated_at` marks status and block changes); it reaches the required
    /// count with the change to `confirmed`.
    confirmations: i64,
    failure_reason: Option<String>,
    /// Why a payment that is not final is not moving (insufficient_gas, fee_cap_below_base_fee,
    /// stuck_at_fee_cap, node_refused, nonce_filler_pending, revert_awaiting_depth,
    /// wallet_key_unavailable, unprocessable); null when nothing holds it up.
    waiting_reason: Option<String>,
    /// Blocks that held this payment's transaction at the required depth and then left the
    /// canonical chain (a reorg deeper than the confirmations); the payment was sent again.
    #[schema(value_type = Option<Vec<Object>>)]
    orphaned_blocks: Option<Value>,
    created_at: String,
    updated_at: String,
}

/// The payment object, with an included payment's confirmations counted from the head
/// settlement last verified (`Payments::confirmations_of`).
pub fn payment_response(
    row: &PaymentRow,
    payments: &Payments,
) -> Result<PaymentResponse, ApiError> {
    let corrupt = || ApiError::Internal(format!("stored payment {} is unreadable", row.id));
    Ok(PaymentResponse {
        id: row.id.to_string(),
        kind: row.protocol.clone().unwrap_or_else(|| row.kind.to_string()),
        agent_id: row.agent_id.as_ref().map(ToString::to_string),
        credential_id: row.credential_id.as_ref().map(ToString::to_string),
        to: row.to_address.to_string(),
        amount: Amount::from_sql(row.amount).to_string(),
        currency: row.currency.clone(),
        memo: row.memo.clone(),
        reference: row.reference.clone(),
        metadata: row
            .metadata
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt())?,
        confidence: row.confidence,
        capture: row.capture.to_string(),
        status: row.status().map_err(|_| corrupt())?,
        decision: row
            .decision
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt())?,
        gas_wei: row.gas_wei.clone(),
        tx_hash: row.tx_hash.clone(),
        nonce: row.nonce,
        block_number: row.block_number,
        block_hash: row.block_hash.clone(),
        confirmations: payments.confirmations_of(row),
        failure_reason: row.failure_reason.clone(),
        waiting_reason: row.waiting_reason.clone(),
        orphaned_blocks: row
            .orphaned_blocks
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt())?,
        created_at: time(row.created_at),
        updated_at: time(row.updated_at),
    })
}

fn text_field(
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(text) if text.chars().count() > max_chars => Err(ApiError::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        )),
        other => Ok(other),
    }
}

impl CreatePaymentRequest {
    fn validate(self) -> Result<NewPayment, ApiError> {
        if self.currency != "USDC" {
            return Err(ApiError::invalid("currency", "must be \"USDC\""));
        }
        if let Some(confidence) = self.confidence
            && !(0.0..=1.0).contains(&confidence)
        {
            return Err(ApiError::invalid("confidence", "must be between 0 and 1"));
        }
        if let Some(metadata) = &self.metadata {
            if !metadata.is_object() {
                return Err(ApiError::invalid("metadata", "must be a JSON object"));
            }
            if metadata.to_string().len() > MAX_METADATA_BYTES {
                return Err(ApiError::invalid("metadata", "must be at most 16 KiB"));
            }
        }
        Ok(NewPayment {
            to: self.to,
            amount: self.amount,
            currency: self.currency,
            memo: text_field("memo", self.memo, MAX_MEMO_CHARS)?,
            reference: text_field("reference", self.reference, MAX_REFERENCE_CHARS)?,
            confidence: self.confidence,
            capture: self.capture.unwrap_or(Capture::Automatic),
            metadata: self.metadata,
            scope_id: self.scope_id,
        })
    }
}

/// The `403 policy_denied` of a rejected payment: the deciding rule, the first failed check in
/// words, and the payment itself (the same for the HTTP API, x402 and MCP).
pub fn policy_denied(body: &PaymentResponse) -> Result<ApiError, ApiError> {
    let rule = body
        .decision
        .as_ref()
        .map(|d| d.rule.clone())
        .unwrap_or_default();
    let message = body
        .decision
        .as_ref()
        .and_then(|d| d.checks.iter().find(|c| !c.passed))
        .map(|c| format!("denied by {}: the check \"{}\" failed", c.rule, c.detail))
        .unwrap_or_else(|| "denied by policy".into());
    let payment = serde_json::to_value(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ApiError::PolicyDenied {
        rule,
        message,
        payment: Some(Box::new(payment)),
    })
}

/// The response of a create: `202` with the payment, `200` with `Idempotent-Replayed: true` for
/// a replay, `403 policy_denied` (with the payment) for a denial, replayed alike.
pub fn created_response(
    payment: &PaymentRow,
    replayed: bool,
    payments: &Payments,
) -> Result<Response, ApiError> {
    let body = payment_response(payment, payments)?;
    let mut response = if payment.status == PaymentStatus::Rejected {
        policy_denied(&body)?.into_response()
    } else {
        let status = if replayed {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        (status, Json(body)).into_response()
    };
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Submits a payment intent for the calling agent.
#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = CreatePaymentRequest,
    params(("Idempotency-Key" = String, Header, description = "1 to 255 printable ASCII characters; required")),
    responses(
        (status = 202, description = "accepted: queued, pending_approval or authorized", body = PaymentResponse),
        (status = 200, description = "replay of an earlier request with the same key (Idempotent-Replayed: true)", body = PaymentResponse),
        (status = 400, description = "invalid request; error.field names the field"),
        (status = 401), (status = 403, description = "policy_denied (with the payment), forbidden or agent_frozen"),
        (status = 409, description = "idempotency_key_reused"), (status = 413)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    let (agent_id, credential_id) = auth.agent().ok_or(ApiError::Forbidden)?;
    let key = idempotency_key(&headers)?;
    let request = body.validate()?;
    let created = state
        .payments
        .create_payment(agent_id, credential_id, &key, &request)
        .await?;
    if !created.replayed {
        metrics::counter!("bursar_payments_created_total", "status" => created.payment.status.as_str()).increment(1);
    }
    created_response(&created.payment, created.replayed, &state.payments)
}

/// Whether `auth` may read `payment`, each role to its row of the role table: agents see only
/// their own (others are `404`, so ids do not leak), approvers what they may approve (payments
/// waiting for a human), treasury its fundings and sweeps, auditors and admins everything.
fn may_read(auth: &Auth, payment: &PaymentRow) -> Result<(), ApiError> {
    match &auth.0 {
        Principal::Agent { agent_id, .. } if payment.agent_id.as_deref() == Some(agent_id) => {
            Ok(())
        }
        Principal::Agent { .. } => Err(ApiError::NotFound),
        Principal::Staff {
            role: Role::Approver,
            ..
        } if payment.status != PaymentStatus::PendingApproval => Err(ApiError::NotFound),
        Principal::Staff {
            role: Role::Treasury,
            ..
        } if payment.kind == PaymentKind::Payment => Err(ApiError::NotFound),
        Principal::Staff { .. } => auth.require(&[Role::Auditor, Role::Approver, Role::Treasury]),
    }
}

/// One payment.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    responses((status = 200, body = PaymentResponse), (status = 404)))]
pub async fn get_payment(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<PaymentResponse>, ApiError> {
    let payment = state.payments.get_payment(&id).await?;
    may_read(&auth, &payment)?;
    Ok(Json(payment_response(&payment, &state.payments)?))
}

/// Payments newest first. Agents see their own; approvers see `pending_approval` ones; treasury
/// sees fundings and sweeps; admin and auditor see all.
#[utoipa::path(get, path = "/v1/payments", tag = "payments",
    params(("agent_id" = Option<String>, Query), ("status" = Option<String>, Query), ("from" = Option<String>, Query),
        ("to" = Option<String>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200), (status = 400)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let get = |key: &str| query.get(key).map(String::as_str);
    let status = get("status")
        .map(|s| {
            PaymentStatus::parse(s)
                .ok_or_else(|| ApiError::invalid("status", "not a payment status"))
        })
        .transpose()?;
    let mut filter = PaymentFilter {
        agent_id: get("agent_id").map(str::to_string),
        status: status.map(|s| s.as_str().to_string()),
        from: get("from").map(|t| parse_time("from", t)).transpose()?,
        to: get("to").map(|t| parse_time("to", t)).transpose()?,
        treasury_only: false,
    };
    match &auth.0 {
        Principal::Agent { agent_id, .. } => {
            if filter
                .agent_id
                .as_ref()
                .is_some_and(|asked| asked != agent_id.as_str())
            {
                return Ok(Json(list_response(Vec::<Value>::new(), 1, None)));
            }
            filter.agent_id = Some(agent_id.to_string());
        }
        Principal::Staff {
            role: Role::Approver,
            ..
        } => {
            if status.is_some_and(|s| s != PaymentStatus::PendingApproval) {
                return Err(ApiError::Forbidden);
            }
            filter.status = Some(PaymentStatus::PendingApproval.as_str().into());
        }
        Principal::Staff {
            role: Role::Treasury,
            ..
        } => filter.treasury_only = true,
        Principal::Staff { .. } => auth.require(&[Role::Auditor])?,
    }
    let page = page(get("limit"), get("cursor"))?;
    let rows = payment_rows::list(state.reader.pool(), &filter, &page)
        .await
        .map_err(bad_cursor)?;
    let cursor = rows.last().map(|p| cursor_of(p.created_at, &p.id));
    let data = rows
        .iter()
        .map(|row| payment_response(row, &state.payments))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(list_response(data, page.limit, cursor)))
}

/// An optional JSON body: empty means `{}`.
async fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: axum::body::Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    super::extract::parse_json(&body)
}

#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    note: Option<String>,
}

#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    reason: Option<String>,
}

#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// At most the authorized amount; absent captures all of it.
    #[schema(value_type = Option<String>, example = "7.25")]
    amount: Option<Amount>,
}

/// Lets a `pending_approval` payment go (approver or admin); it is queued, or authorized if it
/// was a manual-capture request.
#[utoipa::path(post, path = "/v1/payments/{id}/approve", tag = "approvals", request_body = ApproveRequest,
    responses((status = 200, body = PaymentResponse), (status = 403), (status = 404),
        (status = 409, description = "the payment is not pending approval (or has expired)")))]
pub async fn approve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PaymentResponse>, ApiError> {
    auth.require(&[Role::Approver])?;
    let body: ApproveRequest = optional_body(body).await?;
    let note = text_field("note", body.note, MAX_MEMO_CHARS)?;
    let payment = state
        .payments
        .approve(&auth.0, &id, note.as_deref())
        .await?;
    Ok(Json(payment_response(&payment, &state.payments)?))
}

/// Refuses a `pending_approval` payment (approver or admin); it is cancelled.
#[utoipa::path(post, path = "/v1/payments/{id}/reject", tag = "approvals", request_body = RejectRequest,
    responses((status = 200, body = PaymentResponse), (status = 403), (status = 404), (status = 409)))]
pub async fn reject(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PaymentResponse>, ApiError> {
    auth.require(&[Role::Approver])?;
    let body: RejectRequest = optional_body(body).await?;
    let reason = text_field("reason", body.reason, MAX_MEMO_CHARS)?;
    let payment = state
        .payments
        .reject(&auth.0, &id, reason.as_deref())
        .await?;
    Ok(Json(payment_response(&payment, &state.payments)?))
}

/// The agent's own payments, or any for an admin.
fn agent_or_admin(auth: &Auth) -> Result<(), ApiError> {
    match auth.agent() {
        Some(_) => Ok(()),
        None => auth.require(&[]),
    }
}

/// Sends an `authorized` hold, all of it or less (the rest is released). Agent (own) or admin.
#[utoipa::path(post, path = "/v1/payments/{id}/capture", tag = "payments", request_body = CaptureRequest,
    responses((status = 200, description = "queued", body = PaymentResponse), (status = 400), (status = 404), (status = 409)))]
pub async fn capture(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PaymentResponse>, ApiError> {
    agent_or_admin(&auth)?;
    let body: CaptureRequest = optional_body(body).await?;
    let payment = state.payments.capture(&auth.0, &id, body.amount).await?;
    Ok(Json(payment_response(&payment, &state.payments)?))
}

/// Releases an `authorized` hold; nothing is sent. Agent (own) or admin.
#[utoipa::path(post, path = "/v1/payments/{id}/void", tag = "payments",
    responses((status = 200, description = "cancelled", body = PaymentResponse), (status = 404), (status = 409)))]
pub async fn void(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<PaymentResponse>, ApiError> {
    agent_or_admin(&auth)?;
    let payment = state.payments.void(&auth.0, &id).await?;
    Ok(Json(payment_response(&payment, &state.payments)?))
}
