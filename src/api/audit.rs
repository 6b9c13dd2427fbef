//! `/v1/audit`: the hash-chained audit log and its verification (auditor, admin).

use super::extract::Auth;
use super::{ApiError, AppState, list_response, page, parse_time};
use crate::domain::Role;
use crate::ledger::audit::{self, AuditEvent, AuditFilter};
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/audit/export", get(export))
}

/// Audit events, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("agent_id" = Option<String>, Query), ("payment_id" = Option<String>, Query),
        ("scope_id" = Option<String>, Query, description = "a spending scope's events: its own and its payments'"), ("from" = Option<String>, Query),
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
        scope_id: get("scope_id").map(str::to_string),
    };
    let events = audit::list(state.reader.pool(), &filter, page.limit())
        .await
        .map_err(crate::payments::PaymentsError::from)?;
    let cursor = events.last().map(|e| e.seq.to_string());
    Ok(Json(list_response(
        events.iter().map(AuditEvent::to_json).collect(),
        page.limit,
        cursor,
    )))
}

/// Recomputes the hash chain, checks every signed checkpoint of it against the master key, and
/// names the first bad event.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "{ok, events, head, checkpoints, last_checkpoint_seq} or {ok: false, first_bad_seq, reason}"), (status = 403)))]
pub async fn verify(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let report = state.payments.verify_audit().await?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// Every event in `[from, to)` as a CSV or JSON Lines file, streamed page by page.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    params(("format" = String, Query, description = "csv or jsonl"), ("from" = Option<String>, Query), ("to" = Option<String>, Query),
        ("scope_id" = Option<String>, Query, description = "only a spending scope's events")),
    responses((status = 200, description = "the events, one row or line each"), (status = 400), (status = 403)))]
pub async fn export(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    auth.require(&[Role::Auditor])?;
    let get = |key: &str| query.get(key).map(String::as_str);
    let format = audit::ExportFormat::parse(get("format").unwrap_or("jsonl"))
        .ok_or_else(|| ApiError::invalid("format", "must be csv or jsonl"))?;
    let from = get("from").map(|t| parse_time("from", t)).transpose()?;
    let to = get("to").map(|t| parse_time("to", t)).transpose()?;
    // Every export first signs the head it covers, so a copy kept outside Bursar can prove the
    // chain as it stood.
    state.payments.checkpoint_audit(true).await?;
    let extension = if format == audit::ExportFormat::Csv {
        "csv"
    } else {
        "jsonl"
    };
    let scope_id = get("scope_id").map(str::to_string);
    let stream =
        audit::export_stream(state.reader.pool().clone(), from, to, format, scope_id).map(|page| {
            page.map(axum::body::Bytes::from).map_err(|error| {
                // Headers are gone by now: cut the body short (the client sees a truncated transfer)
                // and log why, rather than send a partial file that looks complete.
                tracing::error!(%error, "audit export failed mid-stream");
                std::io::Error::other("audit export failed")
            })
        });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                format.content_type().to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"bursar-audit.{extension}\""),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
