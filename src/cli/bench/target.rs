//! The chain a bench runs on: its own devnet (anvil with Circle's USDC, wallets funded with the
//! token's minter and anvil's balance call), or a node the user names with `--rpc-url`, where
//! wallets are funded by plain USDC and ETH transfers from the `--funder-key-file` account and
//! blocks come at the node's own pace.

use super::BenchArgs;
use crate::chain::devnet::{DEVNET_CHAIN_ID, Devnet};
use crate::chain::{Chain, Fees};
use crate::config::Config;
use crate::domain::{Address, Amount};
use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail, ensure};
use std::path::Path;
use std::time::{Duration, Instant};

/// Seconds between the devnet's blocks unless `--block-time-secs` says otherwise.
pub const DEFAULT_BLOCK_TIME_SECS: u64 = 1;
/// The devnet's block gas limit unless `--gas-limit` says otherwise (Base's is in the hundreds
/// of millions).
pub const DEFAULT_GAS_LIMIT: u64 = 300_000_000;
/// What a devnet wallet gets for gas: far more than any bench spends.
const DEVNET_ETH_WEI: u128 = 10_000_000_000_000_000_000;
/// Funding transactions per JSON-RPC batch.
const FUNDING_BATCH: usize = 200;
/// Blocks read back to measure a node's block time.
const BLOCK_TIME_SAMPLE: u64 = 10;

/// One wallet's share of a run: the USDC it pays and the ETH its gas may cost.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub to: Address,
    pub usdc: Amount,
    pub eth_wei: U256,
}

pub enum Target {
    Devnet(Box<Devnet>),
    Node(Box<Node>),
}

/// A node the user named: its chain, the USDC contract there, and the account that funds the run.
pub struct Node {
    rpc_url: String,
    chain_id: u64,
    usdc: Address,
    funder: PrivateKeySigner,
}

impl Target {
    /// Starts the devnet, or checks the named node: it answers, has a contract at the USDC
    /// address, and the funder key reads.
    pub async fn open(config: &Config, args: &BenchArgs) -> anyhow::Result<Target> {
        let Some(rpc_url) = &args.rpc_url else {
            let gas_limit = args.gas_limit.unwrap_or(DEFAULT_GAS_LIMIT);
            let devnet = Devnet::start_with_gas_limit(Some(gas_limit)).await?;
            return Ok(Target::Devnet(Box::new(devnet)));
        };
        let key_file = args
            .funder_key_file
            .as_deref()
            .context("--rpc-url needs --funder-key-file: the account that funds the run")?;
        let funder = read_key(key_file)?;
        let usdc = config.usdc_address.context(
            "--rpc-url needs BURSAR_USDC_ADDRESS: the USDC contract on that node's chain",
        )?;
        let probe = Chain::connect(rpc_url, 0, usdc, config.rpc_timeout_ms)
            .map_err(|e| anyhow::anyhow!("--rpc-url: {e}"))?;
        let chain_id = probe
            .provider()
            .get_chain_id()
            .await
            .with_context(|| format!("--rpc-url: no answer from {rpc_url}"))?;
        let code = probe
            .provider()
            .get_code_at(usdc.into_inner())
            .await
            .with_context(|| format!("--rpc-url: no answer from {rpc_url}"))?;
        ensure!(
            !code.is_empty(),
            "no contract at USDC address {usdc} on chain {chain_id} at {rpc_url}: set \
             BURSAR_USDC_ADDRESS to the token's address there"
        );
        Ok(Target::Node(Box::new(Node {
            rpc_url: rpc_url.clone(),
            chain_id,
            usdc,
            funder,
        })))
    }

    pub fn rpc_url(&self) -> &str {
        match self {
            Target::Devnet(devnet) => &devnet.rpc_url,
            Target::Node(node) => &node.rpc_url,
        }
    }

    pub fn chain_id(&self) -> u64 {
        match self {
            Target::Devnet(_) => DEVNET_CHAIN_ID,
            Target::Node(node) => node.chain_id,
        }
    }

    pub fn usdc(&self) -> Address {
        match self {
            Target::Devnet(devnet) => devnet.usdc,
            Target::Node(node) => node.usdc,
        }
    }

    /// Gives each wallet its USDC and ETH and returns once all of it is on chain.
    pub async fn fund(
        &self,
        chain: &Chain,
        grants: &[Grant],
        stall: Duration,
    ) -> anyhow::Result<()> {
        match self {
            Target::Devnet(devnet) => {
                for grant in grants {
                    devnet.mint(grant.to, grant.usdc).await?;
                    let wei = grant.eth_wei.max(U256::from(DEVNET_ETH_WEI));
                    devnet
                        .provider
                        .anvil_set_balance(grant.to.into_inner(), wei)
                        .await?;
                }
                Ok(())
            }
            Target::Node(node) => fund_from(chain, &node.funder, grants, stall).await,
        }
    }

    /// Starts the blocks: the devnet mines every `--block-time-secs`; a node keeps its own pace.
    pub async fn start_blocks(&self, args: &BenchArgs) -> anyhow::Result<()> {
        if let Target::Devnet(devnet) = self {
            let seconds = args
                .block_time_secs
                .unwrap_or(DEFAULT_BLOCK_TIME_SECS)
                .max(1);
            devnet.mine_every(seconds).await?;
        }
        Ok(())
    }

