//! The inventory participant: holds stock for running sagas, gives it back on compensation, and
//! turns it into shipped goods on commit.
//!
//! Layout: [`domain`] (pure rules: demand per SKU, all-or-nothing check, demo catalog),
//! [`handler`] (one function per command, in the participant transaction), [`api`] (read-only
//! `GET /stock`, `GET /stock/{sku}`). [`build`] assembles the process.

pub mod api;
pub mod domain;
pub mod handler;

use contracts::Command;
use contracts::topology::{INVENTORY_QUEUE, Role};
use infra::config::{ConfigError, Env, Settings};
pub use infra::platform::Application;
use infra::platform::{Platform, StartupError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8081;

#[derive(Debug, Clone)]
pub struct InventorySettings {
    pub common: Settings,
    /// Seed [`domain::demo_catalog`] into an empty `stock` table at start.
    pub seed_demo_catalog: bool,
}

impl InventorySettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(InventorySettings {
            common: Settings::from_env("inventory", DEFAULT_PORT)?,
            seed_demo_catalog: Env::new("inventory").parse("SEED_DEMO_CATALOG", true)?,
        })
    }

    pub fn for_tests(common: Settings) -> Self {
        InventorySettings { common, seed_demo_catalog: true }
    }
}

pub async fn build(settings: InventorySettings) -> Result<Application, StartupError> {
    let platform = Platform::start(settings.common, Role::Inventory, &MIGRATOR).await?;
    if settings.seed_demo_catalog {
        seed(&platform.db).await.map_err(|source| StartupError::Init { what: "seed the demo catalog", source })?;
    }
    let routes = api::router(platform.db.clone());
    Ok(Application::new(platform)
        .await?
        .routes(routes)
        .participant::<Command, _>(INVENTORY_QUEUE, handler::InventoryHandler))
}

/// Insert the demo catalog if `stock` is empty (concurrent starts insert it once).
async fn seed(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let (skus, units): (Vec<String>, Vec<i64>) = domain::demo_catalog().into_iter().unzip();
    let inserted = sqlx::query(
        "INSERT INTO stock (sku, on_hand, received) SELECT s, u, u FROM UNNEST($1::text[], $2::int8[]) AS n(s, u)
         WHERE NOT EXISTS (SELECT 1 FROM stock) ON CONFLICT (sku) DO NOTHING",
    )
    .bind(&skus)
    .bind(&units)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted > 0 {
        tracing::info!(skus = inserted, "seeded the demo catalog");
    }
    Ok(())
}
