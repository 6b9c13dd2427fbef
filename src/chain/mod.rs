//! The chain: a JSON-RPC provider with a timeout on every call, USDC bindings, transaction
//! building (EIP-1559, priced from the node), broadcasting and the reads the watcher needs
//! (heads, block hashes, receipts). It reports what the chain says and writes nothing; the
//! payments use cases decide what it means. Imports only `domain`.

pub mod devnet;
pub mod usdc;

use crate::domain::{Address, Amount};
use alloy::consensus::TxEip1559;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::primitives::{B256, Bytes, TxKind, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolValue};
use alloy::transports::TransportError;
use std::future::IntoFuture;
use std::time::Duration;

/// Gas limits are the node's estimate plus this margin (percent), because the estimate is made
/// against the state of the moment and a later block may cost slightly more.
const GAS_LIMIT_MARGIN_PERCENT: u64 = 25;
/// A plain ETH transfer to an externally owned account.
pub const ETH_TRANSFER_GAS: u64 = 21_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    #[error("RPC call {method} failed: {message}")]
    Rpc {
        method: &'static str,
        message: String,
    },
    #[error("RPC call {method} timed out")]
    Timeout { method: &'static str },
    #[error("RPC call {method} reverted: {message}")]
    Reverted {
        method: &'static str,
        message: String,
    },
    /// The node answered with a JSON-RPC error that is not a revert (it refused the request).
    #[error("RPC call {method} refused by the node (code {code}): {message}")]
    Refused {
        method: &'static str,
        code: i64,
        message: String,
    },
    #[error("the node reports chain {actual}, configuration says {expected}")]
    WrongChain { expected: u64, actual: u64 },
    #[error("the node has no block {number}")]
    MissingBlock { number: u64 },
    #[error("invalid RPC URL")]
    BadUrl,
}

impl ChainError {
    /// Whether trying again later can help. A revert or a wrong chain will not change by waiting.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ChainError::Rpc { .. }
                | ChainError::Timeout { .. }
                | ChainError::MissingBlock { .. }
                | ChainError::Refused { .. }
        )
    }

    /// Classifies a failed call by alloy's error variant and the JSON-RPC error payload, never by
    /// searching the error's text: an error response with revert data (or the EIP-1474 code 3,
    /// "execution reverted") is a revert, any other error response is the node refusing, and
    /// everything else (connection, HTTP, decoding) is a transport failure.
    fn classify(method: &'static str, error: &TransportError) -> ChainError {
        match error.as_error_resp() {
            Some(payload) if payload.code == 3 || payload.as_revert_data().is_some() => {
                ChainError::Reverted {
                    method,
                    message: payload.message.to_string(),
                }
            }
            Some(payload) => ChainError::Refused {
                method,
                code: payload.code,
                message: payload.message.to_string(),
            },
            None => ChainError::Rpc {
                method,
                message: error.to_string(),
            },
        }
    }
}

/// The errors of the provider and of contract calls, seen as the transport error under them.
trait AsTransportError: std::fmt::Display {
    fn as_transport_error(&self) -> Option<&TransportError>;
}

impl AsTransportError for TransportError {
    fn as_transport_error(&self) -> Option<&TransportError> {
        Some(self)
    }
}

impl AsTransportError for alloy::contract::Error {
    fn as_transport_error(&self) -> Option<&TransportError> {
        match self {
            alloy::contract::Error::TransportError(error) => Some(error),
            _ => None,
        }
    }
}

/// Blocks asked for in one `eth_getLogs` call.
pub const LOG_RANGE_BLOCKS: u64 = 2_000;

/// One USDC `Transfer` log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferLog {
    pub tx_hash: B256,
    pub log_index: u64,
    pub block_number: u64,
    pub block_hash: B256,
    pub from: Address,
    pub to: Address,
    pub value: U256,
}

/// One USDC `AuthorizationUsed` log (EIP-3009).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationLog {
    pub authorizer: Address,
    pub nonce: B256,
    pub tx_hash: B256,
    pub block_number: u64,
    pub block_hash: B256,
}

/// What the node reports for a mined transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub block_number: u64,
    pub block_hash: B256,
    pub success: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// A handle on one chain: a provider, the USDC contract and the chain id it must report.
#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    chain_id: u64,
    usdc: Address,
    timeout: Duration,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chain(id {}, usdc {})", self.chain_id, self.usdc)
    }
}

