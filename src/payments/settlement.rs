//! Settlement: takes `queued` payments to `confirmed`. One pass (`settle_once`) does three steps:
//!
//! 1. **Sign.** For each queued payment without a transaction: price it from the node, then in
//!    one database transaction reserve the wallet's next nonce(s), sign in custody and store the
//!    signed raw transaction, with an audit event. Nothing is broadcast before it is stored.
//! 2. **Broadcast** every stored transaction the node has not acknowledged. Whether it arrived is
//!    decided by asking the chain for the hash, never by an error's text.
//! 3. **Watch.** Read the head, then each open transaction's receipt and the canonical hash of
//!    its block; record inclusion (block number and hash), count confirmations (blocks on top of
//!    the including block) and move payments to `confirmed` once the configured number is
//!    reached on the canonical chain. A block hash that no longer matches sends the transaction
//!    back to `submitted` with a `reorg` event.
//!
//! The worker runs passes on a timer and whenever a payment is queued; tests run single passes.

use super::{Payments, PaymentsError, Result, sealed};
use crate::chain::{ChainError, Receipt};
use crate::domain::{Address, Amount, PaymentStatus, TransactionStatus};
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::payments::{self as payment_rows, PaymentRow, TransactionRow};
use crate::ledger::{LedgerError, Tx, wallets};
use alloy::primitives::U256;
use std::time::Duration;

/// Payments signed per pass, so one pass stays short under a burst.
const SIGN_BATCH: i64 = 100;
/// The longest the worker backs off after consecutive failing passes.
const MAX_BACKOFF_MS: u64 = 30_000;
/// Confirmed transactions stay watched for this many times the confirmation depth.
const FINALITY_WATCH_FACTOR: u64 = 4;
/// How often the worker checks agent wallets' ETH for the gas float and reconciles new blocks.
const GAS_FLOAT_INTERVAL: Duration = Duration::from_secs(30);

/// What one pass did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub signed: usize,
    pub broadcast: usize,
    pub updated: usize,
    pub failed: usize,
    pub expired: usize,
    pub alarms: usize,
}

