//! Sending and replacing: broadcasting a slot's live transaction, diagnosing a refusal from the
//! chain's state, re-signing at the same nonce with higher fees, and filling a slot Bursar gives
//! up with a zero-value self-transfer so its original can never execute.

use super::slot::{self, Refusal};
use super::{Pass, fees, parse_hash};
use crate::chain::{Chain, Fees};
use crate::domain::{Address, Asset, AuditKind, TransactionStatus, WaitingReason};
use crate::ledger::LedgerError;
use crate::ledger::audit;
use crate::ledger::payments::{self as payment_rows, FILLER, NewTransaction, TransactionRow};
use crate::payments::{Payments, Result};
use alloy::consensus::TxEip1559;
use alloy::primitives::U256;

/// Whether a send reached the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sent {
    Arrived,
    /// Refused; the refusal was handled (a wait, a re-sign or a filler).
    Refused,
}

fn decoded(transaction: &TransactionRow) -> Result<TxEip1559> {
    Chain::decode_eip1559(&transaction.raw).ok_or_else(|| {
        LedgerError::Corrupt(format!("transaction {} is not EIP-1559", transaction.id)).into()
    })
}

fn fees_of(transaction: &TxEip1559) -> Fees {
    Fees {
        max_fee_per_gas: transaction.max_fee_per_gas,
        max_priority_fee_per_gas: transaction.max_priority_fee_per_gas,
    }
}

impl Payments {
    /// Sends the live transaction; if the node refuses it, finds out why from the chain.
    pub(super) async fn send(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
        address: Address,
    ) -> Result<Sent> {
        match self.try_send(pass, live).await? {
            Ok(()) => Ok(Sent::Arrived),
            Err(node_error) => {
                self.refused(pass, live, address, &node_error).await?;
                Ok(Sent::Refused)
            }
        }
    }

    /// Broadcasts and records the result. Whether the transaction arrived is decided by asking
    /// the chain for its hash ("already known", a lost reply), never by the error's text;
    /// `Err(text)` carries the node's words for the audit log only.
    async fn try_send(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
    ) -> Result<std::result::Result<(), String>> {
        if let Err(error) = self.chain.broadcast(&live.raw).await
            && !self
                .chain
                .knows_transaction(parse_hash(&live.tx_hash)?)
                .await?
        {
            return Ok(Err(error.to_string()));
        }
        self.fail_point("after_broadcast")?;
        self.record_sent(live, pass.head).await?;
        pass.report.broadcast += 1;
        Ok(Ok(()))
    }

    /// The node has the transaction: a first broadcast makes it `submitted`; a resend is audited.
    async fn record_sent(&self, live: &TransactionRow, head: u64) -> Result<()> {
        let now = self.now();
        self.ledger
            .write_sync(|tx| self.record_sent_in(tx, live, head, now))
            .await
    }

    /// `record_sent` inside the caller's write transaction (a lane's batch of first sends).
    pub(super) fn record_sent_in(
        &self,
        tx: &mut crate::ledger::SyncTx<'_>,
        live: &TransactionRow,
        head: u64,
        now: crate::ledger::Millis,
    ) -> Result<()> {
        let payment = payment_rows::get_in(tx, &live.payment_id)?;
        if live.status == TransactionStatus::Signed {
            payment_rows::reopen_transaction(tx, live.id, head, now)?;
            audit::append_in(
                tx,
                now,
                self.event(
                    &payment,
                    AuditKind::TransactionBroadcast,
                    serde_json::json!({"nonce": live.nonce, "head": head, "purpose": live.purpose}),
                    Some(live.tx_hash.clone()),
                    None,
                    None,
                ),
            )?;
        } else {
            // The broadcast block stays: a pool that dropped the transaction is a sign that it
            // is stuck, not a reason to wait anew.
            audit::append_in(
                tx,
                now,
                self.event(
                    &payment,
                    AuditKind::TransactionRebroadcast,
                    serde_json::json!({"nonce": live.nonce, "head": head}),
                    Some(live.tx_hash.clone()),
                    None,
                    None,
                ),
            )?;
        }
        if live.unsendable_since.is_some() {
            payment_rows::set_unsendable_since(tx, live.id, None)?;
        }
        if !payment.status()?.is_terminal() && payment.waiting_reason.is_some() && !live.is_filler()
        {
            payment_rows::set_waiting_reason(tx, &payment.id, None, now)?;
        }
        self.advance(tx, &payment, now)?;
        Ok(())
    }

