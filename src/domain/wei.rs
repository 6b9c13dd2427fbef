//! `Wei`: an exact amount of ETH in wei (10^-18 ETH), the gas money of agent wallets. Parsed only
//! from decimal strings of ETH, shown as a decimal string of ETH; never a float.

use alloy::primitives::U256;
use serde::{Serialize, Serializer};
use std::fmt;

/// Decimals of ETH.
const ETH_DECIMALS: usize = 18;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Wei(U256);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeiError {
    #[error("must be a decimal string of ETH with at most 18 decimals, such as \"0.01\"")]
    NotDecimal,
}

impl Wei {
    pub const ZERO: Wei = Wei(U256::ZERO);

    pub const fn from_u256(wei: U256) -> Wei {
        Wei(wei)
    }

    pub fn from_wei(wei: u128) -> Wei {
        Wei(U256::from(wei))
    }

    pub const fn into_inner(self) -> U256 {
        self.0
    }

    /// Parses ETH written as plain decimal digits with at most 18 decimals, exactly: no sign,
    /// no exponent, no rounding.
    pub fn parse_ether(text: &str) -> Result<Wei, WeiError> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || fraction.len() > ETH_DECIMALS
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(WeiError::NotDecimal);
        }
        let padded = format!("{whole}{fraction:0<ETH_DECIMALS$}");
        U256::from_str_radix(&padded, 10)
            .map(Wei)
            .map_err(|_| WeiError::NotDecimal)
    }
}

impl fmt::Display for Wei {
    /// ETH as a decimal string, with no trailing zeros: "0.01", "1".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let padded = format!("{text:0>width$}", width = ETH_DECIMALS + 1);
        let (whole, fraction) = padded.split_at(padded.len() - ETH_DECIMALS);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            f.write_str(whole)
        } else {
            write!(f, "{whole}.{fraction}")
        }
    }
}

impl fmt::Debug for Wei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wei({self} ETH)")
    }
}

impl Serialize for Wei {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_ether_exactly() {
        for (text, wei, shown) in [
            ("0.01", 10_000_000_000_000_000u128, "0.01"),
            ("1", 1_000_000_000_000_000_000, "1"),
            (
                "1.000000000000000001",
                1_000_000_000_000_000_001,
                "1.000000000000000001",
            ),
            ("0", 0, "0"),
            ("10.50", 10_500_000_000_000_000_000, "10.5"),
        ] {
            let parsed = Wei::parse_ether(text).unwrap();
            assert_eq!(parsed, Wei::from_wei(wei), "{text}");
            assert_eq!(parsed.to_string(), shown);
        }
        for bad in [
            "",
            "-1",
            "1e18",
            ".5",
            "5.",
            "0.0000000000000000001",
            "0x10",
            " 1",
        ] {
            assert!(Wei::parse_ether(bad).is_err(), "{bad:?}");
        }
    }
}
