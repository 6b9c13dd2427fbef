//! Payment creation: in one write transaction, idempotency, the credential and agent re-checked,
//! recipient screening, the policy decision, the payment row (its amount is the budget hold) and
//! the audit event that records the attempt before anything is signed.

use super::*;
use crate::domain::AuditKind;
use crate::ledger::SyncTx;

impl Payments {
    /// Creates an agent's payment. In one write transaction: the idempotency lookup, a re-check
    /// of the credential and agent, the spend snapshot, the policy decision, the payment row (its
    /// amount is the budget hold) and the audit event recording the attempt and the decision.
    pub async fn create_payment(
        &self,
        agent_id: &AgentId,
        credential_id: &CredentialId,
        key: &IdempotencyKey,
        request: &NewPayment,
    ) -> Result<Created> {
        let hash = request_hash(request);
        let now = self.now();
        // The write runs in the ledger's batches (possibly on the batch runner's task), so it
        // owns what it reads.
        let this = self.clone();
        let (agent_id, credential_id) = (agent_id.clone(), credential_id.clone());
        let (key, request) = (key.clone(), request.clone());
        let accepted = self
            .ledger
            .write_batched(move |tx| -> Result<Accepted> {
                let (agent_id, credential_id, key, request) =
                    (&agent_id, &credential_id, &key, &request);
                if let Some((id, stored_hash)) =
                    payment_rows::idempotent_in(tx, credential_id, key.as_str())?
                {
                    return match stored_hash == hash {
                        true => Ok(Accepted::Replay(id)),
                        false => Err(PaymentsError::IdempotencyKeyReused),
                    };
                }
                let admitted = this.admit(tx, agent_id, credential_id, request, now)?;
                let (agent, decision) = (&admitted.agent, &admitted.decision);
                let status = match (decision.outcome, request.capture) {
                    (Outcome::Deny, _) => PaymentStatus::Rejected,
                    (Outcome::RequireApproval, _) => PaymentStatus::PendingApproval,
                    (Outcome::Allow, Capture::Manual) => PaymentStatus::Authorized,
                    (Outcome::Allow, Capture::Automatic) => PaymentStatus::Queued,
                };
                let mut row = this.payment_row(
                    PaymentKind::Payment,
                    Some(agent),
                    Some(credential_id),
                    &agent.wallet_id,
                    request,
                    status,
                    Some(decision),
                    // Keys are scoped to the credential: another credential of the same agent can
                    // neither replay nor read a payment made under this one's policy.
                    credential_id,
                    key,
                    hash,
                    now,
                );
                admitted.mark(&mut row);
                payment_rows::insert(tx, &row)?;
                audit::append_in(
                    tx,
                    now,
                    NewEvent {
                        agent_id: Some(agent_id.into()),
                        credential_id: Some(credential_id.into()),
                        payment_id: Some(row.id.clone()),
                        actor: format!("agent:{credential_id}"),
                        detail: serde_json::json!({
                            "to": request.to.to_string(),
                            "amount": request.amount.to_string(),
                            "status": status,
                            "decision": decision,
                            "scope_id": row.scope_id,
                            "phase": row.scope_phase,
                            "tier": row.scope_tier,
                            "credential_tier": row.credential_tier,
                        }),
                        ..NewEvent::of(AuditKind::PaymentDecided)
                    },
                )?;
                Ok(Accepted::New(Box::new(row)))
            })
            .await?;
        match accepted {
            Accepted::Replay(id) => Ok(Created {
                payment: payment_rows::get(self.ledger.pool(), &id).await?,
                replayed: true,
            }),
            Accepted::New(row) => {
                if row.status == PaymentStatus::Queued {
                    self.wake.notify_one();
                }
                Ok(Created {
                    payment: *row,
                    replayed: false,
                })
            }
        }
    }

    /// The checks every new agent payment passes in its write transaction, in order: the
    /// credential is usable, the agent is active, the recipient passes screening, the scope it
    /// names is open and the credential's, and the policy (with the scope's rules) decides.
    pub(super) fn admit(
        &self,
        tx: &mut SyncTx<'_>,
        agent_id: &AgentId,
        credential_id: &CredentialId,
        request: &NewPayment,
        now: Millis,
    ) -> Result<Admitted> {
        let credential = tokens::credential_in(tx, credential_id)?;
        self.check_credential(&credential)?;
        let agent = agents::get_in(tx, agent_id)?;
        if agent.status != "active" {
            return Err(PaymentsError::AgentFrozen);
        }
        self.screen_recipient(tx, agent.address, request.to)?;
        let scope = match &request.scope_id {
            Some(id) => Some(self.scope_for_payment(tx, id, credential_id, now)?),
            None => None,
        };
        let judged = self.decide(
            tx,
            &credential,
            &policy::PaymentRequest {
                to: request.to,
                amount: request.amount,
                confidence: request.confidence,
            },
            None,
            now,
            scope.as_ref(),
        )?;
        Ok(Admitted {
            agent,
            scope,
            decision: judged.decision,
            credential_tier: judged.credential_tier,
            scope_tier: judged.scope_tier,
        })
    }

