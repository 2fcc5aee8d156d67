//! The notification binary: read settings, build, run until SIGTERM/SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infra::telemetry::init();
    let settings = notification::NotificationSettings::from_env().context("invalid configuration")?;
    let app = notification::build(settings).await.context("notification could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    Ok(())
}
