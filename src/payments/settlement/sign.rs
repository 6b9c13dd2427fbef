//! Signing: every queued payment leg without a transaction gets one, after the checks that keep
//! a nonce from being used on a transfer the chain would refuse.

use super::{Pass, fees};
use crate::chain::{ChainError, ETH_TRANSFER_GAS, Fees};
use crate::domain::AuditKind;
use crate::domain::{Address, Amount, Asset, PaymentStatus, WaitingReason};
use crate::ledger::audit;
use crate::ledger::payments::{self as payment_rows, NewTransaction, PaymentRow, TRANSFER};
use crate::ledger::{LedgerError, wallets};
use crate::payments::{Payments, Result};
use alloy::primitives::U256;
use futures_util::{StreamExt, stream};

/// What a payment needs signed: its legs and what they cost.
struct Plan {
    from: Address,
    to: Address,
    amount: Amount,
    fees: Fees,
    /// Gas limit of the USDC leg, when that leg is needed.
    usdc_gas: Option<u64>,
    /// Wei of the ETH leg, when that leg is needed.
    eth_wei: Option<U256>,
}

impl Plan {
    fn count(&self) -> u64 {
        u64::from(self.usdc_gas.is_some()) + u64::from(self.eth_wei.is_some())
    }

    /// ETH the legs can take at their fee cap, value included.
    fn worst_case_wei(&self) -> U256 {
        let max_fee = U256::from(self.fees.max_fee_per_gas);
        let usdc = U256::from(self.usdc_gas.unwrap_or(0)) * max_fee;
        let eth = self.eth_wei.map_or(U256::ZERO, |wei| {
            wei + U256::from(ETH_TRANSFER_GAS) * max_fee
        });
        usdc + eth
    }
}

/// Why a payment is not signed this pass.
enum Hold {
    /// It fails now: the chain would refuse it, and no nonce was used.
    Fail(String),
    /// It waits: the wallet's ETH is committed to transactions already in flight.
    Wait(WaitingReason, serde_json::Value),
}

impl Payments {
    pub(super) async fn sign_queued(&self, pass: &mut Pass) -> Result<()> {
        let market = self.chain.fees().await?;
        let fees = fees::capped(market, self.settings().max_fee_per_gas_wei);
        let paused = self.chain.usdc_paused().await?;
        let queued =
            payment_rows::needing_transactions(self.ledger.pool(), super::SIGN_BATCH).await?;
        let parent = &*pass;
        let lanes: Vec<Result<Pass>> = stream::iter(super::lanes(queued, |p| &p.from_wallet_id))
            .map(|(wallet_id, payments)| async move {
                let mut lane = parent.lane(&wallet_id);
                for payment in payments {
                    match self.sign_payment(&mut lane, &payment, fees, paused).await {
                        Ok(true) => lane.report.signed += 1,
                        Ok(false) => {}
                        Err(error) => self.isolate(&mut lane, &payment.id, error).await?,
                    }
                }
                Ok(lane)
            })
            .buffer_unordered(super::MAX_LANES)
            .collect()
            .await;
        let mut halted = None;
        for lane in lanes {
            match lane {
                Ok(lane) => pass.absorb(lane),
                Err(error) => halted = halted.or(Some(error)),
            }
        }
        halted.map_or(Ok(()), Err)
    }

    /// Signs and stores the missing transaction(s) of one payment. `false` if it failed its
    /// checks (no nonce is used then) or waits.
    async fn sign_payment(
        &self,
        pass: &mut Pass,
        payment: &PaymentRow,
        fees: Fees,
        paused: bool,
    ) -> Result<bool> {
        let plan = match self.plan(pass, payment, fees, paused).await? {
            Ok(plan) => plan,
            Err((reason, node_error)) => {
                self.fail_before_signing(payment, &reason, node_error.as_deref())
                    .await?;
                pass.report.failed += 1;
                return Ok(false);
            }
        };
        if plan.count() == 0 {
            return Ok(false);
        }
        if let Some(hold) = self.check_gas(pass, payment, &plan).await? {
            match hold {
                Hold::Fail(reason) => {
                    self.fail_before_signing(payment, &reason, None).await?;
                    pass.report.failed += 1;
                }
                Hold::Wait(reason, detail) => self.wait(&payment.id, reason, detail).await?,
            }
            return Ok(false);
        }
        let chain_nonce = self
            .chain_nonce(pass, &payment.from_wallet_id, plan.from)
            .await?;
        self.fail_point("before_sign")?;
        if !self.sign_and_store(payment, &plan, chain_nonce).await? {
            return Ok(false);
        }
        let in_flight = self.in_flight_wei(pass, &payment.from_wallet_id).await?;
        pass.in_flight_wei.insert(
            payment.from_wallet_id.clone(),
            in_flight.saturating_add(plan.worst_case_wei()),
        );
        Ok(true)
    }

