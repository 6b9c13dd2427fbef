//! Fee maths, pure: the cap on what Bursar signs, the 12.5% bump a replacement needs, and the
//! fees of a re-signed transaction that must clear the next block's base fee.

use crate::chain::Fees;

/// Raises a fee by at least 12.5% (one eighth, rounded up): what nodes require of a replacement
/// at the same nonce (geth and reth ask 10%; 12.5% leaves room).
pub fn bump(fee: u128) -> u128 {
    fee.saturating_add(fee.div_ceil(8))
        .max(fee.saturating_add(1))
}

/// The market's fees, never above the configured cap, with the tip never above the fee cap.
pub fn capped(market: Fees, cap: u128) -> Fees {
    let max_fee_per_gas = market.max_fee_per_gas.min(cap);
    Fees {
        max_fee_per_gas,
        max_priority_fee_per_gas: market.max_priority_fee_per_gas.min(max_fee_per_gas),
    }
}

/// The fees of a transaction that takes the place of `old` at the same nonce: each at least
/// 12.5% above the old one, at least the market's, and a fee cap that clears `base_fee` (the next
/// block's) with the tip on top. `None` when that would exceed `cap`: Bursar then waits.
pub fn replacement(old: Fees, market: Fees, base_fee: u128, cap: u128) -> Option<Fees> {
    let tip = bump(old.max_priority_fee_per_gas).max(market.max_priority_fee_per_gas);
    let max_fee = bump(old.max_fee_per_gas)
        .max(market.max_fee_per_gas)
        .max(base_fee.saturating_add(tip));
    if max_fee > cap {
        return None;
    }
    Some(Fees {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip.min(max_fee),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fees(max_fee_per_gas: u128, max_priority_fee_per_gas: u128) -> Fees {
        Fees {
            max_fee_per_gas,
            max_priority_fee_per_gas,
        }
    }

    #[test]
    fn bump_is_at_least_an_eighth_and_always_moves() {
        for (fee, bumped) in [
            (0, 1),
            (1, 2),
            (8, 9),
            (9, 11),
            (800, 900),
            (1_000_000_007, 1_125_000_008),
        ] {
            assert_eq!(bump(fee), bumped, "{fee}");
            assert!(bump(fee) * 8 >= fee * 9);
        }
        assert_eq!(bump(u128::MAX), u128::MAX);
    }

    #[test]
    fn capped_never_exceeds_the_cap_and_keeps_the_tip_under_the_fee_cap() {
        let cases = [
            (fees(100, 10), 1_000, fees(100, 10)),
            (fees(100, 10), 50, fees(50, 10)),
            (fees(100, 80), 50, fees(50, 50)),
        ];
        for (market, cap, expected) in cases {
            let got = capped(market, cap);
            assert_eq!(
                (got.max_fee_per_gas, got.max_priority_fee_per_gas),
                (expected.max_fee_per_gas, expected.max_priority_fee_per_gas)
            );
        }
    }

    #[test]
    fn a_replacement_bumps_clears_the_base_fee_and_respects_the_cap() {
        // (old, market, base fee, cap) -> expected (max fee, tip)
        let cases = [
            // A plain bump: the market is lower than the old fees.
            (fees(800, 80), fees(100, 10), 50, 10_000, Some((900, 90))),
            // The market is higher than the bump.
            (
                fees(800, 80),
                fees(2_000, 100),
                50,
                10_000,
                Some((2_000, 100)),
            ),
            // The base fee spiked above both: the fee cap clears it with the tip on top.
            (
                fees(800, 80),
                fees(900, 90),
                5_000,
                10_000,
                Some((5_090, 90)),
            ),
            // Clearing the base fee would break the cap: wait.
            (fees(800, 80), fees(900, 90), 9_950, 10_000, None),
            // The bump alone breaks the cap.
            (fees(9_500, 80), fees(100, 10), 50, 10_000, None),
        ];
        for (old, market, base_fee, cap, expected) in cases {
            let got = replacement(old, market, base_fee, cap)
                .map(|f| (f.max_fee_per_gas, f.max_priority_fee_per_gas));
            assert_eq!(got, expected, "{old:?} {market:?} {base_fee} {cap}");
            if let Some((max_fee, tip)) = got {
                assert!(
                    max_fee * 8 >= old.max_fee_per_gas * 9
                        && tip * 8 >= old.max_priority_fee_per_gas * 9
                );
                assert!(max_fee >= base_fee + tip && max_fee <= cap && tip <= max_fee);
            }
        }
    }
}
