//! `bursar bench`: sizes a deployment, like `pgbench` or `redis-benchmark`. It starts its own
//! Base-like devnet with Circle's USDC (1-second blocks, a 300M gas limit), or targets a node with
//! `--rpc-url` (see `target`), runs the service on a fresh SQLite file, creates and funds agents,
//! and fires payment intents from concurrent HTTP clients in two phases:
//!
//! 1. **Backlog**: the intents are accepted with settlement stopped (acceptance on its own), then
//!    settlement starts and drains them. This is the node's ceiling's own shape (every transfer
//!    there from the start), so its confirmed/s is the settlement engine's against the node's.
//! 2. **Live**: the intents are accepted while settlement runs, as in production: acceptance
//!    under settlement's load, and each intent's time to confirmed.
//!
//! It checks on chain that exactly those transfers happened, and measures in the same run what
//! the storage and the node allow on their own: anvil fed pre-signed transfers in JSON-RPC
//! batches, and SQLite's durable group commit. It prints one table (or `--json`) and fails only
//! if a payment was lost or doubled, never on a timing.

mod target;

use self::target::{Grant, Target};
use crate::app;
use crate::chain::Chain;
use crate::config::Config;
use crate::custody::MasterKey;
use crate::domain::{Address, Amount, new_secret_token};
use crate::ledger::bench as ledger_bench;
use crate::payments::SystemClock;
use alloy::consensus::{SignableTransaction, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Distinct recipients the payments rotate over.
const RECIPIENTS: usize = 64;
/// Attempts per intent: a transport error, 429 or 5xx is retried with the same idempotency key,
/// as a careful client would.
const ATTEMPTS: u32 = 5;
/// Raw transactions per JSON-RPC batch when feeding the node its ceiling.
const CEILING_BATCH: usize = 500;
/// Gas the bench budgets per USDC transfer when funding wallets (one costs about 65,000).
const TRANSFER_GAS_BUDGET: u64 = 100_000;
/// How often the node's head is polled while measuring its ceiling.
const HEAD_POLL: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Agent wallets paying (each is one nonce lane).
    #[arg(long, default_value_t = 16)]
    pub agents: u32,
    /// Payment intents to fire in each phase (backlog, then live).
    #[arg(long, default_value_t = 5_000)]
    pub payments: u32,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// Seconds between devnet blocks [default: 1].
    #[arg(long, conflicts_with = "rpc_url")]
    pub block_time_secs: Option<u64>,
    /// The devnet's block gas limit [default: 300000000] (Base's is in the hundreds of millions).
    #[arg(long, conflicts_with = "rpc_url")]
    pub gas_limit: Option<u64>,
    /// Bench against this node instead of a devnet of its own: USDC is the contract at
    /// BURSAR_USDC_ADDRESS, blocks come at the node's pace, and every wallet of the run is funded
    /// from --funder-key-file by plain transfers (no cheat calls).
    #[arg(long, requires = "funder_key_file")]
    pub rpc_url: Option<String>,
    /// With --rpc-url: a file holding the hex private key of the account whose USDC and ETH fund
    /// the run's wallets.
    #[arg(long, requires = "rpc_url")]
    pub funder_key_file: Option<PathBuf>,
    /// Payments already stored before the run (synthetic, confirmed, spread over the agents'
    /// credentials and older than every rolling window), to see whether acceptance slows as the
    /// history grows.
    #[arg(long, default_value_t = 0)]
    pub stored: u64,
    /// Give up waiting for confirmations after this many seconds without progress.
    #[arg(long, default_value_t = 60)]
    pub stall_timeout_secs: u64,
    /// The agents' credential policy as JSON (default: every limit set, high enough that no
    /// bench payment is refused), to size a deployment with the policy it will run.
    #[arg(long)]
    pub policy: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where the database and master key of the run go (default: a fresh directory under the
    /// system's temp dir, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub agents: u32,
    pub stored: u64,
    pub payments: u32,
    pub clients: u32,
    pub block_time_secs: u64,
    pub confirmations_required: u64,
    /// Acceptance with settlement stopped (the backlog phase).
    pub accept_idle: Accept,
    /// Acceptance while settlement runs (the live phase).
    pub accept: Accept,
    /// The backlog phase's settlement: from the moment settlement starts.
    pub backlog: Backlog,
    /// The live phase's settlement: from each intent.
    pub settlement: Settlement,
    pub verification: Verification,
    pub peak_rss_mb: Option<f64>,
    pub ceilings: Ceilings,
    pub ratios: Ratios,
}

#[derive(Debug, Serialize)]
pub struct Accept {
    pub intents_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Intents that got no 2xx even after retries.
    pub errors: u64,
    pub retries: u64,
}

#[derive(Debug, Serialize)]
pub struct Settlement {
    pub confirmed: u64,
    pub confirmed_per_second: f64,
    pub intent_to_confirmed_p50_ms: f64,
    pub intent_to_confirmed_p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Backlog {
    pub confirmed: u64,
    /// Intents confirmed per second from the moment settlement started on the backlog.
    pub confirmed_per_second: f64,
    /// From settlement's start to each payment's confirmation.
    pub start_to_confirmed_p50_ms: f64,
    pub start_to_confirmed_p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    /// USDC transfers from the agent wallets found on chain.
    pub transfers_on_chain: u64,
    /// Accepted intents with no matching confirmed transfer.
    pub lost: u64,
    /// Transfers on chain beyond one per intent (or not matching their payment).
    pub doubled: u64,
}

#[derive(Debug, Serialize)]
pub struct Ceilings {
    /// The same node fed pre-signed transfers from as many wallets, in JSON-RPC batches.
    pub anvil_confirmed_per_second: f64,
    pub anvil_send_to_confirmed_p50_ms: f64,
    pub anvil_send_to_confirmed_p99_ms: f64,
    /// SQLite on the same disk, same settings: one row per fsync'd commit.
    pub sqlite_commits_per_second: f64,
    /// SQLite on the same disk: rows per second with `ledger::bench::GROUP_ROWS` per commit.
    pub sqlite_group_commit_rows_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Bursar's backlog confirmed/s over the node's (both start with every transfer waiting).
    pub settlement_of_anvil: f64,
    /// The backlog's start-to-confirmed p50 minus the node's send-to-confirmed p50, in blocks.
    pub backlog_p50_gap_blocks: f64,
    /// The live phase's confirmed/s (first intent to last confirmation) over the node's: bounded
    /// by how fast the intents arrive as well.
    pub live_settlement_of_anvil: f64,
    /// The live intent-to-confirmed p50 minus the node's send-to-confirmed p50, in blocks.
    pub p50_gap_blocks: f64,
    /// Accepted intents/s with settlement stopped over SQLite's group-commit rows/s.
    pub accept_idle_of_sqlite_group_commit: f64,
    /// Accepted intents/s while settling over SQLite's group-commit rows/s.
    pub accept_of_sqlite_group_commit: f64,
}

pub async fn run(mut config: Config, args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.agents > 0, "--agents must be at least 1");
    ensure!(args.payments > 0, "--payments must be at least 1");
    ensure!(args.clients > 0, "--clients must be at least 1");
    let (dir, remove_dir) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("bursar-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = bench(&mut config, &args, &dir).await;
    if args.rpc_url.is_some() && dir.join("bursar.db").exists() {
        // On a node the user named, the run's wallets keep the gas they did not spend: their
        // sealed keys stay with the database and the master key.
        eprintln!(
            "the run's wallets and their sealed keys are kept in {}",
            dir.display()
        );
    } else if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let v = &report.verification;
    let refused = report.accept_idle.errors + report.accept.errors;
    if v.lost > 0 || v.doubled > 0 || refused > 0 {
        bail!(
            "{} payment(s) lost, {} doubled, {} intent(s) refused",
            v.lost,
            v.doubled,
            refused
        );
    }
    Ok(())
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn counter(message: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:<22} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

async fn bench(config: &mut Config, args: &BenchArgs, dir: &Path) -> anyhow::Result<Report> {
    let setup = spinner(match &args.rpc_url {
        None => "starting the devnet and Circle's USDC",
        Some(_) => "checking the node",
    });
    let target = Target::open(config, args).await?;
    let admin_token = configure(config, dir, &target)?;
    let Service {
        running,
        chain,
        api,
        http,
        poll_interval,
    } = start_service(config, &target, args.clients).await?;

    setup.set_message("creating and funding agents");
    let (agents, credentials) =
        create_agents(&http, &api, &admin_token, &target, &chain, args).await?;
    if args.stored > 0 {
        setup.set_message(format!("storing {} payments of history", args.stored));
        preload_history(&config.database_url, &credentials, args.stored).await?;
    }
    let recipients: Vec<Address> = (0..RECIPIENTS)
        .map(|_| Address::from(alloy::primitives::Address::from(rand::random::<[u8; 20]>())))
        .collect();
    let start_block = chain.head().await?;
    target.start_blocks(args).await?;
    let block_secs = target.block_time_secs(&chain, args).await?;
    setup.finish_and_clear();

    let phases = run_phases(
        &running.payments,
        &chain,
        &Load {
            http: &http,
            api: &api,
            args,
            agents: &agents,
            recipients: &recipients,
        },
        poll_interval,
        start_block,
    )
    .await?;
    running.stop().await?;

    let anvil = anvil_ceiling(&target, &chain, args, config.confirmations_required).await?;
    let sqlite = sqlite_ceiling(dir).await?;
    Ok(report(
        args,
        config.confirmations_required,
        block_secs,
        phases,
        &anvil,
        &sqlite,
    ))
}

/// Bursar under test, listening, and what the bench reaches it and the node with.
struct Service {
    running: app::Running,
    chain: Chain,
    /// The API's base URL.
    api: String,
    /// An HTTP client with a kept connection per concurrent client.
    http: reqwest::Client,
    poll_interval: Duration,
}

/// Builds Bursar on the bench's configuration and starts its API, without the settlement
/// worker: the bench starts settlement itself, after the backlog is accepted.
async fn start_service(config: &Config, target: &Target, clients: u32) -> anyhow::Result<Service> {
    let payments = app::build(config, Arc::new(SystemClock)).await?;
    let chain = Chain::connect(
        target.rpc_url(),
        target.chain_id(),
        target.usdc(),
        config.rpc_timeout_ms,
    )?;
    let poll_interval = Duration::from_millis(config.poll_interval_ms.min(100));
    let running = app::start(
        payments,
        config.listen,
        poll_interval,
        false,
        config.mcp_allowed_hosts.clone(),
    )
    .await?;
    Ok(Service {
        api: format!("http://{}", running.address),
        running,
        chain,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(clients as usize)
            .build()?,
        poll_interval,
    })
}

/// SQLite's own durable group commit on the run's disk, beside the run's database.
async fn sqlite_ceiling(dir: &Path) -> anyhow::Result<ledger_bench::Ceiling> {
    let bar = spinner("measuring SQLite's group commit");
    let ceiling = ledger_bench::sqlite_ceiling(&dir.join("ceiling.db")).await?;
    bar.finish_and_clear();
    Ok(ceiling)
}

/// The run's figures, its ceilings and the ratios between them.
fn report(
    args: &BenchArgs,
    confirmations_required: u64,
    block_secs: f64,
    phases: Phases,
    anvil: &AnvilCeiling,
    sqlite: &ledger_bench::Ceiling,
) -> Report {
    let ratios = ratios(block_secs, &phases, anvil, sqlite);
    Report {
        agents: args.agents,
        stored: args.stored,
        payments: args.payments,
        clients: args.clients,
        block_time_secs: (block_secs.round() as u64).max(1),
        confirmations_required,
        accept_idle: phases.accept_idle,
        accept: phases.accept,
        backlog: phases.backlog,
        settlement: phases.settlement,
        verification: phases.verification,
        peak_rss_mb: phases.peak_rss_mb,
        ceilings: Ceilings {
            anvil_confirmed_per_second: anvil.confirmed_per_second,
            anvil_send_to_confirmed_p50_ms: anvil.p50_ms,
            anvil_send_to_confirmed_p99_ms: anvil.p99_ms,
            sqlite_commits_per_second: sqlite.single_commits_per_second,
            sqlite_group_commit_rows_per_second: sqlite.group_commit_rows_per_second,
        },
        ratios,
    }
}

/// What fires the intents: the HTTP client, the API's address and the agents' secrets.
struct Load<'a> {
    http: &'a reqwest::Client,
    api: &'a str,
    args: &'a BenchArgs,
    agents: &'a [(Address, String)],
    recipients: &'a [Address],
}

/// What the two phases measured, and the on-chain check of both.
struct Phases {
    accept_idle: Accept,
    accept: Accept,
    backlog: Backlog,
    settlement: Settlement,
    verification: Verification,
    peak_rss_mb: Option<f64>,
}

/// The backlog phase (accepted with settlement stopped, then drained) and the live phase
/// (accepted while settlement runs), then the check that exactly those transfers happened.
async fn run_phases(
    payments: &crate::payments::Payments,
    chain: &Chain,
    load: &Load<'_>,
    poll_interval: Duration,
    start_block: u64,
) -> anyhow::Result<Phases> {
    let args = load.args;
    // Phase 1, backlog: every intent accepted with settlement stopped, then drained.
    let run = rand::random::<u32>();
    let since = chrono::Utc::now().timestamp_millis();
    let accept_idle = fire(load, &format!("{run}-backlog")).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let settlement_started = chrono::Utc::now().timestamp_millis();
    let worker = {
        let payments = payments.clone();
        tokio::spawn(async move { payments.run_settlement(poll_interval, stopped).await })
    };
    let backlog_settled = wait_for_settlement(payments, args, since).await?;
    let backlog_outcomes = ledger_bench::outcomes(payments.reader().pool(), since).await?;
    let backlog = backlog_figures(&backlog_outcomes, backlog_settled, settlement_started);

    // Phase 2, live: intents accepted while settlement runs.
    let live_since = chrono::Utc::now().timestamp_millis().max(since + 1);
    let accept = fire(load, &format!("{run}-live")).await?;
    let settled = wait_for_settlement(payments, args, live_since).await?;
    let peak_rss_mb = peak_rss_mb();
    let _ = stop.send(true);
    worker.await?;
    let live_outcomes = ledger_bench::outcomes(payments.reader().pool(), live_since).await?;
    let settlement = settlement_figures(&live_outcomes, settled);
    let outcomes = ledger_bench::outcomes(payments.reader().pool(), since).await?;
    let head = chain.head().await?;
    let senders: Vec<Address> = load.agents.iter().map(|(address, _)| *address).collect();
    let logs = chain.usdc_transfers(start_block, head, &senders).await?;
    let verification = verify(&outcomes, &logs, &senders, 2 * u64::from(args.payments));
    Ok(Phases {
        accept_idle,
        accept,
        backlog,
        settlement,
        verification,
        peak_rss_mb,
    })
}

/// Points the configuration at the target chain and a fresh database and master key in `dir`,
/// with a new admin token (returned), on a free local port.
fn configure(config: &mut Config, dir: &Path, target: &Target) -> anyhow::Result<String> {
    let master_key_file = dir.join("master.key");
    if !master_key_file.exists() {
        MasterKey::generate_file(&master_key_file)?;
    }
    let admin_token = new_secret_token("bsr_admin");
    config.database_url = format!("sqlite://{}", dir.join("bursar.db").display());
    config.rpc_url = Some(target.rpc_url().to_string());
    config.chain_id = target.chain_id();
    config.usdc_address = Some(target.usdc());
    // The bench funds every wallet itself: no treasury top-ups (on a named node the treasury is
    // a fresh, empty wallet).
    config.gas_float_min_wei = 0;
    config.master_key_file = Some(master_key_file);
    config.admin_token = Some(admin_token.clone().into());
    config.listen = "127.0.0.1:0".parse()?;
    // The bench is its own only client: per-credential write limits would measure the limiter.
    config.write_rate_per_second = std::num::NonZeroU32::MAX;
    config.write_rate_burst = std::num::NonZeroU32::MAX;
    Ok(admin_token)
}

/// Creates `--agents` agents with a credential each, then funds their wallets with USDC and ETH.
/// Returns each wallet with its credential's secret, and the credentials' ids.
async fn create_agents(
    http: &reqwest::Client,
    api: &str,
    admin_token: &str,
    target: &Target,
    chain: &Chain,
    args: &BenchArgs,
) -> anyhow::Result<(Vec<(Address, String)>, Vec<String>)> {
    let policy = match &args.policy {
        Some(text) => serde_json::from_str::<serde_json::Value>(text)
            .context("--policy must be a JSON object")?,
        None => bench_policy(args),
    };
    let mut agents = Vec::new();
    let mut credentials = Vec::new();
    for index in 0..args.agents {
        let agent = post(
            http,
            &format!("{api}/v1/agents"),
            admin_token,
            serde_json::json!({"name": format!("bench-{index}")}),
            None,
        )
        .await?;
        let agent_id = text(&agent, "id")?;
        let address = Address::parse(&text(&agent, "address")?)?;
        let credential = post(
            http,
            &format!("{api}/v1/agents/{agent_id}/credentials"),
            admin_token,
            serde_json::json!({"name": "bench", "policy": policy}),
            None,
        )
        .await?;
        agents.push((address, text(&credential, "token")?));
        credentials.push(text(&credential, "id")?);
    }
    // Gas for each agent's share of both phases at four times today's fee cap: settlement
    // prices its own fees, and a wallet short of gas would wait for a top-up the bench turned off.
    let fee_cap = U256::from(chain.fees().await?.max_fee_per_gas.saturating_mul(4));
    let transfers = u64::from(args.payments.saturating_mul(2).div_ceil(args.agents));
    let eth_wei = U256::from(transfers * TRANSFER_GAS_BUDGET) * fee_cap;
    let grants: Vec<Grant> = agents
        .iter()
        .enumerate()
        .map(|(wallet, (address, _))| Grant {
            to: *address,
            // Its payments of both phases, exactly.
            usdc: Amount::from_micros(2 * payments_of(args, wallet).micros()),
            eth_wei,
        })
        .collect();
    target.fund(chain, &grants, stall(args)).await?;
    Ok((agents, credentials))
}

fn stall(args: &BenchArgs) -> Duration {
    Duration::from_secs(args.stall_timeout_secs.max(1))
}

/// Stores `stored` synthetic confirmed payments, spread over the credentials and older than
/// every rolling window.
async fn preload_history(
    database_url: &str,
    credentials: &[String],
    stored: u64,
) -> anyhow::Result<()> {
    let ledger = crate::ledger::Ledger::open(database_url).await?;
    let two_days_ago = chrono::Utc::now().timestamp_millis() - 2 * 24 * 60 * 60 * 1000;
    let share = stored.div_ceil(credentials.len() as u64);
    let mut left = stored;
    for credential in credentials {
        let count = share.min(left);
        ledger_bench::preload(&ledger, credential, count, two_days_ago).await?;
        left -= count;
    }
    ledger.close().await;
    Ok(())
}

fn ratios(
    block_secs: f64,
    phases: &Phases,
    anvil: &AnvilCeiling,
    sqlite: &ledger_bench::Ceiling,
) -> Ratios {
    let (accept_idle, accept) = (&phases.accept_idle, &phases.accept);
    let (backlog, settlement) = (&phases.backlog, &phases.settlement);
    let block_ms = block_secs * 1000.0;
    let group = sqlite.group_commit_rows_per_second;
    Ratios {
        settlement_of_anvil: ratio(backlog.confirmed_per_second, anvil.confirmed_per_second),
        backlog_p50_gap_blocks: (backlog.start_to_confirmed_p50_ms - anvil.p50_ms) / block_ms,
        live_settlement_of_anvil: ratio(
            settlement.confirmed_per_second,
            anvil.confirmed_per_second,
        ),
        p50_gap_blocks: (settlement.intent_to_confirmed_p50_ms - anvil.p50_ms) / block_ms,
        accept_idle_of_sqlite_group_commit: ratio(accept_idle.intents_per_second, group),
        accept_of_sqlite_group_commit: ratio(accept.intents_per_second, group),
    }
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// The amount of payment `index`: small and varied, so that a transfer matched to the wrong
/// payment shows.
fn amount_of(index: u32) -> Amount {
    Amount::from_micros(1_000 + u64::from(index % 997))
}

/// What wallet `wallet` pays in one phase: the amounts of the intents it is given (every
/// `--agents`th, starting at its own index).
fn payments_of(args: &BenchArgs, wallet: usize) -> Amount {
    Amount::from_micros(
        (0..args.payments)
            .filter(|i| (i % args.agents) as usize == wallet)
            .map(|i| amount_of(i).micros())
            .sum(),
    )
}

/// What one agent needs for its share of both phases' payments, with room to spare.
fn per_agent_total(args: &BenchArgs) -> Amount {
    let share = u64::from(args.payments.saturating_mul(2).div_ceil(args.agents));
    Amount::from_micros(share.saturating_mul(2_000).saturating_add(1_000_000))
}

/// The agents' policy: every limit that reads a rolling window or a running total is set, as an
/// operator's would be, so that each accept pays for the checks production pays for; each is set
/// high enough that no bench payment is refused (both phases within a minute, plus the `--stored`
/// history in the lifetime total).
fn bench_policy(args: &BenchArgs) -> serde_json::Value {
    let share = u64::from(args.payments.saturating_mul(2).div_ceil(args.agents));
    let stored = args.stored.div_ceil(u64::from(args.agents));
    let history = Amount::from_micros(stored.saturating_mul(ledger_bench::STORED_AMOUNT_MICROS));
    let total = per_agent_total(args)
        .checked_add(history)
        .unwrap_or(Amount::from_micros(u64::MAX));
    serde_json::json!({
        "max_per_payment": "0.01",
        "daily_limit": per_agent_total(args).to_string(),
        "total_limit": total.to_string(),
        "max_payments_per_minute": u32::try_from(share.saturating_mul(2)).unwrap_or(u32::MAX).max(1),
    })
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: serde_json::Value,
    idempotency_key: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    ensure!(
        status.is_success(),
        "POST {url} answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(serde_json::from_slice(&bytes)?)
}

fn text(value: &serde_json::Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("the response has no {field}"))
}

/// Fires the intents from `clients` concurrent clients and measures acceptance.
async fn fire(load: &Load<'_>, run: &str) -> anyhow::Result<Accept> {
    let (http, api, args) = (load.http, load.api, load.args);
    let (agents, recipients) = (load.agents, load.recipients);
    let bar = counter("accepting intents", u64::from(args.payments));
    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let url = format!("{api}/v1/payments");
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (http, url, next, retries, bar) = (
            http.clone(),
            url.clone(),
            next.clone(),
            retries.clone(),
            bar.clone(),
        );
        let agents = agents.to_vec();
        let recipients = recipients.to_vec();
        let run = run.to_string();
        let total = u64::from(args.payments);
        clients.spawn(async move {
            let mut latencies_us = Vec::new();
            let mut errors = 0u64;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let index = index as u32;
                let (_, token) = &agents[index as usize % agents.len()];
                let to = recipients[index as usize % recipients.len()];
                let body = serde_json::to_vec(&serde_json::json!({
                    "to": to.to_string(), "amount": amount_of(index).to_string(), "currency": "USDC",
                }))
                .unwrap_or_default();
                let key = format!("bench-{run}-{index}");
                let sent = Instant::now();
                if send_intent(&http, &url, token, &key, &body, &retries).await {
                    latencies_us.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                bar.inc(1);
            }
            (latencies_us, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = clients.join_next().await {
        let (mut client_latencies, client_errors) = joined?;
        latencies.append(&mut client_latencies);
        errors += client_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    latencies.sort_unstable();
    Ok(Accept {
        intents_per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0) / 1000.0,
        p99_ms: percentile(&latencies, 99.0) / 1000.0,
        errors,
        retries: retries.load(Ordering::Relaxed),
    })
}

/// Posts one intent, retrying a transport error, 429 or 5xx with the same idempotency key as a
/// careful client would. Whether it was accepted (a 2xx).
async fn send_intent(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    body: &[u8],
    retries: &AtomicU64,
) -> bool {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            retries.fetch_add(1, Ordering::Relaxed);
        }
        let response = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_vec())
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                return true;
            }
            Ok(response)
                if response.status().is_client_error()
                    && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                return false;
            }
            _ => {}
        }
    }
    false
}

