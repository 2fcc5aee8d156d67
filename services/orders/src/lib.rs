//! The read side (CQRS): consumes the orders' history (`orders.history`, bound `history.#` on
//! `saga.events`) and serves read models built only from it: order summaries and daily sales. It
//! publishes nothing and reads no other service's tables; what it misses it reads from the
//! orchestrator's feed (`GET /events`), which is also how it is rebuilt from zero.
//!
//! Layout: [`event`] (a history event, decoded and validated), [`projection`] (applying one event
//! in one transaction: position dedupe, per-order version order), [`handler`] (the live consumer's
//! outcomes), [`feed`] (the orchestrator's feed), [`projector`] (lag poller, catch-up, rebuild),
//! [`api`] (the read models over HTTP, the operator's rebuild; operator tokens are
//! [`infra::operators`]), [`metrics`]. [`OrdersSettings`] are read once at start; [`build`] assembles the process and
//! [`rebuild`] is the `orders rebuild` command.

pub mod api;
pub mod event;
pub mod feed;
pub mod handler;
pub mod metrics;
pub mod projection;
pub mod projector;

use std::sync::Arc;
use std::time::Duration;

use contracts::topology::{ORDERS_QUEUE, Role};
use infra::config::{ConfigError, Env, Settings};
pub use infra::platform::Application;
use infra::platform::{Platform, StartupError};
use tokio_util::sync::CancellationToken;

use crate::feed::Feed;
use crate::metrics::OrdersMetrics;
use crate::projector::{Projector, ReplayReport};
use infra::operators::Operators;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const DEFAULT_PORT: u16 = 8085;
pub const DEFAULT_ORCHESTRATOR_URL: &str = "http://127.0.0.1:8080";

/// The read side's settings: the common ones (`ORDERS_` prefix, database `saga_orders`) and:
#[derive(Clone)]
pub struct OrdersSettings {
    pub common: Settings,
    /// `ORDERS_ORCHESTRATOR_URL`: where the feed is (`GET /events`).
    pub orchestrator_url: String,
    /// `ORDERS_FEED_TOKEN`: an operator token of the orchestrator (`ORCHESTRATOR_ADMIN_TOKENS`);
    /// without it the feed answers 401 and the service is not ready.
    pub feed_token: Option<String>,
    /// `ORDERS_ADMIN_TOKENS`: who may rebuild (`name=token,...`); none: the endpoint answers 401.
    pub admin_tokens: Operators,
    /// `ORDERS_LAG_THRESHOLD`: readiness fails above this many events behind the head (default 1000).
    pub lag_threshold: i64,
    /// `ORDERS_FEED_POLL_INTERVAL_MS`: how often the head is read and the lag measured (default 2000).
    pub poll_interval: Duration,
    /// `ORDERS_CATCH_UP_AFTER_MS`: how long the watermark may stand below the head before the
    /// missing events are read from the feed (default 10000).
    pub catch_up_after: Duration,
    /// `ORDERS_FEED_PAGE_SIZE`: events per feed request, 1-1000 (default 500).
    pub feed_page_size: u32,
    /// `ORDERS_FEED_TIMEOUT_MS`: one feed request's timeout (default 10000).
    pub feed_timeout: Duration,
}

impl std::fmt::Debug for OrdersSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrdersSettings")
            .field("common", &self.common)
            .field("orchestrator_url", &self.orchestrator_url)
            .field("feed_token", &self.feed_token.as_ref().map(|_| "***"))
            .field("admin_tokens", &self.admin_tokens)
            .field("lag_threshold", &self.lag_threshold)
            .finish_non_exhaustive()
    }
}

