//! `/mcp`: the MCP server (Streamable HTTP, the official `rmcp` SDK) for agents. Every HTTP
//! request is authenticated by the agent's own credential as a Bearer token (staff tokens and
//! missing credentials are `401`), and each tool maps onto the same use case as the HTTP API,
//! returning the same payment object: the credential's policy, holds, idempotency and audit apply
//! exactly as for `POST /v1/payments`. A policy denial is a tool result the model can read.
//!
//! It lives beside the HTTP routes (not in a module of its own) because it is another face of
//! the same API: it shares the payment object, the error mapping and the x402 payer.

use super::payments::payment_response;
use super::{ApiError, AppState};
use crate::domain::{Address, Amount, IdempotencyKey, PaymentStatus};
use crate::ledger::payments::{self as payment_rows, PaymentFilter};
use crate::payments::{Capture, NewPayment, Payments, Principal};
use crate::x402::FetchRequest;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;

/// The `/mcp` service: authentication in front of rmcp's Streamable HTTP transport.
pub fn router(state: AppState, allowed_hosts: Vec<String>) -> axum::Router<AppState> {
    let tools_state = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(Tools::new(tools_state.clone())),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default()
            .with_allowed_hosts(allowed_hosts)
            .with_sse_keep_alive(None),
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Only an agent credential may use `/mcp`; the principal travels to the tools in the request.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let secret = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .map(str::to_string);
    let Some(secret) = secret else {
        return ApiError::Unauthorized.into_response();
    };
    match state.payments.authenticate(&secret).await {
        Ok(principal @ Principal::Agent { .. }) => {
            if request.method() == axum::http::Method::POST
                && let Err(error) = state.write_limiter.check(&principal)
            {
                return error.into_response();
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(Principal::Staff { .. }) => ApiError::Unauthorized.into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[derive(Clone)]
pub struct Tools {
    state: AppState,
    tool_router: ToolRouter<Tools>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PayArgs {
    /// Recipient address, 0x + 40 hex digits.
    pub to: String,
    /// USDC as a decimal string with at most 6 decimals, e.g. "1.25".
    pub amount: String,
    /// What the payment is for (shown to humans and in the audit log).
    pub memo: Option<String>,
    /// Your reference (an order or invoice number).
    pub reference: Option<String>,
    /// How sure you are this payment is right, 0 to 1.
    pub confidence: Option<f64>,
    /// A key that makes retries safe: the same key never pays twice. When omitted, one is
    /// derived from the other arguments, so re-sending the same call never pays twice.
    pub idempotency_key: Option<String>,
    /// The spending scope (task) this payment belongs to, from open_scope.
    pub scope_id: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PaymentIdArgs {
    /// The payment id (pay_...).
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CaptureArgs {
    /// The authorized payment id (pay_...).
    pub id: String,
    /// How much of the hold to send (default: all of it), USDC decimal string.
    pub amount: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListArgs {
    /// Only payments in this status (queued, submitted, confirmed, rejected, ...).
    pub status: Option<String>,
    /// How many, newest first (1 to 100, default 20).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PayX402Args {
    /// The paid resource's URL.
    pub url: String,
    /// HTTP method (default GET).
    pub method: Option<String>,
    /// Headers to send to the seller.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// Request body to send (a string).
    pub body: Option<String>,
    /// The most you will pay for this request, USDC decimal string.
    pub max_amount: Option<String>,
    /// Same as for `pay`; derived from the arguments when omitted.
    pub idempotency_key: Option<String>,
    /// The spending scope (task) this payment belongs to, from open_scope.
    pub scope_id: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct OpenScopeArgs {
    /// What the task is, for humans.
    pub name: String,
    /// Your reference for the task.
    pub task_ref: Option<String>,
    /// What the task may spend in total, USDC decimal string.
    pub budget: String,
    /// When the task's mandate ends (RFC 3339); it then closes as failed.
    pub expires_at: Option<String>,
    /// Phases with their limits, e.g. {"explore": {"max_per_payment": "0.05", "budget": "1"},
    /// "commit": {}}; explore comes first, commit last. Default: explore then commit.
    pub phases: Option<Value>,
    /// Whether moving to the next phase needs a human approval.
    pub phase_change_requires_approval: Option<bool>,
    /// Tiers by payment size, e.g. [{"up_to": "0.10", "daily_limit": "5"},
    /// {"daily_limit": "20", "require_approval": true}].
    pub tiers: Option<Value>,
    /// Only these recipients, within the credential's own allowlist.
    pub allowed_recipients: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SetPhaseArgs {
    /// The scope id (scp_...).
    pub scope_id: String,
    /// The phase to move forward to.
    pub phase: String,
    /// Why (recorded in the audit log and shown to the approver).
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CloseScopeArgs {
    /// The scope id (scp_...).
    pub scope_id: String,
    /// "succeeded" or "failed". Failed voids every open hold and unsigned payment of the task.
    pub outcome: String,
    pub reason: Option<String>,
}

/// A failure the model should read (bad argument, denial, conflict): a tool result with
/// `isError`, never a transport error.
fn failure(error: ApiError) -> CallToolResult {
    let response = error.into_response();
    let status = response.status().as_u16();
    let message = match status {
        401 => "this credential is no longer valid (revoked or expired)",
        404 => "no such payment for this agent",
        429 => "too many requests; wait a second and retry with the same idempotency key",
        _ => "the request could not be done",
    };
    CallToolResult::structured_error(json!({"http_status": status, "error": message}))
}

async fn failure_from(error: ApiError) -> CallToolResult {
    // Keep the envelope the HTTP API gives (code, message, field, rule, payment).
    let response = error.into_response();
    let status = response.status().as_u16();
    match axum::body::to_bytes(response.into_body(), 1 << 20).await {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut body) => {
                body["http_status"] = json!(status);
                if body["error"]["code"] == "policy_denied" {
                    body["outcome"] = json!("denied");
                    body["hint"] = json!(
                        "the credential's policy refused this payment; nothing was signed or sent. Do not retry it unchanged."
                    );
                }
                CallToolResult::structured_error(body)
            }
            Err(_) => failure(ApiError::Internal("unreadable error".into())),
        },
        Err(_) => failure(ApiError::Internal("unreadable error".into())),
    }
}

fn ok(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

fn agent_of(
    parts: &Parts,
) -> Result<(crate::domain::AgentId, crate::domain::CredentialId), ApiError> {
    match parts.extensions.get::<Principal>() {
        Some(Principal::Agent {
            agent_id,
            credential_id,
        }) => Ok((agent_id.clone(), credential_id.clone())),
        _ => Err(ApiError::Unauthorized),
    }
}

/// The caller's key, or one derived from the tool and its arguments.
fn key_for(tool: &str, given: Option<&str>, args: &Value) -> Result<IdempotencyKey, ApiError> {
    let text = match given {
        Some(key) => key.to_string(),
        None => format!(
            "mcp-{tool}-{}",
            &hex::encode(sha2::Sha256::digest(args.to_string().as_bytes()))[..40]
        ),
    };
    IdempotencyKey::parse(&text).map_err(|e| ApiError::invalid("idempotency_key", e.to_string()))
}

fn amount(field: &str, text: &str) -> Result<Amount, ApiError> {
    Amount::parse_positive(text).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// What a payment's status means for the model, in one sentence.
fn next_step(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::PendingApproval => {
            "waiting for a human approver; poll it with get_payment until it is queued, rejected or expired"
        }
        PaymentStatus::Authorized => "a hold on the budget, nothing sent; capture or void it",
        PaymentStatus::Queued | PaymentStatus::Submitted | PaymentStatus::Included => {
            "accepted and settling on chain; poll get_payment until confirmed"
        }
        PaymentStatus::Confirmed => "paid: confirmed on chain at the required depth",
        PaymentStatus::Rejected => "refused by the policy",
        PaymentStatus::Failed => "failed; see failure_reason",
        PaymentStatus::Cancelled | PaymentStatus::Expired => {
            "ended without moving money; the hold is released"
        }
    }
}

fn payment_value(row: &payment_rows::PaymentRow, payments: &Payments) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(payment_response(row, payments)?)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    value["next_step"] = json!(next_step(row.status));
    Ok(value)
}

async fn done(result: Result<Value, ApiError>) -> Result<CallToolResult, ErrorData> {
    Ok(match result {
        Ok(value) => ok(value),
        Err(error) => failure_from(error).await,
    })
}

#[tool_router]
impl Tools {
    pub fn new(state: AppState) -> Tools {
        Tools {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Pay USDC on Base to an address. The credential's policy decides (caps, budgets, allowlist, approval); a denial comes back as a result naming the rule. Safe to retry: the same idempotency_key (or, without one, the same arguments) never pays twice. Returns the payment; status queued means it is settling, pending_approval means a human must approve it first.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn pay(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PayArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        done(self.create(&parts, args, Capture::Automatic, "pay").await).await
    }

    #[tool(
        description = "Place a hold on the budget for a later payment (two-phase spend): nothing is sent until you capture it; void releases it. Same arguments and idempotency as pay.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn authorize(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PayArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        done(
            self.create(&parts, args, Capture::Manual, "authorize")
                .await,
        )
        .await
    }

    #[tool(
        description = "Send an authorized hold (all of it, or a smaller amount; the rest is released).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn capture(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<CaptureArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let principal = parts
                .extensions
                .get::<Principal>()
                .ok_or(ApiError::Unauthorized)?;
            let captured = args
                .amount
                .as_deref()
                .map(|a| amount("amount", a))
                .transpose()?;
            let row = self
                .state
                .payments
                .capture(principal, &args.id, captured)
                .await?;
            payment_value(&row, &self.state.payments)
        };
        done(result.await).await
    }

    #[tool(
        description = "Release an authorized hold without sending anything.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn void(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PaymentIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let principal = parts
                .extensions
                .get::<Principal>()
                .ok_or(ApiError::Unauthorized)?;
            let row = self.state.payments.void(principal, &args.id).await?;
            payment_value(&row, &self.state.payments)
        };
        done(result.await).await
    }

    #[tool(
        description = "One of this agent's payments by id, with its status, transaction hash, block and confirmations.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_payment(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PaymentIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let (agent_id, _) = agent_of(&parts)?;
            let row = self.state.payments.get_payment(&args.id).await?;
            if row.agent_id.as_ref() != Some(&agent_id) {
                return Err(ApiError::NotFound);
            }
            payment_value(&row, &self.state.payments)
        };
        done(result.await).await
    }

    #[tool(
        description = "This agent's payments, newest first, optionally only one status.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_payments(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let (agent_id, _) = agent_of(&parts)?;
            let status = args
                .status
                .as_deref()
                .map(|s| {
                    PaymentStatus::parse(s)
                        .ok_or_else(|| ApiError::invalid("status", "not a payment status"))
                })
                .transpose()?;
            let limit = args.limit.unwrap_or(20);
            if !(1..=100).contains(&limit) {
                return Err(ApiError::invalid("limit", "must be from 1 to 100"));
            }
            let filter = PaymentFilter {
                agent_id: Some(agent_id.to_string()),
                status: status.map(|s| s.as_str().to_string()),
                from: None,
                to: None,
                treasury_only: false,
            };
            let page = crate::ledger::Page {
                limit,
                cursor: None,
            };
            let rows = payment_rows::list(self.state.reader.pool(), &filter, &page)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let data = rows
                .iter()
                .map(|row| payment_value(row, &self.state.payments))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({"data": data}))
        };
        done(result.await).await
    }

    #[tool(
        description = "What this credential may still spend: remaining daily (rolling 24 h) and total budget, the per-payment cap, the amount above which a human must approve, payments left this minute, and the largest payment allowed right now. Amounts are USDC decimal strings; null means no limit.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn budget(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let (_, credential_id) = agent_of(&parts)?;
            let budget = self.state.payments.budget(&credential_id).await?;
            serde_json::to_value(budget).map_err(|e| ApiError::Internal(e.to_string()))
        };
        done(result.await).await
    }

    #[tool(
        description = "Fetch a URL that may ask for payment (HTTP 402, the x402 protocol). Bursar makes the request; if the seller asks for USDC on Base, the credential's policy decides, Bursar signs the payment and retries, and you get the seller's response with the payment. Nothing is paid above max_amount. Safe to retry like pay.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn pay_x402(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PayX402Args>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let (agent_id, credential_id) = agent_of(&parts)?;
            let derived = json!({"url": args.url, "method": args.method, "headers": args.headers,
                "body": args.body, "max_amount": args.max_amount, "scope_id": args.scope_id});
            let key = key_for("pay_x402", args.idempotency_key.as_deref(), &derived)?;
            let max_amount = args
                .max_amount
                .as_deref()
                .map(|a| amount("max_amount", a))
                .transpose()?;
            let headers: Vec<(String, String)> =
                args.headers.unwrap_or_default().into_iter().collect();
            let secret = parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|s| s.trim().to_string());
            crate::x402::check_headers(&headers, secret.as_deref())?;
            let request = FetchRequest {
                url: args.url,
                method: args.method.unwrap_or_else(|| "GET".into()),
                headers,
                body: args.body,
                max_amount,
                scope_id: args.scope_id.clone(),
            };
            let fetched = self
                .state
                .payer
                .fetch(&agent_id, &credential_id, &key, &request)
                .await?;
            if let Some(authorized) = &fetched.authorized
                && authorized.payment.status == PaymentStatus::Rejected
            {
                return Err(super::payments::policy_denied(&payment_response(
                    &authorized.payment,
                    &self.state.payments,
                )?)?);
            }
            let payment = fetched
                .authorized
                .as_ref()
                .map(|a| payment_value(&a.payment, &self.state.payments))
                .transpose()?;
            Ok(json!({"response": fetched.response, "payment": payment}))
        };
        done(result.await).await
    }

    #[tool(
        description = "Open a spending scope: one task's budget inside this credential, with phases (explore, then commit) that gate spending and optional tiers by payment size. Pass the returned scope_id to pay, authorize and pay_x402 so the task's limits apply. Cannot widen the credential's own limits.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn open_scope(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<OpenScopeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let principal = parts
                .extensions
                .get::<Principal>()
                .ok_or(ApiError::Unauthorized)?;
            let (_, credential_id) = agent_of(&parts)?;
            let budget = Amount::parse_positive(&args.budget)
                .map_err(|e| ApiError::invalid("budget", e.to_string()))?;
            let phases = super::scopes::phases_from(args.phases)?;
            let tiers: Vec<crate::policy::scope::Tier> = match args.tiers {
                None => Vec::new(),
                Some(value) => serde_json::from_value(value)
                    .map_err(|e| ApiError::invalid("tiers", e.to_string()))?,
            };
            let allowed_recipients = args
                .allowed_recipients
                .map(|list| {
                    list.iter()
                        .map(|a| {
                            Address::parse(a)
                                .map_err(|e| ApiError::invalid("allowed_recipients", e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let expires_at = args
                .expires_at
                .as_deref()
                .map(|t| super::parse_time("expires_at", t))
                .transpose()?;
            let new = crate::payments::scopes::NewScope {
                name: args.name,
                task_ref: args.task_ref,
                budget,
                expires_at,
                allowed_recipients,
                phases,
                initial_phase: None,
                phase_change_requires_approval: args
                    .phase_change_requires_approval
                    .unwrap_or(false),
                tiers,
            };
            let row = self
                .state
                .payments
                .open_scope(principal, &credential_id, &new)
                .await?;
            let view = self.state.payments.scope(principal, &row.id).await?;
            super::scopes::scope_json(&view)
        };
        done(result.await).await
    }

    #[tool(
        description = "Move a scope forward to its next phase (e.g. from explore to commit once you have a plan), with the reason. If the scope requires approval, the change waits for a human (pending_phase) and spending stays under the current phase until then.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn set_phase(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SetPhaseArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let principal = parts
                .extensions
                .get::<Principal>()
                .ok_or(ApiError::Unauthorized)?;
            let (_, pending) = self
                .state
                .payments
                .set_scope_phase(
                    principal,
                    &args.scope_id,
                    &args.phase,
                    args.reason.as_deref(),
                )
                .await?;
            let view = self.state.payments.scope(principal, &args.scope_id).await?;
            let mut value = super::scopes::scope_json(&view)?;
            value["waiting_for_approval"] = json!(pending);
            Ok(value)
        };
        done(result.await).await
    }

    #[tool(
        description = "Close a scope when its task ends. outcome \"failed\" voids every open hold and unsigned payment of the task in one step and lists what was already paid; \"succeeded\" releases holds that were never captured.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn close_scope(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<CloseScopeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let result = async {
            let principal = parts
                .extensions
                .get::<Principal>()
                .ok_or(ApiError::Unauthorized)?;
            let failed = match args.outcome.as_str() {
                "failed" => true,
                "succeeded" => false,
                _ => {
                    return Err(ApiError::invalid(
                        "outcome",
                        "must be \"succeeded\" or \"failed\"",
                    ));
                }
            };
            let closed = self
                .state
                .payments
                .close_scope(principal, &args.scope_id, failed, args.reason.as_deref())
                .await?;
            Ok(
                json!({"scope": super::scopes::scope_json(&closed.view)?, "released": closed.released,
                "spent_without_delivery": closed.spent_without_delivery}),
            )
        };
        done(result.await).await
    }
}

