//! EIP-3009's `TransferWithAuthorization`, the typed message an x402 "exact" payment on EVM is:
//! signed by custody under the token's EIP-712 domain, executed on chain by the seller's
//! facilitator. Pure types; no I/O.

use super::Address;
use alloy::primitives::{B256, U256};
use alloy::sol_types::{Eip712Domain, SolStruct};

alloy::sol! {
    /// The struct as USDC (FiatTokenV2_2) hashes it.
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// One authorization: who pays whom how much, in which window (unix seconds), under which
/// random nonce, for which token (the EIP-712 domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferAuthorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
    pub domain_name: String,
    pub domain_version: String,
    pub chain_id: u64,
    pub token: Address,
}

impl TransferAuthorization {
    pub fn domain(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(self.domain_name.clone().into()),
            Some(self.domain_version.clone().into()),
            Some(U256::from(self.chain_id)),
            Some(self.token.into_inner()),
            None,
        )
    }

    /// The EIP-712 signing hash.
    pub fn signing_hash(&self) -> B256 {
        TransferWithAuthorization {
            from: self.from.into_inner(),
            to: self.to.into_inner(),
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
        .eip712_signing_hash(&self.domain())
    }
}
