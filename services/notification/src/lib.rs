//! The notification service: listens to order events (`notification.events`, bound `order.*`)
//! and records a confirmation, a cancellation with its reason, or a failure notice for operators.
//!
//! Layout: [`domain`] (event -> notice), [`handler`], [`api`] (`GET /notifications?order_id=`).
//! [`build`] assembles the process.

pub mod api;
pub mod domain;
pub mod handler;

use contracts::Event;
use contracts::topology::{NOTIFICATION_QUEUE, Role};
use infra::config::{ConfigError, Settings};
pub use infra::platform::Application;
use infra::platform::{Platform, StartupError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8084;

#[derive(Debug, Clone)]
pub struct NotificationSettings {
    pub common: Settings,
}

impl NotificationSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(NotificationSettings { common: Settings::from_env("notification", DEFAULT_PORT)? })
    }

    pub fn for_tests(common: Settings) -> Self {
        NotificationSettings { common }
    }
}

pub async fn build(settings: NotificationSettings) -> Result<Application, StartupError> {
    let platform = Platform::start(settings.common, Role::Notification, &MIGRATOR).await?;
    let routes = api::router(platform.db.clone());
    Ok(Application::new(platform)
        .await?
        .routes(routes)
        .participant::<Event, _>(NOTIFICATION_QUEUE, handler::NotificationHandler))
}
