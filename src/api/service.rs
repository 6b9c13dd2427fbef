//! Service routes without auth: liveness, readiness, Prometheus metrics, the OpenAPI document.

use super::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "service", security(()), responses((status = 200, description = "up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The database and the RPC node both answer.
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses((status = 200, description = "ready"), (status = 503, description = "names what is not answering")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (database, rpc) = state.payments.readiness().await;
    let mut failing = Vec::new();
    if !database {
        failing.push("database");
    }
    if !rpc {
        failing.push("rpc");
    }
    if failing.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "failing": failing})),
        )
            .into_response()
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "service", security(()), responses((status = 200, description = "Prometheus text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", security(()), responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(super::reference::document())
}

/// Counts requests by method and status class.
pub async fn count_requests(request: Request, next: Next) -> Response {
    // Only known methods become label values, so a client cannot mint new time series.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("bursar_http_requests_total", "method" => method, "status" => status)
        .increment(1);
    response
}