impl OrdersSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("orders");
        let orchestrator_url = env.string("ORCHESTRATOR_URL", DEFAULT_ORCHESTRATOR_URL);
        if !(orchestrator_url.starts_with("http://") || orchestrator_url.starts_with("https://")) {
            return Err(env.invalid("ORCHESTRATOR_URL", "must start with http:// or https://"));
        }
        let feed_token = Some(env.string("FEED_TOKEN", "")).filter(|t| !t.trim().is_empty());
        let admin_tokens = Operators::from_env(&env)?;
        Ok(OrdersSettings {
            common: Settings::from_env("orders", DEFAULT_PORT)?,
            orchestrator_url,
            feed_token,
            admin_tokens,
            lag_threshold: env.at_least("LAG_THRESHOLD", 1000, 0)?,
            poll_interval: env.millis("FEED_POLL_INTERVAL_MS", 2_000)?,
            catch_up_after: env.millis("CATCH_UP_AFTER_MS", 10_000)?,
            feed_page_size: env.between("FEED_PAGE_SIZE", 500, 1, 1000)?,
            feed_timeout: env.millis("FEED_TIMEOUT_MS", 10_000)?,
        })
    }

    /// For tests: the given common settings and feed, quick polling.
    pub fn for_tests(common: Settings, orchestrator_url: &str, feed_token: Option<&str>, admin: &str) -> Self {
        OrdersSettings {
            common,
            orchestrator_url: orchestrator_url.to_owned(),
            feed_token: feed_token.map(str::to_owned),
            admin_tokens: Operators::parse(admin, "ORDERS_ADMIN_TOKENS").unwrap_or_default(),
            lag_threshold: 1000,
            poll_interval: Duration::from_millis(200),
            catch_up_after: Duration::from_secs(2),
            feed_page_size: 50,
            feed_timeout: Duration::from_secs(5),
        }
    }

    fn feed(&self) -> Result<Feed, StartupError> {
        Feed::new(&self.orchestrator_url, self.feed_token.clone(), self.feed_page_size, self.feed_timeout)
            .map_err(|e| StartupError::Invalid(format!("cannot build the feed's HTTP client: {e}")))
    }
}

/// The process: the live consumer, the lag poller, the rebuild job and the HTTP API.
pub async fn build(settings: OrdersSettings) -> Result<Application, StartupError> {
    let feed = settings.feed()?;
    let platform = Platform::start(settings.common.clone(), Role::Orders, &MIGRATOR).await?;
    let metrics = OrdersMetrics::new(&platform.metrics.registry)
        .map_err(|e| StartupError::Invalid(format!("cannot register the metrics: {e}")))?;
    let projector = Projector::new(platform.db.clone(), feed, metrics.clone(), settings.lag_threshold);
    let handler = handler::HistoryHandler { pool: platform.db.clone(), metrics };
    let routes = api::router(projector.clone(), settings.admin_tokens.clone());
    let ready = projector.clone();
    let (poller, rebuilder) = (projector.clone(), projector);
    let (interval, catch_up_after) = (settings.poll_interval, settings.catch_up_after);
    Ok(Application::new(platform)
        .await?
        .routes(routes)
        .check(
            "projection",
            Arc::new(move || {
                let r = ready.readiness();
                Box::pin(async move { r })
            }),
        )
        .consume(ORDERS_QUEUE, handler)
        .job("lag_poller", move |token| poller.clone().poll_job(interval, catch_up_after, token))
        .job("rebuild", move |token| rebuilder.clone().rebuild_job(token)))
}

/// The `orders rebuild` command: migrate, drop the projections, replay from position 0 through
/// the feed, and return what it did. No broker needed; a running service's consumer may go on.
pub async fn rebuild(settings: OrdersSettings, token: CancellationToken) -> anyhow::Result<ReplayReport> {
    use anyhow::Context;
    let feed = settings.feed()?;
    let url = infra::config::redact_url(&settings.common.database_url);
    let pool = infra::db::connect(&settings.common.database_url, 2)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {url}"))?;
    infra::db::migrate(&pool, &MIGRATOR).await.context("cannot apply migrations")?;
    let metrics = OrdersMetrics::new(&prometheus::Registry::new())?;
    let projector = Projector::new(pool.clone(), feed, metrics, settings.lag_threshold);
    let report = projector.rebuild(&token).await.context("rebuild failed")?;
    pool.close().await;
    Ok(report)
}