    /// The legs a payment needs and the token's own checks, read before a nonce is used: a
    /// transfer they forbid would only revert on chain. `Err((reason, node_error))`: fail it now.
    async fn plan(
        &self,
        pass: &mut Pass,
        payment: &PaymentRow,
        fees: Fees,
        paused: bool,
    ) -> Result<std::result::Result<Plan, (String, Option<String>)>> {
        let wallet = wallets::get(self.ledger.pool(), &payment.from_wallet_id).await?;
        let from = wallet.address()?;
        let to = payment.to_address;
        let amount = Amount::from_sql(payment.amount);
        let (needs_usdc, needs_eth) =
            payment_rows::missing_legs(self.ledger.pool(), payment).await?;
        let eth_wei = match (&payment.gas_wei, needs_eth) {
            (Some(text), true) => Some(
                text.parse::<U256>()
                    .map_err(|_| LedgerError::Corrupt("gas_wei".into()))?,
            ),
            _ => None,
        };
        let mut plan = Plan {
            from,
            to,
            amount,
            fees,
            usdc_gas: None,
            eth_wei,
        };
        if !needs_usdc {
            return Ok(Ok(plan));
        }
        let sender = self.blacklisted(pass, from).await?;
        let recipient = self.blacklisted(pass, to).await?;
        let refused = [
            (paused, "token_paused"),
            (sender, "sender_blacklisted"),
            (recipient, "recipient_blacklisted"),
        ]
        .into_iter()
        .find_map(|(refused, reason)| refused.then_some(reason));
        if let Some(reason) = refused {
            return Ok(Err((reason.into(), None)));
        }
        match self.chain.estimate_usdc_transfer(from, to, amount).await {
            Ok(gas) => plan.usdc_gas = Some(gas),
            Err(ChainError::Reverted { message, .. }) => {
                let balance = self.chain.usdc_balance(from).await?;
                // The agent sees a named reason; the node's words stay in the audit log.
                let reason = if balance < amount {
                    "insufficient_usdc"
                } else {
                    "transfer_would_revert"
                };
                return Ok(Err((reason.into(), Some(message))));
            }
            Err(other) => return Err(other.into()),
        }
        Ok(Ok(plan))
    }

    /// The wallet must hold the ETH for gas at the fee cap (and any ETH it sends) on top of the
    /// worst case of what it already has in flight, or the node would refuse the transaction and
    /// its nonce would jam. With nothing in flight that is a failure; with transactions in
    /// flight the payment waits for them (and the gas float tops the wallet up).
    async fn check_gas(
        &self,
        pass: &mut Pass,
        payment: &PaymentRow,
        plan: &Plan,
    ) -> Result<Option<Hold>> {
        let in_flight = self.in_flight_wei(pass, &payment.from_wallet_id).await?;
        let balance = self
            .eth_balance(pass, &payment.from_wallet_id, plan.from)
            .await?;
        let needed = plan.worst_case_wei();
        if balance >= needed.saturating_add(in_flight) {
            return Ok(None);
        }
        if in_flight == U256::ZERO {
            return Ok(Some(Hold::Fail("insufficient_gas".into())));
        }
        self.top_up_wallet(&payment.from_wallet_id).await?;
        Ok(Some(Hold::Wait(
            WaitingReason::InsufficientGas,
            serde_json::json!({
                "balance_wei": balance.to_string(), "needed_wei": needed.to_string(),
                "in_flight_wei": in_flight.to_string(),
            }),
        )))
    }

