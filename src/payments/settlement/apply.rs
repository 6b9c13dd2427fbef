//! Applying what the chain says: each state change of a slot or a payment in one database
//! transaction with its audit events. Nothing here reads the chain inside a write transaction;
//! what a change needs from the node is read before it begins.

use super::Pass;
use super::rollup::{self, Leg, Target};
use super::watch::Slot;
use crate::chain::Receipt;
use crate::domain::AuditKind;
use crate::domain::{Address, PaymentStatus, TransactionStatus, WaitingReason};
use crate::ledger::audit;
use crate::ledger::payments::{self as payment_rows, PaymentRow, TransactionRow};
use crate::ledger::{LedgerError, Millis, SyncTx, wallets};
use crate::payments::{Payments, PaymentsError, Result};

impl Payments {
    /// A canonical block includes the slot's transaction at `index`: it is the transaction of
    /// record, whatever state the others are in. Final (confirmed, or failed if it reverted) only
    /// at the required depth; then the slot's other transactions are dropped for good.
    pub(super) async fn record(
        &self,
        pass: &mut Pass,
        slot: &Slot,
        index: usize,
        receipt: &Receipt,
    ) -> Result<bool> {
        let reason = self
            .revert_reason_at_depth(pass, slot, index, receipt)
            .await?;
        let now = self.now();
        self.ledger
            .write_sync(|tx| {
                let changed =
                    self.record_in(tx, pass.head, slot, index, receipt, reason.as_deref(), now)?;
                tx.keep_unaudited("a waiting reason an included transaction sets or clears");
                Ok(changed)
            })
            .await
    }

    /// What `record` reads from the node before any write transaction starts: the reason of a
    /// revert that reached the required depth.
    pub(super) async fn revert_reason_at_depth(
        &self,
        pass: &Pass,
        slot: &Slot,
        index: usize,
        receipt: &Receipt,
    ) -> Result<Option<String>> {
        let confirmations = pass.head.saturating_sub(receipt.block_number);
        if !receipt.success && confirmations >= self.confirmations_required() {
            let winner = &slot.transactions[index];
            return Ok(Some(
                self.revert_reason(winner, receipt.block_number).await?,
            ));
        }
        Ok(None)
    }

