//! The orders binary (the read side): `orders` serves until SIGTERM/SIGINT; `orders rebuild` drops
//! the projections, replays the history from position 0 through the orchestrator's feed, and exits.

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "orders", about = "The read side: order summaries and daily sales from the orders' history")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the read models and consume the history (the default).
    Serve,
    /// Drop the projections and replay from position 0 through the feed, then exit.
    Rebuild,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = infra::telemetry::init("orders").context("telemetry could not start")?;
    let settings = orders::OrdersSettings::from_env().context("invalid configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = orders::build(settings).await.context("orders could not start")?;
            app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
        }
        Command::Rebuild => {
            let report = orders::rebuild(settings, infra::shutdown::on_signal()).await?;
            println!(
                "rebuilt: {} events applied, {} found applied already, up to position {} (head {})",
                report.applied, report.duplicates, report.position, report.head
            );
        }
    }
    telemetry.shutdown();
    Ok(())
}