    /// The node refused a transaction whose nonce is still open. No gas: wait (and top the
    /// wallet up), never give up, since the bytes may still execute. Under the base fee: re-sign
    /// at the same nonce with fees that clear it. Anything else: count blocks, and fill the slot
    /// once `unsendable_after_blocks` have passed.
    async fn refused(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
        address: Address,
        node_error: &str,
    ) -> Result<()> {
        let old = decoded(live)?;
        let (balance, base_fee) =
            tokio::try_join!(self.chain.eth_balance(address), self.chain.next_base_fee())?;
        let cost = Chain::worst_case_cost(&old);
        let detail = serde_json::json!({
            "tx_hash": live.tx_hash, "nonce": live.nonce, "node_error": node_error,
            "balance_wei": balance.to_string(), "needed_wei": cost.to_string(),
            "max_fee_per_gas": old.max_fee_per_gas.to_string(), "next_base_fee": base_fee.to_string(),
        });
        match slot::diagnose(balance, cost, old.max_fee_per_gas, base_fee) {
            Refusal::NoGas => {
                self.top_up_wallet(&live.wallet_id).await?;
                self.wait(&live.payment_id, WaitingReason::InsufficientGas, detail)
                    .await
            }
            Refusal::Underpriced => {
                let market = self.chain.fees().await?;
                match fees::replacement(
                    fees_of(&old),
                    market,
                    base_fee,
                    self.settings().max_fee_per_gas_wei,
                ) {
                    Some(fees) => self
                        .resign(pass, live, address, fees, "underpriced")
                        .await
                        .map(|_| ()),
                    None => {
                        self.wait(&live.payment_id, WaitingReason::FeeCapBelowBaseFee, detail)
                            .await
                    }
                }
            }
            Refusal::Other => {
                let since = match live.unsendable_since {
                    Some(since) => u64::try_from(since).unwrap_or(pass.head),
                    None => {
                        self.mark_unsendable(live, pass.head).await?;
                        pass.head
                    }
                };
                let blocks = pass.head.saturating_sub(since);
                if blocks >= self.settings().unsendable_after_blocks && !live.is_filler() {
                    return self
                        .fill(pass, live, address, "unsendable")
                        .await
                        .map(|_| ());
                }
                let mut detail = detail;
                detail["blocks_refused"] = blocks.into();
                self.wait(&live.payment_id, WaitingReason::NodeRefused, detail)
                    .await
            }
        }
    }

    async fn mark_unsendable(&self, live: &TransactionRow, head: u64) -> Result<()> {
        let head = i64::try_from(head).map_err(|_| LedgerError::Corrupt("block number".into()))?;
        let mut tx = self.ledger.begin().await?;
        tx.run_sync(|s| payment_rows::set_unsendable_since(s, live.id, Some(head)))
            .await?;
        tx.commit_unaudited("the block at which the node first refused a transaction")
            .await?;
        Ok(())
    }

    /// Replaces a transaction stuck in the node's pool at the same nonce, with fee cap and tip
    /// each raised at least 12.5% (more if the market or the base fee asks more), never above the
    /// configured cap: at the cap it waits instead.
    pub(super) async fn replace_stuck(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
        address: Address,
    ) -> Result<bool> {
        let old = decoded(live)?;
        let (market, base_fee) = tokio::try_join!(self.chain.fees(), self.chain.next_base_fee())?;
        let Some(fees) = fees::replacement(
            fees_of(&old),
            market,
            base_fee,
            self.settings().max_fee_per_gas_wei,
        ) else {
            self.wait(
                &live.payment_id,
                WaitingReason::StuckAtFeeCap,
                serde_json::json!({
                    "tx_hash": live.tx_hash, "max_fee_per_gas": old.max_fee_per_gas.to_string(),
                    "cap": self.settings().max_fee_per_gas_wei.to_string(),
                }),
            )
            .await?;
            return Ok(false);
        };
        let needed = U256::from(old.gas_limit) * U256::from(fees.max_fee_per_gas) + old.value;
        let balance = self.chain.eth_balance(address).await?;
        if balance < needed {
            self.top_up_wallet(&live.wallet_id).await?;
            self.wait(&live.payment_id, WaitingReason::InsufficientGas, serde_json::json!({
                "tx_hash": live.tx_hash, "balance_wei": balance.to_string(), "needed_wei": needed.to_string(),
            })).await?;
            return Ok(false);
        }
        self.resign(pass, live, address, fees, "stuck").await
    }

