//! What happens to a payment between the agent's request and settlement: a human approves or
//! rejects it, the agent captures or voids a manual hold, an admin freezes the agent, or time
//! runs out. Each is one write transaction that checks the payment's current status, moves it
//! along a legal edge and appends the audit event that says who did it and why.

use super::{Payments, PaymentsError, Principal, Result};
use crate::domain::AuditKind;
use crate::domain::{AgentId, Amount, CaptureMode, PaymentId, PaymentStatus};
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::payments::{self as payment_rows, PaymentRow};
use crate::ledger::{Millis, Tx, agents, tokens};
use crate::policy::{Decision, Outcome};

/// Payments expired per table per pass, so one pass stays short.
const EXPIRE_BATCH: i64 = 500;

impl Payments {
    /// Loads a payment for `actor` inside `tx`: an agent may act only on its own (`NotFound`
    /// otherwise, so ids do not leak), and the payment must be in `expected`.
    async fn load_for(
        &self,
        tx: &mut Tx,
        actor: &Principal,
        id: &str,
        expected: PaymentStatus,
    ) -> Result<PaymentRow> {
        let payment = payment_rows::get(&mut **tx, id).await?;
        if let Principal::Agent { agent_id, .. } = actor
            && payment.agent_id.as_deref() != Some(agent_id.as_str())
        {
            return Err(PaymentsError::NotFound);
        }
        let status = payment.status()?;
        if status != expected {
            return Err(PaymentsError::Conflict(format!(
                "payment is {status}, not {expected}"
            )));
        }
        Ok(payment)
    }