/// Waits until every payment is final (confirmed, failed or rejected) or nothing moved for
/// `stall_timeout_secs`. Returns how many are confirmed.
async fn wait_for_settlement(
    payments: &crate::payments::Payments,
    args: &BenchArgs,
    since: i64,
) -> anyhow::Result<u64> {
    let bar = counter("confirming on chain", u64::from(args.payments));
    let stall = stall(args);
    let mut last_progress = Instant::now();
    let mut least_open = i64::MAX;
    loop {
        let open = ledger_bench::open_count(payments.reader().pool(), since).await?;
        bar.set_position(u64::from(args.payments).saturating_sub(open.unsigned_abs()));
        if open < least_open {
            least_open = open;
            last_progress = Instant::now();
        }
        if open == 0 || last_progress.elapsed() > stall {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let counts = ledger_bench::status_counts(payments.reader().pool(), since).await?;
    Ok(counts
        .iter()
        .filter(|(status, _)| status == "confirmed")
        .map(|(_, n)| n.unsigned_abs())
        .sum())
}

/// The backlog's drain, timed from the moment settlement started.
fn backlog_figures(outcomes: &[ledger_bench::Outcome], confirmed: u64, started: i64) -> Backlog {
    let mut waits: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| Some(o.confirmed_at?.saturating_sub(started).max(0) as u64))
        .collect();
    waits.sort_unstable();
    let last = waits.last().copied().unwrap_or(0);
    Backlog {
        confirmed,
        confirmed_per_second: waits.len() as f64 / (last.max(1) as f64 / 1000.0),
        start_to_confirmed_p50_ms: percentile(&waits, 50.0),
        start_to_confirmed_p99_ms: percentile(&waits, 99.0),
    }
}

fn settlement_figures(outcomes: &[ledger_bench::Outcome], confirmed: u64) -> Settlement {
    let mut waits: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| Some(o.confirmed_at?.saturating_sub(o.created_at).max(0) as u64))
        .collect();
    waits.sort_unstable();
    let first = outcomes.iter().map(|o| o.created_at).min().unwrap_or(0);
    let last = outcomes
        .iter()
        .filter_map(|o| o.confirmed_at)
        .max()
        .unwrap_or(first);
    let span_secs = ((last - first).max(1)) as f64 / 1000.0;
    Settlement {
        confirmed,
        confirmed_per_second: waits.len() as f64 / span_secs,
        intent_to_confirmed_p50_ms: percentile(&waits, 50.0),
        intent_to_confirmed_p99_ms: percentile(&waits, 99.0),
    }
}

