//! Custody owns every signing key. Keys are generated here, sealed with XChaCha20-Poly1305 under
//! the master key (the wallet address is the associated data, so a sealed key cannot be moved to
//! another wallet's row), and opened only for the instant of signing. No function here returns a
//! private key, and every type holding one has a `Debug` that prints only the address. Imports
//! only `domain`.

use crate::domain::{Address, TransferAuthorization};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::B256;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use std::fmt;
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

pub const MASTER_KEY_BYTES: usize = 32;
const SEAL_NONCE_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("master key file {path}: {reason}")]
    MasterKey { path: String, reason: String },
    #[error("sealed key for {address} cannot be opened with this master key")]
    Unseal { address: Address },
    #[error("sealed key for {address} belongs to another address")]
    AddressMismatch { address: Address },
    #[error("refusing to sign for chain {requested}; custody signs only for chain {configured}")]
    WrongChain { requested: u64, configured: u64 },
    #[error("signing failed for {address}")]
    Signing { address: Address },
}

/// The 32-byte key that seals every wallet key at rest.
pub struct MasterKey(SecretBox<[u8; MASTER_KEY_BYTES]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Reads a master key file: 32 raw bytes, or 64 hex digits (with optional trailing newline).
    pub fn load(path: &Path) -> Result<MasterKey, CustodyError> {
        let error = |reason: &str| CustodyError::MasterKey {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        let contents =
            Zeroizing::new(std::fs::read(path).map_err(|e| error(&e.kind().to_string()))?);
        let mut key = Box::new([0u8; MASTER_KEY_BYTES]);
        if contents.len() == MASTER_KEY_BYTES {
            key.copy_from_slice(&contents);
        } else {
            let text = std::str::from_utf8(&contents)
                .map_err(|_| error("not 32 bytes or 64 hex digits"))?;
            hex::decode_to_slice(text.trim(), &mut key[..])
                .map_err(|_| error("not 32 bytes or 64 hex digits"))?;
        }
        Ok(MasterKey(SecretBox::new(key)))
    }

    /// Writes a fresh random master key (64 hex digits) readable only by its owner. Refuses to
    /// overwrite an existing file: losing the master key loses every wallet.
    pub fn generate_file(path: &Path) -> Result<(), CustodyError> {
        let error = |reason: String| CustodyError::MasterKey {
            path: path.display().to_string(),
            reason,
        };
        let mut key = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        rand::rng().fill_bytes(&mut key[..]);
        let text = Zeroizing::new(hex::encode(&key[..]));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| error(e.to_string()))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| error(e.to_string()))?;
        Ok(())
    }

    #[cfg(test)]
    fn random() -> MasterKey {
        let mut key = Box::new([0u8; MASTER_KEY_BYTES]);
        rand::rng().fill_bytes(&mut key[..]);
        MasterKey(SecretBox::new(key))
    }
}

/// A wallet key as stored: ciphertext and nonce. Safe to log (it is opaque without the master key),
/// but `Debug` prints only the address anyway.
#[derive(Clone)]
pub struct SealedKey {
    pub address: Address,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedKey({})", self.address)
    }
}

/// A transaction signed by custody, ready to store and broadcast.
#[derive(Clone, Debug)]
pub struct SignedTransaction {
    pub hash: B256,
    pub raw: Vec<u8>,
    pub nonce: u64,
}

/// The keeper of the master key. Cheap to share behind an `Arc`.
pub struct Custody {
    master: MasterKey,
    chain_id: u64,
}

impl fmt::Debug for Custody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Custody(chain {})", self.chain_id)
    }
}

