//! Settlement: takes `queued` payments to `confirmed`, and never leaves one stuck or lying. One
//! pass (`settle_once`):
//!
//! 1. **Sign** (`sign`). Every queued payment leg without a transaction, as far as its wallet's
//!    room in the node's pool allows (`lane_window`, counted per wallet): checked against the
//!    chain (token paused, blacklists, USDC balance, ETH for gas counting what the wallet already
//!    has in flight), then in one database transaction a nonce is reserved, custody signs and the
//!    raw bytes are stored with an audit event. Nothing is broadcast before it is stored.
//! 2. **Resolve every open nonce slot** (`watch` reads the chain, `slot` decides, `apply` and
//!    `replace` act). Whichever of the slot's transactions a canonical block includes counts; a
//!    nonce used by none of them was taken by a foreign transaction (alarm, re-sign); a
//!    transaction the node refuses is diagnosed from the chain (no gas: wait and top up;
//!    underpriced: re-sign; anything else: fill the slot after a bound); one stuck in the pool is
//!    replaced with higher fees. Confirmed (or failed) only at the required depth. Where a
//!    transaction is mined is read per block, not per transaction: each new canonical block's
//!    USDC `Transfer` events once (a transfer that emitted one succeeded), and a receipt read
//!    before stands while its block is still canonical; only the rest (reverts, ETH legs,
//!    fillers) are read as receipts, in one batch per lane.
//! 3. **Finality** (`finality`, run before step 2 so a repair is sent in the same pass).
//!    Confirmed transactions are re-checked over a window; a block reorganized away is an alarm,
//!    and the slot is reopened so the same signed bytes are sent again.
//!
//! A payment or wallet that cannot be processed is parked with an alarm; the others go on. Every
//! wait has a named reason on the payment, an audit event and a gauge. The worker runs passes on
//! a timer and whenever a payment is queued; tests run single passes.

mod apply;
pub(super) mod canon;
pub mod fees;
mod finality;
mod replace;
pub mod rollup;
mod sign;
pub mod slot;
mod watch;

use super::{Payments, PaymentsError, Result};
use crate::domain::{Address, AuditKind, WaitingReason};
use crate::ledger::audit::{self, NewEvent};
use crate::ledger::payments::{self as payment_rows, PaymentRow};
use crate::ledger::{LedgerError, wallets};
use alloy::primitives::U256;
use std::collections::HashMap;
use std::time::Duration;

/// Payments signed per pass, so one pass stays bounded under a burst. Each lane broadcasts its
/// chunks as they are signed, so a larger batch only delays the pass's own receipt reads; with
/// 2,000 a 5,000-payment backlog took three passes and drained at 751/s, with 5,000 at 860/s.
const SIGN_BATCH: i64 = 5_000;
/// Wallets worked on at once in a pass. Each wallet is a lane: its nonces are assigned and its
/// slots resolved in order, one at a time, while the other wallets' lanes go on beside it, so a
/// slow payment holds up only its own wallet, and the lanes' writes share group commits.
const MAX_LANES: usize = 32;
/// Payments one lane writes in one transaction (signed, or recorded as mined).
const WRITE_CHUNK: usize = 32;
/// The longest the worker backs off after consecutive failing passes.
const MAX_BACKOFF_MS: u64 = 30_000;
/// How often the background loop checks agent wallets' ETH for the gas float and reconciles
/// new blocks.
const BACKGROUND_INTERVAL: Duration = Duration::from_secs(30);

/// Receipts read by settlement, by transaction hash, with the head each was last used at.
pub(crate) type ReceiptCache = HashMap<alloy::primitives::B256, (crate::chain::Receipt, u64)>;
/// The transactions whose USDC `Transfer` event a block holds, by block hash, with its number.
pub(crate) type BlockIndex =
    HashMap<alloy::primitives::B256, (u64, std::sync::Arc<Vec<alloy::primitives::B256>>)>;
/// Blocks a cached receipt stays after its last use.
const RECEIPT_CACHE_BLOCKS: u64 = 16;

