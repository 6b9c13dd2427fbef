//! The resolution of one nonce slot from what the chain says, pure. A slot is a wallet's nonce
//! with every transaction Bursar signed for it: the live one (at most one) and the ones it
//! replaced or dropped. Whichever of them a canonical block includes is the one that counts,
//! whatever state the others are in; if none is included but the nonce is used, a transaction
//! Bursar did not sign took it.

use crate::chain::Receipt;
use alloy::primitives::U256;

/// What the watcher read for a slot. The wallet's nonce is read before the receipts, so a
/// nonce seen as used has its transaction's receipt by the time receipts are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The wallet's transaction count in the latest block is above the slot's nonce.
    pub nonce_used: bool,
    /// The slot's transaction (its index) that a canonical block includes, with its receipt.
    pub mined: Option<(usize, Receipt)>,
    /// Whether the node still has any of the slot's transactions (pool or chain); read only
    /// when the nonce is used and none of them is mined, to tell a foreign transaction from a
    /// receipt that lags.
    pub any_known: bool,
    /// Whether the node has the live transaction in its pool.
    pub live_known: bool,
}

/// The live transaction of a slot, as the resolution needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Recorded as accepted by the node (not only signed).
    pub accepted: bool,
    /// A block included it in an earlier pass.
    pub included: bool,
    pub filler: bool,
    /// The payment was cancelled (a freeze) while this transaction was never accepted.
    pub payment_cancelled: bool,
    /// Blocks since it was (re)broadcast; `None` if never.
    pub blocks_waiting: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A canonical block includes the slot's transaction at `index`: record it.
    Record { index: usize, receipt: Receipt },
    /// The nonce is used, by none of ours: a foreign transaction took it.
    ConsumedElsewhere,
    /// The nonce is used and none of ours is mined, but the node still has one of them: a
    /// receipt that lags behind the nonce. Look again next pass.
    Recheck,
    /// The live transaction was included and its block left the canonical chain: back to
    /// submitted, and send the same bytes again.
    Unincluded,
    /// Withdraw the slot: take the nonce with a filler so the live transaction never executes.
    Fill,
    /// The node does not have the live transaction: send (or resend) it.
    Send,
    /// In the node's pool for too long: replace it at the same nonce with higher fees.
    Replace,
    /// In the node's pool: wait for a block.
    Wait,
}

pub fn resolve(live: Live, observed: &Observed, stuck_after_blocks: u64) -> Action {
    if let Some((index, receipt)) = &observed.mined {
        return Action::Record {
            index: *index,
            receipt: *receipt,
        };
    }
    if observed.nonce_used {
        return if observed.any_known {
            Action::Recheck
        } else {
            Action::ConsumedElsewhere
        };
    }
    if live.included {
        return Action::Unincluded;
    }
    if live.payment_cancelled && !live.filler {
        return Action::Fill;
    }
    if !live.accepted || !observed.live_known {
        // Never accepted (or accepted before a crash that lost the record, when the node has it
        // already): send, and let the chain say whether it arrived. Or the node lost it: resend.
        return Action::Send;
    }
    match live.blocks_waiting {
        Some(blocks) if blocks >= stuck_after_blocks && live.accepted => Action::Replace,
        _ => Action::Wait,
    }
}

/// Why the node refused to take a transaction whose nonce is still open, told from the chain's
/// state and never from the error's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The wallet cannot pay the transaction's gas at its fee cap (plus its value). Its bytes
    /// stay valid and may execute once the wallet has ETH, so it is never given up early.
    NoGas,
    /// Its fee cap is under the next block's base fee: re-sign with fees that clear it.
    Underpriced,
    /// Any other lasting reason: counted in blocks, and the slot is filled after a bound.
    Other,
}

