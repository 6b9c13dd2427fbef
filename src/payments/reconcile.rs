//! Reconciliation: the ledger against the chain. Every USDC `Transfer` log that touches a
//! custodied wallet is matched with the ledger by transaction hash, then by amount, sender,
//! recipient and block hash. Money leaving a custodied wallet without a payment behind it is an
//! `unknown_outflow`: a key or custody breach, raised as an audit alarm by the background pass.

use super::{Payments, PaymentsError, Result};
use crate::domain::Address;
use crate::domain::AuditKind;
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::payments::{self as payment_rows, LedgerTransfer};
use crate::ledger::{Ledger, LedgerError, wallets};
use alloy::primitives::U256;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

/// The widest block range one reconciliation covers.
pub const MAX_RECONCILE_BLOCKS: u64 = 100_000;
const CURSOR_META_KEY: &str = "reconciled_through_block";
/// The head when the first custodied wallet (the treasury) was created: nothing of Bursar's can
/// be on chain before it, so the background reconciler starts there, not at block 0.
pub(super) const CUSTODY_START_META_KEY: &str = "custody_start_block";
/// Blocks a reconciliation covers when the caller names no `from_block`.
pub const DEFAULT_RECONCILE_BLOCKS: u64 = 10_000;

#[derive(Clone, Debug, Serialize)]
pub struct Reconciliation {
    pub from_block: u64,
    pub to_block: u64,
    pub matched: usize,
    pub discrepancies: Vec<Value>,
    pub inflows: Vec<Value>,
}

impl Payments {
    /// A reconciliation over a range the caller chose, checked against the chain: `to_block`
    /// defaults to the head and may not pass it, `from_block` to `DEFAULT_RECONCILE_BLOCKS`
    /// before it; at most `MAX_RECONCILE_BLOCKS` blocks. A bad range is a `400` naming the field.
    pub async fn reconciliation(
        &self,
        from_block: Option<u64>,
        to_block: Option<u64>,
    ) -> Result<Reconciliation> {
        let head = self.chain.head().await?;
        let to = to_block.unwrap_or(head);
        let invalid = |field: &str, message: String| PaymentsError::Invalid {
            field: field.into(),
            message,
        };
        if to > head {
            return Err(invalid(
                "to_block",
                format!("is past the chain head ({head})"),
            ));
        }
        let from = from_block.unwrap_or_else(|| to.saturating_sub(DEFAULT_RECONCILE_BLOCKS - 1));
        if from > to {
            return Err(invalid("from_block", "must not be after to_block".into()));
        }
        if to - from >= MAX_RECONCILE_BLOCKS {
            return Err(invalid(
                "to_block",
                format!("a reconciliation covers at most {MAX_RECONCILE_BLOCKS} blocks"),
            ));
        }
        self.reconcile(from, to).await
    }

    pub async fn reconcile(&self, from_block: u64, to_block: u64) -> Result<Reconciliation> {
        let addresses = wallets::all_addresses(self.ledger.pool()).await?;
        let custodied: HashSet<Address> = addresses
            .iter()
            .map(|a| Address::parse(a).map_err(|_| LedgerError::Corrupt("wallet address".into())))
            .collect::<Result<_, _>>()?;
        let accounts: Vec<Address> = custodied.iter().copied().collect();
        let logs = self
            .chain
            .usdc_transfers(from_block, to_block, &accounts)
            .await?;
        let range = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let ledger: HashMap<String, LedgerTransfer> =
            payment_rows::ledger_transfers(self.ledger.pool(), range(from_block), range(to_block))
                .await?
                .into_iter()
                .map(|t| (t.tx_hash.clone(), t))
                .collect();

        let mut report = Reconciliation {
            from_block,
            to_block,
            matched: 0,
            discrepancies: Vec::new(),
            inflows: Vec::new(),
        };
        let seen = match_transfers(&logs, &custodied, &ledger, &mut report);
        self.find_unknown_authorizations(&accounts, &mut report)
            .await?;
        report_missing_onchain(&ledger, &seen, &mut report);
        Ok(report)
    }

    /// EIP-3009 authorizations of custodied wallets used in the report's blocks that no x402
    /// payment signed: a key or custody breach, like an unknown outflow (the transfer itself is
    /// among the logs too).
    async fn find_unknown_authorizations(
        &self,
        accounts: &[Address],
        report: &mut Reconciliation,
    ) -> Result<()> {
        let known: HashSet<(String, String)> =
            crate::ledger::x402::known_nonces(self.ledger.pool())
                .await?
                .into_iter()
                .map(|(authorizer, nonce)| (authorizer.to_lowercase(), nonce.to_lowercase()))
                .collect();
        for used in self
            .chain
            .authorizations_used(report.from_block, report.to_block, accounts)
            .await?
        {
            let pair = (
                used.authorizer.to_string().to_lowercase(),
                used.nonce.to_string().to_lowercase(),
            );
            if !known.contains(&pair) {
                report.discrepancies.push(json!({
                    "kind": "unknown_authorization",
                    "tx_hash": used.tx_hash.to_string(),
                    "block_number": used.block_number,
                    "block_hash": used.block_hash.to_string(),
                    "onchain": {"authorizer": used.authorizer.to_string(), "nonce": used.nonce.to_string()},
                    "ledger": null,
                }));
            }
        }
        Ok(())
    }

