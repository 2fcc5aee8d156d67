//! The inventory binary: logs and traces, read settings, build, run until SIGTERM/SIGINT, flush
//! the last spans.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = infra::telemetry::init("inventory").context("telemetry could not start")?;
    let settings = inventory::InventorySettings::from_env().context("invalid configuration")?;
    let app = inventory::build(settings).await.context("inventory could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    telemetry.shutdown();
    Ok(())
}
