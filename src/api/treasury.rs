//! `/v1/treasury`: the treasury wallet and fundings of agent wallets.

use super::extract::{Auth, JsonBody, idempotency_key};
use super::payments::created_response;
use super::{ApiError, AppState};
use crate::domain::{AgentId, Amount, Role, Wei};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// The most ETH one funding may send for gas, to catch a misplaced decimal point.
const MAX_GAS_ETH_WEI: u128 = 10 * 1_000_000_000_000_000_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/treasury", get(view))
        .route("/v1/treasury/fundings", post(fund))
        .route("/v1/agents/{id}/sweep", post(sweep))
}

/// The treasury's address and on-chain balances, and the USDC all agent wallets hold together.
#[utoipa::path(get, path = "/v1/treasury", tag = "treasury", responses((status = 200), (status = 403)))]
pub async fn view(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require(&[Role::Treasury, Role::Auditor])?;
    let (address, usdc, eth) = state.payments.treasury_view().await?;
    let agents_usdc = state.payments.agents_usdc_total().await?;
    Ok(Json(json!({
        "address": address.to_string(),
        "balances": {"usdc": usdc.map(|a| a.to_string()), "eth": eth.map(|w| w.to_string())},
        "agents_usdc": agents_usdc.to_string(),
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFunding {
    agent_id: String,
    #[schema(value_type = String, example = "100")]
    amount: Amount,
    /// ETH for gas, a decimal string with at most 18 decimals, at most 10 ETH.
    gas_eth: Option<String>,
}

/// Parses ETH as a decimal string into wei, exactly: positive, at most 10 ETH.
fn parse_gas_eth(text: &str) -> Result<Wei, ApiError> {
    let wei = Wei::parse_ether(text).map_err(|_| {
        ApiError::invalid(
            "gas_eth",
            "must be a positive decimal string of ETH, at most 18 decimals and 10 ETH",
        )
    })?;
    if wei == Wei::ZERO || wei > Wei::from_wei(MAX_GAS_ETH_WEI) {
        return Err(ApiError::invalid(
            "gas_eth",
            "must be a positive decimal string of ETH, at most 18 decimals and 10 ETH",
        ));
    }
    Ok(wei)
}

/// Funds an agent's wallet from the treasury with USDC and, optionally, ETH for gas.
#[utoipa::path(post, path = "/v1/treasury/fundings", tag = "treasury", request_body = CreateFunding,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 202, description = "a payment object with kind funding"), (status = 200, description = "replay"),
        (status = 400), (status = 403), (status = 409)))]
pub async fn fund(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateFunding>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Treasury])?;
    let key = idempotency_key(&headers)?;
    let gas_wei = body.gas_eth.as_deref().map(parse_gas_eth).transpose()?;
    let created = state
        .payments
        .create_funding(
            &auth.0,
            &key,
            &AgentId::from_text(&body.agent_id),
            body.amount,
            gas_wei,
        )
        .await?;
    created_response(&created.payment, created.replayed, &state.payments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gas_eth_is_exact_and_bounded() {
        assert_eq!(
            parse_gas_eth("0.01").unwrap(),
            Wei::from_wei(10_000_000_000_000_000)
        );
        assert_eq!(
            parse_gas_eth("1").unwrap(),
            Wei::from_wei(1_000_000_000_000_000_000)
        );
        for bad in [
            "0",
            "-1",
            "1e18",
            "0.0000000000000000001",
            "11",
            ".5",
            "5.",
            "",
            "abc",
        ] {
            assert!(parse_gas_eth(bad).is_err(), "{bad}");
        }
    }
}

/// Moves the agent's free USDC (its balance less what its payments still hold) back to the
/// treasury. `409` when there is nothing free to sweep.
#[utoipa::path(post, path = "/v1/agents/{id}/sweep", tag = "treasury",
    responses((status = 202, description = "a payment object with kind sweep"), (status = 404), (status = 409)))]
pub async fn sweep(
    State(state): State<AppState>,
    auth: Auth,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    auth.require(&[Role::Treasury])?;
    let created = state
        .payments
        .sweep(&auth.0, &AgentId::from_text(&id))
        .await?;
    created_response(&created.payment, false, &state.payments)
}
