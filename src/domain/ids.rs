//! Opaque prefixed ids, bearer secrets and idempotency keys.

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A new opaque id such as `pay_3f9c...`: a type prefix and 128 random bits in hex.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
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
