//! The payment binary: logs and traces, read settings, build, run until SIGTERM/SIGINT, flush
//! the last spans.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = infra::telemetry::init("payment").context("telemetry could not start")?;
    let settings = payment::PaymentSettings::from_env().context("invalid configuration")?;
    let app = payment::build(settings).await.context("payment could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    telemetry.shutdown();
    Ok(())
}