pub fn diagnose(
    balance: U256,
    worst_case_cost: U256,
    max_fee_per_gas: u128,
    next_base_fee: u128,
) -> Refusal {
    if balance < worst_case_cost {
        Refusal::NoGas
    } else if max_fee_per_gas < next_base_fee {
        Refusal::Underpriced
    } else {
        Refusal::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    fn receipt() -> Receipt {
        Receipt {
            block_number: 7,
            block_hash: B256::repeat_byte(7),
            success: true,
        }
    }

    fn live() -> Live {
        Live {
            accepted: true,
            included: false,
            filler: false,
            payment_cancelled: false,
            blocks_waiting: Some(0),
        }
    }

    fn observed() -> Observed {
        Observed {
            nonce_used: false,
            mined: None,
            any_known: false,
            live_known: true,
        }
    }

    /// Each case: a name, what Bursar holds of the slot, what the chain says, and the action.
    fn assert_resolves(cases: Vec<(&str, Live, Observed, Action)>) {
        for (name, live, observed, expected) in cases {
            assert_eq!(resolve(live, &observed, 3), expected, "{name}");
        }
    }

    /// Whichever transaction of the slot is mined counts, even one signed and never sent, and even
    /// for a payment cancelled meanwhile.
    #[test]
    fn a_mined_slot_is_recorded_whatever_else_it_was() {
        let mined = Observed {
            nonce_used: true,
            mined: Some((0, receipt())),
            ..observed()
        };
        assert_resolves(vec![
            (
                "mined",
                Live {
                    accepted: false,
                    ..live()
                },
                mined.clone(),
                Action::Record {
                    index: 0,
                    receipt: receipt(),
                },
            ),
            (
                "mined beats cancelled",
                Live {
                    payment_cancelled: true,
                    ..live()
                },
                mined,
                Action::Record {
                    index: 0,
                    receipt: receipt(),
                },
            ),
        ]);
    }

    /// A nonce used by another transaction, a receipt not yet served, and an inclusion reorganized
    /// away are three different things.
    #[test]
    fn a_used_nonce_without_our_receipt_is_told_apart() {
        assert_resolves(vec![
            (
                "foreign",
                live(),
                Observed {
                    nonce_used: true,
                    live_known: false,
                    ..observed()
                },
                Action::ConsumedElsewhere,
            ),
            (
                "lagging receipt",
                live(),
                Observed {
                    nonce_used: true,
                    any_known: true,
                    ..observed()
                },
                Action::Recheck,
            ),
            (
                "reorged out",
                Live {
                    included: true,
                    ..live()
                },
                Observed {
                    live_known: false,
                    ..observed()
                },
                Action::Unincluded,
            ),
        ]);
    }

    /// A slot the node does not hold is sent (again): never sent, lost by a crash, dropped from the
    /// pool, or a cancelled slot's filler; a cancelled payment's own transfer is filled instead.
    #[test]
    fn a_slot_the_node_does_not_hold_is_sent_or_filled() {
        assert_resolves(vec![
            (
                "cancelled by a freeze",
                Live {
                    accepted: false,
                    payment_cancelled: true,
                    ..live()
                },
                observed(),
                Action::Fill,
            ),
            (
                "a cancelled slot's filler is sent",
                Live {
                    accepted: false,
                    payment_cancelled: true,
                    filler: true,
                    ..live()
                },
                Observed {
                    live_known: false,
                    ..observed()
                },
                Action::Send,
            ),
            (
                "never sent",
                Live {
                    accepted: false,
                    blocks_waiting: None,
                    ..live()
                },
                Observed {
                    live_known: false,
                    ..observed()
                },
                Action::Send,
            ),
            (
                "sent before a crash lost the record",
                Live {
                    accepted: false,
                    blocks_waiting: None,
                    ..live()
                },
                observed(),
                Action::Send,
            ),
            (
                "dropped from the pool",
                live(),
                Observed {
                    live_known: false,
                    ..observed()
                },
                Action::Send,
            ),
        ]);
    }

    /// A slot in the node's pool waits for its bound in blocks, then is replaced.
    #[test]
    fn a_slot_in_the_pool_waits_then_is_replaced() {
        assert_resolves(vec![
            (
                "waiting",
                Live {
                    blocks_waiting: Some(2),
                    ..live()
                },
                observed(),
                Action::Wait,
            ),
            (
                "stuck",
                Live {
                    blocks_waiting: Some(3),
                    ..live()
                },
                observed(),
                Action::Replace,
            ),
        ]);
    }

    #[test]
    fn a_refusal_is_told_from_the_chain_state() {
        let cases = [
            (99, 100, 10, 5, Refusal::NoGas),
            // No gas wins over underpriced: re-signing would not help a wallet without ETH.
            (99, 100, 1, 5, Refusal::NoGas),
            (100, 100, 4, 5, Refusal::Underpriced),
            (100, 100, 5, 5, Refusal::Other),
        ];
        for (balance, cost, max_fee, base_fee, expected) in cases {
            assert_eq!(
                diagnose(U256::from(balance), U256::from(cost), max_fee, base_fee),
                expected
            );
        }
    }
}
