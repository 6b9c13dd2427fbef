//! The `bursar` binary: parse the command line, start telemetry, hand over to the CLI.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "bursar=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    bursar::cli::run(bursar::cli::Cli::parse()).await
}
