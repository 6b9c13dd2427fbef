//! `/v1/scopes`: spending scopes (a budget per task inside a credential, phases, tiers,
//! compensation on failure) and their decision trace.

use super::extract::{Auth, parse_json};
use super::{ApiError, AppState, list_response, page, time};
use crate::domain::{Address, Amount, CredentialId, Role};
use crate::ledger::scopes::ScopeRow;
use crate::payments::Principal;
use crate::payments::scopes::{NewScope, ScopeClosed, ScopeView, phases_of};
use crate::policy::scope::{PhaseLimits, Tier};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/scopes", post(open).get(list))
        .route("/v1/scopes/{id}", get(get_scope))
        .route("/v1/scopes/{id}/phase", post(set_phase))
        .route("/v1/scopes/{id}/close", post(close))
        .route("/v1/scopes/{id}/trace", get(trace))
}

/// The body of `POST /v1/scopes`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenScopeBody {
    name: String,
    task_ref: Option<String>,
    /// What the scope's payments may hold in total (USDC).
    #[schema(value_type = String, example = "10")]
    budget: Amount,
    /// RFC 3339; an open scope closes as expired (failed) then.
    expires_at: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    allowed_recipients: Option<Vec<Address>>,
    /// Phases in the order the scope moves through them (as written, except that `explore` is
    /// always first and `commit` last), each with its limits (default `{"explore": {}, "commit": {}}`).
    #[schema(value_type = Option<Object>)]
    phases: Option<HashMap<String, PhaseLimits>>,
    /// Default: the first phase.
    initial_phase: Option<String>,
    /// Whether an agent's phase change waits for an approver (or admin).
    phase_change_requires_approval: Option<bool>,
    #[schema(value_type = Option<Vec<Object>>)]
    tiers: Option<Vec<Tier>>,
    /// Admin only: the credential to open the scope under (an agent opens under its own).
    credential_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseBody {
    phase: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// "succeeded" or "failed".
    outcome: String,
    reason: Option<String>,
}

/// The keys of the body's `phases` object in document order (JSON objects are read as sorted
/// maps elsewhere; the order of phases is the order the caller wrote them).
fn phase_order(bytes: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    #[derive(Deserialize)]
    struct Order {
        phases: Option<Keys>,
    }
    serde_json::from_slice::<Order>(bytes)
        .ok()
        .and_then(|o| o.phases)
        .map(|k| k.0)
        .unwrap_or_default()
}

const MAX_TEXT: usize = 255;

fn default_phases() -> Vec<(String, PhaseLimits)> {
    vec![
        ("explore".to_string(), PhaseLimits::default()),
        ("commit".to_string(), PhaseLimits::default()),
    ]
}

/// The order the caller wrote, except that `explore` always comes first and `commit` last
/// (clients that send object keys sorted would otherwise reverse them).
fn order_phases(mut names: Vec<String>) -> Vec<String> {
    names.sort_by_key(|name| match name.as_str() {
        "explore" => 0,
        "commit" => 2,
        _ => 1,
    });
    names
}

/// Phases from a JSON object whose key order is not known (the MCP tool's arguments).
pub(super) fn phases_from(value: Option<Value>) -> Result<Vec<(String, PhaseLimits)>, ApiError> {
    let Some(value) = value else {
        return Ok(default_phases());
    };
    let mut map: HashMap<String, PhaseLimits> =
        serde_json::from_value(value).map_err(|e| ApiError::invalid("phases", e.to_string()))?;
    let names = order_phases(
        map.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    );
    Ok(names
        .into_iter()
        .filter_map(|name| map.remove(&name).map(|limits| (name, limits)))
        .collect())
}

/// Staff outside `roles` (admin is always in) get `403` before anything is looked up; agents
/// pass here and see only their own credential's scopes.
fn staff_may(auth: &Auth, roles: &[Role]) -> Result<(), ApiError> {
    match &auth.0 {
        Principal::Agent { .. } => Ok(()),
        Principal::Staff { .. } => auth.require(roles),
    }
}

const READERS: &[Role] = &[Role::Auditor, Role::Approver];

