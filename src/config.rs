//! One `Config` tree, read from the environment (`BURSAR_*`) over an optional TOML file with the
//! same keys in lower case (`listen`, `database_url`, ...), validated once at start. Secrets are
//! `secrecy` types, so printing a `Config` never prints them. Imports only `domain`.

use crate::domain::Address;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Circle's USDC on Base mainnet.
pub const BASE_MAINNET_USDC: &str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
pub const BASE_CHAIN_ID: u64 = 8453;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub rpc_url: Option<String>,
    pub chain_id: u64,
    pub usdc_address: Option<Address>,
    pub confirmations_required: u64,
    pub master_key_file: Option<PathBuf>,
    pub admin_token: Option<SecretString>,
    /// How often the settlement worker looks at the chain when nothing wakes it sooner.
    pub poll_interval_ms: u64,
    pub rpc_timeout_ms: u64,
    /// How long a payment waits for a human approval before it expires.
    pub approval_timeout_secs: u64,
    /// How long a manual-capture hold lives before it expires.
    pub hold_timeout_secs: u64,
    /// An agent wallet with less ETH than this is topped up from the treasury (0 disables).
    pub gas_float_min_wei: u128,
    /// How much ETH one top-up sends.
    pub gas_float_topup_wei: u128,
    /// Blocks a transaction may wait for inclusion before it is replaced with higher fees.
    pub stuck_after_blocks: u64,
    /// The highest fee cap ever signed, in gwei per gas.
    pub max_fee_per_gas_gwei: u64,
    /// Blocks a refused transaction may wait with its nonce open before its slot is filled.
    pub unsendable_after_blocks: u64,
    /// Blocks over which confirmed transactions are re-checked for deep reorgs.
    pub finality_watch_blocks: u64,
    /// Transactions one wallet keeps in the node's pool at most (signed or broadcast, in no
    /// block yet); its next payments wait for room.
    pub lane_window: u64,
    /// Write requests a second per credential or staff token.
    pub write_rate_per_second: std::num::NonZeroU32,
    /// Write requests at once per credential or staff token before the rate applies.
    pub write_rate_burst: std::num::NonZeroU32,
    /// Whether the x402 payer may reach private, loopback and link-local targets.
    pub x402_allow_private_targets: bool,
    /// `Host` values the MCP endpoint accepts (empty: the listen address and loopback names).
    pub mcp_allowed_hosts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration {key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

/// The file form: every key optional, same names as the environment without the prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    rpc_url: Option<String>,
    chain_id: Option<u64>,
    usdc_address: Option<String>,
    confirmations: Option<u64>,
    master_key_file: Option<String>,
    admin_token: Option<String>,
    poll_interval_ms: Option<u64>,
    rpc_timeout_ms: Option<u64>,
    approval_timeout_secs: Option<u64>,
    hold_timeout_secs: Option<u64>,
    gas_float_min_eth: Option<String>,
    gas_float_topup_eth: Option<String>,
    stuck_after_blocks: Option<u64>,
    max_fee_per_gas_gwei: Option<u64>,
    unsendable_after_blocks: Option<u64>,
    finality_watch_blocks: Option<u64>,
    lane_window: Option<u64>,
    write_rate_per_second: Option<u64>,
    write_rate_burst: Option<u64>,
    x402_allow_private_targets: Option<bool>,
    mcp_allowed_hosts: Option<Vec<String>>,
}

