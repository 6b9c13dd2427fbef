//! Spending scopes: a budget per task inside a credential, phases that gate spending, tiers by
//! payment size, and compensation when the task fails. Every change is one write transaction
//! with its audit event (whose detail names the scope, so the trace and exports find it).

use super::approvals::cancel_all;
use super::*;
use crate::domain::AuditKind;
use crate::ledger::scopes::{self as scope_rows, ScopeRow};
use crate::ledger::webhooks as webhook_rows;
use crate::policy::scope::{PhaseLimits, ScopeRules, Tier, tiers_are_ordered};

/// Scopes expired per pass.
const EXPIRE_BATCH: i64 = 100;
/// The webhook a closing scope sends.
pub use crate::ledger::webhooks::SCOPE_CLOSED;

/// What a caller asks to open.
#[derive(Clone, Debug)]
pub struct NewScope {
    pub name: String,
    pub task_ref: Option<String>,
    pub budget: Amount,
    pub expires_at: Option<Millis>,
    pub allowed_recipients: Option<Vec<Address>>,
    /// In order; the scope moves forward through them only.
    pub phases: Vec<(String, PhaseLimits)>,
    pub initial_phase: Option<String>,
    pub phase_change_requires_approval: bool,
    pub tiers: Vec<Tier>,
}

/// A scope with what its payments hold and spent.
#[derive(Debug)]
pub struct ScopeView {
    pub scope: ScopeRow,
    pub held: Amount,
    pub spent: Amount,
    pub payments: Vec<PaymentRow>,
}

/// What closing a scope did.
#[derive(Debug)]
pub struct ScopeClosed {
    pub view: ScopeView,
    /// Holds and unsigned payments voided or cancelled by the close.
    pub released: Vec<PaymentId>,
    /// Payments whose money moved (or is moving) although the task failed.
    pub spent_without_delivery: Vec<PaymentId>,
}

fn invalid(field: &str, message: impl Into<String>) -> PaymentsError {
    PaymentsError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn corrupt(id: &str) -> PaymentsError {
    PaymentsError::Ledger(LedgerError::Corrupt(format!("scope {id}")))
}

/// The phases of a stored scope, in order.
pub fn phases_of(row: &ScopeRow) -> Result<Vec<(String, PhaseLimits)>> {
    serde_json::from_str(&row.phases).map_err(|_| corrupt(&row.id))
}

/// The rules a payment in `row` is decided under (its current phase).
pub fn rules_of(row: &ScopeRow) -> Result<ScopeRules> {
    let phases = phases_of(row)?;
    let phase_limits = phases
        .iter()
        .find(|(name, _)| *name == row.phase)
        .map(|(_, limits)| limits.clone())
        .ok_or_else(|| corrupt(&row.id))?;
    Ok(ScopeRules {
        budget: Amount::from_sql(row.budget),
        allowed_recipients: row
            .allowed_recipients
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|_| corrupt(&row.id))?,
        phase: row.phase.clone(),
        phase_limits,
        tiers: serde_json::from_str(&row.tiers).map_err(|_| corrupt(&row.id))?,
    })
}