/// Matches every confirmed payment to exactly one `Transfer` log of the same transaction,
/// sender set, recipient and value; whatever is left over on either side is lost or doubled.
fn verify(
    outcomes: &[ledger_bench::Outcome],
    logs: &[crate::chain::TransferLog],
    senders: &[Address],
    intents: u64,
) -> Verification {
    let from_agents: Vec<&crate::chain::TransferLog> =
        logs.iter().filter(|l| senders.contains(&l.from)).collect();
    let mut by_hash: HashMap<String, Vec<&crate::chain::TransferLog>> = HashMap::new();
    for log in &from_agents {
        by_hash
            .entry(log.tx_hash.to_string())
            .or_default()
            .push(log);
    }
    let mut matched = 0u64;
    for outcome in outcomes.iter().filter(|o| o.status == "confirmed") {
        let Some(hash) = &outcome.tx_hash else {
            continue;
        };
        let Some(candidates) = by_hash.get(hash) else {
            continue;
        };
        let expected_to = Address::parse(&outcome.to_address).ok();
        let expected_value = alloy::primitives::U256::from(outcome.amount.max(0) as u64);
        if candidates.len() == 1
            && Some(candidates[0].to) == expected_to
            && candidates[0].value == expected_value
        {
            matched += 1;
        }
    }
    Verification {
        transfers_on_chain: from_agents.len() as u64,
        lost: intents.saturating_sub(matched),
        doubled: (from_agents.len() as u64).saturating_sub(matched),
    }
}

