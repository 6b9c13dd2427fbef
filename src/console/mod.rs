//! The operator console at `/console`: server-rendered pages (maud) for the people who are not
//! agents. A staff API token is exchanged for a session (HttpOnly, SameSite=Strict cookie, 30
//! minutes, ended at once when the token is revoked); every form carries the session's CSRF
//! token; every response has a strict Content-Security-Policy (no inline script or style; the one
//! small script and the stylesheet are embedded in the binary). The API's role table applies to
//! every page and action. Uses only `payments`, `domain` and the read-only ledger handle.

mod pages;

use crate::api::AppState;
use crate::domain::Role;
use crate::payments::{PaymentsError, Principal};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;

/// The session cookie's name.
pub const COOKIE: &str = "bursar_session";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const STYLE: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/approvals", get(pages::approvals))
        .route("/console/approvals/rows", get(pages::approval_rows))
        .route("/console/payments/{id}", get(pages::payment))
        .route("/console/payments/{id}/approve", post(pages::approve))
        .route("/console/payments/{id}/reject", post(pages::reject))
        .route("/console/spend", get(pages::spend))
        .route("/console/spend.csv", get(pages::spend_csv))
        .route("/console/alarms", get(pages::alarms))
        .route("/console/agents", get(pages::agents))
        .route("/console/agents/{id}/freeze", post(pages::freeze))
        .route("/console/agents/{id}/unfreeze", post(pages::unfreeze))
        .route("/console/agents/{id}/fund", post(pages::fund))
        .route(
            "/console/assets/console.css",
            get(|| async { asset("text/css", STYLE) }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .layer(axum::middleware::from_fn(secure_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Every console response: the CSP and the headers that keep pages out of frames and caches.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A signed-in staff member: the principal and the session's CSRF token.
pub struct Staff {
    pub principal: Principal,
    pub role: Role,
    pub csrf: String,
}

/// Why a console request cannot go on.
pub enum ConsoleError {
    /// No valid session: back to sign-in.
    SignIn,
    /// The role may not do this.
    Forbidden,
    /// A form without the session's CSRF token.
    Csrf,
    NotFound,
    /// Something the operator can fix (shown on the page).
    Refused(String),
    Internal(String),
}

impl From<PaymentsError> for ConsoleError {
    fn from(error: PaymentsError) -> Self {
        match error {
            PaymentsError::Unauthenticated => ConsoleError::SignIn,
            PaymentsError::NotFound => ConsoleError::NotFound,
            PaymentsError::Invalid { field, message } => {
                ConsoleError::Refused(format!("{field}: {message}"))
            }
            PaymentsError::Conflict(message) => ConsoleError::Refused(message),
            PaymentsError::PolicyDenied { rule, message } => {
                ConsoleError::Refused(format!("refused by the policy rule {rule}: {message}"))
            }
            PaymentsError::Chain(error) if error.is_retryable() => {
                ConsoleError::Refused("the blockchain node is not answering; try again".into())
            }
            other => ConsoleError::Internal(other.to_string()),
        }
    }
}

impl From<crate::ledger::LedgerError> for ConsoleError {
    fn from(error: crate::ledger::LedgerError) -> Self {
        PaymentsError::from(error).into()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::SignIn => return Redirect::to("/console").into_response(),
            ConsoleError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Your role may not do this.".to_string(),
            ),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form did not come from your console session (CSRF check failed).".to_string(),
            ),
            ConsoleError::NotFound => {
                (StatusCode::NOT_FOUND, "No such page or record.".to_string())
            }
            ConsoleError::Refused(message) => (StatusCode::CONFLICT, message),
            ConsoleError::Internal(cause) => {
                tracing::error!(%cause, "console error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error.".to_string(),
                )
            }
        };
        (status, pages::message_page(status, &message)).into_response()
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = session_cookie(&parts.headers).ok_or(ConsoleError::SignIn)?;
        let (principal, csrf) = state.payments.console_session(&secret).await?;
        let Principal::Staff { role, .. } = &principal else {
            return Err(ConsoleError::SignIn);
        };
        let role = *role;
        Ok(Staff {
            principal,
            role,
            csrf,
        })
    }
}

impl Staff {
    /// Admin, or one of `roles`.
    pub fn may(&self, roles: &[Role]) -> bool {
        self.role == Role::Admin || roles.contains(&self.role)
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), ConsoleError> {
        if self.may(roles) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden)
        }
    }

    /// The form's CSRF token must be this session's (constant-time comparison).
    pub fn check_csrf(&self, token: &str) -> Result<(), ConsoleError> {
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            self.csrf.as_bytes(),
            token.as_bytes(),
        )) {
            Ok(())
        } else {
            Err(ConsoleError::Csrf)
        }
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `/console`: the sign-in page, or the signed-in member's first page.
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(secret) = session_cookie(&headers)
        && let Ok((Principal::Staff { role, .. }, _)) =
            state.payments.console_session(&secret).await
    {
        return Redirect::to(pages::first_page(role)).into_response();
    }
    pages::login_page(None).into_response()
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    match state
        .payments
        .start_console_session(form.token.trim())
        .await
    {
        Ok(session) => {
            let Principal::Staff { role, .. } = session.principal else {
                return pages::login_page(Some("Agents do not use the console.")).into_response();
            };
            let cookie = format!(
                "{COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
                session.secret.expose_secret(),
                crate::payments::console::SESSION_TTL_MS / 1000
            );
            let mut response = Redirect::to(pages::first_page(role)).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(PaymentsError::Unauthenticated | PaymentsError::AgentFrozen) => (
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some(
                "That token is unknown, revoked, or not a staff token.",
            )),
        )
            .into_response(),
        Err(other) => ConsoleError::from(other).into_response(),
    }
}

async fn logout(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    staff.check_csrf(&form.csrf)?;
    if let Some(secret) = session_cookie(&headers) {
        state.payments.end_console_session(&secret).await?;
    }
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "bursar_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}