    /// Signs the same transaction with new fees at the same nonce, stores it as the slot's live
    /// transaction (the old one stays in the slot as `replaced`, still watched), and sends it.
    async fn resign(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
        address: Address,
        fees: Fees,
        why: &str,
    ) -> Result<bool> {
        let old = decoded(live)?;
        let unsigned = TxEip1559 {
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            ..old.clone()
        };
        let blocks_waited = live
            .broadcast_block
            .and_then(|b| u64::try_from(b).ok())
            .map_or(0, |b| pass.head.saturating_sub(b));
        let detail = serde_json::json!({
            "why": why,
            "nonce": live.nonce,
            "replaced_tx_hash": live.tx_hash,
            "blocks_waited": blocks_waited,
            "old_max_fee_per_gas": old.max_fee_per_gas.to_string(),
            "old_max_priority_fee_per_gas": old.max_priority_fee_per_gas.to_string(),
            "max_fee_per_gas": fees.max_fee_per_gas.to_string(),
            "max_priority_fee_per_gas": fees.max_priority_fee_per_gas.to_string(),
        });
        let purpose = live.purpose.clone();
        self.take_slot(
            pass,
            live,
            address,
            unsigned,
            &purpose,
            AuditKind::TransactionReplaced,
            detail,
        )
        .await
    }

    /// Gives a slot up: a zero-value transfer from the wallet to itself at the same nonce, priced
    /// to replace the original in any pool. Once the filler is included at depth the original can
    /// never execute, and only then does the payment fail (`rollup`); if the original wins the
    /// slot instead, the payment records that.
    pub(super) async fn fill(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
        address: Address,
        reason: &str,
    ) -> Result<bool> {
        let old = decoded(live)?;
        let (market, base_fee) = tokio::try_join!(self.chain.fees(), self.chain.next_base_fee())?;
        let cap = self.settings().max_fee_per_gas_wei;
        let fees = fees::replacement(fees_of(&old), market, base_fee, cap)
            .unwrap_or_else(|| fees::capped(market, cap));
        let filler = self
            .chain
            .eth_transfer(old.nonce, fees, address, U256::ZERO);
        let detail = serde_json::json!({
            "reason": reason, "nonce": live.nonce, "replaced_tx_hash": live.tx_hash,
            "max_fee_per_gas": fees.max_fee_per_gas.to_string(),
        });
        self.take_slot(
            pass,
            live,
            address,
            filler,
            FILLER,
            AuditKind::NonceFillerSigned,
            detail,
        )
        .await
    }

    /// Signs `unsigned` for the live transaction's slot, and in one database transaction marks
    /// the live one `replaced`, stores the new one and audits `kind`; then tries to send it once.
    #[allow(clippy::too_many_arguments)]
    async fn take_slot(
        &self,
        pass: &mut Pass,
        live: &TransactionRow,
        address: Address,
        unsigned: TxEip1559,
        purpose: &str,
        kind: AuditKind,
        detail: serde_json::Value,
    ) -> Result<bool> {
        let (_, key) = self.wallet_key(&live.wallet_id).await?;
        let signed = self.custody.sign(&key, unsigned)?;
        let hash = signed.hash.to_string();
        let asset = if purpose == FILLER {
            Asset::Eth
        } else {
            live.asset
        };
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        tx.run_sync(|s| {
            payment_rows::set_transaction_status(s, live.id, TransactionStatus::Replaced, now)
        })
        .await?;
        let new = NewTransaction {
            payment_id: &live.payment_id,
            asset,
            purpose,
            wallet_id: &live.wallet_id,
            nonce: live.nonce,
            tx_hash: &hash,
            raw: &signed.raw,
        };
        tx.run_sync(|s| payment_rows::insert_transaction(s, new, now))
            .await?;
        tx.run_sync(|s| payment_rows::sync_chain_fields(s, &live.payment_id, now))
            .await?;
        let payment = payment_rows::get(&mut *tx, &live.payment_id).await?;
        if purpose == FILLER && !payment.status()?.is_terminal() {
            tx.run_sync(|s| {
                payment_rows::set_waiting_reason(
                    s,
                    &payment.id,
                    Some(WaitingReason::NonceFillerPending.as_str()),
                    now,
                )
            })
            .await?;
        }
        audit::append(
            &mut tx,
            now,
            self.event(&payment, kind, detail, Some(hash.clone()), None, None),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(old = %live.tx_hash, new = %hash, kind = kind.as_str(), wallet = %address, "took a nonce slot with a new transaction");
        self.fail_point("after_replace")?;
        // Send now rather than a pass later; a refusal is diagnosed next pass.
        let slot = payment_rows::slot(self.ledger.pool(), &live.wallet_id, live.nonce).await?;
        if let Some(row) = slot.iter().find(|t| t.tx_hash == hash) {
            let _ = self.try_send(pass, row).await?;
        }
        Ok(true)
    }
}
