//! The treasury side: sweeping an agent's USDC back, keeping agent wallets in gas (the gas
//! float), and what the agent wallets hold in total.

use super::{Capture, NewPayment, create::replay, request_hash};
use super::{Created, Payments, PaymentsError, Principal, Result};
use crate::domain::AuditKind;
use crate::domain::{Address, AgentId, Amount, IdempotencyKey, PaymentKind, PaymentStatus, new_id};
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::payments as payment_rows;
use crate::ledger::payments::PaymentRow;
use crate::ledger::{LedgerError, agents, reports};
use alloy::primitives::U256;
use serde::Serialize;

/// At most this many gas top-ups per agent in 24 hours, so a wallet that burns gas without end
/// (or a bug) cannot drain the treasury's ETH.
pub const MAX_GAS_TOPUPS_PER_DAY: i64 = 5;
/// Wallets whose balances are read in one round trip (one JSON-RPC batch).
pub const BALANCE_BATCH: usize = 500;

impl Payments {
    /// Moves the agent's free USDC back to the treasury: its on-chain balance less what its
    /// payments still hold (approvals, holds, and payments and sweeps not yet confirmed). The hold
    /// is read in the same write transaction that records the sweep, so two sweeps at once
    /// cannot both take the same money; with nothing free, the sweep is a conflict.
    pub async fn sweep(&self, actor: &Principal, agent_id: &AgentId) -> Result<Created> {
        let agent = agents::get(self.ledger.pool(), agent_id).await?;
        let address = agent.address;
        let balance = self.chain.usdc_balance(address).await?;
        let treasury = self.ensure_treasury().await?.address()?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let held = Amount::from_sql(reports::held_by_wallet(&mut *tx, &agent.wallet_id).await?);
        let free = balance.checked_sub(held).unwrap_or(Amount::ZERO);
        if free == Amount::ZERO {
            return Err(PaymentsError::Conflict(format!(
                "nothing to sweep: the wallet holds {balance} USDC and {held} is committed to payments"
            )));
        }
        let key = IdempotencyKey::parse(&new_id("sweep")).expect("generated keys are valid");
        let request = super::NewPayment {
            scope_id: None,
            to: treasury,
            amount: free,
            currency: "USDC".into(),
            memo: Some("sweep to treasury".into()),
            reference: None,
            confidence: None,
            capture: super::Capture::Automatic,
            metadata: None,
        };
        let row = self.payment_row(
            PaymentKind::Sweep,
            Some(&agent),
            None,
            &agent.wallet_id,
            &request,
            PaymentStatus::Queued,
            None,
            "sweep",
            &key,
            String::new(),
            now,
        );
        tx.run_sync(|s| payment_rows::insert(s, &row)).await?;
        audit::append(&mut tx, now, NewEvent {
            agent_id: Some(agent_id.into()),
            payment_id: Some(row.id.clone()),
            actor: actor.actor(),
            detail: serde_json::json!({
                "balance": balance.to_string(), "held": held.to_string(), "amount": free.to_string(),
                "to": treasury.to_string(),
            }),
            ..NewEvent::of(AuditKind::SweepRequested)
        })
        .await?;
        self.commit_queued(tx, row).await
    }

    /// The gas float: every active agent wallet with less ETH than the floor that has a use for
    /// gas (it holds USDC, or has payments waiting to be sent) gets a top-up from the treasury,
    /// unless one is already in flight or the day's top-ups are used up. Balances are read
    /// `BALANCE_BATCH` wallets per round trip. Returns how many top-ups it queued.
    pub async fn top_up_gas(&self) -> Result<usize> {
        if self.settings().gas_float_min_wei == 0 {
            return Ok(0);
        }
        let floor = U256::from(self.settings().gas_float_min_wei);
        let mut queued = 0;
        let active = agents::all_active(self.ledger.pool()).await?;
        for chunk in active.chunks(BALANCE_BATCH) {
            let mut owners = Vec::with_capacity(chunk.len());
            for agent in chunk {
                owners.push(agent.address);
            }
            let balances = self.chain.balances(&owners).await?;
            for (agent, (usdc, eth)) in chunk.iter().zip(balances) {
                let low = eth.is_some_and(|wei| wei < floor);
                let useful = usdc.is_some_and(|a| a > Amount::ZERO)
                    || reports::has_unsent_payments(self.ledger.pool(), &agent.wallet_id).await?;
                if low && useful && self.top_up_agent(agent).await? {
                    queued += 1;
                }
            }
        }
        Ok(queued)
    }

    /// Queues one gas top-up for the agent's wallet, unless the gas float is off, one is already
    /// in flight, or the day's top-ups are used up. Settlement calls it at once when a signed
    /// transaction of the wallet waits for gas. Returns whether it queued one.
    pub(super) async fn top_up_agent(&self, agent: &agents::AgentRow) -> Result<bool> {
        let settings = self.settings();
        if settings.gas_float_min_wei == 0 {
            return Ok(false);
        }
        let now = self.now();
        let (in_flight, today) =
            agents::gas_float_fundings(self.ledger.pool(), &agent.id, now - 24 * 60 * 60 * 1000)
                .await?;
        if in_flight > 0 {
            return Ok(false);
        }
        if today >= MAX_GAS_TOPUPS_PER_DAY {
            tracing::warn!(agent_id = %agent.id, "gas float: daily top-up limit reached; not topping up");
            return Ok(false);
        }
        let key = IdempotencyKey::parse(&format!("gas-float-{}-{now}", agent.id))
            .expect("generated keys are valid");
        self.insert_funding(
            "system:gas_float".into(),
            "gas_float",
            &key,
            &agent.id,
            Amount::ZERO,
            Some(crate::domain::Wei::from_wei(settings.gas_float_topup_wei)),
        )
        .await?;
        Ok(true)
    }

