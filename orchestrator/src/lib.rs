//! The orchestrator: drives order sagas over RabbitMQ and answers where each one is.
//!
//! Layout:
//! - [`kernel`]: the pure saga state machine (`transition(state, input) -> (state, effects)`).
//! - [`sagas`]: saga definitions, one file per saga, each a table of steps.
//! - [`engine`]: the kernel wrapped with IO: load the saga (snapshot + events folded), transition,
//!   append the event with the saga's columns and the outbox in one transaction; the reply
//!   consumer.
//! - [`history`]: the event store: streams, folds and snapshots, upcasting, the sequencer that
//!   numbers and publishes committed events, the global feed and time travel.
//! - [`scanner`]: step deadlines: re-send, compensate or fail.
//! - [`store`]: the `sagas` rows (snapshots and query columns) and appends to `saga_events`.
//! - [`api`] and [`validate`]: the HTTP API and its input rules; [`openapi`]: what its OpenAPI
//!   document (`GET /openapi.json`) says beyond the derived shapes.
//! - [`admin`]: the operator API (bearer token): dead letters and saga verbs; [`audit`]: its trail.
//! - [`auditor`]: the consistency auditor (do the participants and outside systems agree?).
//! - [`settings`], [`metrics`]: configuration and the saga metric families.
//!
//! [`build`] assembles the process; `main.rs` only reads settings and runs it.

pub mod admin;
pub mod api;
pub mod audit;
pub mod auditor;
pub mod engine;
pub mod history;
pub mod kernel;
pub mod metrics;
pub mod openapi;
pub mod sagas;
pub mod scanner;
pub mod settings;
pub mod store;
pub mod validate;

use std::sync::Arc;

use contracts::topology::{ORCHESTRATOR_QUEUE, Role};
pub use infra::platform::Application;
use infra::platform::{Platform, StartupError};

use crate::engine::{Engine, ReplyHandler};
use crate::metrics::SagaMetrics;
use crate::settings::OrchestratorSettings;

/// How often the gauges read from the database and the broker are refreshed.
const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connect, migrate, declare its part of the topology, and assemble the HTTP API, the reply consumer and the
/// timeout scanner. Run the result with [`Application::run`].
pub async fn build(settings: OrchestratorSettings) -> Result<Application, StartupError> {
    for def in sagas::order::OrderSaga::VERSIONS {
        kernel::validate(kernel::SagaDefinition::steps(&def))
            .map_err(|e| StartupError::Invalid(format!("order saga definition: {e}")))?;
    }
    let platform = Platform::start(settings.common.clone(), Role::Orchestrator, &MIGRATOR).await?;
    let metrics = SagaMetrics::register(&platform.metrics.registry)
        .map_err(|e| StartupError::Invalid(format!("metrics: {e}")))?;
    metrics.init(&sagas::order::OrderSaga::LATEST);
    let sequencer_waker = history::sequencer::SequencerWaker::default();
    let engine = Arc::new(Engine::new(
        platform.db.clone(),
        Arc::new(settings),
        platform.waker.clone(),
        metrics,
        platform.metrics.clone(),
        sequencer_waker.clone(),
    ));
    let sequencer = history::sequencer::Sequencer {
        pool: platform.db.clone(),
        waker: sequencer_waker,
        outbox: platform.waker.clone(),
        metrics: engine.metrics.clone(),
        interval: engine.settings.sequence_interval,
    };
    let scanner_engine = engine.clone();
    let admin = admin::Admin {
        pool: platform.db.clone(),
        broker: platform.broker.clone(),
        publisher: platform.publisher.clone(),
        topology: platform.topology.clone(),
        operators: engine.settings.admin_operators.clone(),
        engine: engine.clone(),
        auditor: auditor::Auditor {
            pool: platform.db.clone(),
            sources: auditor::Sources {
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(30))
                    .build()
                    .map_err(|e| StartupError::Invalid(format!("audit HTTP client: {e}")))?,
                urls: engine.settings.audit.clone(),
            },
            metrics: engine.metrics.clone(),
        },
    };
    // Every queue of the platform, not only those this process declares: the depth of each
    // participant's `.retry` queue is read too (a passive declare needs no permission).
    let settings = &platform.settings;
    let sources = metrics::GaugeSources {
        pool: platform.db.clone(),
        broker: platform.broker.clone(),
        topology: contracts::topology::Topology::new(settings.queue_type, settings.delivery_limit),
    };
    let gauges = engine.metrics.clone();
    Ok(Application::new(platform)
        .await?
        .routes(api::router(engine.clone()))
        .routes(admin::router(admin))
        .consume(ORCHESTRATOR_QUEUE, ReplyHandler(engine))
        .job("timeout_scanner", move |token| scanner::run(scanner_engine.clone(), token))
        .job("history_sequencer", move |token| sequencer.clone().run(token))
        .job("saga_gauges", move |token| metrics::refresh(sources.clone(), gauges.clone(), GAUGE_INTERVAL, token)))
}
