//! The simulated outside systems binary: the payment gateway on `OUTSIDE_GATEWAY_ADDR` (default
//! 127.0.0.1:8091) and the carrier on `OUTSIDE_CARRIER_ADDR` (default 127.0.0.1:8092).

use std::net::SocketAddr;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = infra::telemetry::init("outside").context("telemetry could not start")?;
    let env = infra::config::Env::new("outside");
    let gateway_addr: SocketAddr =
        env.parse("GATEWAY_ADDR", SocketAddr::from(([127, 0, 0, 1], outside::DEFAULT_GATEWAY_PORT)))?;
    let carrier_addr: SocketAddr =
        env.parse("CARRIER_ADDR", SocketAddr::from(([127, 0, 0, 1], outside::DEFAULT_CARRIER_PORT)))?;
    let gateway = outside::Server::bind("gateway", gateway_addr).await.context("bind the payment gateway")?;
    let carrier = outside::Server::bind("carrier", carrier_addr).await.context("bind the carrier")?;
    tracing::info!(gateway = %gateway.local_addr(), carrier = %carrier.local_addr(), "simulated outside systems listening");
    let token = infra::shutdown::on_signal();
    let (a, b) = tokio::join!(gateway.run(token.clone()), carrier.run(token));
    a.context("gateway")?;
    b.context("carrier")?;
    telemetry.shutdown();
    Ok(())
}