impl Payments {
    /// Opens a scope under `credential_id` (the caller's own, or any for an admin). A scope
    /// never widens its credential's policy: a field that would is `400` naming it.
    pub async fn open_scope(
        &self,
        actor: &Principal,
        credential_id: &CredentialId,
        new: &NewScope,
    ) -> Result<ScopeRow> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let credential = tokens::get_credential(&mut *tx, credential_id)
            .await
            .map_err(|e| match e {
                LedgerError::NotFound => invalid("credential_id", "no such credential"),
                other => other.into(),
            })?;
        self.check_credential(&credential)
            .map_err(|_| invalid("credential_id", "the credential is revoked or expired"))?;
        let policy: Policy = serde_json::from_str(&credential.policy)
            .map_err(|_| LedgerError::Corrupt(format!("credential {} policy", credential.id)))?;
        check_narrows(&policy, credential.expires_at, new, now)?;
        let agent_id = credential.agent_id.clone();
        let initial = new
            .initial_phase
            .clone()
            .unwrap_or_else(|| new.phases[0].0.clone());
        let row = ScopeRow {
            id: new_id("scp"),
            credential_id: credential_id.as_str().to_string(),
            agent_id: agent_id.as_str().to_string(),
            name: new.name.clone(),
            task_ref: new.task_ref.clone(),
            budget: new.budget.to_sql(),
            expires_at: new.expires_at,
            allowed_recipients: new
                .allowed_recipients
                .as_ref()
                .map(|list| serde_json::to_string(list).expect("addresses serialize")),
            phases: serde_json::to_string(&new.phases).expect("phases serialize"),
            phase: initial,
            phase_change_requires_approval: new.phase_change_requires_approval,
            pending_phase: None,
            tiers: serde_json::to_string(&new.tiers).expect("tiers serialize"),
            status: "open".into(),
            close_reason: None,
            created_at: now,
            updated_at: now,
            closed_at: None,
        };
        scope_rows::insert(&mut tx, &row).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                agent_id: Some(agent_id.clone()),
                credential_id: Some(credential_id.clone()),
                actor: actor.actor(),
                detail: serde_json::json!({
                    "scope_id": row.id, "name": row.name, "task_ref": row.task_ref,
                    "budget": new.budget.to_string(), "phase": row.phase,
                    "phases": new.phases, "tiers": new.tiers,
                    "allowed_recipients": new.allowed_recipients,
                    "phase_change_requires_approval": new.phase_change_requires_approval,
                    "expires_at": new.expires_at.map(crate::domain::format_time),
                }),
                ..NewEvent::of(AuditKind::ScopeOpened)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(scope_rows::get(self.ledger.pool(), &row.id).await?)
    }

    /// A scope as `actor` may see it: an agent only its own credential's (others are `404`).
    pub async fn scope(&self, actor: &Principal, id: &str) -> Result<ScopeView> {
        let scope = scope_rows::get(self.ledger.pool(), id).await?;
        visible(actor, &scope)?;
        self.view(scope).await
    }

    async fn view(&self, scope: ScopeRow) -> Result<ScopeView> {
        let (held, spent) = scope_rows::totals(self.ledger.pool(), &scope.id).await?;
        let payments = scope_rows::payments(self.ledger.pool(), &scope.id).await?;
        Ok(ScopeView {
            scope,
            held: Amount::from_sql(held),
            spent: Amount::from_sql(spent),
            payments,
        })
    }

    /// The scope's audit trail in order, for `actor`.
    pub async fn scope_trace(
        &self,
        actor: &Principal,
        id: &str,
    ) -> Result<Vec<crate::ledger::audit::AuditEvent>> {
        let scope = scope_rows::get(self.ledger.pool(), id).await?;
        visible(actor, &scope)?;
        Ok(scope_rows::trace(self.ledger.pool(), id).await?)
    }

    /// Moves a scope forward to `phase`. When the scope requires it, the agent's request waits
    /// for an approver (or admin), whose own call to this use case is the approval.
    pub async fn set_scope_phase(
        &self,
        actor: &Principal,
        id: &str,
        phase: &str,
        reason: Option<&str>,
    ) -> Result<(ScopeRow, bool)> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let scope = scope_rows::get(&mut *tx, id).await?;
        visible(actor, &scope)?;
        if matches!(actor, Principal::Staff { role, .. } if *role != Role::Admin && *role != Role::Approver)
        {
            return Err(PaymentsError::NotFound);
        }
        ensure_open(&scope, now)?;
        let phases = phases_of(&scope)?;
        let position = |name: &str| phases.iter().position(|(n, _)| n == name);
        let Some(target) = position(phase) else {
            return Err(invalid(
                "phase",
                format!(
                    "not a phase of this scope ({})",
                    phases
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let current = position(&scope.phase).ok_or_else(|| corrupt(&scope.id))?;
        if target <= current {
            return Err(PaymentsError::Conflict(format!(
                "phases move forward only: the scope is in {}",
                scope.phase
            )));
        }
        let needs_human =
            scope.phase_change_requires_approval && matches!(actor, Principal::Agent { .. });
        let detail = serde_json::json!({
            "scope_id": scope.id, "from": scope.phase, "to": phase, "reason": reason,
        });
        let base = NewEvent {
            agent_id: Some(AgentId::from_text(&scope.agent_id)),
            credential_id: Some(CredentialId::from_text(&scope.credential_id)),
            actor: actor.actor(),
            detail,
            ..NewEvent::of(AuditKind::ScopePhaseRequested)
        };
        if needs_human {
            scope_rows::set_pending_phase(&mut tx, id, phase, now).await?;
            audit::append(&mut tx, now, base).await?;
        } else {
            scope_rows::set_phase(&mut tx, id, &scope.phase, phase, now).await?;
            let mut event = base;
            event.kind = AuditKind::ScopePhaseChanged;
            event.detail["approved_by"] = match actor {
                Principal::Staff { .. } if scope.phase_change_requires_approval => {
                    serde_json::json!(actor.actor())
                }
                _ => serde_json::Value::Null,
            };
            event.detail["requested"] = serde_json::json!(scope.pending_phase);
            audit::append(&mut tx, now, event).await?;
        }
        tx.commit().await?;
        Ok((scope_rows::get(self.ledger.pool(), id).await?, needs_human))
    }

    /// Closes a scope. On `failed`, in the same transaction: every hold and every payment not yet
    /// signed is voided or cancelled, and what already moved is listed as spent without delivery.
    /// On `succeeded`, holds that can no longer be captured are released. Either way a
    /// `scope.closed` webhook carries the outcome.
    pub async fn close_scope(
        &self,
        actor: &Principal,
        id: &str,
        failed: bool,
        reason: Option<&str>,
    ) -> Result<ScopeClosed> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let scope = scope_rows::get(&mut *tx, id).await?;
        visible(actor, &scope)?;
        if matches!(actor, Principal::Staff { role, .. } if *role != Role::Admin) {
            return Err(PaymentsError::NotFound);
        }
        if scope.status != "open" {
            return Err(PaymentsError::Conflict(format!(
                "scope is {}, not open",
                scope.status
            )));
        }
        let status = if failed {
            "closed_failed"
        } else {
            "closed_succeeded"
        };
        let (released, spent) =
            compensate(&mut tx, &scope, failed, status, &actor.actor(), reason, now).await?;
        tx.commit().await?;
        let view = self
            .view(scope_rows::get(self.ledger.pool(), id).await?)
            .await?;
        Ok(ScopeClosed {
            view,
            released,
            spent_without_delivery: spent,
        })
    }

    /// The open scope a payment names, for its credential; `expires_at` passed closes it first.
    pub(super) fn scope_for_payment(
        &self,
        tx: &mut crate::ledger::SyncTx<'_>,
        scope_id: &str,
        credential_id: &CredentialId,
        now: Millis,
    ) -> Result<ScopeRow> {
        let scope = scope_rows::get_in(tx, scope_id).map_err(|e| match e {
            LedgerError::NotFound => invalid("scope_id", "no such scope for this credential"),
            other => other.into(),
        })?;
        if scope.credential_id != credential_id.as_str() {
            return Err(invalid("scope_id", "no such scope for this credential"));
        }
        ensure_open(&scope, now)?;
        Ok(scope)
    }

    /// Closes scopes whose time ran out, as failed (run with every expiry pass).
    pub(super) async fn expire_scopes(
        &self,
        tx: &mut crate::ledger::Tx,
        now: Millis,
    ) -> Result<usize> {
        let expired = scope_rows::expired(tx, now, EXPIRE_BATCH).await?;
        for scope in &expired {
            compensate(tx, scope, true, "expired", "system", Some("expired"), now).await?;
        }
        Ok(expired.len())
    }
}

/// Releases what closing `scope` releases and closes it, with the audit event and the webhook.
async fn compensate(
    tx: &mut crate::ledger::Tx,
    scope: &ScopeRow,
    failed: bool,
    status: &str,
    actor: &str,
    reason: Option<&str>,
    now: Millis,
) -> Result<(Vec<PaymentId>, Vec<PaymentId>)> {
    let payments = scope_rows::payments(&mut **tx, &scope.id).await?;
    let mut release = Vec::new();
    let mut spent = Vec::new();
    let mut in_flight = Vec::new();
    for payment in payments {
        let signed_x402 = payment.protocol.is_some()
            && crate::ledger::x402::get(&mut **tx, &payment.id)
                .await?
                .nonce
                .is_some();
        let (usdc_leg, _) = payment_rows::missing_legs(&mut **tx, &payment).await?;
        match payment.status {
            PaymentStatus::Authorized if !signed_x402 => release.push(payment),
            PaymentStatus::PendingApproval if failed => release.push(payment),
            PaymentStatus::Queued if failed && usdc_leg => release.push(payment),
            PaymentStatus::Submitted | PaymentStatus::Included | PaymentStatus::Confirmed => {
                spent.push(payment.id.clone())
            }
            PaymentStatus::Queued | PaymentStatus::Authorized | PaymentStatus::PendingApproval => {
                in_flight.push(payment.id.clone())
            }
            _ => {}
        }
    }
    let why = if status == "expired" {
        "scope_expired"
    } else if failed {
        "scope_failed"
    } else {
        "scope_closed"
    };
    let released = cancel_all(tx, &release, why, actor, now).await?;
    scope_rows::close(tx, &scope.id, status, reason, now).await?;
    let (held, spent_total) = scope_rows::totals(&mut **tx, &scope.id).await?;
    let detail = serde_json::json!({
        "scope_id": scope.id, "status": status, "outcome": if failed { "failed" } else { "succeeded" },
        "reason": reason, "released": released, "spent_without_delivery": if failed { spent.clone() } else { Vec::new() },
        "paid": spent, "in_flight": in_flight,
        "held": Amount::from_sql(held).to_string(), "spent": Amount::from_sql(spent_total).to_string(),
    });
    audit::append(
        tx,
        now,
        NewEvent {
            agent_id: Some(AgentId::from_text(&scope.agent_id)),
            credential_id: Some(CredentialId::from_text(&scope.credential_id)),
            actor: actor.to_string(),
            detail: detail.clone(),
            ..NewEvent::of(if status == "expired" {
                AuditKind::ScopeExpired
            } else {
                AuditKind::ScopeClosed
            })
        },
    )
    .await?;
    webhook_rows::enqueue(tx, SCOPE_CLOSED, &detail, now).await?;
    Ok((released, if failed { spent } else { Vec::new() }))
}

fn visible(actor: &Principal, scope: &ScopeRow) -> Result<()> {
    match actor {
        Principal::Agent { credential_id, .. } if credential_id.as_str() == scope.credential_id => {
            Ok(())
        }
        Principal::Agent { .. } => Err(PaymentsError::NotFound),
        Principal::Staff {
            role: Role::Admin | Role::Auditor | Role::Approver,
            ..
        } => Ok(()),
        Principal::Staff { .. } => Err(PaymentsError::NotFound),
    }
}

fn ensure_open(scope: &ScopeRow, now: Millis) -> Result<()> {
    if scope.status != "open" {
        return Err(PaymentsError::Conflict(format!(
            "scope {} is {}",
            scope.id, scope.status
        )));
    }
    if scope.expires_at.is_some_and(|at| at <= now) {
        return Err(PaymentsError::Conflict(format!(
            "scope {} has expired",
            scope.id
        )));
    }
    Ok(())
}

/// A scope may only narrow its credential: each field that would widen it is refused by name.
fn check_narrows(
    policy: &Policy,
    credential_expires_at: Option<Millis>,
    new: &NewScope,
    now: Millis,
) -> Result<()> {
    if new.name.trim().is_empty() || new.name.chars().count() > 200 {
        return Err(invalid("name", "must be 1 to 200 characters"));
    }
    if new.budget.micros() == 0 {
        return Err(invalid("budget", "must be more than 0"));
    }
    if let Some(total) = policy.total_limit
        && new.budget > total
    {
        return Err(invalid(
            "budget",
            format!(
                "{} exceeds the credential's total_limit {total}",
                new.budget
            ),
        ));
    }
    if let Some(at) = new.expires_at {
        if at <= now {
            return Err(invalid("expires_at", "must be in the future"));
        }
        if credential_expires_at.is_some_and(|limit| at > limit) {
            return Err(invalid(
                "expires_at",
                "must not be after the credential expires",
            ));
        }
    }
    if let (Some(scope), Some(credential)) = (&new.allowed_recipients, &policy.allowed_recipients)
        && let Some(outside) = scope.iter().find(|a| !credential.contains(a))
    {
        return Err(invalid(
            "allowed_recipients",
            format!("{outside} is not on the credential's allowlist"),
        ));
    }
    if new.phases.is_empty() {
        return Err(invalid("phases", "must name at least one phase"));
    }
    for (name, limits) in &new.phases {
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("phases", "phase names are 1 to 64 characters"));
        }
        if let (Some(limit), Some(credential)) = (limits.max_per_payment, policy.max_per_payment)
            && limit > credential
        {
            return Err(invalid(
                &format!("phases.{name}.max_per_payment"),
                format!("{limit} exceeds the credential's max_per_payment {credential}"),
            ));
        }
        if limits.budget.is_some_and(|b| b > new.budget) {
            return Err(invalid(
                &format!("phases.{name}.budget"),
                "must not exceed the scope's budget",
            ));
        }
    }
    if let Some(initial) = &new.initial_phase
        && !new.phases.iter().any(|(name, _)| name == initial)
    {
        return Err(invalid("initial_phase", "is not one of the phases"));
    }
    if !tiers_are_ordered(&new.tiers) {
        return Err(invalid(
            "tiers",
            "must be in increasing up_to, with at most one open-ended tier, last",
        ));
    }
    for (index, tier) in new.tiers.iter().enumerate() {
        if let (Some(limit), Some(credential)) = (tier.daily_limit, policy.daily_limit)
            && limit > credential
        {
            return Err(invalid(
                &format!("tiers[{index}].daily_limit"),
                format!("{limit} exceeds the credential's daily_limit {credential}"),
            ));
        }
    }
    Ok(())
}
