//! The shipping binary: read settings, build, run until SIGTERM/SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infra::telemetry::init();
    let settings = shipping::ShippingSettings::from_env().context("invalid configuration")?;
    let app = shipping::build(settings).await.context("shipping could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    Ok(())
}
