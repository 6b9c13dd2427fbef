//! `AuditKey`: the secret that signs checkpoints of the audit chain's head (HMAC-SHA256). It is
//! derived from the master key by custody and never stored in the database, so someone who can
//! only write the database can rewrite the hash chain consistently but cannot forge a checkpoint.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub struct AuditKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    pub fn from_bytes(bytes: [u8; 32]) -> AuditKey {
        AuditKey(Zeroizing::new(bytes))
    }

    fn mac(&self, seq: i64, head_hash: &str, prev_seq: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes keys of any length");
        mac.update(
            format!("bursar-audit-checkpoint-v1\n{seq}\n{head_hash}\n{prev_seq}").as_bytes(),
        );
        mac
    }

    /// The checkpoint's signature: over the head's sequence number and hash, and the previous
    /// checkpoint's sequence number (so checkpoints chain too), hex-encoded.
    pub fn sign(&self, seq: i64, head_hash: &str, prev_seq: i64) -> String {
        hex::encode(self.mac(seq, head_hash, prev_seq).finalize().into_bytes())
    }

    /// Checks a signature in constant time.
    pub fn verify(&self, seq: i64, head_hash: &str, prev_seq: i64, signature: &str) -> bool {
        hex::decode(signature).is_ok_and(|bytes| {
            self.mac(seq, head_hash, prev_seq)
                .verify_slice(&bytes)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_every_field_and_the_key() {
        let key = AuditKey::from_bytes([7; 32]);
        let signature = key.sign(100, "abc", 50);
        assert!(key.verify(100, "abc", 50, &signature));
        assert!(!key.verify(101, "abc", 50, &signature));
        assert!(!key.verify(100, "abd", 50, &signature));
        assert!(!key.verify(100, "abc", 49, &signature));
        assert!(!AuditKey::from_bytes([8; 32]).verify(100, "abc", 50, &signature));
        assert!(!key.verify(100, "abc", 50, "not hex"));
        assert_eq!(format!("{key:?}"), "AuditKey(<redacted>)");
    }
}
