//! The shipping participant: books shipments with a (simulated) carrier. Scheduling a shipment is
//! the order saga's pivot: once it succeeded the order goes through, so nothing here is undone.
//! Destinations in `SHIPPING_UNSUPPORTED_COUNTRIES` (default `AQ`) are refused.
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
use contracts::topology::SHIPPING_QUEUE;
use infra::config::{ConfigError, Env, Settings};
use infra::platform::{App, Platform, StartupError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8083;

#[derive(Debug, Clone)]
pub struct ShippingSettings {
    pub common: Settings,
    pub unsupported_countries: BTreeSet<String>,
    pub carrier_latency: Duration,
    pub carrier_failure_rate: f64,
}

impl ShippingSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("shipping");
        let unsupported_countries = domain::parse_countries(&env.string("UNSUPPORTED_COUNTRIES", "AQ"))
            .map_err(|m| env.invalid("UNSUPPORTED_COUNTRIES", &m))?;
        let carrier_failure_rate: f64 = env.parse("CARRIER_FAILURE_RATE", 0.0)?;
        if !(0.0..=1.0).contains(&carrier_failure_rate) {
            return Err(env.invalid("CARRIER_FAILURE_RATE", "must be between 0.0 and 1.0"));
        }
        Ok(ShippingSettings {
            common: Settings::from_env("shipping", DEFAULT_PORT)?,
            unsupported_countries,
            carrier_latency: Duration::from_millis(env.parse("CARRIER_LATENCY_MS", 0)?),
            carrier_failure_rate,
        })
    }

    pub fn for_tests(common: Settings) -> Self {
        ShippingSettings {
            common,
            unsupported_countries: ["AQ".to_string()].into(),
            carrier_latency: Duration::ZERO,
            carrier_failure_rate: 0.0,
        }
    }
}

pub async fn build(settings: ShippingSettings) -> Result<App, StartupError> {
    let platform = Platform::start(settings.common, &MIGRATOR).await?;
    let handler = handler::ShippingHandler {
        carrier: carrier::Carrier { latency: settings.carrier_latency, failure_rate: settings.carrier_failure_rate },
        unsupported: settings.unsupported_countries,
    };
    let routes = api::router(platform.db.clone());
    Ok(App::new(platform).await?.routes(routes).participant::<Command, _>(SHIPPING_QUEUE, handler))
}
