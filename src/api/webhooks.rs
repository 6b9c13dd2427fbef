//! `/v1/webhooks`: endpoints for payment status changes and audit alarms, their deliveries, and
//! replays of failed deliveries (admin). How deliveries are signed is in `crate::webhooks`.

use super::extract::{Auth, JsonBody};
use super::{ApiError, AppState, time};
use crate::ledger::webhooks::{self, DeliveryRow, EndpointRow};
use crate::payments::PaymentsError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

const MAX_URL_CHARS: usize = 2_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", delete(disable))
        .route("/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/v1/webhook-deliveries/{id}/replay", post(replay))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http:// or https:// URL that receives POSTs.
    url: String,
    /// Any of "payment.status_changed", "audit.alarm".
    events: Vec<String>,
}

fn endpoint_json(row: &EndpointRow) -> Value {
    json!({
        "id": row.id, "url": row.url, "events": serde_json::from_str::<Value>(&row.events).unwrap_or(Value::Null),
        "status": row.status, "created_at": time(row.created_at),
    })
}

fn delivery_json(row: &DeliveryRow) -> Value {
    json!({
        "id": row.id, "webhook_id": row.endpoint_id, "type": row.event_type, "status": row.status,
        "attempts": row.attempts, "next_attempt_at": time(row.next_attempt_at), "last_status": row.last_status,
        "last_error": row.last_error, "created_at": time(row.created_at), "delivered_at": row.delivered_at.map(time),
    })
}

/// Registers an endpoint. The signing `secret` is shown only in this response.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, description = "the endpoint and its signing secret"), (status = 400), (status = 403)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(&[])?;
    let valid = body.url.len() <= MAX_URL_CHARS
        && reqwest::Url::parse(&body.url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some());
    if !valid {
        return Err(ApiError::invalid(
            "url",
            "must be an http:// or https:// URL of at most 2000 characters",
        ));
    }
    let row = state
        .payments
        .create_webhook(&auth.0, &body.url, &body.events)
        .await?;
    let mut value = endpoint_json(&row);
    value["secret"] = json!(row.secret);
    Ok((StatusCode::CREATED, Json(value)))
}

/// Registered endpoints (without their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200), (status = 403)))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require(&[])?;
    let rows = webhooks::endpoints(state.reader.pool())
        .await
        .map_err(PaymentsError::from)?;
    Ok(Json(
        json!({"data": rows.iter().map(endpoint_json).collect::<Vec<_>>(), "next_cursor": null}),
    ))
}

/// Disables an endpoint; its pending deliveries are marked failed.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", responses((status = 204), (status = 404)))]
pub async fn disable(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(&[])?;
    state.payments.disable_webhook(&auth.0, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An endpoint's deliveries, newest first; `?status=failed` shows what needs a replay.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("status" = Option<String>, Query), ("limit" = Option<u32>, Query)), responses((status = 200), (status = 404)))]
pub async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[])?;
    let status = query.get("status").map(String::as_str);
    if status.is_some_and(|s| !["pending", "delivered", "failed"].contains(&s)) {
        return Err(ApiError::invalid(
            "status",
            "must be pending, delivered or failed",
        ));
    }
    let page = super::page(query.get("limit").map(String::as_str), None)?;
    let pool = state.reader.pool();
    webhooks::endpoint(pool, &id)
        .await
        .map_err(PaymentsError::from)?;
    let rows = webhooks::deliveries(pool, &id, status, page.limit())
        .await
        .map_err(PaymentsError::from)?;
    Ok(Json(
        json!({"data": rows.iter().map(delivery_json).collect::<Vec<_>>(), "next_cursor": null}),
    ))
}

/// Queues a failed delivery again, with the same event id.
#[utoipa::path(post, path = "/v1/webhook-deliveries/{id}/replay", tag = "webhooks",
    responses((status = 200), (status = 409, description = "not a failed delivery")))]
pub async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[])?;
    let row = state.payments.replay_delivery(&auth.0, &id).await?;
    Ok(Json(delivery_json(&row)))
}