struct AnvilCeiling {
    confirmed_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The node's own ceiling: as many fresh wallets as agents, the same number of USDC transfers
/// pre-signed before the clock starts, sent in JSON-RPC batches as fast as the node takes them,
/// timed until each is at the required depth (the head `confirmations` blocks past its block,
/// as Bursar counts it).
async fn anvil_ceiling(
    target: &Target,
    chain: &Chain,
    args: &BenchArgs,
    confirmations: u64,
) -> anyhow::Result<AnvilCeiling> {
    let setup = spinner("pre-signing transfers for the node's ceiling");
    let wallets: Vec<PrivateKeySigner> = (0..args.agents)
        .map(|_| PrivateKeySigner::random())
        .collect();
    let fees = chain.fees().await?;
    let fees = crate::chain::Fees {
        max_fee_per_gas: fees.max_fee_per_gas.saturating_mul(4),
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
    };
    // Each wallet gets exactly the USDC of its transfers and their gas at the fees signed below.
    let grants: Vec<Grant> = wallets
        .iter()
        .enumerate()
        .map(|(wallet, signer)| {
            let count = (0..args.payments)
                .filter(|i| (i % args.agents) as usize == wallet)
                .count() as u64;
            Grant {
                to: signer.address().into(),
                usdc: payments_of(args, wallet),
                eth_wei: U256::from(count * TRANSFER_GAS_BUDGET) * U256::from(fees.max_fee_per_gas),
            }
        })
        .collect();
    target.fund(chain, &grants, stall(args)).await?;
    let recipient = Address::from(alloy::primitives::Address::from(rand::random::<[u8; 20]>()));
    let gas = chain
        .estimate_usdc_transfer(wallets[0].address().into(), recipient, amount_of(0))
        .await?;
    ensure!(
        gas <= TRANSFER_GAS_BUDGET,
        "a USDC transfer on this chain needs {gas} gas, more than the bench budgets ({TRANSFER_GAS_BUDGET})"
    );
    let mut raws = Vec::with_capacity(args.payments as usize);
    let mut hashes = Vec::with_capacity(args.payments as usize);
    for index in 0..args.payments {
        let wallet = &wallets[(index % args.agents) as usize];
        let nonce = u64::from(index / args.agents);
        let transaction = chain.usdc_transfer(nonce, gas, fees, recipient, amount_of(index));
        let signature = wallet.sign_hash_sync(&transaction.signature_hash())?;
        let signed = transaction.into_signed(signature);
        hashes.push(*signed.hash());
        raws.push(TxEnvelope::from(signed).encoded_2718());
    }
    setup.finish_and_clear();

    let bar = counter("node ceiling", u64::from(args.payments));
    let head_before = chain.head().await?;
    let started = Instant::now();
    let mut sent_at = Vec::with_capacity(raws.len());
    for batch in raws.chunks(CEILING_BATCH) {
        let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let at = started.elapsed();
        for result in chain.broadcast_batch(&slices).await? {
            result.context("the node refused a pre-signed transfer")?;
        }
        sent_at.extend(std::iter::repeat_n(at, batch.len()));
    }
    // Watch blocks as they come: when each was first seen, and which transfers it holds.
    let wanted: HashMap<_, usize> = hashes.iter().enumerate().map(|(i, h)| (*h, i)).collect();
    let mut included_in: Vec<Option<u64>> = vec![None; hashes.len()];
    let mut seen_at: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut next_block = head_before + 1;
    let mut remaining = hashes.len();
    let mut last_needed = u64::MAX;
    let deadline = stall(args);
    let mut last_progress = Instant::now();
    loop {
        let head = chain.head().await?;
        while next_block <= head {
            seen_at.insert(next_block, started.elapsed());
            let block = chain
                .provider()
                .get_block_by_number(next_block.into())
                .await?
                .with_context(|| format!("block {next_block} vanished"))?;
            for hash in block.transactions.hashes() {
                if let Some(index) = wanted.get(&hash)
                    && included_in[*index].is_none()
                {
                    included_in[*index] = Some(next_block);
                    remaining -= 1;
                    bar.inc(1);
                    last_progress = Instant::now();
                }
            }
            if remaining == 0 && last_needed == u64::MAX {
                last_needed = next_block + confirmations;
            }
            next_block += 1;
        }
        if remaining == 0 && head >= last_needed {
            break;
        }
        ensure!(
            last_progress.elapsed() < deadline,
            "the node stopped including the pre-signed transfers ({remaining} left)"
        );
        tokio::time::sleep(HEAD_POLL).await;
    }
    bar.finish_and_clear();
    let mut waits: Vec<u64> = Vec::with_capacity(hashes.len());
    let mut last_confirmed = Duration::ZERO;
    for (index, block) in included_in.iter().enumerate() {
        let confirmed_block = block.unwrap_or(0) + confirmations;
        let confirmed = seen_at.get(&confirmed_block).copied().unwrap_or_default();
        last_confirmed = last_confirmed.max(confirmed);
        waits.push(confirmed.saturating_sub(sent_at[index]).as_millis() as u64);
    }
    waits.sort_unstable();
    Ok(AnvilCeiling {
        confirmed_per_second: hashes.len() as f64 / last_confirmed.as_secs_f64().max(0.001),
        p50_ms: percentile(&waits, 50.0),
        p99_ms: percentile(&waits, 99.0),
    })
}

/// The `p`th percentile of sorted values (nearest rank).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The process's peak resident set (service and load generator together), from Linux's
/// `/proc/self/status`.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn print_table(report: &Report) {
    let (i, a, b, s) = (
        &report.accept_idle,
        &report.accept,
        &report.backlog,
        &report.settlement,
    );
    let (c, r) = (&report.ceilings, &report.ratios);
    print_heading(report);
    print_phase(
        c,
        &TablePhase {
            title: "backlog: intents accepted with settlement stopped, then drained",
            accept: i,
            accept_share: r.accept_idle_of_sqlite_group_commit,
            confirmed: "confirmed/s from settlement's start",
            confirmed_per_second: b.confirmed_per_second,
            confirmed_share: r.settlement_of_anvil,
            timed: "start to confirmed",
            p50_ms: b.start_to_confirmed_p50_ms,
            p99_ms: b.start_to_confirmed_p99_ms,
            p50_gap_blocks: r.backlog_p50_gap_blocks,
        },
    );
    print_phase(
        c,
        &TablePhase {
            title: "live: intents accepted while settlement runs",
            accept: a,
            accept_share: r.accept_of_sqlite_group_commit,
            confirmed: "confirmed/s, first intent to last",
            confirmed_per_second: s.confirmed_per_second,
            confirmed_share: r.live_settlement_of_anvil,
            timed: "intent to confirmed",
            p50_ms: s.intent_to_confirmed_p50_ms,
            p99_ms: s.intent_to_confirmed_p99_ms,
            p50_gap_blocks: r.p50_gap_blocks,
        },
    );
    table_row(
        "SQLite single commits/s",
        String::new(),
        format!("{:.0}", c.sqlite_commits_per_second),
        String::new(),
    );
    table_row(
        "peak RSS (MB, service + load)",
        report
            .peak_rss_mb
            .map_or("n/a".into(), |mb| format!("{mb:.0}")),
        String::new(),
        String::new(),
    );
    print_verification(report);
}