    /// Seconds between blocks: the devnet's setting, or a node's average over its last blocks.
    pub async fn block_time_secs(&self, chain: &Chain, args: &BenchArgs) -> anyhow::Result<f64> {
        if let Target::Devnet(_) = self {
            return Ok(args
                .block_time_secs
                .unwrap_or(DEFAULT_BLOCK_TIME_SECS)
                .max(1) as f64);
        }
        let (head, head_time) = chain.head_block().await?;
        let back = head.min(BLOCK_TIME_SAMPLE);
        ensure!(
            back > 0,
            "the node at {} has mined no block yet",
            self.rpc_url()
        );
        let earlier = chain
            .provider()
            .get_block_by_number((head - back).into())
            .await?
            .with_context(|| format!("block {} vanished", head - back))?;
        let span = head_time.saturating_sub(earlier.header.timestamp) as f64;
        Ok((span / back as f64).max(0.001))
    }
}

/// Reads a hex private key (with or without `0x`, surrounding whitespace ignored). The error
/// names the file, never its contents.
fn read_key(path: &Path) -> anyhow::Result<PrivateKeySigner> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--funder-key-file: cannot read {}", path.display()))?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    let bytes: [u8; 32] = alloy::hex::decode(hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| {
            format!(
                "--funder-key-file: {} does not hold a private key (64 hex digits)",
                path.display()
            )
        })?;
    PrivateKeySigner::from_bytes(&B256::from(bytes)).map_err(|_| {
        anyhow::anyhow!(
            "--funder-key-file: {} does not hold a valid private key",
            path.display()
        )
    })
}

/// Funds the grants with signed transfers from `funder`, at consecutive nonces, in JSON-RPC
/// batches, after checking that the funder holds enough; waits until every transfer is mined
/// and succeeded.
async fn fund_from(
    chain: &Chain,
    funder: &PrivateKeySigner,
    grants: &[Grant],
    stall: Duration,
) -> anyhow::Result<()> {
    let from = Address::from(funder.address());
    let quote = chain.fees().await?;
    // Room for the base fee to double while the funding waits for its blocks.
    let fees = Fees {
        max_fee_per_gas: quote.max_fee_per_gas.saturating_mul(2),
        max_priority_fee_per_gas: quote.max_priority_fee_per_gas,
    };
    let usdc_total = grants
        .iter()
        .try_fold(Amount::ZERO, |sum, g| sum.checked_add(g.usdc))
        .context("the run's USDC does not fit in an amount")?;
    let usdc_held = chain.usdc_balance(from).await?;
    if usdc_held < usdc_total {
        bail!(
            "the funder {from} holds {usdc_held} USDC; this run needs {usdc_total} USDC (fewer \
             --payments or --agents need less)"
        );
    }
    let usdc_gas = match grants.iter().find(|g| g.usdc > Amount::ZERO) {
        Some(grant) => {
            chain
                .estimate_usdc_transfer(from, grant.to, grant.usdc)
                .await?
        }
        None => 0,
    };
    let mut transactions: Vec<TxEip1559> = Vec::new();
    let mut nonce = chain.pending_nonce(from).await?;
    for grant in grants {
        if grant.usdc > Amount::ZERO {
            transactions.push(chain.usdc_transfer(nonce, usdc_gas, fees, grant.to, grant.usdc));
            nonce += 1;
        }
        if grant.eth_wei > U256::ZERO {
            transactions.push(chain.eth_transfer(nonce, fees, grant.to, grant.eth_wei));
            nonce += 1;
        }
    }
    let eth_total = transactions
        .iter()
        .fold(U256::ZERO, |sum, t| sum + Chain::worst_case_cost(t));
    let eth_held = chain.eth_balance(from).await?;
    if eth_held < eth_total {
        bail!(
            "the funder {from} holds {} ETH; this run needs {} ETH for its wallets' gas and the \
             funding transfers (fewer --payments or --agents need less)",
            crate::domain::Wei::from_u256(eth_held),
            crate::domain::Wei::from_u256(eth_total),
        );
    }
    let mut hashes: Vec<B256> = Vec::with_capacity(transactions.len());
    let mut raws: Vec<Vec<u8>> = Vec::with_capacity(transactions.len());
    for transaction in transactions {
        let signature = funder.sign_hash_sync(&transaction.signature_hash())?;
        let signed = transaction.into_signed(signature);
        hashes.push(*signed.hash());
        raws.push(TxEnvelope::from(signed).encoded_2718());
    }
    for batch in raws.chunks(FUNDING_BATCH) {
        let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        for result in chain.broadcast_batch(&slices).await? {
            result.context("the node refused a funding transfer")?;
        }
    }
    wait_mined(chain, &hashes, stall).await
}

/// Waits until every transaction is mined (read once per new block), failing on a revert or
/// when no block brought one for `stall`.
async fn wait_mined(chain: &Chain, hashes: &[B256], stall: Duration) -> anyhow::Result<()> {
    let mut pending: Vec<B256> = hashes.to_vec();
    let mut seen_head = None;
    let mut last_progress = Instant::now();
    while !pending.is_empty() {
        let head = chain.head().await?;
        if seen_head != Some(head) {
            seen_head = Some(head);
            let receipts = chain.receipts(&pending).await?;
            let before = pending.len();
            let mut still = Vec::new();
            for (hash, receipt) in pending.iter().zip(receipts) {
                match receipt {
                    Some(receipt) if !receipt.success => {
                        bail!("funding transfer {hash} reverted")
                    }
                    Some(_) => {}
                    None => still.push(*hash),
                }
            }
            pending = still;
            if pending.len() < before {
                last_progress = Instant::now();
            }
        }
        ensure!(
            last_progress.elapsed() < stall,
            "{} funding transfer(s) not mined after {} s",
            pending.len(),
            stall.as_secs()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
