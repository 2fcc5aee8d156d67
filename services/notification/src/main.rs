//! The notification binary: logs and traces, read settings, build, run until SIGTERM/SIGINT, flush
//! the last spans.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = infra::telemetry::init("notification").context("telemetry could not start")?;
    let settings = notification::NotificationSettings::from_env().context("invalid configuration")?;
    let app = notification::build(settings).await.context("notification could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    telemetry.shutdown();
    Ok(())
}