/// The run's shape, and the table's column heads.
fn print_heading(report: &Report) {
    println!(
        "bursar bench: {} payments per phase ({} stored before), {} agent wallets, {} clients, {}s blocks, {} confirmations",
        report.payments,
        report.stored,
        report.agents,
        report.clients,
        report.block_time_secs,
        report.confirmations_required
    );
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "", "bursar", "ceiling", "ratio"
    );
}

/// What the chain shows of the run: transfers against intents, lost and doubled.
fn print_verification(report: &Report) {
    let (i, a, v) = (&report.accept_idle, &report.accept, &report.verification);
    println!();
    println!(
        "on chain: {} transfers for {} intents; lost {}, doubled {}; confirmed {} + {}, refused {}, retries {}",
        v.transfers_on_chain,
        2 * report.payments,
        v.lost,
        v.doubled,
        report.backlog.confirmed,
        report.settlement.confirmed,
        i.errors + a.errors,
        i.retries + a.retries
    );
}

/// One phase's rows of the table: its acceptance against SQLite's group commit, its settlement
/// against the node's.
struct TablePhase<'a> {
    title: &'a str,
    accept: &'a Accept,
    accept_share: f64,
    confirmed: &'a str,
    confirmed_per_second: f64,
    confirmed_share: f64,
    timed: &'a str,
    p50_ms: f64,
    p99_ms: f64,
    p50_gap_blocks: f64,
}

