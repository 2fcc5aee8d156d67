//! The inventory binary: read settings, build, run until SIGTERM/SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infra::telemetry::init();
    let settings = inventory::InventorySettings::from_env().context("invalid configuration")?;
    let app = inventory::build(settings).await.context("inventory could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    Ok(())
}