    /// The background pass: reconciles the blocks that reached the confirmation depth since the
    /// last pass and raises an `unknown_outflow` alarm for each outflow without a payment. The
    /// cursor moves in the same transaction as the alarms. Returns how many alarms it raised.
    pub async fn reconcile_new_blocks(&self) -> Result<usize> {
        let head = self.chain.head().await?;
        let Some(through) = head.checked_sub(self.confirmations_required()) else {
            return Ok(0);
        };
        let from = match self.ledger.meta(CURSOR_META_KEY).await? {
            Some(text) => {
                text.parse::<u64>()
                    .map_err(|_| LedgerError::Corrupt("reconcile cursor".into()))?
                    + 1
            }
            None => match self.ledger.meta(CUSTODY_START_META_KEY).await? {
                Some(text) => text
                    .parse::<u64>()
                    .map_err(|_| LedgerError::Corrupt("custody start block".into()))?,
                None => 0,
            },
        };
        if from > through {
            return Ok(0);
        }
        let to = through.min(from + MAX_RECONCILE_BLOCKS - 1);
        let report = self.reconcile(from, to).await?;
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let mut alarms = 0;
        for discrepancy in report
            .discrepancies
            .iter()
            .filter(|d| d["kind"] == "unknown_outflow" || d["kind"] == "unknown_authorization")
        {
            let kind = if discrepancy["kind"] == "unknown_authorization" {
                AuditKind::UnknownAuthorization
            } else {
                AuditKind::UnknownOutflow
            };
            audit::append(
                &mut tx,
                now,
                NewEvent {
                    actor: "reconciler".into(),
                    detail: discrepancy.clone(),
                    tx_hash: discrepancy["tx_hash"].as_str().map(str::to_string),
                    block_number: discrepancy["block_number"].as_i64(),
                    block_hash: discrepancy["block_hash"].as_str().map(str::to_string),
                    ..NewEvent::of(kind)
                },
            )
            .await?;
            tracing::error!(
                tx_hash = discrepancy["tx_hash"].as_str().unwrap_or_default(),
                kind = discrepancy["kind"].as_str().unwrap_or_default(),
                "USDC left a custodied wallet without a payment"
            );
            alarms += 1;
        }
        Ledger::set_meta_in(&mut tx, CURSOR_META_KEY, &to.to_string()).await?;
        tx.finish("the reconciliation cursor over blocks with nothing unknown")
            .await?;
        Ok(alarms)
    }
}

fn units(value: U256) -> String {
    u64::try_from(value)
        .map(|micros| crate::domain::Amount::from_micros(micros).to_string())
        .unwrap_or_else(|_| format!("{value} base units"))
}

/// Matches each `Transfer` log with the ledger: one into a custodied wallet from outside is an
/// inflow; one out of a custodied wallet is matched by hash, then by parties and amount, then by
/// block hash, or is an `unknown_outflow`. Returns the hashes of the ledger's transfers found.
fn match_transfers(
    logs: &[crate::chain::TransferLog],
    custodied: &HashSet<Address>,
    ledger: &HashMap<String, LedgerTransfer>,
    report: &mut Reconciliation,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    for log in logs {
        let hash = log.tx_hash.to_string();
        let onchain = json!({
            "tx_hash": hash, "block_number": log.block_number, "block_hash": log.block_hash.to_string(),
            "from": log.from.to_string(), "to": log.to.to_string(), "amount": units(log.value),
        });
        if !custodied.contains(&log.from) {
            report.inflows.push(onchain);
            continue;
        }
        let Some(entry) = ledger.get(&hash) else {
            report
                .discrepancies
                .push(with_kind("unknown_outflow", onchain, None));
            continue;
        };
        seen.insert(hash);
        let same_parties = Address::parse(&entry.from_address).ok() == Some(log.from)
            && entry.to_address == log.to;
        if !same_parties || U256::from(entry.amount.max(0) as u64) != log.value {
            report
                .discrepancies
                .push(with_kind("amount_mismatch", onchain, Some(entry)));
        } else if entry.block_hash.as_deref() != Some(log.block_hash.to_string().as_str()) {
            report
                .discrepancies
                .push(with_kind("block_hash_mismatch", onchain, Some(entry)));
        } else {
            report.matched += 1;
        }
    }
    seen
}