    /// The policy decision for `request` under the credential's current policy and what the
    /// credential holds now (leaving out `exclude`), read in the caller's write transaction so
    /// that the check is atomic with the write it guards.
    pub(super) fn decide(
        &self,
        tx: &mut SyncTx<'_>,
        credential: &CredentialRow,
        request: &policy::PaymentRequest,
        exclude: Option<&str>,
        now: Millis,
        scope: Option<&crate::ledger::scopes::ScopeRow>,
    ) -> Result<Judged> {
        let policy: Policy = serde_json::from_str(&credential.policy)
            .map_err(|_| LedgerError::Corrupt(format!("credential {} policy", credential.id)))?;
        // Only the figures the policy has a rule for are read.
        let figures = payment_rows::Figures {
            day: policy.daily_limit.is_some(),
            total: policy.total_limit.is_some(),
            minute: policy.max_payments_per_minute.is_some(),
        };
        let (day, total, minute) =
            payment_rows::spend_snapshot(tx, &credential.id, now, exclude, figures)?;
        let credential_tier = credential_tier(&policy, request.amount);
        let tier_held = match credential_tier {
            Some(tier) => payment_rows::tier_held(tx, &credential.id, tier, now, exclude)?,
            None => 0,
        };
        let snapshot = SpendSnapshot {
            held_last_24h: Amount::from_sql(day),
            held_total: Amount::from_sql(total),
            payments_last_minute: u32::try_from(minute).unwrap_or(u32::MAX),
            tier_held_24h: Amount::from_sql(tier_held),
        };
        let decision = policy::evaluate(&policy, request, &snapshot);
        let Some(scope) = scope else {
            return Ok(Judged {
                decision,
                credential_tier,
                scope_tier: None,
            });
        };
        let rules = super::scopes::rules_of(scope)?;
        let tier = policy::scope::tier_of(&rules.tiers, request.amount).map(|i| i as i64);
        let (held, in_phase, in_tier) =
            crate::ledger::scopes::snapshot(tx, &scope.id, &scope.phase, tier, now, exclude)?;
        let decision = policy::scope::evaluate_with_scope(
            decision,
            &rules,
            request,
            &policy::scope::ScopeSnapshot {
                held: Amount::from_sql(held),
                held_in_phase: Amount::from_sql(in_phase),
                tier_held_24h: Amount::from_sql(in_tier),
            },
        );
        Ok(Judged {
            decision,
            credential_tier,
            scope_tier: tier,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn payment_row(
        &self,
        kind: PaymentKind,
        agent: Option<&agents::AgentRow>,
        credential_id: Option<&CredentialId>,
        from_wallet_id: &str,
        request: &NewPayment,
        status: PaymentStatus,
        decision: Option<&Decision>,
        scope: &str,
        key: &IdempotencyKey,
        request_hash: String,
        now: Millis,
    ) -> PaymentRow {
        PaymentRow {
            id: PaymentId::generate(),
            kind,
            agent_id: agent.map(|a| a.id.clone()),
            credential_id: credential_id.cloned(),
            from_wallet_id: from_wallet_id.into(),
            to_address: request.to,
            amount: request.amount.to_sql(),
            gas_wei: None,
            currency: request.currency.clone(),
            memo: request.memo.clone(),
            reference: request.reference.clone(),
            metadata: request.metadata.as_ref().map(|m| m.to_string()),
            confidence: request.confidence,
            capture: request.capture,
            status,
            decision: decision.map(|d| serde_json::to_string(d).expect("decisions serialize")),
            failure_reason: None,
            tx_hash: None,
            nonce: None,
            block_number: None,
            block_hash: None,
            confirmations: 0,
            waiting_reason: None,
            orphaned_blocks: None,
            committed_at: (status == PaymentStatus::Queued).then_some(now),
            held_since: None,
            idempotency_scope: scope.into(),
            idempotency_key: key.as_str().into(),
            request_hash,
            created_at: now,
            updated_at: now,
            protocol: None,
            scope_id: None,
            scope_phase: None,
            scope_tier: None,
            credential_tier: None,
        }
    }

    pub async fn get_payment(&self, id: &str) -> Result<PaymentRow> {
        Ok(payment_rows::get(self.ledger.pool(), id).await?)
    }
}

/// What accepting an intent came to: a new payment, or the stored one its key names.
enum Accepted {
    New(Box<PaymentRow>),
    Replay(PaymentId),
}

/// A decision and the tiers it counted the payment in (to be recorded on the payment).
pub(super) struct Judged {
    pub decision: Decision,
    pub credential_tier: Option<i64>,
    pub scope_tier: Option<i64>,
}

/// What `admit` found and decided.
pub(super) struct Admitted {
    pub agent: agents::AgentRow,
    pub scope: Option<crate::ledger::scopes::ScopeRow>,
    pub decision: Decision,
    pub credential_tier: Option<i64>,
    pub scope_tier: Option<i64>,
}

impl Admitted {
    /// Records on a new payment row the tiers and the scope phase it was decided under, as the
    /// decision counted them (so later counters read what was checked).
    pub(super) fn mark(&self, row: &mut PaymentRow) {
        row.credential_tier = self.credential_tier;
        if let Some(scope) = &self.scope {
            row.scope_id = Some(scope.id.clone());
            row.scope_phase = Some(scope.phase.clone());
            row.scope_tier = self.scope_tier;
        }
    }
}

/// The tier of the credential's policy a payment of `amount` falls in, if it has tiers.
fn credential_tier(policy: &Policy, amount: Amount) -> Option<i64> {
    let tiers = policy.tiers.as_ref()?;
    policy::scope::tier_of(tiers, amount).map(|i| i as i64)
}

/// Same key: the same request replays the stored payment; a different one is a conflict.
pub(super) fn replay(existing: PaymentRow, hash: &str) -> Result<Created> {
    if existing.request_hash != hash {
        return Err(PaymentsError::IdempotencyKeyReused);
    }
    Ok(Created {
        payment: existing,
        replayed: true,
    })
}

/// What a credential may still spend now (the MCP `budget` tool): each limit of its policy with
/// what is held against it, and the largest single payment the hard limits allow right now.
#[derive(Debug, Serialize)]
pub struct Budget {
    pub max_per_payment: Option<String>,
    pub daily_limit: Option<String>,
    pub held_last_24h: String,
    pub daily_remaining: Option<String>,
    pub total_limit: Option<String>,
    pub held_total: String,
    pub total_remaining: Option<String>,
    pub require_approval_above: Option<String>,
    pub max_payments_per_minute: Option<u32>,
    pub payments_last_minute: u32,
    pub payments_left_this_minute: Option<u32>,
    pub min_confidence: Option<f64>,
    pub allowed_recipients: Option<Vec<String>>,
    /// The largest payment the caps and budgets allow now; null when nothing limits it.
    pub largest_payment_now: Option<String>,
}

impl Payments {
    pub async fn budget(&self, credential_id: &CredentialId) -> Result<Budget> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let credential = tokens::get_credential(&mut *tx, credential_id).await?;
        self.check_credential(&credential)?;
        let policy: Policy = serde_json::from_str(&credential.policy)
            .map_err(|_| LedgerError::Corrupt(format!("credential {} policy", credential.id)))?;
        let (day, total, minute) = tx
            .run_sync(|s| {
                payment_rows::spend_snapshot(
                    s,
                    &credential.id,
                    now,
                    None,
                    payment_rows::Figures::ALL,
                )
            })
            .await?;
        tx.finish("a budget read").await?;
        let held_day = Amount::from_sql(day);
        let held_total = Amount::from_sql(total);
        let remaining = |limit: Option<Amount>, held: Amount| {
            limit.map(|l| l.checked_sub(held).unwrap_or(Amount::from_micros(0)))
        };
        let daily_remaining = remaining(policy.daily_limit, held_day);
        let total_remaining = remaining(policy.total_limit, held_total);
        let minute = u32::try_from(minute).unwrap_or(u32::MAX);
        let largest = [policy.max_per_payment, daily_remaining, total_remaining]
            .into_iter()
            .flatten()
            .min();
        let text = |a: Option<Amount>| a.map(|a| a.to_string());
        Ok(Budget {
            max_per_payment: text(policy.max_per_payment),
            daily_limit: text(policy.daily_limit),
            held_last_24h: held_day.to_string(),
            daily_remaining: text(daily_remaining),
            total_limit: text(policy.total_limit),
            held_total: held_total.to_string(),
            total_remaining: text(total_remaining),
            require_approval_above: text(policy.require_approval_above),
            max_payments_per_minute: policy.max_payments_per_minute,
            payments_last_minute: minute,
            payments_left_this_minute: policy
                .max_payments_per_minute
                .map(|m| m.saturating_sub(minute)),
            min_confidence: policy.min_confidence,
            allowed_recipients: policy
                .allowed_recipients
                .map(|list| list.iter().map(ToString::to_string).collect()),
            largest_payment_now: text(largest),
        })
    }
}
