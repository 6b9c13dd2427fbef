//! The canonical chain's recent blocks, kept across passes so that each block is read once, not
//! once per pass. Settlement needs the canonical hash of every block in the finality window
//! (to re-check confirmed transactions) and of the recent ones (to trust a cached receipt); a
//! node answers a block by number with every transaction hash it holds, so re-reading the whole
//! window each pass cost tens of full blocks per pass.
//!
//! What makes the cache safe is the hash chain: a block's hash commits to its parent's. Each
//! pass reads the head and every block the cache does not hold yet, then checks every parent
//! link in the window. If every link holds, every cached block is an ancestor of the head just
//! read, so canonical. A broken link is a reorganization: everything at and below the break is
//! read again, and the links checked again.

use super::{Payments, Result};
use crate::chain::ChainError;
use alloy::primitives::B256;
use std::collections::{BTreeMap, HashMap};

/// Rounds of re-reading after a broken link before the pass gives up (the chain is
/// reorganizing under the reads); the next pass tries again.
const MAX_ROUNDS: usize = 4;

/// Recent blocks by number: hash and parent hash.
#[derive(Debug, Default)]
pub struct Canon {
    blocks: BTreeMap<u64, (B256, B256)>,
}

impl Canon {
    /// Forgets the blocks outside `[low, head]` (below the window, or above a head that went
    /// back).
    fn keep(&mut self, low: u64, head: u64) {
        self.blocks
            .retain(|number, _| (low..=head).contains(number));
    }

    /// The blocks of `[low, head]` to read: every one not held, and the head always (a
    /// reorganization that keeps the height shows only there).
    fn wanted(&self, low: u64, head: u64) -> Vec<u64> {
        let mut wanted: Vec<u64> = (low..head)
            .filter(|number| !self.blocks.contains_key(number))
            .collect();
        wanted.push(head);
        wanted
    }

    fn insert(&mut self, number: u64, hash: B256, parent: B256) {
        self.blocks.insert(number, (hash, parent));
    }

    /// The highest block of `[low, head]` that is missing or that the block above it does not
    /// name as its parent: it and everything below it must be read again. `None` if the window
    /// is whole and every link holds.
    fn broken(&self, low: u64, head: u64) -> Option<u64> {
        let mut above: Option<&(B256, B256)> = None;
        for number in (low..=head).rev() {
            let Some(block) = self.blocks.get(&number) else {
                return Some(number);
            };
            if above.is_some_and(|(_, parent)| *parent != block.0) {
                return Some(number);
            }
            above = Some(block);
        }
        None
    }

    fn hashes(&self) -> HashMap<u64, B256> {
        self.blocks
            .iter()
            .map(|(number, (hash, _))| (*number, *hash))
            .collect()
    }
}

impl Payments {
    /// The canonical hash of every block from `head - window` to `head`, verified as above.
    pub(super) async fn canonical_hashes(&self, head: u64) -> Result<HashMap<u64, B256>> {
        let window = self
            .settings()
            .finality_watch_blocks
            .max(self.confirmations_required() + super::watch::RECENT_BLOCKS);
        let low = head.saturating_sub(window);
        // Taken out while it is read and checked: a pass that fails here leaves nothing behind,
        // and the next one reads the window afresh.
        let mut canon = std::mem::take(&mut *self.canon.lock().map_err(|_| poisoned())?);
        canon.keep(low, head);
        let mut wanted = canon.wanted(low, head);
        for _ in 0..MAX_ROUNDS {
            let links = self.chain.block_links(&wanted).await?;
            for (number, link) in wanted.iter().zip(links) {
                let (hash, parent) = link.ok_or(ChainError::MissingBlock { number: *number })?;
                canon.insert(*number, hash, parent);
            }
            match canon.broken(low, head) {
                None => {
                    let hashes = canon.hashes();
                    *self.canon.lock().map_err(|_| poisoned())? = canon;
                    return Ok(hashes);
                }
                Some(top) => {
                    tracing::info!(block = top, "recent blocks changed: reading them again");
                    wanted = (low..=top).collect();
                }
            }
        }
        Err(ChainError::MissingBlock { number: head }.into())
    }
}

fn poisoned() -> crate::payments::PaymentsError {
    crate::ledger::LedgerError::Corrupt("the canonical blocks' lock".into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(fork: u8, number: u64) -> B256 {
        let mut bytes = [0u8; 32];
        bytes[0] = fork;
        bytes[24..].copy_from_slice(&number.to_be_bytes());
        B256::from(bytes)
    }

    /// A chain from `from` to `to` on `fork`, whose block `from` names `parent` as its parent.
    fn chain(canon: &mut Canon, fork: u8, from: u64, to: u64, parent: B256) {
        let mut parent = parent;
        for number in from..=to {
            canon.insert(number, hash(fork, number), parent);
            parent = hash(fork, number);
        }
    }

    #[test]
    fn a_linked_window_is_whole_and_only_the_head_is_read_again() {
        let mut canon = Canon::default();
        chain(&mut canon, 0, 10, 20, hash(0, 9));
        assert_eq!(canon.broken(10, 20), None);
        assert_eq!(canon.wanted(10, 20), vec![20]);
        // The head moved on: the new blocks and the head are read.
        canon.keep(12, 22);
        assert_eq!(canon.wanted(12, 22), vec![21, 22]);
        assert_eq!(canon.broken(12, 22), Some(22), "not read yet");
    }

    #[test]
    fn a_reorganization_breaks_the_link_where_the_forks_meet() {
        let mut canon = Canon::default();
        chain(&mut canon, 0, 10, 20, hash(0, 9));
        // Blocks 18 to 21 replaced by another fork branching from block 17, of which only the
        // new head and the new block 21 were read: the break is found at each fork point in turn.
        chain(&mut canon, 1, 21, 21, hash(1, 20));
        assert_eq!(canon.broken(10, 21), Some(20));
        chain(&mut canon, 1, 18, 20, hash(0, 17));
        assert_eq!(canon.broken(10, 21), None);
        assert_eq!(canon.hashes()[&19], hash(1, 19));
        assert_eq!(canon.hashes()[&17], hash(0, 17));
        // A same-height reorganization of the head alone: its parent link still holds, and the
        // head is always read again, so the new hash replaces the old.
        assert!(canon.wanted(10, 21).contains(&21));
        canon.insert(21, hash(2, 21), hash(1, 20));
        assert_eq!(canon.broken(10, 21), None);
        assert_eq!(canon.hashes()[&21], hash(2, 21));
        // A block missing inside the window is a break too.
        canon.blocks.remove(&15);
        assert_eq!(canon.broken(10, 21), Some(15));
    }
}