pub(super) fn scope_json(view: &ScopeView) -> Result<Value, ApiError> {
    let scope = &view.scope;
    let corrupt = || ApiError::Internal(format!("stored scope {} is unreadable", scope.id));
    let phases: Vec<Value> = phases_of(scope)
        .map_err(|_| corrupt())?
        .into_iter()
        .map(|(name, limits)| {
            json!({"name": name, "max_per_payment": limits.max_per_payment.map(|a| a.to_string()),
                "budget": limits.budget.map(|a| a.to_string())})
        })
        .collect();
    let budget = Amount::from_sql(scope.budget);
    let committed = view.held.checked_add(view.spent).unwrap_or(budget);
    Ok(json!({
        "id": scope.id, "credential_id": scope.credential_id, "agent_id": scope.agent_id,
        "name": scope.name, "task_ref": scope.task_ref, "status": scope.status,
        "phase": scope.phase, "pending_phase": scope.pending_phase, "phases": phases,
        "phase_change_requires_approval": scope.phase_change_requires_approval,
        "budget": budget.to_string(), "held": view.held.to_string(), "spent": view.spent.to_string(),
        "remaining": budget.checked_sub(committed).unwrap_or(Amount::from_micros(0)).to_string(),
        "allowed_recipients": scope.allowed_recipients.as_deref().map(serde_json::from_str::<Value>).transpose().map_err(|_| corrupt())?,
        "tiers": serde_json::from_str::<Value>(&scope.tiers).map_err(|_| corrupt())?,
        "expires_at": scope.expires_at.map(time), "close_reason": scope.close_reason,
        "created_at": time(scope.created_at), "updated_at": time(scope.updated_at),
        "closed_at": scope.closed_at.map(time),
        // What moved although the task failed (finance reads it here and in `scope.closed`).
        "spent_without_delivery": (scope.status == "closed_failed" || scope.status == "expired").then(|| {
            view.payments.iter()
                .filter(|p| matches!(p.status, crate::domain::PaymentStatus::Submitted
                    | crate::domain::PaymentStatus::Included | crate::domain::PaymentStatus::Confirmed))
                .map(|p| p.id.to_string())
                .collect::<Vec<_>>()
        }),
        "payments": view.payments.iter().map(|p| json!({
            "id": p.id, "amount": Amount::from_sql(p.amount).to_string(), "status": p.status,
            "phase": p.scope_phase, "tier": p.scope_tier, "to": p.to_address.to_string(),
            "kind": p.protocol.clone().unwrap_or_else(|| p.kind.to_string()),
        })).collect::<Vec<_>>(),
    }))
}

fn row_json(row: &ScopeRow) -> Value {
    json!({"id": row.id, "credential_id": row.credential_id, "agent_id": row.agent_id,
        "name": row.name, "task_ref": row.task_ref, "status": row.status, "phase": row.phase,
        "pending_phase": row.pending_phase, "budget": Amount::from_sql(row.budget).to_string(),
        "expires_at": row.expires_at.map(time), "created_at": time(row.created_at)})
}

/// Opens a scope under the calling credential (or, for an admin, the named one).
#[utoipa::path(post, path = "/v1/scopes", tag = "scopes", request_body = OpenScopeBody,
    responses((status = 201, description = "the scope"), (status = 400, description = "invalid, or a field that would widen the credential (named in error.field)"),
        (status = 401), (status = 403)))]
pub async fn open(
    State(state): State<AppState>,
    auth: Auth,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    staff_may(&auth, &[])?;
    let body: OpenScopeBody = parse_json(&bytes)?;
    let credential_id = match &auth.0 {
        Principal::Agent { credential_id, .. } => {
            if body
                .credential_id
                .as_deref()
                .is_some_and(|c| c != credential_id.as_str())
            {
                return Err(ApiError::invalid(
                    "credential_id",
                    "an agent opens scopes under its own credential",
                ));
            }
            credential_id.clone()
        }
        Principal::Staff { .. } => {
            auth.require(&[])?;
            let id = body.credential_id.as_deref().ok_or_else(|| {
                ApiError::invalid(
                    "credential_id",
                    "an admin names the credential to open the scope under",
                )
            })?;
            CredentialId::from_text(id)
        }
    };
    for (field, value) in [
        ("name", Some(&body.name)),
        ("task_ref", body.task_ref.as_ref()),
    ] {
        if value.is_some_and(|v| v.chars().count() > MAX_TEXT) {
            return Err(ApiError::invalid(
                field,
                format!("must be at most {MAX_TEXT} characters"),
            ));
        }
    }
    let phases = match body.phases {
        None => default_phases(),
        Some(mut map) => order_phases(phase_order(&bytes))
            .into_iter()
            .filter_map(|name| map.remove(&name).map(|limits| (name, limits)))
            .collect(),
    };
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| super::parse_time("expires_at", t))
        .transpose()?;
    let new = NewScope {
        name: body.name,
        task_ref: body.task_ref,
        budget: body.budget,
        expires_at,
        allowed_recipients: body.allowed_recipients,
        phases,
        initial_phase: body.initial_phase,
        phase_change_requires_approval: body.phase_change_requires_approval.unwrap_or(false),
        tiers: body.tiers.unwrap_or_default(),
    };
    let row = state
        .payments
        .open_scope(&auth.0, &credential_id, &new)
        .await?;
    let view = state.payments.scope(&auth.0, &row.id).await?;
    Ok((StatusCode::CREATED, Json(scope_json(&view)?)).into_response())
}

/// One scope: budget, held, spent, phase and its payments.
#[utoipa::path(get, path = "/v1/scopes/{id}", tag = "scopes",
    params(("id" = String, Path, description = "scope id (scp_...)")),
    responses((status = 200, description = "the scope"), (status = 401), (status = 404)))]