/// A transfer the ledger records in a block (included or confirmed) that no log in the range
/// showed: `missing_onchain`.
fn report_missing_onchain(
    ledger: &HashMap<String, LedgerTransfer>,
    seen: &HashSet<String>,
    report: &mut Reconciliation,
) {
    for entry in ledger.values() {
        let in_block = matches!(entry.status.as_str(), "included" | "confirmed");
        if in_block && !seen.contains(&entry.tx_hash) {
            report
                .discrepancies
                .push(with_kind("missing_onchain", Value::Null, Some(entry)));
        }
    }
}

fn with_kind(kind: &str, onchain: Value, ledger: Option<&LedgerTransfer>) -> Value {
    json!({
        "kind": kind,
        "tx_hash": onchain.get("tx_hash").cloned().or_else(|| ledger.map(|l| json!(l.tx_hash))),
        "block_number": onchain.get("block_number").cloned().or_else(|| ledger.map(|l| json!(l.block_number))),
        "block_hash": onchain.get("block_hash").cloned(),
        "onchain": onchain,
        "ledger": ledger.map(|l| json!({
            "payment_id": l.payment_id, "status": l.status, "block_number": l.block_number, "block_hash": l.block_hash,
            "from": l.from_address, "to": l.to_address, "amount": crate::domain::Amount::from_sql(l.amount).to_string(),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::TransferLog;
    use alloy::primitives::B256;

    fn address(byte: u8) -> Address {
        Address::from(alloy::primitives::Address::repeat_byte(byte))
    }

    fn log(hash: u8, from: u8, to: u8, micros: u64, block: u8) -> TransferLog {
        TransferLog {
            tx_hash: B256::repeat_byte(hash),
            log_index: 0,
            block_number: u64::from(block),
            block_hash: B256::repeat_byte(block),
            from: address(from),
            to: address(to),
            value: U256::from(micros),
        }
    }

    fn recorded(
        hash: u8,
        from: u8,
        to: u8,
        micros: i64,
        block: u8,
        status: &str,
    ) -> LedgerTransfer {
        LedgerTransfer {
            payment_id: format!("pay_{hash}"),
            tx_hash: B256::repeat_byte(hash).to_string(),
            status: status.into(),
            block_number: Some(i64::from(block)),
            block_hash: Some(B256::repeat_byte(block).to_string()),
            from_address: address(from).to_string(),
            to_address: address(to),
            amount: micros,
        }
    }

    /// Every way a log and the ledger can disagree is named, and only an exact match counts as
    /// matched: the same hash, parties, amount and block hash. Wallet 1 is custodied.
    #[test]
    fn each_discrepancy_is_named_and_only_an_exact_match_counts() {
        let custodied = HashSet::from([address(1)]);
        let ledger: HashMap<String, LedgerTransfer> = [
            recorded(10, 1, 2, 5_000_000, 7, "confirmed"),
            recorded(11, 1, 2, 5_000_000, 7, "confirmed"),
            recorded(12, 1, 2, 5_000_000, 7, "confirmed"),
            recorded(13, 1, 3, 5_000_000, 7, "confirmed"),
            recorded(14, 1, 2, 5_000_000, 7, "included"),
            recorded(15, 1, 2, 5_000_000, 7, "submitted"),
        ]
        .into_iter()
        .map(|t| (t.tx_hash.clone(), t))
        .collect();
        let logs = [
            log(10, 1, 2, 5_000_000, 7), // matched
            log(11, 1, 2, 5_000_001, 7), // one micro-USDC more than recorded
            log(12, 1, 2, 5_000_000, 8), // another block than recorded
            log(13, 1, 2, 5_000_000, 7), // another recipient than recorded
            log(20, 1, 4, 1_000_000, 7), // no payment behind it
            log(21, 5, 1, 2_000_000, 7), // money in, from outside
        ];
        let mut report = Reconciliation {
            from_block: 0,
            to_block: 10,
            matched: 0,
            discrepancies: Vec::new(),
            inflows: Vec::new(),
        };
        let seen = match_transfers(&logs, &custodied, &ledger, &mut report);
        report_missing_onchain(&ledger, &seen, &mut report);

        assert_eq!(report.matched, 1);
        let named: Vec<(String, String)> = report
            .discrepancies
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["tx_hash"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let hash = |byte: u8| B256::repeat_byte(byte).to_string();
        assert_eq!(
            named,
            [
                ("amount_mismatch".to_string(), hash(11)),
                ("block_hash_mismatch".to_string(), hash(12)),
                ("amount_mismatch".to_string(), hash(13)),
                ("unknown_outflow".to_string(), hash(20)),
                // Recorded in a block, found in no log; a submitted one may still be pending.
                ("missing_onchain".to_string(), hash(14)),
            ]
        );
        assert_eq!(report.inflows.len(), 1);
        assert_eq!(report.inflows[0]["amount"], "2");
    }
}