impl Payments {
    /// Runs settlement passes until `shutdown` resolves: after each queued payment and at least
    /// every `poll_interval`. Failing passes back off exponentially up to `MAX_BACKOFF_MS`.
    pub async fn run_settlement(
        &self,
        poll_interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let wake = self.wake();
        let mut failures: u32 = 0;
        let mut gas_float_due = tokio::time::Instant::now();
        loop {
            let wait = if failures == 0 {
                poll_interval
            } else {
                Duration::from_millis(
                    (poll_interval.as_millis() as u64)
                        .saturating_mul(1 << failures.min(8))
                        .min(MAX_BACKOFF_MS),
                )
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            if tokio::time::Instant::now() >= gas_float_due {
                gas_float_due = tokio::time::Instant::now() + GAS_FLOAT_INTERVAL;
                match self.top_up_gas().await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "gas float: topping up agent wallets"),
                    Err(error) => tracing::warn!(%error, "gas float check failed"),
                }
                if let Err(error) = self.reconcile_new_blocks().await {
                    tracing::warn!(%error, "background reconciliation failed");
                }
            }
            match self.settle_once().await {
                Ok(report) => {
                    failures = 0;
                    if report != PassReport::default() {
                        tracing::debug!(?report, "settlement pass");
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "settlement pass failed; backing off");
                }
            }
        }
    }

    /// One settlement pass: sign, broadcast, watch.
    pub async fn settle_once(&self) -> Result<PassReport> {
        let mut report = PassReport {
            expired: self.expire_stale().await?,
            ..PassReport::default()
        };
        for payment in
            payment_rows::queued_without_transactions(self.ledger.pool(), SIGN_BATCH).await?
        {
            match self.sign_payment(&payment).await {
                Ok(true) => report.signed += 1,
                Ok(false) => report.failed += 1,
                Err(error) if is_transient(&error) => {
                    tracing::warn!(payment_id = %payment.id, %error, "cannot sign yet; will retry");
                }
                Err(error) => return Err(error),
            }
        }
        self.fail_point("after_sign")?;
        let open = payment_rows::open_transactions(self.ledger.pool()).await?;
        for transaction in open.iter().filter(|t| t.status == "signed") {
            if self.broadcast(transaction).await? {
                report.broadcast += 1;
            }
        }
        let head = self.chain.head().await?;
        for transaction in payment_rows::open_transactions(self.ledger.pool()).await? {
            if transaction.status == "signed" {
                continue;
            }
            if self.watch(&transaction, head).await? {
                report.updated += 1;
            }
        }
        report.alarms = self.check_finality(head).await?;
        Ok(report)
    }

    /// Signs and stores the transaction(s) of one queued payment. Returns `false` if the payment
    /// failed its pre-signing checks instead (no nonce is used then).
    async fn sign_payment(&self, payment: &PaymentRow) -> Result<bool> {
        let wallet = wallets::get(self.ledger.pool(), &payment.from_wallet_id).await?;
        let from = wallet.address()?;
        let to = Address::parse(&payment.to_address)
            .map_err(|_| LedgerError::Corrupt("payment recipient".into()))?;
        let amount = Amount::from_sql(payment.amount);
        let gas_wei = match &payment.gas_wei {
            Some(text) => Some(
                text.parse::<U256>()
                    .map_err(|_| LedgerError::Corrupt("gas_wei".into()))?,
            ),
            None => None,
        };
        let mut fees = self.chain.fees().await?;
        // Never sign above the configured fee cap; a transaction priced under the market waits
        // and is replaced when it can be.
        fees.max_fee_per_gas = fees
            .max_fee_per_gas
            .min(self.settings().max_fee_per_gas_wei);
        fees.max_priority_fee_per_gas = fees.max_priority_fee_per_gas.min(fees.max_fee_per_gas);
        // The token's own rules, checked before a nonce is used: a transfer they forbid would
        // only revert on chain.
        if amount != Amount::ZERO {
            let (paused, sender, recipient) = tokio::try_join!(
                self.chain.usdc_paused(),
                self.chain.usdc_blacklisted(from),
                self.chain.usdc_blacklisted(to),
            )?;
            let refused = if paused {
                Some("token_paused")
            } else if sender {
                Some("sender_blacklisted")
            } else if recipient {
                Some("recipient_blacklisted")
            } else {
                None
            };
            if let Some(reason) = refused {
                self.fail_before_signing(payment, reason).await?;
                return Ok(false);
            }
        }
        // A USDC leg when there is an amount (an ETH-only funding has none).
        let usdc_gas = if amount == Amount::ZERO {
            None
        } else {
            match self.chain.estimate_usdc_transfer(from, to, amount).await {
                Ok(gas) => Some(gas),
                Err(ChainError::Reverted { message, .. }) => {
                    let balance = self.chain.usdc_balance(from).await?;
                    let reason = if balance < amount {
                        "insufficient_usdc".to_string()
                    } else {
                        format!("transfer_would_revert: {message}")
                    };
                    self.fail_before_signing(payment, &reason).await?;
                    return Ok(false);
                }
                Err(other) => return Err(other.into()),
            }
        };
        // The wallet must hold the ETH for gas at the fee cap (and any ETH it sends) before a
        // nonce is used; otherwise the node would refuse the transaction and the nonce would jam.
        let max_fee = U256::from(fees.max_fee_per_gas);
        let eth_leg = gas_wei.map_or(U256::ZERO, |wei| {
            wei + U256::from(crate::chain::ETH_TRANSFER_GAS) * max_fee
        });
        let needed = U256::from(usdc_gas.unwrap_or(0)) * max_fee + eth_leg;
        if self.chain.eth_balance(from).await? < needed {
            self.fail_before_signing(payment, "insufficient_gas")
                .await?;
            return Ok(false);
        }
        let chain_nonce = match wallet.next_nonce {
            Some(_) => 0,
            None => self.chain.pending_nonce(from).await?,
        };
        self.fail_point("before_sign")?;
        let count = u64::from(usdc_gas.is_some()) + u64::from(gas_wei.is_some());
        let key = sealed(&wallet)?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        // The payment may have been cancelled or signed by another pass since it was read.
        let current = payment_rows::get(&mut *tx, &payment.id).await?;
        if current.status != "queued"
            || !payment_rows::transactions_of(&mut *tx, &payment.id)
                .await?
                .is_empty()
        {
            return Ok(false);
        }
        let mut nonce = wallets::reserve_nonces(&mut tx, &wallet.id, chain_nonce, count).await?;
        let mut legs = Vec::new();
        if let Some(gas_limit) = usdc_gas {
            legs.push((
                "usdc",
                self.chain.usdc_transfer(nonce, gas_limit, fees, to, amount),
                None,
            ));
            nonce += 1;
        }
        if let Some(wei) = gas_wei {
            legs.push((
                "eth",
                self.chain.eth_transfer(nonce, fees, to, wei),
                Some(wei),
            ));
        }
        let mut signed_legs = Vec::new();
        for (asset, unsigned, wei) in legs {
            let signed = self.custody.sign(&key, unsigned)?;
            let hash = signed.hash.to_string();
            let leg_nonce =
                i64::try_from(signed.nonce).map_err(|_| LedgerError::Corrupt("nonce".into()))?;
            payment_rows::insert_transaction(
                &mut tx,
                &payment.id,
                asset,
                &wallet.id,
                leg_nonce,
                &hash,
                &signed.raw,
                now,
            )
            .await?;
            signed_legs.push(serde_json::json!({
                "asset": asset, "nonce": signed.nonce, "tx_hash": hash, "wei": wei.map(|w| w.to_string()),
            }));
        }
        let primary = signed_legs
            .first()
            .and_then(|leg| leg["tx_hash"].as_str())
            .map(str::to_string);
        payment_rows::sync_chain_fields(&mut tx, &payment.id, now).await?;
        audit::append(
            &mut tx,
            now,
            self.event(
                payment,
                "transaction_signed",
                serde_json::json!({
                    "from": from.to_string(),
                    "max_fee_per_gas": fees.max_fee_per_gas.to_string(),
                    "max_priority_fee_per_gas": fees.max_priority_fee_per_gas.to_string(),
                    "usdc_gas_limit": usdc_gas,
                    "transactions": signed_legs,
                }),
                primary.clone(),
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        tracing::info!(payment_id = %payment.id, tx_hash = ?primary, "signed");
        Ok(true)
    }

    async fn fail_before_signing(&self, payment: &PaymentRow, reason: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        payment_rows::set_failure(&mut tx, &payment.id, PaymentStatus::Queued, reason, now).await?;
        audit::append(
            &mut tx,
            now,
            self.event(
                payment,
                "payment_failed",
                serde_json::json!({"failure_reason": reason}),
                None,
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        tracing::warn!(payment_id = %payment.id, reason, "payment failed before signing");
        Ok(())
    }

    /// Broadcasts a stored transaction; `true` once the node has it.
    async fn broadcast(&self, transaction: &TransactionRow) -> Result<bool> {
        let hash = transaction
            .tx_hash
            .parse()
            .map_err(|_| LedgerError::Corrupt("tx hash".into()))?;
        if let Err(error) = self.chain.broadcast(&transaction.raw).await {
            // "already known", "nonce too low" after a lost reply, a timeout: ask the chain.
            if !self.chain.knows_transaction(hash).await? {
                tracing::warn!(tx_hash = %transaction.tx_hash, %error, "broadcast not accepted; will retry");
                return Ok(false);
            }
        }
        self.fail_point("after_broadcast")?;
        let head = self.chain.head().await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        payment_rows::update_transaction(
            &mut tx,
            transaction.id,
            TransactionStatus::Submitted,
            None,
            None,
            0,
            now,
        )
        .await?;
        payment_rows::set_broadcast_block(&mut tx, transaction.id, head).await?;
        self.advance_payment(&mut tx, &transaction.payment_id, now)
            .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(true)
    }

    /// Follows one nonce slot on chain: the live transaction and any it replaced, since whichever
    /// of them a block includes is the one that counts. `true` if anything changed.
    async fn watch(&self, live: &TransactionRow, head: u64) -> Result<bool> {
        let mut candidates = vec![live.clone()];
        candidates.extend(
            payment_rows::replaced_siblings(self.ledger.pool(), &live.wallet_id, live.nonce)
                .await?,
        );
        let mut mined = None;
        for candidate in &candidates {
            if let Some(receipt) = self.chain.receipt(parse_hash(&candidate.tx_hash)?).await?
                && self.chain.block_hash(receipt.block_number).await? == receipt.block_hash
            {
                mined = Some((candidate.clone(), receipt));
                break;
            }
        }
        let now = self.now();
        match mined {
            Some((winner, receipt)) => {
                // A revert's reason is read from the node before the write transaction starts.
                let reason = if receipt.success {
                    None
                } else {
                    Some(self.revert_reason(&winner, receipt.block_number).await?)
                };
                let mut tx = self.ledger.begin().await?;
                if let Some(reason) = &reason {
                    payment_rows::set_failure_reason(&mut tx, &winner.payment_id, reason).await?;
                }
                let switched = winner.id != live.id;
                if switched {
                    // An earlier fee level got mined after all: it is the transaction of record.
                    payment_rows::mark_replaced(&mut tx, live.id, now).await?;
                }
                let changed = self
                    .record_receipt(&mut tx, &winner, &receipt, head, now)
                    .await?
                    || switched;
                tx.commit().await.map_err(LedgerError::from)?;
                Ok(changed)
            }
            None if live.status == "included" => {
                // Its block is no longer canonical: back to submitted; the next pass rebroadcasts
                // the same signed bytes if the node has lost the transaction.
                let mut tx = self.ledger.begin().await?;
                payment_rows::update_transaction(
                    &mut tx,
                    live.id,
                    TransactionStatus::Submitted,
                    None,
                    None,
                    0,
                    now,
                )
                .await?;
                payment_rows::set_broadcast_block(&mut tx, live.id, head).await?;
                let payment = payment_rows::get(&mut *tx, &live.payment_id).await?;
                audit::append(
                    &mut tx,
                    now,
                    self.event(
                        &payment,
                        "reorg",
                        serde_json::json!({
                            "old_block_number": live.block_number,
                            "old_block_hash": live.block_hash,
                            "head": head,
                        }),
                        Some(live.tx_hash.clone()),
                        None,
                        None,
                    ),
                )
                .await?;
                self.advance_payment(&mut tx, &live.payment_id, now).await?;
                tx.commit().await.map_err(LedgerError::from)?;
                Ok(true)
            }
            None => {
                let mut changed = false;
                if !self
                    .chain
                    .knows_transaction(parse_hash(&live.tx_hash)?)
                    .await?
                {
                    if !self.rebroadcast(live, head).await? {
                        return Ok(false);
                    }
                    changed = true;
                }
                // Blocks since this fee level was first broadcast: a pool that drops an
                // underpriced transaction is a sign that it is stuck, not a reason to wait anew.
                let since = live
                    .broadcast_block
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(head);
                if head.saturating_sub(since) >= self.settings().stuck_after_blocks {
                    changed |= self.replace(live, head).await?;
                }
                Ok(changed)
            }
        }
    }

    /// `reverted: <the node's reason>` for a transaction that failed on chain.
    async fn revert_reason(
        &self,
        transaction: &TransactionRow,
        block_number: u64,
    ) -> Result<String> {
        let wallet = wallets::get(self.ledger.pool(), &transaction.wallet_id).await?;
        let reason = match crate::chain::Chain::decode_eip1559(&transaction.raw) {
            Some(unsigned) => {
                self.chain
                    .revert_reason(wallet.address()?, &unsigned, block_number)
                    .await
            }
            None => None,
        };
        Ok(match reason {
            Some(reason) => format!("reverted: {reason}"),
            None => "reverted".into(),
        })
    }

    /// Sends the stored signed bytes again (the node dropped them, or a reorg took them out).
    async fn rebroadcast(&self, live: &TransactionRow, head: u64) -> Result<bool> {
        if let Err(error) = self.chain.broadcast(&live.raw).await
            && !self
                .chain
                .knows_transaction(parse_hash(&live.tx_hash)?)
                .await?
        {
            tracing::warn!(tx_hash = %live.tx_hash, %error, "rebroadcast not accepted; will retry");
            return Ok(false);
        }
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = payment_rows::get(&mut *tx, &live.payment_id).await?;
        audit::append(
            &mut tx,
            now,
            self.event(
                &payment,
                "transaction_rebroadcast",
                serde_json::json!({"nonce": live.nonce, "head": head}),
                Some(live.tx_hash.clone()),
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        tracing::info!(tx_hash = %live.tx_hash, "rebroadcast");
        Ok(true)
    }

    /// Replaces a stuck transaction at the same nonce with fee cap and tip each raised by at least
    /// 12.5% (more if the node now asks more), never above the configured cap. At the cap it
    /// waits instead.
    async fn replace(&self, live: &TransactionRow, head: u64) -> Result<bool> {
        let old = crate::chain::Chain::decode_eip1559(&live.raw).ok_or_else(|| {
            LedgerError::Corrupt(format!("transaction {} is not EIP-1559", live.id))
        })?;
        let cap = self.settings().max_fee_per_gas_wei;
        let bump = |fee: u128| fee.saturating_add(fee.div_ceil(8));
        let market = self.chain.fees().await?;
        let max_fee = bump(old.max_fee_per_gas).max(market.max_fee_per_gas);
        let tip = bump(old.max_priority_fee_per_gas)
            .max(market.max_priority_fee_per_gas)
            .min(max_fee);
        if max_fee > cap {
            tracing::warn!(tx_hash = %live.tx_hash, max_fee, cap, "stuck, but a replacement would exceed the fee cap; waiting");
            return Ok(false);
        }
        let wallet = wallets::get(self.ledger.pool(), &live.wallet_id).await?;
        let needed = alloy::primitives::U256::from(old.gas_limit)
            * alloy::primitives::U256::from(max_fee)
            + old.value;
        if self.chain.eth_balance(wallet.address()?).await? < needed {
            tracing::warn!(tx_hash = %live.tx_hash, "stuck, and the wallet lacks the ETH to pay higher fees; waiting");
            return Ok(false);
        }
        let unsigned = alloy::consensus::TxEip1559 {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            ..old.clone()
        };
        let signed = self.custody.sign(&sealed(&wallet)?, unsigned)?;
        let hash = signed.hash.to_string();
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        payment_rows::mark_replaced(&mut tx, live.id, now).await?;
        payment_rows::insert_transaction(
            &mut tx,
            &live.payment_id,
            &live.asset,
            &live.wallet_id,
            live.nonce,
            &hash,
            &signed.raw,
            now,
        )
        .await?;
        payment_rows::sync_chain_fields(&mut tx, &live.payment_id, now).await?;
        let payment = payment_rows::get(&mut *tx, &live.payment_id).await?;
        audit::append(&mut tx, now, self.event(&payment, "transaction_replaced", serde_json::json!({
            "nonce": live.nonce,
            "replaced_tx_hash": live.tx_hash,
            "blocks_waited": head.saturating_sub(live.broadcast_block.and_then(|b| u64::try_from(b).ok()).unwrap_or(head)),
            "old_max_fee_per_gas": old.max_fee_per_gas.to_string(),
            "old_max_priority_fee_per_gas": old.max_priority_fee_per_gas.to_string(),
            "max_fee_per_gas": max_fee.to_string(),
            "max_priority_fee_per_gas": tip.to_string(),
        }), Some(hash.clone()), None, None)).await?;
        tx.commit().await.map_err(LedgerError::from)?;
        tracing::info!(old = %live.tx_hash, new = %hash, "replaced a stuck transaction");
        // Broadcast now rather than a pass later: the old one is still in the pool meanwhile.
        let rows = payment_rows::transactions_of(self.ledger.pool(), &live.payment_id).await?;
        if let Some(row) = rows.iter().find(|t| t.tx_hash == hash) {
            self.broadcast(row).await?;
        }
        Ok(true)
    }

    /// Re-checks the blocks of recently confirmed transactions. A confirmed transaction whose
    /// block left the canonical chain is a reorg deeper than the confirmation depth: raised as a
    /// `finality_violation` alarm for a human, never rewritten silently.
    async fn check_finality(&self, head: u64) -> Result<usize> {
        let window = self
            .confirmations_required()
            .saturating_mul(FINALITY_WATCH_FACTOR);
        let from = i64::try_from(head.saturating_sub(window)).unwrap_or(0);
        let mut alarms = 0;
        for transaction in payment_rows::recently_confirmed(self.ledger.pool(), from).await? {
            let Some(number) = transaction.block_number.and_then(|n| u64::try_from(n).ok()) else {
                continue;
            };
            let canonical = self.chain.block_hash(number).await?.to_string();
            if Some(&canonical) == transaction.block_hash.as_ref() {
                continue;
            }
            let now = self.now();
            let mut tx = self.ledger.begin().await?;
            payment_rows::set_finality_alarm(&mut tx, transaction.id).await?;
            let payment = payment_rows::get(&mut *tx, &transaction.payment_id).await?;
            audit::append(
                &mut tx,
                now,
                self.event(
                    &payment,
                    "finality_violation",
                    serde_json::json!({
                        "block_number": number,
                        "recorded_block_hash": transaction.block_hash,
                        "canonical_block_hash": canonical,
                        "confirmations_required": self.confirmations_required(),
                    }),
                    Some(transaction.tx_hash.clone()),
                    transaction.block_number,
                    transaction.block_hash.clone(),
                ),
            )
            .await?;
            tx.commit().await.map_err(LedgerError::from)?;
            tracing::error!(tx_hash = %transaction.tx_hash, "finality violation: a confirmed transaction's block was reorganized away");
            alarms += 1;
        }
        Ok(alarms)
    }

    async fn record_receipt(
        &self,
        tx: &mut Tx,
        transaction: &TransactionRow,
        receipt: &Receipt,
        head: u64,
        now: i64,
    ) -> Result<bool> {
        let block_number = i64::try_from(receipt.block_number)
            .map_err(|_| LedgerError::Corrupt("block".into()))?;
        let block_hash = receipt.block_hash.to_string();
        let confirmations =
            i64::try_from(head.saturating_sub(receipt.block_number)).unwrap_or(i64::MAX);
        let status = if !receipt.success {
            TransactionStatus::Failed
        } else if confirmations >= i64::try_from(self.confirmations_required()).unwrap_or(i64::MAX)
        {
            TransactionStatus::Confirmed
        } else {
            TransactionStatus::Included
        };
        let moved_block = transaction
            .block_hash
            .as_deref()
            .is_some_and(|old| old != block_hash);
        if transaction.status == status.as_str()
            && transaction.confirmations == confirmations
            && !moved_block
        {
            return Ok(false);
        }
        if moved_block {
            let payment = payment_rows::get(&mut **tx, &transaction.payment_id).await?;
            audit::append(
                tx,
                now,
                self.event(
                    &payment,
                    "reorg",
                    serde_json::json!({
                        "old_block_number": transaction.block_number,
                        "old_block_hash": transaction.block_hash,
                        "new_block_number": block_number,
                        "new_block_hash": block_hash,
                    }),
                    Some(transaction.tx_hash.clone()),
                    Some(block_number),
                    Some(block_hash.clone()),
                ),
            )
            .await?;
        }
        payment_rows::update_transaction(
            tx,
            transaction.id,
            status,
            Some(block_number),
            Some(&block_hash),
            confirmations,
            now,
        )
        .await?;
        self.advance_payment(tx, &transaction.payment_id, now)
            .await?;
        Ok(true)
    }

    /// Moves the payment to the status its transactions add up to (the least advanced of them,
    /// or failed if any failed), one legal edge at a time, with an audit event for each edge.
    async fn advance_payment(&self, tx: &mut Tx, payment_id: &str, now: i64) -> Result<()> {
        let payment = payment_rows::get(&mut **tx, payment_id).await?;
        let mut transactions = payment_rows::transactions_of(&mut **tx, payment_id).await?;
        transactions.retain(|t| t.status != "replaced");
        // The payment reports its USDC transaction, or its ETH one for an ETH-only funding.
        let primary = transactions
            .iter()
            .rev()
            .find(|t| t.asset == "usdc")
            .or_else(|| transactions.last());
        let Some(usdc) = primary else {
            return Ok(());
        };
        payment_rows::sync_chain_fields(tx, payment_id, now).await?;
        let rank = |s: &str| match s {
            "signed" => 0,
            "submitted" => 1,
            "included" => 2,
            "confirmed" => 3,
            _ => 4,
        };
        let failed = transactions.iter().any(|t| t.status == "failed");
        let least = transactions
            .iter()
            .map(|t| rank(&t.status))
            .min()
            .unwrap_or(0);
        let target = if failed {
            PaymentStatus::Failed
        } else {
            match least {
                0 => PaymentStatus::Queued,
                1 => PaymentStatus::Submitted,
                2 => PaymentStatus::Included,
                _ => PaymentStatus::Confirmed,
            }
        };
        let mut current = payment.status()?;
        // A replacement that is signed but not yet broadcast does not take a submitted payment
        // back to queued: its nonce is already on its way.
        let target = if target == PaymentStatus::Queued && current != PaymentStatus::Queued {
            current
        } else {
            target
        };
        while current != target {
            let next = next_step(current, target).ok_or_else(|| {
                PaymentsError::Conflict(format!(
                    "payment {payment_id} cannot go from {current} to {target}"
                ))
            })?;
            let reason = payment
                .failure_reason
                .clone()
                .unwrap_or_else(|| "reverted".into());
            if next == PaymentStatus::Failed {
                payment_rows::set_failure(tx, payment_id, current, &reason, now).await?;
            } else {
                payment_rows::set_status(tx, payment_id, current, next, now).await?;
            }
            let (kind, detail) = match next {
                PaymentStatus::Failed => (
                    "payment_failed",
                    serde_json::json!({"failure_reason": reason}),
                ),
                PaymentStatus::Submitted if current == PaymentStatus::Included => {
                    ("payment_unincluded", serde_json::json!({}))
                }
                PaymentStatus::Submitted => (
                    "payment_submitted",
                    serde_json::json!({"nonce": usdc.nonce}),
                ),
                PaymentStatus::Included => (
                    "payment_included",
                    serde_json::json!({"confirmations": usdc.confirmations}),
                ),
                _ => (
                    "payment_confirmed",
                    serde_json::json!({
                        "confirmations": usdc.confirmations,
                        "required": self.confirmations_required(),
                    }),
                ),
            };
            let (block_number, block_hash) = if next == PaymentStatus::Submitted {
                (None, None)
            } else {
                (usdc.block_number, usdc.block_hash.clone())
            };
            audit::append(
                tx,
                now,
                self.event(
                    &payment,
                    kind,
                    detail,
                    Some(usdc.tx_hash.clone()),
                    block_number,
                    block_hash,
                ),
            )
            .await?;
            current = next;
        }
        Ok(())
    }

    fn event(
        &self,
        payment: &PaymentRow,
        kind: &'static str,
        detail: serde_json::Value,
        tx_hash: Option<String>,
        block_number: Option<i64>,
        block_hash: Option<String>,
    ) -> NewEvent {
        NewEvent {
            kind,
            agent_id: payment.agent_id.clone(),
            credential_id: payment.credential_id.clone(),
            payment_id: Some(payment.id.clone()),
            actor: "settlement".into(),
            detail,
            tx_hash,
            block_number,
            block_hash,
        }
    }
}

/// The next legal status on the way from `current` to `target`.
fn next_step(current: PaymentStatus, target: PaymentStatus) -> Option<PaymentStatus> {
    use PaymentStatus::*;
    let next = match (current, target) {
        (_, Failed) if current.can_become(Failed) => Failed,
        (Queued, _) => Submitted,
        (Submitted, Included | Confirmed) => Included,
        (Included, Confirmed) => Confirmed,
        (Included, Submitted | Queued) => Submitted,
        _ => return None,
    };
    current.can_become(next).then_some(next)
}

fn is_transient(error: &PaymentsError) -> bool {
    matches!(error, PaymentsError::Chain(e) if e.is_retryable())
}

fn parse_hash(text: &str) -> Result<alloy::primitives::B256> {
    text.parse()
        .map_err(|_| LedgerError::Corrupt(format!("transaction hash {text}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    #[test]
    fn steps_follow_the_state_machine() {
        assert_eq!(next_step(Queued, Confirmed), Some(Submitted));
        assert_eq!(next_step(Submitted, Confirmed), Some(Included));
        assert_eq!(next_step(Included, Confirmed), Some(Confirmed));
        assert_eq!(next_step(Included, Submitted), Some(Submitted));
        assert_eq!(next_step(Submitted, Failed), Some(Failed));
        assert_eq!(next_step(Confirmed, Submitted), None);
    }
}
