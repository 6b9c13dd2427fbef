//! `/v1/audit`: the hash-chained audit log and its verification (auditor, admin).

use super::extract::Auth;
use super::{ApiError, AppState, list_response, page, parse_time, time};
use crate::domain::Role;
use crate::ledger::audit::{self, AuditEvent, AuditFilter};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/verify", get(verify))
}

pub fn event_json(event: &AuditEvent) -> Value {
    json!({
        "seq": event.seq, "at": time(event.at), "kind": event.kind, "agent_id": event.agent_id,
        "credential_id": event.credential_id, "payment_id": event.payment_id, "actor": event.actor,
        "detail": serde_json::from_str::<Value>(&event.detail).unwrap_or(Value::String(event.detail.clone())),
        "tx_hash": event.tx_hash, "block_number": event.block_number, "block_hash": event.block_hash,
        "prev_hash": event.prev_hash, "hash": event.hash,
    })
}

/// Audit events, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("agent_id" = Option<String>, Query), ("payment_id" = Option<String>, Query), ("from" = Option<String>, Query),
        ("to" = Option<String>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200), (status = 400), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let get = |key: &str| query.get(key).map(String::as_str);
    let page = page(get("limit"), get("cursor"))?;
    let before_seq = page
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor this API returned"))
        })
        .transpose()?;
    let filter = AuditFilter {
        agent_id: get("agent_id").map(str::to_string),
        payment_id: get("payment_id").map(str::to_string),
        from: get("from").map(|t| parse_time("from", t)).transpose()?,
        to: get("to").map(|t| parse_time("to", t)).transpose()?,
        before_seq,
    };
    let events = audit::list(state.payments.ledger.pool(), &filter, page.limit())
        .await
        .map_err(crate::payments::PaymentsError::from)?;
    let cursor = events.last().map(|e| e.seq.to_string());
    Ok(Json(list_response(
        events.iter().map(event_json).collect(),
        page.limit,
        cursor,
    )))
}

/// Recomputes the hash chain and names the first bad event.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses((status = 200), (status = 403)))]
pub async fn verify(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let report = audit::verify(state.payments.ledger.pool())
        .await
        .map_err(crate::payments::PaymentsError::from)?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}
