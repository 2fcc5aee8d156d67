//! The orchestrator binary: logs and traces, read settings, build, run until SIGTERM/SIGINT, flush
//! the last spans.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = infra::telemetry::init("orchestrator").context("telemetry could not start")?;
    let settings = orchestrator::settings::OrchestratorSettings::from_env().context("invalid configuration")?;
    let app = orchestrator::build(settings).await.context("orchestrator could not start")?;
    app.run(infra::shutdown::on_signal()).await.context("HTTP server failed")?;
    telemetry.shutdown();
    Ok(())
}
