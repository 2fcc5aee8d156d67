//! One process, wired: [`Platform`] holds the plumbing (database pool, broker, publisher, outbox
//! waker, metrics) and [`Application`] runs a process made of it: an HTTP server, consumers, the outbox
//! relay and any background jobs, until a shutdown signal. Every consumer, job and the relay runs
//! under the [`Supervisor`]: restarted with back-off if it panics or stops, shown in readiness.
//!
//! Shutdown order: the token stops intake (HTTP stops accepting, consumers cancel, jobs stop);
//! in-flight work drains under `shutdown_timeout`; then the relay publishes what that work
//! committed, and stops.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use contracts::topology::{Role, Topology};
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::consumer::{self, ConsumerConfig};
use crate::amqp::{Broker, DeliveryHandler, Publisher, TransportError, topology};
use crate::config::{Settings, redact_url};
use crate::http::{self, Check, Health};
use crate::metrics::Metrics;
use crate::openapi::OpenApiRouter;
use crate::outbox::{OutboxWaker, Relay};
use crate::supervisor::Supervisor;

/// Why a process could not start. Each names what to check.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Database {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] MigrateError),
    #[error("cannot reach RabbitMQ at {url}: {source}")]
    Broker {
        url: String,
        #[source]
        source: TransportError,
    },
    #[error("cannot {what}: {source}")]
    Init {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid setup: {0}")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The plumbing of one process.
#[derive(Clone)]
pub struct Platform {
    pub settings: Settings,
    pub db: PgPool,
    pub broker: Broker,
    pub publisher: Arc<Publisher>,
    pub waker: OutboxWaker,
    pub metrics: Metrics,
    /// The process's part of the broker topology ([`Topology::for_role`]): what it declared at
    /// start, and declares again when a consumer lost its channel.
    pub topology: Topology,
}

impl Platform {
    /// Connect to the database and apply migrations, connect to the broker and declare `role`'s
    /// part of the topology (all its broker user may declare). Fails with a clear error if either
    /// is unreachable.
    pub async fn start(settings: Settings, role: Role, migrator: &Migrator) -> Result<Self, StartupError> {
        if u32::from(settings.prefetch) > settings.db_pool_size {
            tracing::warn!(
                prefetch = settings.prefetch,
                db_pool_size = settings.db_pool_size,
                "PREFETCH is larger than DB_POOL_SIZE: deliveries beyond the pool wait for a connection \
                 (and take a delayed retry round after the pool's 5 s timeout); keep PREFETCH at or below \
                 DB_POOL_SIZE unless most of a handler's time is spent in outside calls"
            );
        }
        let db = crate::db::connect(&settings.database_url, settings.db_pool_size)
            .await
            .map_err(|source| StartupError::Database { url: redact_url(&settings.database_url), source })?;
        crate::db::migrate(&db, migrator).await?;
        let broker_error = |source| StartupError::Broker { url: redact_url(&settings.amqp_url), source };
        let broker =
            Broker::new(&settings.amqp_url, settings.amqp_pool_size, &settings.service).map_err(broker_error)?;
        let topology = Topology::new(settings.queue_type, settings.delivery_limit).for_role(role);
        topology::declare(&broker, &topology).await.map_err(broker_error)?;
        let publisher = Arc::new(Publisher::new(broker.clone()));
        let metrics = Metrics::new();
        metrics.build_info.with_label_values(&[settings.service.as_str(), env!("CARGO_PKG_VERSION")]).set(1);
        tracing::info!(service = %settings.service, role = role.name(), database = %redact_url(&settings.database_url),
                       broker = %redact_url(&settings.amqp_url), "connected; migrations applied; topology declared");
        Ok(Platform { settings, db, broker, publisher, waker: OutboxWaker::default(), metrics, topology })
    }

    pub fn relay(&self) -> Relay {
        Relay {
            pool: self.db.clone(),
            publisher: self.publisher.clone(),
            waker: self.waker.clone(),
            metrics: self.metrics.clone(),
            batch_size: self.settings.relay_batch_size,
            poll_interval: self.settings.relay_poll_interval,
        }
    }

    pub fn consumer_config(&self, queue: &str) -> ConsumerConfig {
        ConsumerConfig {
            queue: queue.to_owned(),
            prefetch: self.settings.prefetch,
            retry_delay: self.settings.retry_delay,
            max_retry_rounds: self.settings.max_retry_rounds,
            shutdown_timeout: self.settings.shutdown_timeout,
            notices: false,
            redeclare: Some(Arc::new(self.topology.clone())),
        }
    }
}

/// A background job: called again for every (re)start, with the token that stops it.
type Job = Box<dyn FnMut(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A runnable process: HTTP, consumers, background jobs and the outbox relay.
pub struct Application {
    pub platform: Platform,
    listener: TcpListener,
    router: OpenApiRouter,
    jobs: Vec<(String, Job)>,
    checks: Vec<(&'static str, Check)>,
}

impl Application {
    /// Bind the HTTP listener (port 0 picks a free port).
    pub async fn new(platform: Platform) -> Result<Self, StartupError> {
        let addr = platform.settings.http_addr;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Application { platform, listener, router: OpenApiRouter::new(), jobs: Vec::new(), checks: Vec::new() })
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.platform.settings.http_addr)
    }

    /// Add the process's own routes, each with its OpenAPI description (see [`crate::openapi`]).
    pub fn routes(mut self, router: OpenApiRouter) -> Self {
        self.router = self.router.merge(router);
        self
    }

    /// Add a readiness check shown under its name in `/health/ready`.
    pub fn check(mut self, name: &'static str, check: Check) -> Self {
        self.checks.push((name, check));
        self
    }

    /// Consume `queue` with `handler`.
    pub fn consume<H: DeliveryHandler>(self, queue: &str, handler: H) -> Self {
        let config = self.platform.consumer_config(queue);
        self.consume_with(config, handler)
    }

    fn consume_with<H: DeliveryHandler>(mut self, config: ConsumerConfig, handler: H) -> Self {
        let queue = config.queue.clone();
        let p = &self.platform;
        let (broker, publisher, metrics) = (p.broker.clone(), p.publisher.clone(), p.metrics.clone());
        let handler = Arc::new(handler);
        self.jobs.push((
            format!("consumer:{queue}"),
            Box::new(move |token| {
                let (broker, publisher, config) = (broker.clone(), publisher.clone(), config.clone());
                Box::pin(consumer::run(broker, publisher, config, handler.clone(), metrics.clone(), token))
            }),
        ));
        self
    }

    /// Consume `queue` as a participant whose handler needs no outside call: messages of type
    /// `M` go through a [`Processor`](crate::participant::Processor) (decode, dedupe, handle,
    /// reply, one transaction) to `handler`.
    pub fn participant<M, H>(self, queue: &str, handler: H) -> Self
    where
        M: contracts::Message + Clone + Send + Sync + 'static,
        H: crate::participant::MessageHandler<M>,
    {
        self.calling_participant::<M, _>(queue, crate::participant::Local(handler))
    }

    /// Consume `queue` as a participant whose commands reach an outside system: intent, call,
    /// result (see [`crate::participant`]).
    pub fn calling_participant<M, H>(self, queue: &str, handler: H) -> Self
    where
        M: contracts::Message + Clone + Send + Sync + 'static,
        H: crate::participant::CallingHandler<M>,
    {
        let p = &self.platform;
        let processor = crate::participant::Processor::<M, H>::new(
            p.db.clone(),
            p.publisher.clone(),
            p.waker.clone(),
            p.metrics.clone(),
            queue,
            handler,
        );
        // Participants tell the orchestrator when a command waits or is dead-lettered.
        let config = ConsumerConfig { notices: true, ..self.platform.consumer_config(queue) };
        self.consume_with(config, processor)
    }

    /// Run a background job until its token is cancelled; `job` is called again to restart it
    /// if it panics or returns early.
    pub fn job<F, Fut>(mut self, name: &str, mut job: F) -> Self
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.jobs.push((name.to_owned(), Box::new(move |token| Box::pin(job(token)))));
        self
    }

    /// Run until `shutdown` is cancelled; then drain and return.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let Application { platform, listener, router, mut jobs, mut checks } = self;
        let deadline = platform.settings.shutdown_timeout;
        let supervisor = Supervisor::new(&platform.metrics.registry).map_err(std::io::Error::other)?;
        let report = supervisor.clone();
        checks.push((
            "tasks",
            Arc::new(move || {
                let report = report.report();
                Box::pin(async move { report })
            }),
        ));
        let health = Health {
            db: platform.db.clone(),
            broker: platform.broker.clone(),
            metrics: platform.metrics.clone(),
            extra: checks,
        };
        // The HTTP routes and their document are assembled first: a failure stops nothing running.
        let api = router.merge(http::health_routes(health));
        let router = crate::openapi::documented(api, &platform.settings.service).map_err(std::io::Error::other)?;
        let router =
            router.layer(axum::middleware::from_fn_with_state(platform.metrics.clone(), crate::http_metrics::track));
        // Dedupe records are kept for `inbox_retention`, pruned about ten times per period.
        let (pool, retention) = (platform.db.clone(), platform.settings.inbox_retention);
        let every = (retention / 10).min(std::time::Duration::from_secs(3600));
        jobs.push((
            "inbox_retention".into(),
            Box::new(move |token| Box::pin(crate::inbox::retention_job(pool.clone(), retention, every, token))),
        ));
        let intake = TaskTracker::new();
        for (name, mut job) in jobs {
            let (token, supervisor) = (shutdown.clone(), supervisor.clone());
            intake.spawn(async move {
                supervisor.supervise(&name, token, &mut job).await;
                tracing::debug!(job = %name, "stopped");
            });
        }
        intake.close();
        // The relay outlives intake: it publishes what in-flight work commits while draining.
        let relay_token = CancellationToken::new();
        let relay = {
            let (relay, token, supervisor) = (platform.relay(), relay_token.clone(), supervisor.clone());
            tokio::spawn(async move { supervisor.supervise("outbox_relay", token, |t| relay.clone().run(t)).await })
        };
        tracing::info!(service = %platform.settings.service, addr = %listener.local_addr()?, "listening");
        let served = http::serve_with(listener, router, platform.settings.http, shutdown.clone()).await;
        // HTTP returns once shutdown began (or on a fatal listener error, which also stops the rest).
        shutdown.cancel();
        if tokio::time::timeout(deadline, intake.wait()).await.is_err() {
            tracing::warn!(?deadline, "some work did not finish before the shutdown deadline");
        }
        relay_token.cancel();
        let _ = relay.await;
        platform.broker.close();
        platform.db.close().await;
        tracing::info!(service = %platform.settings.service, "stopped");
        served
    }
}
