//! Watching: the chain reads for each open nonce slot, turned into a typed observation, and the
//! dispatch of what `slot::resolve` decides to the code that acts on it.

use super::replace::Sent;
use super::slot::{self, Action, Live, Observed};
use super::{Pass, parse_hash};
use crate::chain::Receipt;
use crate::domain::{Address, PaymentStatus, TransactionStatus};
use crate::ledger::LedgerError;
use crate::ledger::payments::{self as payment_rows, TransactionRow};
use crate::payments::{Payments, PaymentsError, Result};
use alloy::primitives::B256;
use futures_util::{StreamExt, stream};
use std::collections::{HashMap, HashSet};

/// One wallet's nonce with every transaction Bursar signed for it, oldest first.
#[derive(Clone)]
pub(super) struct Slot {
    pub transactions: Vec<TransactionRow>,
    /// Index of the live transaction (the open slots query guarantees one).
    pub live: usize,
}

impl Slot {
    pub fn live(&self) -> &TransactionRow {
        &self.transactions[self.live]
    }
}

/// What resolving a slot came to.
enum Settled {
    /// Acted (or not) on the slot; `true` if anything changed.
    Changed(bool),
    /// A canonical block includes the slot's transaction at `index`: to be recorded.
    Mined { index: usize, receipt: Receipt },
}

/// Groups the open slots' transactions by wallet and nonce.
fn slots(rows: Vec<TransactionRow>) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::new();
    let mut current: Vec<TransactionRow> = Vec::new();
    let flush = |group: Vec<TransactionRow>, slots: &mut Vec<Slot>| {
        let live = group
            .iter()
            .position(|t| t.status().is_ok_and(TransactionStatus::is_live));
        if let Some(live) = live {
            slots.push(Slot {
                transactions: group,
                live,
            });
        }
    };
    for row in rows {
        if current
            .last()
            .is_some_and(|last| last.wallet_id != row.wallet_id || last.nonce != row.nonce)
        {
            flush(std::mem::take(&mut current), &mut slots);
        }
        current.push(row);
    }
    if !current.is_empty() {
        flush(current, &mut slots);
    }
    slots
}

/// Whether the slot's live transaction was recorded as included (a reorg may since have
/// taken it, which only its receipt can tell).
fn live_included(slot: &Slot) -> bool {
    slot.live().status().ok() == Some(TransactionStatus::Included)
}

/// A transaction whose receipt a lane may need: its slot (an index into the lane's slots),
/// and whether it is a USDC transfer (found by its event, if it succeeded).
#[derive(Clone, Copy)]
struct Wanted {
    slot: usize,
    hash: B256,
    usdc_transfer: bool,
}

/// The slots of `unread` none of whose transactions was found, one of them a USDC transfer,
/// and not recorded as included (whose receipts tell a reorg, read as they are).
fn unfound(slots: &[Slot], unread: &[Wanted]) -> Vec<usize> {
    let mut per_slot: HashMap<usize, (usize, bool)> = HashMap::new();
    for one in unread {
        let (count, transfer) = per_slot.entry(one.slot).or_default();
        *count += 1;
        *transfer |= one.usdc_transfer;
    }
    let mut unfound: Vec<usize> = per_slot
        .into_iter()
        .filter(|&(at, (count, transfer))| {
            transfer && count == slots[at].transactions.len() && !live_included(&slots[at])
        })
        .map(|(at, _)| at)
        .collect();
    unfound.sort_unstable();
    unfound
}

/// The block (number, hash) of each transaction the given blocks' transfer lists hold.
fn by_transaction<'a>(
    blocks: impl Iterator<Item = (u64, B256, &'a [B256])>,
) -> HashMap<B256, (u64, B256)> {
    let mut found = HashMap::new();
    for (number, hash, transactions) in blocks {
        for transaction in transactions {
            found.insert(*transaction, (number, hash));
        }
    }
    found
}

/// A USDC transfer found in `block` (number, hash) by its event: it succeeded there. Kept in the
/// receipt cache and handed to the lane as its receipt.
fn transferred(
    cache: &mut super::ReceiptCache,
    lane: &mut Pass,
    hash: B256,
    (block_number, block_hash): (u64, B256),
) {
    let receipt = Receipt {
        block_number,
        block_hash,
        success: true,
    };
    cache.insert(hash, (receipt, lane.head));
    lane.receipts.insert(hash, Some(receipt));
}

