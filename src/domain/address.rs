//! `Address`: an EVM account address, parsed strictly and shown in EIP-55 form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(alloy::primitives::Address);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("must be 0x followed by 40 hexadecimal digits")]
    Malformed,
    #[error("mixed-case address fails its EIP-55 checksum")]
    BadChecksum,
}

impl Address {
    /// Accepts `0x` + 40 hex digits. Single-case digits carry no checksum and are accepted;
    /// mixed case must be a valid EIP-55 checksum, so a typo in a checksummed address is caught.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let digits = text.strip_prefix("0x").ok_or(AddressError::Malformed)?;
        if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AddressError::Malformed);
        }
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        let address = Address::from_digits(digits)?;
        if has_lower && has_upper && address.to_string() != text {
            return Err(AddressError::BadChecksum);
        }
        Ok(address)
    }

    /// An address the ledger stored (always its EIP-55 text, written from a parsed `Address`):
    /// `0x` + 40 hex digits, with no second checksum check. Hashing each read address again
    /// cost settlement's writer about 2% of its time, reading payment rows.
    fn from_stored(text: &str) -> Result<Address, AddressError> {
        Address::from_digits(text.strip_prefix("0x").ok_or(AddressError::Malformed)?)
    }

    fn from_digits(digits: &str) -> Result<Address, AddressError> {
        if digits.len() != 40 {
            return Err(AddressError::Malformed);
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| AddressError::Malformed)?;
        Ok(Address(alloy::primitives::Address::from(bytes)))
    }

    /// The zero address, to which no payment may go.
    pub const ZERO: Address = Address(alloy::primitives::Address::ZERO);

    pub const fn into_inner(self) -> alloy::primitives::Address {
        self.0
    }
}

impl From<alloy::primitives::Address> for Address {
    fn from(inner: alloy::primitives::Address) -> Self {
        Address(inner)
    }
}

impl From<Address> for alloy::primitives::Address {
    fn from(address: Address) -> Self {
        address.0
    }
}

impl fmt::Display for Address {
    /// EIP-55 checksummed form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_checksum(None))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Address::parse(&text).map_err(serde::de::Error::custom)
    }
}

// Stored as its EIP-55 text; a stored value that is not an address fails the read.
sqlx_text!(Address, |value| value.to_string(), |text| Ok(
    Address::from_stored(text)?
));

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKSUMMED: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

    #[test]
    fn accepts_checksummed_and_single_case() {
        for text in [
            CHECKSUMMED.to_string(),
            CHECKSUMMED.to_lowercase(),
            format!("0x{}", CHECKSUMMED[2..].to_uppercase()),
        ] {
            let address = Address::parse(&text).unwrap();
            assert_eq!(address.to_string(), CHECKSUMMED);
        }
    }

    #[test]
    fn refuses_bad_input() {
        let bad_checksum = CHECKSUMMED.replace("aAeb", "AAeb");
        let cases = [
            ("", AddressError::Malformed),
            (
                "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                AddressError::Malformed,
            ),
            (
                "0X5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
                AddressError::Malformed,
            ),
            (
                "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
                AddressError::Malformed,
            ),
            (
                "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaedd",
                AddressError::Malformed,
            ),
            (
                "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg",
                AddressError::Malformed,
            ),
            (bad_checksum.as_str(), AddressError::BadChecksum),
        ];
        for (text, error) in cases {
            assert_eq!(Address::parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn a_stored_address_reads_back_and_a_malformed_one_fails_the_read() {
        let address = Address::parse(CHECKSUMMED).unwrap();
        assert_eq!(Address::from_stored(&address.to_string()), Ok(address));
        for text in [
            "",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg",
        ] {
            assert_eq!(
                Address::from_stored(text),
                Err(AddressError::Malformed),
                "{text:?}"
            );
        }
    }
}