/// What one pass did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub signed: usize,
    pub broadcast: usize,
    pub updated: usize,
    pub failed: usize,
    pub expired: usize,
    pub alarms: usize,
    /// Payments set aside this pass because they could not be processed.
    pub parked: usize,
    /// Signing took a full `SIGN_BATCH`: more payments may be waiting for the next pass.
    pub batch_full: bool,
}

/// A chunk's first broadcast: how many transactions the node took (each recorded as sent), and
/// their hashes.
#[derive(Default)]
struct Sent {
    count: usize,
    hashes: Vec<alloy::primitives::B256>,
}

/// What one pass (or one lane of it) reads once and shares: the head; per wallet its on-chain
/// nonce, its ETH and the worst-case cost of what it has in flight; the token's blacklist for
/// each account asked about; the canonical hash of each block asked about.
struct Pass {
    head: u64,
    report: PassReport,
    chain_nonces: HashMap<String, u64>,
    in_flight_wei: HashMap<String, U256>,
    eth_balances: HashMap<String, U256>,
    blacklisted: HashMap<Address, bool>,
    block_hashes: HashMap<u64, alloy::primitives::B256>,
    /// Wallet addresses, read once per pass.
    addresses: HashMap<String, Address>,
    /// Receipts a lane read in one batch for the slots whose nonce is used.
    receipts: HashMap<alloy::primitives::B256, Option<crate::chain::Receipt>>,
    /// The block of each transaction that emitted a USDC transfer in a recent canonical block.
    transferred: std::sync::Arc<HashMap<alloy::primitives::B256, (u64, alloy::primitives::B256)>>,
    /// Transactions the node accepted during this pass: not asked about again in it.
    sent_now: std::collections::HashSet<alloy::primitives::B256>,
    /// Whether the node knows a transaction, read in one batch for a lane's unmined slots.
    known: HashMap<alloy::primitives::B256, bool>,
    /// Gas estimates a lane read in one batch for its queued USDC transfers, by payment.
    estimates: HashMap<String, std::result::Result<u64, crate::chain::ChainError>>,
    /// A lane's queued transfers that its USDC balance no longer covers this pass.
    uncovered: std::collections::HashSet<String>,
    /// A lane's transactions whose slots wait for the next pass (`watch::ahead_of_blocks`).
    deferred: std::collections::HashSet<alloy::primitives::B256>,
    /// Whether a payment or slot was left for a later pass because the node could not answer.
    skipped: bool,
}

impl Pass {
    fn new(head: u64, expired: usize) -> Pass {
        Pass {
            head,
            report: PassReport {
                expired,
                ..PassReport::default()
            },
            chain_nonces: HashMap::new(),
            in_flight_wei: HashMap::new(),
            eth_balances: HashMap::new(),
            blacklisted: HashMap::new(),
            block_hashes: HashMap::new(),
            receipts: HashMap::new(),
            addresses: HashMap::new(),
            estimates: HashMap::new(),
            known: HashMap::new(),
            transferred: std::sync::Arc::default(),
            sent_now: std::collections::HashSet::new(),
            uncovered: std::collections::HashSet::new(),
            deferred: std::collections::HashSet::new(),
            skipped: false,
        }
    }

    /// A lane's own pass: the same head, what is known of its wallet, nothing done yet.
    fn lane(&self, wallet_id: &str) -> Pass {
        let mut lane = Pass::new(self.head, 0);
        for (map, from) in [
            (&mut lane.in_flight_wei, &self.in_flight_wei),
            (&mut lane.eth_balances, &self.eth_balances),
        ] {
            if let Some(value) = from.get(wallet_id) {
                map.insert(wallet_id.to_string(), *value);
            }
        }
        if let Some(nonce) = self.chain_nonces.get(wallet_id) {
            lane.chain_nonces.insert(wallet_id.to_string(), *nonce);
        }
        lane.block_hashes.clone_from(&self.block_hashes);
        lane.transferred = self.transferred.clone();
        lane.sent_now.clone_from(&self.sent_now);
        lane
    }

    /// Counts a chunk's broadcast: the node took these and they are recorded as sent.
    fn absorb_sent(&mut self, sent: Sent) {
        self.report.broadcast += sent.count;
        self.sent_now.extend(sent.hashes);
    }

