//! The `bursar` binary: parse the command line, start telemetry, hand over to the CLI.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A terminal gets readable, coloured lines; anything else (a file, journald, a collector)
    // gets one JSON object per line, with no ANSI escapes.
    let cli = bursar::cli::Cli::parse();
    // `bench` prints a report; a line per payment would bury it (and slow what it measures).
    let default = match cli.command {
        bursar::cli::Command::Bench(_) => "warn",
        _ => "bursar=info,warn",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder.init();
    } else {
        builder.json().with_ansi(false).flatten_event(true).init();
    }
    bursar::cli::run(cli).await
}
