//! Opaque prefixed ids, bearer secrets and idempotency keys.

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A new opaque id such as `pay_019aa3...`: a type prefix and 128 bits in hex, the first 48 the
/// wall clock's milliseconds and the other 80 random (UUIDv7's layout). Ids made later sort
/// later, so a new row's key lands on the rightmost page of its index instead of a random one:
/// a group commit then writes a few pages per index rather than one per row, and the index's
/// working set stays small however large the history grows. 80 random bits keep ids
/// unguessable (they are not secrets; bearer secrets are `new_secret_token`).
pub fn new_id(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&(millis as u64).to_be_bytes()[2..]);
    rand::rng().fill_bytes(&mut bytes[6..]);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// A new bearer secret such as `bsr_live_...`: 256 random bits. Only its hash is ever stored.
pub fn new_secret_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The client's `Idempotency-Key`: 1 to 255 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    #[error("must be 1 to 255 characters")]
    Length,
    #[error("must be printable ASCII")]
    Characters,
}

impl IdempotencyKey {
    pub const MAX_LENGTH: usize = 255;

    pub fn parse(text: &str) -> Result<IdempotencyKey, IdempotencyKeyError> {
        if text.is_empty() || text.len() > Self::MAX_LENGTH {
            return Err(IdempotencyKeyError::Length);
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(IdempotencyKeyError::Characters);
        }
        Ok(IdempotencyKey(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_unique() {
        let a = new_id("pay");
        assert!(a.starts_with("pay_") && a.len() == 4 + 32);
        assert_ne!(a, new_id("pay"));
    }

    /// Ids sort by when they were made (to the millisecond), so inserts append to their index.
    #[test]
    fn later_ids_sort_later() {
        let first = new_id("pay");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id("pay");
        assert!(first < second, "{first} then {second}");
        let millis = u64::from_str_radix(&second[4..16], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - millis < 60_000, "the prefix is the creation time");
    }

    #[test]
    fn idempotency_key_bounds() {
        assert!(IdempotencyKey::parse("k").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert_eq!(IdempotencyKey::parse(""), Err(IdempotencyKeyError::Length));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(IdempotencyKeyError::Length)
        );
        assert_eq!(
            IdempotencyKey::parse("a\nb"),
            Err(IdempotencyKeyError::Characters)
        );
    }
}

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id with this type's prefix.
            pub fn generate() -> $name {
                $name(new_id($prefix))
            }

            /// An id as a caller wrote it (a path segment, a stored reference). Ids are opaque:
            /// an unknown one is simply not found.
            pub fn from_text(text: &str) -> $name {
                $name(text.to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> $name {
                id.clone()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        sqlx_text!($name, |value| value.0.as_str(), |text| Ok($name(text.to_string())));
    };
}

typed_id!(
    /// A payment's id (`pay_...`).
    PaymentId, "pay"
);
typed_id!(
    /// An agent's id (`agt_...`).
    AgentId, "agt"
);
typed_id!(
    /// A credential's id (`cred_...`).
    CredentialId, "cred"
);
