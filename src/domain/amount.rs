//! `Amount`: an exact count of micro-USDC (10^-6 USDC), parsed only from decimal strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// USDC has six decimals on every chain Bursar supports.
pub const DECIMALS: u32 = 6;
const MICROS_PER_USDC: u64 = 1_000_000;
/// The largest amount the API accepts: 1,000,000,000 USDC.
pub const MAX_MICROS: u64 = 1_000_000_000 * MICROS_PER_USDC;

/// An amount of USDC as an integer number of micro-USDC. Zero is representable (for sums and
/// balances) but `parse_positive` is what the API uses for a payment amount.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a decimal string such as \"12.50\"")]
    NotDecimal,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("must have at most 6 decimal places")]
    TooPrecise,
    #[error("must not exceed 1000000000 USDC")]
    TooLarge,
    #[error("arithmetic overflow")]
    Overflow,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn from_micros(micros: u64) -> Amount {
        Amount(micros)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Parses an API amount: plain decimal digits with an optional fraction of at most six
    /// digits, strictly positive, at most `MAX_MICROS`. Signs, exponents, spaces, hex and
    /// anything a float parser would forgive are refused.
    pub fn parse_positive(text: &str) -> Result<Amount, AmountError> {
        let amount = Self::parse_non_negative(text)?;
        if amount.0 == 0 {
            return Err(AmountError::NotPositive);
        }
        Ok(amount)
    }

    /// Like `parse_positive` but accepts zero (limits may be zero: "no spending allowed").
    /// Judged by the text's own digits, never by a rounding parser: more than six decimals is
    /// refused even when they are zeros, and the whole part may have at most ten significant
    /// digits (1,000,000,000 USDC), so no text is rounded or truncated into an amount.
    pub fn parse_non_negative(text: &str) -> Result<Amount, AmountError> {
        if text.starts_with('-') && text.len() > 1 {
            return Err(AmountError::NotPositive);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(AmountError::NotDecimal);
        }
        if fraction.len() > DECIMALS as usize {
            return Err(AmountError::TooPrecise);
        }
        let significant = whole.trim_start_matches('0');
        if significant.len() > 10 {
            return Err(AmountError::TooLarge);
        }
        let number = |part: &str| part.bytes().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        let scale = 10u64.pow(DECIMALS - fraction.len() as u32);
        let micros = number(significant) * MICROS_PER_USDC + number(fraction) * scale;
        if micros > MAX_MICROS {
            return Err(AmountError::TooLarge);
        }
        Ok(Amount(micros))
    }

    /// Serde helper for limits, where zero means "nothing": a JSON string, zero allowed.
    pub fn deserialize_non_negative<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Amount>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|t| Amount::parse_non_negative(&t).map_err(serde::de::Error::custom))
            .transpose()
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Converts a token balance in base units (from the chain) into an `Amount`.
    pub fn from_base_units(units: u128) -> Result<Amount, AmountError> {
        u64::try_from(units)
            .map(Amount)
            .map_err(|_| AmountError::Overflow)
    }

    /// The value stored in SQLite (INTEGER is i64; every valid amount fits).
    pub fn to_sql(self) -> i64 {
        i64::try_from(self.0).expect("amounts are bounded far below i64::MAX")
    }

    pub fn from_sql(value: i64) -> Amount {
        Amount(u64::try_from(value).expect("the schema forbids negative amounts"))
    }
}

impl fmt::Display for Amount {
    /// Canonical form: no trailing zeros in the fraction, no fraction for whole amounts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_USDC;
        let fraction = self.0 % MICROS_PER_USDC;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self} USDC)")
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserializes only from a JSON string (a JSON number is refused, as API.md requires).
impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"12.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Amount, E> {
                Amount::parse_positive(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_amounts_exactly() {
        let cases = [
            ("12.5", 12_500_000),
            ("12.50", 12_500_000),
            ("0.000001", 1),
            ("99.999999", 99_999_999),
            ("1000000000", MAX_MICROS),
            ("1", 1_000_000),
            ("007", 7_000_000),
            ("0001000000000", MAX_MICROS),
        ];
        for (text, micros) in cases {
            assert_eq!(Amount::parse_positive(text), Ok(Amount(micros)), "{text}");
        }
    }

    #[test]
    fn refuses_invalid_amounts_with_reason() {
        use AmountError::*;
        let cases = [
            ("0", NotPositive),
            ("0.000000", NotPositive),
            ("-1", NotPositive),
            ("0.0000001", TooPrecise),
            ("1000000000.000001", TooLarge),
            ("99999999999999999999999999999", TooLarge),
            // Precision is judged by the text: zeros count, nothing is rounded.
            ("1.500000000", TooPrecise),
            ("0.0100000", TooPrecise),
            ("1.00000000000000000000000000001", TooPrecise),
            ("10000000000", TooLarge),
            ("1e3", NotDecimal),
            ("1E3", NotDecimal),
            ("", NotDecimal),
            (".5", NotDecimal),
            ("5.", NotDecimal),
            ("+5", NotDecimal),
            (" 5", NotDecimal),
            ("0x10", NotDecimal),
            ("1,5", NotDecimal),
            ("NaN", NotDecimal),
            ("١", NotDecimal),
        ];
        for (text, error) in cases {
            assert_eq!(Amount::parse_positive(text), Err(error), "{text:?}");
        }
        let long = format!("1.{}", "0".repeat(10_000));
        assert_eq!(Amount::parse_positive(&long), Err(TooPrecise));
        assert_eq!(Amount::parse_non_negative("0"), Ok(Amount::ZERO));
    }

    #[test]
    fn displays_canonically() {
        for (micros, text) in [
            (12_500_000, "12.5"),
            (1, "0.000001"),
            (5_000_000, "5"),
            (0, "0"),
        ] {
            assert_eq!(Amount(micros).to_string(), text);
        }
    }

    #[test]
    fn json_numbers_are_refused() {
        assert!(serde_json::from_str::<Amount>("12.5").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("\"12.5\"").unwrap(),
            Amount(12_500_000)
        );
    }
}