impl Chain {
    pub fn connect(
        rpc_url: &str,
        chain_id: u64,
        usdc: Address,
        timeout_ms: u64,
    ) -> Result<Chain, ChainError> {
        let url = rpc_url.parse().map_err(|_| ChainError::BadUrl)?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(url)
            .erased();
        Ok(Chain {
            provider,
            chain_id,
            usdc,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn usdc_address(&self) -> Address {
        self.usdc
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    async fn call<T, E: AsTransportError>(
        &self,
        method: &'static str,
        future: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(self.timeout, future.into_future()).await {
            Err(_) => Err(ChainError::Timeout { method }),
            Ok(Err(error)) => Err(match error.as_transport_error() {
                Some(transport) => ChainError::classify(method, transport),
                None => ChainError::Rpc {
                    method,
                    message: error.to_string(),
                },
            }),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// Fails unless the node serves the configured chain.
    pub async fn check_chain_id(&self) -> Result<(), ChainError> {
        let actual = self
            .call("eth_chainId", self.provider.get_chain_id())
            .await?;
        if actual != self.chain_id {
            return Err(ChainError::WrongChain {
                expected: self.chain_id,
                actual,
            });
        }
        Ok(())
    }

    pub async fn head(&self) -> Result<u64, ChainError> {
        self.call("eth_blockNumber", self.provider.get_block_number())
            .await
    }

    /// The canonical hash of block `number`.
    pub async fn block_hash(&self, number: u64) -> Result<B256, ChainError> {
        let block = self
            .call(
                "eth_getBlockByNumber",
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Number(number)),
            )
            .await?;
        block
            .map(|b| b.header.hash)
            .ok_or(ChainError::MissingBlock { number })
    }

    /// One JSON-RPC batch of `method`, one call per params, one result per call in order; a
    /// batch the transport could not deliver fails as a whole.
    async fn batch<P, R>(
        &self,
        method: &'static str,
        params: impl IntoIterator<Item = P>,
    ) -> Result<Vec<Result<R, ChainError>>, ChainError>
    where
        P: alloy::rpc::json_rpc::RpcSend,
        R: alloy::rpc::json_rpc::RpcRecv,
    {
        let failed = |error: TransportError| ChainError::classify(method, &error);
        let mut batch = alloy::rpc::client::BatchRequest::new(self.provider.client());
        let mut waiters = Vec::new();
        for params in params {
            waiters.push(batch.add_call::<_, R>(method, &params).map_err(failed)?);
        }
        if waiters.is_empty() {
            return Ok(Vec::new());
        }
        match tokio::time::timeout(self.timeout, batch.send()).await {
            Err(_) => return Err(ChainError::Timeout { method }),
            Ok(result) => result.map_err(failed)?,
        }
        let mut results = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            results.push(waiter.await.map_err(failed));
        }
        Ok(results)
    }

    /// The canonical hashes of blocks `numbers` in one JSON-RPC batch, in order (`None`: no
    /// such block yet).
    pub async fn block_hashes(&self, numbers: &[u64]) -> Result<Vec<Option<B256>>, ChainError> {
        Ok(self
            .block_links(numbers)
            .await?
            .into_iter()
            .map(|link| link.map(|(hash, _)| hash))
            .collect())
    }

    /// The hash and parent hash of each block, in one JSON-RPC batch (`None` for a block the
    /// node does not have). Only these are read: a block of thousands of transactions lists
    /// them all.
    pub async fn block_links(
        &self,
        numbers: &[u64],
    ) -> Result<Vec<Option<(B256, B256)>>, ChainError> {
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Linked {
            hash: B256,
            parent_hash: B256,
        }
        let params = numbers
            .iter()
            .map(|number| (BlockNumberOrTag::Number(*number), false));
        self.batch::<_, Option<Linked>>("eth_getBlockByNumber", params)
            .await?
            .into_iter()
            .map(|block| Ok(block?.map(|b| (b.hash, b.parent_hash))))
            .collect()
    }

    /// For each block (by hash), in one JSON-RPC batch: the transactions that emitted a USDC
    /// `Transfer` event in it. A transaction that emitted one did not revert. One call per block
    /// instead of one receipt per transaction (a node like anvil builds each receipt from its
    /// whole block).
    pub async fn usdc_transfer_transactions(
        &self,
        blocks: &[B256],
    ) -> Result<Vec<Vec<B256>>, ChainError> {
        use alloy::rpc::types::Filter;
        use alloy::sol_types::SolEvent;
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Emitted {
            transaction_hash: Option<B256>,
            block_hash: Option<B256>,
        }
        let params = blocks.iter().map(|hash| {
            (Filter::new()
                .at_block_hash(*hash)
                .address(self.usdc.into_inner())
                .event_signature(usdc::IUSDC::Transfer::SIGNATURE_HASH),)
        });
        self.batch::<_, Vec<Emitted>>("eth_getLogs", params)
            .await?
            .into_iter()
            .zip(blocks)
            .map(|(logs, block)| {
                Ok(logs?
                    .into_iter()
                    .filter(|log| log.block_hash == Some(*block))
                    .filter_map(|log| log.transaction_hash)
                    .collect())
            })
            .collect()
    }

    pub async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, ChainError> {
        let receipt = self
            .call(
                "eth_getTransactionReceipt",
                self.provider.get_transaction_receipt(hash),
            )
            .await?;
        Ok(receipt.and_then(|r| {
            Some(Receipt {
                block_number: r.block_number?,
                block_hash: r.block_hash?,
                success: r.status(),
            })
        }))
    }

    /// The receipts of `hashes` in one JSON-RPC batch, in order (`None`: not mined).
    pub async fn receipts(&self, hashes: &[B256]) -> Result<Vec<Option<Receipt>>, ChainError> {
        let params = hashes.iter().map(|hash| (*hash,));
        self.batch::<_, Option<alloy::rpc::types::TransactionReceipt>>(
            "eth_getTransactionReceipt",
            params,
        )
        .await?
        .into_iter()
        .map(|receipt| {
            Ok(receipt?.and_then(|r| {
                Some(Receipt {
                    block_number: r.block_number?,
                    block_hash: r.block_hash?,
                    success: r.status(),
                })
            }))
        })
        .collect()
    }

    /// Whether the node knows the transaction at all (pending in its pool or mined).
    pub async fn knows_transaction(&self, hash: B256) -> Result<bool, ChainError> {
        let found = self
            .call(
                "eth_getTransactionByHash",
                self.provider.get_transaction_by_hash(hash),
            )
            .await?;
        Ok(found.is_some())
    }

    /// `knows_transaction` for many hashes in one JSON-RPC batch, in order.
    pub async fn known_transactions(&self, hashes: &[B256]) -> Result<Vec<bool>, ChainError> {
        let params = hashes.iter().map(|hash| (*hash,));
        self.batch::<_, Option<serde_json::Value>>("eth_getTransactionByHash", params)
            .await?
            .into_iter()
            .map(|found| Ok(found?.is_some_and(|t| !t.is_null())))
            .collect()
    }

    /// Sends a signed transaction. An error here does not mean the node lacks it ("already
    /// known", a lost reply): callers decide by asking the chain, never by the error's text.
    pub async fn broadcast(&self, raw: &[u8]) -> Result<(), ChainError> {
        self.call(
            "eth_sendRawTransaction",
            self.provider.send_raw_transaction(raw),
        )
        .await
        .map(|_| ())
    }

    /// Sends signed transactions in one JSON-RPC batch, one result per transaction in order.
    /// As with `broadcast`, an error does not mean the node lacks the transaction; a batch the
    /// transport could not deliver fails as a whole.
    pub async fn broadcast_batch(
        &self,
        raws: &[&[u8]],
    ) -> Result<Vec<Result<(), ChainError>>, ChainError> {
        let params = raws.iter().map(|raw| (Bytes::copy_from_slice(raw),));
        Ok(self
            .batch::<_, B256>("eth_sendRawTransaction", params)
            .await?
            .into_iter()
            .map(|sent| sent.map(|_| ()))
            .collect())
    }

    pub async fn usdc_balance(&self, owner: Address) -> Result<Amount, ChainError> {
        let token = usdc::IUSDC::new(self.usdc.into_inner(), &self.provider);
        let units: U256 = self
            .call("balanceOf", token.balanceOf(owner.into_inner()).call())
            .await?;
        let units = u128::try_from(units).map_err(|_| ChainError::Rpc {
            method: "balanceOf",
            message: "balance out of range".into(),
        })?;
        Amount::from_base_units(units).map_err(|_| ChainError::Rpc {
            method: "balanceOf",
            message: "balance out of range".into(),
        })
    }

    /// The USDC and ETH balances of `owners` in one round trip: one JSON-RPC batch of a
    /// `balanceOf` call and an `eth_getBalance` per owner, read at the same latest block.
    /// `None` for a balance the node did not answer.
    pub async fn balances(
        &self,
        owners: &[Address],
    ) -> Result<Vec<(Option<Amount>, Option<U256>)>, ChainError> {
        const METHOD: &str = "balances batch";
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let block = self.head().await?;
        let tag = BlockNumberOrTag::Number(block);
        let mut batch = alloy::rpc::client::BatchRequest::new(self.provider.client());
        let mut waiters = Vec::with_capacity(owners.len());
        let failed = |error: TransportError| ChainError::classify(METHOD, &error);
        for owner in owners {
            let call = TransactionRequest::default()
                .with_to(self.usdc.into_inner())
                .with_input(
                    usdc::IUSDC::balanceOfCall {
                        account: owner.into_inner(),
                    }
                    .abi_encode(),
                );
            let usdc = batch
                .add_call::<_, Bytes>("eth_call", &(call, tag))
                .map_err(failed)?;
            let eth = batch
                .add_call::<_, U256>("eth_getBalance", &(owner.into_inner(), tag))
                .map_err(failed)?;
            waiters.push((usdc, eth));
        }
        match tokio::time::timeout(self.timeout, batch.send()).await {
            Err(_) => return Err(ChainError::Timeout { method: METHOD }),
            Ok(result) => result.map_err(failed)?,
        }
        let mut balances = Vec::with_capacity(owners.len());
        for (usdc, eth) in waiters {
            let usdc = usdc.await.ok().and_then(|bytes: Bytes| {
                let units = U256::abi_decode(&bytes[..]).ok()?;
                Amount::from_base_units(u128::try_from(units).ok()?).ok()
            });
            balances.push((usdc, eth.await.ok()));
        }
        Ok(balances)
    }

    /// USDC `Transfer` logs in `[from_block, to_block]` sent from or to any of `accounts`, in
    /// chain order, read `LOG_RANGE_BLOCKS` blocks at a time.
    pub async fn usdc_transfers(
        &self,
        from_block: u64,
        to_block: u64,
        accounts: &[Address],
    ) -> Result<Vec<TransferLog>, ChainError> {
        use alloy::rpc::types::Filter;
        use alloy::sol_types::SolEvent;
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let topics: Vec<B256> = accounts
            .iter()
            .map(|a| a.into_inner().into_word())
            .collect();
        let mut logs = std::collections::BTreeMap::new();
        let mut start = from_block;
        while start <= to_block {
            let end = to_block.min(start.saturating_add(LOG_RANGE_BLOCKS - 1));
            let base = Filter::new()
                .address(self.usdc.into_inner())
                .event_signature(usdc::IUSDC::Transfer::SIGNATURE_HASH)
                .from_block(start)
                .to_block(end);
            for filter in [
                base.clone().topic1(topics.clone()),
                base.topic2(topics.clone()),
            ] {
                for log in self
                    .call("eth_getLogs", self.provider.get_logs(&filter))
                    .await?
                {
                    let (Some(tx_hash), Some(log_index), Some(block_number), Some(block_hash)) = (
                        log.transaction_hash,
                        log.log_index,
                        log.block_number,
                        log.block_hash,
                    ) else {
                        continue;
                    };
                    let Ok(event) = usdc::IUSDC::Transfer::decode_log(&log.inner) else {
                        continue;
                    };
                    logs.insert(
                        (block_number, log_index),
                        TransferLog {
                            tx_hash,
                            log_index,
                            block_number,
                            block_hash,
                            from: event.from.into(),
                            to: event.to.into(),
                            value: event.value,
                        },
                    );
                }
            }
            start = end + 1;
        }
        Ok(logs.into_values().collect())
    }

    /// Why a mined transaction reverted: its call replayed on the state before its block, and
    /// the node's revert message. `None` when the replay does not revert (the state it met inside
    /// its block differed) or the node gives no reason.
    pub async fn revert_reason(
        &self,
        from: Address,
        transaction: &TxEip1559,
        block_number: u64,
    ) -> Option<String> {
        let to = transaction.to.to()?;
        let request = TransactionRequest::default()
            .with_from(from.into_inner())
            .with_to(*to)
            .with_input(transaction.input.clone())
            .with_value(transaction.value)
            .with_gas_limit(transaction.gas_limit);
        let block = BlockNumberOrTag::Number(block_number.saturating_sub(1));
        match self
            .call("eth_call", self.provider.call(request).block(block.into()))
            .await
        {
            Err(ChainError::Reverted { message, .. }) => {
                // Keep the node's sentence, bounded; never more than a line of it.
                let line = message.lines().next().unwrap_or_default();
                Some(line.chars().take(200).collect())
            }
            _ => None,
        }
    }

    /// The token's EIP-712 domain name and version, as the contract itself reports them.
    pub async fn usdc_domain(&self) -> Result<(String, String), ChainError> {
        let token = usdc::IUSDC::new(self.usdc.into_inner(), &self.provider);
        let name = self.call("name", token.name().call()).await?;
        let version = self.call("version", token.version().call()).await?;
        Ok((name, version))
    }

    /// The hashes of the transactions block `hash` holds, in order (`None`: no such block).
    pub async fn block_transactions(&self, hash: B256) -> Result<Option<Vec<B256>>, ChainError> {
        let block = self
            .call("eth_getBlockByHash", self.provider.get_block_by_hash(hash))
            .await?;
        Ok(block.map(|block| block.transactions.hashes().collect()))
    }

    /// The head block's number and timestamp (seconds): what "now" is on chain.
    pub async fn head_block(&self) -> Result<(u64, u64), ChainError> {
        let block = self
            .call(
                "eth_getBlockByNumber",
                self.provider.get_block_by_number(BlockNumberOrTag::Latest),
            )
            .await?
            .ok_or(ChainError::MissingBlock { number: u64::MAX })?;
        Ok((block.header.number, block.header.timestamp))
    }

    /// USDC `AuthorizationUsed` logs in `[from_block, to_block]` of any of `authorizers`, in
    /// chain order, read `LOG_RANGE_BLOCKS` blocks at a time.
    pub async fn authorizations_used(
        &self,
        from_block: u64,
        to_block: u64,
        authorizers: &[Address],
    ) -> Result<Vec<AuthorizationLog>, ChainError> {
        use alloy::rpc::types::Filter;
        use alloy::sol_types::SolEvent;
        if authorizers.is_empty() {
            return Ok(Vec::new());
        }
        let topics: Vec<B256> = authorizers
            .iter()
            .map(|a| a.into_inner().into_word())
            .collect();
        let mut found = Vec::new();
        let mut start = from_block;
        while start <= to_block {
            let end = to_block.min(start.saturating_add(LOG_RANGE_BLOCKS - 1));
            let filter = Filter::new()
                .address(self.usdc.into_inner())
                .event_signature(usdc::IUSDC::AuthorizationUsed::SIGNATURE_HASH)
                .from_block(start)
                .to_block(end)
                .topic1(topics.clone());
            for log in self
                .call("eth_getLogs", self.provider.get_logs(&filter))
                .await?
            {
                let (Some(tx_hash), Some(block_number), Some(block_hash), false) = (
                    log.transaction_hash,
                    log.block_number,
                    log.block_hash,
                    log.removed,
                ) else {
                    continue;
                };
                let Ok(event) = usdc::IUSDC::AuthorizationUsed::decode_log(&log.inner) else {
                    continue;
                };
                found.push(AuthorizationLog {
                    authorizer: event.authorizer.into(),
                    nonce: event.nonce,
                    tx_hash,
                    block_number,
                    block_hash,
                });
            }
            start = end + 1;
        }
        Ok(found)
    }

    /// Whether USDC's pauser has paused all transfers.
    pub async fn usdc_paused(&self) -> Result<bool, ChainError> {
        let token = usdc::IUSDC::new(self.usdc.into_inner(), &self.provider);
        self.call("paused", token.paused().call()).await
    }

    /// Whether USDC's blacklister has blocked `account` from sending and receiving.
    pub async fn usdc_blacklisted(&self, account: Address) -> Result<bool, ChainError> {
        let token = usdc::IUSDC::new(self.usdc.into_inner(), &self.provider);
        self.call(
            "isBlacklisted",
            token.isBlacklisted(account.into_inner()).call(),
        )
        .await
    }

    pub async fn eth_balance(&self, owner: Address) -> Result<U256, ChainError> {
        self.call(
            "eth_getBalance",
            self.provider.get_balance(owner.into_inner()),
        )
        .await
    }

    /// The account's next nonce counting transactions in the node's pool.
    pub async fn pending_nonce(&self, owner: Address) -> Result<u64, ChainError> {
        self.call(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(owner.into_inner())
                .pending(),
        )
        .await
    }

    /// The account's transaction count as of block `number`: every nonce below it is used on
    /// chain by then, by whichever transaction the chain took.
    pub async fn nonce_at(&self, owner: Address, number: u64) -> Result<u64, ChainError> {
        self.call(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(owner.into_inner())
                .number(number),
        )
        .await
    }

    /// The base fee of the next block: a transaction whose fee cap is below it cannot be included
    /// there, and a node refuses it.
    pub async fn next_base_fee(&self) -> Result<u128, ChainError> {
        let history = self
            .call(
                "eth_feeHistory",
                self.provider
                    .get_fee_history(1, BlockNumberOrTag::Latest, &[]),
            )
            .await?;
        history
            .base_fee_per_gas
            .last()
            .copied()
            .ok_or(ChainError::Rpc {
                method: "eth_feeHistory",
                message: "no base fee in the fee history".into(),
            })
    }

    pub async fn fees(&self) -> Result<Fees, ChainError> {
        let estimate = self
            .call("eth_feeHistory", self.provider.estimate_eip1559_fees())
            .await?;
        Ok(Fees {
            max_fee_per_gas: estimate.max_fee_per_gas,
            max_priority_fee_per_gas: estimate.max_priority_fee_per_gas,
        })
    }

    /// Calldata of `transfer(to, amount)` on the USDC contract.
    pub fn usdc_transfer_input(to: Address, amount: Amount) -> Bytes {
        usdc::IUSDC::transferCall {
            to: to.into_inner(),
            value: U256::from(amount.micros()),
        }
        .abi_encode()
        .into()
    }

    /// Estimates the gas of a USDC transfer from `from`; a revert here (no balance, paused,
    /// blacklisted) comes back as `ChainError::Reverted`.
    pub async fn estimate_usdc_transfer(
        &self,
        from: Address,
        to: Address,
        amount: Amount,
    ) -> Result<u64, ChainError> {
        let request = TransactionRequest::default()
            .with_from(from.into_inner())
            .with_to(self.usdc.into_inner())
            .with_input(Self::usdc_transfer_input(to, amount));
        let gas = self
            .call("eth_estimateGas", self.provider.estimate_gas(request))
            .await?;
        Ok(gas.saturating_mul(100 + GAS_LIMIT_MARGIN_PERCENT) / 100)
    }

    /// An unsigned EIP-1559 USDC transfer.
    pub fn usdc_transfer(
        &self,
        nonce: u64,
        gas_limit: u64,
        fees: Fees,
        to: Address,
        amount: Amount,
    ) -> TxEip1559 {
        TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(self.usdc.into_inner()),
            value: U256::ZERO,
            input: Self::usdc_transfer_input(to, amount),
            ..Default::default()
        }
    }

    /// The unsigned transaction inside a signed EIP-1559 transaction that Bursar stored.
    pub fn decode_eip1559(raw: &[u8]) -> Option<TxEip1559> {
        use alloy::eips::eip2718::Decodable2718;
        match alloy::consensus::TxEnvelope::decode_2718(&mut &raw[..]).ok()? {
            alloy::consensus::TxEnvelope::Eip1559(signed) => Some(signed.strip_signature()),
            _ => None,
        }
    }

    /// The most a signed transaction can take from its sender's ETH: gas at its fee cap plus
    /// the value it sends.
    pub fn worst_case_cost(transaction: &TxEip1559) -> U256 {
        U256::from(transaction.gas_limit) * U256::from(transaction.max_fee_per_gas)
            + transaction.value
    }

    /// An unsigned EIP-1559 ETH transfer (gas money for an agent wallet).
    pub fn eth_transfer(&self, nonce: u64, fees: Fees, to: Address, wei: U256) -> TxEip1559 {
        TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit: ETH_TRANSFER_GAS,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(to.into_inner()),
            value: wei,
            ..Default::default()
        }
    }
}
