//! The payment binary: read settings, build, run until SIGTERM/SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infra::telemetry::init();
    let settings = payment::PaymentSettings::from_env().context("invalid configuration")?;
    let app = payment::build(settings).await.context("payment could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    Ok(())
}