    /// In one database transaction: reserve the nonces, sign, store the raw bytes, audit.
    /// `false` if another pass or a freeze got to the payment first.
    async fn sign_and_store(
        &self,
        payment: &PaymentRow,
        plan: &Plan,
        chain_nonce: u64,
    ) -> Result<bool> {
        let (wallet, key) = self.wallet_key(&payment.from_wallet_id).await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let current = payment_rows::get(&mut *tx, &payment.id).await?;
        let (needs_usdc, needs_eth) = payment_rows::missing_legs(&mut *tx, &current).await?;
        let status = current.status()?;
        if !matches!(status, PaymentStatus::Queued | PaymentStatus::Submitted)
            || needs_usdc != plan.usdc_gas.is_some()
            || needs_eth != plan.eth_wei.is_some()
        {
            return Ok(false);
        }
        let (mut nonce, before) =
            wallets::reserve_nonces(&mut tx, &wallet.id, chain_nonce, plan.count()).await?;
        let mut legs = Vec::new();
        if let Some(gas_limit) = plan.usdc_gas {
            legs.push((
                Asset::Usdc,
                self.chain
                    .usdc_transfer(nonce, gas_limit, plan.fees, plan.to, plan.amount),
                None,
            ));
            nonce += 1;
        }
        if let Some(wei) = plan.eth_wei {
            legs.push((
                Asset::Eth,
                self.chain.eth_transfer(nonce, plan.fees, plan.to, wei),
                Some(wei),
            ));
        }
        let mut signed_legs = Vec::new();
        for (asset, unsigned, wei) in legs {
            let signed = self.custody.sign(&key, unsigned)?;
            let hash = signed.hash.to_string();
            let leg_nonce =
                i64::try_from(signed.nonce).map_err(|_| LedgerError::Corrupt("nonce".into()))?;
            let new = NewTransaction {
                payment_id: &payment.id,
                asset,
                purpose: TRANSFER,
                wallet_id: &wallet.id,
                nonce: leg_nonce,
                tx_hash: &hash,
                raw: &signed.raw,
            };
            payment_rows::insert_transaction(&mut tx, new, now).await?;
            signed_legs.push(serde_json::json!({
                "asset": asset, "nonce": signed.nonce, "tx_hash": hash, "wei": wei.map(|w| w.to_string()),
            }));
        }
        if let Some(before) = before.filter(|before| *before < chain_nonce) {
            // The wallet's key was used outside Bursar (or the database was restored): the chain
            // is ahead of the counter, which moves up to it.
            audit::append(&mut tx, now, self.event(&current, AuditKind::NonceResynced, serde_json::json!({
                "from": plan.from.to_string(), "counter": before, "chain_nonce": chain_nonce,
            }), None, None, None)).await?;
        }
        let primary = signed_legs
            .first()
            .and_then(|leg| leg["tx_hash"].as_str())
            .map(str::to_string);
        payment_rows::sync_chain_fields(&mut tx, &payment.id, now).await?;
        payment_rows::set_waiting_reason(&mut tx, &payment.id, None, now).await?;
        audit::append(
            &mut tx,
            now,
            self.event(
                &current,
                AuditKind::TransactionSigned,
                serde_json::json!({
                    "from": plan.from.to_string(),
                    "max_fee_per_gas": plan.fees.max_fee_per_gas.to_string(),
                    "max_priority_fee_per_gas": plan.fees.max_priority_fee_per_gas.to_string(),
                    "usdc_gas_limit": plan.usdc_gas,
                    "transactions": signed_legs,
                }),
                primary.clone(),
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(payment_id = %payment.id, tx_hash = primary.as_deref().unwrap_or_default(), "signed");
        Ok(true)
    }

    pub(super) async fn fail_before_signing(
        &self,
        payment: &PaymentRow,
        reason: &str,
        node_error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let current = payment_rows::get(&mut *tx, &payment.id).await?;
        payment_rows::set_failure(&mut tx, &payment.id, current.status()?, reason, now).await?;
        payment_rows::set_waiting_reason(&mut tx, &payment.id, None, now).await?;
        audit::append(
            &mut tx,
            now,
            self.event(
                payment,
                AuditKind::PaymentFailed,
                serde_json::json!({"failure_reason": reason, "node_error": node_error}),
                None,
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(payment_id = %payment.id, reason, "payment failed before signing");
        Ok(())
    }

    /// Queues a gas top-up for the agent that pays from `wallet_id`, when the gas float is on.
    pub(super) async fn top_up_wallet(&self, wallet_id: &str) -> Result<()> {
        if let Some(agent) = crate::ledger::agents::by_wallet(self.ledger.pool(), wallet_id).await?
            && agent.status == "active"
            && self.top_up_agent(&agent).await?
        {
            tracing::info!(agent_id = %agent.id, "gas float: topping up a wallet whose transaction waits for gas");
        }
        Ok(())
    }
}
