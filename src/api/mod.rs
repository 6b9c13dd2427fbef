//! The HTTP API (served as OpenAPI at `/openapi.json`): one axum router per resource, the bearer-auth and JSON
//! extractors, response types and `ApiError`. Handlers call the `payments` use cases and, for
//! reads, `ledger` queries; they never touch keys or the RPC node directly. The OpenAPI document
//! is generated from the handlers' annotations.

mod agents;
mod audit;
mod deny_list;
mod error;
mod extract;
mod mcp;
mod payments;
mod rate_limit;
mod reference;
mod reports;
mod scopes;
mod service;
mod tokens;
mod treasury;
mod webhooks;
mod x402;

pub use error::ApiError;
pub use rate_limit::WriteLimiter;
use reference::Complete;

use crate::payments::Payments;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use chrono::DateTime;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

/// Largest request body accepted (API: over 1 MiB is `413`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest a request may take before the server answers `408`.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

#[derive(Clone, Debug)]
pub struct AppState {
    /// The use cases: every state change goes through them.
    pub payments: Payments,
    /// Read-only queries.
    pub reader: crate::ledger::LedgerReader,
    pub write_limiter: WriteLimiter,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The x402 payer (outbound requests to sellers).
    pub payer: crate::x402::Payer,
    /// `Host` values `/mcp` accepts (DNS-rebinding protection).
    pub mcp_allowed_hosts: Vec<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bursar", description = include_str!("reference_description.txt")),
    paths(
        service::healthz, service::readyz, service::metrics, service::openapi,
        tokens::create, tokens::revoke,
        agents::create, agents::list, agents::get_agent, agents::create_credential, agents::get_credential,
        agents::revoke_credential, agents::freeze, agents::unfreeze,
        payments::create, payments::get_payment, payments::list, payments::approve, payments::reject,
        payments::capture, payments::void,
        treasury::view, treasury::fund, treasury::sweep,
        audit::list, audit::verify, audit::export, reports::spend, reports::balances, reports::reconciliation,
        webhooks::create, webhooks::list, webhooks::disable, webhooks::deliveries, webhooks::replay,
        deny_list::add, deny_list::list, deny_list::remove,
        x402::fetch, x402::authorize,
        scopes::open, scopes::list, scopes::get_scope, scopes::set_phase, scopes::close, scopes::trace,
    ),
    components(schemas(
        crate::domain::PaymentStatus, crate::payments::Policy, crate::payments::Decision, crate::payments::Check,
        crate::payments::Outcome, payments::PaymentResponse, payments::CreatePaymentRequest,
    )),
    modifiers(&BearerAuth, &Complete),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

pub fn router(state: AppState) -> Router {
    let mcp = mcp::router(state.clone(), state.mcp_allowed_hosts.clone());
    Router::new()
        .merge(mcp)
        .merge(service::router())
        .merge(tokens::router())
        .merge(agents::router())
        .merge(payments::router())
        .merge(treasury::router())
        .merge(audit::router())
        .merge(reports::router())
        .merge(webhooks::router())
        .merge(deny_list::router())
        .merge(x402::router())
        .merge(scopes::router())
        .merge(crate::console::router())
        .route("/docs", axum::routing::get(reference::docs))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
        ))
        .layer(axum::middleware::map_response(
            error::envelope_for_bare_errors,
        ))
        .layer(axum::middleware::from_fn(service::count_requests))
        .with_state(state)
}

/// API times: RFC 3339 UTC with milliseconds.
pub fn time(millis: i64) -> String {
    crate::domain::format_time(millis)
}

pub fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(
                field,
                "must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
            )
        })
}

/// `limit` and `cursor` of a list request.
pub fn page(limit: Option<&str>, cursor: Option<&str>) -> Result<crate::ledger::Page, ApiError> {
    let limit = match limit {
        None => crate::ledger::DEFAULT_PAGE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=crate::ledger::MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be a whole number from 1 to 500"))?,
    };
    Ok(crate::ledger::Page {
        limit,
        cursor: cursor.map(str::to_string),
    })
}

/// `{"data": [...], "next_cursor": ...}`: a cursor only when the page was full.
pub fn list_response<T: serde::Serialize>(
    data: Vec<T>,
    limit: u32,
    last_cursor: Option<String>,
) -> serde_json::Value {
    let next = if data.len() as u32 == limit {
        last_cursor
    } else {
        None
    };
    serde_json::json!({"data": data, "next_cursor": next})
}
