//! `/v1/deny-list`: addresses no payment may go to (admin manages; auditor reads).

use super::extract::{Auth, JsonBody};
use super::{ApiError, AppState, list_response, page, time};
use crate::domain::{Address, Role};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/deny-list", get(list).post(add))
        .route("/v1/deny-list/{address}", delete(remove))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyAddress {
    #[schema(value_type = String, example = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
    address: Address,
    /// Why (sanctions list, known scam), 1 to 500 characters.
    reason: String,
}

/// Adds an address to the deny list: payments to it are refused with `400` naming `to`.
#[utoipa::path(post, path = "/v1/deny-list", tag = "deny-list", operation_id = "deny_address",
    request_body = DenyAddress,
    responses((status = 201, description = "added"), (status = 200, description = "already listed; reason updated"),
        (status = 400, description = "invalid_request naming the field"), (status = 401, description = "unauthorized"),
        (status = 403, description = "forbidden: admin only")))]
pub async fn add(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<DenyAddress>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(&[])?;
    let new = state
        .payments
        .deny_address(&auth.0, body.address, &body.reason)
        .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"address": body.address.to_string(), "reason": body.reason})),
    ))
}

/// The deny list, newest first.
#[utoipa::path(get, path = "/v1/deny-list", tag = "deny-list", operation_id = "list_denied_addresses",
    params(("limit" = Option<u32>, Query, description = "rows per page, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "a page of entries"), (status = 400, description = "invalid_request"),
        (status = 401, description = "unauthorized"), (status = 403, description = "forbidden: admin or auditor")))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let page = page(
        query.get("limit").map(String::as_str),
        query.get("cursor").map(String::as_str),
    )?;
    let rows = state
        .payments
        .denied_addresses(&page)
        .await
        .map_err(|_| ApiError::invalid("cursor", "not a cursor of this list"))?;
    let cursor = rows
        .last()
        .map(|r| format!("{}:{}", r.created_at, r.address));
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!({"address": r.address, "reason": r.reason, "created_by": r.created_by, "created_at": time(r.created_at)}))
        .collect();
    Ok(Json(list_response(data, page.limit, cursor)))
}

/// Removes an address from the deny list.
#[utoipa::path(delete, path = "/v1/deny-list/{address}", tag = "deny-list", operation_id = "allow_address",
    params(("address" = String, Path, description = "the listed address")),
    responses((status = 204, description = "removed"), (status = 400, description = "invalid_request: not an address"),
        (status = 401, description = "unauthorized"), (status = 403, description = "forbidden: admin only"),
        (status = 404, description = "not on the list")))]
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path(address): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(&[])?;
    let address =
        Address::parse(&address).map_err(|e| ApiError::invalid("address", e.to_string()))?;
    state.payments.allow_address(&auth.0, address).await?;
    Ok(StatusCode::NO_CONTENT)
}
