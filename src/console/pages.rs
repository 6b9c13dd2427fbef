//! The console's pages and actions. Each page checks the role table first; each action also
//! checks the form's CSRF token, then calls the same use case as the HTTP API.

use super::{ConsoleError, Staff};
use crate::api::AppState;
use crate::domain::{AgentId, Amount, IdempotencyKey, PaymentStatus, Role};
use crate::ledger::payments::{self as payment_rows, PaymentFilter, PaymentRow};
use crate::ledger::{Page, agents, audit, reports, webhooks};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

const PAGE: u32 = 50;

/// Where a role starts.
pub fn first_page(role: Role) -> &'static str {
    match role {
        Role::Approver => "/console/approvals",
        Role::Auditor => "/console/alarms",
        Role::Treasury => "/console/agents",
        Role::Admin => "/console/approvals",
    }
}

fn layout(title: &str, staff: Option<&Staff>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Bursar console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    strong { "Bursar" }
                    @if let Some(staff) = staff {
                        nav {
                            @if staff.may(&[Role::Approver, Role::Auditor]) { a href="/console/approvals" { "Approvals" } }
                            @if staff.may(&[Role::Auditor, Role::Treasury]) { a href="/console/spend" { "Spend" } }
                            @if staff.may(&[Role::Auditor]) { a href="/console/alarms" { "Alarms" } }
                            @if staff.may(&[Role::Auditor, Role::Treasury]) { a href="/console/agents" { "Agents" } }
                        }
                        form method="post" action="/console/logout" class="inline" {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            span class="role" { (staff.role.as_str()) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn login_page(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p class="error" role="alert" { (error) } }
            form method="post" action="/console/login" id="login" {
                label for="token" { "Staff API token" }
                input type="password" name="token" id="token" autocomplete="off" required;
                button type="submit" id="sign-in" { "Sign in" }
            }
            p class="hint" { "Approvers, auditors, treasury and admins sign in with their API token. The session lasts 30 minutes and ends when the token is revoked." }
        },
    )
}

pub fn message_page(status: StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            p class="error" role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

fn amount(micros: i64) -> String {
    Amount::from_sql(micros).to_string()
}

fn short(text: &str) -> String {
    if text.len() > 14 {
        format!("{}…{}", &text[..8], &text[text.len() - 4..])
    } else {
        text.to_string()
    }
}

#[derive(Deserialize, Default)]
pub struct Paging {
    cursor: Option<String>,
}

async fn pending(
    state: &AppState,
    cursor: Option<String>,
) -> Result<Vec<PaymentRow>, ConsoleError> {
    let filter = PaymentFilter {
        status: Some(PaymentStatus::PendingApproval.as_str().into()),
        ..PaymentFilter::default()
    };
    let page = Page {
        limit: PAGE,
        cursor,
    };
    payment_rows::list(state.reader.pool(), &filter, &page)
        .await
        .map_err(|_| ConsoleError::Refused("not a cursor this console gave".into()))
}

async fn queue_rows(
    state: &AppState,
    staff: &Staff,
    rows: &[PaymentRow],
) -> Result<Markup, ConsoleError> {
    let mut rendered = Vec::new();
    for payment in rows {
        let agent = match &payment.agent_id {
            Some(id) => agents::get(state.reader.pool(), id)
                .await
                .ok()
                .map(|a| a.name),
            None => None,
        };
        let budget = match &payment.credential_id {
            Some(id) => state.payments.budget(id).await.ok(),
            None => None,
        };
        let decision: Option<crate::payments::Decision> = payment
            .decision
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok());
        rendered.push(html! {
            tr id=(format!("row-{}", payment.id)) {
                td data-label="Payment" { a href=(format!("/console/payments/{}", payment.id)) { (short(payment.id.as_str())) } }
                td data-label="Agent" { (agent.unwrap_or_default()) }
                td data-label="To" { code { (short(&payment.to_address.to_string())) } }
                td data-label="Amount" class="num" { (amount(payment.amount)) " USDC" }
                td data-label="Budget left" {
                    @if let Some(budget) = &budget {
                        "today " (budget.daily_remaining.clone().unwrap_or_else(|| "no limit".into()))
                        br; "total " (budget.total_remaining.clone().unwrap_or_else(|| "no limit".into()))
                    }
                }
                td data-label="Decision" {
                    @if let Some(decision) = &decision {
                        strong { (decision.rule) }
                        ul class="checks" {
                            @for check in &decision.checks {
                                li class=(if check.passed { "pass" } else { "fail" }) { (check.rule) ": " (check.detail) }
                            }
                        }
                    }
                }
                td data-label="Action" {
                    @if staff.may(&[Role::Approver]) {
                        form method="post" action=(format!("/console/payments/{}/approve", payment.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            input type="text" name="note" placeholder="note" aria-label="note";
                            button type="submit" class="approve" { "Approve" }
                        }
                        form method="post" action=(format!("/console/payments/{}/reject", payment.id)) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            input type="text" name="note" placeholder="reason" aria-label="reason";
                            button type="submit" class="reject" { "Reject" }
                        }
                    } @else {
                        span class="hint" { "read only" }
                    }
                }
            }
        });
    }
    Ok(html! {
        @for row in &rendered { (row) }
        @if rendered.is_empty() { tr { td colspan="7" class="hint" { "Nothing waits for approval." } } }
    })
}

/// The approval queue (approvers act; auditors read).
pub async fn approvals(
    State(state): State<AppState>,
    staff: Staff,
    Query(paging): Query<Paging>,
) -> Result<Markup, ConsoleError> {
    staff.require(&[Role::Approver, Role::Auditor])?;
    let rows = pending(&state, paging.cursor).await?;
    let next = (rows.len() as u32 == PAGE)
        .then(|| {
            rows.last()
                .map(|p| payment_rows::cursor_of(p.created_at, &p.id))
        })
        .flatten();
    let body = queue_rows(&state, &staff, &rows).await?;
    Ok(layout(
        "Approvals",
        Some(&staff),
        html! {
            p class="hint" { "Payments waiting for a human, newest first. The list refreshes itself." }
            table id="queue" {
                thead { tr { th { "Payment" } th { "Agent" } th { "To" } th { "Amount" } th { "Budget left" } th { "Decision" } th { "Action" } } }
                tbody { (body) }
            }
            @if let Some(cursor) = next { p { a href=(format!("/console/approvals?cursor={cursor}")) { "Older →" } } }
        },
    ))
}

/// The queue's rows alone, for the page's refresh.
pub async fn approval_rows(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Markup, ConsoleError> {
    staff.require(&[Role::Approver, Role::Auditor])?;
    let rows = pending(&state, None).await?;
    queue_rows(&state, &staff, &rows).await
}

/// One payment, as the API's roles allow.
pub async fn payment(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let payment = state.payments.get_payment(&id).await?;
    let allowed = match staff.role {
        Role::Admin | Role::Auditor => true,
        Role::Treasury => payment.kind != crate::domain::PaymentKind::Payment,
        // Approvers see what waits for them, and follow what they approved themselves.
        Role::Approver => {
            payment.status == PaymentStatus::PendingApproval || {
                let filter = audit::AuditFilter {
                    payment_id: Some(payment.id.to_string()),
                    ..audit::AuditFilter::default()
                };
                audit::list(state.reader.pool(), &filter, 500)
                    .await?
                    .iter()
                    .any(|e| e.kind == "payment_approved" && e.actor == staff.principal.actor())
            }
        }
    };
    if !allowed {
        return Err(ConsoleError::NotFound);
    }
    let decision: Option<crate::payments::Decision> = payment
        .decision
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    Ok(layout(
        "Payment",
        Some(&staff),
        html! {
            dl class="facts" {
                dt { "Id" } dd { code { (payment.id.as_str()) } }
                dt { "Status" } dd id="status" class=(format!("status {}", payment.status)) { (payment.status.as_str()) }
                dt { "Amount" } dd { (amount(payment.amount)) " USDC" }
                dt { "To" } dd { code { (payment.to_address.to_string()) } }
                dt { "Agent" } dd { (payment.agent_id.as_ref().map(|a| a.to_string()).unwrap_or_default()) }
                dt { "Memo" } dd { (payment.memo.clone().unwrap_or_default()) }
                dt { "Transaction" } dd { code { (payment.tx_hash.clone().unwrap_or_default()) } }
                dt { "Block" } dd { (payment.block_number.map(|n| n.to_string()).unwrap_or_default()) " " code { (payment.block_hash.clone().unwrap_or_default()) } }
                dt { "Confirmations" } dd { (state.payments.confirmations_of(&payment)) }
                @if let Some(reason) = &payment.failure_reason { dt { "Failure" } dd { (reason) } }
            }
            @if let Some(decision) = &decision {
                h2 { "Decision: " (format!("{:?}", decision.outcome).to_lowercase()) " (" (decision.rule) ")" }
                ul class="checks" {
                    @for check in &decision.checks {
                        li class=(if check.passed { "pass" } else { "fail" }) { (check.rule) ": " (check.detail) }
                    }
                }
            }
            p { a href="/console/approvals" { "← Approvals" } }
        },
    ))
}

#[derive(Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    note: Option<String>,
}

fn note(form: &NoteForm) -> Option<&str> {
    form.note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

pub async fn approve(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Result<Response, ConsoleError> {
    staff.check_csrf(&form.csrf)?;
    staff.require(&[Role::Approver])?;
    state
        .payments
        .approve(&staff.principal, &id, note(&form))
        .await?;
    Ok(Redirect::to(&format!("/console/payments/{id}")).into_response())
}

pub async fn reject(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Result<Response, ConsoleError> {
    staff.check_csrf(&form.csrf)?;
    staff.require(&[Role::Approver])?;
    state
        .payments
        .reject(&staff.principal, &id, note(&form))
        .await?;
    Ok(Redirect::to("/console/approvals").into_response())
}

#[derive(Deserialize, Default)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// `[from, to)` in milliseconds from `YYYY-MM-DD` days (default: the last 14 days).
fn range(range: &Range, now: i64) -> Result<(i64, i64, String, String), ConsoleError> {
    let day = |text: &str, field: &str| {
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(|d| {
                d.and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_utc()
                    .timestamp_millis()
            })
            .map_err(|_| ConsoleError::Refused(format!("{field}: a day such as 2026-11-01")))
    };
    const DAY: i64 = 24 * 60 * 60 * 1000;
    let to = match range.to.as_deref().filter(|t| !t.is_empty()) {
        Some(text) => day(text, "to")? + DAY,
        None => (now / DAY + 1) * DAY,
    };
    let from = match range.from.as_deref().filter(|t| !t.is_empty()) {
        Some(text) => day(text, "from")?,
        None => to - 14 * DAY,
    };
    if from >= to || to - from > 366 * DAY {
        return Err(ConsoleError::Refused(
            "the range must be 1 to 366 days, from before to".into(),
        ));
    }
    let show = |ms: i64| crate::domain::format_time(ms)[..10].to_string();
    Ok((from, to, show(from), show(to - DAY)))
}

struct SpendFigures {
    /// (day, agent) -> micro-USDC
    per_day: BTreeMap<(String, String), i64>,
    by_agent: BTreeMap<String, i64>,
    by_recipient: BTreeMap<String, i64>,
    total: i64,
}

async fn figures(state: &AppState, from: i64, to: i64) -> Result<SpendFigures, ConsoleError> {
    let (total, _, rows) = reports::spend(state.reader.pool(), None, Some(from), Some(to)).await?;
    let mut figures = SpendFigures {
        per_day: BTreeMap::new(),
        by_agent: BTreeMap::new(),
        by_recipient: BTreeMap::new(),
        total,
    };
    for row in rows {
        let agent = row.agent_id.unwrap_or_default();
        let day = crate::domain::format_time(row.created_at)[..10].to_string();
        *figures.per_day.entry((day, agent.clone())).or_default() += row.amount;
        *figures.by_agent.entry(agent).or_default() += row.amount;
        *figures.by_recipient.entry(row.to_address).or_default() += row.amount;
    }
    Ok(figures)
}

/// A grouped bar chart of spend per agent per day, drawn on the server.
fn chart(figures: &SpendFigures, from: i64, to: i64) -> Markup {
    const COLORS: [&str; 6] = [
        "#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2",
    ];
    const DAY: i64 = 24 * 60 * 60 * 1000;
    // Every day of the range, spent on or not.
    let all_days: Vec<String> = (0..(to - from) / DAY)
        .map(|i| crate::domain::format_time(from + i * DAY)[..10].to_string())
        .collect();
    let days: Vec<&String> = all_days.iter().collect();
    let agents: Vec<&String> = figures.by_agent.keys().collect();
    let max = figures.per_day.values().copied().max().unwrap_or(1).max(1) as f64;
    let (width, height, pad) = (640.0, 220.0, 24.0);
    let slot = (width - 2.0 * pad) / days.len().max(1) as f64;
    let bar = (slot * 0.8 / agents.len().max(1) as f64).clamp(1.0, 40.0);
    html! {
        svg class="chart" viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="Spend per agent per day" {
            line x1=(pad) y1=(height - pad) x2=(width - pad) y2=(height - pad) stroke="#999" {}
            @for (i, day) in days.iter().enumerate() {
                @for (j, agent) in agents.iter().enumerate() {
                    @let value = figures.per_day.get(&((*day).clone(), (*agent).clone())).copied().unwrap_or(0);
                    @let h = (value as f64 / max) * (height - 2.0 * pad);
                    @if value > 0 {
                        rect x=(format!("{:.1}", pad + i as f64 * slot + j as f64 * bar)) y=(format!("{:.1}", height - pad - h))
                            width=(format!("{:.1}", bar)) height=(format!("{:.1}", h)) fill=(COLORS[j % COLORS.len()]) {
                            title { (day) " · " (agent) ": " (amount(value)) " USDC" }
                        }
                    }
                }
                text x=(format!("{:.1}", pad + i as f64 * slot)) y=(height - 6.0) font-size="9" { (&day[5..]) }
            }
        }
        ul class="legend" {
            @for (j, agent) in agents.iter().enumerate() {
                li { span class=(format!("swatch c{}", j % COLORS.len())) {} (agent) }
            }
        }
    }
}

/// Spend per agent per day, totals by agent and by recipient (auditors, treasury, admins).
pub async fn spend(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Range>,
) -> Result<Markup, ConsoleError> {
    staff.require(&[Role::Auditor, Role::Treasury])?;
    let (from, to, from_day, to_day) = range(&query, state.payments.now())?;
    let figures = figures(&state, from, to).await?;
    Ok(layout(
        "Spend",
        Some(&staff),
        html! {
            form method="get" action="/console/spend" class="range" {
                label { "From " input type="date" name="from" value=(from_day); }
                label { "To " input type="date" name="to" value=(to_day); }
                button type="submit" { "Show" }
                a href=(format!("/console/spend.csv?from={from_day}&to={to_day}")) { "Download CSV" }
            }
            p { "Confirmed agent payments: " strong id="total" { (amount(figures.total)) " USDC" } }
            (chart(&figures, from, to))
            h2 { "By agent" }
            table { thead { tr { th { "Agent" } th { "USDC" } } }
                tbody { @for (agent, sum) in &figures.by_agent { tr { td data-label="Agent" { (agent) } td data-label="USDC" class="num" { (amount(*sum)) } } } } }
            h2 { "By recipient" }
            table { thead { tr { th { "Recipient" } th { "USDC" } } }
                tbody { @for (to, sum) in &figures.by_recipient { tr { td data-label="Recipient" { code { (to) } } td data-label="USDC" class="num" { (amount(*sum)) } } } } }
        },
    ))
}

/// The same numbers as CSV: one row per day and agent.
pub async fn spend_csv(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<Range>,
) -> Result<Response, ConsoleError> {
    staff.require(&[Role::Auditor, Role::Treasury])?;
    let (from, to, from_day, to_day) = range(&query, state.payments.now())?;
    let figures = figures(&state, from, to).await?;
    let mut csv = String::from("day,agent_id,usdc\n");
    for ((day, agent), sum) in &figures.per_day {
        csv.push_str(&format!("{day},{agent},{}\n", amount(*sum)));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"bursar-spend-{from_day}-{to_day}.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

/// Alarms, failed webhooks, the reconciliation and the audit chain (auditors, admins).
pub async fn alarms(State(state): State<AppState>, staff: Staff) -> Result<Markup, ConsoleError> {
    staff.require(&[Role::Auditor])?;
    let alarms = audit::alarms(state.reader.pool(), 100).await?;
    let failed = webhooks::failed_deliveries(state.reader.pool(), 50).await?;
    let reconciliation = state.payments.reconciliation(None, None).await.ok();
    let verified = state.payments.verify_audit().await?;
    let verified = serde_json::to_value(&verified).unwrap_or_default();
    Ok(layout(
        "Alarms and reconciliation",
        Some(&staff),
        html! {
            h2 { "Audit chain" }
            p id="audit" {
                @if verified["ok"] == true { span class="pass" { "verified" } } @else { span class="fail" { "BROKEN" } }
                " · " (verified["events"]) " events · head " code { (verified["head"].as_str().unwrap_or_default()) }
            }
            h2 { "Reconciliation (latest blocks)" }
            @if let Some(report) = &reconciliation {
                p id="reconciliation" { (report.matched) " transfers matched, " (report.discrepancies.len()) " discrepancies, blocks " (report.from_block) "–" (report.to_block) }
                @if !report.discrepancies.is_empty() {
                    ul { @for d in &report.discrepancies { li class="fail" { (d["kind"].as_str().unwrap_or_default()) " " code { (d["tx_hash"].as_str().unwrap_or_default()) } } } }
                }
            } @else { p class="hint" { "The node did not answer; try again." } }
            h2 { "Alarms" }
            table id="alarms" { thead { tr { th { "When" } th { "Kind" } th { "Detail" } } }
                tbody {
                    @for event in &alarms {
                        tr { td data-label="When" { (crate::domain::format_time(event.at)) } td data-label="Kind" class="fail" { (event.kind) }
                             td data-label="Detail" { code { (event.detail.chars().take(300).collect::<String>()) } } }
                    }
                    @if alarms.is_empty() { tr { td colspan="3" class="hint" { "No alarms." } } }
                } }
            h2 { "Failed webhooks" }
            ul { @for d in &failed { li { (d.event_type) " to " (d.endpoint_id) ": " (d.last_error.clone().unwrap_or_default()) } }
                 @if failed.is_empty() { li class="hint" { "None." } } }
        },
    ))
}

/// Agents with balances and status; freeze, unfreeze and fund; the treasury.
pub async fn agents(
    State(state): State<AppState>,
    staff: Staff,
    Query(paging): Query<Paging>,
) -> Result<Markup, ConsoleError> {
    staff.require(&[Role::Auditor, Role::Treasury])?;
    let page = Page {
        limit: PAGE,
        cursor: paging.cursor,
    };
    let rows = agents::list(state.reader.pool(), &page)
        .await
        .map_err(|_| ConsoleError::Refused("not a cursor this console gave".into()))?;
    let next = (rows.len() as u32 == PAGE)
        .then(|| {
            rows.last()
                .map(|a| payment_rows::cursor_of(a.created_at, a.id.as_str()))
        })
        .flatten();
    let views = state.payments.agent_views(rows).await?;
    let (treasury, usdc, eth) = state.payments.treasury_view().await?;
    let fund_key = crate::domain::new_id("console");
    Ok(layout(
        "Agents and treasury",
        Some(&staff),
        html! {
            p id="treasury" { "Treasury " code { (treasury.to_string()) } ": "
                (usdc.map(|a| a.to_string()).unwrap_or_else(|| "?".into())) " USDC, "
                (eth.map(|w| w.to_string()).unwrap_or_else(|| "?".into())) " ETH" }
        p id="gas-float" class="hint" {
            @let settings = state.payments.settings();
            @if settings.gas_float_min_wei == 0 { "Gas float: off." } @else {
                "Gas float: agent wallets below " (crate::domain::Wei::from_wei(settings.gas_float_min_wei).to_string())
                " ETH get " (crate::domain::Wei::from_wei(settings.gas_float_topup_wei).to_string()) " ETH from the treasury."
            }
        }
            table id="agents" {
                thead { tr { th { "Agent" } th { "Status" } th { "USDC" } th { "ETH" } th { "Spent 24h" } th { "Actions" } } }
                tbody {
                    @for view in &views {
                        @let id = view.agent.id.as_str();
                        tr {
                            td data-label="Agent" { (view.agent.name) br; code { (short(id)) } }
                            td data-label="Status" class=(format!("status {}", view.agent.status)) { (view.agent.status) }
                            td data-label="USDC" class="num" { (view.usdc.map(|a| a.to_string()).unwrap_or_default()) }
                            td data-label="ETH" class="num" { (view.eth_wei.map(|w| w.to_string()).unwrap_or_default()) }
                            td data-label="Spent 24h" class="num" { (view.spent_24h.to_string()) }
                            td data-label="Actions" {
                                @if staff.may(&[]) {
                                    @let action = if view.agent.status == "frozen" { "unfreeze" } else { "freeze" };
                                    form method="post" action=(format!("/console/agents/{id}/{action}")) {
                                        input type="hidden" name="csrf" value=(staff.csrf);
                                        label { input type="checkbox" name="confirm" value="yes" required; " confirm" }
                                        button type="submit" class=(action) { (action) }
                                    }
                                }
                                @if staff.may(&[Role::Treasury]) {
                                    form method="post" action=(format!("/console/agents/{id}/fund")) {
                                        input type="hidden" name="csrf" value=(staff.csrf);
                                        input type="hidden" name="key" value=(format!("{fund_key}-{id}"));
                                        input type="text" name="amount" placeholder="USDC" aria-label="USDC" required;
                                        input type="text" name="gas_eth" placeholder="ETH for gas" aria-label="ETH for gas";
                                        button type="submit" { "Fund" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(cursor) = next { p { a href=(format!("/console/agents?cursor={cursor}")) { "More →" } } }
        },
    ))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    confirm: Option<String>,
}

fn confirmed(form: &ConfirmForm, staff: &Staff) -> Result<(), ConsoleError> {
    staff.check_csrf(&form.csrf)?;
    staff.require(&[])?;
    if form.confirm.as_deref() != Some("yes") {
        return Err(ConsoleError::Refused("tick confirm to do this".into()));
    }
    Ok(())
}

pub async fn freeze(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    confirmed(&form, &staff)?;
    state
        .payments
        .freeze(&staff.principal, &AgentId::from_text(&id))
        .await?;
    Ok(Redirect::to("/console/agents").into_response())
}

pub async fn unfreeze(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    confirmed(&form, &staff)?;
    state
        .payments
        .unfreeze(&staff.principal, &AgentId::from_text(&id))
        .await?;
    Ok(Redirect::to("/console/agents").into_response())
}

#[derive(Deserialize)]
pub struct FundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    amount: String,
    gas_eth: Option<String>,
}

pub async fn fund(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(form): Form<FundForm>,
) -> Result<Response, ConsoleError> {
    staff.check_csrf(&form.csrf)?;
    staff.require(&[Role::Treasury])?;
    let amount = Amount::parse_positive(form.amount.trim())
        .map_err(|e| ConsoleError::Refused(format!("amount: {e}")))?;
    let gas = match form
        .gas_eth
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        Some(text) => Some(
            crate::domain::Wei::parse_ether(text)
                .map_err(|e| ConsoleError::Refused(format!("gas: {e}")))?,
        ),
        None => None,
    };
    let key = IdempotencyKey::parse(&form.key)
        .map_err(|_| ConsoleError::Refused("reload the page and try again".into()))?;
    state
        .payments
        .create_funding(
            &staff.principal,
            &key,
            &AgentId::from_text(&id),
            amount,
            gas,
        )
        .await?;
    Ok(Redirect::to("/console/agents").into_response())
}
