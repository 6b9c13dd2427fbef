//! Signing: every queued payment leg without a transaction gets one, after the checks that keep
//! a nonce from being used on a transfer the chain would refuse.

use super::{Pass, Sent, fees};
use crate::chain::{ChainError, ETH_TRANSFER_GAS, Fees};
use crate::domain::AuditKind;
use crate::domain::{Address, Amount, Asset, PaymentStatus, WaitingReason};
use crate::ledger::audit;
use crate::ledger::payments::{
    self as payment_rows, NewTransaction, PaymentRow, Queued, TRANSFER, TransactionRow,
};
use crate::ledger::{LedgerError, wallets};
use crate::payments::{Payments, Result};
use alloy::primitives::U256;
use futures_util::{StreamExt, stream};

/// What a payment needs signed: its legs and what they cost.
#[derive(Clone, Copy)]
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
        pass.report.batch_full = i64::try_from(queued.len()).is_ok_and(|n| n >= super::SIGN_BATCH);
        let parent = &*pass;
        let lanes: Vec<Result<Pass>> =
            stream::iter(super::lanes(queued, |q| &q.payment.from_wallet_id))
                .map(|(wallet_id, payments)| async move {
                    let mut lane = parent.lane(&wallet_id);
                    self.sign_lane(&mut lane, &wallet_id, payments, fees, paused)
                        .await?;
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

    /// One wallet's lane: every payment is checked against the chain, then all that pass are
    /// signed at consecutive nonces and stored in one write transaction, then broadcast in one
    /// JSON-RPC batch and recorded as sent in one more. A payment that fails its checks uses no
    /// nonce; one that cannot be processed is parked; the rest of the lane goes on.
    async fn sign_lane(
        &self,
        lane: &mut Pass,
        wallet_id: &str,
        payments: Vec<Queued>,
        fees: Fees,
        paused: bool,
    ) -> Result<()> {
        let payments = self.within_window(lane, wallet_id, payments).await?;
        self.prefetch_estimates(lane, wallet_id, &payments, paused)
            .await;
        let mut ready = Vec::new();
        for queued in payments {
            let payment = &queued.payment;
            match self.prepare(lane, &queued, fees, paused).await {
                Ok(Some(plan)) => {
                    let in_flight = self.in_flight_wei(lane, wallet_id).await?;
                    lane.in_flight_wei.insert(
                        wallet_id.to_string(),
                        in_flight.saturating_add(plan.worst_case_wei()),
                    );
                    ready.push((queued.payment, plan));
                }
                Ok(None) => {}
                Err(error) => self.isolate(lane, &payment.id, error).await?,
            }
        }
        // In chunks, so that one write transaction never holds the writer for long: intents
        // accepted meanwhile wait for a chunk, not for a whole burst.
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let chunk: Vec<_> = ready.by_ref().take(super::WRITE_CHUNK).collect();
            let (count, ids): (usize, Vec<String>) = (
                chunk.len(),
                chunk.iter().map(|(p, _)| p.id.to_string()).collect(),
            );
            let signed = match self.sign_and_store(lane, wallet_id, chunk).await {
                Ok(signed) => signed,
                Err(error) => {
                    // The chunk shares the wallet's key and nonce range: what stops one stops
                    // them all, and none of their nonces was used.
                    return self.isolate_all(lane, &ids, error).await;
                }
            };
            if signed.is_empty() {
                return Ok(());
            }
            lane.report.signed += count;
            self.fail_point("after_sign")?;
            let sent = self.first_send(lane.head, signed).await?;
            lane.absorb_sent(sent);
        }
        Ok(())
    }

    /// The lane's queued payments, in order, that fit the room its wallet has left in the
    /// node's pool (`lane_window` less its signed or broadcast transactions at nonces the chain
    /// has not used yet). The first that does not fit and every later one wait for the next
    /// pass, so the wallet's nonces still follow the queue.
    async fn within_window(
        &self,
        lane: &mut Pass,
        wallet_id: &str,
        mut payments: Vec<Queued>,
    ) -> Result<Vec<Queued>> {
        let window = self.settings().lane_window;
        // A wallet that cannot be read is reported (and its payments parked) by their own path.
        let Ok(address) = self.wallet_address(lane, wallet_id).await else {
            return Ok(payments);
        };
        let chain_nonce = self.chain_nonce(lane, wallet_id, address).await?;
        let in_pool =
            payment_rows::in_pool_count(self.ledger.pool(), wallet_id, chain_nonce).await?;
        let mut room = window.saturating_sub(in_pool);
        let fits = payments
            .iter()
            .take_while(|queued| {
                let legs = u64::from(queued.needs_usdc) + u64::from(queued.needs_eth);
                let fit = legs <= room;
                room = room.saturating_sub(legs);
                fit
            })
            .count();
        if fits < payments.len() {
            tracing::debug!(
                wallet_id,
                in_pool,
                window,
                waiting = payments.len() - fits,
                "lane window full: the rest wait for room"
            );
            payments.truncate(fits);
        }
        Ok(payments)
    }

    /// Plans the gas of the lane's queued USDC transfers with two reads instead of one
    /// `eth_estimateGas` per payment (which a node answers slowly: it searches the gas of each):
    /// the wallet's USDC balance, and one estimate of the costliest transfer the token has, to an
    /// address that holds nothing yet (a new balance slot). Each transfer the balance still covers,
    /// in order, gets that limit; one it no longer covers fails before signing
    /// (`insufficient_usdc`, no nonce used). The token's other refusals (paused, blacklisted) are
    /// checked on their own in `plan`; a lane of one payment, or whose reads fail, is estimated
    /// per payment, so the node names the refusal.
    async fn prefetch_estimates(
        &self,
        lane: &mut Pass,
        wallet_id: &str,
        payments: &[Queued],
        paused: bool,
    ) {
        let wanted: Vec<&PaymentRow> = payments
            .iter()
            .filter(|q| q.needs_usdc)
            .map(|q| &q.payment)
            .collect();
        if paused || wanted.len() < 2 {
            return;
        }
        let Ok(from) = self.wallet_address(lane, wallet_id).await else {
            return;
        };
        let fresh = Address::from(alloy::primitives::Address::from(rand::random::<[u8; 20]>()));
        let (balance, gas) = tokio::join!(
            self.chain.usdc_balance(from),
            self.chain
                .estimate_usdc_transfer(from, fresh, Amount::from_micros(1))
        );
        let (Ok(mut balance), Ok(gas)) = (balance, gas) else {
            return;
        };
        for payment in wanted {
            let amount = Amount::from_sql(payment.amount);
            match balance.checked_sub(amount) {
                Some(left) => {
                    balance = left;
                    lane.estimates.insert(payment.id.to_string(), Ok(gas));
                }
                // What this pass signs before it already spends the balance: this transfer
                // would revert on chain, so it fails now and uses no nonce.
                None => {
                    lane.uncovered.insert(payment.id.to_string());
                }
            }
        }
    }

    /// The checks of one payment. `Some(plan)` if it is ready to sign; `None` if it failed its
    /// checks (no nonce is used then) or waits.
    async fn prepare(
        &self,
        pass: &mut Pass,
        queued: &Queued,
        fees: Fees,
        paused: bool,
    ) -> Result<Option<Plan>> {
        let payment = &queued.payment;
        let plan = match self.plan(pass, queued, fees, paused).await? {
            Ok(plan) => plan,
            Err((reason, node_error)) => {
                self.fail_before_signing(payment, &reason, node_error.as_deref())
                    .await?;
                pass.report.failed += 1;
                return Ok(None);
            }
        };
        if plan.count() == 0 {
            return Ok(None);
        }
        if let Some(hold) = self.check_gas(pass, payment, &plan).await? {
            match hold {
                Hold::Fail(reason) => {
                    self.fail_before_signing(payment, &reason, None).await?;
                    pass.report.failed += 1;
                }
                Hold::Wait(reason, detail) => self.wait(&payment.id, reason, detail).await?,
            }
            return Ok(None);
        }
        Ok(Some(plan))
    }

    /// The legs a payment needs and the token's own checks, read before a nonce is used: a
    /// transfer they forbid would only revert on chain. `Err((reason, node_error))`: fail it now.
    async fn plan(
        &self,
        pass: &mut Pass,
        queued: &Queued,
        fees: Fees,
        paused: bool,
    ) -> Result<std::result::Result<Plan, (String, Option<String>)>> {
        let payment = &queued.payment;
        let from = self.wallet_address(pass, &payment.from_wallet_id).await?;
        let to = payment.to_address;
        let amount = Amount::from_sql(payment.amount);
        // As the queue read them; signing checks them again in its write transaction.
        let (needs_usdc, needs_eth) = (queued.needs_usdc, queued.needs_eth);
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
        if pass.uncovered.remove(payment.id.as_str()) {
            let why = "the wallet's USDC balance is committed to earlier payments of this pass";
            return Ok(Err(("insufficient_usdc".into(), Some(why.into()))));
        }
        let estimate = match pass.estimates.remove(payment.id.as_str()) {
            Some(estimate) => estimate,
            None => self.chain.estimate_usdc_transfer(from, to, amount).await,
        };
        match estimate {
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

    /// Signs the lane's ready payments at consecutive nonces, off the async runtime and before
    /// taking the writer, then in one database transaction reserves exactly those nonces, stores
    /// the raw bytes and audits each payment; nothing is broadcast before it is stored. Returns
    /// the hashes stored. If a payment changed meanwhile (a freeze, another pass) or the nonce
    /// counter moved, nothing is stored and the lane tries again next pass. The write is batched
    /// with the other lanes' (and accepted intents'): one writer hold and one commit for many.
    async fn sign_and_store(
        &self,
        pass: &mut Pass,
        wallet_id: &str,
        ready: Vec<(PaymentRow, Plan)>,
    ) -> Result<Vec<TransactionRow>> {
        let (wallet, key) = self.wallet_key(wallet_id).await?;
        let from = wallet.address()?;
        let chain_nonce = self.chain_nonce(pass, wallet_id, from).await?;
        let counter = wallet.next_nonce.and_then(|n| u64::try_from(n).ok());
        let first = counter.unwrap_or(0).max(chain_nonce);
        let mut unsigned = Vec::new();
        let mut nonce = first;
        for (_, plan) in &ready {
            if let Some(gas_limit) = plan.usdc_gas {
                unsigned.push(self.chain.usdc_transfer(
                    nonce,
                    gas_limit,
                    plan.fees,
                    plan.to,
                    plan.amount,
                ));
                nonce += 1;
            }
            if let Some(wei) = plan.eth_wei {
                unsigned.push(self.chain.eth_transfer(nonce, plan.fees, plan.to, wei));
                nonce += 1;
            }
        }
        self.fail_point("before_sign")?;
        let custody = self.custody.clone();
        let signed = tokio::task::spawn_blocking(move || custody.sign_all(&key, unsigned))
            .await
            .map_err(|_| LedgerError::Corrupt("the signing task stopped".into()))??;

        let now = self.now();
        let this = self.clone();
        let count = ready.len();
        let stored = self
            .ledger
            .write_batched(move |tx| -> Result<Option<Vec<TransactionRow>>> {
                let (this, ready) = (&this, &ready);
                // Per payment: whether it waits, and its transactions as this write found them.
                let mut found = Vec::new();
                for (payment, plan) in ready {
                    let current = payment_rows::get_in(tx, &payment.id)?;
                    let legs = payment_rows::legs_in(tx, &current.id)?;
                    let (needs_usdc, needs_eth) = payment_rows::missing_legs_of(&current, &legs);
                    found.push((current.waiting_reason.is_some(), legs));
                    if !matches!(
                        current.status()?,
                        PaymentStatus::Queued | PaymentStatus::Submitted
                    ) || needs_usdc != plan.usdc_gas.is_some()
                        || needs_eth != plan.eth_wei.is_some()
                    {
                        return Ok(None);
                    }
                }
                let (reserved, before) =
                    wallets::reserve_nonces(tx, &wallet.id, chain_nonce, nonce - first)?;
                if reserved != first || before != counter {
                    return Ok(None);
                }
                if let Some(before) = before.filter(|before| *before < chain_nonce) {
                    // The wallet's key was used outside Bursar (or the database was restored):
                    // the chain is ahead of the counter, which moves up to it.
                    audit::append_in(
                        tx,
                        now,
                        this.event(
                            &ready[0].0,
                            AuditKind::NonceResynced,
                            serde_json::json!({
                                "from": from.to_string(), "counter": before,
                                "chain_nonce": chain_nonce,
                            }),
                            None,
                            None,
                            None,
                        ),
                    )?;
                }
                let mut signed = signed.into_iter();
                let mut stored = Vec::new();
                for ((payment, plan), (was_waiting, mut rows)) in ready.iter().zip(found) {
                    let mut legs = Vec::new();
                    for (asset, wei) in [
                        (Asset::Usdc, plan.usdc_gas.map(|_| None)),
                        (Asset::Eth, plan.eth_wei.map(Some)),
                    ] {
                        let Some(wei) = wei else { continue };
                        let leg = signed
                            .next()
                            .ok_or_else(|| LedgerError::Corrupt("a leg was not signed".into()))?;
                        let hash = leg.hash.to_string();
                        let leg_nonce = i64::try_from(leg.nonce)
                            .map_err(|_| LedgerError::Corrupt("nonce".into()))?;
                        let row = payment_rows::insert_transaction(
                            tx,
                            NewTransaction {
                                payment_id: &payment.id,
                                asset,
                                purpose: TRANSFER,
                                wallet_id: &wallet.id,
                                nonce: leg_nonce,
                                tx_hash: &hash,
                                raw: &leg.raw,
                            },
                            now,
                        )?;
                        legs.push(serde_json::json!({
                            "asset": asset, "nonce": leg.nonce, "tx_hash": hash,
                            "wei": wei.map(|w| w.to_string()),
                        }));
                        rows.push(row.leg());
                        stored.push(row);
                    }
                    let primary = legs
                        .first()
                        .and_then(|leg| leg["tx_hash"].as_str())
                        .map(str::to_string);
                    // The payment's transactions are the ones read above and the ones just
                    // inserted: no need to read them again.
                    payment_rows::write_chain_fields(tx, &payment.id, &rows, now)?;
                    if was_waiting {
                        payment_rows::set_waiting_reason(tx, &payment.id, None, now)?;
                    }
                    audit::append_in(
                        tx,
                        now,
                        this.event(
                            payment,
                            AuditKind::TransactionSigned,
                            serde_json::json!({
                                "from": from.to_string(),
                                "max_fee_per_gas": plan.fees.max_fee_per_gas.to_string(),
                                "max_priority_fee_per_gas":
                                    plan.fees.max_priority_fee_per_gas.to_string(),
                                "usdc_gas_limit": plan.usdc_gas,
                                "transactions": legs,
                            }),
                            primary,
                            None,
                            None,
                        ),
                    )?;
                }
                Ok(Some(stored))
            })
            .await?;
        let Some(stored) = stored else {
            return Ok(Vec::new());
        };
        tracing::info!(wallet_id, count, first_nonce = first, "signed");
        Ok(stored)
    }

    /// Broadcasts what the lane just stored (`rows`, in nonce order), in one JSON-RPC batch, and
    /// records every transaction the node took as sent, in one write transaction. One it refused
    /// stays `signed`: resolving its slot asks the chain why.
    async fn first_send(&self, head: u64, rows: Vec<TransactionRow>) -> Result<Sent> {
        let raws: Vec<&[u8]> = rows.iter().map(|row| row.raw.as_slice()).collect();
        let results = match self.chain.broadcast_batch(&raws).await {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, "batch broadcast failed; the slots will resend");
                return Ok(Sent::default());
            }
        };
        self.fail_point("after_broadcast")?;
        let now = self.now();
        let taken: Vec<_> = rows
            .into_iter()
            .zip(&results)
            .filter_map(|(row, result)| result.is_ok().then_some(row))
            .collect();
        let hashes = taken
            .iter()
            .map(|row| super::parse_hash(&row.tx_hash))
            .collect::<Result<Vec<_>>>()?;
        let this = self.clone();
        let count = self
            .ledger
            .write_batched(move |tx| -> Result<usize> {
                for row in &taken {
                    this.record_sent_in(tx, row, head, now)?;
                }
                Ok(taken.len())
            })
            .await?;
        Ok(Sent { count, hashes })
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
        tx.run_sync(|s| payment_rows::set_failure(s, &payment.id, current.status()?, reason, now))
            .await?;
        tx.run_sync(|s| payment_rows::set_waiting_reason(s, &payment.id, None, now))
            .await?;
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
