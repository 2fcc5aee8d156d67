//! The payment participant: authorizes order totals through a (simulated) payment gateway,
//! declines what is over the limit, voids on compensation, captures after the pivot.
//!
//! Layout: [`domain`] (decline rules), [`gateway`] (the simulated gateway), [`handler`] (one
//! function per command), [`api`] (`GET /payments/{order_id}`). [`build`] assembles the process.

pub mod api;
pub mod domain;
pub mod gateway;
pub mod handler;

use std::time::Duration;

use contracts::Command;
use contracts::topology::PAYMENT_QUEUE;
use infra::config::{ConfigError, Env, Settings};
use infra::platform::{App, Platform, StartupError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8082;

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    pub common: Settings,
    /// Authorizations above this are declined (`limit_exceeded`). Default 1,000,000 = 10,000.00.
    pub limit_cents: i64,
    pub gateway_latency: Duration,
    pub gateway_failure_rate: f64,
}

impl PaymentSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("payment");
        let gateway_failure_rate: f64 = env.parse("GATEWAY_FAILURE_RATE", 0.0)?;
        if !(0.0..=1.0).contains(&gateway_failure_rate) {
            return Err(env.invalid("GATEWAY_FAILURE_RATE", "must be between 0.0 and 1.0"));
        }
        Ok(PaymentSettings {
            common: Settings::from_env("payment", DEFAULT_PORT)?,
            limit_cents: env.at_least("LIMIT_CENTS", 1_000_000, 0)?,
            gateway_latency: Duration::from_millis(env.parse("GATEWAY_LATENCY_MS", 0)?),
            gateway_failure_rate,
        })
    }

    pub fn for_tests(common: Settings) -> Self {
        PaymentSettings { common, limit_cents: 1_000_000, gateway_latency: Duration::ZERO, gateway_failure_rate: 0.0 }
    }
}

pub async fn build(settings: PaymentSettings) -> Result<App, StartupError> {
    let platform = Platform::start(settings.common, &MIGRATOR).await?;
    let handler = handler::PaymentHandler {
        gateway: gateway::Gateway { latency: settings.gateway_latency, failure_rate: settings.gateway_failure_rate },
        limit_cents: settings.limit_cents,
    };
    let routes = api::router(platform.db.clone());
    Ok(App::new(platform).await?.routes(routes).participant::<Command, _>(PAYMENT_QUEUE, handler))
}