    /// An approver (or admin) lets a `pending_approval` payment go: it is queued for settlement,
    /// or, for a manual-capture payment, becomes an `authorized` hold whose timeout starts now.
    /// The credential must still be usable and the hard policy rules are evaluated again, now:
    /// a human overrides the approval threshold or the confidence floor, never a cap that other
    /// payments have used up since the request.
    pub async fn approve(
        &self,
        actor: &Principal,
        id: &str,
        note: Option<&str>,
    ) -> Result<PaymentRow> {
        self.expire_stale().await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = self
            .load_for(&mut tx, actor, id, PaymentStatus::PendingApproval)
            .await?;
        let decision = self.recheck_for_approval(&mut tx, &payment, now).await?;
        if decision.outcome == Outcome::Deny {
            let check = decision.checks.iter().find(|c| !c.passed);
            audit::append(
                &mut tx,
                now,
                NewEvent {
                    agent_id: payment.agent_id.clone(),
                    credential_id: payment.credential_id.clone(),
                    payment_id: Some(payment.id.clone()),
                    actor: actor.actor(),
                    detail: serde_json::json!({"decision": decision}),
                    ..NewEvent::of(AuditKind::ApprovalRefusedByPolicy)
                },
            )
            .await?;
            tx.commit().await?;
            return Err(PaymentsError::PolicyDenied {
                rule: decision.rule.clone(),
                message: check.map_or_else(
                    || "denied by policy".into(),
                    |c| {
                        format!(
                            "denied by {} at approval time: the check \"{}\" failed",
                            c.rule, c.detail
                        )
                    },
                ),
            });
        }
        let next = if payment.capture == CaptureMode::Manual {
            payment_rows::set_held_since(&mut tx, id, now).await?;
            PaymentStatus::Authorized
        } else {
            payment_rows::set_committed(&mut tx, id, now).await?;
            PaymentStatus::Queued
        };
        transition(
            &mut tx,
            &payment,
            next,
            AuditKind::PaymentApproved,
            actor.actor(),
            serde_json::json!({"note": note, "status": next, "recheck": decision}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(payment_rows::get(self.ledger.pool(), id).await?)
    }

    /// The payment's policy decision evaluated again at approval time, against what its
    /// credential holds now (itself left out). A payment without a credential has no policy.
    async fn recheck_for_approval(
        &self,
        tx: &mut Tx,
        payment: &PaymentRow,
        now: Millis,
    ) -> Result<Decision> {
        let Some(credential_id) = &payment.credential_id else {
            return Ok(Decision {
                outcome: Outcome::Allow,
                rule: "policy".into(),
                checks: Vec::new(),
            });
        };
        let credential = tokens::get_credential(&mut **tx, credential_id).await?;
        self.check_credential(&credential).map_err(|_| {
            PaymentsError::Conflict("the payment's credential is revoked or expired".into())
        })?;
        let to = payment.to_address;
        let request = crate::policy::PaymentRequest {
            to,
            amount: Amount::from_sql(payment.amount),
            confidence: payment.confidence,
        };
        let scope = match &payment.scope_id {
            Some(id) => {
                let scope = crate::ledger::scopes::get(&mut **tx, id).await?;
                if scope.status != "open" || scope.expires_at.is_some_and(|at| at <= now) {
                    return Err(PaymentsError::Conflict(format!(
                        "the payment's scope {id} is no longer open"
                    )));
                }
                Some(scope)
            }
            None => None,
        };
        let judged = tx
            .run_sync(|s| {
                self.decide(
                    s,
                    &credential,
                    &request,
                    Some(&payment.id),
                    now,
                    scope.as_ref(),
                )
            })
            .await?;
        Ok(judged.decision)
    }

    /// An approver (or admin) refuses a `pending_approval` payment: it is cancelled.
    pub async fn reject(
        &self,
        actor: &Principal,
        id: &str,
        reason: Option<&str>,
    ) -> Result<PaymentRow> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = self
            .load_for(&mut tx, actor, id, PaymentStatus::PendingApproval)
            .await?;
        transition(
            &mut tx,
            &payment,
            PaymentStatus::Cancelled,
            AuditKind::PaymentRejected,
            actor.actor(),
            serde_json::json!({"reason": reason}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(payment_rows::get(self.ledger.pool(), id).await?)
    }

    /// Sends an `authorized` hold, for its whole amount or less (the rest of the hold is released).
    pub async fn capture(
        &self,
        actor: &Principal,
        id: &str,
        amount: Option<Amount>,
    ) -> Result<PaymentRow> {
        self.expire_stale().await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = self
            .load_for(&mut tx, actor, id, PaymentStatus::Authorized)
            .await?;
        if payment.protocol.is_some() {
            return Err(PaymentsError::Conflict(
                "an x402 payment is captured by the seller executing its authorization".into(),
            ));
        }
        if let Some(scope_id) = &payment.scope_id {
            let scope = crate::ledger::scopes::get(&mut *tx, scope_id).await?;
            if scope.status != "open" {
                return Err(PaymentsError::Conflict(format!(
                    "the payment's scope is {}: its holds can no longer be captured",
                    scope.status
                )));
            }
        }
        let authorized = Amount::from_sql(payment.amount);
        let captured = amount.unwrap_or(authorized);
        if captured > authorized {
            return Err(PaymentsError::Invalid {
                field: "amount".into(),
                message: format!("must not exceed the authorized {authorized}"),
            });
        }
        payment_rows::lower_amount(&mut tx, id, captured.to_sql(), now).await?;
        payment_rows::set_committed(&mut tx, id, now).await?;
        transition(&mut tx, &payment, PaymentStatus::Queued, AuditKind::PaymentCaptured, actor.actor(),
            serde_json::json!({"authorized": authorized.to_string(), "captured": captured.to_string()}), now).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(payment_rows::get(self.ledger.pool(), id).await?)
    }

    /// Releases an `authorized` hold without sending anything.
    pub async fn void(&self, actor: &Principal, id: &str) -> Result<PaymentRow> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = self
            .load_for(&mut tx, actor, id, PaymentStatus::Authorized)
            .await?;
        if payment.protocol.is_some()
            && crate::ledger::x402::get(&mut *tx, &payment.id)
                .await?
                .nonce
                .is_some()
        {
            return Err(PaymentsError::Conflict(
                "this x402 authorization is signed: its hold is released when it can no longer be used (validBefore)".into(),
            ));
        }
        transition(
            &mut tx,
            &payment,
            PaymentStatus::Cancelled,
            AuditKind::PaymentVoided,
            actor.actor(),
            serde_json::json!({"released": Amount::from_sql(payment.amount).to_string()}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(payment_rows::get(self.ledger.pool(), id).await?)
    }

    /// The kill switch. In one transaction: the agent becomes `frozen` (every credential of it is
    /// refused from the next request on, including requests already past authentication, which
    /// re-check the agent in their own write transaction) and every payment of it that no node has
    /// accepted a transaction for is cancelled, signed ones included: settlement fills their
    /// nonces (`settlement::replace::fill`) so they never execute and the wallet stays usable.
    pub async fn freeze(
        &self,
        actor: &Principal,
        agent_id: &AgentId,
    ) -> Result<(agents::AgentRow, Vec<PaymentId>)> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        agents::get(&mut *tx, agent_id).await?;
        agents::set_status(&mut tx, agent_id, "frozen", now).await?;
        let unbroadcast = payment_rows::unbroadcast_of_agent(&mut tx, agent_id).await?;
        let ids = cancel_all(&mut tx, &unbroadcast, "agent_frozen", &actor.actor(), now).await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                agent_id: Some(agent_id.into()),
                actor: actor.actor(),
                detail: serde_json::json!({"cancelled_payments": ids}),
                ..NewEvent::of(AuditKind::AgentFrozen)
            },
        )
        .await?;
        tx.commit().await?;
        Ok((agents::get(self.ledger.pool(), agent_id).await?, ids))
    }

    pub async fn unfreeze(
        &self,
        actor: &Principal,
        agent_id: &AgentId,
    ) -> Result<agents::AgentRow> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        agents::get(&mut *tx, agent_id).await?;
        if agents::set_status(&mut tx, agent_id, "active", now).await? {
            audit::append(
                &mut tx,
                now,
                NewEvent {
                    agent_id: Some(agent_id.into()),
                    actor: actor.actor(),
                    detail: serde_json::json!({}),
                    ..NewEvent::of(AuditKind::AgentUnfrozen)
                },
            )
            .await?;
        }
        tx.finish("an unfreeze of an agent that was not frozen")
            .await?;
        Ok(agents::get(self.ledger.pool(), agent_id).await?)
    }