impl Config {
    /// Reads the process environment over the optional file.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_sources(file, |key| {
            std::env::var(key).ok().filter(|v| !v.is_empty())
        })
    }

    pub fn from_sources(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = match file {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    key: "config file",
                    message: format!("{}: {e}", path.display()),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError {
                    key: "config file",
                    message: e.message().to_string(),
                })?
            }
        };
        let text = |key: &'static str, from_file: Option<String>| env(key).or(from_file);
        let number =
            |key: &'static str, from_file: Option<u64>| -> Result<Option<u64>, ConfigError> {
                match env(key) {
                    Some(value) => value.parse().map(Some).map_err(|_| ConfigError {
                        key,
                        message: format!("not a whole number: {value:?}"),
                    }),
                    None => Ok(from_file),
                }
            };

        let listen = text("BURSAR_LISTEN", file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen.parse().map_err(|_| ConfigError {
            key: "BURSAR_LISTEN",
            message: format!("not host:port: {listen:?}"),
        })?;
        let database_url = text("BURSAR_DATABASE_URL", file.database_url)
            .unwrap_or_else(|| "sqlite://data/bursar.db".into());
        if !database_url.starts_with("sqlite:") {
            return Err(ConfigError {
                key: "BURSAR_DATABASE_URL",
                message: "only sqlite:// URLs are supported".into(),
            });
        }
        let rpc_url = text("BURSAR_RPC_URL", file.rpc_url);
        if let Some(url) = &rpc_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError {
                key: "BURSAR_RPC_URL",
                message: "must be an http:// or https:// URL".into(),
            });
        }
        let chain_id = number("BURSAR_CHAIN_ID", file.chain_id)?.unwrap_or(BASE_CHAIN_ID);
        let usdc_address = match text("BURSAR_USDC_ADDRESS", file.usdc_address) {
            Some(value) => Some(Address::parse(&value).map_err(|e| ConfigError {
                key: "BURSAR_USDC_ADDRESS",
                message: e.to_string(),
            })?),
            None if chain_id == BASE_CHAIN_ID => {
                Some(Address::parse(BASE_MAINNET_USDC).expect("the constant is a valid address"))
            }
            None => None,
        };
        let confirmations_required =
            number("BURSAR_CONFIRMATIONS", file.confirmations)?.unwrap_or(3);
        if confirmations_required == 0 || confirmations_required > 1_000 {
            return Err(ConfigError {
                key: "BURSAR_CONFIRMATIONS",
                message: "must be between 1 and 1000".into(),
            });
        }
        let master_key_file =
            text("BURSAR_MASTER_KEY_FILE", file.master_key_file).map(PathBuf::from);
        let admin_token = text("BURSAR_ADMIN_TOKEN", file.admin_token);
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError {
                key: "BURSAR_ADMIN_TOKEN",
                message: "must be at least 16 characters".into(),
            });
        }
        let poll_interval_ms =
            number("BURSAR_POLL_INTERVAL_MS", file.poll_interval_ms)?.unwrap_or(1_000);
        let rpc_timeout_ms =
            number("BURSAR_RPC_TIMEOUT_MS", file.rpc_timeout_ms)?.unwrap_or(10_000);
        if poll_interval_ms == 0 || rpc_timeout_ms == 0 {
            return Err(ConfigError {
                key: "BURSAR_POLL_INTERVAL_MS",
                message: "intervals must be positive".into(),
            });
        }
        // At most a year: anything longer is a typo, and it keeps milliseconds within i64.
        const MAX_TIMEOUT_SECS: u64 = 366 * 24 * 60 * 60;
        let approval_timeout_secs =
            number("BURSAR_APPROVAL_TIMEOUT_SECS", file.approval_timeout_secs)?
                .unwrap_or(24 * 60 * 60);
        let hold_timeout_secs =
            number("BURSAR_HOLD_TIMEOUT_SECS", file.hold_timeout_secs)?.unwrap_or(60 * 60);
        for (key, value) in [
            ("BURSAR_APPROVAL_TIMEOUT_SECS", approval_timeout_secs),
            ("BURSAR_HOLD_TIMEOUT_SECS", hold_timeout_secs),
        ] {
            if value == 0 || value > MAX_TIMEOUT_SECS {
                return Err(ConfigError {
                    key,
                    message: "must be between 1 second and 1 year".into(),
                });
            }
        }
        let ether = |key: &'static str, value: String| -> Result<u128, ConfigError> {
            let wei = alloy::primitives::utils::parse_ether(&value).map_err(|_| ConfigError {
                key,
                message: format!("not an amount of ETH: {value:?}"),
            })?;
            u128::try_from(wei).map_err(|_| ConfigError {
                key,
                message: "too large".into(),
            })
        };
        let gas_float_min_wei = ether(
            "BURSAR_GAS_FLOAT_MIN_ETH",
            text("BURSAR_GAS_FLOAT_MIN_ETH", file.gas_float_min_eth)
                .unwrap_or_else(|| "0.002".into()),
        )?;
        let gas_float_topup_wei = ether(
            "BURSAR_GAS_FLOAT_TOPUP_ETH",
            text("BURSAR_GAS_FLOAT_TOPUP_ETH", file.gas_float_topup_eth)
                .unwrap_or_else(|| "0.01".into()),
        )?;
        if gas_float_min_wei > 0 && gas_float_topup_wei <= gas_float_min_wei {
            return Err(ConfigError {
                key: "BURSAR_GAS_FLOAT_TOPUP_ETH",
                message: "must be more than BURSAR_GAS_FLOAT_MIN_ETH, or a top-up would not lift the wallet above the floor".into(),
            });
        }
        let stuck_after_blocks =
            number("BURSAR_STUCK_AFTER_BLOCKS", file.stuck_after_blocks)?.unwrap_or(5);
        let max_fee_per_gas_gwei =
            number("BURSAR_MAX_FEE_PER_GAS_GWEI", file.max_fee_per_gas_gwei)?.unwrap_or(100);
        if stuck_after_blocks == 0 || max_fee_per_gas_gwei == 0 {
            return Err(ConfigError {
                key: "BURSAR_STUCK_AFTER_BLOCKS",
                message:
                    "BURSAR_STUCK_AFTER_BLOCKS and BURSAR_MAX_FEE_PER_GAS_GWEI must be positive"
                        .into(),
            });
        }
        let unsendable_after_blocks = number(
            "BURSAR_UNSENDABLE_AFTER_BLOCKS",
            file.unsendable_after_blocks,
        )?
        .unwrap_or(60);
        if unsendable_after_blocks == 0 {
            return Err(ConfigError {
                key: "BURSAR_UNSENDABLE_AFTER_BLOCKS",
                message: "must be positive".into(),
            });
        }
        let finality_watch_blocks =
            number("BURSAR_FINALITY_WATCH_BLOCKS", file.finality_watch_blocks)?.unwrap_or(64);
        if finality_watch_blocks < confirmations_required {
            return Err(ConfigError {
                key: "BURSAR_FINALITY_WATCH_BLOCKS",
                message: "must be at least BURSAR_CONFIRMATIONS".into(),
            });
        }
        let lane_window = number("BURSAR_LANE_WINDOW", file.lane_window)?.unwrap_or(512);
        if lane_window == 0 {
            return Err(ConfigError {
                key: "BURSAR_LANE_WINDOW",
                message: "must be positive".into(),
            });
        }
        let rate = |key: &'static str, value: Option<u64>, default: u32| {
            let value = value.unwrap_or(u64::from(default));
            u32::try_from(value)
                .ok()
                .and_then(std::num::NonZeroU32::new)
                .filter(|n| n.get() <= 1_000_000)
                .ok_or(ConfigError {
                    key,
                    message: "must be between 1 and 1000000".into(),
                })
        };
        let write_rate_per_second = rate(
            "BURSAR_WRITE_RATE_PER_SECOND",
            number("BURSAR_WRITE_RATE_PER_SECOND", file.write_rate_per_second)?,
            50,
        )?;
        let write_rate_burst = rate(
            "BURSAR_WRITE_RATE_BURST",
            number("BURSAR_WRITE_RATE_BURST", file.write_rate_burst)?,
            100,
        )?;
        let x402_allow_private_targets = match env("BURSAR_X402_ALLOW_PRIVATE_TARGETS").as_deref() {
            None => file.x402_allow_private_targets.unwrap_or(false),
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(ConfigError {
                    key: "BURSAR_X402_ALLOW_PRIVATE_TARGETS",
                    message: format!("must be true or false, not {other:?}"),
                });
            }
        };
        let mcp_allowed_hosts = match env("BURSAR_MCP_ALLOWED_HOSTS") {
            Some(list) => list
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            None => file.mcp_allowed_hosts.unwrap_or_default(),
        };
        Ok(Config {
            x402_allow_private_targets,
            mcp_allowed_hosts,
            listen,
            database_url,
            rpc_url,
            chain_id,
            usdc_address,
            confirmations_required,
            master_key_file,
            admin_token: admin_token.map(SecretString::from),
            poll_interval_ms,
            rpc_timeout_ms,
            approval_timeout_secs,
            hold_timeout_secs,
            gas_float_min_wei,
            gas_float_topup_wei,
            stuck_after_blocks,
            max_fee_per_gas_gwei,
            unsendable_after_blocks,
            finality_watch_blocks,
            lane_window,
            write_rate_per_second,
            write_rate_burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(None, |key| map.get(key).cloned())
    }

    #[test]
    fn defaults_match_the_api_contract() {
        let config = config(&[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url, "sqlite://data/bursar.db");
        assert_eq!(config.chain_id, 8453);
        assert_eq!(config.usdc_address.unwrap().to_string(), BASE_MAINNET_USDC);
        assert_eq!(config.confirmations_required, 3);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("BURSAR_LISTEN", "nope"),
            ("BURSAR_CHAIN_ID", "base"),
            ("BURSAR_CONFIRMATIONS", "0"),
            ("BURSAR_USDC_ADDRESS", "0x12"),
            ("BURSAR_ADMIN_TOKEN", "short"),
            ("BURSAR_RPC_URL", "ftp://x"),
            ("BURSAR_LANE_WINDOW", "0"),
            ("BURSAR_LANE_WINDOW", "many"),
        ] {
            assert_eq!(config(&[(key, value)]).unwrap_err().key, key);
        }
    }

    #[test]
    fn debug_redacts_the_admin_token() {
        let config = config(&[("BURSAR_ADMIN_TOKEN", "super-secret-admin-token")]).unwrap();
        assert!(!format!("{config:?}").contains("super-secret-admin-token"));
    }

    #[test]
    fn file_values_apply_under_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bursar.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nconfirmations = 5\n").unwrap();
        let config = Config::from_sources(Some(&path), |key| {
            (key == "BURSAR_CONFIRMATIONS").then(|| "7".to_string())
        })
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.confirmations_required, 7);
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        assert!(Config::from_sources(Some(&path), |_| None).is_err());
    }
}