impl Custody {
    pub fn new(master: MasterKey, chain_id: u64) -> Custody {
        Custody { master, chain_id }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.master.0.expose_secret().into())
    }

    /// Generates a fresh wallet key and returns it sealed. The plaintext lives only inside this
    /// call, in memory that is zeroed on drop.
    pub fn generate_wallet(&self) -> Result<SealedKey, CustodyError> {
        let signer = PrivateKeySigner::random();
        let address = Address::from(signer.address());
        let mut bytes = signer.to_bytes();
        let secret = Zeroizing::new(bytes.0);
        bytes.0.zeroize();
        let mut nonce = [0u8; SEAL_NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_slice(),
                    aad: address.into_inner().as_slice(),
                },
            )
            .map_err(|_| CustodyError::Signing { address })?;
        Ok(SealedKey {
            address,
            ciphertext,
            nonce: nonce.to_vec(),
        })
    }

    /// The key that signs audit checkpoints: HMAC-SHA256 of a fixed label under the master key,
    /// so it is never stored and changes with the master key.
    pub fn audit_key(&self) -> crate::domain::AuditKey {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.master.0.expose_secret().as_slice())
                .expect("HMAC takes keys of any length");
        mac.update(b"bursar audit checkpoint key v1");
        crate::domain::AuditKey::from_bytes(mac.finalize().into_bytes().into())
    }

    fn open(&self, sealed: &SealedKey) -> Result<PrivateKeySigner, CustodyError> {
        let address = sealed.address;
        if sealed.nonce.len() != SEAL_NONCE_BYTES {
            return Err(CustodyError::Unseal { address });
        }
        let plaintext = Zeroizing::new(
            self.cipher()
                .decrypt(
                    XNonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: address.into_inner().as_slice(),
                    },
                )
                .map_err(|_| CustodyError::Unseal { address })?,
        );
        let signer = PrivateKeySigner::from_slice(&plaintext)
            .map_err(|_| CustodyError::Unseal { address })?;
        // Fail closed: the key must belong to the address it is filed under.
        if Address::from(signer.address()) != address {
            return Err(CustodyError::AddressMismatch { address });
        }
        Ok(signer)
    }

    /// Signs an EIP-1559 transaction with the wallet's key. Refuses any chain but the configured
    /// one, and refuses a key that is not the one filed under the wallet's address.
    pub fn sign(
        &self,
        sealed: &SealedKey,
        transaction: TxEip1559,
    ) -> Result<SignedTransaction, CustodyError> {
        let mut signed = self.sign_all(sealed, vec![transaction])?;
        signed.pop().ok_or(CustodyError::Signing {
            address: sealed.address,
        })
    }

    /// `sign` for several transactions of one wallet, with its key unsealed once. All or
    /// nothing: any refusal refuses the lot.
    pub fn sign_all(
        &self,
        sealed: &SealedKey,
        transactions: Vec<TxEip1559>,
    ) -> Result<Vec<SignedTransaction>, CustodyError> {
        let address = sealed.address;
        if let Some(transaction) = transactions.iter().find(|t| t.chain_id != self.chain_id) {
            return Err(CustodyError::WrongChain {
                requested: transaction.chain_id,
                configured: self.chain_id,
            });
        }
        // libsecp256k1 signs several times faster than k256 (tests/benches/signing.rs); its key
        // is erased once the chunk is signed. `open` has checked that the key is the one filed
        // under the wallet's address, so each signature is the wallet's: recovering the signer
        // of every one again cost more than signing it (1.3 of 2.35 ms for 32 transfers).
        let signer = self.open(sealed)?.to_secp256k1();
        let signed = transactions
            .into_iter()
            .map(|transaction| {
                let nonce = transaction.nonce;
                let signature = signer
                    .sign_hash_sync(&transaction.signature_hash())
                    .map_err(|_| CustodyError::Signing { address })?;
                let signed = transaction.into_signed(signature);
                let hash = *signed.hash();
                let raw = TxEnvelope::from(signed).encoded_2718();
                Ok(SignedTransaction { hash, raw, nonce })
            })
            .collect();
        signer.into_credential().into_inner().non_secure_erase();
        signed
    }

    /// Signs an EIP-3009 transfer authorization (x402) with the wallet's key: the authorization
    /// must be from this wallet and for the configured chain, and the signature must recover to
    /// the wallet's address. Returns the 65-byte signature (r, s, v).
    pub fn sign_transfer_authorization(
        &self,
        sealed: &SealedKey,
        authorization: &TransferAuthorization,
    ) -> Result<[u8; 65], CustodyError> {
        let address = sealed.address;
        if authorization.chain_id != self.chain_id {
            return Err(CustodyError::WrongChain {
                requested: authorization.chain_id,
                configured: self.chain_id,
            });
        }
        if authorization.from != address {
            return Err(CustodyError::Signing { address });
        }
        let signer = self.open(sealed)?;
        let hash = authorization.signing_hash();
        let signature = signer
            .sign_hash_sync(&hash)
            .map_err(|_| CustodyError::Signing { address })?;
        let recovered = signature
            .recover_address_from_prehash(&hash)
            .map_err(|_| CustodyError::Signing { address })?;
        if Address::from(recovered) != address {
            return Err(CustodyError::Signing { address });
        }
        Ok(signature.as_bytes())
    }

    /// Test support: the private key bytes of a sealed wallet, so tests can prove they never
    /// appear in logs, responses or the database. Not reachable from any route, and compiled only
    /// with the `test-support` feature: the release binary has no key-reveal function.
    #[cfg(any(test, feature = "test-support"))]
    pub fn reveal_for_tests(&self, sealed: &SealedKey) -> Result<Zeroizing<Vec<u8>>, CustodyError> {
        Ok(Zeroizing::new(self.open(sealed)?.to_bytes().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{TxKind, U256};

    fn transaction(chain_id: u64) -> TxEip1559 {
        TxEip1559 {
            chain_id,
            nonce: 7,
            gas_limit: 21_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000,
            to: TxKind::Call(alloy::primitives::Address::repeat_byte(9)),
            value: U256::from(1),
            ..Default::default()
        }
    }

    #[test]
    fn sealed_keys_sign_for_their_address_only() {
        let custody = Custody::new(MasterKey::random(), 8453);
        let sealed = custody.generate_wallet().unwrap();
        let signed = custody.sign(&sealed, transaction(8453)).unwrap();
        assert_eq!(signed.nonce, 7);
        // The bytes a node would take are signed by the wallet's own key.
        use alloy::consensus::transaction::SignerRecoverable;
        use alloy::eips::eip2718::Decodable2718;
        let envelope = TxEnvelope::decode_2718(&mut signed.raw.as_slice()).unwrap();
        assert_eq!(
            Address::from(envelope.recover_signer().unwrap()),
            sealed.address
        );
        assert_eq!(*envelope.tx_hash(), signed.hash);

        // The plaintext key is not in the ciphertext.
        let key = custody.reveal_for_tests(&sealed).unwrap();
        assert!(!sealed.ciphertext.windows(32).any(|w| w == key.as_slice()));

        // Another chain is refused, another master key cannot open it, and a sealed key moved to
        // another address fails authentication.
        assert!(matches!(
            custody.sign(&sealed, transaction(1)),
            Err(CustodyError::WrongChain { .. })
        ));
        let stranger = Custody::new(MasterKey::random(), 8453);
        assert!(matches!(
            stranger.sign(&sealed, transaction(8453)),
            Err(CustodyError::Unseal { .. })
        ));
        let other = custody.generate_wallet().unwrap();
        let moved = SealedKey {
            address: other.address,
            ..sealed.clone()
        };
        assert!(matches!(
            custody.sign(&moved, transaction(8453)),
            Err(CustodyError::Unseal { .. })
        ));
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let custody = Custody::new(MasterKey::random(), 8453);
        let sealed = custody.generate_wallet().unwrap();
        let key = hex::encode(custody.reveal_for_tests(&sealed).unwrap().as_slice());
        let printed = format!("{custody:?} {sealed:?} {:?}", custody.master);
        assert!(!printed.contains(&key));
        assert!(!printed.contains(&hex::encode(&sealed.ciphertext)));
    }

    #[test]
    fn master_key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::generate_file(&path).unwrap();
        assert!(MasterKey::generate_file(&path).is_err(), "never overwrites");
        let loaded = MasterKey::load(&path).unwrap();
        let custody = Custody::new(loaded, 8453);
        let sealed = custody.generate_wallet().unwrap();
        let again = Custody::new(MasterKey::load(&path).unwrap(), 8453);
        assert!(again.sign(&sealed, transaction(8453)).is_ok());
        std::fs::write(&path, b"short").unwrap();
        assert!(MasterKey::load(&path).is_err());
    }
}
