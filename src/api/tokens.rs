//! `/v1/tokens`: API tokens for staff roles (admin only).

use super::extract::{Auth, JsonBody};
use super::{ApiError, AppState, time};
use crate::domain::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens", post(create))
        .route("/v1/tokens/{id}", delete(revoke))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// admin, treasury, approver or auditor
    role: String,
    name: String,
}

/// Creates a token; the secret is shown once, only its hash is stored.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, description = "created; `token` is shown only now"), (status = 400), (status = 403)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    auth.require(&[])?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("role", "must be admin, treasury, approver or auditor"))?;
    let name = super::agents::name(&body.name)?;
    let (row, secret) = state.payments.create_token(&auth.0, role, name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": row.id, "role": row.role, "name": row.name, "token": secret, "created_at": time(row.created_at),
        })),
    ))
}

/// Revokes a token at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", responses((status = 204), (status = 404)))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(&[])?;
    state.payments.revoke_token(&auth.0, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
