//! `/v1/reports`: what agents spent (confirmed payments, exact) and what each agent holds now,
//! for finance (auditor, admin).

use super::extract::Auth;
use super::{ApiError, AppState, list_response, parse_time, time};
use crate::domain::{Amount, Role};
use crate::ledger::reports;
use crate::payments::PaymentsError;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/reports/spend", get(spend))
        .route("/v1/reports/balances", get(balances))
        .route("/v1/reconciliation", get(reconciliation))
}

/// Confirmed payments of one agent (or all) created in `[from, to)`: exact total, count, and the
/// payments with reference, memo, recipient, tx hash, block number and block hash (at most
/// 10,000 rows; `truncated` says when there were more; the total always covers all of them).
#[utoipa::path(get, path = "/v1/reports/spend", tag = "reports",
    params(("agent_id" = Option<String>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query)),
    responses((status = 200), (status = 400), (status = 403)))]
pub async fn spend(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let get = |key: &str| query.get(key).map(String::as_str);
    let from = get("from").map(|t| parse_time("from", t)).transpose()?;
    let to = get("to").map(|t| parse_time("to", t)).transpose()?;
    let agent_id = get("agent_id");
    if let Some(id) = agent_id {
        // A report for an agent that does not exist is a 404, not an empty report.
        crate::ledger::agents::get(state.reader.pool(), id)
            .await
            .map_err(PaymentsError::from)?;
    }
    let (total, count, rows) = reports::spend(state.reader.pool(), agent_id, from, to)
        .await
        .map_err(PaymentsError::from)?;
    let payments: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "id": row.id, "agent_id": row.agent_id, "to": row.to_address,
                "amount": Amount::from_sql(row.amount).to_string(), "memo": row.memo, "reference": row.reference,
                "tx_hash": row.tx_hash, "block_number": row.block_number, "block_hash": row.block_hash,
                "created_at": time(row.created_at),
            })
        })
        .collect();
    Ok(Json(json!({
        "agent_id": agent_id,
        "currency": "USDC",
        "from": from.map(time),
        "to": to.map(time),
        "total_spend": Amount::from_sql(total).to_string(),
        "count": count,
        "truncated": (payments.len() as i64) < count,
        "payments": payments,
    })))
}

/// Per agent: on-chain USDC and ETH, what is held (approvals, holds, payments not yet
/// confirmed) and what was spent in the last 24 hours.
#[utoipa::path(get, path = "/v1/reports/balances", tag = "reports",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)), responses((status = 200), (status = 403)))]
pub async fn balances(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor, Role::Treasury])?;
    let (rows, page, cursor) = super::agents::agents_page(&state, &query).await?;
    let mut data = Vec::with_capacity(rows.len());
    for view in state.payments.agent_views(rows).await? {
        let held = reports::held_by_wallet(state.reader.pool(), &view.agent.wallet_id)
            .await
            .map_err(PaymentsError::from)?;
        data.push(json!({
            "agent_id": view.agent.id, "name": view.agent.name, "address": view.agent.address, "status": view.agent.status,
            "usdc": view.usdc.map(|a| a.to_string()), "eth": view.eth_wei.map(|w| w.to_string()),
            "held": Amount::from_sql(held).to_string(), "spent_24h": view.spent_24h.to_string(),
        }));
    }
    Ok(Json(list_response(data, page.limit, cursor)))
}

/// The ledger against the USDC `Transfer` logs of every custodied wallet in
/// `[from_block, to_block]` (default: the last 10,000 blocks; at most 100,000).
#[utoipa::path(get, path = "/v1/reconciliation", tag = "reports",
    params(("from_block" = Option<u64>, Query), ("to_block" = Option<u64>, Query)),
    responses((status = 200, description = "matched count, discrepancies (unknown_outflow, missing_onchain, amount_mismatch, block_hash_mismatch) and inflows"),
        (status = 400), (status = 403)))]
pub async fn reconciliation(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let block = |field: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(field)
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| ApiError::invalid(field, "must be a block number"))
            })
            .transpose()
    };
    let (from, to) = (block("from_block")?, block("to_block")?);
    let report = state.payments.reconciliation(from, to).await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}