    /// Expires approvals and holds that waited longer than configured, releasing their budget.
    /// Runs in every settlement pass and before every approve or capture; returns how many.
    pub async fn expire_stale(&self) -> Result<usize> {
        let now = self.now();
        let settings = self.settings();
        let mut tx = self.ledger.begin().await?;
        let mut expired = 0;
        for (status, timeout_ms) in [
            (PaymentStatus::PendingApproval, settings.approval_timeout_ms),
            (PaymentStatus::Authorized, settings.hold_timeout_ms),
        ] {
            for payment in
                payment_rows::stale(&mut tx, status, now - timeout_ms, EXPIRE_BATCH).await?
            {
                transition(
                    &mut tx,
                    &payment,
                    PaymentStatus::Expired,
                    AuditKind::PaymentExpired,
                    "system".into(),
                    serde_json::json!({"was": status, "timeout_ms": timeout_ms}),
                    now,
                )
                .await?;
                expired += 1;
            }
        }
        expired += self.expire_scopes(&mut tx, now).await?;
        let orphaned =
            payment_rows::live_holds_of_expired_credentials(&mut tx, now, EXPIRE_BATCH).await?;
        expired += cancel_all(&mut tx, &orphaned, "credential_expired", "system", now)
            .await?
            .len();
        tx.finish("an expiry pass that found nothing to expire")
            .await?;
        Ok(expired)
    }
}

/// Cancels `payments` (each in a status that may become `cancelled`) with `reason` as their
/// `failure_reason`, releasing their budget; returns their ids.
pub(super) async fn cancel_all(
    tx: &mut Tx,
    payments: &[PaymentRow],
    reason: &str,
    actor: &str,
    now: Millis,
) -> Result<Vec<PaymentId>> {
    for payment in payments {
        tx.run_sync(|s| payment_rows::set_failure_reason(s, &payment.id, reason))
            .await?;
        transition(
            tx,
            payment,
            PaymentStatus::Cancelled,
            AuditKind::PaymentCancelled,
            actor.to_string(),
            serde_json::json!({"reason": reason}),
            now,
        )
        .await?;
    }
    Ok(payments.iter().map(|p| p.id.clone()).collect())
}

/// Moves `payment` along one legal edge and appends the audit event that explains it.
pub(super) async fn transition(
    tx: &mut Tx,
    payment: &PaymentRow,
    to: PaymentStatus,
    kind: AuditKind,
    actor: String,
    detail: serde_json::Value,
    now: Millis,
) -> Result<()> {
    tx.run_sync(|s| payment_rows::set_status(s, &payment.id, payment.status()?, to, now))
        .await?;
    audit::append(
        tx,
        now,
        NewEvent {
            agent_id: payment.agent_id.clone(),
            credential_id: payment.credential_id.clone(),
            payment_id: Some(payment.id.clone()),
            actor,
            detail,
            ..NewEvent::of(kind)
        },
    )
    .await?;
    Ok(())
}