impl Tools {
    async fn create(
        &self,
        parts: &Parts,
        args: PayArgs,
        capture: Capture,
        tool: &str,
    ) -> Result<Value, ApiError> {
        let (agent_id, credential_id) = agent_of(parts)?;
        let derived = json!({"to": args.to, "amount": args.amount, "memo": args.memo,
            "reference": args.reference, "confidence": args.confidence, "scope_id": args.scope_id});
        let key = key_for(tool, args.idempotency_key.as_deref(), &derived)?;
        let to = Address::parse(&args.to).map_err(|e| ApiError::invalid("to", e.to_string()))?;
        let amount = amount("amount", &args.amount)?;
        if let Some(confidence) = args.confidence
            && !(0.0..=1.0).contains(&confidence)
        {
            return Err(ApiError::invalid("confidence", "must be between 0 and 1"));
        }
        for (field, value, max) in [
            ("memo", &args.memo, 1_000),
            ("reference", &args.reference, 255),
        ] {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                return Err(ApiError::invalid(
                    field,
                    format!("must be at most {max} characters"),
                ));
            }
        }
        let request = NewPayment {
            to,
            amount,
            currency: "USDC".into(),
            memo: args.memo,
            reference: args.reference,
            confidence: args.confidence,
            capture,
            metadata: None,
            scope_id: args.scope_id,
        };
        let created = self
            .state
            .payments
            .create_payment(&agent_id, &credential_id, &key, &request)
            .await?;
        if created.payment.status == PaymentStatus::Rejected {
            return Err(super::payments::policy_denied(&payment_response(
                &created.payment,
                &self.state.payments,
            )?)?);
        }
        let mut value = payment_value(&created.payment, &self.state.payments)?;
        value["replayed"] = json!(created.replayed);
        value["idempotency_key"] = json!(key.as_str());
        Ok(value)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bursar", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Bursar pays in USDC on Base for this agent, under a policy set by humans. \
                 Use budget to see what you may spend, pay to pay an address, pay_x402 to fetch a \
                 URL that asks for payment (HTTP 402), authorize/capture/void for two-phase spends, \
                 get_payment and list_payments to follow payments. A denial names the rule; do not \
                 retry it unchanged. Retrying a call with the same arguments never pays twice."
                    .to_string(),
            )
    }
}
