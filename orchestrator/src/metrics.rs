//! The orchestrator's own metric families, registered in the process registry next to the
//! plumbing's. Labels: saga definition, step name, final status, ignore reason: all small sets.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets for whole-saga and step durations: 1 ms .. 5 min.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Clone)]
pub struct SagaMetrics {
    pub started: IntCounterVec,
    /// Labels: definition, status (COMPLETED / COMPENSATED / FAILED).
    pub finished: IntCounterVec,
    /// Labels: definition, status.
    pub duration_seconds: HistogramVec,
    /// Time from a command's send to its reply. Labels: step, outcome (success / failure).
    pub step_seconds: HistogramVec,
    /// Replies the kernel ignored. Labels: reason (duplicate / late / unexpected / terminal / stale).
    pub replies_ignored: IntCounterVec,
    /// Step deadlines that passed. Labels: step.
    pub timeouts: IntCounterVec,
    /// Commands sent (first sends and re-sends). Labels: type.
    pub commands_sent: IntCounterVec,
    /// Incidents opened. Labels: step.
    pub incidents: IntCounterVec,
    /// Sagas with an open incident now (read from the database; every orchestrator reports it).
    pub incidents_open: IntGauge,
    /// Operator verbs. Labels: verb (retry / compensate / resolve), outcome (applied / refused / error).
    pub operator_actions: IntCounterVec,
}

impl SagaMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()), labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        Ok(SagaMetrics {
            started: counter("saga_started_total", "Sagas started.", &["definition"])?,
            finished: counter(
                "saga_finished_total",
                "Sagas that reached a terminal status (COMPLETED, COMPENSATED, FAILED).",
                &["definition", "status"],
            )?,
            duration_seconds: histogram(
                "saga_duration_seconds",
                "Time from a saga's start to its terminal status.",
                &["definition", "status"],
            )?,
            step_seconds: histogram(
                "saga_step_seconds",
                "Time from a step's command to its reply.",
                &["step", "outcome"],
            )?,
            replies_ignored: counter(
                "saga_replies_ignored_total",
                "Replies that changed nothing: duplicates, late or unexpected replies, replies to finished sagas.",
                &["reason"],
            )?,
            timeouts: counter("saga_step_timeouts_total", "Step deadlines that passed.", &["step"])?,
            commands_sent: counter(
                "saga_commands_sent_total",
                "Commands queued for sending, re-sends included.",
                &["type"],
            )?,
            incidents: counter(
                "saga_incidents_opened_total",
                "Incidents opened: a saga stopped and waits for an operator.",
                &["step"],
            )?,
            incidents_open: {
                let g = IntGauge::new("saga_incidents_open", "Sagas with an open incident (from the database).")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            operator_actions: counter(
                "saga_operator_actions_total",
                "Operator verbs on sagas, by verb and outcome (applied, refused, error).",
                &["verb", "outcome"],
            )?,
        })
    }
}

/// Refresh the gauges read from the database every `every`, until `shutdown`.
pub async fn refresh(
    pool: sqlx::PgPool,
    metrics: SagaMetrics,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match crate::store::open_incidents(&pool).await {
            Ok(n) => metrics.incidents_open.set(n),
            Err(error) => tracing::debug!(%error, "cannot count open incidents"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {},
        }
    }
}
