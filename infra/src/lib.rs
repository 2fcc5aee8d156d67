//! `infra`: the plumbing every process of the platform stands on. It knows no saga and no
//! business rule.
//!
//! Layout:
//! - [`config`]: typed settings from environment variables, validated once at start.
//! - [`telemetry`]: log lines (text or JSON) and, with an OTLP endpoint, trace export: one trace per
//!   saga across processes; [`metrics`]: the Prometheus registry and shared metric families.
//! - [`amqp`]: the RabbitMQ transport: connection pool, topology declaration, confirmed publisher,
//!   consumer loop that turns a handler's [`amqp::Outcome`] into ack / delayed retry / dead letter.
//! - [`db`]: PostgreSQL pool and migrations; [`outbox`]: transactional outbox and its relay;
//!   [`inbox`]: dedupe records of handled messages.
//! - [`participant`]: the command/event handling loop participants share: decode, dedupe,
//!   handle in one transaction with the reply, hand the outcome to the transport.
//! - [`http`]: health, readiness, `/metrics`, `problem+json` errors, serving with graceful shutdown;
//!   [`http_metrics`]: requests and latency by route.
//! - [`paging`]: `?after=&limit=` paging of the read APIs that list everything; [`operators`]:
//!   operator tokens and the bearer check of operator routes.
//! - [`openapi`]: the OpenAPI document every process serves at `/openapi.json`, generated from
//!   the same router that serves its routes.
//! - [`resilience`]: circuit breakers and retries around calls to outside systems.
//! - [`platform`]: wires the above into one process and runs it until a shutdown signal.
//! - [`shutdown`]: SIGTERM/SIGINT into a cancellation token; [`supervisor`]: background tasks
//!   restarted with back-off after a panic, counted, and shown in readiness.
//! - `testing` (feature `testing`): throwaway databases and vhosts for tests, and `eventually`;
//!   `openapi_checks` (same feature): a live document against its router, the spec validator and
//!   Schemathesis.

pub mod amqp;
pub mod config;
pub mod db;
pub mod http;
pub mod http_metrics;
pub mod inbox;
pub mod metrics;
pub mod openapi;
#[cfg(feature = "testing")]
pub mod openapi_checks;
pub mod operators;
pub mod outbox;
pub mod paging;
pub mod participant;
pub mod platform;
pub mod resilience;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use tokio_util::sync::CancellationToken;
