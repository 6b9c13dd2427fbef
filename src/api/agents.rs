//! `/v1/agents` and `/v1/credentials`: agents with their custodied wallets, and the scoped
//! credentials agents pay with.

use super::extract::{Auth, JsonBody};
use super::{ApiError, AppState, list_response, page, parse_time, time};
use crate::domain::Role;
use crate::domain::{AgentId, CredentialId};
use crate::ledger::tokens::CredentialRow;
use crate::ledger::{agents, payments::cursor_of, tokens};
use crate::payments::AgentView;
use crate::payments::Policy;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub const MAX_NAME_CHARS: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", post(create).get(list))
        .route("/v1/agents/{id}", get(get_agent))
        .route("/v1/agents/{id}/freeze", post(freeze))
        .route("/v1/agents/{id}/unfreeze", post(unfreeze))
        .route("/v1/agents/{id}/credentials", post(create_credential))
        .route(
            "/v1/credentials/{id}",
            get(get_credential).delete(revoke_credential),
        )
}

/// A name: 1 to 200 characters, not blank.
pub fn name(text: &str) -> Result<&str, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || text.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    Ok(trimmed)
}

fn agent_json(agent: &agents::AgentRow) -> Value {
    json!({
        "id": agent.id, "name": agent.name, "address": agent.address, "status": agent.status,
        "created_at": time(agent.created_at), "updated_at": time(agent.updated_at),
    })
}

fn view_json(view: &AgentView) -> Value {
    let mut value = agent_json(&view.agent);
    value["balances"] = json!({
        "usdc": view.usdc.map(|a| a.to_string()),
        "eth": view.eth_wei.map(|w| w.to_string()),
    });
    value["spent_24h"] = json!(view.spent_24h.to_string());
    value
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    name: String,
}

/// Creates an agent; custody generates its wallet key, which never leaves custody.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, description = "the agent with its wallet address"), (status = 400), (status = 403)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateAgent>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(&[])?;
    let agent = state
        .payments
        .create_agent(&auth.0, name(&body.name)?)
        .await?;
    Ok((StatusCode::CREATED, Json(agent_json(&agent))))
}

/// Agents, newest first, with on-chain balances and 24-hour spend.
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)), responses((status = 200)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let (rows, page, cursor) = agents_page(&state, &query).await?;
    let views = state.payments.agent_views(rows).await?;
    let data = views.iter().map(view_json).collect();
    Ok(Json(list_response(data, page.limit, cursor)))
}

/// One page of agents for `limit` and `cursor` in `query`, with the cursor of the next page.
pub async fn agents_page(
    state: &AppState,
    query: &HashMap<String, String>,
) -> Result<(Vec<agents::AgentRow>, crate::ledger::Page, Option<String>), ApiError> {
    let page = page(
        query.get("limit").map(String::as_str),
        query.get("cursor").map(String::as_str),
    )?;
    let rows = agents::list(state.reader.pool(), &page)
        .await
        .map_err(bad_cursor)?;
    let cursor = rows.last().map(|a| cursor_of(a.created_at, &a.id));
    Ok((rows, page, cursor))
}

pub fn bad_cursor(error: crate::ledger::LedgerError) -> ApiError {
    match error {
        crate::ledger::LedgerError::Conflict(_) => {
            ApiError::invalid("cursor", "not a cursor this API returned")
        }
        other => ApiError::from(crate::payments::PaymentsError::from(other)),
    }
}

/// One agent with on-chain balances and 24-hour spend.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", responses((status = 200), (status = 404)))]
pub async fn get_agent(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Auditor])?;
    let row = agents::get(state.reader.pool(), &id)
        .await
        .map_err(crate::payments::PaymentsError::from)?;
    let views = state.payments.agent_views(vec![row]).await?;
    let view = views.first().ok_or(ApiError::NotFound)?;
    Ok(Json(view_json(view)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    name: String,
    #[serde(default)]
    policy: Policy,
    /// RFC 3339; absent means no expiry.
    expires_at: Option<String>,
}

fn credential_json(row: &CredentialRow) -> Result<Value, ApiError> {
    let policy: Value = serde_json::from_str(&row.policy)
        .map_err(|_| ApiError::Internal("stored policy".into()))?;
    Ok(json!({
        "id": row.id, "agent_id": row.agent_id, "name": row.name, "policy": policy,
        "expires_at": row.expires_at.map(time), "status": row.status, "created_at": time(row.created_at),
        "revoked_at": row.revoked_at.map(time),
    }))
}

/// Issues a scoped credential to an agent. The token is shown once.
#[utoipa::path(post, path = "/v1/agents/{id}/credentials", tag = "credentials", request_body = CreateCredential,
    responses((status = 201), (status = 400), (status = 404)))]
pub async fn create_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path(agent_id): Path<String>,
    JsonBody(body): JsonBody<CreateCredential>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(&[])?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let (row, secret) = state
        .payments
        .create_credential(
            &auth.0,
            &AgentId::from_text(&agent_id),
            name(&body.name)?,
            &body.policy,
            expires_at,
        )
        .await?;
    let mut value = credential_json(&row)?;
    value["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(value)))
}

/// A credential (never its token).
#[utoipa::path(get, path = "/v1/credentials/{id}", tag = "credentials", responses((status = 200), (status = 404)))]
pub async fn get_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[])?;
    let row = tokens::get_credential(state.reader.pool(), &id)
        .await
        .map_err(crate::payments::PaymentsError::from)?;
    Ok(Json(credential_json(&row)?))
}

/// Revokes a credential; its next request gets `401`.
#[utoipa::path(delete, path = "/v1/credentials/{id}", tag = "credentials", responses((status = 204), (status = 404)))]
pub async fn revoke_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(&[])?;
    state
        .payments
        .revoke_credential(&auth.0, &CredentialId::from_text(&id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The kill switch: every credential of the agent is refused at once and its payments that
/// nothing has been signed for are cancelled. With `{"sweep": true}` the agent's free USDC is
/// also swept back to the treasury.
#[utoipa::path(post, path = "/v1/agents/{id}/freeze", tag = "agents",
    responses((status = 200, description = "the frozen agent and the ids of the cancelled payments"), (status = 404)))]
pub async fn freeze(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[])?;
    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FreezeRequest {
        /// Also sweep the agent's free USDC back to the treasury.
        #[serde(default)]
        sweep: bool,
    }
    let request: FreezeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FreezeRequest::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let id = AgentId::from_text(&id);
    let (agent, cancelled) = state.payments.freeze(&auth.0, &id).await?;
    let mut value = agent_json(&agent);
    value["cancelled_payments"] = json!(cancelled);
    if request.sweep {
        value["sweep"] = match state.payments.sweep(&auth.0, &id).await {
            Ok(created) => serde_json::to_value(super::payments::payment_response(
                &created.payment,
                &state.payments,
            )?)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
            // Nothing free to sweep is not a failure of the freeze.
            Err(crate::payments::PaymentsError::Conflict(message)) => json!({"skipped": message}),
            Err(other) => return Err(other.into()),
        };
    }
    Ok(Json(value))
}

/// Lifts a freeze; the agent's credentials work again.
#[utoipa::path(post, path = "/v1/agents/{id}/unfreeze", tag = "agents", responses((status = 200), (status = 404)))]
pub async fn unfreeze(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require(&[])?;
    let agent = state
        .payments
        .unfreeze(&auth.0, &AgentId::from_text(&id))
        .await?;
    Ok(Json(agent_json(&agent)))
}