    /// `record`'s writes, inside the caller's write transaction (a lane records every slot a
    /// pass found mined in one).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_in(
        &self,
        tx: &mut SyncTx<'_>,
        head: u64,
        slot: &Slot,
        index: usize,
        receipt: &Receipt,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let winner = &slot.transactions[index];
        let confirmations = head.saturating_sub(receipt.block_number);
        let final_depth = confirmations >= self.confirmations_required();
        let live = slot.live();
        let switched = live.id != winner.id;
        if switched {
            // An earlier fee level (or the original of a filler) got mined after all.
            payment_rows::set_transaction_status(tx, live.id, TransactionStatus::Replaced, now)?;
        }
        if final_depth {
            for other in slot.transactions.iter().filter(|t| t.id != winner.id) {
                payment_rows::set_transaction_status(
                    tx,
                    other.id,
                    TransactionStatus::Dropped,
                    now,
                )?;
            }
        }
        let payment = payment_rows::get_in(tx, &winner.payment_id)?;
        if let Some(node_reason) = reason {
            // The agent sees `reverted`; the node's sentence is kept in the audit log.
            payment_rows::set_failure_reason(tx, &winner.payment_id, "reverted")?;
            audit::append_in(
                tx,
                now,
                self.event(
                    &payment,
                    AuditKind::TransactionReverted,
                    serde_json::json!({"revert_reason": node_reason}),
                    Some(winner.tx_hash.clone()),
                    i64::try_from(receipt.block_number).ok(),
                    Some(receipt.block_hash.to_string()),
                ),
            )?;
        }
        let waiting = match (final_depth, winner.is_filler(), receipt.success) {
            (true, _, _) | (false, false, true) => None,
            (false, true, _) => Some(WaitingReason::NonceFillerPending),
            (false, false, false) => Some(WaitingReason::RevertAwaitingDepth),
        };
        if payment.waiting_reason.as_deref() != waiting.map(|w| w.as_str())
            && !payment.status()?.is_terminal()
        {
            payment_rows::set_waiting_reason(tx, &payment.id, waiting.map(|w| w.as_str()), now)?;
        }
        Ok(self.record_receipt(tx, &payment, winner, receipt, head, now)? || switched)
    }

    /// Writes where the chain has a transaction and rolls the payment up. A block hash that
    /// changed since the last pass is a reorg and is audited as one.
    fn record_receipt(
        &self,
        tx: &mut SyncTx<'_>,
        payment: &PaymentRow,
        transaction: &TransactionRow,
        receipt: &Receipt,
        head: u64,
        now: Millis,
    ) -> Result<bool> {
        let block_number = i64::try_from(receipt.block_number)
            .map_err(|_| LedgerError::Corrupt("block".into()))?;
        let block_hash = receipt.block_hash.to_string();
        let confirmations = head.saturating_sub(receipt.block_number);
        let status = match (
            confirmations >= self.confirmations_required(),
            receipt.success,
        ) {
            (false, _) => TransactionStatus::Included,
            (true, true) => TransactionStatus::Confirmed,
            (true, false) => TransactionStatus::Failed,
        };
        let confirmations = i64::try_from(confirmations).unwrap_or(i64::MAX);
        let moved_block = transaction
            .block_hash
            .as_deref()
            .is_some_and(|old| old != block_hash);
        if transaction.status == status && !moved_block {
            // At most the depth changed: an included payment's confirmations are counted from
            // the head the pass verified when it is read (`Payments::confirmations_of`), so no
            // row is rewritten per block.
            return Ok(false);
        }
        if moved_block {
            audit::append_in(
                tx,
                now,
                self.event(
                    payment,
                    AuditKind::Reorg,
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
            )?;
        }
        payment_rows::update_transaction(
            tx,
            transaction.id,
            status,
            Some(block_number),
            Some(&block_hash),
            confirmations,
            now,
        )?;
        if transaction.unsendable_since.is_some() {
            payment_rows::set_unsendable_since(tx, transaction.id, None)?;
        }
        let first_time = transaction.status != status;
        if transaction.purpose == payment_rows::TRANSFER && first_time {
            self.audit_terminal_surprises(
                tx,
                payment,
                transaction,
                status,
                block_number,
                &block_hash,
                now,
            )?;
        }
        self.advance(tx, payment, now)?;
        Ok(true)
    }

    /// What a transaction of a payment that is already final means: a cancelled payment whose
    /// signed bytes executed after all (an alarm), or a confirmed payment whose reorganized
    /// transaction is included again (`finality_restored`) or failed on the new chain (alarm).
    #[allow(clippy::too_many_arguments)]
    fn audit_terminal_surprises(
        &self,
        tx: &mut SyncTx<'_>,
        payment: &PaymentRow,
        transaction: &TransactionRow,
        status: TransactionStatus,
        block_number: i64,
        block_hash: &str,
        now: Millis,
    ) -> Result<()> {
        let kind = match (payment.status()?, status) {
            (PaymentStatus::Cancelled, TransactionStatus::Included) => {
                AuditKind::CancelledPaymentExecuted
            }
            (PaymentStatus::Confirmed, TransactionStatus::Confirmed) => AuditKind::FinalityRestored,
            (PaymentStatus::Confirmed, TransactionStatus::Failed) => {
                AuditKind::FinalityRepairFailed
            }
            _ => return Ok(()),
        };
        if kind == AuditKind::FinalityRestored {
            payment_rows::sync_chain_fields(tx, &payment.id, now)?;
        }
        audit::append_in(
            tx,
            now,
            self.event(
                payment,
                kind,
                serde_json::json!({"nonce": transaction.nonce}),
                Some(transaction.tx_hash.clone()),
                Some(block_number),
                Some(block_hash.to_string()),
            ),
        )?;
        Ok(())
    }

    /// A nonce used on chain by none of Bursar's transactions: a foreign transaction from the
    /// wallet's key took it. Alarm; every transaction of the slot is dropped (none can execute
    /// now) and the payment is signed again at a fresh nonce next pass, with the wallet's counter
    /// resynced from the chain. A slot Bursar had already given up (a filler) fails its payment.
    pub(super) async fn consumed_elsewhere(&self, slot: &Slot, address: Address) -> Result<()> {
        let live = slot.live();
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        for transaction in &slot.transactions {
            tx.run_sync(|s| {
                payment_rows::set_transaction_status(
                    s,
                    transaction.id,
                    TransactionStatus::Dropped,
                    now,
                )
            })
            .await?;
        }
        let payment = payment_rows::get(&mut *tx, &live.payment_id).await?;
        let hashes: Vec<&str> = slot
            .transactions
            .iter()
            .map(|t| t.tx_hash.as_str())
            .collect();
        audit::append(
            &mut tx,
            now,
            self.event(
                &payment,
                AuditKind::NonceConsumedExternally,
                serde_json::json!({
                    "wallet": address.to_string(), "nonce": live.nonce, "dropped_tx_hashes": hashes,
                    "action": if live.is_filler() { "payment_failed" } else { "re_sign" },
                }),
                Some(live.tx_hash.clone()),
                None,
                None,
            ),
        )
        .await?;
        let status = payment.status()?;
        if live.is_filler() && status.can_become(PaymentStatus::Failed) {
            tx.run_sync(|s| payment_rows::set_failure(s, &payment.id, status, "unsendable", now))
                .await?;
            tx.run_sync(|s| payment_rows::set_waiting_reason(s, &payment.id, None, now))
                .await?;
            audit::append(
                &mut tx,
                now,
                self.event(
                    &payment,
                    AuditKind::PaymentFailed,
                    serde_json::json!({"failure_reason": "unsendable"}),
                    None,
                    None,
                    None,
                ),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::error!(wallet = %address, nonce = live.nonce, "a transaction Bursar did not sign used this wallet's nonce");
        Ok(())
    }

    /// The live transaction's block left the canonical chain: back to submitted. The next pass
    /// sends the same signed bytes again if the node has lost them.
    pub(super) async fn unincluded(&self, live: &TransactionRow, head: u64) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        tx.run_sync(|s| payment_rows::reopen_transaction(s, live.id, head, now))
            .await?;
        let payment = payment_rows::get(&mut *tx, &live.payment_id).await?;
        audit::append(&mut tx, now, self.event(&payment, AuditKind::Reorg, serde_json::json!({
            "old_block_number": live.block_number, "old_block_hash": live.block_hash, "head": head,
        }), Some(live.tx_hash.clone()), None, None)).await?;
        tx.run_sync(|s| self.advance_payment(s, &live.payment_id, now))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the payment to the status its live transactions add up to (`rollup::target`), one
    /// legal edge at a time, with an audit event for each edge. A final payment never moves.
    pub(super) fn advance_payment(
        &self,
        tx: &mut SyncTx<'_>,
        payment_id: &str,
        now: Millis,
    ) -> Result<()> {
        let payment = payment_rows::get_in(tx, payment_id)?;
        self.advance(tx, &payment, now)
    }

    /// `advance_payment` of a payment the caller read in this write transaction. Of that read
    /// only what no settlement write changes is used (its status, amount and legs); each edge's
    /// audit event is written from the row its status change returns.
    pub(super) fn advance(
        &self,
        tx: &mut SyncTx<'_>,
        payment: &PaymentRow,
        now: Millis,
    ) -> Result<()> {
        let mut current = payment.status()?;
        if current.is_terminal() {
            return Ok(());
        }
        let rows = payment_rows::legs_in(tx, &payment.id)?;
        let legs: Vec<Leg> = rows
            .iter()
            .filter(|row| row.status.is_live())
            .map(|row| Leg {
                status: row.status,
                filler: row.is_filler(),
            })
            .collect();
        let (needs_usdc, needs_eth) = payment_rows::missing_legs_of(payment, &rows);
        let target = match rollup::target(&legs, usize::from(needs_usdc) + usize::from(needs_eth)) {
            Target::Status(target) => target,
            Target::Stay => current,
        };
        let filled = legs.iter().any(|l| l.filler);
        let mut path = Vec::new();
        while current != target {
            let next = rollup::next_step(current, target).ok_or_else(|| {
                PaymentsError::Conflict(format!(
                    "payment {} cannot go from {current} to {target}",
                    payment.id
                ))
            })?;
            path.push(next);
            current = next;
        }
        self.walk(
            tx,
            &payment.id,
            payment.status()?,
            &path,
            &rows,
            filled,
            now,
        )
    }

    /// The edges of a payment's roll-up, each with the audit event that explains it. The edges
    /// up to a success or an inclusion are one status change (`set_status_and_chain_along`),
    /// which also mirrors the current transfer of `legs` onto the payment; a failure, always
    /// last, records its reason with it. With no edge but a failure, or none at all, the chain
    /// fields are written on their own first.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        tx: &mut SyncTx<'_>,
        payment_id: &str,
        from: PaymentStatus,
        path: &[PaymentStatus],
        legs: &[payment_rows::LegRow],
        filled: bool,
        now: Millis,
    ) -> Result<()> {
        let (moves, fails) = match path.split_last() {
            Some((PaymentStatus::Failed, moves)) => (moves, true),
            _ => (path, false),
        };
        let mut current = from;
        if moves.is_empty() {
            payment_rows::write_chain_fields(tx, payment_id, legs, now)?;
        }
        if let Some(&last) = moves.last() {
            let moved = payment_rows::set_status_and_chain_along(
                tx,
                payment_id,
                current,
                moves,
                Some(legs),
                now,
            )?;
            if last.is_terminal() {
                payment_rows::set_waiting_reason(tx, payment_id, None, now)?;
            }
            for &next in moves {
                self.audit_edge(tx, &moved, current, next, String::new(), now)?;
                current = next;
            }
        }
        if fails {
            let default_reason = if filled { "unsendable" } else { "reverted" };
            let reason = payment_rows::failure_reason_in(tx, payment_id)?
                .unwrap_or_else(|| default_reason.into());
            let failed = payment_rows::set_failure(tx, payment_id, current, &reason, now)?;
            payment_rows::set_waiting_reason(tx, payment_id, None, now)?;
            self.audit_edge(tx, &failed, current, PaymentStatus::Failed, reason, now)?;
        }
        Ok(())
    }

    /// The audit event of one edge of the roll-up, from the payment as the walk left it.
    fn audit_edge(
        &self,
        tx: &mut SyncTx<'_>,
        payment: &PaymentRow,
        current: PaymentStatus,
        next: PaymentStatus,
        reason: String,
        now: Millis,
    ) -> Result<()> {
        let (kind, detail) = match next {
            PaymentStatus::Failed => (
                AuditKind::PaymentFailed,
                serde_json::json!({"failure_reason": reason}),
            ),
            PaymentStatus::Submitted if current == PaymentStatus::Included => {
                (AuditKind::PaymentUnincluded, serde_json::json!({}))
            }
            PaymentStatus::Submitted => (
                AuditKind::PaymentSubmitted,
                serde_json::json!({"nonce": payment.nonce}),
            ),
            PaymentStatus::Included => (
                AuditKind::PaymentIncluded,
                serde_json::json!({"confirmations": payment.confirmations}),
            ),
            _ => (
                AuditKind::PaymentConfirmed,
                serde_json::json!({
                    "confirmations": payment.confirmations, "required": self.confirmations_required(),
                }),
            ),
        };
        let (block_number, block_hash) = if next == PaymentStatus::Submitted {
            (None, None)
        } else {
            (payment.block_number, payment.block_hash.clone())
        };
        audit::append_in(
            tx,
            now,
            self.event(
                payment,
                kind,
                detail,
                payment.tx_hash.clone(),
                block_number,
                block_hash,
            ),
        )?;
        Ok(())
    }

    /// The node's reason for a transaction that failed on chain (its call replayed), if it gives one.
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
        Ok(reason.unwrap_or_else(|| "no reason given".into()))
    }
}