pub async fn get_scope(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    staff_may(&auth, READERS)?;
    let view = state.payments.scope(&auth.0, &id).await?;
    Ok(Json(scope_json(&view)?))
}

/// Scopes newest first: an agent's own credential's; staff (admin, auditor, approver) all.
#[utoipa::path(get, path = "/v1/scopes", tag = "scopes",
    params(("status" = Option<String>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "{data, next_cursor}"), (status = 400), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let get = |key: &str| query.get(key).map(String::as_str);
    let status = get("status");
    if status
        .is_some_and(|s| !["open", "closed_succeeded", "closed_failed", "expired"].contains(&s))
    {
        return Err(ApiError::invalid(
            "status",
            "must be open, closed_succeeded, closed_failed or expired",
        ));
    }
    let credential = match &auth.0 {
        Principal::Agent { credential_id, .. } => Some(credential_id.as_str().to_string()),
        Principal::Staff { .. } => {
            auth.require(READERS)?;
            None
        }
    };
    let page = page(get("limit"), get("cursor"))?;
    let rows =
        crate::ledger::scopes::list(state.reader.pool(), credential.as_deref(), status, &page)
            .await
            .map_err(super::agents::bad_cursor)?;
    let cursor = rows
        .last()
        .map(|r| crate::ledger::payments::cursor_of(r.created_at, &r.id));
    let data: Vec<Value> = rows.iter().map(row_json).collect();
    Ok(Json(list_response(data, page.limit, cursor)))
}

/// Moves the scope forward to `phase`. `202` when it waits for an approver; an approver's (or
/// admin's) own call applies it.
#[utoipa::path(post, path = "/v1/scopes/{id}/phase", tag = "scopes",
    params(("id" = String, Path, description = "scope id")),
    responses((status = 200, description = "the scope, in its new phase"), (status = 202, description = "the change waits for an approver (pending_phase)"),
        (status = 400, description = "not a phase of the scope"), (status = 401), (status = 404), (status = 409, description = "backwards, or the scope is closed")))]
pub async fn set_phase(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    staff_may(&auth, &[Role::Approver])?;
    let body: PhaseBody = parse_json(&bytes)?;
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 1_000)
    {
        return Err(ApiError::invalid(
            "reason",
            "must be at most 1000 characters",
        ));
    }
    let (_, pending) = state
        .payments
        .set_scope_phase(&auth.0, &id, &body.phase, body.reason.as_deref())
        .await?;
    let view = state.payments.scope(&auth.0, &id).await?;
    let status = if pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(scope_json(&view)?)).into_response())
}

/// Closes the scope. On `failed` its holds and unsigned payments are voided or cancelled in the
/// same step, and what was already paid is listed as spent without delivery.
#[utoipa::path(post, path = "/v1/scopes/{id}/close", tag = "scopes",
    params(("id" = String, Path, description = "scope id")),
    responses((status = 200, description = "{scope, released, spent_without_delivery}"), (status = 400), (status = 401), (status = 404), (status = 409, description = "already closed")))]
pub async fn close(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    staff_may(&auth, &[])?;
    let body: CloseBody = parse_json(&bytes)?;
    let failed = match body.outcome.as_str() {
        "failed" => true,
        "succeeded" => false,
        _ => {
            return Err(ApiError::invalid(
                "outcome",
                "must be \"succeeded\" or \"failed\"",
            ));
        }
    };
    let ScopeClosed {
        view,
        released,
        spent_without_delivery,
    } = state
        .payments
        .close_scope(&auth.0, &id, failed, body.reason.as_deref())
        .await?;
    Ok(Json(
        json!({"scope": scope_json(&view)?, "released": released, "spent_without_delivery": spent_without_delivery}),
    ))
}

/// The scope's decision chain in order: opening, phase changes, each payment's decision with
/// every check and figure, approvals, holds, chain outcomes with block hashes, the close.
#[utoipa::path(get, path = "/v1/scopes/{id}/trace", tag = "scopes",
    params(("id" = String, Path, description = "scope id")),
    responses((status = 200, description = "{scope_id, events: [...]}, oldest first"), (status = 401), (status = 404)))]
pub async fn trace(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    staff_may(&auth, READERS)?;
    let events = state.payments.scope_trace(&auth.0, &id).await?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({"seq": e.seq, "at": time(e.at), "kind": e.kind, "actor": e.actor,
                "payment_id": e.payment_id, "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
                "tx_hash": e.tx_hash, "block_number": e.block_number, "block_hash": e.block_hash})
        })
        .collect();
    Ok(Json(json!({"scope_id": id, "events": events})))
}

#[cfg(test)]
mod tests {
    #[test]
    fn phases_keep_the_order_the_caller_wrote() {
        let body = br#"{"name": "t", "phases": {"explore": {"budget": "1"}, "commit": {}, "audit": {}}, "tiers": []}"#;
        assert_eq!(super::phase_order(body), ["explore", "commit", "audit"]);
    }
}