    /// Takes back what a lane did and learned.
    fn absorb(&mut self, lane: Pass) {
        let (ours, theirs) = (&mut self.report, lane.report);
        ours.signed += theirs.signed;
        ours.broadcast += theirs.broadcast;
        ours.updated += theirs.updated;
        ours.failed += theirs.failed;
        ours.expired += theirs.expired;
        ours.alarms += theirs.alarms;
        ours.parked += theirs.parked;
        self.chain_nonces.extend(lane.chain_nonces);
        self.in_flight_wei.extend(lane.in_flight_wei);
        self.eth_balances.extend(lane.eth_balances);
        self.blacklisted.extend(lane.blacklisted);
        self.block_hashes.extend(lane.block_hashes);
        self.sent_now.extend(lane.sent_now);
        self.skipped |= lane.skipped;
    }
}

/// Groups items by wallet, keeping their order within each wallet and the order in which the
/// wallets first appear.
fn lanes<T>(items: Vec<T>, wallet_of: impl Fn(&T) -> &str) -> Vec<(String, Vec<T>)> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut lanes: Vec<(String, Vec<T>)> = Vec::new();
    for item in items {
        let wallet = wallet_of(&item).to_string();
        match index.get(&wallet) {
            Some(&at) => lanes[at].1.push(item),
            None => {
                index.insert(wallet.clone(), lanes.len());
                lanes.push((wallet, vec![item]));
            }
        }
    }
    lanes
}

/// What to do with an error met while settling one payment or slot.
enum Disposition {
    /// Stop the pass (the node or the database is down, or a test's fail point): nothing that
    /// follows could work either, and the worker backs off.
    Halt,
    /// Try again next pass (a passing error, or a state change that raced this pass).
    Skip,
    /// Set the payment aside with an alarm; every other payment keeps settling.
    Park(WaitingReason),
}

fn disposition(error: &PaymentsError) -> Disposition {
    match error {
        PaymentsError::FailPoint(_) => Disposition::Halt,
        PaymentsError::Ledger(
            LedgerError::Database(_)
            | LedgerError::Sqlite(_)
            | LedgerError::Migration(_)
            | LedgerError::CommitFailed(_),
        ) => Disposition::Halt,
        PaymentsError::Chain(crate::chain::ChainError::WrongChain { .. }) => Disposition::Halt,
        PaymentsError::Chain(e) if e.is_retryable() => Disposition::Skip,
        PaymentsError::Conflict(_) | PaymentsError::NotFound => Disposition::Skip,
        PaymentsError::Ledger(LedgerError::Conflict(_) | LedgerError::NotFound) => {
            Disposition::Skip
        }
        PaymentsError::Custody(_) => Disposition::Park(WaitingReason::WalletKeyUnavailable),
        _ => Disposition::Park(WaitingReason::Unprocessable),
    }
}

/// How the worker paces its passes: a pass that signed a full `SIGN_BATCH` leaves a backlog,
/// and the next pass starts at once instead of after the poll interval (a tenth of a second idle
/// per 5,000 payments of a burst). Only while signing makes progress: a full batch of which
/// nothing could be signed (every payment waiting for gas, say) never makes the worker spin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cadence {
    backlog: bool,
}

impl Cadence {
    /// The cadence after a pass, from its report (none if it failed).
    fn after(report: Option<&PassReport>) -> Cadence {
        Cadence {
            backlog: report.is_some_and(|report| report.batch_full && report.signed > 0),
        }
    }
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
        let mut cadence = Cadence::default();
        loop {
            let wait = if cadence.backlog {
                Duration::ZERO
            } else if failures == 0 {
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
            let outcome = self.settle_once().await;
            cadence = Cadence::after(outcome.as_ref().ok());
            match outcome {
                Ok(report) => {
                    failures = 0;
                    if report != PassReport::default() {
                        tracing::debug!(
                            signed = report.signed,
                            broadcast = report.broadcast,
                            updated = report.updated,
                            failed = report.failed,
                            alarms = report.alarms,
                            parked = report.parked,
                            "settlement pass"
                        );
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "settlement pass failed; backing off");
                }
            }
        }
    }

