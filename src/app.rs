//! The composition root: builds the ledger, chain, custody and the payments service from a
//! `Config`, then runs the HTTP server and the settlement worker until shutdown. Nothing else.

use crate::api::{self, AppState};
use crate::chain::Chain;
use crate::config::Config;
use crate::custody::{Custody, MasterKey};
use crate::ledger::Ledger;
use crate::payments::{Clock, Payments, Settings, SystemClock};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const GENESIS_META_KEY: &str = "chain_genesis_hash";

#[derive(Debug, thiserror::Error)]
#[error(
    "the database {database} was created for another chain (genesis {stored}); the node's genesis is {actual}"
)]
pub struct ChainMismatch {
    pub database: String,
    pub stored: String,
    pub actual: String,
}

/// Builds the payments service: opens and migrates the database, connects to the node (which
/// must report the configured chain id, and the same genesis block the database was created
/// on), loads the master key and makes sure the treasury wallet exists.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Payments> {
    let rpc_url = config
        .rpc_url
        .as_deref()
        .context("BURSAR_RPC_URL is required (or run `bursar dev`)")?;
    let usdc = config
        .usdc_address
        .context("BURSAR_USDC_ADDRESS is required for a chain other than Base (8453)")?;
    let master_key_file = config
        .master_key_file
        .as_deref()
        .context("BURSAR_MASTER_KEY_FILE is required")?;
    let master = MasterKey::load(master_key_file)?;
    let ledger = Ledger::open(&config.database_url)
        .await
        .with_context(|| format!("opening {}", config.database_url))?;
    let chain = Chain::connect(rpc_url, config.chain_id, usdc, config.rpc_timeout_ms)?;
    chain
        .check_chain_id()
        .await
        .context("checking the RPC node's chain id")?;
    check_genesis(&ledger, &chain, &config.database_url).await?;
    let custody = Arc::new(Custody::new(master, config.chain_id));
    let payments = Payments::new(
        ledger,
        custody,
        chain,
        clock,
        config.admin_token.clone(),
        Settings {
            confirmations_required: config.confirmations_required,
            approval_timeout_ms: config.approval_timeout_secs.saturating_mul(1000) as i64,
            hold_timeout_ms: config.hold_timeout_secs.saturating_mul(1000) as i64,
            gas_float_min_wei: config.gas_float_min_wei,
            gas_float_topup_wei: config.gas_float_topup_wei,
            stuck_after_blocks: config.stuck_after_blocks,
            max_fee_per_gas_wei: u128::from(config.max_fee_per_gas_gwei) * 1_000_000_000,
            unsendable_after_blocks: config.unsendable_after_blocks,
            write_rate_per_second: config.write_rate_per_second,
            write_rate_burst: config.write_rate_burst,
            finality_watch_blocks: config.finality_watch_blocks,
            lane_window: config.lane_window,
            x402_allow_private_targets: config.x402_allow_private_targets,
        },
    );
    payments.ensure_treasury().await?;
    Ok(payments)
}

/// Refuses a database created against another chain (a new devnet, a different network):
/// its nonces and transactions would be meaningless there.
pub async fn check_genesis(ledger: &Ledger, chain: &Chain, database: &str) -> anyhow::Result<()> {
    let actual = chain
        .block_hash(0)
        .await
        .context("reading the genesis block")?
        .to_string();
    match ledger.meta(GENESIS_META_KEY).await? {
        None => ledger.set_meta(GENESIS_META_KEY, &actual).await?,
        Some(stored) if stored != actual => {
            bail!(ChainMismatch {
                database: database.to_string(),
                stored,
                actual
            })
        }
        Some(_) => {}
    }
    Ok(())
}

/// The process-wide Prometheus recorder (installed once; every app in the process shares it).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a host process); then ours stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A running server and worker.
pub struct Running {
    pub address: SocketAddr,
    pub payments: Payments,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    worker: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, stops the worker and closes the
    /// database.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await??;
        if let Some(worker) = self.worker {
            worker.await?;
        }
        self.payments.close().await;
        Ok(())
    }

    /// Resolves when the server stops on its own (it should not).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// Starts the HTTP server on `listen` (port 0 picks a free port) and, if `run_worker`, the
/// settlement worker polling every `poll_interval`.
pub async fn start(
    payments: Payments,
    listen: SocketAddr,
    poll_interval: Duration,
    run_worker: bool,
    mcp_allowed_hosts: Vec<String>,
) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} (is another Bursar running?); choose another address \
                 with BURSAR_LISTEN (or `bursar dev --listen 127.0.0.1:8081`)"
            )
        })?;
    let address = listener.local_addr()?;
    let (shutdown, receiver) = watch::channel(false);
    let settings = payments.settings();
    // `/mcp` checks `Host` against this list (DNS rebinding); by default the address served
    // and the loopback names, on the port served.
    let mcp_allowed_hosts = if mcp_allowed_hosts.is_empty() {
        let port = address.port();
        let ip = address.ip().to_string();
        let mut hosts = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        if !address.ip().is_unspecified() {
            hosts.push(if address.is_ipv6() {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            });
        }
        hosts
    } else {
        mcp_allowed_hosts
    };
    let state = AppState {
        mcp_allowed_hosts,
        write_limiter: api::WriteLimiter::new(
            settings.write_rate_per_second,
            settings.write_rate_burst,
        ),
        reader: payments.reader(),
        payments: payments.clone(),
        metrics: metrics_handle(),
        payer: crate::x402::Payer::new(payments.clone(), settings.x402_allow_private_targets),
    };
    let router = api::router(state);
    let mut server_stop = receiver.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = server_stop.changed().await;
            })
            .await
    });
    let worker = run_worker.then(|| {
        let settlement = payments.clone();
        let background = payments.clone();
        let settlement_stop = receiver.clone();
        let background_stop = receiver.clone();
        let deliverer = payments.deliverer();
        tokio::spawn(async move {
            // Independent loops: a slow webhook receiver or a long reconciliation scan never
            // delays settlement.
            tokio::join!(
                settlement.run_settlement(poll_interval, settlement_stop),
                background.run_background(background_stop),
                deliverer.run(poll_interval, receiver),
            );
        })
    });
    tracing::info!(%address, "listening");
    Ok(Running {
        address,
        payments,
        shutdown,
        server,
        worker,
    })
}

/// `bursar serve`: build from the configuration and run until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let payments = build(&config, Arc::new(SystemClock)).await?;
    let running = start(
        payments,
        config.listen,
        Duration::from_millis(config.poll_interval_ms),
        true,
        config.mcp_allowed_hosts.clone(),
    )
    .await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