fn print_phase(c: &Ceilings, phase: &TablePhase<'_>) {
    let accept = phase.accept;
    println!("{}", phase.title);
    table_row(
        "  intents accepted/s (durable)",
        format!("{:.0}", accept.intents_per_second),
        format!("{:.0}", c.sqlite_group_commit_rows_per_second),
        share(phase.accept_share),
    );
    table_row(
        "  accept latency p50 / p99 (ms)",
        format!("{:.1} / {:.1}", accept.p50_ms, accept.p99_ms),
        String::new(),
        String::new(),
    );
    table_row(
        &format!("  {}", phase.confirmed),
        format!("{:.0}", phase.confirmed_per_second),
        format!("{:.0}", c.anvil_confirmed_per_second),
        share(phase.confirmed_share),
    );
    table_row(
        &format!("  {} p50 (ms)", phase.timed),
        format!("{:.0}", phase.p50_ms),
        format!("{:.0}", c.anvil_send_to_confirmed_p50_ms),
        format!("{:+.1} blk", phase.p50_gap_blocks),
    );
    table_row(
        &format!("  {} p99 (ms)", phase.timed),
        format!("{:.0}", phase.p99_ms),
        format!("{:.0}", c.anvil_send_to_confirmed_p99_ms),
        String::new(),
    );
}