    /// The USDC held on chain by all agent wallets together, read `BALANCE_BATCH` wallets per
    /// round trip to the node.
    pub async fn agents_usdc_total(&self) -> Result<Amount> {
        let mut total = Amount::ZERO;
        let addresses = agents::all_addresses(self.ledger.pool()).await?;
        for chunk in addresses.chunks(BALANCE_BATCH) {
            let mut owners = Vec::with_capacity(chunk.len());
            for address in chunk {
                owners.push(
                    Address::parse(address)
                        .map_err(|_| LedgerError::Corrupt("agent address".into()))?,
                );
            }
            for (usdc, _) in self.chain.balances(&owners).await? {
                let balance = usdc.ok_or(crate::chain::ChainError::Rpc {
                    method: "balanceOf",
                    message: "a balance was not answered".into(),
                })?;
                total = total
                    .checked_add(balance)
                    .ok_or_else(|| LedgerError::Corrupt("total overflow".into()))?;
            }
        }
        Ok(total)
    }
}

/// Fundings from the treasury to agent wallets, and the treasury's own balances.
impl Payments {
    /// Funds an agent's wallet from the treasury: USDC, and ETH for gas when `gas_wei` is given.
    pub async fn create_funding(
        &self,
        actor: &Principal,
        key: &IdempotencyKey,
        agent_id: &AgentId,
        amount: Amount,
        gas_wei: Option<crate::domain::Wei>,
    ) -> Result<Created> {
        self.insert_funding(actor.actor(), "treasury", key, agent_id, amount, gas_wei)
            .await
    }

    /// A funding from the treasury to an agent wallet, idempotent within `scope`.
    pub(super) async fn insert_funding(
        &self,
        actor: String,
        scope: &str,
        key: &IdempotencyKey,
        agent_id: &AgentId,
        amount: Amount,
        gas_wei: Option<crate::domain::Wei>,
    ) -> Result<Created> {
        #[derive(Serialize)]
        struct Body<'a> {
            agent_id: &'a str,
            amount: Amount,
            gas_wei: Option<String>,
        }
        // Stored and hashed as a count of wei, which the settlement reads back exactly.
        let gas_text = gas_wei.map(|w| w.into_inner().to_string());
        let hash = request_hash(&Body {
            agent_id,
            amount,
            gas_wei: gas_text.clone(),
        });
        let treasury = self.ensure_treasury().await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        if let Some(existing) =
            payment_rows::find_by_idempotency_key(&mut tx, scope, key.as_str()).await?
        {
            return replay(existing, &hash);
        }
        let agent = agents::get(&mut *tx, agent_id).await.map_err(|e| match e {
            LedgerError::NotFound => PaymentsError::Invalid {
                field: "agent_id".into(),
                message: "no such agent".into(),
            },
            other => other.into(),
        })?;
        let to = agent.address;
        let request = NewPayment {
            scope_id: None,
            to,
            amount,
            currency: "USDC".into(),
            memo: Some("treasury funding".into()),
            reference: None,
            confidence: None,
            capture: Capture::Automatic,
            metadata: None,
        };
        let mut row = self.payment_row(
            PaymentKind::Funding,
            Some(&agent),
            None,
            &treasury.id,
            &request,
            PaymentStatus::Queued,
            None,
            scope,
            key,
            hash,
            now,
        );
        row.gas_wei = gas_text.clone();
        tx.run_sync(|s| payment_rows::insert(s, &row)).await?;
        audit::append(&mut tx, now, NewEvent {
            agent_id: Some(agent_id.into()),
            payment_id: Some(row.id.clone()),
            actor,
            detail: serde_json::json!({
                "amount": amount.to_string(), "gas_wei": gas_text, "to": to.to_string(), "scope": scope,
            }),
            ..NewEvent::of(AuditKind::FundingRequested)
        })
        .await?;
        self.commit_queued(tx, row).await
    }

    /// Commits the transaction that queued `row` and wakes the settlement worker for it.
    pub(super) async fn commit_queued(
        &self,
        tx: crate::ledger::Tx,
        row: PaymentRow,
    ) -> Result<Created> {
        tx.commit().await?;
        self.wake.notify_one();
        Ok(Created {
            payment: row,
            replayed: false,
        })
    }

    pub async fn treasury_view(
        &self,
    ) -> Result<(Address, Option<Amount>, Option<crate::domain::Wei>)> {
        let treasury = self.ensure_treasury().await?;
        let address = treasury.address()?;
        let (usdc, eth) = self
            .chain
            .balances(&[address])
            .await
            .ok()
            .and_then(|b| b.into_iter().next())
            .unwrap_or((None, None));
        Ok((address, usdc, eth.map(crate::domain::Wei::from_u256)))
    }
}