fn poisoned() -> PaymentsError {
    LedgerError::Corrupt("a settlement cache's lock".into()).into()
}

/// Blocks below the required depth whose hashes a pass reads up front.
pub(super) const RECENT_BLOCKS: u64 = 8;
/// How many times `index_again` reads the pass's new blocks, at most.
const REREADS: usize = 4;

/// The blocks a pass indexed first (`index_transfers`), and what reading them again with the
/// blocks mined since found (`index_again`), read once for every lane that needs it.
struct Fresh {
    blocks: Vec<(u64, B256)>,
    again: tokio::sync::OnceCell<HashMap<B256, (u64, B256)>>,
    /// The transactions the head block holds, if the node could say.
    head_block: tokio::sync::OnceCell<Option<HashSet<B256>>>,
}

impl Payments {
    pub(super) async fn resolve_slots(&self, pass: &mut Pass) -> Result<()> {
        let rows = payment_rows::open_slots(self.ledger.pool()).await?;
        // The hashes of the recent blocks the lanes' receipts name, read once for every lane.
        if !rows.is_empty() {
            let depth = self.confirmations_required() + RECENT_BLOCKS;
            self.read_block_hashes(pass, pass.head.saturating_sub(depth)..=pass.head)
                .await;
        }
        let fresh = Fresh {
            blocks: self.index_transfers(pass).await?,
            again: tokio::sync::OnceCell::new(),
            head_block: tokio::sync::OnceCell::new(),
        };
        let (parent, fresh) = (&*pass, &fresh);
        let lanes: Vec<Result<Pass>> =
            stream::iter(super::lanes(slots(rows), |slot| &slot.live().wallet_id))
                .map(|(wallet_id, slots)| async move {
                    let mut lane = parent.lane(&wallet_id);
                    self.prefetch_receipts(&mut lane, &wallet_id, &slots, fresh)
                        .await?;
                    let mut mined = Vec::new();
                    for (at, slot) in slots.iter().enumerate() {
                        if lane.deferred.contains(&parse_hash(&slot.live().tx_hash)?) {
                            continue;
                        }
                        let payment_id = slot.live().payment_id.clone();
                        match self.settle_slot(&mut lane, slot).await {
                            Ok(Settled::Changed(true)) => lane.report.updated += 1,
                            Ok(Settled::Changed(false)) => {}
                            Ok(Settled::Mined { index, receipt }) => {
                                mined.push((at, index, receipt));
                            }
                            Err(error) => self.isolate(&mut lane, &payment_id, error).await?,
                        }
                    }
                    self.record_mined(&mut lane, &slots, mined).await?;
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
        self.trim_receipts(pass.head)?;
        halted.map_or(Ok(()), Err)
    }

    /// Reads, in one JSON-RPC batch, the receipts `observe` will ask for: those of every
    /// transaction of the lane's slots whose nonce the chain has used (or that were recorded as
    /// included). The wallet's nonce is read first, as `observe` requires.
    async fn prefetch_receipts(
        &self,
        lane: &mut Pass,
        wallet_id: &str,
        slots: &[Slot],
        fresh: &Fresh,
    ) -> Result<()> {
        let Some(first) = slots.first() else {
            return Ok(());
        };
        // The slots' own path reports (and parks) what is wrong with the wallet.
        let Ok(address) = self.wallet_address(lane, wallet_id).await else {
            return Ok(());
        };
        let chain_nonce = match self
            .chain_nonce(lane, &first.live().wallet_id, address)
            .await
        {
            Ok(nonce) => nonce,
            Err(_) => return Ok(()),
        };
        let mut wanted = Vec::new();
        let mut pending = Vec::new();
        for (at, slot) in slots.iter().enumerate() {
            let used = u64::try_from(slot.live().nonce).is_ok_and(|nonce| chain_nonce > nonce);
            if used || live_included(slot) {
                for transaction in &slot.transactions {
                    wanted.push(Wanted {
                        slot: at,
                        hash: parse_hash(&transaction.tx_hash)?,
                        usdc_transfer: transaction.asset == crate::domain::Asset::Usdc
                            && transaction.purpose == payment_rows::TRANSFER,
                    });
                }
            } else {
                let hash = parse_hash(&slot.live().tx_hash)?;
                if lane.sent_now.contains(&hash) {
                    // The node took it moments ago, in this pass.
                    lane.known.insert(hash, true);
                } else {
                    pending.push(hash);
                }
            }
        }
        // Whether the node still has each unmined slot's live transaction, in one batch too.
        if let Ok(known) = self.chain.known_transactions(&pending).await {
            lane.known.extend(pending.into_iter().zip(known));
        }
        let unread = self.unread_receipts(lane, wanted)?;
        let unread = self
            .narrow_unread(lane, address, chain_nonce, slots, unread, fresh)
            .await?;
        let head = lane.head;
        // A batch the node cannot answer now leaves each slot to read its own receipts.
        if let Ok(receipts) = self.chain.receipts(&unread).await {
            let mut cache = self.receipts.lock().map_err(|_| poisoned())?;
            for (hash, receipt) in unread.into_iter().zip(receipts) {
                if let Some(receipt) = &receipt {
                    cache.insert(hash, (*receipt, head));
                }
                lane.receipts.insert(hash, receipt);
            }
        }
        Ok(())
    }

    /// Of `wanted`, those whose receipt must be read.
    /// A receipt read in an earlier pass stands while its block is still the canonical one at
    /// its height. A USDC transfer whose event a recent canonical block holds succeeded in that
    /// block. Only the others (reverts, ETH legs, fillers, older blocks, slots with
    /// replacements) are read as receipts, in one batch.
    fn unread_receipts(&self, lane: &mut Pass, wanted: Vec<Wanted>) -> Result<Vec<Wanted>> {
        let mut unread = Vec::new();
        let mut cache = self.receipts.lock().map_err(|_| poisoned())?;
        for one in wanted {
            let hash = one.hash;
            match cache.get_mut(&hash) {
                Some((receipt, used))
                    if lane.block_hashes.get(&receipt.block_number)
                        == Some(&receipt.block_hash) =>
                {
                    *used = lane.head;
                    lane.receipts.insert(hash, Some(*receipt));
                }
                _ => match lane.transferred.get(&hash) {
                    Some(&block) if one.usdc_transfer => {
                        transferred(&mut cache, lane, hash, block);
                    }
                    _ => unread.push(one),
                },
            }
        }
        Ok(unread)
    }

    /// What is left of `unread` to read as receipts. A used slot none of whose transactions was
    /// found, one of them a USDC transfer, either reverted, or sits in a block the index has not
    /// read whole. A node may answer for a block before it holds all of that block's
    /// transactions, and its state at the head may already count a block it is still storing
    /// (anvil does both). So, once for every lane and before any receipt is read, the blocks
    /// first read in this pass and those mined past its head are read until two reads agree
    /// (`index_again`); the slots still unfound whose nonce only the head's state counts wait for
    /// the next pass (`ahead_of_blocks`). A slot one of whose transactions was found (a
    /// replacement's) is settled by it and costs no read here.
    async fn narrow_unread(
        &self,
        lane: &mut Pass,
        address: Address,
        chain_nonce: u64,
        slots: &[Slot],
        mut unread: Vec<Wanted>,
        fresh: &Fresh,
    ) -> Result<Vec<B256>> {
        if !unfound(slots, &unread).is_empty() {
            let again = fresh
                .again
                .get_or_init(|| self.index_again(lane.head, &fresh.blocks))
                .await;
            let mut cache = self.receipts.lock().map_err(|_| poisoned())?;
            unread.retain(|one| match again.get(&one.hash) {
                Some(&block) if one.usdc_transfer => {
                    transferred(&mut cache, lane, one.hash, block);
                    false
                }
                _ => true,
            });
        }
        let still = unfound(slots, &unread);
        if !still.is_empty() {
            let ahead = self
                .ahead_of_blocks(lane, address, chain_nonce, slots, &still, fresh)
                .await?;
            lane.deferred.extend(ahead);
        }
        Ok(unread
            .into_iter()
            .map(|one| one.hash)
            .filter(|hash| !lane.deferred.contains(hash))
            .collect())
    }

    /// Reads which transactions emitted a USDC transfer in each recent canonical block the index
    /// does not hold yet (one call per new block, in one batch), forgets the blocks below the
    /// window, and hands the pass the block of each such transaction. A block the node cannot
    /// answer for now is left out: its transactions' receipts are read one by one instead.
    /// Returns the blocks read (`Fresh`).
    async fn index_transfers(&self, pass: &mut Pass) -> Result<Vec<(u64, B256)>> {
        let depth = self.confirmations_required() + RECENT_BLOCKS;
        let lowest = pass.head.saturating_sub(depth);
        let unread: Vec<(u64, alloy::primitives::B256)> = {
            let index = self.blocks.lock().map_err(|_| poisoned())?;
            pass.block_hashes
                .iter()
                .filter(|(number, hash)| **number >= lowest && !index.contains_key(*hash))
                .map(|(number, hash)| (*number, *hash))
                .collect()
        };
        let hashes: Vec<_> = unread.iter().map(|(_, hash)| *hash).collect();
        let read = if hashes.is_empty() {
            Vec::new()
        } else {
            self.chain
                .usdc_transfer_transactions(&hashes)
                .await
                .unwrap_or_default()
        };
        let mut index = self.blocks.lock().map_err(|_| poisoned())?;
        let mut fresh = Vec::with_capacity(read.len());
        for ((number, hash), transactions) in unread.into_iter().zip(read) {
            index.insert(hash, (number, std::sync::Arc::new(transactions)));
            fresh.push((number, hash));
        }
        index.retain(|_, (number, _)| *number >= lowest);
        let transferred = by_transaction(pass.block_hashes.iter().filter_map(|(number, hash)| {
            let (_, transactions) = index.get(hash)?;
            Some((*number, *hash, &transactions[..]))
        }));
        pass.transferred = std::sync::Arc::new(transferred);
        Ok(fresh)
    }

    /// The transactions of the slots whose nonce the node's state at the head counts as used
    /// while no block the pass can read holds them: none of them found (`unfound`), the nonce
    /// still unused a block below the head, and the head block not listing them. A node can
    /// count a block in its state before it serves the block (anvil does, while storing it).
    /// These slots are left to the next pass, their receipts unread; once the head is a block
    /// past their nonce's, they are read like any other.
    async fn ahead_of_blocks(
        &self,
        lane: &Pass,
        address: Address,
        chain_nonce: u64,
        slots: &[Slot],
        unfound: &[usize],
        fresh: &Fresh,
    ) -> Result<HashSet<B256>> {
        let mut ahead = HashSet::new();
        let Ok(settled) = self
            .chain
            .nonce_at(address, lane.head.saturating_sub(1))
            .await
        else {
            return Ok(ahead);
        };
        let head_block = fresh
            .head_block
            .get_or_init(|| async {
                let hash = lane.block_hashes.get(&lane.head)?;
                let listed = self.chain.block_transactions(*hash).await.ok()??;
                Some(listed.into_iter().collect())
            })
            .await;
        let Some(head_block) = head_block else {
            return Ok(ahead);
        };
        for slot in unfound.iter().map(|&at| &slots[at]) {
            let Ok(nonce) = u64::try_from(slot.live().nonce) else {
                continue;
            };
            if nonce < settled || nonce >= chain_nonce {
                continue;
            }
            let hashes = slot
                .transactions
                .iter()
                .map(|transaction| parse_hash(&transaction.tx_hash))
                .collect::<Result<Vec<B256>>>()?;
            if !hashes.iter().any(|hash| head_block.contains(hash)) {
                ahead.extend(hashes);
            }
        }
        Ok(ahead)
    }

    /// Reads the USDC transfers of `fresh` and of the blocks mined since `head` until two reads
    /// in a row find as many in each block (at most `REREADS` reads), keeps the last read in
    /// the index, and returns the block of each transaction found. If the node cannot answer,
    /// the index is left as it was and those transactions' receipts are read instead.
    async fn index_again(&self, head: u64, fresh: &[(u64, B256)]) -> HashMap<B256, (u64, B256)> {
        let mut blocks = fresh.to_vec();
        if let Ok(now) = self.chain.head().await
            && now > head
        {
            let numbers: Vec<u64> = (head + 1..=now).collect();
            if let Ok(hashes) = self.chain.block_hashes(&numbers).await {
                for (number, hash) in numbers.into_iter().zip(hashes) {
                    blocks.extend(hash.map(|hash| (number, hash)));
                }
            }
        }
        if blocks.is_empty() {
            return HashMap::new();
        }
        let blocks = &blocks[..];
        let hashes: Vec<B256> = blocks.iter().map(|(_, hash)| *hash).collect();
        let counts = |read: &[std::sync::Arc<Vec<B256>>]| -> Vec<usize> {
            read.iter().map(|transactions| transactions.len()).collect()
        };
        let mut last: Vec<std::sync::Arc<Vec<B256>>> = {
            let Ok(index) = self.blocks.lock() else {
                return HashMap::new();
            };
            hashes
                .iter()
                .map(|hash| index.get(hash).map(|(_, t)| t.clone()).unwrap_or_default())
                .collect()
        };
        let first = counts(&last);
        let mut reads = 0;
        while reads < REREADS {
            let Ok(read) = self.chain.usdc_transfer_transactions(&hashes).await else {
                break;
            };
            reads += 1;
            let read: Vec<_> = read.into_iter().map(std::sync::Arc::new).collect();
            let settled = counts(&read) == counts(&last);
            last = read;
            if settled {
                break;
            }
        }
        tracing::debug!(?blocks, ?first, last = ?counts(&last), reads, "read the pass's new blocks again");
        if reads == 0 {
            return HashMap::new();
        }
        if let Ok(mut index) = self.blocks.lock() {
            for ((number, hash), transactions) in blocks.iter().zip(&last) {
                index.insert(*hash, (*number, transactions.clone()));
            }
        }
        by_transaction(
            blocks
                .iter()
                .zip(&last)
                .map(|((number, hash), transactions)| (*number, *hash, &transactions[..])),
        )
    }

    /// Forgets the receipts no pass has used for `RECEIPT_CACHE_BLOCKS`.
    fn trim_receipts(&self, head: u64) -> Result<()> {
        self.receipts
            .lock()
            .map_err(|_| poisoned())?
            .retain(|_, (_, used)| used.saturating_add(super::RECEIPT_CACHE_BLOCKS) >= head);
        Ok(())
    }

    /// Records every slot of a lane that a block includes, in one write transaction. If any of
    /// them cannot be written, each is recorded on its own instead, so that one bad row holds up
    /// none of the others.
    async fn record_mined(
        &self,
        lane: &mut Pass,
        slots: &[Slot],
        mined: Vec<(usize, usize, Receipt)>,
    ) -> Result<()> {
        for chunk in mined.chunks(super::WRITE_CHUNK) {
            self.record_chunk(lane, slots, chunk.to_vec()).await?;
        }
        Ok(())
    }

    async fn record_chunk(
        &self,
        lane: &mut Pass,
        slots: &[Slot],
        mined: Vec<(usize, usize, Receipt)>,
    ) -> Result<()> {
        let mut reasons = Vec::with_capacity(mined.len());
        for (at, index, receipt) in &mined {
            reasons.push(
                self.revert_reason_at_depth(lane, &slots[*at], *index, receipt)
                    .await,
            );
        }
        if reasons.iter().all(Result::is_ok) {
            let (now, head, this) = (self.now(), lane.head, self.clone());
            let work: Vec<(Slot, usize, Receipt, Option<String>)> = mined
                .iter()
                .zip(&reasons)
                .map(|((at, index, receipt), reason)| {
                    let reason = reason.as_ref().ok().cloned().flatten();
                    (slots[*at].clone(), *index, *receipt, reason)
                })
                .collect();
            // One write for the chunk, batched with the other lanes'; any slot that cannot be
            // written fails it whole (rolled back), and each slot is then recorded on its own
            // below.
            let written = self
                .ledger
                .write_batched(move |tx| -> Result<usize> {
                    let mut changed = 0;
                    for (slot, index, receipt, reason) in &work {
                        let reason = reason.as_deref();
                        if this.record_in(tx, head, slot, *index, receipt, reason, now)? {
                            changed += 1;
                        }
                    }
                    tx.keep_unaudited("the waiting reasons included transactions set or clear");
                    Ok(changed)
                })
                .await;
            match written {
                Ok(changed) => {
                    lane.report.updated += changed;
                    return Ok(());
                }
                // The commit itself failed: the writer halts the pass, as before.
                Err(PaymentsError::Ledger(LedgerError::CommitFailed(message))) => {
                    return Err(LedgerError::CommitFailed(message).into());
                }
                Err(_) => {}
            }
        }
        for (at, index, receipt) in mined {
            let slot = &slots[at];
            match self.record(lane, slot, index, &receipt).await {
                Ok(true) => lane.report.updated += 1,
                Ok(false) => {}
                Err(error) => {
                    let payment_id = slot.live().payment_id.clone();
                    self.isolate(lane, &payment_id, error).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads the chain for one slot, decides, acts. A slot a block includes is handed back to
    /// be recorded with the lane's others.
    async fn settle_slot(&self, pass: &mut Pass, slot: &Slot) -> Result<Settled> {
        let live = slot.live();
        let address = self.wallet_address(pass, &live.wallet_id).await?;
        let observed = self.observe(pass, slot, address).await?;
        let status = live.status()?;
        // Only a transaction no node has accepted can belong to a cancelled payment (a freeze
        // cancels those alone), so the payment is read only then.
        let payment_cancelled = status == TransactionStatus::Signed
            && payment_rows::get(self.ledger.pool(), &live.payment_id)
                .await?
                .status()?
                == PaymentStatus::Cancelled;
        let view = Live {
            accepted: status != TransactionStatus::Signed,
            included: status == TransactionStatus::Included,
            filler: live.is_filler(),
            payment_cancelled,
            blocks_waiting: live
                .broadcast_block
                .and_then(|b| u64::try_from(b).ok())
                .map(|b| pass.head.saturating_sub(b)),
        };
        let action = slot::resolve(view, &observed, self.settings().stuck_after_blocks);
        let changed = match action {
            Action::Record { index, receipt } => return Ok(Settled::Mined { index, receipt }),
            Action::ConsumedElsewhere => {
                self.consumed_elsewhere(slot, address).await.map(|()| true)
            }
            Action::Recheck | Action::Wait => Ok(false),
            Action::Unincluded => self.unincluded(live, pass.head).await.map(|()| true),
            Action::Fill => self.fill(pass, live, address, "payment_cancelled").await,
            Action::Send => {
                let sent = self.send(pass, live, address).await?;
                // A pool that dropped a transaction waiting this long is a sign it is stuck.
                let stuck = view.accepted
                    && view
                        .blocks_waiting
                        .is_some_and(|b| b >= self.settings().stuck_after_blocks);
                if sent == Sent::Arrived && stuck {
                    self.replace_stuck(pass, live, address).await?;
                }
                Ok(true)
            }
            Action::Replace => self.replace_stuck(pass, live, address).await,
        };
        changed.map(Settled::Changed)
    }

    /// What the chain says of a slot. The wallet's nonce is read first (once per pass), so a
    /// nonce seen as used has its receipt by the time the receipts are read.
    async fn observe(&self, pass: &mut Pass, slot: &Slot, address: Address) -> Result<Observed> {
        let live = slot.live();
        let chain_nonce = self.chain_nonce(pass, &live.wallet_id, address).await?;
        let nonce = u64::try_from(live.nonce).map_err(|_| LedgerError::Corrupt("nonce".into()))?;
        let nonce_used = chain_nonce > nonce;
        let mut mined = None;
        // An unused nonce means no block on the canonical chain holds any of the slot's
        // transactions yet: their receipts are read only once the nonce is used.
        for (index, candidate) in slot.transactions.iter().enumerate() {
            if !nonce_used && !live_included(slot) {
                break;
            }
            let hash = parse_hash(&candidate.tx_hash)?;
            let receipt = match pass.receipts.get(&hash) {
                Some(prefetched) => *prefetched,
                None => self.chain.receipt(hash).await?,
            };
            if let Some(receipt) = receipt
                && self.block_hash(pass, receipt.block_number).await? == receipt.block_hash
            {
                mined = Some((index, receipt));
                break;
            }
        }
        let mut observed = Observed {
            nonce_used,
            mined,
            any_known: false,
            live_known: false,
        };
        if observed.mined.is_some() {
            return Ok(observed);
        }
        if nonce_used {
            for candidate in &slot.transactions {
                if self
                    .chain
                    .knows_transaction(parse_hash(&candidate.tx_hash)?)
                    .await?
                {
                    observed.any_known = true;
                    break;
                }
            }
        } else {
            let hash = parse_hash(&live.tx_hash)?;
            observed.live_known = match pass.known.get(&hash) {
                Some(known) => *known,
                None => self.chain.knows_transaction(hash).await?,
            };
        }
        Ok(observed)
    }
}
