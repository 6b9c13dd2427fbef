//! Command-line entry points: `serve`, `dev` (local devnet with USDC and a funded treasury),
//! `migrate`, `audit verify` and `bench`.

pub mod bench;

use crate::app;
use crate::chain::devnet::{self, Devnet};
use crate::config::Config;
use crate::custody::MasterKey;
use crate::domain::{Address, new_secret_token};
use crate::ledger::{Ledger, audit};
use crate::payments::SystemClock;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "bursar",
    version,
    about = "Custody and settlement of USDC payments for AI agents on Base"
)]
pub struct Cli {
    /// A TOML file with the same keys as the BURSAR_* environment variables, in lower case.
    #[arg(long, global = true, env = "BURSAR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service against BURSAR_RPC_URL.
    Serve,
    /// Start a local Base-like devnet with Circle's USDC, fund the treasury and run the service.
    Dev {
        /// Seconds between blocks (Base makes one every 2 seconds).
        #[arg(long, default_value_t = 2)]
        block_time_secs: u64,
        /// Where the database, master key and devnet.json go.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Address to serve the API on (overrides BURSAR_LISTEN; default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Measure throughput and latency on a devnet of its own and check that every payment was
    /// settled exactly once (see README "Performance").
    Bench(bench::BenchArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain; exits 1 and names the first bad event if it is broken.
    Verify,
    /// Write the events to a file, as GET /v1/audit/export does, straight from the database.
    Export {
        /// csv or jsonl
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Where to write; `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// Only events before this RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => app::serve(config).await,
        Command::Dev {
            block_time_secs,
            data_dir,
            listen,
        } => {
            let mut config = config;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            dev(config, block_time_secs, &data_dir).await
        }
        Command::Bench(args) => bench::run(config, args).await,
        Command::Migrate => {
            Ledger::open(&config.database_url).await?;
            println!("migrations applied to {}", config.database_url);
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&config).await,
        Command::Audit {
            command:
                AuditCommand::Export {
                    format,
                    out,
                    from,
                    to,
                },
        } => audit_export(&config, &format, &out, from, to).await,
    }
}

/// `bursar audit verify`: the hash chain, and with the master key the signed checkpoints.
async fn audit_verify(config: &Config) -> anyhow::Result<()> {
    let ledger = Ledger::open(&config.database_url).await?;
    // With the master key the signed checkpoints are checked too: a chain rewritten with
    // database access alone fails here.
    let report = match &config.master_key_file {
        Some(path) => {
            let custody = crate::custody::Custody::new(
                crate::custody::MasterKey::load(path)?,
                config.chain_id,
            );
            audit::verify_with_checkpoints(ledger.pool(), &custody.audit_key()).await?
        }
        None => audit::verify(ledger.pool()).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

/// `bursar audit export`: the audit log as CSV or JSON lines, to a file or stdout (`-`).
async fn audit_export(
    config: &Config,
    format: &str,
    out: &Path,
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<()> {
    let format = audit::ExportFormat::parse(format).context("--format must be csv or jsonl")?;
    let time = |text: Option<String>| -> anyhow::Result<Option<i64>> {
        text.map(|t| {
            Ok(chrono::DateTime::parse_from_rfc3339(&t)
                .context("times are RFC 3339")?
                .timestamp_millis())
        })
        .transpose()
    };
    let ledger = Ledger::open(&config.database_url).await?;
    let mut writer: Box<dyn std::io::Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(out)?))
    };
    let mut pages = std::pin::pin!(audit::export_stream(
        ledger.pool().clone(),
        time(from)?,
        time(to)?,
        format,
        None
    ));
    while let Some(page) = futures_util::TryStreamExt::try_next(&mut pages).await? {
        writer.write_all(&page)?;
    }
    writer.flush()?;
    Ok(())
}

/// `bursar dev`: everything a new user needs on one machine. Each run starts a fresh chain, so a
/// database left from an earlier devnet is moved aside (never deleted).
async fn dev(mut config: Config, block_time_secs: u64, data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let master_key_file = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("master.key"));
    if !master_key_file.exists() {
        MasterKey::generate_file(&master_key_file)?;
    }
    config.master_key_file = Some(master_key_file);
    if config.database_url == "sqlite://data/bursar.db" {
        config.database_url = format!("sqlite://{}", data_dir.join("bursar.db").display());
    }
    let admin_token = match &config.admin_token {
        Some(token) => secrecy::ExposeSecret::expose_secret(token).to_string(),
        None => new_secret_token("bsr_admin"),
    };
    config.admin_token = Some(admin_token.clone().into());

    println!("starting anvil (chain 8453, optimism mode) and deploying Circle's USDC ...");
    let devnet = Devnet::start().await?;
    config.rpc_url = Some(devnet.rpc_url.clone());
    config.chain_id = devnet::DEVNET_CHAIN_ID;
    config.usdc_address = Some(devnet.usdc);

    let payments = match app::build(&config, Arc::new(SystemClock)).await {
        Ok(payments) => payments,
        Err(error) if error.downcast_ref::<app::ChainMismatch>().is_some() => {
            let moved = move_database_aside(&config.database_url)?;
            println!("the database belonged to an earlier devnet; moved it to {moved}");
            app::build(&config, Arc::new(SystemClock)).await?
        }
        Err(error) => return Err(error),
    };
    let treasury = payments.ensure_treasury().await?.address()?;
    devnet.mint(treasury, devnet::TREASURY_USDC).await?;
    devnet
        .set_eth_balance(treasury, devnet::TREASURY_ETH)
        .await?;
    devnet.mine_every(block_time_secs.max(1)).await?;

    let running = app::start(
        payments,
        config.listen,
        Duration::from_millis(config.poll_interval_ms.min(500)),
        true,
        config.mcp_allowed_hosts.clone(),
    )
    .await?;
    let api_url = format!("http://{}", running.address);
    write_devnet_file(data_dir, &api_url, &devnet, treasury, &admin_token)?;
    print_try_it(&api_url, &admin_token, data_dir);
    app::shutdown_signal().await;
    println!("stopping");
    running.stop().await?;
    drop(devnet);
    Ok(())
}

fn move_database_aside(url: &str) -> anyhow::Result<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let target = format!("{path}.{stamp}.old");
    std::fs::rename(path, &target)?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::rename(format!("{path}{suffix}"), format!("{target}{suffix}"));
    }
    Ok(target)
}

fn write_devnet_file(
    data_dir: &Path,
    api_url: &str,
    devnet: &Devnet,
    treasury: Address,
    admin_token: &str,
) -> anyhow::Result<()> {
    let info = serde_json::json!({
        "api_url": api_url,
        "rpc_url": devnet.rpc_url,
        "chain_id": devnet::DEVNET_CHAIN_ID,
        "usdc_address": devnet.usdc.to_string(),
        "treasury_address": treasury.to_string(),
        "admin_token": admin_token,
    });
    let path = data_dir.join("devnet.json");
    std::fs::write(&path, serde_json::to_string_pretty(&info)?)?;
    Ok(())
}

fn print_try_it(api_url: &str, admin_token: &str, data_dir: &Path) {
    println!(
        r#"
Bursar is running at {api_url} on a local Base devnet (details in {dir}/devnet.json).
The treasury holds 1,000,000 USDC and 100 ETH. Try it (see README.md for the full walkthrough):

  export BURSAR={api_url} ADMIN={admin_token}
  curl -s -X POST $BURSAR/v1/agents -H "Authorization: Bearer $ADMIN" -d '{{"name":"research-bot"}}'
  curl -s $BURSAR/v1/treasury -H "Authorization: Bearer $ADMIN"

Stop with Ctrl-C."#,
        dir = data_dir.display()
    );
}
