//! Finality: confirmed transactions are re-checked against the canonical chain for
//! `finality_watch_blocks`. A block that was reorganized away after the required depth is a
//! `finality_violation` alarm, and is repaired: the payment records the orphaned block, its
//! transaction goes back to `submitted` and the same signed bytes (same nonce) are sent again,
//! so the payment is paid once and the wallet's later nonces are not blocked.

use crate::domain::AuditKind;
use crate::ledger::audit;
use crate::ledger::payments as payment_rows;
use crate::payments::{Payments, Result};

impl Payments {
    /// Block hashes are read once per block per pass (through the pass's cache), not once per
    /// transaction: a window holds thousands of transactions and a few dozen blocks.
    pub(super) async fn check_finality(&self, pass: &mut super::Pass) -> Result<usize> {
        let head = pass.head;
        let window = self.settings().finality_watch_blocks;
        let from = i64::try_from(head.saturating_sub(window)).unwrap_or(0);
        let mut alarms = 0;
        for transaction in payment_rows::recently_confirmed(self.ledger.pool(), from).await? {
            let (Some(number), Some(recorded)) = (
                transaction.block_number.and_then(|n| u64::try_from(n).ok()),
                transaction.block_hash.clone(),
            ) else {
                continue;
            };
            let canonical = self.block_hash(pass, number).await?.to_string();
            if canonical == recorded {
                continue;
            }
            let now = self.now();
            let mut tx = self.ledger.begin().await?;
            tx.run_sync(|s| payment_rows::reopen_transaction(s, transaction.id, head, now))
                .await?;
            let block_number = transaction.block_number.unwrap_or_default();
            payment_rows::add_orphaned_block(
                &mut tx,
                &transaction.payment_id,
                block_number,
                &recorded,
            )
            .await?;
            let payment = payment_rows::get(&mut *tx, &transaction.payment_id).await?;
            audit::append(
                &mut tx,
                now,
                self.event(
                    &payment,
                    AuditKind::FinalityViolation,
                    serde_json::json!({
                        "block_number": number,
                        "recorded_block_hash": recorded,
                        "canonical_block_hash": canonical,
                        "confirmations_required": self.confirmations_required(),
                        "action": "rebroadcast",
                    }),
                    Some(transaction.tx_hash.clone()),
                    transaction.block_number,
                    transaction.block_hash.clone(),
                ),
            )
            .await?;
            tx.commit().await?;
            // The slot is open again: the rest of this pass (or the next) sends the same bytes
            // through the slot's own path, which diagnoses a refusal like any other.
            tracing::error!(tx_hash = %transaction.tx_hash, "finality violation: a confirmed transaction's block was reorganized away; sending it again");
            alarms += 1;
        }
        Ok(alarms)
    }
}
