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
    /// transaction: a window holds thousands of transactions and a few dozen blocks. Only the
    /// distinct blocks are read from the ledger; a block's transactions only when its hash no
    /// longer matches.
    pub(super) async fn check_finality(&self, pass: &mut super::Pass) -> Result<usize> {
        let head = pass.head;
        let window = self.settings().finality_watch_blocks;
        let from = i64::try_from(head.saturating_sub(window)).unwrap_or(0);
        let mut alarms = 0;
        let blocks = payment_rows::recently_confirmed_blocks(self.ledger.pool(), from).await?;
        let numbers = blocks.iter().filter_map(|(n, _)| u64::try_from(*n).ok());
        self.read_block_hashes(pass, numbers).await;
        for (block_number, recorded) in blocks {
            let Ok(number) = u64::try_from(block_number) else {
                continue;
            };
            let canonical = self.block_hash(pass, number).await?.to_string();
            if canonical == recorded {
                continue;
            }
            for transaction in
                payment_rows::confirmed_in_block(self.ledger.pool(), block_number, &recorded)
                    .await?
            {
                alarms += self
                    .finality_violated(&transaction, head, &recorded, &canonical)
                    .await?;
            }
        }
        Ok(alarms)
    }

    /// A confirmed transaction whose block `recorded` is no longer canonical: reopened, the
    /// orphaned block noted on its payment, and a `finality_violation` alarm.
    async fn finality_violated(
        &self,
        transaction: &payment_rows::TransactionRow,
        head: u64,
        recorded: &str,
        canonical: &str,
    ) -> Result<usize> {
        let block_number = transaction.block_number.unwrap_or_default();
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        tx.run_sync(|s| payment_rows::reopen_transaction(s, transaction.id, head, now))
            .await?;
        payment_rows::add_orphaned_block(&mut tx, &transaction.payment_id, block_number, recorded)
            .await?;
        let payment = payment_rows::get(&mut *tx, &transaction.payment_id).await?;
        audit::append(
            &mut tx,
            now,
            self.event(
                &payment,
                AuditKind::FinalityViolation,
                serde_json::json!({
                    "block_number": block_number,
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
        Ok(1)
    }
}