    /// The slow checks, on their own loop so that a long reconciliation scan never delays a
    /// payment: the gas float and the background reconciliation of new blocks, every
    /// `BACKGROUND_INTERVAL`, until `shutdown` resolves.
    pub async fn run_background(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.background_checks().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(BACKGROUND_INTERVAL) => {}
            }
        }
    }

    async fn background_checks(&self) {
        match self.top_up_gas().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "gas float: topping up agent wallets"),
            Err(error) => tracing::warn!(%error, "gas float check failed"),
        }
        if let Err(error) = self.reconcile_new_blocks().await {
            tracing::warn!(%error, "background reconciliation failed");
        }
    }

    /// One settlement pass: sign, re-check finality (reopening a slot whose block a deep reorg
    /// took), resolve every open nonce slot.
    pub async fn settle_once(&self) -> Result<PassReport> {
        let started = std::time::Instant::now();
        let expired = self.expire_stale().await?;
        let head = self.chain.head().await?;
        let mut pass = Pass::new(head, expired);
        // Signing reads the token's state first; if the node cannot answer that now, the open
        // slots are still resolved: nothing already signed waits on a new payment's checks.
        if let Err(error) = self.sign_queued(&mut pass).await {
            match disposition(&error) {
                Disposition::Skip => tracing::warn!(%error, "cannot sign this pass; will retry"),
                _ => return Err(error),
            }
        }
        let signed_at = started.elapsed();
        self.resolve_open(&mut pass).await?;
        let slots_at = started.elapsed();
        pass.report.updated += self.track_x402().await?;
        pass.report.alarms += self.watch_x402_finality(head).await?;
        let resolved_at = started.elapsed();
        self.publish_waiting().await?;
        let published_at = started.elapsed();
        self.checkpoint_audit(false).await?;
        tracing::debug!(
            publish_ms = (published_at - resolved_at).as_millis() as u64,
            head,
            sign_ms = signed_at.as_millis() as u64,
            resolve_ms = (slots_at - signed_at).as_millis() as u64,
            x402_ms = (resolved_at - slots_at).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            signed = pass.report.signed,
            updated = pass.report.updated,
            "settlement pass timing"
        );
        Ok(pass.report)
    }

    /// A pass's second half: the finality re-check, then every open nonce slot, against the
    /// head as it is after signing.
    async fn resolve_open(&self, pass: &mut Pass) -> Result<()> {
        // Signing can take a block or more under a burst: what follows counts confirmations
        // and finds receipts against the head as it is now, and against the recent blocks as
        // they are now (read once each, across passes: `canon`).
        // The wallets' nonces read while signing are as old: a slot mined since would look
        // unmined, asked about one transaction at a time (a costly read for a node, which rebuilds
        // each mined transaction and recovers its sender) and recorded a pass late. Each lane
        // reads its wallet's nonce again, as of the new head (`chain_nonce`).
        pass.chain_nonces.clear();
        if let Ok(now) = self.chain.head().await {
            pass.head = now;
        }
        match self.canonical_hashes(pass.head).await {
            Ok(hashes) => pass.block_hashes.extend(hashes),
            Err(error) => {
                tracing::warn!(%error, "cannot verify the recent blocks; reading them as needed");
            }
        }
        pass.report.alarms += self.check_finality(pass).await?;
        self.resolve_slots(pass).await?;
        if !pass.skipped {
            // Every open transaction was checked against this head (and each whose status or
            // block changed was written): an included payment's confirmations count from it.
            self.verified_head
                .store(pass.head, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Decides what an error met on one payment means for the pass: halt it, skip the payment
    /// this time, or park the payment with an alarm.
    async fn isolate(&self, pass: &mut Pass, payment_id: &str, error: PaymentsError) -> Result<()> {
        match disposition(&error) {
            Disposition::Halt => Err(error),
            Disposition::Skip => {
                tracing::warn!(payment_id, %error, "cannot settle yet; will retry");
                pass.skipped = true;
                Ok(())
            }
            Disposition::Park(reason) => {
                tracing::error!(payment_id, %error, %reason, "payment parked: it cannot be processed");
                pass.report.parked += 1;
                self.wait(
                    payment_id,
                    reason,
                    serde_json::json!({"error": error.to_string()}),
                )
                .await
            }
        }
    }

    /// `isolate` for every payment of a batch that one error stopped.
    async fn isolate_all(
        &self,
        pass: &mut Pass,
        payment_ids: &[String],
        error: PaymentsError,
    ) -> Result<()> {
        match disposition(&error) {
            Disposition::Halt => Err(error),
            Disposition::Skip => {
                tracing::warn!(count = payment_ids.len(), %error, "cannot settle yet; will retry");
                pass.skipped = true;
                Ok(())
            }
            Disposition::Park(reason) => {
                tracing::error!(count = payment_ids.len(), %error, %reason, "payments parked: they cannot be processed");
                for payment_id in payment_ids {
                    pass.report.parked += 1;
                    self.wait(
                        payment_id,
                        reason,
                        serde_json::json!({"error": error.to_string()}),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Records why a payment waits. The reason is audited once, when it starts (as an alarm for
    /// the waits a human must act on), and counted by reason.
    async fn wait(
        &self,
        payment_id: &str,
        reason: WaitingReason,
        detail: serde_json::Value,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.ledger.begin().await?;
        let payment = payment_rows::get(&mut *tx, payment_id).await?;
        if tx
            .run_sync(|s| {
                payment_rows::set_waiting_reason(s, payment_id, Some(reason.as_str()), now)
            })
            .await?
        {
            let kind = if reason.is_alarm() {
                AuditKind::PaymentStalled
            } else {
                AuditKind::PaymentWaiting
            };
            let mut detail = detail;
            detail["waiting_reason"] = reason.as_str().into();
            audit::append(
                &mut tx,
                now,
                self.event(&payment, kind, detail, payment.tx_hash.clone(), None, None),
            )
            .await?;
            metrics::counter!("bursar_settlement_waits_total", "reason" => reason.as_str())
                .increment(1);
            tracing::warn!(payment_id, %reason, "payment waiting");
        }
        tx.finish("a wait whose reason did not change").await?;
        Ok(())
    }

    /// Sets the `bursar_payments_waiting{reason}` gauge for every reason, zero included.
    async fn publish_waiting(&self) -> Result<()> {
        let counts = payment_rows::waiting_counts(self.ledger.pool()).await?;
        for reason in WaitingReason::ALL {
            let count = counts
                .iter()
                .find(|(r, _)| r == reason.as_str())
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("bursar_payments_waiting", "reason" => reason.as_str())
                .set(count as f64);
        }
        Ok(())
    }

    /// The wallet's address, read once per pass.
    async fn wallet_address(&self, pass: &mut Pass, wallet_id: &str) -> Result<Address> {
        if let Some(address) = pass.addresses.get(wallet_id) {
            return Ok(*address);
        }
        let address = wallets::get(self.ledger.pool(), wallet_id)
            .await?
            .address()?;
        pass.addresses.insert(wallet_id.to_string(), address);
        Ok(address)
    }

    /// The wallet's ETH at the latest block, read once per pass.
    async fn eth_balance(
        &self,
        pass: &mut Pass,
        wallet_id: &str,
        address: Address,
    ) -> Result<U256> {
        if let Some(balance) = pass.eth_balances.get(wallet_id) {
            return Ok(*balance);
        }
        let balance = self.chain.eth_balance(address).await?;
        pass.eth_balances.insert(wallet_id.to_string(), balance);
        Ok(balance)
    }

    /// Whether USDC's blacklister has blocked `account`, read once per pass.
    async fn blacklisted(&self, pass: &mut Pass, account: Address) -> Result<bool> {
        if let Some(blocked) = pass.blacklisted.get(&account) {
            return Ok(*blocked);
        }
        let blocked = self.chain.usdc_blacklisted(account).await?;
        pass.blacklisted.insert(account, blocked);
        Ok(blocked)
    }

    /// Reads into the pass, in one JSON-RPC batch, the canonical hashes of those of `numbers`
    /// it does not hold: normally none, as the pass starts with the recent window (`canon`).
    /// A batch the node cannot answer leaves each hash to be read on its own (`block_hash`).
    async fn read_block_hashes(&self, pass: &mut Pass, numbers: impl Iterator<Item = u64>) {
        let unread: Vec<u64> = numbers
            .filter(|number| !pass.block_hashes.contains_key(number))
            .collect();
        if unread.is_empty() {
            return;
        }
        if let Ok(hashes) = self.chain.block_hashes(&unread).await {
            for (number, hash) in unread.into_iter().zip(hashes) {
                if let Some(hash) = hash {
                    pass.block_hashes.insert(number, hash);
                }
            }
        }
    }

    /// The canonical hash of block `number`, read once per pass.
    async fn block_hash(&self, pass: &mut Pass, number: u64) -> Result<alloy::primitives::B256> {
        if let Some(hash) = pass.block_hashes.get(&number) {
            return Ok(*hash);
        }
        let hash = self.chain.block_hash(number).await?;
        pass.block_hashes.insert(number, hash);
        Ok(hash)
    }

    /// The wallet's transaction count in the latest block, read once per pass.
    async fn chain_nonce(&self, pass: &mut Pass, wallet_id: &str, address: Address) -> Result<u64> {
        if let Some(nonce) = pass.chain_nonces.get(wallet_id) {
            return Ok(*nonce);
        }
        // As of the pass's head, like every other read of the pass: a nonce used in a block
        // past it would have its transaction looked for in blocks the pass has not read, one
        // receipt at a time (for a node, a copy of the whole block each).
        let nonce = self.chain.nonce_at(address, pass.head).await?;
        pass.chain_nonces.insert(wallet_id.to_string(), nonce);
        Ok(nonce)
    }

    /// The most the wallet's signed transactions that no block holds yet can still take from its
    /// ETH, read once per pass and raised as the pass signs more.
    async fn in_flight_wei(&self, pass: &mut Pass, wallet_id: &str) -> Result<U256> {
        if let Some(wei) = pass.in_flight_wei.get(wallet_id) {
            return Ok(*wei);
        }
        let mut total = U256::ZERO;
        for raw in payment_rows::in_flight_raw(self.ledger.pool(), wallet_id).await? {
            let transaction = crate::chain::Chain::decode_eip1559(&raw).ok_or_else(|| {
                LedgerError::Corrupt(format!("a transaction of wallet {wallet_id}"))
            })?;
            total = total.saturating_add(crate::chain::Chain::worst_case_cost(&transaction));
        }
        pass.in_flight_wei.insert(wallet_id.to_string(), total);
        Ok(total)
    }

    fn event(
        &self,
        payment: &PaymentRow,
        kind: AuditKind,
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

    /// The sealed key of a wallet, for custody to sign with.
    async fn wallet_key(
        &self,
        wallet_id: &str,
    ) -> Result<(wallets::WalletRow, crate::custody::SealedKey)> {
        let wallet = wallets::get(self.ledger.pool(), wallet_id).await?;
        let key = super::sealed(&wallet)?;
        Ok((wallet, key))
    }
}

fn parse_hash(text: &str) -> Result<alloy::primitives::B256> {
    text.parse()
        .map_err(|_| LedgerError::Corrupt(format!("transaction hash {text}")).into())
}

#[cfg(test)]
mod cadence_tests {
    use super::{Cadence, PassReport};

    fn pass(signed: usize, batch_full: bool) -> PassReport {
        PassReport {
            signed,
            batch_full,
            ..PassReport::default()
        }
    }

    /// A full batch that signed is a backlog: the next pass follows at once.
    #[test]
    fn a_full_batch_that_signed_is_a_backlog() {
        assert!(Cadence::after(Some(&pass(5_000, true))).backlog);
        assert!(Cadence::after(Some(&pass(1, true))).backlog);
    }

    /// Otherwise the worker waits its poll interval: after a batch that was not full, after a
    /// full batch of which nothing could be signed (no spinning), after a failed pass.
    #[test]
    fn anything_else_waits() {
        for report in [pass(4_999, false), pass(0, false), pass(0, true)] {
            assert!(!Cadence::after(Some(&report)).backlog, "{report:?}");
        }
        assert!(!Cadence::after(None).backlog);
    }
}
