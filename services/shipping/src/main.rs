//! The shipping binary: logs and traces, read settings, build, run until SIGTERM/SIGINT, flush
//! the last spans.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = infra::telemetry::init("shipping").context("telemetry could not start")?;
    let settings = shipping::ShippingSettings::from_env().context("invalid configuration")?;
    let app = shipping::build(settings).await.context("shipping could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    telemetry.shutdown();
    Ok(())
}
