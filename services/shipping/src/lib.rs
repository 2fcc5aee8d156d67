//! The shipping participant: books shipments with the carrier (HTTP, behind a circuit breaker
//! with retries), never inside a database transaction (intent, call, result). Scheduling a
//! shipment is the order saga's pivot: once it succeeded the order goes through, so nothing here is
//! undone; only a booking whose outcome the saga never learnt can be cancelled, when an operator
//! gives the saga up (`shipping.cancel`, by the booking's key at the carrier).
//! Destinations are served when they are in `SHIPPING_SUPPORTED_COUNTRIES` (ISO 3166-1 alpha-2
//! codes, or the default `*` for all of them) and not in `SHIPPING_UNSUPPORTED_COUNTRIES`
//! (default `AQ`); anything else, including codes that are not ISO 3166-1 (`ZZ`), is refused.
//!
//! Layout: [`domain`] (destination rules), [`carrier`] (the simulated carrier), [`handler`],
//! [`api`] (`GET /shipments/{order_id}`). [`build`] assembles the process.

pub mod api;
pub mod carrier;
pub mod domain;
pub mod handler;

use std::collections::BTreeSet;
use std::time::Duration;

use contracts::Command;
use contracts::topology::{Role, SHIPPING_QUEUE};
use infra::config::{ConfigError, Env, Settings};
pub use infra::platform::Application;
use infra::platform::{Platform, StartupError};
use infra::resilience::{Dependency, HttpDependency, Policy, ResilienceMetrics};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8083;

#[derive(Debug, Clone)]
pub struct ShippingSettings {
    pub common: Settings,
    /// The ISO 3166-1 codes shipping refuses: those outside `SHIPPING_SUPPORTED_COUNTRIES` plus
    /// those in `SHIPPING_UNSUPPORTED_COUNTRIES` (see [`domain::refused_countries`]).
    pub unsupported_countries: BTreeSet<String>,
    /// Base URL of the carrier (the simulated one: `outside`, port 8092).
    pub carrier_url: String,
    pub carrier_timeout: Duration,
    /// Circuit breaker and retries around the carrier.
    pub carrier_policy: Policy,
}

impl ShippingSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("shipping");
        let supported = domain::parse_supported(&env.string("SUPPORTED_COUNTRIES", "*"))
            .map_err(|m| env.invalid("SUPPORTED_COUNTRIES", &m))?;
        let unsupported = domain::parse_countries(&env.string("UNSUPPORTED_COUNTRIES", "AQ"))
            .map_err(|m| env.invalid("UNSUPPORTED_COUNTRIES", &m))?;
        let unsupported_countries = domain::refused_countries(&supported, &unsupported)
            .map_err(|m| env.invalid("UNSUPPORTED_COUNTRIES", &m))?;
        Ok(ShippingSettings {
            common: Settings::from_env("shipping", DEFAULT_PORT)?,
            unsupported_countries,
            carrier_url: env.string("CARRIER_URL", "http://127.0.0.1:8092"),
            carrier_timeout: env.millis("CARRIER_TIMEOUT_MS", 2_000)?,
            carrier_policy: Policy::from_env(&env)?,
        })
    }

    pub fn for_tests(common: Settings, carrier_url: &str) -> Self {
        ShippingSettings {
            common,
            unsupported_countries: ["AQ".to_string()].into(),
            carrier_url: carrier_url.to_owned(),
            carrier_timeout: Duration::from_secs(2),
            carrier_policy: Policy::default(),
        }
    }
}

/// Name of the carrier dependency in metrics, logs and `/health/ready`.
pub const CARRIER: &str = "shipping_carrier";

pub async fn build(settings: ShippingSettings) -> Result<Application, StartupError> {
    let platform = Platform::start(settings.common, Role::Shipping, &MIGRATOR).await?;
    let metrics = ResilienceMetrics::register(&platform.metrics.registry)
        .map_err(|e| StartupError::Invalid(format!("metrics: {e}")))?;
    let dependency = Dependency::new(CARRIER, settings.carrier_policy, metrics);
    let http = HttpDependency::new(&settings.carrier_url, settings.carrier_timeout, dependency.clone())
        .map_err(|e| StartupError::Invalid(format!("carrier client: {e}")))?;
    let handler =
        handler::ShippingHandler { carrier: carrier::Carrier { http }, unsupported: settings.unsupported_countries };
    let routes = api::router(platform.db.clone());
    Ok(Application::new(platform)
        .await?
        .routes(routes)
        .check(CARRIER, infra::http::dependency_check(dependency))
        .calling_participant::<Command, _>(SHIPPING_QUEUE, handler))
}
