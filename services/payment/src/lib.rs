//! The payment participant: authorizes order totals through the payment gateway (HTTP, behind a
//! circuit breaker with retries), declines what is over the limit, voids on compensation, captures
//! after the pivot. The gateway is never called inside a database transaction: the intent commits
//! first, the call follows, the result commits after (see `infra::participant`).
//!
//! Layout: [`domain`] (decline rules and the payment's state machine), [`gateway`] (the simulated
//! gateway, keys per order), [`handler`] (the commands: intent, call, result), [`api`]
//! (`GET /payments/{order_id}`). [`build`] assembles the process.

pub mod api;
pub mod domain;
pub mod gateway;
pub mod handler;

use std::time::Duration;

use contracts::Command;
use contracts::topology::{PAYMENT_QUEUE, Role};
use infra::config::{ConfigError, Env, Settings};
pub use infra::platform::Application;
use infra::platform::{Platform, StartupError};
use infra::resilience::{Dependency, HttpDependency, Policy, ResilienceMetrics};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8082;

#[derive(Debug, Clone)]
pub struct PaymentSettings {
    pub common: Settings,
    /// Authorizations above this are declined (`limit_exceeded`). Default 1,000,000 = 10,000.00.
    pub limit_cents: i64,
    /// Base URL of the payment gateway (the simulated one: `outside`, port 8091).
    pub gateway_url: String,
    /// Timeout of one gateway call.
    pub gateway_timeout: Duration,
    /// Circuit breaker and retries around the gateway.
    pub gateway_policy: Policy,
}

impl PaymentSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("payment");
        Ok(PaymentSettings {
            common: Settings::from_env("payment", DEFAULT_PORT)?,
            limit_cents: env.at_least("LIMIT_CENTS", 1_000_000, 0)?,
            gateway_url: env.string("GATEWAY_URL", "http://127.0.0.1:8091"),
            gateway_timeout: env.millis("GATEWAY_TIMEOUT_MS", 2_000)?,
            gateway_policy: Policy::from_env(&env)?,
        })
    }

    pub fn for_tests(common: Settings, gateway_url: &str) -> Self {
        PaymentSettings {
            common,
            limit_cents: 1_000_000,
            gateway_url: gateway_url.to_owned(),
            gateway_timeout: Duration::from_secs(2),
            gateway_policy: Policy::default(),
        }
    }
}

/// Name of the gateway dependency in metrics, logs and `/health/ready`.
pub const GATEWAY: &str = "payment_gateway";

pub async fn build(settings: PaymentSettings) -> Result<Application, StartupError> {
    let platform = Platform::start(settings.common, Role::Payment, &MIGRATOR).await?;
    let metrics = ResilienceMetrics::register(&platform.metrics.registry)
        .map_err(|e| StartupError::Invalid(format!("metrics: {e}")))?;
    let dependency = Dependency::new(GATEWAY, settings.gateway_policy, metrics);
    let http = HttpDependency::new(&settings.gateway_url, settings.gateway_timeout, dependency.clone())
        .map_err(|e| StartupError::Invalid(format!("gateway client: {e}")))?;
    let handler = handler::PaymentHandler { gateway: gateway::Gateway { http }, limit_cents: settings.limit_cents };
    let routes = api::router(platform.db.clone());
    Ok(Application::new(platform)
        .await?
        .routes(routes)
        .check(GATEWAY, infra::http::dependency_check(dependency))
        .calling_participant::<Command, _>(PAYMENT_QUEUE, handler))
}
