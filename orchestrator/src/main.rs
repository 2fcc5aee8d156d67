//! The orchestrator binary: read settings, build, run until SIGTERM/SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    infra::telemetry::init();
    let settings = orchestrator::settings::OrchestratorSettings::from_env().context("invalid configuration")?;
    let app = orchestrator::build(settings).await.context("orchestrator could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    Ok(())
}