fn table_row(name: &str, ours: String, ceiling: String, ratio: String) {
    println!("{name:<44} {ours:>14} {ceiling:>14} {ratio:>8}");
}

/// A ratio as a percentage: one decimal under 10% (acceptance against SQLite's raw ceiling is a
/// few percent), none above.
fn share(ratio: f64) -> String {
    let percent = ratio * 100.0;
    if percent < 10.0 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::TransferLog;
    use alloy::primitives::{B256, U256};

    fn address(byte: u8) -> Address {
        Address::from(alloy::primitives::Address::repeat_byte(byte))
    }

    fn outcome(id: u8, hash: B256, to: Address, amount: i64) -> ledger_bench::Outcome {
        ledger_bench::Outcome {
            id: format!("pay_{id}"),
            status: "confirmed".into(),
            to_address: to.to_string(),
            amount,
            tx_hash: Some(hash.to_string()),
            created_at: 0,
            confirmed_at: Some(1),
        }
    }

    fn log(hash: B256, from: Address, to: Address, value: u64) -> TransferLog {
        TransferLog {
            tx_hash: hash,
            log_index: 0,
            block_number: 1,
            block_hash: B256::ZERO,
            from,
            to,
            value: U256::from(value),
        }
    }

    #[test]
    fn verification_counts_lost_doubled_and_mismatched_transfers() {
        let (agent, other, to) = (address(1), address(2), address(3));
        let (a, b, c) = (
            B256::repeat_byte(0xa),
            B256::repeat_byte(0xb),
            B256::repeat_byte(0xc),
        );
        let outcomes = [outcome(1, a, to, 1_000), outcome(2, b, to, 2_000)];

        let exact = [log(a, agent, to, 1_000), log(b, agent, to, 2_000)];
        let v = verify(&outcomes, &exact, &[agent], 2);
        assert_eq!((v.transfers_on_chain, v.lost, v.doubled), (2, 0, 0));

        // A second transfer for the same intent, in another transaction: doubled.
        let twice = [exact[0].clone(), exact[1].clone(), log(c, agent, to, 1_000)];
        let v = verify(&outcomes, &twice, &[agent], 2);
        assert_eq!((v.lost, v.doubled), (0, 1));

        // The wrong amount matches nothing: the intent is lost and the transfer is extra.
        let wrong = [exact[0].clone(), log(b, agent, to, 2_001)];
        let v = verify(&outcomes, &wrong, &[agent], 2);
        assert_eq!((v.lost, v.doubled), (1, 1));

        // An intent accepted but never sent; transfers from other senders are not ours.
        let missing = [exact[0].clone(), log(b, other, to, 2_000)];
        let v = verify(&outcomes, &missing, &[agent], 2);
        assert_eq!((v.transfers_on_chain, v.lost, v.doubled), (1, 1, 0));
    }

    #[test]
    fn the_backlog_is_timed_from_settlement_start_not_from_each_intent() {
        let to = address(3);
        let mut outcomes = Vec::new();
        // Accepted long before settlement started at t = 10,000 ms; confirmed 1 s to 4 s after.
        for (id, confirmed_at) in [(1u8, 11_000), (2, 12_000), (3, 14_000)] {
            let mut o = outcome(id, B256::repeat_byte(id), to, 1_000);
            o.created_at = 0;
            o.confirmed_at = Some(confirmed_at);
            outcomes.push(o);
        }
        let mut unconfirmed = outcome(4, B256::repeat_byte(4), to, 1_000);
        unconfirmed.status = "failed".into();
        unconfirmed.confirmed_at = None;
        outcomes.push(unconfirmed);
        let backlog = backlog_figures(&outcomes, 3, 10_000);
        assert_eq!(backlog.confirmed, 3);
        // Three confirmations over the 4 s from settlement's start to the last one.
        assert_eq!(backlog.confirmed_per_second, 0.75);
        assert_eq!(backlog.start_to_confirmed_p50_ms, 2_000.0);
        assert_eq!(backlog.start_to_confirmed_p99_ms, 4_000.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
    }
}
